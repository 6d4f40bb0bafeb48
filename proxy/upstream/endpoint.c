/*
 * The process-wide endpoint table: one entry per "upstream name + address",
 * reference-counted by the snapshots that list it and the upstream
 * connections open to it, freed when the last of them goes.
 *
 * Ids are small integers reused once free (the lowest free one first), so
 * per-worker pools and metric handles indexed by id stay as large as the
 * most endpoints ever live at once, not as the number ever seen. A reused id
 * gets a new generation: whoever caches something per id (stats) compares
 * generations to notice that the endpoint behind the id changed.
 *
 * Threads: lookups and inserts (pf_upstream_bind) run on the main thread
 * under ep_lock; references are dropped on any thread with an atomic
 * decrement, and the one that reaches zero takes ep_lock to free the entry
 * unless a bind has revived it in between (same generation, refs still 0).
 */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "proxy/arena.h"
#include "proxy/clock.h"
#include "proxy/conf.h"
#include "proxy/upstream/breaker.h"
#include "proxy/upstream/endpoint.h"

static _Atomic(struct pf_endpoint *) endpoints[PF_MAX_ENDPOINTS]; /* atomic; set under ep_lock */
static _Atomic uint64_t gens[PF_MAX_ENDPOINTS]; /* atomic: generation of the id, 0 = free */
static atomic_uint n_live;                      /* atomic: endpoints in the table */
static atomic_uint id_limit;                    /* atomic: highest id ever used + 1 */
static uint64_t next_gen = 1;                   /* guarded by ep_lock */
static pthread_mutex_t ep_lock = PTHREAD_MUTEX_INITIALIZER;

/* The entry for upstream + a with one more snapshot reference, created when new; NULL when full. */
static struct pf_endpoint *endpoint_take_locked(const char *upstream, const struct pf_addr *a)
{
    unsigned limit = atomic_load(&id_limit);
    unsigned free_id = PF_MAX_ENDPOINTS;
    struct pf_endpoint *ep;

    for (unsigned i = 0; i < limit; i++) {
        ep = atomic_load(&endpoints[i]);
        if (ep == NULL) {
            if (free_id == PF_MAX_ENDPOINTS)
                free_id = i;
            continue;
        }
        if (strcmp(ep->upstream, upstream) == 0 && strcmp(ep->addr.text, a->text) == 0) {
            /* kept alive by connections only: it left the configuration, it comes back fresh */
            if (atomic_load(&ep->snaps) == 0)
                pf_breaker_reset(&ep->br);
            atomic_fetch_add(&ep->refs, 1);
            atomic_fetch_add(&ep->snaps, 1);
            return ep;
        }
    }
    if (free_id == PF_MAX_ENDPOINTS && limit < PF_MAX_ENDPOINTS)
        free_id = limit;
    if (free_id == PF_MAX_ENDPOINTS)
        return NULL;
    ep = pf_xcalloc(1, sizeof(*ep));
    ep->id = free_id;
    ep->gen = next_gen++;
    ep->upstream = pf_xstrdup(upstream);
    ep->addr = *a;
    ep->addr.text = pf_xstrdup(a->text);
    atomic_init(&ep->refs, 1);
    atomic_init(&ep->snaps, 1);
    atomic_init(&ep->serving_since_us, pf_now_us()); /* slow_start ramps a new endpoint too */
    atomic_store(&gens[free_id], ep->gen);
    atomic_store(&endpoints[free_id], ep);
    if (free_id == limit)
        atomic_store(&id_limit, limit + 1);
    atomic_fetch_add(&n_live, 1);
    return ep;
}

static struct pf_endpoint *endpoint_take(const char *upstream, const struct pf_addr *a)
{
    struct pf_endpoint *ep;

    pthread_mutex_lock(&ep_lock);
    ep = endpoint_take_locked(upstream, a);
    pthread_mutex_unlock(&ep_lock);
    return ep;
}

void pf_endpoint_unref(struct pf_endpoint *ep)
{
    unsigned id = ep->id;
    uint64_t gen = ep->gen;

    if (atomic_fetch_sub(&ep->refs, 1) != 1)
        return;
    pthread_mutex_lock(&ep_lock);
    /* a bind may have taken it again since the count reached 0 */
    if (atomic_load(&gens[id]) == gen && atomic_load(&ep->refs) == 0) {
        atomic_store(&endpoints[id], NULL);
        atomic_store(&gens[id], 0);
        atomic_fetch_sub(&n_live, 1);
        free(ep->upstream);
        free(ep->addr.text);
        free(ep);
    }
    pthread_mutex_unlock(&ep_lock);
}

void pf_endpoint_ref(struct pf_endpoint *ep)
{
    atomic_fetch_add(&ep->refs, 1);
}

