/*
 * Unit tests of proxy/upstream/health.c and health_conf.c: the rise/fall
 * hysteresis, expect ranges, jitter bounds and the health_check section
 * (pure), then the prober itself on a private event_base against a tiny
 * responder on a loopback TCP port and a unix socket: first pass before
 * traffic, failures by status and by refusal, state kept across a reload
 * for endpoints that remain and started over for one that comes back,
 * /ready's reasons. Waits are bounded by loop turns, never by time.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/un.h>
#include <unistd.h>

#include <cmocka.h>

#include <event2/buffer.h>
#include <netinet/in.h>

#include "proxy/clock.h"
#include "proxy/upstream/balancer.h"
#include "proxy/upstream/health.h"
#include "proxy/upstream/pool.h"
#include "up_fx.h"

#define UNUSED __attribute__((unused))

static struct pf_worker w;

static int setup(void **state UNUSED)
{
    pf_upstream_free_all();
    fx_worker_init(&w);
    return 0;
}

static int teardown(void **state UNUSED)
{
    pf_upstream_sweep(&w, true); /* round_robin keeps its weights in the worker's pools */
    pf_health_stop();
    fx_worker_fini(&w);
    pf_upstream_free_all();
    return 0;
}

static const struct pf_health_conf hc3 = {
    .enabled = true, .healthy_threshold = 2, .unhealthy_threshold = 3};

static void test_hysteresis(void **state UNUSED)
{
    struct pf_health_track t = {0};
    struct pf_health_track u = {0};

    /* unknown: the first pass is enough */
    assert_true(pf_health_track(&t, &hc3, true));
    assert_int_equal(t.state, PF_HEALTH_HEALTHY);
    /* healthy: two failures, a pass, three failures */
    assert_false(pf_health_track(&t, &hc3, false));
    assert_false(pf_health_track(&t, &hc3, false));
    assert_false(pf_health_track(&t, &hc3, true));
    assert_false(pf_health_track(&t, &hc3, false));
    assert_false(pf_health_track(&t, &hc3, false));
    assert_true(pf_health_track(&t, &hc3, false));
    assert_int_equal(t.state, PF_HEALTH_UNHEALTHY);
    /* unhealthy: a pass, a failure, then two passes in a row */
    assert_false(pf_health_track(&t, &hc3, true));
    assert_false(pf_health_track(&t, &hc3, false));
    assert_false(pf_health_track(&t, &hc3, true));
    assert_true(pf_health_track(&t, &hc3, true));
    assert_int_equal(t.state, PF_HEALTH_HEALTHY);
    /* unknown: unhealthy after three failures, never healthy on the way */
    assert_false(pf_health_track(&u, &hc3, false));
    assert_false(pf_health_track(&u, &hc3, false));
    assert_int_equal(u.state, PF_HEALTH_UNKNOWN);
    assert_true(pf_health_track(&u, &hc3, false));
    assert_int_equal(u.state, PF_HEALTH_UNHEALTHY);
    assert_false(pf_health_track(&u, &hc3, true)); /* now healthy_threshold applies */
    assert_true(pf_health_track(&u, &hc3, true));
}

static void test_jitter_stays_within_a_tenth(void **state UNUSED)
{
    struct pf_health_conf hc = {.interval_ms = 5000};
    uint64_t lo = UINT64_MAX, hi = 0;

    for (uint64_t r = 0; r < 5000; r++) {
        uint64_t ms = pf_health_next_ms(&hc, r * 7919);

        lo = ms < lo ? ms : lo;
        hi = ms > hi ? ms : hi;
    }
    assert_int_equal(lo, 4500);
    assert_int_equal(hi, 5500);
}

static struct pf_config *load(const char *yaml, struct pf_err *err)
{
    pf_err_init(err, "t.yaml");
    return pf_conf_load_string(yaml, "t.yaml", err);
}

