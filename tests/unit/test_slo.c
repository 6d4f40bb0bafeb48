/*
 * Unit tests of proxy/slo.c (routes[].slo and its gauges) and of the latency
 * SLO counters of proxy/stats.c (pf_stats_slo_count).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <event2/buffer.h>

#include "proxy/arena.h"
#include "proxy/conf.h"
#include "proxy/server.h"
#include "proxy/slo.h"
#include "proxy/stats.h"
#include "proxy/tx-t.h"

#define UNUSED __attribute__((unused))

#define HEAD                                                                                       \
    "upstreams: {app: {endpoints: [\"127.0.0.1:3000\"]}}\n"                                        \
    "routes:\n"                                                                                    \
    "  - name: plain\n"                                                                            \
    "    match: {prefix: /plain/}\n"

static struct pf_err err;

static struct pf_config *load(const char *slo)
{
    char yaml[1024];
    struct pf_config *cfg;

    snprintf(yaml, sizeof(yaml), HEAD "  - name: api\n    match: {prefix: /}\n    slo: %s\n", slo);
    pf_err_fini(&err);
    pf_err_init(&err, "t.yaml");
    cfg = pf_conf_load_string(yaml, "t.yaml", &err);
    return cfg;
}

static bool has_error(const char *part)
{
    for (unsigned i = 0; i < err.n; i++) {
        if (strstr(err.msgs[i], part) != NULL)
            return true;
    }
    fprintf(stderr, "missing error: %s\ngot:\n", part);
    pf_conf_print_errors(&err, stderr);
    return false;
}

static void test_slo_parses_both_objectives(void **state UNUSED)
{
    struct pf_config *cfg = load("{availability: 99.9%, latency: {threshold: 300ms, target: 99%}}");

    assert_non_null(cfg);
    assert_int_equal(cfg->n_routes, 2);
    assert_true(cfg->routes[0].slo.availability == 0);
    assert_int_equal(cfg->routes[0].slo.latency_ms, 0);
    assert_true(cfg->routes[1].slo.availability > 0.9989 &&
                cfg->routes[1].slo.availability < 0.9991);
    assert_int_equal(cfg->routes[1].slo.latency_ms, 300);
    assert_true(cfg->routes[1].slo.latency_target > 0.989 &&
                cfg->routes[1].slo.latency_target < 0.991);
    pf_conf_unref(cfg);
    cfg = load("{latency: {threshold: 1s, target: 95%}}");
    assert_non_null(cfg);
    assert_true(cfg->routes[1].slo.availability == 0);
    assert_int_equal(cfg->routes[1].slo.latency_ms, 1000);
    pf_conf_unref(cfg);
}

static void test_slo_rejects_bad_values(void **state UNUSED)
{
    static const struct {
        const char *slo;
        const char *msg;
    } cases[] = {
        {"{availability: 100%}", "availability"},
        {"{availability: 0.999}", "expected a percentage"},
        {"{availability: 99.9%, color: red}", "unknown key 'color'"},
        {"{latency: {threshold: 300ms}}", "slo.latency: needs both threshold and target"},
        {"{latency: {target: 99%}}", "slo.latency: needs both threshold and target"},
        {"{latency: {threshold: 0ms, target: 99%}}", "threshold"},
        {"{latency: 300ms}", "slo.latency: expected a map"},
        {"99.9%", "slo: expected a map"},
    };

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct pf_config *cfg = load(cases[i].slo);

        if (cfg != NULL)
            fprintf(stderr, "accepted: %s\n", cases[i].slo);
        assert_null(cfg);
        assert_true(has_error(cases[i].msg));
    }
}

static char *render_gauges(struct pf_config *cfg, unsigned workers)
{
    struct pf_server s;
    struct evbuffer *b = evbuffer_new();
    char *text;

    memset(&s, 0, sizeof(s));
    s.cfg = cfg;
    s.n_workers = workers;
    pf_slo_render(&s, b);
    text = pf_xstrndup((const char *)evbuffer_pullup(b, -1), evbuffer_get_length(b));
    evbuffer_free(b);
    return text;
}

static void test_slo_gauges(void **state UNUSED)
{
    struct pf_config *cfg =
        load("{availability: 99.95%, latency: {threshold: 250ms, target: 99%}}");
    char *t;

    assert_non_null(cfg);
    t = render_gauges(cfg, 3);
    assert_non_null(strstr(t, "# TYPE pilotfish_slo_objective gauge\n"));
    assert_non_null(
        strstr(t, "pilotfish_slo_objective{route=\"api\",slo=\"availability\"} 0.9995\n"));
    assert_non_null(strstr(t, "pilotfish_slo_objective{route=\"api\",slo=\"latency\"} 0.99\n"));
    assert_non_null(strstr(t, "pilotfish_slo_latency_threshold_seconds{route=\"api\"} 0.25\n"));
    /* a route without slo: has no series */
    assert_null(strstr(t, "route=\"plain\""));
    /* max_idle 64 (the default) per endpoint and worker, 3 workers */
    assert_non_null(strstr(t, "pilotfish_upstream_pool_idle_limit{upstream=\"app\"} 192\n"));
    free(t);
    pf_conf_unref(cfg);
}

