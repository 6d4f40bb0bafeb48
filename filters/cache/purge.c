/*
 * filters/cache/purge.c: removing stored responses before they expire: the
 * PURGE method, invalidation by unsafe methods (RFC 9111 §4.4), and the
 * purge bus that carries both to the other pilotfish processes sharing the
 * Redis tier.
 *
 * The bus: each purge or invalidation that reaches Redis is also PUBLISHed
 * on the channel key_prefix "purge" (on the server rendezvous hashing picks
 * for "purge"), as "PF1 <process nonce> <op> <argument>" with op k (a key,
 * every variant), p (a key prefix) or t (a tag). Worker 0 of each process
 * holds a subscriber connection (cache_l2.c) and applies the other
 * processes' messages to its memory tier; a process skips its own (its
 * nonce), having purged already. The stores are found through a registry
 * (init_process registers, fini_process removes), so a message never
 * touches a store being freed. Delivery is at most once: a message
 * published while a subscriber is disconnected is lost to it (docs).
 */
#include "filters/cache/cache-int.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>
#include <unistd.h>

#include <event2/buffer.h>

#include "proxy/arena.h"
#include "proxy/filter.h"
#include "filters/cache/l2.h"
#include "filters/cache/store.h"

/* ---- the bus ---- */

/* Stores alive at once: one, or a few while reloads change `memory`; the list grows as needed. */
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static struct pf_cstore **stores; /* guarded by lock */
static unsigned stores_max;       /* guarded by lock */
static pthread_once_t nonce_once = PTHREAD_ONCE_INIT;
static char nonce[17];

static void nonce_init(void)
{
    uint64_t v = 0;

    if (getrandom(&v, sizeof(v), GRND_NONBLOCK) != (ssize_t)sizeof(v))
        v = (uint64_t)getpid() * UINT64_C(0x9e3779b97f4a7c15) ^ (uint64_t)time(NULL);
    snprintf(nonce, sizeof(nonce), "%016llx", (unsigned long long)v);
}

void pf_cache_bus_register(struct pf_cstore *st)
{
    unsigned i;

    pthread_mutex_lock(&lock);
    for (i = 0; i < stores_max && stores[i] != NULL; i++)
        ;
    if (i == stores_max) { /* full: never a store that purges from other processes miss */
        unsigned n = stores_max > 0 ? 2 * stores_max : 8;

        stores = pf_xrealloc(stores, n * sizeof(*stores));
        memset(stores + stores_max, 0, (n - stores_max) * sizeof(*stores));
        stores_max = n;
    }
    stores[i] = st;
    pthread_mutex_unlock(&lock);
}

void pf_cache_bus_unregister(struct pf_cstore *st)
{
    pthread_mutex_lock(&lock);
    for (unsigned i = 0; i < stores_max; i++) {
        if (stores[i] == st)
            stores[i] = NULL;
    }
    pthread_mutex_unlock(&lock);
}

size_t pf_cache_bus_message(char op, const char *arg, char *out, size_t size)
{
    int n;

    pthread_once(&nonce_once, nonce_init);
    n = snprintf(out, size, "PF1 %s %c %s", nonce, op, arg);
    return n > 0 && (size_t)n < size ? (size_t)n : 0;
}

/* End job j by publishing a purge of arg (op) for the other processes. */
static void publish(struct pf_l2_job *j, struct pf_tx *tx, char op, const char *arg)
{
    size_t size = strlen(arg) + 32;
    char *m = pf_arena_alloc(pf_tx_arena(tx), size);
    size_t n = pf_cache_bus_message(op, arg, m, size);

    pf_l2_job_publish(j, PF_BUS_CHANNEL, m, n); /* n == 0 (cannot happen: sized): PUBLISH "" */
}