static void test_health_check_section(void **state UNUSED)
{
    struct pf_err err;
    struct pf_config *cfg;
    const struct pf_health_conf *hc;

    cfg = load("upstreams:\n  app:\n    endpoints: [\"127.0.0.1:1\"]\n    health_check:\n", &err);
    assert_non_null(cfg);
    hc = &cfg->upstreams[0].health;
    assert_true(hc->enabled && hc->panic);
    assert_string_equal(hc->path, "/health");
    assert_int_equal(hc->interval_ms, 5000);
    assert_int_equal(hc->timeout_ms, 1000);
    assert_int_equal(hc->healthy_threshold, 2);
    assert_int_equal(hc->unhealthy_threshold, 3);
    assert_true(pf_health_expect_ok(hc, 200) && pf_health_expect_ok(hc, 399));
    assert_false(pf_health_expect_ok(hc, 400) || pf_health_expect_ok(hc, 199));
    pf_conf_unref(cfg);
    pf_err_fini(&err);

    cfg = load("upstreams:\n  app:\n    endpoints: [\"127.0.0.1:1\"]\n    health_check: {path: "
               "/ping, expect: \"200-299, 404\", panic: false, host: svc.local}\n",
               &err);
    assert_non_null(cfg);
    hc = &cfg->upstreams[0].health;
    assert_true(pf_health_expect_ok(hc, 404) && pf_health_expect_ok(hc, 204));
    assert_false(pf_health_expect_ok(hc, 301) || hc->panic);
    assert_string_equal(hc->host, "svc.local");
    {
        struct evbuffer *b = evbuffer_new();

        pf_health_conf_json(b, hc); /* GET /config */
        evbuffer_add(b, "", 1);
        assert_string_equal(
            (const char *)evbuffer_pullup(b, -1),
            ",\"health_check\":{\"path\":\"/ping\",\"host\":\"svc.local\","
            "\"interval\":\"5s\",\"timeout\":\"1s\",\"healthy_threshold\":2,"
            "\"unhealthy_threshold\":3,\"expect\":\"200-299, 404\",\"panic\":false}");
        evbuffer_free(b);
    }
    pf_conf_unref(cfg);
    pf_err_fini(&err);

    cfg = load("upstreams:\n  app:\n    endpoints: [\"127.0.0.1:1\"]\n    health_check: {path: "
               "ping, expect: \"200-600\", interval: 1s, timeout: 2s, rise: 1}\n",
               &err);
    assert_null(cfg);
    assert_int_equal(err.n, 2); /* unknown key and bad expect stop the section; */
    pf_err_fini(&err);
    cfg = load("upstreams:\n  app:\n    endpoints: [\"127.0.0.1:1\"]\n    health_check: {path: "
               "ping, interval: 1s, timeout: 2s}\n",
               &err);
    assert_null(cfg);
    assert_int_equal(err.n, 2); /* path, timeout > interval */
    pf_err_fini(&err);
}

/* ---- the prober against a responder ---- */

static int status_to_send = 200;
static unsigned accepted;
static char last_request[2048]; /* the head of the last probe */

static void conn_readcb(evutil_socket_t fd, short what, void *arg)
{
    char buf[2048], resp[128];
    ssize_t got = read(fd, buf, sizeof(buf) - 1);
    int n;

    (void)what;

    if (got > 0) {
        buf[got] = '\0';
        memcpy(last_request, buf, (size_t)got + 1);
        n = snprintf(resp, sizeof(resp), "HTTP/1.1 %d X\r\nContent-Length: 0\r\n\r\n",
                     status_to_send);
        if (write(fd, resp, (size_t)n) != n)
            fail_msg("short write");
    }
    close(fd);
    event_free(arg);
}

static void listen_cb(evutil_socket_t fd, short what, void *arg)
{
    int c = accept(fd, NULL, NULL);
    struct event *ev;

    (void)what;
    (void)arg;
    if (c < 0)
        return;
    accepted++;
    ev = event_new(w.base, c, EV_READ, conn_readcb, NULL);
    event_assign(ev, w.base, c, EV_READ, conn_readcb, ev);
    event_add(ev, NULL);
}

