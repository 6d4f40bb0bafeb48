/*
 * The active health checker, on the main thread's loop (the admin loop):
 * one probe per endpoint of an upstream with health_check, each a fresh
 * connection (TCP or unix) with one GET written by h1client.c's probe writer
 * and the response head read by h1client.c. A probe passes when a
 * final head with an expected status arrives within timeout.
 *
 * Only this file writes an endpoint's health (atomic stores); workers read
 * it lock-free through pf_health_serving(). The probes' own bookkeeping
 * (counts, reasons, timers) is main-thread only, as are /ready, /upstreams
 * and /metrics, which read it.
 */
#include "proxy/upstream/health.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/event.h>

#include "proxy/arena.h"
#include "proxy/core.h"
#include "proxy/http1.h"
#include "proxy/log.h"
#include "proxy/stats.h"
#include "proxy/upstream/breaker.h"
#include "proxy/upstream/endpoint.h"
#include "proxy/upstream/h1client.h"

struct probe {
    struct pf_endpoint *ep; /* one reference held */
    uint64_t gen;
    const struct pf_upstream_conf *up; /* in hs.cfg */
    struct pf_health_track t;
    struct event *timer;  /* the next probe, or the timeout of the one in progress */
    struct pf_stream *s;  /* the probe in progress, NULL between probes */
    struct pf_upconn uc;  /* response parser state (h1client.c) */
    bool connected;       /* the probe in progress has connected */
    bool listed;          /* pf_health_apply's mark */
    uint64_t since_us;    /* pf_now_us() of the last state change */
    uint64_t n_pass;      /* pilotfish_health_checks_total{result="pass"} */
    uint64_t n_fail;      /* {result="fail"} */
    char last_error[128]; /* the last failure */
    char reason[192];     /* why the state is what it is */
};

static struct {
    struct probe *p[PF_MAX_ENDPOINTS]; /* by endpoint id */
    struct pf_config *cfg;             /* the snapshot probed (one reference) */
    struct pf_worker *w;               /* the main thread's loop */
    uint64_t rng;
} hs;

static void probe_arm(struct probe *p, uint64_t ms)
{
    struct timeval tv = {(time_t)(ms / 1000), (suseconds_t)(ms % 1000) * 1000};

    event_add(p->timer, &tv);
}

static uint64_t next_rand(void)
{
    /* xorshift: jitter only, no need for the workers' generator */
    hs.rng ^= hs.rng << 13;
    hs.rng ^= hs.rng >> 7;
    hs.rng ^= hs.rng << 17;
    return hs.rng;
}

/* Append s to out as a JSON string body. */
static void put_json(struct evbuffer *out, const char *s)
{
    pf_json_escape(out, s, strlen(s));
}

/* One log line per state change: endpoint, old and new state, reason, next probe. */
static void log_change(const struct probe *p, enum pf_health_state old, uint64_t next_ms)
{
    struct evbuffer *b = pf_evbuffer_new();

    evbuffer_add_printf(b, ",\"msg\":\"%s\",\"event\":\"health\",\"upstream\":\"",
                        p->t.state == PF_HEALTH_HEALTHY ? "endpoint healthy"
                                                        : "endpoint unhealthy");
    put_json(b, p->up->name);
    evbuffer_add_printf(b, "\",\"endpoint\":\"");
    put_json(b, p->ep->addr.text);
    evbuffer_add_printf(b, "\",\"old\":\"%s\",\"new\":\"%s\",\"reason\":\"",
                        pf_health_state_name(old), pf_health_state_name(p->t.state));
    put_json(b, p->reason);
    evbuffer_add_printf(b, "\",\"next_check_ms\":%llu", (unsigned long long)next_ms);
    pf_log_fields(p->t.state == PF_HEALTH_HEALTHY ? PF_LOG_INFO : PF_LOG_WARN,
                  (const char *)evbuffer_pullup(b, -1), evbuffer_get_length(b));
    evbuffer_free(b);
}