void pf_cache_bus_receive(void *arg, const char *msg, size_t len)
{
    char *copy;
    char op;

    (void)arg;
    pthread_once(&nonce_once, nonce_init);
    /* "PF1 " nonce " " op " " argument */
    if (len < 4 + 16 + 5 || memcmp(msg, "PF1 ", 4) != 0 || msg[20] != ' ' || msg[22] != ' ' ||
        memchr(msg, '\0', len) != NULL || memcmp(msg + 4, nonce, 16) == 0)
        return;
    op = msg[21];
    copy = pf_xstrndup(msg + 23, len - 23);
    pthread_mutex_lock(&lock);
    for (unsigned i = 0; i < stores_max; i++) {
        if (stores[i] == NULL)
            continue;
        if (op == PF_BUS_KEY)
            pf_cstore_purge_key(stores[i], copy);
        else if (op == PF_BUS_PREFIX)
            pf_cstore_purge_prefix(stores[i], copy);
        else if (op == PF_BUS_TAG)
            pf_cstore_purge_tag(stores[i], copy);
    }
    pthread_mutex_unlock(&lock);
    free(copy);
}

/* Is st one of the stores alive (lock held)? */
static bool registered(const struct pf_cstore *st)
{
    for (unsigned i = 0; i < stores_max; i++) {
        if (stores[i] == st)
            return true;
    }
    return false;
}

bool pf_cache_bus_covered(struct pf_cstore *st, const struct pf_cobj *o, uint64_t gen)
{
    bool covered;

    pthread_mutex_lock(&lock); /* st is not freed while registered (fini_process unregisters) */
    covered = registered(st) && pf_cstore_covered(st, o, gen);
    pthread_mutex_unlock(&lock);
    return covered;
}

size_t pf_cache_bus_purge_key(struct pf_cstore *st, const char *key)
{
    size_t n = 0;

    pthread_mutex_lock(&lock);
    if (registered(st))
        n = pf_cstore_purge_key(st, key);
    pthread_mutex_unlock(&lock);
    return n;
}

/* ---- purges in Redis from a worker ---- */

struct after {
    struct pf_cstore *st;
    char key[];
};

/* A purge job's deletes have run: drop what a lookup copied back from Redis meanwhile. */
static void after_deletes(void *arg, struct pf_l2 *l2)
{
    struct after *a = arg;

    (void)l2;
    pf_cache_bus_purge_key(a->st, a->key);
    free(a);
}

/* Once j's deletes have run, purge key from st's memory again (before j's PUBLISH). */
static void then_purge(struct pf_l2_job *j, struct pf_cstore *st, const char *key)
{
    size_t len = strlen(key);
    struct after *a = pf_xmalloc(sizeof(*a) + len + 1);

    a->st = st;
    memcpy(a->key, key, len + 1);
    pf_l2_job_then(j, after_deletes, a);
}

void pf_cache_l2_undo(struct pf_l2 *l2, struct pf_cstore *st, const char *key, const char *l2key)
{
    struct pf_l2_job *j = pf_l2_job_new(l2);
    size_t size = strlen(key) + 32;
    char *m = pf_xmalloc(size);
    size_t n = pf_cache_bus_message(PF_BUS_KEY, key, m, size);

    pf_l2_job_del(j, l2key);
    /* a lookup here or in another process may have copied the late write into memory */
    then_purge(j, st, key);
    pf_l2_job_publish(j, PF_BUS_CHANNEL, m, n);
    free(m);
    pf_cache_count_l2_undo();
}

/* ---- the PURGE method ---- */

/*
 * Remove key from L1 (every variant), L2 and the L1 of the other processes: every variant with a
 * SCAN when all (a purge: rare), else (an invalidation: on every successful unsafe request) the
 * variant-less entry (or Vary record) with one DEL and the variants listed in the key's variant
 * set. The L1 count.
 */