/* A listening TCP socket on 127.0.0.1 (its port in *port), served on w's loop. */
static int responder_tcp(unsigned *port, struct event **ev)
{
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(sa);
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);

    assert_true(fd >= 0);
    assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    assert_int_equal(listen(fd, 16), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&sa, &len), 0);
    *port = ntohs(sa.sin_port);
    *ev = event_new(w.base, fd, EV_READ | EV_PERSIST, listen_cb, NULL);
    event_add(*ev, NULL);
    return fd;
}

/* The endpoint's health fields, as /upstreams shows them. */
static const char *health_of(const struct pf_config *cfg, unsigned i)
{
    static char out[512];
    struct evbuffer *b = evbuffer_new();
    size_t n;

    pf_health_json(pf_endpoint_get(cfg->upstreams[0].endpoint_ids[i]), b);
    n = evbuffer_remove(b, out, sizeof(out) - 1);
    out[n] = '\0';
    evbuffer_free(b);
    return out;
}

/* Turn w's loop until endpoint i's fields contain want (at most 2000 turns). */
static void run_until(const struct pf_config *cfg, unsigned i, const char *want)
{
    for (unsigned turn = 0; turn < 2000; turn++) {
        if (strstr(health_of(cfg, i), want) != NULL)
            return;
        event_base_loop(w.base, EVLOOP_ONCE);
    }
    fail_msg("endpoint %u never got %s: %s", i, want, health_of(cfg, i));
}

static struct pf_config *probed_cfg(const char *endpoints)
{
    char yaml[512];
    struct pf_err err;
    struct pf_config *cfg;

    snprintf(yaml, sizeof(yaml),
             "upstreams:\n  app:\n    endpoints: [%s]\n    health_check: {path: /hc, interval: "
             "20ms, timeout: 20ms, healthy_threshold: 2, unhealthy_threshold: 2, panic: false}\n",
             endpoints);
    pf_err_init(&err, "t.yaml");
    cfg = pf_conf_load_string(yaml, "t.yaml", &err);
    assert_non_null(cfg);
    pf_err_fini(&err);
    assert_int_equal(pf_upstream_bind(cfg), 0);
    return cfg;
}

static void test_probe_rise_and_fall(void **state UNUSED)
{
    unsigned port;
    struct event *lev;
    int lfd = responder_tcp(&port, &lev);
    char eps[64];
    struct pf_config *cfg;
    struct evbuffer *why = evbuffer_new();
    bool ok = true;

    snprintf(eps, sizeof(eps), "\"127.0.0.1:%u\"", port);
    cfg = probed_cfg(eps);
    status_to_send = 200;
    pf_health_apply(&w, cfg);
    /* no probe passed yet: no traffic, /ready says why */
    assert_int_equal(pf_balancer_pick(&cfg->upstreams[0], 0, &w), PF_LB_NONE);
    pf_health_ready(cfg, why, &ok);
    assert_false(ok);
    assert_non_null(strstr((const char *)evbuffer_pullup(why, -1), "not yet passed a probe"));
    run_until(cfg, 0, "\"health\":\"healthy\"");
    assert_int_equal(pf_balancer_pick(&cfg->upstreams[0], 0, &w),
                     cfg->upstreams[0].endpoint_ids[0]);
    /* 503 twice: unhealthy, with the status as the reason */
    status_to_send = 503;
    run_until(cfg, 0, "\"health\":\"unhealthy\"");
    assert_non_null(strstr(health_of(cfg, 0), "2 failures, last: status 503"));
    assert_int_equal(pf_balancer_pick(&cfg->upstreams[0], 0, &w), PF_LB_NONE);
    /* back after two passes; slow_start counts from then (a fixed clock) */
    pf_clock_fixed_us = 5000000000ull;
    status_to_send = 204;
    run_until(cfg, 0, "\"health\":\"healthy\"");
    assert_true(
        atomic_load(&pf_endpoint_get(cfg->upstreams[0].endpoint_ids[0])->serving_since_us) ==
        5000000000ull);
    pf_clock_fixed_us = 0;
    /* the listener goes: connect refused */
    event_free(lev);
    close(lfd);
    run_until(cfg, 0, "last: connect refused");
    assert_true(accepted > 0);
    evbuffer_free(why);
    pf_health_stop();
    pf_conf_unref(cfg);
}