/* Endpoints of up in service by health. */
static unsigned up_serving(const struct pf_upstream_conf *up)
{
    unsigned n = 0;

    for (unsigned e = 0; e < up->n_endpoints && up->endpoint_ids != NULL; e++)
        n += pf_health_serving(&up->health, pf_endpoint_get(up->endpoint_ids[e]));
    return n;
}

/* Endpoints of up no probe has passed or failed enough yet. */
static unsigned up_unknown(const struct pf_upstream_conf *up)
{
    unsigned n = 0;

    for (unsigned e = 0; e < up->n_endpoints && up->endpoint_ids != NULL; e++)
        n += atomic_load_explicit(&pf_endpoint_get(up->endpoint_ids[e])->health,
                                  memory_order_relaxed) == PF_HEALTH_UNKNOWN;
    return n;
}

/*
 * Log an upstream losing its last healthy endpoint (or, at the start, its
 * last endpoint found unhealthy when none ever passed), and getting one
 * back: once each.
 */
static void panic_check(const struct probe *p, enum pf_health_state old)
{
    unsigned n = up_serving(p->up);
    bool is_healthy = p->t.state == PF_HEALTH_HEALTHY;

    if (n == 0 && !is_healthy && (old == PF_HEALTH_HEALTHY || up_unknown(p->up) == 0))
        pf_log(PF_LOG_ERR, "upstream %s: no healthy endpoint: %s", p->up->name,
               p->up->health.panic ? "panic, requests spread over every endpoint found unhealthy"
                                   : "requests get 503 no_healthy_upstream");
    else if (n == 1 && is_healthy && old == PF_HEALTH_UNHEALTHY)
        pf_log(PF_LOG_INFO, "upstream %s: %s healthy again, %s", p->up->name, p->ep->addr.text,
               p->up->health.panic ? "panic over" : "serving again");
}

void pf_health_on_pass(struct pf_endpoint *ep, const struct pf_upstream_conf *up)
{
    pf_breaker_probe_passed(ep, &up->breaker, pf_now_us()); /* an open circuit closes early */
}

static void set_reason(struct probe *p)
{
    const struct pf_health_conf *hc = &p->up->health;

    if (p->t.state == PF_HEALTH_HEALTHY && p->n_fail == 0 && p->t.passes == 1)
        snprintf(p->reason, sizeof(p->reason), "health_check: first probe passed");
    else if (p->t.state == PF_HEALTH_HEALTHY)
        snprintf(p->reason, sizeof(p->reason), "health_check: %u passes", p->t.passes);
    else
        snprintf(p->reason, sizeof(p->reason), "health_check: %u failures, last: %s",
                 p->t.fails < hc->unhealthy_threshold ? hc->unhealthy_threshold : p->t.fails,
                 p->last_error);
}

/* The probe in progress ended (why: the failure; NULL when it passed). Next one armed. */
static void probe_end(struct probe *p, const char *why)
{
    enum pf_health_state old = p->t.state;
    uint64_t next = pf_health_next_ms(&p->up->health, next_rand());

    if (p->s != NULL) {
        pf_stream_free(p->s);
        p->s = NULL;
    }
    pf_head_free(&p->uc.head);
    event_del(p->timer);
    probe_arm(p, next);
    if (why == NULL) {
        p->n_pass++;
        pf_health_on_pass(p->ep, p->up);
    } else {
        p->n_fail++;
        snprintf(p->last_error, sizeof(p->last_error), "%s", why);
    }
    if (!pf_health_track(&p->t, &p->up->health, why == NULL))
        return;
    p->since_us = pf_now_us();
    set_reason(p);
    if (p->t.state == PF_HEALTH_HEALTHY)
        atomic_store_explicit(&p->ep->serving_since_us, p->since_us, memory_order_relaxed);
    atomic_store_explicit(&p->ep->health, p->t.state, memory_order_release);
    log_change(p, old, next);
    panic_check(p, old);
}

