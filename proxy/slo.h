/*
 * Service level objectives per route (`routes[].slo`, docs/configuration.md)
 * and the gauges that export them and other limits of the running
 * configuration, so that alerting rules read their thresholds from
 * pilotfish instead of repeating them (docs/metrics.md).
 */
#ifndef PF_SLO_H
#define PF_SLO_H

#include <stdint.h>

struct evbuffer;
struct pf_conf_node;
struct pf_err;
struct pf_server;

/* routes[].slo; all zero when the route has none */
struct pf_slo_conf {
    double availability;   /* share of requests not answered 5xx, 0 = no objective */
    uint64_t latency_ms;   /* latency.threshold, 0 = no latency objective */
    double latency_target; /* latency.target: share of requests within the threshold */
};

/*
 * PF_CONF_CUSTOM parser of `slo: {availability: 99.9%, latency: {threshold:
 * 300ms, target: 99%}}` into a struct pf_slo_conf. Main thread.
 */
int pf_slo_conf_parse(const struct pf_conf_node *n, void *field, struct pf_err *err);

/*
 * Gauges of the running configuration: pilotfish_slo_objective{route,slo},
 * pilotfish_slo_latency_threshold_seconds{route} and
 * pilotfish_upstream_pool_idle_limit{upstream}. Main thread (scrape).
 */
void pf_slo_render(const struct pf_server *s, struct evbuffer *out);

#endif /* PF_SLO_H */