static void test_probe_over_a_unix_socket(void **state UNUSED)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0);
    struct event *ev;
    struct pf_config *cfg;
    char eps[200];

    snprintf(sa.sun_path, sizeof(sa.sun_path), "/tmp/pf-test-health-%d.sock", (int)getpid());
    unlink(sa.sun_path);
    assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    assert_int_equal(listen(fd, 16), 0);
    ev = event_new(w.base, fd, EV_READ | EV_PERSIST, listen_cb, NULL);
    event_add(ev, NULL);
    snprintf(eps, sizeof(eps), "\"unix:%s\"", sa.sun_path);
    cfg = probed_cfg(eps);
    status_to_send = 200;
    pf_health_apply(&w, cfg);
    run_until(cfg, 0, "\"health\":\"healthy\"");
    pf_health_stop();
    event_free(ev);
    close(fd);
    unlink(sa.sun_path);
    pf_conf_unref(cfg);
}

/* A reload keeps the state of endpoints that remain; one that left and came back starts over. */
static void test_reload_keeps_state_of_endpoints_that_remain(void **state UNUSED)
{
    unsigned port1, port2;
    struct event *lev1, *lev2;
    int lfd1 = responder_tcp(&port1, &lev1), lfd2 = responder_tcp(&port2, &lev2);
    char both[128], one[64];
    struct pf_config *a, *b, *c;

    snprintf(both, sizeof(both), "\"127.0.0.1:%u\", \"127.0.0.1:%u\"", port1, port2);
    snprintf(one, sizeof(one), "\"127.0.0.1:%u\"", port1);
    a = probed_cfg(both);
    status_to_send = 200;
    pf_health_apply(&w, a);
    run_until(a, 0, "\"health\":\"healthy\"");
    run_until(a, 1, "\"health\":\"healthy\"");
    /* the second leaves (a stays alive, as a snapshot still in use would) */
    b = probed_cfg(one);
    pf_health_apply(&w, b);
    assert_non_null(strstr(health_of(b, 0), "\"health\":\"healthy\""));
    assert_non_null(strstr(health_of(a, 1), "not_checked"));
    /* and comes back: the same endpoint entry, its state started over */
    c = probed_cfg(both);
    assert_int_equal(c->upstreams[0].endpoint_ids[1], a->upstreams[0].endpoint_ids[1]);
    pf_health_apply(&w, c);
    assert_non_null(strstr(health_of(c, 0), "\"health\":\"healthy\""));
    assert_non_null(strstr(health_of(c, 1), "\"health\":\"unknown\""));
    assert_int_equal(pf_balancer_pick(&c->upstreams[0], 1, &w), c->upstreams[0].endpoint_ids[0]);
    pf_health_stop();
    event_free(lev1);
    event_free(lev2);
    close(lfd1);
    close(lfd2);
    pf_conf_unref(a);
    pf_conf_unref(b);
    pf_conf_unref(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hysteresis),
        cmocka_unit_test(test_jitter_stays_within_a_tenth),
        cmocka_unit_test_setup_teardown(test_health_check_section, setup, teardown),
        cmocka_unit_test_setup_teardown(test_probe_rise_and_fall, setup, teardown),
        cmocka_unit_test_setup_teardown(test_probe_over_a_unix_socket, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reload_keeps_state_of_endpoints_that_remain, setup,
                                        teardown),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