static void probe_readcb(struct pf_stream *s, void *arg)
{
    struct probe *p = arg;
    struct evbuffer *in = s->in;
    char why[64];

    while (evbuffer_get_length(in) > 0 && !p->uc.head_ready) {
        struct evbuffer_iovec v;
        size_t n;

        evbuffer_peek(in, -1, NULL, &v, 1);
        n = pf_h1c_parse(&p->uc, v.iov_base, v.iov_len);
        evbuffer_drain(in, n);
        if (p->uc.resp_bad) {
            probe_end(p, "bad response");
            return;
        }
    }
    if (!p->uc.head_ready)
        return;
    if (pf_health_expect_ok(&p->up->health, p->uc.status)) {
        probe_end(p, NULL);
        return;
    }
    snprintf(why, sizeof(why), "status %d", p->uc.status);
    probe_end(p, why);
}

static void probe_eventcb(struct pf_stream *s, int what, void *arg)
{
    struct probe *p = arg;
    char why[96];

    if (what & PF_STREAM_CONNECTED) {
        p->connected = true;
        return;
    }
    if (what & PF_STREAM_EOF) {
        probe_readcb(s, p); /* a head may have come with the close */
        if (p->s == s)
            probe_end(p, "closed before a response");
        return;
    }
    if (s->err == ECONNREFUSED)
        snprintf(why, sizeof(why), "connect refused");
    else
        snprintf(why, sizeof(why), "%s: %s", p->connected ? "reset" : "connect failed",
                 strerror(s->err));
    probe_end(p, why);
}

/* The Host of a probe: health_check.host, else the endpoint's address (localhost for unix). */
static const char *probe_host(const struct probe *p)
{
    if (p->up->health.host != NULL)
        return p->up->health.host;
    return p->ep->addr.ss.ss_family == AF_UNIX ? "localhost" : p->ep->addr.text;
}

