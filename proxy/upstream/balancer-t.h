/*
 * Balancer types: a policy is a small table of operations, chosen per
 * upstream by its `balance` key. pick() chooses among the upstream's
 * endpoints, skipping those this request already tried when any is left;
 * report() hears the outcome of every attempt (passive health and circuit
 * breakers hook in there).
 */
#ifndef PF_UPSTREAM_BALANCER_T_H
#define PF_UPSTREAM_BALANCER_T_H

#include <stdint.h>

#include "proxy/conf.h"
#include "proxy/upstream/endpoint-t.h"

struct pf_worker;

/*
 * Endpoints tried by one request, bit i for up->endpoint_ids[i]. Only the
 * first PF_LB_TRIED_MAX indices are tracked: those past it always count as
 * not tried.
 */
typedef uint64_t pf_lb_tried;
#define PF_LB_TRIED_MAX 64

struct pf_balancer_ops {
    const char *name; /* as the balance key spells it */
    /*
     * Index into up->endpoint_ids (up->n_endpoints >= 1) of an endpoint not
     * in tried, or of any endpoint when all were tried. w gives the worker's
     * random state and round-robin position (no locks: one worker).
     */
    unsigned (*pick)(const struct pf_upstream_conf *up, pf_lb_tried tried, struct pf_worker *w);
    /* The outcome of an attempt on endpoint_id (NULL: the policy keeps no state). */
    void (*report)(const struct pf_upstream_conf *up, unsigned endpoint_id, enum pf_outcome o);
};

#endif /* PF_UPSTREAM_BALANCER_T_H */
