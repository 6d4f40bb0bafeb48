/*
 * What operators see of the breakers: GET /upstreams (per endpoint: circuit
 * state, why and since when, the next trial, the window's counts and
 * latency percentiles, connections) and the circuit metrics. Main thread
 * (the admin loop); everything read is atomic.
 */
#include <stdatomic.h>
#include <string.h>
#include <time.h>

#include <event2/buffer.h>

#include "proxy/log.h"
#include "proxy/stats.h"
#include "proxy/upstream/breaker.h"
#include "proxy/upstream/endpoint.h"
#include "proxy/upstream/health.h"

static void put_str(struct evbuffer *out, const char *s)
{
    evbuffer_add(out, "\"", 1);
    pf_json_escape(out, s, strlen(s));
    evbuffer_add(out, "\"", 1);
}

static uint64_t wall_us(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000000 + (uint64_t)ts.tv_nsec / 1000;
}

uint64_t pf_breaker_wall_base(uint64_t *base, uint64_t now, uint64_t wall)
{
    uint64_t b = wall - now;
    uint64_t drift = b > *base ? b - *base : *base - b;

    if (*base == 0 || drift > PF_BREAKER_WALL_STEP_US)
        *base = b;
    return *base;
}

/* A monotonic time t as a wall-clock timestamp (base: the wall-clock time of monotonic 0). */
static void put_time(struct evbuffer *out, uint64_t t, uint64_t base)
{
    char ts[32];

    pf_log_timestamp(ts, sizeof(ts), base + t);
    put_str(out, ts);
}

static void put_ms(struct evbuffer *out, const char *key, uint64_t us)
{
    evbuffer_add_printf(out, "\"%s\":%llu.%llu", key, (unsigned long long)(us / 1000),
                        (unsigned long long)(us % 1000 / 100));
}

static void put_circuit(struct evbuffer *out, const struct pf_breaker_view *v, uint64_t now,
                        uint64_t base)
{
    evbuffer_add(out, "\"circuit\":{\"state\":", 19);
    put_str(out, pf_circuit_name(v->state));
    evbuffer_add(out, ",\"reason\":", 10);
    if (v->reason[0] != '\0')
        put_str(out, v->reason);
    else
        evbuffer_add(out, "null", 4);
    evbuffer_add(out, ",\"since\":", 9);
    if (v->since_us != 0)
        put_time(out, v->since_us, base);
    else
        evbuffer_add(out, "null", 4);
    evbuffer_add(out, ",\"retry_at\":", 12);
    if (v->state == PF_CIRCUIT_OPEN) {
        put_time(out, v->retry_us, base);
        evbuffer_add_printf(
            out, ",\"retry_in_ms\":%llu",
            (unsigned long long)(v->retry_us > now ? (v->retry_us - now) / 1000 : 0));
    } else {
        evbuffer_add(out, "null,\"retry_in_ms\":null", 23);
    }
    evbuffer_add_printf(out, ",\"opened_total\":%llu,\"consecutive_failures\":%u}",
                        (unsigned long long)v->opened_total, v->consecutive);
}

static void put_endpoint(struct evbuffer *out, const struct pf_upstream_conf *up,
                         const struct pf_endpoint *ep, uint64_t now, uint64_t base)
{
    struct pf_breaker_view v;
    unsigned active = atomic_load_explicit(&ep->active, memory_order_relaxed);
    unsigned open = atomic_load_explicit(&ep->open, memory_order_relaxed);

    pf_breaker_view(ep, &up->breaker, now, &v);
    evbuffer_add(out, "{\"address\":", 11);
    put_str(out, ep->addr.text);
    evbuffer_add(out, ",", 1);
    put_circuit(out, &v, now, base);
    evbuffer_add(out, ",", 1);
    pf_health_json(ep, out);
    evbuffer_add_printf(out,
                        ",\"recent\":{\"window_ms\":%llu,\"requests\":%u,\"failures\":%u,"
                        "\"slow\":%u},\"latency_ms\":{",
                        (unsigned long long)up->breaker.window_ms, v.calls, v.failures, v.slow);
    put_ms(out, "p50", v.p50_us);
    evbuffer_add(out, ",", 1);
    put_ms(out, "p90", v.p90_us);
    evbuffer_add(out, ",", 1);
    put_ms(out, "p99", v.p99_us);
    evbuffer_add_printf(out,
                        "},\"requests_active\":%u,\"connections\":{\"active\":%u,\"idle\":%u},"
                        "\"pending\":%u}",
                        active, active < open ? active : open, open > active ? open - active : 0,
                        atomic_load_explicit(&ep->br.pending, memory_order_relaxed));
}

void pf_breaker_upstreams_json(const struct pf_config *cfg, struct evbuffer *out, uint64_t now)
{
    /* main thread only: one anchor for every view, so that the same instant (an
       opening, the next trial) is the same timestamp in two views */
    static uint64_t wall_base;
    uint64_t base = pf_breaker_wall_base(&wall_base, now, wall_us());

    evbuffer_add(out, "{\"upstreams\":[", 14);
    for (unsigned u = 0; u < cfg->n_upstreams; u++) {
        const struct pf_upstream_conf *up = &cfg->upstreams[u];

        evbuffer_add(out, u > 0 ? ",{\"name\":" : "{\"name\":", u > 0 ? 9 : 8);
        put_str(out, up->name);
        evbuffer_add_printf(out, ",\"max_ejection\":\"%g%%\",\"endpoints\":[",
                            up->breaker.max_ejection * 100);
        for (unsigned e = 0; e < up->n_endpoints && up->endpoint_ids != NULL; e++) {
            if (e > 0)
                evbuffer_add(out, ",", 1);
            put_endpoint(out, up, pf_endpoint_get(up->endpoint_ids[e]), now, base);
        }
        evbuffer_add(out, "]}", 2);
    }
    evbuffer_add(out, "]}\n", 3);
}

static void put_series(struct evbuffer *out, const char *name, const char *upstream,
                       const char *endpoint, uint64_t v)
{
    evbuffer_add_printf(out, "%s{upstream=\"", name);
    pf_stats_label_escape(out, upstream);
    evbuffer_add(out, "\",endpoint=\"", 12);
    pf_stats_label_escape(out, endpoint);
    evbuffer_add_printf(out, "\"} %llu\n", (unsigned long long)v);
}

void pf_breaker_render_metrics(const struct pf_config *cfg, struct evbuffer *out)
{
    static const char *const names[2] = {"pilotfish_upstream_circuit_state",
                                         "pilotfish_upstream_circuit_opened_total"};

    pf_stats_put_head(out, names[0], "gauge",
                      "Circuit breaker state per endpoint: 0 closed, 1 open, 2 half-open.");
    for (unsigned which = 0; which < 2; which++) {
        if (which == 1)
            pf_stats_put_head(out, names[1], "counter",
                              "Times the endpoint's circuit breaker opened.");
        for (unsigned u = 0; u < cfg->n_upstreams; u++) {
            const struct pf_upstream_conf *up = &cfg->upstreams[u];

            for (unsigned e = 0; e < up->n_endpoints && up->endpoint_ids != NULL; e++) {
                const struct pf_endpoint *ep = pf_endpoint_get(up->endpoint_ids[e]);
                uint64_t v = which == 0
                                 ? atomic_load_explicit(&ep->br.state, memory_order_acquire)
                                 : atomic_load_explicit(&ep->br.opened_total, memory_order_relaxed);

                put_series(out, names[which], up->name, ep->addr.text, v);
            }
        }
    }
}