static void probe_begin(struct probe *p)
{
    const struct pf_addr *a = &p->ep->addr;
    int fd = socket(a->ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    char why[96];
    int rc;

    p->connected = false;
    if (fd == -1) {
        snprintf(why, sizeof(why), "socket: %s", strerror(errno));
        probe_end(p, why);
        return;
    }
    p->s = pf_stream_new(&hs.w->sloop, fd);
    rc = pf_stream_connect(p->s, (const struct sockaddr *)&a->ss, a->len);
    if (rc != 0) {
        if (rc == -ECONNREFUSED)
            snprintf(why, sizeof(why), "connect refused");
        else
            snprintf(why, sizeof(why), "connect failed: %s", strerror(-rc));
        probe_end(p, why);
        return;
    }
    p->uc.head_ready = false;
    p->uc.state = PF_UC_WAITING_HEAD;
    pf_h1c_reset(&p->uc);
    pf_stream_setcb(p->s, probe_readcb, NULL, probe_eventcb, p);
    pf_stream_read(p->s, true);
    pf_h1c_write_probe(p->s->out, p->up->health.path, probe_host(p));
    pf_stream_mark(p->s);
    probe_arm(p, p->up->health.timeout_ms);
}

static void probe_timercb(evutil_socket_t fd, short what, void *arg)
{
    struct probe *p = arg;
    char why[64];

    (void)fd;
    (void)what;
    if (p->s == NULL) {
        probe_begin(p);
        return;
    }
    snprintf(why, sizeof(why), "timeout after %llums",
             (unsigned long long)p->up->health.timeout_ms);
    probe_end(p, why);
}

static void probe_free(struct probe *p)
{
    if (p->s != NULL)
        pf_stream_free(p->s);
    pf_head_free(&p->uc.head);
    event_free(p->timer);
    pf_endpoint_unref(p->ep);
    free(p);
}

/* A probe for a new endpoint: unknown until a probe passes, the first probe soon. */
static struct probe *probe_new(struct pf_endpoint *ep, const struct pf_upstream_conf *up)
{
    struct probe *p = pf_xcalloc(1, sizeof(*p));
    uint64_t spread = up->health.interval_ms / 10;

    pf_endpoint_ref(ep);
    p->ep = ep;
    p->gen = ep->gen;
    p->up = up;
    p->since_us = pf_now_us();
    snprintf(p->reason, sizeof(p->reason), "health_check: no probe has passed yet");
    atomic_store_explicit(&ep->health, PF_HEALTH_UNKNOWN, memory_order_release);
    p->timer = event_new(hs.w->base, -1, 0, probe_timercb, p);
    if (p->timer == NULL)
        pf_fatal("event_new failed");
    /* the first probe at once, spread a little so that many endpoints do not start together */
    probe_arm(p, spread > 100 ? next_rand() % 100 : spread > 0 ? next_rand() % spread : 0);
    return p;
}

/* The probe of endpoint id when it is still the same endpoint (not a reused id). */
static struct probe *probe_of(unsigned id)
{
    struct probe *p = hs.p[id];

    return p != NULL && p->gen == pf_endpoint_gen(id) ? p : NULL;
}

void pf_health_apply(struct pf_worker *w, struct pf_config *cfg)
{
    hs.w = w;
    if (hs.rng == 0)
        hs.rng = (uint64_t)pf_now_us() | 1;
    for (unsigned i = 0; i < PF_MAX_ENDPOINTS; i++) {
        if (hs.p[i] != NULL)
            hs.p[i]->listed = false;
    }
    for (unsigned u = 0; u < cfg->n_upstreams; u++) {
        const struct pf_upstream_conf *up = &cfg->upstreams[u];

        for (unsigned e = 0; up->health.enabled && e < up->n_endpoints; e++) {
            unsigned id = up->endpoint_ids[e];
            struct probe *p = probe_of(id);

            if (p == NULL) {
                if (hs.p[id] != NULL)
                    probe_free(hs.p[id]); /* an endpoint gone, its id reused */
                hs.p[id] = p = probe_new(pf_endpoint_get(id), up);
            }
            p->up = up; /* settings of the new snapshot from the next probe on */
            p->listed = true;
        }
    }
    for (unsigned i = 0; i < PF_MAX_ENDPOINTS; i++) {
        if (hs.p[i] != NULL && !hs.p[i]->listed) {
            probe_free(hs.p[i]);
            hs.p[i] = NULL;
        }
    }
    pf_conf_ref(cfg);
    if (hs.cfg != NULL)
        pf_conf_unref(hs.cfg);
    hs.cfg = cfg;
}

void pf_health_stop(void)
{
    for (unsigned i = 0; i < PF_MAX_ENDPOINTS; i++) {
        if (hs.p[i] != NULL)
            probe_free(hs.p[i]);
        hs.p[i] = NULL;
    }
    if (hs.cfg != NULL)
        pf_conf_unref(hs.cfg);
    hs.cfg = NULL;
}

void pf_health_ready(const struct pf_config *cfg, struct evbuffer *why, bool *ok)
{
    for (unsigned u = 0; u < cfg->n_upstreams; u++) {
        const struct pf_upstream_conf *up = &cfg->upstreams[u];
        unsigned unknown = 0;

        if (!up->health.enabled || up_serving(up) > 0)
            continue;
        evbuffer_add_printf(why, "%s\"upstream ", *ok ? "" : ",");
        put_json(why, up->name);
        evbuffer_add_printf(why, ": no healthy endpoint");
        for (unsigned e = 0; e < up->n_endpoints; e++) {
            const struct probe *p = probe_of(up->endpoint_ids[e]);

            if (p == NULL || p->t.state == PF_HEALTH_UNKNOWN)
                unknown++;
            if (p == NULL || p->n_fail == 0)
                continue;
            evbuffer_add_printf(why, "; ");
            put_json(why, p->ep->addr.text);
            evbuffer_add_printf(why, " %s (", pf_health_state_name(p->t.state));
            put_json(why, p->reason);
            evbuffer_add_printf(why, ")");
        }
        if (unknown > 0)
            evbuffer_add_printf(why, "; %u endpoint(s) not yet passed a probe", unknown);
        evbuffer_add_printf(why, "\"");
        *ok = false;
    }
}

/* Wall-clock milliseconds of a pf_now_us() time in the past. */
static uint64_t wall_ms_of(uint64_t mono_us)
{
    struct timespec ts;
    uint64_t now_wall_us, now = pf_now_us();

    clock_gettime(CLOCK_REALTIME, &ts);
    now_wall_us = (uint64_t)ts.tv_sec * 1000000 + (uint64_t)ts.tv_nsec / 1000;
    return (now_wall_us - (now > mono_us ? now - mono_us : 0)) / 1000;
}

void pf_health_json(const struct pf_endpoint *ep, struct evbuffer *out)
{
    const struct probe *p = probe_of(ep->id);

    if (p == NULL) {
        evbuffer_add_printf(out, "\"health\":\"not_checked\"");
        return;
    }
    evbuffer_add_printf(out, "\"health\":\"%s\",\"health_reason\":\"",
                        pf_health_state_name(p->t.state));
    put_json(out, p->reason);
    evbuffer_add_printf(out,
                        "\",\"health_since_ms\":%llu,\"health_checks_passed\":%llu,"
                        "\"health_checks_failed\":%llu",
                        (unsigned long long)wall_ms_of(p->since_us), (unsigned long long)p->n_pass,
                        (unsigned long long)p->n_fail);
}

static void render_checks(const struct pf_config *cfg, struct evbuffer *out)
{
    static const char *const results[2] = {"pass", "fail"};

    pf_stats_put_head(
        out, "pilotfish_health_checks_total", "counter",
        "Active health probes by result (fail: refused, timeout, unexpected status).");
    for (unsigned u = 0; u < cfg->n_upstreams; u++) {
        const struct pf_upstream_conf *up = &cfg->upstreams[u];

        for (unsigned e = 0; up->health.enabled && e < up->n_endpoints; e++) {
            const struct probe *p = probe_of(up->endpoint_ids[e]);

            for (unsigned r = 0; p != NULL && r < 2; r++) {
                evbuffer_add_printf(out, "pilotfish_health_checks_total{upstream=\"");
                pf_stats_label_escape(out, up->name);
                evbuffer_add_printf(out, "\",endpoint=\"");
                pf_stats_label_escape(out, p->ep->addr.text);
                evbuffer_add_printf(out, "\",result=\"%s\"} %llu\n", results[r],
                                    (unsigned long long)(r == 0 ? p->n_pass : p->n_fail));
            }
        }
    }
}

static void render_panic(const struct pf_config *cfg, struct evbuffer *out)
{
    pf_stats_put_head(out, "pilotfish_upstream_panic_requests_total", "counter",
                      "Requests spread over unhealthy endpoints because none was healthy "
                      "(health_check.panic: true), by upstream.");
    for (unsigned u = 0; u < cfg->n_upstreams; u++) {
        const struct pf_upstream_conf *up = &cfg->upstreams[u];
        uint64_t sum = 0;

        if (!up->health.enabled)
            continue;
        for (unsigned e = 0; e < up->n_endpoints; e++)
            sum += atomic_load_explicit(&pf_endpoint_get(up->endpoint_ids[e])->panic_requests,
                                        memory_order_relaxed);
        evbuffer_add_printf(out, "pilotfish_upstream_panic_requests_total{upstream=\"");
        pf_stats_label_escape(out, up->name);
        evbuffer_add_printf(out, "\"} %llu\n", (unsigned long long)sum);
    }
}

void pf_health_render(const struct pf_config *cfg, struct evbuffer *out)
{
    pf_stats_put_head(out, "pilotfish_upstream_endpoint_healthy", "gauge",
                      "1 when health checks let the endpoint take requests (always 1 without "
                      "health_check), else 0.");
    for (unsigned u = 0; u < cfg->n_upstreams; u++) {
        const struct pf_upstream_conf *up = &cfg->upstreams[u];

        for (unsigned e = 0; e < up->n_endpoints && up->endpoint_ids != NULL; e++) {
            const struct pf_endpoint *ep = pf_endpoint_get(up->endpoint_ids[e]);

            evbuffer_add_printf(out, "pilotfish_upstream_endpoint_healthy{upstream=\"");
            pf_stats_label_escape(out, up->name);
            evbuffer_add_printf(out, "\",endpoint=\"");
            pf_stats_label_escape(out, ep->addr.text);
            evbuffer_add_printf(out, "\"} %d\n", pf_health_serving(&up->health, ep) ? 1 : 0);
        }
    }
    render_checks(cfg, out);
    render_panic(cfg, out);
}
