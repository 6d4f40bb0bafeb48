/*
 * Balancer types: a policy is a small table of operations, chosen per
 * upstream by its `balance` key. pick() chooses among the candidates of a
 * view: the upstream's endpoints in service (health, and later the circuit
 * breaker, through one predicate in balancer.c), without those this request
 * already tried when any is left; report() hears the outcome of every
 * attempt (passive health and circuit breakers hook in there).
 */
#ifndef PF_UPSTREAM_BALANCER_T_H
#define PF_UPSTREAM_BALANCER_T_H

#include <stdbool.h>
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

/* pf_balancer_pick's answer when no endpoint may take the request. */
#define PF_LB_NONE 0xffffffffu

/* What a policy picks from: the candidates, as a bitmap of endpoint indices. */
struct pf_lb_view {
    const struct pf_upstream_conf *up;
    uint64_t key;    /* ring_hash: the request's hash */
    uint64_t now_us; /* pf_now_us() of the pick (open circuits, slow_start) */
    unsigned n_cand; /* candidates, >= 1 */
    uint64_t cand[PF_MAX_ENDPOINTS / 64];
};

/*
 * A pick that asks a gate (the circuit breaker's admission) about the
 * endpoint it chose: a refused one is out of every later view of the same
 * pick, tried or not, and its draw leaves no trace (round-robin turns,
 * panic counts). refused is sized to the endpoint list, not to the tried mask.
 */
struct pf_lb_admit {
    bool (*fn)(unsigned endpoint_id, void *arg); /* false: refused */
    void *arg;
    bool refused_any;                        /* out: some endpoint was refused */
    uint64_t refused[PF_MAX_ENDPOINTS / 64]; /* out: bit i for up->endpoint_ids[i] */
};

struct pf_balancer_ops {
    const char *name; /* as the balance key spells it */
    /*
     * Index into v->up->endpoint_ids of one of v's candidates. w gives the
     * worker's random state and round-robin weights (no locks: one worker).
     */
    unsigned (*pick)(const struct pf_lb_view *v, struct pf_worker *w);
    /* The outcome of an attempt on endpoint_id (NULL: the policy keeps no state). */
    void (*report)(const struct pf_upstream_conf *up, unsigned endpoint_id, enum pf_outcome o);
};

#endif /* PF_UPSTREAM_BALANCER_T_H */
