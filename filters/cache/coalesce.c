/*
 * filters/cache/coalesce.c: one upstream fetch per cache key at a time.
 *
 * The first miss for a key becomes its leader: it goes upstream and calls
 * pf_coalesce_done() when its response is stored (or turned out not to be
 * storable, or the transaction ended). Later misses for the key, on any
 * worker, pause: each gets a waiter, kept in the flight's list, with an
 * event on its own worker's loop that is either activated by the leader's
 * done (from whichever thread) or fires after lock_timeout. The waiter's
 * callback then runs on its own worker, finds its transaction through a
 * pf_tx_ref (it may have ended: then it only frees itself), and hands it
 * back to the filter, which looks the store up again.
 *
 * The table is process-wide and never freed (a static mutex and buckets),
 * so a waiter whose event fires after its snapshot's store is gone still
 * touches only memory that lives. Flights are keyed by store and key.
 *
 * A flight also records the key's purge generation (pf_cstore_gen) as it
 * started: a request that comes after a purge of the key does not join a
 * flight from before it (its response is the purged one), it leads a new
 * flight of its own. Both live in the table for a while, told apart by
 * generation; the old one keeps serving the requests that joined before the
 * purge, and its leader's calls name it by its generation.
 *
 * Once the leader's response is known to be stored, the leader hands it over
 * as it streams in (pf_coalesce_stream, a struct pf_cgrow): every waiter is
 * woken with it at once, and a request that joins later is woken with it
 * straight away, until the leader is done, as long as it is still growing: an
 * object abandoned (or complete) is never handed out, the request goes
 * upstream on its own.
 *
 * Ownership of a waiter: while `linked`, the flight's list holds it. The
 * leader's done unlinks it under the table lock and hands it to its own
 * worker with pf_worker_call (worker loops have no lock: another thread may
 * not touch their events); that call owns it from then on. The timeout
 * callback takes the lock: if the waiter is still linked it unlinks it and
 * owns it; if not, the leader's call is on its way and will free it.
 */
#include "filters/cache/cache.h"
#include "filters/cache/store.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>

#include "proxy/arena.h"
#include "proxy/filter.h"

#define BUCKETS 256

struct waiter {
    struct waiter *next;
    struct flight *flight;    /* guarded by lock: valid while linked */
    bool linked;              /* guarded by lock */
    struct event *ev;         /* on the waiter's worker loop: the lock_timeout */
    struct pf_worker *worker; /* the paused transaction's worker */
    struct pf_tx_ref ref;     /* the paused transaction */
    pf_coalesce_fn fn;        /* called on the waiter's worker with its live tx */
    void *arg;
    struct pf_cgrow *grow; /* a reference: the leader's response streaming in, or NULL */
};

struct flight {
    struct flight *next;
    const void *store;
    char *key;
    uint64_t gen; /* the key's purge generation when the flight started */
    struct waiter *waiters;
    struct pf_cgrow *grow; /* a reference, once the leader streams */
    bool had_waiters;      /* a request waited or was served from grow */
};

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static struct flight *table[BUCKETS]; /* guarded by lock */

static unsigned bucket_of(const void *store, const char *key)
{
    uint64_t h = UINT64_C(1469598103934665603) ^ (uint64_t)(uintptr_t)store;

    for (const unsigned char *p = (const unsigned char *)key; *p != '\0'; p++)
        h = (h ^ *p) * UINT64_C(1099511628211);
    return (unsigned)(h % BUCKETS);
}

/* The flight of (store, key, gen) and the link that points at it, or NULL (lock held). */
static struct flight **find(const void *store, const char *key, uint64_t gen)
{
    struct flight **pp = &table[bucket_of(store, key)];

    for (; *pp != NULL; pp = &(*pp)->next) {
        if ((*pp)->store == store && (*pp)->gen == gen && strcmp((*pp)->key, key) == 0)
            return pp;
    }
    return NULL;
}

/* A new flight of (store, key, gen), in the table (lock held). */
static void add_flight(const void *store, const char *key, uint64_t gen)
{
    struct flight *f = pf_xcalloc(1, sizeof(*f));

    f->store = store;
    f->key = pf_xstrdup(key);
    f->gen = gen;
    f->next = table[bucket_of(store, key)];
    table[bucket_of(store, key)] = f;
}

static void unlink_waiter(struct waiter *w)
{
    struct waiter **pp = &w->flight->waiters;

    while (*pp != w)
        pp = &(*pp)->next;
    *pp = w->next;
    w->linked = false;
}

/* On the waiter's worker: hand the transaction back to the filter, free the waiter. */
static void wake(struct waiter *w, bool timed_out)
{
    struct pf_tx *tx;

    if (w->ev != NULL)
        event_free(w->ev);
    tx = pf_tx_deref(w->ref);
    if (tx != NULL)
        w->fn(tx, w->arg, timed_out, w->grow);
    pf_cgrow_unref(w->grow);
    free(w);
}

/* The leader is done: sent by pf_coalesce_done, runs on the waiter's worker. */
static void woken_by_leader(struct pf_worker *wk, void *arg)
{
    (void)wk;
    wake(arg, false);
}

