/*
 * filters/cache/hfm.c: hit-for-miss markers (docs/filters/cache.md, "Request
 * coalescing").
 *
 * When the request that fetched a key for coalesced waiters got a response
 * that cannot be stored, the next requests for the key would again queue
 * behind one fetch each, serially, since none of them leaves anything to
 * serve. A marker remembers, for a while, that the key's response is not
 * stored: requests for it then go upstream at once, in parallel. A response
 * that can be stored again is stored as usual (the marker only turns
 * coalescing off), and the marker expires on its own.
 *
 * One process-wide table, like coalesce.c's: a mutex, fixed buckets, at most
 * MARKS_MAX markers (beyond, no new ones: requests then coalesce as usual).
 * Expired markers are removed when their bucket is walked, and all of them
 * when the table is full (at most once a second).
 */
#include "filters/cache/cache.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "proxy/arena.h"

#define BUCKETS   1024
#define MARKS_MAX 16384

struct mark {
    struct mark *next;
    const void *store;
    int64_t until; /* seconds */
    char key[];
};

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static struct mark *table[BUCKETS]; /* guarded by lock */
static unsigned n_marks;            /* guarded by lock */
static int64_t last_sweep = -1;     /* guarded by lock */

static unsigned bucket_of(const void *store, const char *key)
{
    uint64_t h = UINT64_C(1469598103934665603) ^ (uint64_t)(uintptr_t)store;

    for (const unsigned char *p = (const unsigned char *)key; *p != '\0'; p++)
        h = (h ^ *p) * UINT64_C(1099511628211);
    return (unsigned)(h % BUCKETS);
}

/* The live marker of (store, key) in its bucket, dropping expired ones on the way (lock held). */
static struct mark *find(unsigned b, const void *store, const char *key, int64_t now)
{
    struct mark **pp = &table[b];
    struct mark *m;

    while ((m = *pp) != NULL) {
        if (m->until <= now) {
            *pp = m->next;
            free(m);
            n_marks--;
            continue;
        }
        if (m->store == store && strcmp(m->key, key) == 0)
            return m;
        pp = &m->next;
    }
    return NULL;
}

/* Full: drop every expired marker, at most once a second (a table full of live ones stays so). */
static void sweep(int64_t now)
{
    if (last_sweep == now)
        return;
    last_sweep = now;
    for (unsigned b = 0; b < BUCKETS; b++)
        (void)find(b, NULL, "", now); /* no marker has a NULL store: only drops expired ones */
}

void pf_cache_hfm_set(const void *store, const char *key, int64_t now, int64_t ttl_s)
{
    unsigned b = bucket_of(store, key);
    size_t kl = strlen(key);
    struct mark *m;

    pthread_mutex_lock(&lock);
    m = find(b, store, key, now);
    if (m == NULL && n_marks >= MARKS_MAX)
        sweep(now);
    if (m == NULL && n_marks < MARKS_MAX) {
        m = pf_xmalloc(sizeof(*m) + kl + 1);
        m->store = store;
        memcpy(m->key, key, kl + 1);
        m->next = table[b];
        table[b] = m;
        n_marks++;
    }
    if (m != NULL)
        m->until = now + ttl_s;
    pthread_mutex_unlock(&lock);
}

bool pf_cache_hfm_active(const void *store, const char *key, int64_t now)
{
    bool on;

    pthread_mutex_lock(&lock);
    on = find(bucket_of(store, key), store, key, now) != NULL;
    pthread_mutex_unlock(&lock);
    return on;
}

int64_t pf_cache_hfm_ttl(int64_t lifetime)
{
    if (lifetime <= 0)
        return PF_HFM_DEFAULT_S;
    return lifetime < PF_HFM_MAX_S ? lifetime : PF_HFM_MAX_S;
}
