/*
 * Balancing policies. Each draws from the worker's random state and keeps
 * its round-robin weights in the worker, so a pick takes no lock. With equal
 * weights and nothing tried, every policy draws exactly as many numbers as
 * it always did: the tried mask changes only the retries.
 *
 * A pick first builds the view of candidates: the endpoints in service (the
 * one predicate, ep_in_service) that this request has not tried; all those
 * in service when it tried them all; in panic (no endpoint healthy,
 * panic: true) the same among those the checks found unhealthy. The
 * policies then weigh candidates by their weight, ramped by slow_start.
 */
#include "proxy/upstream/balancer.h"

#include <stdatomic.h>
#include <string.h>

#include "proxy/core.h"
#include "proxy/hdrs.h"
#include "proxy/tx.h"
#include "proxy/upstream/breaker.h"
#include "proxy/upstream/endpoint.h"
#include "proxy/upstream/health.h"
#include "proxy/upstream/pool.h"

#define SLOW_START_SCALE 1000u /* weights are counted in thousandths while ramping */

static bool is_tried(pf_lb_tried tried, unsigned i)
{
    return i < PF_LB_TRIED_MAX && (tried & ((pf_lb_tried)1 << i)) != 0;
}

static bool is_cand(const struct pf_lb_view *v, unsigned i)
{
    return (v->cand[i / 64] >> (i % 64)) & 1;
}

/*
 * The one test of whether endpoint i of up may take a request: healthy by
 * the active checks, or in panic found unhealthy by them (never one not
 * probed yet). An endpoint whose circuit is open is out first: that holds
 * in panic too.
 */
static bool ep_in_service(const struct pf_upstream_conf *up, unsigned i, bool panic,
                          uint64_t now_us)
{
    const struct pf_endpoint *ep = pf_endpoint_get(up->endpoint_ids[i]);

    if (!pf_breaker_usable(ep, now_us))
        return false; /* its circuit is open: never, not even in panic */
    if (pf_health_serving(&up->health, ep))
        return true;
    return panic && atomic_load_explicit(&ep->health, memory_order_relaxed) == PF_HEALTH_UNHEALTHY;
}

/*
 * Candidates of v: in service, not refused and, unless use_tried, not in
 * tried. Their count.
 */
static unsigned view_fill(struct pf_lb_view *v, pf_lb_tried tried, const uint64_t *refused,
                          bool panic, bool use_tried)
{
    const struct pf_upstream_conf *up = v->up;
    unsigned n = 0;

    memset(v->cand, 0, ((up->n_endpoints + 63) / 64) * sizeof(v->cand[0]));
    for (unsigned i = 0; i < up->n_endpoints; i++) {
        if (refused != NULL && (refused[i / 64] >> (i % 64) & 1) != 0)
            continue; /* refused by the gate: out even when all are tried */
        if ((use_tried || !is_tried(tried, i)) && ep_in_service(up, i, panic, v->now_us)) {
            v->cand[i / 64] |= (uint64_t)1 << (i % 64);
            n++;
        }
    }
    v->n_cand = n;
    return n;
}

/* Some endpoint of up is healthy by the checks, whatever its circuit. */
static bool any_healthy(const struct pf_upstream_conf *up)
{
    for (unsigned i = 0; i < up->n_endpoints; i++) {
        if (pf_health_serving(&up->health, pf_endpoint_get(up->endpoint_ids[i])))
            return true;
    }
    return false;
}

/* The view of a pick; false when no endpoint may take the request. *panic: taken in panic. */
static bool view_build(struct pf_lb_view *v, pf_lb_tried tried, const uint64_t *refused,
                       bool *panic)
{
    const struct pf_upstream_conf *up = v->up;

    *panic = false;
    if (view_fill(v, tried, refused, false, false) > 0 ||
        view_fill(v, tried, refused, false, true) > 0)
        return true;
    if (!up->health.enabled || !up->health.panic || any_healthy(up))
        return false; /* panic is for health alone: healthy endpoints with open circuits are not */
    *panic = true;
    return view_fill(v, tried, refused, true, false) > 0 ||
           view_fill(v, tried, refused, true, true) > 0;
}

uint64_t pf_balancer_weight(const struct pf_upstream_conf *up, unsigned i, uint64_t now_us)
{
    uint64_t w = up->weights != NULL ? up->weights[i] : 1;
    uint64_t since, ramp_us, full;

    if (up->slow_start_ms == 0)
        return w;
    full = w * SLOW_START_SCALE;
    since = atomic_load_explicit(&pf_endpoint_get(up->endpoint_ids[i])->serving_since_us,
                                 memory_order_relaxed);
    ramp_us = up->slow_start_ms * 1000;
    if (now_us <= since)
        return full / 10;
    if (now_us - since >= ramp_us)
        return full;
    /* linear from a tenth of the weight to all of it */
    return full / 10 + (full - full / 10) * (now_us - since) / ramp_us;
}

