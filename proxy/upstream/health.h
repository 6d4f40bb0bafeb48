/*
 * Active health checks (proxy/upstream/health.c): an HTTP GET of
 * health_check.path to every endpoint of an upstream that has the section,
 * every interval (jittered), on the main thread's loop, with the data path's
 * HTTP/1.1 client code (h1client.c). Results go through rise/fall
 * hysteresis into the endpoint's health (an atomic the balancer reads
 * without a lock).
 *
 * An endpoint starts PF_HEALTH_UNKNOWN and takes no request until a probe
 * passes. Its state lives in the process-wide endpoint, so it survives a
 * reload for endpoints that remain; an endpoint new to the checks (new to
 * the configuration, back after leaving it, or of an upstream that just got
 * health_check) starts over as unknown.
 */
#ifndef PF_UPSTREAM_HEALTH_H
#define PF_UPSTREAM_HEALTH_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "proxy/conf.h"
#include "proxy/upstream/endpoint-t.h"

struct evbuffer;
struct pf_worker;

enum pf_health_state {
    PF_HEALTH_UNKNOWN = 0, /* no probe has passed yet: no traffic */
    PF_HEALTH_HEALTHY,
    PF_HEALTH_UNHEALTHY,
};

/* True when health lets ep take requests: no checks configured, or healthy. Any thread. */
static inline bool pf_health_serving(const struct pf_health_conf *hc, const struct pf_endpoint *ep)
{
    return !hc->enabled ||
           atomic_load_explicit(&ep->health, memory_order_relaxed) == PF_HEALTH_HEALTHY;
}

/* Rise/fall hysteresis of one endpoint (pure: unit-tested alone). */
struct pf_health_track {
    enum pf_health_state state;
    unsigned passes; /* in a row */
    unsigned fails;  /* in a row */
};

/*
 * Count one probe result. Unknown becomes healthy at the first pass and
 * unhealthy after unhealthy_threshold failures; healthy becomes unhealthy
 * after unhealthy_threshold failures in a row; unhealthy becomes healthy
 * after healthy_threshold passes in a row. True when the state changed.
 */
bool pf_health_track(struct pf_health_track *t, const struct pf_health_conf *hc, bool pass);

/* True when status is in one of hc's expect ranges. */
bool pf_health_expect_ok(const struct pf_health_conf *hc, int status);

/* The delay before the next probe: interval, jittered by up to 10% either way (rnd: random). */
uint64_t pf_health_next_ms(const struct pf_health_conf *hc, uint64_t rnd);

/* State names: "unknown", "healthy", "unhealthy". */
const char *pf_health_state_name(enum pf_health_state s);

/* ---- settings, main thread ---- */

/* upstreams.NAME.health_check into hc (n NULL: disabled). Errors name section. */
void pf_health_conf_parse(const struct pf_conf_node *n, const char *section,
                          struct pf_health_conf *hc, struct pf_err *err);
void pf_health_conf_free(struct pf_health_conf *hc);
/* GET /config: ,"health_check":{...} (null when absent), settings in force. */
void pf_health_conf_json(struct evbuffer *out, const struct pf_health_conf *hc);

/* ---- the prober, main thread ---- */

/*
 * Probe the endpoints of cfg's upstreams that have health_check, on w's loop
 * (the main thread's): probes of endpoints that remain go on with their
 * state, those of endpoints that left stop, new ones start as unknown with a
 * first probe at once. Called with each snapshot before workers use it.
 */
void pf_health_apply(struct pf_worker *w, struct pf_config *cfg);

/* Stop every probe and drop what the prober holds (at exit). */
void pf_health_stop(void);

/*
 * /ready: for each upstream of cfg with no endpoint in service by health,
 * one JSON string of reasons appended to why (comma-separated after any
 * already there, *ok tells). Main thread.
 */
void pf_health_ready(const struct pf_config *cfg, struct evbuffer *why, bool *ok);

/*
 * /upstreams: ep's health fields as JSON members (no braces):
 * "health":"...","health_reason":"...","health_since_ms":N. Main thread.
 */
void pf_health_json(const struct pf_endpoint *ep, struct evbuffer *out);

/* /metrics: pilotfish_upstream_endpoint_healthy, pilotfish_health_checks_total, panic. */
void pf_health_render(const struct pf_config *cfg, struct evbuffer *out);

/*
 * A probe of ep passed. The circuit breaker hooks in here: a passing probe
 * closes an open breaker early. Main thread.
 */
void pf_health_on_pass(struct pf_endpoint *ep, const struct pf_upstream_conf *up);

#endif /* PF_UPSTREAM_HEALTH_H */
