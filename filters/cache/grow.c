/*
 * filters/cache/grow.c: a response that is being stored while it streams in
 * (struct pf_cgrow), shared by the request that fetches it (the writer, on
 * its worker) and the coalesced requests served from it (readers, each on
 * its own worker).
 *
 * The head (status, stored headers, freshness, Vary) is fixed before the
 * object is shared. The body is a list of chunks that only grows: a chunk,
 * once linked, never changes or moves, and all chunks are freed with the
 * object (the last reference). The body is bounded by the max given at
 * creation (max_object_size): past it the object is abandoned, as it is
 * when the fetch fails, so a slow reader never makes anyone buffer more than
 * that; readers hand the chunks to their own output by reference (a piece
 * holds a reference to the object), so N slow readers share one copy.
 *
 * Readers subscribe with a callback; after each append and at the end, every
 * subscriber without a call already on its way gets one pf_worker_call to its
 * worker (so a burst of appends costs one wakeup per reader). A subscription
 * is freed by whichever of unsubscribe and its pending call comes last; both
 * run on the reader's worker, so they never race each other.
 *
 * The writer may watch for readers (pf_cgrow_watch): the fetch stops following
 * its own client's pace while anyone reads (collapse.c).
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>

#include "filters/cache/store.h"
#include "proxy/arena.h"
#include "proxy/filter.h"

struct chunk {
    struct chunk *next;
    size_t len;
    unsigned char data[];
};

struct pf_cgrow_sub {
    struct pf_cgrow_sub *next;
    struct pf_cgrow *g;
    struct pf_worker *w;
    pf_cgrow_fn fn;
    void *arg;
    bool pending;     /* guarded by g->lock: a call is on its way */
    bool gone;        /* guarded by g->lock: unsubscribed while a call was pending */
    struct chunk *at; /* reader's position: the chunk it reads next (NULL: the first) */
    size_t off;       /* ... bytes of it already sent */
    bool started;     /* at is valid */
};

/* Smaller pieces are copied: a reference costs a chain and an atomic of its own. */
#define REF_MIN 512

static void notify_locked(struct pf_cgrow *g);

struct pf_cgrow *pf_cgrow_new(const struct pf_cgrow_head *head, size_t max_body)
{
    struct pf_cgrow *g = pf_xcalloc(1, sizeof(*g));
    size_t n = head->n_hdrs;

    g->status = head->status;
    g->meta = head->meta;
    g->variant = pf_xstrdup(head->variant != NULL ? head->variant : "");
    g->vary = head->vary != NULL ? pf_xstrdup(head->vary) : NULL;
    g->length = head->length;
    g->hdrs = pf_xcalloc(n > 0 ? n : 1, sizeof(*g->hdrs));
    for (size_t i = 0; i < n; i++) {
        g->hdrs[i].name = pf_xstrdup(head->hdrs[i].name);
        g->hdrs[i].value = pf_xstrdup(head->hdrs[i].value);
    }
    g->n_hdrs = (unsigned)n;
    g->max_body = max_body;
    pthread_mutex_init(&g->lock, NULL);
    atomic_init(&g->refs, 1);
    return g;
}

struct pf_cgrow *pf_cgrow_ref(struct pf_cgrow *g)
{
    if (g != NULL)
        atomic_fetch_add_explicit(&g->refs, 1, memory_order_relaxed);
    return g;
}

void pf_cgrow_unref(struct pf_cgrow *g)
{
    struct chunk *c, *next;

    if (g == NULL || atomic_fetch_sub_explicit(&g->refs, 1, memory_order_acq_rel) != 1)
        return;
    for (c = g->first; c != NULL; c = next) {
        next = c->next;
        free(c);
    }
    for (unsigned i = 0; i < g->n_hdrs; i++) {
        free((char *)g->hdrs[i].name);
        free((char *)g->hdrs[i].value);
    }
    free(g->hdrs);
    free(g->variant);
    free(g->vary);
    pthread_mutex_destroy(&g->lock);
    free(g);
}

bool pf_cgrow_append(struct pf_cgrow *g, struct evbuffer *buf)
{
    size_t len = evbuffer_get_length(buf);
    struct chunk *c;

    if (len == 0 || g->state != PF_CGROW_GROWING)
        return g->state == PF_CGROW_GROWING;
    if (g->max_body > 0 && (len > g->max_body || g->body_len > g->max_body - len)) {
        pf_cgrow_drop(g); /* grew past max_object_size: not stored, never truncated */
        return false;
    }
    c = pf_xmalloc(sizeof(*c) + len);
    c->next = NULL;
    c->len = len;
    evbuffer_copyout(buf, c->data, len);
    pthread_mutex_lock(&g->lock);
    if (g->last != NULL)
        g->last->next = c;
    else
        g->first = c;
    g->last = c;
    g->body_len += len;
    notify_locked(g);
    pthread_mutex_unlock(&g->lock);
    return true;
}

static void end_as(struct pf_cgrow *g, enum pf_cgrow_state st)
{
    pthread_mutex_lock(&g->lock);
    if (g->state == PF_CGROW_GROWING) {
        g->state = st;
        notify_locked(g);
    }
    pthread_mutex_unlock(&g->lock);
}

void pf_cgrow_end(struct pf_cgrow *g, bool complete)
{
    end_as(g, complete ? PF_CGROW_COMPLETE : PF_CGROW_ABANDONED);
}

void pf_cgrow_drop(struct pf_cgrow *g)
{
    end_as(g, PF_CGROW_DROPPED);
}