/* Sum of the candidates' weights. */
static uint64_t total_weight(const struct pf_lb_view *v)
{
    uint64_t t = 0;

    for (unsigned i = 0; i < v->up->n_endpoints; i++) {
        if (is_cand(v, i))
            t += pf_balancer_weight(v->up, i, v->now_us);
    }
    return t;
}

/*
 * The candidate at r (0 <= r < total) when candidates other than skip
 * (PF_LB_NONE: none skipped) are laid end to end by weight.
 */
static unsigned weighted_at(const struct pf_lb_view *v, uint64_t r, unsigned skip)
{
    unsigned last = 0;

    for (unsigned i = 0; i < v->up->n_endpoints; i++) {
        uint64_t w;

        if (!is_cand(v, i) || i == skip)
            continue;
        w = pf_balancer_weight(v->up, i, v->now_us);
        if (r < w)
            return i;
        r -= w;
        last = i;
    }
    return last; /* not reached: r < total */
}

/* Smooth weighted round robin (as nginx's): spreads an endpoint's turns evenly. */
static unsigned rr_pick(const struct pf_lb_view *v, struct pf_worker *w)
{
    const struct pf_upstream_conf *up = v->up;
    int64_t total = 0, best = INT64_MIN;
    unsigned pick = 0;

    for (unsigned i = 0; i < up->n_endpoints; i++) {
        struct pf_pool *p;
        int64_t wt;

        if (!is_cand(v, i))
            continue;
        p = pf_pool_of(w, up->endpoint_ids[i]);
        wt = (int64_t)pf_balancer_weight(up, i, v->now_us);
        p->lb_current += wt;
        total += wt;
        if (p->lb_current > best) {
            best = p->lb_current;
            pick = i;
        }
    }
    pf_pool_of(w, up->endpoint_ids[pick])->lb_current -= total;
    return pick;
}

/* Take back rr_pick's turn of pick in v (the gate refused it). */
static void rr_unpick(const struct pf_lb_view *v, struct pf_worker *w, unsigned pick)
{
    const struct pf_upstream_conf *up = v->up;
    int64_t total = 0;

    for (unsigned i = 0; i < up->n_endpoints; i++) {
        int64_t wt;

        if (!is_cand(v, i))
            continue;
        wt = (int64_t)pf_balancer_weight(up, i, v->now_us);
        pf_pool_of(w, up->endpoint_ids[i])->lb_current -= wt;
        total += wt;
    }
    pf_pool_of(w, up->endpoint_ids[pick])->lb_current += total;
}

static unsigned random_pick(const struct pf_lb_view *v, struct pf_worker *w)
{
    return weighted_at(v, pf_worker_rand(w) % total_weight(v), PF_LB_NONE);
}

/*
 * Power of two choices: two different candidates drawn by weight, and of
 * them the one with fewer requests in flight (all workers) for its weight.
 */
static unsigned least_pick(const struct pf_lb_view *v, struct pf_worker *w)
{
    uint64_t total = total_weight(v);
    unsigned a = weighted_at(v, pf_worker_rand(w) % total, PF_LB_NONE);
    uint64_t wa = pf_balancer_weight(v->up, a, v->now_us);
    unsigned b = weighted_at(v, pf_worker_rand(w) % (total - wa), a); /* n_cand >= 2 */
    uint64_t wb = pf_balancer_weight(v->up, b, v->now_us);
    uint64_t la, lb;

    la = atomic_load_explicit(&pf_endpoint_get(v->up->endpoint_ids[a])->active,
                              memory_order_relaxed);
    lb = atomic_load_explicit(&pf_endpoint_get(v->up->endpoint_ids[b])->active,
                              memory_order_relaxed);
    return lb * wa < la * wb ? b : a;
}

/* The first candidate clockwise from the key's place on the ring. */
static unsigned ring_pick(const struct pf_lb_view *v, struct pf_worker *w)
{
    const struct pf_upstream_conf *up = v->up;
    unsigned lo = 0, hi = up->n_ring;

    (void)w;
    while (lo < hi) {
        unsigned mid = lo + (hi - lo) / 2;

        if (up->ring[mid].hash < v->key)
            lo = mid + 1;
        else
            hi = mid;
    }
    for (unsigned k = 0; k < up->n_ring; k++) {
        unsigned i = up->ring[(lo + k) % up->n_ring].index;

        if (is_cand(v, i))
            return i;
    }
    return 0; /* not reached: every endpoint has points */
}

const struct pf_balancer_ops pf_lb_round_robin = {.name = "round_robin", .pick = rr_pick};
const struct pf_balancer_ops pf_lb_least_request = {.name = "least_request", .pick = least_pick};
const struct pf_balancer_ops pf_lb_random = {.name = "random", .pick = random_pick};
const struct pf_balancer_ops pf_lb_ring_hash = {.name = "ring_hash", .pick = ring_pick};

