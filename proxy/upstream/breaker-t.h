/*
 * Circuit breaker types (proxy/upstream/breaker.c): the circuit_breaker
 * settings of an upstream, and the state each endpoint carries, shared by
 * all workers. Nothing here needs the HTTP engine.
 */
#ifndef PF_UPSTREAM_BREAKER_T_H
#define PF_UPSTREAM_BREAKER_T_H

#include <stdatomic.h>
#include <stdint.h>

enum pf_circuit {
    PF_CIRCUIT_CLOSED = 0, /* pilotfish_upstream_circuit_state values */
    PF_CIRCUIT_OPEN = 1,
    PF_CIRCUIT_HALF_OPEN = 2,
};

#define PF_BREAKER_BUCKETS      10 /* the sliding window, in tenths */
#define PF_BREAKER_LAT_BUCKETS  16 /* latency: 0.5 ms doubling, the last one unbounded */
#define PF_BREAKER_STATUS_WORDS 8  /* failure_statuses: one bit per status 100..611 */

/* upstreams.NAME.circuit_breaker */
struct pf_breaker_conf {
    unsigned consecutive_failures;                 /* 5; 0 = off */
    double failure_rate;                           /* 50%; 0 = off */
    unsigned min_requests;                         /* 20 */
    uint64_t window_ms;                            /* 10s */
    uint64_t slow_call_ms;                         /* 0s = off */
    double slow_rate;                              /* 100% */
    char *failure_statuses;                        /* "500-599", as written (pf_xstrdup'd) */
    uint64_t status_bits[PF_BREAKER_STATUS_WORDS]; /* failure_statuses parsed */
    uint64_t open_for_ms;                          /* 30s */
    uint64_t max_open_for_ms;                      /* 5m */
    unsigned half_open_requests;                   /* 1 */
    unsigned max_connections;                      /* 1024 */
    unsigned max_pending;                          /* 1024 */
    unsigned max_requests;                         /* 1024 */
    unsigned max_retries;                          /* 3 (enforced by the retries) */
    double max_ejection;                           /* 50% */
};

/*
 * One tenth of the window: the word packs the tenth's index (low 19 bits),
 * then calls, failures and slow calls (15 bits each), so that a call is
 * counted with one compare-and-swap. A tenth with 32767 calls counts no more.
 */
struct pf_breaker_bucket {
    _Atomic uint64_t word;
    atomic_uint lat[PF_BREAKER_LAT_BUCKETS]; /* calls by duration (for percentiles) */
};

/* An endpoint's breaker: every field atomic, read without locks. */
struct pf_breaker {
    atomic_uint state;             /* enum pf_circuit */
    atomic_uint consecutive;       /* failures in a row while closed */
    atomic_uint opens;             /* opens in a row without a clean close: open_for doubles */
    atomic_uint trials;            /* half-open trial requests let through */
    atomic_uint trial_ok;          /* half-open trials that succeeded */
    atomic_uint pending;           /* attempts waiting for their connection (max_pending) */
    atomic_uint capped;            /* 1 while max_ejection keeps a tripped endpoint in service */
    _Atomic uint64_t since_us;     /* when the state last changed (pf_now_us) */
    _Atomic uint64_t retry_us;     /* open: when the next half-open trial may go */
    _Atomic uint64_t trial_us;     /* half-open: when the last trial went */
    _Atomic uint64_t reason;       /* why the state last changed, packed (breaker.c) */
    _Atomic uint64_t opened_total; /* pilotfish_upstream_circuit_opened_total */
    struct pf_breaker_bucket win[PF_BREAKER_BUCKETS];
};

#endif /* PF_UPSTREAM_BREAKER_T_H */
