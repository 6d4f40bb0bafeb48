/*
 * Balancing policies. Each draws from the worker's random state and keeps
 * its position in the worker, so a pick takes no lock. With nothing tried
 * yet, every policy draws exactly as many numbers as it always did: the
 * tried mask changes only the retries.
 */
#include "proxy/upstream/balancer.h"

#include <stdatomic.h>

#include "proxy/core.h"
#include "proxy/tx.h"
#include "proxy/upstream/endpoint.h"

static bool is_tried(pf_lb_tried tried, unsigned i)
{
    return i < PF_LB_TRIED_MAX && (tried & ((pf_lb_tried)1 << i)) != 0;
}

/* Endpoints of n not in tried (tried is 0 or leaves at least one). */
static unsigned untried_count(pf_lb_tried tried, unsigned n)
{
    unsigned m = n;

    for (unsigned i = 0; i < n && i < PF_LB_TRIED_MAX; i++)
        m -= is_tried(tried, i);
    return m;
}

/* Index of the k-th (from 0) endpoint not in tried. */
static unsigned nth_untried(pf_lb_tried tried, unsigned n, unsigned k)
{
    if (tried == 0)
        return k;
    for (unsigned i = 0; i < n; i++) {
        if (!is_tried(tried, i) && k-- == 0)
            return i;
    }
    return 0; /* not reached: k < untried_count() */
}

/* tried, or 0 when it covers every endpoint (a retry then goes anywhere). */
static pf_lb_tried usable_mask(pf_lb_tried tried, unsigned n)
{
    return untried_count(tried, n) == 0 ? 0 : tried;
}

static unsigned rr_pick(const struct pf_upstream_conf *up, pf_lb_tried tried, struct pf_worker *w)
{
    unsigned n = up->n_endpoints;

    if (tried != 0) {
        /*
         * A retry: any endpoint not tried, drawn, leaving the rotation where it
         * is (were it to move, first attempts would land on the same endpoint
         * each time a retry follows: with one of two failing, on that one).
         */
        tried = usable_mask(tried, n);
        return nth_untried(tried, n, (unsigned)(pf_worker_rand(w) % untried_count(tried, n)));
    }
    return (unsigned)(w->rr++ % n);
}

static unsigned random_pick(const struct pf_upstream_conf *up, pf_lb_tried tried,
                            struct pf_worker *w)
{
    unsigned n = up->n_endpoints;
    unsigned m;

    tried = usable_mask(tried, n);
    m = untried_count(tried, n);
    return nth_untried(tried, n, (unsigned)(pf_worker_rand(w) % m));
}

/* Power of two choices: the less loaded (requests in flight, all workers) of two drawn. */
static unsigned least_pick(const struct pf_upstream_conf *up, pf_lb_tried tried,
                           struct pf_worker *w)
{
    unsigned n = up->n_endpoints;
    unsigned m, a, b, la, lb;

    tried = usable_mask(tried, n);
    m = untried_count(tried, n);
    a = nth_untried(tried, n, (unsigned)(pf_worker_rand(w) % m));
    b = nth_untried(tried, n, (unsigned)(pf_worker_rand(w) % m));
    la = atomic_load_explicit(&pf_endpoint_get(up->endpoint_ids[a])->active, memory_order_relaxed);
    lb = atomic_load_explicit(&pf_endpoint_get(up->endpoint_ids[b])->active, memory_order_relaxed);
    return lb < la ? b : a;
}

const struct pf_balancer_ops pf_lb_round_robin = {.name = "round_robin", .pick = rr_pick};
const struct pf_balancer_ops pf_lb_least_request = {.name = "least_request", .pick = least_pick};
const struct pf_balancer_ops pf_lb_random = {.name = "random", .pick = random_pick};

const struct pf_balancer_ops *pf_balancer_get(enum pf_balance b)
{
    switch (b) {
    case PF_BALANCE_LEAST_REQUEST:
        return &pf_lb_least_request;
    case PF_BALANCE_RANDOM:
        return &pf_lb_random;
    default:
        return &pf_lb_round_robin;
    }
}

unsigned pf_balancer_pick(const struct pf_upstream_conf *up, pf_lb_tried tried, struct pf_worker *w)
{
    if (up->n_endpoints == 1)
        return up->endpoint_ids[0]; /* no draw: one endpoint, tried or not */
    return up->endpoint_ids[pf_balancer_get(up->balance)->pick(up, tried, w)];
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
