/*
 * GET /config: the running configuration as JSON, defaults filled in.
 */
#include "proxy/conf.h"

#include <stdio.h>
#include <string.h>

#include <event2/buffer.h>

#include "proxy/filter.h"
#include "proxy/log.h"
#include "proxy/route.h"
#include "proxy/upstream/retry.h"
#include "proxy/upstream/breaker.h"
#include "proxy/upstream/balancer.h"
#include "proxy/upstream/health.h"

static void json_str(struct evbuffer *out, const char *s)
{
    evbuffer_add(out, "\"", 1);
    pf_json_escape(out, s, strlen(s));
    evbuffer_add(out, "\"", 1);
}

/* Element i of a list or map: a comma before all but the first. */
static void json_item(struct evbuffer *out, unsigned i, const char *s, bool key)
{
    if (i > 0)
        evbuffer_add(out, ",", 1);
    json_str(out, s);
    if (key)
        evbuffer_add(out, ":", 1);
}

static void json_addrs(struct evbuffer *out, const struct pf_addr *a, unsigned n)
{
    evbuffer_add(out, "[", 1);
    for (unsigned i = 0; i < n; i++)
        json_item(out, i, a[i].text, false);
    evbuffer_add(out, "]", 1);
}

static void json_upstream(struct evbuffer *out, const struct pf_upstream_conf *u, unsigned i)
{
    char ct[24], rt[24], it[24], lt[24];

    pf_conf_format_duration(u->connect_timeout_ms, ct, sizeof(ct));
    pf_conf_format_duration(u->request_timeout_ms, rt, sizeof(rt));
    pf_conf_format_duration(u->pool.idle_timeout_ms, it, sizeof(it));
    pf_conf_format_duration(u->pool.max_lifetime_ms, lt, sizeof(lt));
    json_item(out, i, u->name, true);
    evbuffer_add_printf(out,
                        "{\"balance\":\"%s\",\"endpoints\":", pf_conf_balance_names[u->balance]);
    json_addrs(out, u->endpoints, u->n_endpoints);
    evbuffer_add_printf(
        out,
        ",\"connect_timeout\":\"%s\",\"request_timeout\":\"%s\",\"pool\":{\"max_idle\":%u,\"idle_timeout\":\"%s\",\"max_lifetime\":\"%s\"}",
        ct, rt, u->pool.max_idle, it, lt);
    pf_retry_conf_json(&u->retry, out);
    pf_breaker_conf_json(&u->breaker, out);
    pf_balancer_conf_json(out, u);
    pf_health_conf_json(out, &u->health);
    evbuffer_add(out, "}", 1);
}

static void json_route(struct evbuffer *out, const struct pf_config *cfg, const struct pf_route *r)
{
    evbuffer_add_printf(out, "{\"name\":");
    json_str(out, r->name);
    evbuffer_add_printf(out, ",\"match\":{\"prefix\":");
    json_str(out, r->prefix);
    evbuffer_add_printf(out, ",\"host\":");
    if (r->host != NULL)
        json_str(out, r->host);
    else
        evbuffer_add_printf(out, "null");
    evbuffer_add_printf(out, ",\"methods\":[");
    for (unsigned i = 0; i < r->methods.n; i++)
        json_item(out, i, r->methods.v[i], false);
    evbuffer_add_printf(out, "],\"case_insensitive\":%s},\"normalize_path\":\"%s\",\"upstream\":",
                        r->case_insensitive ? "true" : "false",
                        pf_conf_normalize_names[r->normalize]);
    json_str(out, cfg->upstreams[r->upstream].name);
    evbuffer_add_printf(out, ",\"filters\":[");
    for (unsigned i = 0; i < r->n_filters; i++)
        json_item(out, i, cfg->filters[r->filters[i]].ops->name, false);
    evbuffer_add_printf(out, "]");
    if (r->slo.availability > 0 || r->slo.latency_ms > 0) {
        /* only routes with an slo: have the key, as written: percentages and a duration */
        char th[24];

        evbuffer_add_printf(out, ",\"slo\":{");
        if (r->slo.availability > 0)
            evbuffer_add_printf(out, "\"availability\":\"%.10g%%\"%s", r->slo.availability * 100,
                                r->slo.latency_ms > 0 ? "," : "");
        if (r->slo.latency_ms > 0) {
            pf_conf_format_duration(r->slo.latency_ms, th, sizeof(th));
            evbuffer_add_printf(out, "\"latency\":{\"threshold\":\"%s\",\"target\":\"%.10g%%\"}",
                                th, r->slo.latency_target * 100);
        }
        evbuffer_add_printf(out, "}");
    }
    evbuffer_add_printf(out, "}");
}

