/*
 * filters/cache/cache_l2.c: the cache filter's L2 tier (Redis): the key of an
 * object in Redis, the lookup of a request that L1 missed, the write of a
 * stored object and of a key's Vary record, and the worker state that holds
 * the worker's L2 client. The rest of the filter is in cache.c.
 */
#include "filters/cache/cache-int.h"

#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>
#include <event2/event.h>

#include "proxy/arena.h"
#include "proxy/filter.h"
#include "filters/cache/l2.h"
#include "filters/cache/store.h"

/* ---- the L2 tier (Redis, one client per worker: the wstate) ---- */

/* The L2 key of an object: key and variant. */
char *pf_cache_l2_key(struct pf_arena *a, const char *key, const char *variant)
{
    size_t kl = strlen(key), vl = strlen(variant);
    char *k = pf_arena_alloc(a, kl + vl + 2);

    memcpy(k, key, kl);
    k[kl] = '\n';
    memcpy(k + kl + 1, variant, vl + 1);
    return k;
}

/* Seconds an object is worth keeping in L2: freshness left plus the stale windows. */
static int64_t l2_ttl(const struct pf_cache_conf *c, const struct pf_cobj *o, int64_t now)
{
    int64_t extra = c->policy.stale_if_error;

    if (o->meta.cc.swr > extra)
        extra = o->meta.cc.swr;
    if (o->meta.cc.sie > extra)
        extra = o->meta.cc.sie;
    return pf_cache_lifetime(&o->meta, &c->policy) - pf_cache_age(&o->meta, now) + extra;
}

/*
 * The Vary record of a key in L2, under the key's variant-less name ("key\n"), so that a process
 * that never saw the URL learns its Vary from Redis and can look its variant up there: VARY_TAG
 * then the Vary lines, comma-joined. A serialized object starts with its version byte, never 'P'.
 */
#define VARY_TAG     "PFVARY1\n"
#define VARY_TAG_LEN (sizeof(VARY_TAG) - 1)

/*
 * A write's follow-up: a purge of the key that overtook the fetch moved the key's generation
 * before it asked Redis to delete (purge.c, cache_conf.c), so a SET whose reply comes in after
 * that may have landed after the purge's DEL, on another connection: delete it again.
 */
struct written {
    struct pf_cstore *st;
    struct pf_cobj *o; /* a reference: its key and tags, for the check */
    uint64_t gen;
    char l2key[];
};

static void written(void *arg, struct pf_l2 *l2)
{
    struct written *w = arg;

    if (l2 != NULL && pf_cache_bus_covered(w->st, w->o, w->gen))
        pf_cache_l2_undo(l2, w->st, w->o->key, w->l2key);
    pf_cobj_unref(w->o);
    free(w);
}

/* SET l2key (tags as pf_l2_set), followed by written() for o's key under gen. */
static void set_then(struct pf_slot *s, struct pf_cobj *o, uint64_t gen, const char *l2key,
                     const void *data, size_t len, int64_t ttl, const char *const *tags, unsigned n)
{
    size_t ll = strlen(l2key);
    struct written *w = pf_xmalloc(sizeof(*w) + ll + 1);

    w->st = s->pstate;
    w->o = pf_cobj_ref(o);
    w->gen = gen;
    memcpy(w->l2key, l2key, ll + 1);
    pf_l2_set_then(pf_cache_l2_of(s), l2key, data, len, (uint64_t)ttl, tags, n, written, w);
}

void pf_cache_l2_store_vary(const struct pf_cache_conf *c, struct pf_tx *tx, struct pf_slot *s,
                            struct pf_cobj *o, const char *vary, uint64_t gen)
{
    int64_t ttl = l2_ttl(c, o, now_s());
    size_t vl = strlen(vary);
    char *rec;

    if (pf_cache_l2_of(s) == NULL || ttl <= 0)
        return;
    rec = pf_arena_alloc(pf_tx_arena(tx), VARY_TAG_LEN + vl);
    memcpy(rec, VARY_TAG, VARY_TAG_LEN);
    memcpy(rec + VARY_TAG_LEN, vary, vl);
    set_then(s, o, gen, pf_cache_l2_key(pf_tx_arena(tx), o->key, ""), rec, VARY_TAG_LEN + vl, ttl,
             NULL, 0);
}