static void test_slo_in_config_json(void **state UNUSED)
{
    struct pf_config *cfg =
        load("{availability: 99.95%, latency: {threshold: 250ms, target: 99%}}");
    struct evbuffer *b = evbuffer_new();
    const char *t;

    assert_non_null(cfg);
    pf_conf_to_json(cfg, b);
    evbuffer_add(b, "", 1);
    t = (const char *)evbuffer_pullup(b, -1);
    /* the route with one shows it as written; the other has no "slo" key */
    assert_non_null(strstr(t, "\"upstream\":\"app\",\"filters\":[\"metrics\",\"gzip\"]},"
                              "{\"name\":\"api\""));
    assert_non_null(strstr(t, "\"filters\":[\"metrics\",\"gzip\"],\"slo\":{\"availability\":"
                              "\"99.95%\",\"latency\":{\"threshold\":\"250ms\",\"target\":"
                              "\"99%\"}}}"));
    evbuffer_free(b);
    pf_conf_unref(cfg);
}

static void test_slo_counts_good_and_total(void **state UNUSED)
{
    struct pf_config *cfg = load("{latency: {threshold: 300ms, target: 99%}}");
    struct pf_stats *st = pf_stats_new(NULL);
    struct pf_stats_route *api = pf_stats_route_get(st, "api", "app");
    struct pf_stats_route *plain = pf_stats_route_get(st, "plain", "app");
    struct evbuffer *b = evbuffer_new();
    struct pf_tx tx;
    char *t;

    assert_non_null(cfg);
    memset(&tx, 0, sizeof(tx));
    tx.route = &cfg->routes[1];
    pf_stats_slo_count(api, &tx, 100000);
    pf_stats_slo_count(api, &tx, 300000); /* at the threshold: good */
    pf_stats_slo_count(api, &tx, 300001);
    pf_stats_slo_count(api, &tx, 5000000);
    tx.route = &cfg->routes[0]; /* no slo: nothing counted */
    pf_stats_slo_count(plain, &tx, 1);
    tx.route = NULL;
    pf_stats_slo_count(plain, &tx, 1);
    pf_stats_render_series(&st, 1, b);
    t = pf_xstrndup((const char *)evbuffer_pullup(b, -1), evbuffer_get_length(b));
    assert_non_null(strstr(t, "pilotfish_slo_latency_requests_total{route=\"api\"} 4\n"));
    assert_non_null(strstr(t, "pilotfish_slo_latency_good_total{route=\"api\"} 2\n"));
    assert_null(strstr(t, "pilotfish_slo_latency_requests_total{route=\"plain\"}"));
    free(t);
    evbuffer_free(b);
    pf_stats_free(st);
    pf_conf_unref(cfg);
}

static int teardown(void **state UNUSED)
{
    pf_err_fini(&err);
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_slo_parses_both_objectives, teardown),
        cmocka_unit_test_teardown(test_slo_rejects_bad_values, teardown),
        cmocka_unit_test_teardown(test_slo_gauges, teardown),
        cmocka_unit_test_teardown(test_slo_in_config_json, teardown),
        cmocka_unit_test_teardown(test_slo_counts_good_and_total, teardown),
    };

    pf_err_init(&err, "t.yaml");
    return cmocka_run_group_tests(tests, NULL, NULL);
}