static void json_top(struct evbuffer *out, const struct pf_config *cfg)
{
    static const char *const levels[] = {"error", "warn", "info", "debug"};
    const struct pf_limits *l = &cfg->limits;
    char ht[24], it[24], dd[24], dt[24], bt[24];

    pf_conf_format_duration(l->body_timeout_ms, bt, sizeof(bt));
    pf_conf_format_duration(l->header_timeout_ms, ht, sizeof(ht));
    pf_conf_format_duration(l->idle_timeout_ms, it, sizeof(it));
    pf_conf_format_duration(cfg->drain_delay_ms, dd, sizeof(dd));
    pf_conf_format_duration(cfg->drain_timeout_ms, dt, sizeof(dt));
    evbuffer_add_printf(out, "\"path\":");
    json_str(out, cfg->path);
    evbuffer_add_printf(out, ",\"listen\":");
    json_addrs(out, cfg->listen, cfg->n_listen);
    if (cfg->workers == 0)
        evbuffer_add_printf(out, ",\"workers\":\"auto\",\"admin\":{\"listen\":");
    else
        evbuffer_add_printf(out, ",\"workers\":%u,\"admin\":{\"listen\":", cfg->workers);
    json_str(out, cfg->admin_listen.text);
    evbuffer_add_printf(out, ",\"token\":\"%s\"}", cfg->admin_token[0] ? "<redacted>" : "");
    evbuffer_add_printf(out, ",\"probes\":{\"listen\":");
    json_str(out, cfg->probes_listen.len > 0 ? cfg->probes_listen.text : "");
    evbuffer_add_printf(out, "}");
    evbuffer_add_printf(
        out,
        ",\"limits\":{\"max_connections\":%u,\"max_header_size\":%llu,\"max_headers\":%u,\"max_uri_size\":%llu,\"max_body_size\":%llu,\"header_timeout\":\"%s\",\"idle_timeout\":\"%s\"",
        l->max_connections, (unsigned long long)l->max_header_size, l->max_headers,
        (unsigned long long)l->max_uri_size, (unsigned long long)l->max_body_size, ht, it);
    evbuffer_add_printf(out, ",\"backlog\":%u,\"body_timeout\":\"%s\",\"request_buffering\":%llu}",
                        l->backlog, bt, (unsigned long long)l->request_buffering);
    evbuffer_add_printf(
        out, ",\"drain_delay\":\"%s\",\"drain_timeout\":\"%s\",\"access_log\":{\"path\":", dd, dt);
    json_str(out, cfg->access_log_path);
    evbuffer_add_printf(out, ",\"format\":");
    json_str(out, cfg->access_log_format);
    evbuffer_add_printf(out, "},\"log_level\":\"%s\"",
                        cfg->log_level >= 0 && cfg->log_level <= 3 ? levels[cfg->log_level]
                                                                   : "info");
    evbuffer_add_printf(out, ",\"underscores_in_headers\":\"%s\"",
                        pf_conf_underscores_names[cfg->underscores]);
    evbuffer_add_printf(
        out,
        ",\"splice\":{\"requests\":%s,\"min_request_size\":%llu,\"responses\":%s,\"min_response_size\":%llu}",
        cfg->splice.requests ? "true" : "false", (unsigned long long)cfg->splice.min_request_size,
        cfg->splice.responses ? "true" : "false",
        (unsigned long long)cfg->splice.min_response_size);
}

void pf_conf_to_json(const struct pf_config *cfg, struct evbuffer *out)
{
    const struct pf_conf_node *settings = pf_conf_get(cfg->root, "filters");

    evbuffer_add(out, "{", 1);
    json_top(out, cfg);
    evbuffer_add_printf(out, ",\"upstreams\":{");
    for (unsigned i = 0; i < cfg->n_upstreams; i++)
        json_upstream(out, &cfg->upstreams[i], i);
    evbuffer_add_printf(out, "},\"routes\":[");
    for (unsigned i = 0; i < cfg->n_routes; i++) {
        if (i > 0)
            evbuffer_add(out, ",", 1);
        json_route(out, cfg, &cfg->routes[i]);
    }
    /* each filter instance with its settings as written ({} when none) */
    evbuffer_add_printf(out, "],\"filters\":{");
    for (unsigned i = 0; i < cfg->n_filters; i++) {
        const struct pf_conf_node *n = pf_conf_get(settings, cfg->filters[i].ops->name);
        json_item(out, i, cfg->filters[i].ops->name, true);
        if (n != NULL && !pf_conf_is_null(n))
            pf_conf_node_to_json(n, out);
        else
            evbuffer_add(out, "{}", 2);
    }
    evbuffer_add(out, "}}", 2);
}