static size_t drop_key(struct pf_slot *s, struct pf_tx *tx, const char *key, bool all)
{
    struct pf_l2 *l2 = pf_cache_l2_of(s);
    /*
     * Memory first: its generation moves before Redis is asked, so a fetch's write to Redis that
     * lands after these deletes is deleted again once its reply is in (cache_l2.c); and again
     * once they have run, for what a lookup copied back from Redis in between.
     */
    size_t n = pf_cstore_purge_key(s->pstate, key);
    struct pf_l2_job *j = l2 != NULL ? pf_l2_job_new(l2) : NULL;

    if (j != NULL && all) {
        pf_l2_job_purge_prefix(j, pf_cache_l2_key(pf_tx_arena(tx), key, ""));
    } else if (j != NULL) {
        pf_l2_job_del(j, pf_cache_l2_key(pf_tx_arena(tx), key, ""));
        pf_l2_job_purge_tag(j, pf_cache_l2_variants_tag(pf_tx_arena(tx), key));
    }
    if (j != NULL) {
        then_purge(j, s->pstate, key);
        publish(j, tx, PF_BUS_KEY, key); /* once Redis no longer has it */
    }
    return n;
}

/* The PURGE method (purge_method: true): purge the target URL, answer {"purged": N}. */
enum pf_verdict pf_cache_on_purge(const struct pf_cache_conf *c, struct pf_tx *tx,
                                  struct pf_slot *s)
{
    struct evbuffer *b;
    char key[KEY_MAX];
    size_t n;

    if (!pf_tx_client_privileged(tx)) {
        pf_tx_error(tx, 403, PF_ERR_FORBIDDEN);
        return PF_REPLIED;
    }
    n = pf_cache_tx_key(c, tx, pf_tx_path(tx), key, sizeof(key)) ? drop_key(s, tx, key, true) : 0;
    b = pf_evbuffer_new();
    evbuffer_add_printf(b, "{\"purged\":%zu}\n", n);
    pf_tx_reply(tx, 200, b);
    evbuffer_free(b);
    pf_tx_resp_header_add(tx, "Content-Type", "application/json");
    return PF_REPLIED;
}

/* ---- invalidation (RFC 9111 §4.4) ---- */

/* The authority of Host or of an absolute URI, without a default :80, lower-cased, without the
 * trailing dot of a fully qualified name. */
static void authority(const char *s, size_t len, char *out, size_t size)
{
    size_t n = 0;

    if (len >= 3 && memcmp(s + len - 3, ":80", 3) == 0)
        len -= 3;
    if (len > 1 && s[len - 1] == '.')
        len--;
    for (size_t i = 0; i < len && n + 1 < size; i++)
        out[n++] = (char)(s[i] >= 'A' && s[i] <= 'Z' ? s[i] + 32 : s[i]);
    out[n] = '\0';
}

/* Purge the key of a Location / Content-Location value when it is same-origin. */
static void invalidate_uri(const struct pf_cache_conf *c, struct pf_tx *tx, struct pf_slot *s,
                           const char *uri)
{
    const char *host = pf_tx_host(tx);
    const char *p;
    char key[KEY_MAX];
    char a[256], b[256];

    if (uri == NULL || host == NULL)
        return;
    if (uri[0] == '/' && uri[1] != '/') {
        if (pf_cache_tx_key(c, tx, uri, key, sizeof(key)))
            drop_key(s, tx, key, false);
        return;
    }
    if (strncasecmp(uri, "http://", 7) != 0)
        return; /* another scheme is another origin */
    p = uri + 7;
    authority(p, strcspn(p, "/?#"), a, sizeof(a));
    authority(host, strlen(host), b, sizeof(b));
    if (strcmp(a, b) == 0 && pf_cache_url_key(c, uri, NULL, key, sizeof(key)) > 0)
        drop_key(s, tx, key, false);
}

void pf_cache_invalidate(const struct pf_cache_conf *c, struct pf_tx *tx, struct pf_slot *s,
                         const struct cache_ctx *x)
{
    if (x->key == NULL || !pf_cache_invalidates(pf_tx_method(tx), pf_tx_status(tx)))
        return;
    drop_key(s, tx, x->key, false);
    invalidate_uri(c, tx, s, pf_tx_resp_header(tx, "location"));
    invalidate_uri(c, tx, s, pf_tx_resp_header(tx, "content-location"));
}
