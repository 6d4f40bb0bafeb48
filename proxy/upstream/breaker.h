/*
 * Per-endpoint circuit breakers, shared by all workers.
 *
 * Closed: calls are counted (consecutive failures, and failures and slow
 * calls over a sliding window); a trip opens the circuit unless max_ejection
 * forbids it. Open: the balancer skips the endpoint until retry_us, then the
 * first request to look at it moves it to half-open, which lets
 * half_open_requests trial requests through: as many successes close it, one
 * failure opens it again for twice as long (up to max_open_for, with
 * jitter). Reads are lock-free; transitions are compare-and-swaps, and an
 * opening takes a mutex (rare) so that max_ejection holds across workers.
 *
 * Every function takes the time (pf_now_us()) as an argument: tests drive
 * the state machine with their own clock.
 */
#ifndef PF_UPSTREAM_BREAKER_H
#define PF_UPSTREAM_BREAKER_H

#include <stdbool.h>
#include <stdint.h>

#include "proxy/conf.h"
#include "proxy/upstream/breaker-t.h"
#include "proxy/upstream/endpoint-t.h"

struct evbuffer;

/* ---- settings (main thread) ---- */

/* The defaults of every key. */
void pf_breaker_conf_defaults(struct pf_breaker_conf *c);
/* Parse circuit_breaker map n (NULL: defaults stay) into c; section names it in errors. */
void pf_breaker_conf_parse(const struct pf_conf_node *n, const char *section,
                           struct pf_breaker_conf *c, struct pf_err *err);
void pf_breaker_conf_free(struct pf_breaker_conf *c);
/* GET /config: ',"circuit_breaker":{...}' with every key. */
void pf_breaker_conf_json(const struct pf_breaker_conf *c, struct evbuffer *out);
/* Does status count as a failure (failure_statuses)? */
bool pf_breaker_status_fails(const struct pf_breaker_conf *c, int status);

/* ---- state (any thread) ---- */

/* A fresh, closed breaker (an endpoint new, or back in the configuration). */
void pf_breaker_reset(struct pf_breaker *b);

/*
 * May ep take a request now? Closed: yes. Open: no, until its open_for has
 * passed, then it turns half-open. Half-open: yes while trial permits are
 * left (this takes one); a permit not reported within open_for is given again.
 * On true, *ticket: 0, or, when a half-open trial permit was taken, its
 * epoch, to pass to pf_breaker_report (only such calls are trials) or
 * pf_breaker_release. On false it is left as it was.
 */
bool pf_breaker_admit(struct pf_endpoint *ep, const struct pf_breaker_conf *c, uint64_t now,
                      uint64_t *ticket);

/* Would pf_breaker_admit say yes now? Read only: no transition, no permit taken. */
bool pf_breaker_would_admit(const struct pf_endpoint *ep, const struct pf_breaker_conf *c,
                            uint64_t now);

/* A permit (ticket of pf_breaker_admit) that will not be reported: it goes back. */
void pf_breaker_release(struct pf_endpoint *ep, uint64_t ticket);

/*
 * Read only, for a balancer's "may serve" predicate: false while ep is open
 * and its open_for has not passed; true otherwise (pf_breaker_admit decides).
 */
bool pf_breaker_usable(const struct pf_endpoint *ep, uint64_t now);

/*
 * An active health probe of ep passed: an open or half-open circuit closes
 * at once (reason "health_check passed"). The hook for the health checks.
 */
void pf_breaker_probe_passed(struct pf_endpoint *ep, const struct pf_breaker_conf *c, uint64_t now);

/*
 * The outcome of an attempt on ep (an endpoint of up) admitted with ticket:
 * o, the response status when o is PF_OUTCOME_OK, and how long it took (to
 * the response head or the failure). While half-open only the outcome of a
 * permit of the current epoch counts, as a trial.
 */
void pf_breaker_report(const struct pf_upstream_conf *up, struct pf_endpoint *ep, uint64_t ticket,
                       enum pf_outcome o, int status, uint64_t dur_us, uint64_t now);

/* Seconds (at least 1) until the first endpoint of up may take a trial request. */
uint64_t pf_breaker_retry_after(const struct pf_upstream_conf *up, uint64_t now);

/*
 * Overflow thresholds of up: requests in flight (max_requests), and, when the
 * attempt needs a new connection, open connections (max_connections) and
 * attempts waiting for theirs (max_pending). True when the request must get
 * 503 overflow.
 */
bool pf_breaker_overflow(const struct pf_upstream_conf *up, bool new_conn);

/* ---- what operators see ---- */

struct pf_breaker_view {
    enum pf_circuit state;
    char reason[160];  /* why it changed last ("" when it never did) */
    uint64_t since_us; /* when (0: never) */
    uint64_t retry_us; /* open: next trial */
    unsigned calls;    /* in the window */
    unsigned failures; /* in the window */
    unsigned slow;     /* in the window */
    unsigned consecutive;
    uint64_t p50_us, p90_us, p99_us; /* over the window (0 without calls) */
    uint64_t opened_total;
};

/* ep's breaker as /upstreams shows it (c: its upstream's settings). */
void pf_breaker_view(const struct pf_endpoint *ep, const struct pf_breaker_conf *c, uint64_t now,
                     struct pf_breaker_view *v);

const char *pf_circuit_name(enum pf_circuit s);

/* The wall clock may move by this much against the monotonic one before the views re-anchor. */
#define PF_BREAKER_WALL_STEP_US 1000000

/* The wall-clock time of monotonic time 0 for GET /upstreams, from *base (0: none yet), now
   (monotonic) and wall (read just after now), both in us. A view reads the two clocks once,
   and the delay between the reads differs from view to view: converting each view's times
   with its own reads would print one instant as timestamps a millisecond or more apart. The
   anchor is kept, and moved only when the wall clock was stepped by more than
   PF_BREAKER_WALL_STEP_US. */
uint64_t pf_breaker_wall_base(uint64_t *base, uint64_t now, uint64_t wall);

/* GET /upstreams: every endpoint of cfg (state, counts, latency, connections), as JSON. */
void pf_breaker_upstreams_json(const struct pf_config *cfg, struct evbuffer *out, uint64_t now);

/* pilotfish_upstream_circuit_state and _circuit_opened_total of cfg's endpoints. */
void pf_breaker_render_metrics(const struct pf_config *cfg, struct evbuffer *out);

#endif /* PF_UPSTREAM_BREAKER_H */
