/*
 * Route SLOs: their settings and the gauges that carry them to Prometheus
 * (see proxy/slo.h). The latency good/total counters are in the metrics
 * registry (pf_stats_slo_count in proxy/stats.c), since they must survive
 * reloads like every other counter.
 */
#include "proxy/slo.h"

#include <errno.h>
#include <stdio.h>

#include <event2/buffer.h>

#include "proxy/conf.h"
#include "proxy/server.h"
#include "proxy/stats.h"

static const struct pf_conf_key latency_keys[] = {
    {"threshold", PF_CONF_DURATION, offsetof(struct pf_slo_conf, latency_ms), 1, 3600000, NULL},
    {"target", PF_CONF_PERCENT, offsetof(struct pf_slo_conf, latency_target), 0.01, 0.999999, NULL},
    {NULL, 0, 0, 0, 0, NULL},
};

static int parse_latency(const struct pf_conf_node *n, void *field, struct pf_err *err)
{
    struct pf_slo_conf *slo = field;
    unsigned before = err->n;

    if (n->type != PF_NODE_MAP) {
        pf_err_at(err, n, "slo.latency: expected a map with threshold and target");
        return -EINVAL;
    }
    pf_conf_fill_section(n, "slo.latency", latency_keys, slo, err);
    if (err->n == before && (slo->latency_ms == 0 || slo->latency_target == 0))
        pf_err_at(err, n, "slo.latency: needs both threshold and target");
    return err->n == before ? 0 : -EINVAL;
}

static const struct pf_conf_key slo_keys[] = {
    {"availability", PF_CONF_PERCENT, offsetof(struct pf_slo_conf, availability), 0.01, 0.999999,
     NULL},
    {"latency", PF_CONF_CUSTOM, 0, 0, 0, parse_latency},
    {NULL, 0, 0, 0, 0, NULL},
};

int pf_slo_conf_parse(const struct pf_conf_node *n, void *field, struct pf_err *err)
{
    if (n->type != PF_NODE_MAP) {
        pf_err_at(err, n, "slo: expected a map with availability and/or latency");
        return -EINVAL;
    }
    return pf_conf_fill_section(n, "slo", slo_keys, field, err);
}

/* name{k1="v1"[,k2="v2"]} value, the value a ratio or seconds (%.9g needs no locale here) */
static void put_gauge(struct evbuffer *out, const char *name, const char *k1, const char *v1,
                      const char *k2, const char *v2, double v)
{
    evbuffer_add_printf(out, "%s{%s=\"", name, k1);
    pf_stats_label_escape(out, v1);
    if (k2 != NULL) {
        evbuffer_add_printf(out, "\",%s=\"", k2);
        pf_stats_label_escape(out, v2);
    }
    evbuffer_add_printf(out, "\"} %.9g\n", v);
}

void pf_slo_render(const struct pf_server *s, struct evbuffer *out)
{
    const struct pf_config *cfg = s->cfg;

    pf_stats_put_head(out, "pilotfish_slo_objective", "gauge",
                      "Objective of a route's SLO (routes[].slo), by route and slo "
                      "(availability, latency), as a ratio.");
    for (unsigned i = 0; i < cfg->n_routes; i++) {
        const struct pf_route *r = &cfg->routes[i];

        if (r->slo.availability > 0)
            put_gauge(out, "pilotfish_slo_objective", "route", r->name, "slo", "availability",
                      r->slo.availability);
        if (r->slo.latency_ms > 0)
            put_gauge(out, "pilotfish_slo_objective", "route", r->name, "slo", "latency",
                      r->slo.latency_target);
    }
    pf_stats_put_head(out, "pilotfish_slo_latency_threshold_seconds", "gauge",
                      "Latency threshold of a route's latency SLO (routes[].slo.latency).");
    for (unsigned i = 0; i < cfg->n_routes; i++) {
        const struct pf_route *r = &cfg->routes[i];

        if (r->slo.latency_ms > 0)
            put_gauge(out, "pilotfish_slo_latency_threshold_seconds", "route", r->name, NULL, NULL,
                      (double)r->slo.latency_ms / 1000.0);
    }
    pf_stats_put_head(out, "pilotfish_upstream_pool_idle_limit", "gauge",
                      "Connections the pools keep per endpoint of an upstream: pool.max_idle "
                      "times the workers.");
    for (unsigned u = 0; u < cfg->n_upstreams; u++)
        put_gauge(out, "pilotfish_upstream_pool_idle_limit", "upstream", cfg->upstreams[u].name,
                  NULL, NULL, (double)cfg->upstreams[u].pool.max_idle * s->n_workers);
}