const struct pf_balancer_ops *pf_balancer_get(enum pf_balance b)
{
    switch (b) {
    case PF_BALANCE_LEAST_REQUEST:
        return &pf_lb_least_request;
    case PF_BALANCE_RANDOM:
        return &pf_lb_random;
    case PF_BALANCE_RING_HASH:
        return &pf_lb_ring_hash;
    default:
        return &pf_lb_round_robin;
    }
}

/* One draw among v's candidates; *rr: it took a round-robin turn. */
static unsigned pick_once(const struct pf_lb_view *v, pf_lb_tried tried, struct pf_worker *w,
                          bool *rr)
{
    const struct pf_upstream_conf *up = v->up;

    *rr = false;
    if (up->n_endpoints == 1)
        return 0; /* no draw: one endpoint, tried or not */
    if (v->n_cand == 1)
        return weighted_at(v, 0, PF_LB_NONE); /* the only candidate */
    if (tried != 0 && up->balance == PF_BALANCE_ROUND_ROBIN)
        return random_pick(v, w); /* a retry leaves the rotation alone (else, with one of two
                                     endpoints failing, every first attempt would land on it) */
    *rr = up->balance == PF_BALANCE_ROUND_ROBIN;
    return pf_balancer_get(up->balance)->pick(v, w);
}

unsigned pf_balancer_pick_key_admit(const struct pf_upstream_conf *up, pf_lb_tried tried,
                                    struct pf_worker *w, uint64_t key, struct pf_lb_admit *a)
{
    struct pf_lb_view v = {.up = up, .key = key};
    bool panic, rr;
    unsigned i;

    v.now_us = pf_now_us(); /* once a pick: circuits and slow_start read it */
    for (unsigned k = 0; k <= up->n_endpoints; k++) {
        if (!view_build(&v, tried, a != NULL ? a->refused : NULL, &panic))
            return PF_LB_NONE;
        i = pick_once(&v, tried, w, &rr);
        if (a == NULL || a->fn(up->endpoint_ids[i], a->arg)) {
            if (panic)
                atomic_fetch_add_explicit(&pf_endpoint_get(up->endpoint_ids[i])->panic_requests, 1,
                                          memory_order_relaxed);
            return up->endpoint_ids[i];
        }
        if (rr)
            rr_unpick(&v, w, i);
        a->refused[i / 64] |= (uint64_t)1 << (i % 64);
        a->refused_any = true;
    }
    return PF_LB_NONE; /* not reached: each turn refuses one more endpoint */
}

unsigned pf_balancer_pick_key(const struct pf_upstream_conf *up, pf_lb_tried tried,
                              struct pf_worker *w, uint64_t key)
{
    return pf_balancer_pick_key_admit(up, tried, w, key, NULL);
}

unsigned pf_balancer_pick(const struct pf_upstream_conf *up, pf_lb_tried tried, struct pf_worker *w)
{
    return pf_balancer_pick_key(up, tried, w, 0);
}

uint64_t pf_balancer_hash(const char *s, size_t len)
{
    uint64_t h = 0xcbf29ce484222325ull; /* FNV-1a, then a finaliser to spread the bits */

    for (size_t i = 0; i < len; i++)
        h = (h ^ (unsigned char)s[i]) * 0x100000001b3ull;
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdull;
    h ^= h >> 33;
    h *= 0xc4ceb9fe1a85ec53ull;
    return h ^ (h >> 33);
}

unsigned pf_balancer_pick_admit(const struct pf_tx *tx, pf_lb_tried tried, struct pf_lb_admit *a)
{
    const struct pf_upstream_conf *up = tx->up;
    const char *k;

    if (up->balance != PF_BALANCE_RING_HASH)
        return pf_balancer_pick_key_admit(up, tried, tx->w, 0, a);
    k = up->hash_header != NULL ? pf_hdrs_get(&tx->req, up->hash_header) : pf_tx_client_addr(tx);
    /* no such header: any endpoint, by a draw */
    return pf_balancer_pick_key_admit(
        up, tried, tx->w, k != NULL ? pf_balancer_hash(k, strlen(k)) : pf_worker_rand(tx->w), a);
}

unsigned pf_balancer_pick_tx(const struct pf_tx *tx, pf_lb_tried tried)
{
    return pf_balancer_pick_admit(tx, tried, NULL);
}

void pf_balancer_report(const struct pf_upstream_conf *up, unsigned endpoint_id, enum pf_outcome o)
{
    const struct pf_balancer_ops *ops = pf_balancer_get(up->balance);

    if (ops->report != NULL)
        ops->report(up, endpoint_id, o);
}

pf_lb_tried pf_balancer_tried_bit(const struct pf_upstream_conf *up, unsigned endpoint_id)
{
    for (unsigned i = 0; i < up->n_endpoints && i < PF_LB_TRIED_MAX; i++) {
        if (up->endpoint_ids[i] == endpoint_id)
            return (pf_lb_tried)1 << i;
    }
    return 0;
}