/* A Vary record from L2 (see pf_cache_l2_store_vary): into L1, true when data was one. */
static bool l2_got_vary(struct pf_slot *s, struct cache_ctx *x, const void *data, size_t len)
{
    char vary[VARY_MAX];

    if (len < VARY_TAG_LEN || memcmp(data, VARY_TAG, VARY_TAG_LEN) != 0 ||
        len - VARY_TAG_LEN >= sizeof(vary) || x->l2_vary)
        return false;
    memcpy(vary, (const char *)data + VARY_TAG_LEN, len - VARY_TAG_LEN);
    vary[len - VARY_TAG_LEN] = '\0';
    if (memchr(vary, '\0', len - VARY_TAG_LEN) != NULL)
        return false;
    /* not when a purge landed since the request started: the record would outlive it */
    pf_cstore_set_vary_at(s->pstate, x->key, vary, x->gen);
    return true;
}

/*
 * The tag whose set in L2 lists every variant of key: a newline, then the key (a tag from a
 * response header never holds a newline). An invalidation reads the set and deletes each member
 * on its own server (single-key commands: members are spread by rendezvous hashing).
 */
char *pf_cache_l2_variants_tag(struct pf_arena *a, const char *key)
{
    size_t kl = strlen(key);
    char *t = pf_arena_alloc(a, kl + 2);

    t[0] = '\n';
    memcpy(t + 1, key, kl + 1);
    return t;
}

/* Write o to L2 too (fire and forget); a variant is also listed in its URL's variant set. */
void pf_cache_l2_store(const struct pf_cache_conf *c, struct pf_tx *tx, struct pf_slot *s,
                       struct pf_cobj *o, uint64_t gen)
{
    struct evbuffer *b;
    int64_t ttl = l2_ttl(c, o, now_s());
    const char **tags = (const char **)o->tags;
    unsigned n = o->n_tags;

    if (pf_cache_l2_of(s) == NULL || ttl <= 0 || (b = evbuffer_new()) == NULL)
        return;
    if (o->variant[0] != '\0') {
        tags = pf_arena_alloc(pf_tx_arena(tx), (n + 1) * sizeof(*tags));
        for (unsigned i = 0; i < n; i++)
            tags[i] = o->tags[i];
        tags[n++] = pf_cache_l2_variants_tag(pf_tx_arena(tx), o->key);
    }
    pf_cobj_serialize(o, b);
    set_then(s, o, gen, pf_cache_l2_key(pf_tx_arena(tx), o->key, o->variant),
             evbuffer_pullup(b, -1), evbuffer_get_length(b), ttl, (const char *const *)tags, n);
    evbuffer_free(b);
}

struct deferred {
    struct pf_tx_ref ref;
    enum pf_verdict v;
};

static void deferred_cb(evutil_socket_t fd, short what, void *arg)
{
    struct deferred *d = arg;
    struct pf_tx *tx = pf_tx_deref(d->ref);

    (void)fd;
    (void)what;
    if (tx != NULL)
        pf_tx_resume(tx, d->v);
    free(d);
}

/*
 * Resume from the loop, not from inside the L2 client's callback: a resumed
 * transaction may end at once and drop the last reference to its
 * configuration, whose worker_fini frees the L2 client.
 */
static void resume_later(struct pf_tx *tx, enum pf_verdict v)
{
    struct deferred *d = pf_xmalloc(sizeof(*d));
    struct timeval now = {0, 0};

    d->ref = pf_tx_ref(tx);
    d->v = v;
    if (event_base_once(pf_worker_base(pf_tx_worker(tx)), -1, EV_TIMEOUT, deferred_cb, d, &now) !=
        0) {
        free(d);
        pf_tx_resume(tx, v);
    }
}

/* The L2 answer (NULL: a miss of any kind): fill L1 with it, then look up again. */
static void l2_got(void *arg, const void *data, size_t len)
{
    struct pf_slot *s = arg;
    struct cache_ctx *x = s->ctx;
    const struct pf_cache_conf *c = s->conf;
    struct pf_tx *tx = pf_tx_deref(x->ref);
    struct pf_cobj *o = NULL;
    const char *vary;
    enum pf_verdict v;

    x->l2_get = 0;
    if (tx == NULL)
        return;
    if (data != NULL && x->variant[0] == '\0' && l2_got_vary(s, x, data, len)) {
        /* the URL varies: look again, now for this request's variant (in L1, then in L2) */
        x->l2_vary = true;
        x->l2_done = false;
    } else if (data != NULL) {
        o = pf_cobj_deserialize(data, len, c->max_object_size);
    }
    if (o != NULL && strcmp(o->key, x->key) == 0 && strcmp(o->variant, x->variant) == 0) {
        vary = pf_cobj_header(o, "vary");
        /* refused when a purge landed since the request started: Redis may have answered first */
        pf_cache_count_l2(
            (vary == NULL || pf_cstore_set_vary_at(s->pstate, x->key, vary, x->gen) == 0) &&
            pf_cstore_put_at(s->pstate, o, x->gen) == 0);
    } else if (!x->l2_vary || x->l2_done) {
        pf_cache_count_l2(false);
    }
    pf_cobj_unref(o);
    v = pf_cache_after_lookup(c, tx, s, x, pf_cache_lookup(c, tx, s, x));
    if (v != PF_PAUSED)
        resume_later(tx, v);
}