/* Drop the snapshot references of cfg's first n_up upstreams (all their endpoints). */
static void unbind_upstreams(struct pf_config *cfg, unsigned n_up)
{
    for (unsigned u = 0; u < n_up; u++) {
        struct pf_upstream_conf *up = &cfg->upstreams[u];

        for (unsigned e = 0; e < up->n_endpoints && up->endpoint_ids != NULL; e++) {
            struct pf_endpoint *ep = pf_endpoint_get(up->endpoint_ids[e]);

            atomic_fetch_sub(&ep->snaps, 1);
            pf_endpoint_unref(ep);
        }
        free(up->endpoint_ids);
        up->endpoint_ids = NULL;
    }
}

/* Bind the endpoints of one upstream; on failure, those already taken are dropped. */
static int bind_upstream(struct pf_upstream_conf *up, struct pf_err *err)
{
    up->endpoint_ids = pf_xcalloc(up->n_endpoints, sizeof(*up->endpoint_ids));
    for (unsigned e = 0; e < up->n_endpoints; e++) {
        struct pf_endpoint *ep = endpoint_take(up->name, &up->endpoints[e]);

        if (ep == NULL) {
            if (err != NULL)
                pf_err_at(err, NULL,
                          "upstream %s: endpoint %s: too many endpoints in use (%u, the most "
                          "pilotfish keeps at once)",
                          up->name, up->endpoints[e].text, (unsigned)PF_MAX_ENDPOINTS);
            for (unsigned k = 0; k < e; k++) {
                struct pf_endpoint *old = pf_endpoint_get(up->endpoint_ids[k]);

                atomic_fetch_sub(&old->snaps, 1);
                pf_endpoint_unref(old);
            }
            free(up->endpoint_ids);
            up->endpoint_ids = NULL;
            return -ENOSPC;
        }
        up->endpoint_ids[e] = ep->id;
    }
    return 0;
}

int pf_endpoint_bind(struct pf_config *cfg, struct pf_err *err)
{
    int rc = 0;
    unsigned u;

    for (u = 0; u < cfg->n_upstreams && rc == 0; u++) {
        free(cfg->upstreams[u].endpoint_ids);
        rc = bind_upstream(&cfg->upstreams[u], err);
    }
    if (rc != 0)
        unbind_upstreams(cfg, u - 1);
    return rc;
}

void pf_endpoint_unbind(struct pf_config *cfg)
{
    unbind_upstreams(cfg, cfg->n_upstreams);
}

/* prev's upstream named name, or NULL. */
static const struct pf_upstream_conf *upstream_named(const struct pf_config *prev, const char *name)
{
    for (unsigned u = 0; u < prev->n_upstreams; u++) {
        if (strcmp(prev->upstreams[u].name, name) == 0)
            return &prev->upstreams[u];
    }
    return NULL;
}

void pf_endpoint_fresh_breakers(const struct pf_config *cfg, const struct pf_config *prev)
{
    uint64_t listed[PF_MAX_ENDPOINTS / 64];

    for (unsigned u = 0; prev != NULL && u < cfg->n_upstreams; u++) {
        const struct pf_upstream_conf *up = &cfg->upstreams[u];
        const struct pf_upstream_conf *old = upstream_named(prev, up->name);

        memset(listed, 0, sizeof(listed));
        for (unsigned e = 0; old != NULL && e < old->n_endpoints && old->endpoint_ids != NULL; e++)
            listed[old->endpoint_ids[e] / 64] |= 1ull << (old->endpoint_ids[e] % 64);
        for (unsigned e = 0; e < up->n_endpoints && up->endpoint_ids != NULL; e++) {
            unsigned id = up->endpoint_ids[e];

            /* not in service before this one: it left (an older snapshot may still hold it) */
            if ((listed[id / 64] >> (id % 64) & 1) == 0)
                pf_breaker_reset(&pf_endpoint_get(id)->br);
        }
    }
}

struct pf_endpoint *pf_endpoint_get(unsigned id)
{
    return atomic_load_explicit(&endpoints[id], memory_order_acquire);
}

uint64_t pf_endpoint_gen(unsigned id)
{
    return id < PF_MAX_ENDPOINTS ? atomic_load_explicit(&gens[id], memory_order_acquire) : 0;
}

unsigned pf_endpoint_count(void)
{
    return atomic_load(&n_live);
}

unsigned pf_endpoint_id_limit(void)
{
    return atomic_load(&id_limit);
}

void pf_upstream_free_all(void)
{
    unsigned n = atomic_load(&id_limit);

    for (unsigned i = 0; i < n; i++) {
        struct pf_endpoint *ep = atomic_load(&endpoints[i]);

        if (ep == NULL)
            continue;
        free(ep->upstream);
        free(ep->addr.text);
        free(ep);
        atomic_store(&endpoints[i], NULL);
        atomic_store(&gens[i], 0);
    }
    atomic_store(&n_live, 0);
    atomic_store(&id_limit, 0);
}