/* lock_timeout passed, or the leader is done and its call is on its way. */
static void timeout_cb(evutil_socket_t fd, short what, void *arg)
{
    struct waiter *w = arg;
    bool mine;

    (void)fd;
    (void)what;
    pthread_mutex_lock(&lock);
    mine = w->linked;
    if (mine)
        unlink_waiter(w);
    pthread_mutex_unlock(&lock);
    if (mine)
        wake(w, true);
}

enum pf_coalesce pf_coalesce_join(const void *store, const char *key, uint64_t gen,
                                  struct pf_tx *tx, uint64_t timeout_ms, pf_coalesce_fn fn,
                                  void *arg)
{
    struct flight **pp;
    struct waiter *w;
    struct timeval tv = {(time_t)(timeout_ms / 1000), (suseconds_t)(timeout_ms % 1000) * 1000};

    pthread_mutex_lock(&lock);
    pp = find(store, key, gen); /* a flight from before a purge of key is not this one's */
    if (pp == NULL) {
        add_flight(store, key, gen);
        pthread_mutex_unlock(&lock);
        return PF_COALESCE_LEADER;
    }
    if ((*pp)->grow != NULL && pf_cgrow_state((*pp)->grow) != PF_CGROW_GROWING) {
        /* abandoned (or already stored): nothing to serve from, the leader ends the flight */
        pthread_mutex_unlock(&lock);
        return PF_COALESCE_ALONE;
    }
    w = pf_xcalloc(1, sizeof(*w));
    w->worker = pf_tx_worker(tx);
    (*pp)->had_waiters = true;
    if ((*pp)->grow != NULL) {
        /* the leader streams already: served from it (woken from the loop, not from here) */
        w->ref = pf_tx_ref(tx);
        w->fn = fn;
        w->arg = arg;
        w->grow = pf_cgrow_ref((*pp)->grow);
        pf_worker_call(w->worker, woken_by_leader, w);
        pthread_mutex_unlock(&lock);
        return PF_COALESCE_WAITING;
    }
    w->ev = event_new(pf_worker_base(w->worker), -1, 0, timeout_cb, w);
    if (w->ev == NULL || event_add(w->ev, &tv) != 0) {
        pthread_mutex_unlock(&lock);
        if (w->ev != NULL)
            event_free(w->ev);
        free(w);
        return PF_COALESCE_ALONE; /* go upstream uncoalesced */
    }
    w->ref = pf_tx_ref(tx);
    w->fn = fn;
    w->arg = arg;
    w->flight = *pp;
    w->linked = true;
    w->next = (*pp)->waiters;
    (*pp)->waiters = w;
    pthread_mutex_unlock(&lock);
    return PF_COALESCE_WAITING;
}

bool pf_coalesce_busy(const void *store, const char *key, uint64_t gen)
{
    bool busy;

    pthread_mutex_lock(&lock);
    busy = find(store, key, gen) != NULL;
    pthread_mutex_unlock(&lock);
    return busy;
}

bool pf_coalesce_lead(const void *store, const char *key, uint64_t gen)
{
    bool lead;

    pthread_mutex_lock(&lock);
    lead = find(store, key, gen) == NULL;
    if (lead)
        add_flight(store, key, gen);
    pthread_mutex_unlock(&lock);
    return lead;
}

void pf_coalesce_stream(const void *store, const char *key, uint64_t gen, struct pf_cgrow *g)
{
    struct flight **pp;
    struct flight *f;

    pthread_mutex_lock(&lock);
    pp = find(store, key, gen);
    if (pp == NULL || (*pp)->grow != NULL) {
        pthread_mutex_unlock(&lock);
        return;
    }
    f = *pp;
    f->grow = pf_cgrow_ref(g);
    for (struct waiter *w = f->waiters, *next; w != NULL; w = next) {
        next = w->next; /* w belongs to its worker's call from here on */
        w->linked = false;
        w->grow = pf_cgrow_ref(g);
        pf_worker_call(w->worker, woken_by_leader, w);
    }
    f->waiters = NULL;
    pthread_mutex_unlock(&lock);
}

void pf_coalesce_done(const void *store, const char *key, uint64_t gen, int64_t now, int64_t mark_s)
{
    struct flight **pp;
    struct flight *f;

    pthread_mutex_lock(&lock);
    pp = find(store, key, gen);
    if (pp == NULL) {
        pthread_mutex_unlock(&lock);
        return;
    }
    f = *pp;
    *pp = f->next;
    if (mark_s > 0 && f->had_waiters)
        pf_cache_hfm_set(store, key, now, mark_s);
    for (struct waiter *w = f->waiters, *next; w != NULL; w = next) {
        next = w->next; /* w belongs to its worker's call from here on */
        w->linked = false;
        pf_worker_call(w->worker, woken_by_leader, w);
    }
    pthread_mutex_unlock(&lock);
    pf_cgrow_unref(f->grow);
    free(f->key);
    free(f);
}
