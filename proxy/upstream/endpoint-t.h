/*
 * Endpoint types: one process-wide entry per "upstream name + address"
 * (proxy/upstream/endpoint.c). Nothing here needs the HTTP engine, so the
 * balancer, and later health checks and breakers, can see endpoints alone.
 */
#ifndef PF_UPSTREAM_ENDPOINT_T_H
#define PF_UPSTREAM_ENDPOINT_T_H

#include <stdatomic.h>
#include <stdint.h>

#include "proxy/conf.h"
#include "proxy/upstream/breaker-t.h"

#define PF_MAX_ENDPOINTS 4096 /* endpoints live at once */

struct pf_endpoint {
    unsigned id;
    uint64_t gen;        /* unique per endpoint ever made: tells a reused id apart */
    char *upstream;      /* upstream name */
    struct pf_addr addr; /* address (text + sockaddr) */
    atomic_uint active;  /* atomic: requests in flight, all workers */
    atomic_uint open;    /* atomic: open connections, all workers */
    atomic_uint refs;    /* atomic: snapshot bindings + open connections */
    atomic_uint snaps;   /* atomic: snapshot bindings only (0: idle connections go) */
    /* circuit breaker (breaker.c): survives reloads that keep the endpoint */
    struct pf_breaker br;
    atomic_uint health; /* atomic: enum pf_health_state, written by the prober (health.c) */
    _Atomic uint64_t serving_since_us; /* atomic: when it last began to serve (slow_start) */
    _Atomic uint64_t panic_requests;   /* atomic: requests it took in panic (health.c) */
};

/* Outcome of one attempt, reported to the balancer (and the breaker / health seam). */
enum pf_outcome {
    PF_OUTCOME_OK = 0, /* a response head arrived */
    PF_OUTCOME_CONNECT_FAILED,
    PF_OUTCOME_RESET,
    PF_OUTCOME_TIMEOUT,
    PF_OUTCOME_BAD_RESPONSE,
};

#endif /* PF_UPSTREAM_ENDPOINT_T_H */