/* L2's answer to a background refresh: a copy fresh for this request fills L1 (no upstream). */
static void l2_refresh_got(void *arg, const void *data, size_t len)
{
    struct pf_slot *s = arg;
    struct cache_ctx *x = s->ctx;
    const struct pf_cache_conf *c = s->conf;
    struct pf_tx *tx = pf_tx_deref(x->ref);
    struct pf_cobj *o = NULL;
    bool used = false;

    x->l2_get = 0;
    if (tx == NULL)
        return;
    if (data != NULL)
        o = pf_cobj_deserialize(data, len, c->max_object_size);
    if (o != NULL && strcmp(o->key, x->key) == 0 && strcmp(o->variant, x->variant) == 0 &&
        pf_cache_usable(&o->meta, &x->req_cc, &c->policy, now_s()) == PF_CACHE_USE_FRESH)
        used = pf_cstore_put_at(s->pstate, o, x->gen) == 0;
    pf_cobj_unref(o);
    pf_cache_count_l2(used);
    if (used)
        pf_cache_count_refresh(PF_REFRESH_FROM_L2);
    resume_later(tx, pf_cache_refresh_request(tx, s, x));
}

enum pf_verdict pf_cache_l2_refresh(struct pf_tx *tx, struct pf_slot *s, struct cache_ctx *x)
{
    x->l2_done = true;
    x->ref = pf_tx_ref(tx);
    x->l2_get = pf_l2_get(pf_cache_l2_of(s), pf_cache_l2_key(pf_tx_arena(tx), x->key, x->variant),
                          l2_refresh_got, s);
    return PF_PAUSED;
}

enum pf_verdict pf_cache_l2_lookup(struct pf_tx *tx, struct pf_slot *s, struct cache_ctx *x)
{
    x->l2_done = true;
    x->ref = pf_tx_ref(tx);
    x->l2_get = pf_l2_get(pf_cache_l2_of(s), pf_cache_l2_key(pf_tx_arena(tx), x->key, x->variant),
                          l2_got, s);
    return PF_PAUSED;
}

/*
 * ---- worker state: the L2 client of this worker's loop, when redis is set ----
 *
 * worker_init runs on the main thread (snapshots are built there before a
 * worker switches to them), so it must not touch the worker's event base:
 * the client is made by worker_start, on the worker's own thread.
 */

struct cache_wstate {
    struct pf_l2_conf lc; /* points into the filter's conf, which outlives the wstate */
    struct pf_worker *w;
    struct pf_l2 *l2;  /* made by worker_start; NULL when pf_l2_new refused the settings */
    struct pf_l2 *sub; /* worker 0's subscriber to the purge bus (purge.c) */
};

int pf_cache_worker_init(const void *conf, struct pf_worker *w, void **wstate)
{
    const struct pf_cache_conf *c = conf;
    struct cache_wstate *ws;

    *wstate = NULL;
    if (c->redis_addresses.n == 0)
        return 0;
    ws = pf_xcalloc(1, sizeof(*ws));
    ws->lc = (struct pf_l2_conf){
        .addresses = (const char *const *)c->redis_addresses.v,
        .n_addresses = c->redis_addresses.n,
        .db = c->redis_db,
        .password = c->redis_password,
        .timeout_ms = c->redis_timeout_ms,
        .key_prefix = c->redis_key_prefix,
    };
    ws->w = w;
    *wstate = ws;
    return 0;
}

void pf_cache_worker_fini(void *wstate)
{
    struct cache_wstate *ws = wstate;

    if (ws == NULL)
        return;
    pf_l2_free(ws->l2);
    pf_l2_free(ws->sub);
    free(ws);
}

void pf_cache_worker_start(void *wstate)
{
    struct cache_wstate *ws = wstate;

    if (ws != NULL && ws->l2 == NULL)
        ws->l2 = pf_l2_new(pf_worker_base(ws->w), &ws->lc);
    /* one subscriber per process: the memory tier is the process's, shared by its workers */
    if (ws != NULL && ws->sub == NULL && pf_worker_index(ws->w) == 0)
        ws->sub = pf_l2_subscriber_new(pf_worker_base(ws->w), &ws->lc, PF_BUS_CHANNEL,
                                       pf_cache_bus_receive, NULL);
}

struct pf_l2 *pf_cache_l2_of(struct pf_slot *s)
{
    struct cache_wstate *ws = s->wstate;

    return ws != NULL ? ws->l2 : NULL;
}