/* On the writer's worker: a reader subscribed. */
static void watch_cb(struct pf_worker *w, void *arg)
{
    struct pf_cgrow *g = arg;
    void (*fn)(struct pf_worker *, void *);
    void *fn_arg;

    pthread_mutex_lock(&g->lock);
    g->wr_pending = false;
    fn = g->wr_fn;
    fn_arg = g->wr_arg;
    pthread_mutex_unlock(&g->lock);
    if (fn != NULL)
        fn(w, fn_arg);
    pf_cgrow_unref(g);
}

void pf_cgrow_watch(struct pf_cgrow *g, struct pf_worker *w,
                    void (*fn)(struct pf_worker *w, void *arg), void *arg)
{
    pthread_mutex_lock(&g->lock);
    g->wr_w = w;
    g->wr_fn = fn;
    g->wr_arg = arg;
    pthread_mutex_unlock(&g->lock);
}

unsigned pf_cgrow_readers(struct pf_cgrow *g)
{
    unsigned n;

    pthread_mutex_lock(&g->lock);
    n = g->n_subs;
    pthread_mutex_unlock(&g->lock);
    return n;
}

enum pf_cgrow_state pf_cgrow_state(struct pf_cgrow *g)
{
    enum pf_cgrow_state st;

    pthread_mutex_lock(&g->lock);
    st = g->state;
    pthread_mutex_unlock(&g->lock);
    return st;
}

/* On the reader's worker: its call arrived. */
static void sub_cb(struct pf_worker *w, void *arg)
{
    struct pf_cgrow_sub *sub = arg;
    struct pf_cgrow *g = sub->g;
    bool gone;

    pthread_mutex_lock(&g->lock);
    sub->pending = false;
    gone = sub->gone;
    pthread_mutex_unlock(&g->lock);
    if (gone) {
        free(sub);
        pf_cgrow_unref(g);
        return;
    }
    sub->fn(w, sub->arg);
}

/* Wake every subscriber that has no call on its way (lock held). */
static void notify_locked(struct pf_cgrow *g)
{
    for (struct pf_cgrow_sub *s = g->subs; s != NULL; s = s->next) {
        if (!s->pending) {
            s->pending = true;
            pf_worker_call(s->w, sub_cb, s);
        }
    }
}

struct pf_cgrow_sub *pf_cgrow_subscribe(struct pf_cgrow *g, struct pf_worker *w, pf_cgrow_fn fn,
                                        void *arg)
{
    struct pf_cgrow_sub *sub = pf_xcalloc(1, sizeof(*sub));

    sub->g = pf_cgrow_ref(g);
    sub->w = w;
    sub->fn = fn;
    sub->arg = arg;
    pthread_mutex_lock(&g->lock);
    sub->next = g->subs;
    g->subs = sub;
    g->n_subs++;
    sub->pending = true; /* a first call: the bytes already there */
    pf_worker_call(w, sub_cb, sub);
    if (g->wr_fn != NULL && !g->wr_pending) {
        g->wr_pending = true;
        atomic_fetch_add_explicit(&g->refs, 1, memory_order_relaxed); /* watch_cb's */
        pf_worker_call(g->wr_w, watch_cb, g);
    }
    pthread_mutex_unlock(&g->lock);
    return sub;
}

void pf_cgrow_unsubscribe(struct pf_cgrow_sub *sub)
{
    struct pf_cgrow *g;
    struct pf_cgrow_sub **pp;
    bool pending;

    if (sub == NULL)
        return;
    g = sub->g;
    pthread_mutex_lock(&g->lock);
    for (pp = &g->subs; *pp != NULL && *pp != sub; pp = &(*pp)->next)
        ;
    if (*pp == sub) {
        *pp = sub->next;
        g->n_subs--;
    }
    pending = sub->pending;
    sub->gone = true;
    pthread_mutex_unlock(&g->lock);
    if (!pending) {
        free(sub);
        pf_cgrow_unref(g);
    }
}

/* evbuffer_ref_cleanup_cb of a piece of g in a reader's output. */
static void piece_done(const void *data, size_t len, void *arg)
{
    (void)data;
    (void)len;
    pf_cgrow_unref(arg);
}

/* len bytes of g at p onto out: by reference (g stays while out holds them), small ones copied. */
static void add_piece(struct pf_cgrow *g, struct evbuffer *out, const unsigned char *p, size_t len)
{
    if (len >= REF_MIN) {
        /* the reader's own reference keeps g above zero: never freed under g->lock */
        pf_cgrow_ref(g);
        if (evbuffer_add_reference(out, p, len, piece_done, g) == 0)
            return;
        pf_cgrow_unref(g);
    }
    evbuffer_add(out, p, len);
}

enum pf_cgrow_state pf_cgrow_read(struct pf_cgrow_sub *sub, struct evbuffer *out)
{
    struct pf_cgrow *g = sub->g;
    enum pf_cgrow_state st;
    struct chunk *c;

    pthread_mutex_lock(&g->lock);
    st = g->state;
    if (!sub->started) {
        sub->at = g->first;
        sub->started = sub->at != NULL;
    }
    /* chunks never change once linked; the lock only orders the reads of next */
    for (c = sub->at; c != NULL; c = c->next) {
        if (c->len > sub->off)
            add_piece(g, out, c->data + sub->off, c->len - sub->off);
        sub->off = c->len;
        sub->at = c;
        if (c->next == NULL)
            break;
        sub->off = 0;
    }
    pthread_mutex_unlock(&g->lock);
    return st;
}
