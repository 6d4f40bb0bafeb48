/*
 * Unit tests of proxy/stats.c (the metrics registry and /metrics exposition)
 * and filters/metrics.c, without sockets: durations are injected, workers
 * are plain structs with their stats, and transactions are zeroed pf_tx
 * with the few fields the accessors of proxy/filter.h read.
 */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <event2/buffer.h>

#include "filters/metrics.h"
#include "proxy/arena.h"
#include "proxy/conf.h"
#include "proxy/core.h"
#include "proxy/server.h"
#include "proxy/stats.h"
#include "proxy/upstream/upstream.h"

#define UNUSED __attribute__((unused))

/* ---- helpers ---- */

static char *render(struct pf_stats *const *st, unsigned n)
{
    struct evbuffer *b = evbuffer_new();
    size_t len;
    char *text;

    pf_stats_render_series(st, n, b);
    len = evbuffer_get_length(b);
    text = pf_xmalloc(len + 1);
    evbuffer_remove(b, text, len);
    text[len] = '\0';
    evbuffer_free(b);
    return text;
}

/* The value of the sample whose name and labels are exactly series, or -1. */
static double sample(const char *text, const char *series)
{
    size_t n = strlen(series);

    for (const char *p = text; p != NULL && *p != '\0'; p = strchr(p, '\n'), p = p ? p + 1 : p) {
        if (strncmp(p, series, n) == 0 && p[n] == ' ')
            return strtod(p + n + 1, NULL);
    }
    return -1;
}

static unsigned count_lines(const char *text, const char *prefix)
{
    unsigned k = 0;
    size_t n = strlen(prefix);

    for (const char *p = text; p != NULL && *p != '\0'; p = strchr(p, '\n'), p = p ? p + 1 : p) {
        if (strncmp(p, prefix, n) == 0)
            k++;
    }
    return k;
}

static struct pf_metrics_conf small_buckets(void)
{
    struct pf_metrics_conf mc = {{0.001, 0.0025, 0.01}, 3};

    return mc;
}

/* promtool's verdict on text: 0 accepted, 1 rejected, -1 no promtool. */
static int promtool_check(const char *text)
{
    FILE *p;

    if (access("/usr/bin/promtool", X_OK) != 0 && system("command -v promtool >/dev/null") != 0)
        return -1;
    p = popen("promtool check metrics >/dev/null", "w");
    if (p == NULL)
        return -1;
    fputs(text, p);
    return pclose(p) == 0 ? 0 : 1;
}

/* ---- histograms ---- */

static void test_stats_histogram_boundaries_land_in_their_bucket(void **state UNUSED)
{
    struct pf_metrics_conf mc = small_buckets();
    struct pf_stats *st = pf_stats_new(&mc);
    struct pf_stats_route *r = pf_stats_route_get(st, "api", "app");
    /* 0 and 1 ms exactly -> le 0.001; 1.001 ms and 2.5 ms -> le 0.0025; 10 ms -> 0.01; over -> +Inf
     */
    static const uint64_t us[] = {0, 1000, 1001, 2500, 10000, 10001, 5000000};
    char *text;

    for (unsigned i = 0; i < sizeof(us) / sizeof(us[0]); i++)
        pf_stats_route_count(r, "GET", 200, us[i]);
    text = render(&st, 1);
    assert_int_equal(
        sample(text, "pilotfish_http_request_duration_seconds_bucket{route=\"api\",le=\"0.001\"}"),
        2);
    assert_int_equal(
        sample(text, "pilotfish_http_request_duration_seconds_bucket{route=\"api\",le=\"0.0025\"}"),
        4);
    assert_int_equal(
        sample(text, "pilotfish_http_request_duration_seconds_bucket{route=\"api\",le=\"0.01\"}"),
        5);
    assert_int_equal(
        sample(text, "pilotfish_http_request_duration_seconds_bucket{route=\"api\",le=\"+Inf\"}"),
        7);
    assert_int_equal(sample(text, "pilotfish_http_request_duration_seconds_count{route=\"api\"}"),
                     7);
    assert_true(sample(text, "pilotfish_http_request_duration_seconds_sum{route=\"api\"}") ==
                5.024502);
    assert_int_equal(sample(text, "pilotfish_http_requests_total{route=\"api\",upstream=\"app\","
                                  "method=\"GET\",code=\"200\"}"),
                     7);
    free(text);
    pf_stats_free(st);
}

static void test_stats_default_buckets_run_from_half_ms_to_10s(void **state UNUSED)
{
    struct pf_stats *st = pf_stats_new(NULL);
    struct pf_stats_route *r = pf_stats_route_get(st, "r", "u");
    char *text;

    pf_stats_route_count(r, "GET", 200, 500);
    pf_stats_route_count(r, "GET", 200, 10000000);
    text = render(&st, 1);
    assert_int_equal(
        sample(text, "pilotfish_http_request_duration_seconds_bucket{route=\"r\",le=\"0.0005\"}"),
        1);
    assert_int_equal(
        sample(text, "pilotfish_http_request_duration_seconds_bucket{route=\"r\",le=\"10\"}"), 2);
    assert_int_equal(count_lines(text, "pilotfish_http_request_duration_seconds_bucket{"), 15);
    free(text);
    pf_stats_free(st);
}

/* ---- counters ---- */

static void test_stats_counters_sum_across_workers(void **state UNUSED)
{
    struct pf_metrics_conf mc = small_buckets();
    struct pf_stats *st[2] = {pf_stats_new(&mc), pf_stats_new(&mc)};
    char *text;

    for (unsigned w = 0; w < 2; w++) {
        struct pf_stats_route *r = pf_stats_route_get(st[w], "api", "app");

        for (unsigned i = 0; i < 3 + w; i++)
            pf_stats_route_count(r, "GET", 200, 100);
        pf_stats_route_count(r, "POST", 502, 100);
        pf_stats_upstream_count(st[w], 7, "app", "10.0.0.1:80", 200, PF_ERR_NONE, 300);
        pf_stats_upstream_count(st[w], 7, "app", "10.0.0.1:80", 0, PF_ERR_RESET, 300);
        pf_stats_upstream_retry(st[w], 7, "app", "10.0.0.1:80");
    }
    text = render(st, 2);
    assert_int_equal(sample(text, "pilotfish_http_requests_total{route=\"api\",upstream=\"app\","
                                  "method=\"GET\",code=\"200\"}"),
                     7);
    assert_int_equal(sample(text, "pilotfish_http_requests_total{route=\"api\",upstream=\"app\","
                                  "method=\"POST\",code=\"502\"}"),
                     2);
    assert_int_equal(sample(text, "pilotfish_http_request_duration_seconds_count{route=\"api\"}"),
                     9);
    assert_int_equal(sample(text, "pilotfish_upstream_requests_total{upstream=\"app\","
                                  "endpoint=\"10.0.0.1:80\",code=\"200\"}"),
                     2);
    assert_int_equal(sample(text, "pilotfish_upstream_requests_total{upstream=\"app\","
                                  "endpoint=\"10.0.0.1:80\",code=\"upstream_reset\"}"),
                     2);
    assert_int_equal(
        sample(text, "pilotfish_upstream_request_duration_seconds_count{upstream=\"app\"}"), 4);
    assert_int_equal(sample(text, "pilotfish_upstream_retries_total{upstream=\"app\"}"), 2);
    /* one line per label set, not one per worker */
    assert_int_equal(count_lines(text, "pilotfish_http_requests_total{"), 2);
    free(text);
    pf_stats_free(st[0]);
    pf_stats_free(st[1]);
}

static void test_stats_method_is_normalised_and_code_bounded(void **state UNUSED)
{
    struct pf_stats *st = pf_stats_new(NULL);
    struct pf_stats_route *r = pf_stats_route_get(st, "r", "u");
    char *text;

    pf_stats_route_count(r, "PROPFIND", 207, 1);
    pf_stats_route_count(r, "BREW", 418, 1);
    pf_stats_route_count(r, "PATCH", 200, 1);
    pf_stats_route_count(r, "get", 1234, 1);
    text = render(&st, 1);
    assert_int_equal(sample(text, "pilotfish_http_requests_total{route=\"r\",upstream=\"u\","
                                  "method=\"OTHER\",code=\"207\"}"),
                     1);
    assert_int_equal(sample(text, "pilotfish_http_requests_total{route=\"r\",upstream=\"u\","
                                  "method=\"OTHER\",code=\"418\"}"),
                     1);
    assert_int_equal(sample(text, "pilotfish_http_requests_total{route=\"r\",upstream=\"u\","
                                  "method=\"PATCH\",code=\"200\"}"),
                     1);
    assert_int_equal(sample(text, "pilotfish_http_requests_total{route=\"r\",upstream=\"u\","
                                  "method=\"OTHER\",code=\"0\"}"),
                     1);
    free(text);
    pf_stats_free(st);
}

/* ---- exposition ---- */

static void test_stats_label_values_are_escaped(void **state UNUSED)
{
    struct evbuffer *b = evbuffer_new();
    struct pf_stats *st = pf_stats_new(NULL);
    char out[64] = "";
    char *text;

    pf_stats_label_escape(b, "a\\b\"c\nd");
    evbuffer_remove(b, out, sizeof(out) - 1);
    assert_string_equal(out, "a\\\\b\\\"c\\nd");
    pf_stats_route_count(pf_stats_route_get(st, "we\"ird\nroute", "u"), "GET", 200, 1);
    text = render(&st, 1);
    assert_non_null(strstr(text, "{route=\"we\\\"ird\\nroute\",upstream=\"u\""));
    assert_int_not_equal(promtool_check(text), 1);
    free(text);
    pf_stats_free(st);
    evbuffer_free(b);
}

static void test_stats_render_has_help_and_type_once_per_family(void **state UNUSED)
{
    struct pf_metrics_conf mc = small_buckets();
    struct pf_stats *st[2] = {pf_stats_new(&mc), pf_stats_new(&mc)};
    char *text;

    for (unsigned w = 0; w < 2; w++) {
        pf_stats_route_count(pf_stats_route_get(st[w], "a", "app"), "GET", 200, 10);
        pf_stats_route_count(pf_stats_route_get(st[w], "b", "app"), "HEAD", 304, 10);
        pf_stats_upstream_count(st[w], 1, "app", "127.0.0.1:1", 200, PF_ERR_NONE, 10);
    }
    text = render(st, 2);
    assert_int_equal(count_lines(text, "# TYPE pilotfish_http_requests_total counter\n"), 1);
    assert_int_equal(count_lines(text, "# HELP pilotfish_http_requests_total "), 1);
    assert_int_equal(
        count_lines(text, "# TYPE pilotfish_http_request_duration_seconds histogram\n"), 1);
    assert_int_equal(
        count_lines(text, "# TYPE pilotfish_upstream_request_duration_seconds histogram\n"), 1);
    assert_int_equal(count_lines(text, "# TYPE pilotfish_upstream_retries_total counter\n"), 1);
    assert_int_equal(count_lines(text, "# TYPE pilotfish_upstream_retries_budget_exceeded_total "
                                       "counter\n"),
                     1);
    assert_int_equal(count_lines(text, "# TYPE pilotfish_slo_latency_requests_total counter\n"), 1);
    assert_int_equal(count_lines(text, "# TYPE pilotfish_slo_latency_good_total counter\n"), 1);
    assert_int_equal(count_lines(text, "# TYPE "), 8);
    /* a histogram's lines: buckets in order, +Inf, _sum, _count */
    assert_non_null(
        strstr(text, "pilotfish_http_request_duration_seconds_bucket{route=\"a\",le=\"0.01\"} 2\n"
                     "pilotfish_http_request_duration_seconds_bucket{route=\"a\",le=\"+Inf\"} 2\n"
                     "pilotfish_http_request_duration_seconds_sum{route=\"a\"} 0.000020\n"
                     "pilotfish_http_request_duration_seconds_count{route=\"a\"} 2\n"));
    assert_int_equal(text[strlen(text) - 1], '\n');
    assert_int_not_equal(promtool_check(text), 1);
    free(text);
    pf_stats_free(st[0]);
    pf_stats_free(st[1]);
}

/* A whole /metrics answer for a server of two workers, without threads or sockets. */
static void test_stats_render_server_passes_promtool(void **state UNUSED)
{
    struct pf_err err;
    struct pf_config *cfg;
    struct pf_server *s = pf_xcalloc(1, sizeof(*s));
    struct evbuffer *b = evbuffer_new();
    char *text;
    size_t len;

    pf_err_init(&err, "t.yaml");
    cfg = pf_conf_load_string("upstreams:\n  app:\n    endpoints: [\"127.0.0.1:3000\"]\n"
                              "metrics: {buckets: [0.01, 250ms, 1]}\n",
                              "t.yaml", &err);
    assert_non_null(cfg);
    assert_int_equal(pf_upstream_bind(cfg), 0);
    s->cfg = cfg;
    s->n_workers = 2;
    s->workers = pf_xcalloc(2, sizeof(*s->workers));
    for (unsigned i = 0; i < 2; i++) {
        s->workers[i].stats = pf_stats_new(&cfg->metrics);
        s->workers[i].errors[PF_ERR_RATE_LIMITED] = i + 1;
        pf_stats_route_count(pf_stats_route_get(s->workers[i].stats, "route-0", "app"), "GET", 429,
                             5);
    }
    s->reloads_ok = 3;
    pf_stats_render(s, b);
    len = evbuffer_get_length(b);
    text = pf_xmalloc(len + 1);
    evbuffer_remove(b, text, len);
    text[len] = '\0';
    assert_int_equal(sample(text, "pilotfish_errors_total{error=\"rate_limited\"}"), 3);
    assert_int_equal(sample(text, "pilotfish_config_reloads_total{result=\"success\"}"), 3);
    assert_int_equal(sample(text, "pilotfish_http_requests_total{route=\"route-0\",upstream="
                                  "\"app\",method=\"GET\",code=\"429\"}"),
                     2);
    assert_int_equal(sample(text, "pilotfish_http_request_duration_seconds_bucket{route="
                                  "\"route-0\",le=\"0.25\"}"),
                     2);
    assert_int_equal(sample(text, "pilotfish_upstream_connections_idle{upstream=\"app\","
                                  "endpoint=\"127.0.0.1:3000\"}"),
                     0);
    assert_true(sample(text, "process_resident_memory_bytes") > 0);
    assert_true(sample(text, "process_open_fds") > 0);
    assert_non_null(strstr(text, "pilotfish_build_info{version=\""));
    assert_int_not_equal(promtool_check(text), 1);
    free(text);
    for (unsigned i = 0; i < 2; i++)
        pf_stats_free(s->workers[i].stats);
    free(s->workers);
    free(s);
    pf_conf_unref(cfg);
    evbuffer_free(b);
    pf_err_fini(&err);
}

/* ---- configuration ---- */

static bool load_fails_with(const char *yaml, const char *msg)
{
    struct pf_err err;
    struct pf_config *cfg;
    bool found = false;

    pf_err_init(&err, "t.yaml");
    cfg = pf_conf_load_string(yaml, "t.yaml", &err);
    for (unsigned i = 0; i < err.n; i++) {
        if (strstr(err.msgs[i], msg) != NULL)
            found = true;
        else
            fprintf(stderr, "  (other error: %s)\n", err.msgs[i]);
    }
    pf_conf_unref(cfg);
    pf_err_fini(&err);
    return cfg == NULL && found;
}

#define UPS "upstreams:\n  app:\n    endpoints: [\"127.0.0.1:3000\"]\n"

static void test_stats_conf_buckets_must_increase(void **state UNUSED)
{
    struct pf_err err;
    struct pf_config *cfg;

    pf_err_init(&err, "t.yaml");
    cfg = pf_conf_load_string(UPS "metrics:\n  buckets: [0.005, \"50ms\", 2.5]\n", "t.yaml", &err);
    assert_non_null(cfg);
    assert_int_equal(cfg->metrics.n_buckets, 3);
    assert_true(cfg->metrics.buckets[1] == 0.05);
    pf_conf_unref(cfg);
    cfg = pf_conf_load_string(UPS, "t.yaml", &err);
    assert_non_null(cfg);
    assert_int_equal(cfg->metrics.n_buckets, 0); /* the defaults */
    pf_conf_unref(cfg);
    pf_err_fini(&err);
    assert_true(load_fails_with(UPS "metrics:\n  buckets: [0.1, 0.1]\n",
                                "t.yaml:5:18: metrics.buckets: must be strictly increasing"));
    assert_true(load_fails_with(UPS "metrics:\n  buckets: [1, 0.5]\n", "strictly increasing"));
    assert_true(load_fails_with(UPS "metrics:\n  buckets: []\n", "non-empty list"));
    assert_true(load_fails_with(UPS "metrics:\n  buckets: [0, 1]\n", "above 0"));
    assert_true(load_fails_with(UPS "metrics:\n  buckets: [fast]\n", "above 0"));
    assert_true(load_fails_with(UPS "metrics:\n  buckets: [.inf]\n", "above 0"));
    assert_true(
        load_fails_with(UPS "metrics:\n  bucket: [1]\n", "unknown key 'bucket' in metrics"));
    assert_true(load_fails_with(UPS "filters:\n  metrics: {buckets: [1]}\n", "top-level setting"));
}

static void test_stats_conf_same_compares_effective_buckets(void **state UNUSED)
{
    struct pf_metrics_conf none = {{0}, 0}, a = small_buckets(), b = small_buckets();
    struct pf_metrics_conf dflt = {
        {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10}, 14};

    assert_true(pf_stats_conf_same(&a, &b));
    assert_true(pf_stats_conf_same(&none, &dflt));
    b.buckets[2] = 0.02;
    assert_false(pf_stats_conf_same(&a, &b));
    assert_false(pf_stats_conf_same(&none, &a));
}

/* ---- the filter ---- */

struct fake_req {
    struct pf_worker w;
    struct pf_route route;
    struct pf_upstream_conf up;
    struct pf_tx tx;
    struct pf_slot slot;
};

static void fake_req_init(struct fake_req *f, struct pf_stats *st, void *wstate)
{
    memset(f, 0, sizeof(*f));
    f->w.stats = st;
    f->route.name = "api";
    f->up.name = "app";
    f->tx.w = &f->w;
    f->tx.route = &f->route;
    f->tx.up = &f->up;
    f->tx.method = "GET";
    f->slot.wstate = wstate;
    f->slot.ctx = pf_xcalloc(1, pf_filter_metrics.ctx_size);
}

static void test_stats_filter_counts_replies_errors_and_aborts(void **state UNUSED)
{
    struct pf_stats *st = pf_stats_new(NULL);
    struct pf_worker w = {.stats = st};
    static const int statuses[] = {200, 429, 502, 0 /* client went away: 499 */};
    void *ws = NULL;
    struct fake_req f;
    char *text;

    assert_int_equal(pf_filter_metrics.worker_init(NULL, &w, &ws), 0);
    for (unsigned i = 0; i < sizeof(statuses) / sizeof(statuses[0]); i++) {
        fake_req_init(&f, st, ws);
        assert_int_equal(pf_filter_metrics.on_request(&f.tx, &f.slot), PF_NEXT);
        f.tx.status = statuses[i];
        pf_filter_metrics.on_done(&f.tx, &f.slot);
        free(f.slot.ctx);
    }
    text = render(&st, 1);
    assert_int_equal(sample(text, "pilotfish_http_requests_total{route=\"api\",upstream=\"app\","
                                  "method=\"GET\",code=\"429\"}"),
                     1);
    assert_int_equal(sample(text, "pilotfish_http_requests_total{route=\"api\",upstream=\"app\","
                                  "method=\"GET\",code=\"502\"}"),
                     1);
    assert_int_equal(sample(text, "pilotfish_http_requests_total{route=\"api\",upstream=\"app\","
                                  "method=\"GET\",code=\"499\"}"),
                     1);
    assert_int_equal(sample(text, "pilotfish_http_request_duration_seconds_count{route=\"api\"}"),
                     4);
    free(text);
    pf_filter_metrics.worker_fini(ws);
    pf_stats_free(st);
}

/*
 * Many calls on one series set: each is counted once under its method and
 * status (its cost per call is measured by bench/micro_metrics.c, not here).
 */
static void test_stats_filter_on_done_counts_every_call(void **state UNUSED)
{
    struct pf_stats *st = pf_stats_new(NULL);
    struct pf_worker w = {.stats = st};
    static const char *const methods[] = {"GET", "POST", "HEAD", "DELETE"};
    void *ws = NULL;
    struct fake_req f;
    const unsigned n = 20000;
    char *text;

    pf_filter_metrics.worker_init(NULL, &w, &ws);
    fake_req_init(&f, st, ws);
    pf_filter_metrics.on_request(&f.tx, &f.slot);
    for (unsigned i = 0; i < n; i++) {
        f.tx.method = methods[i & 3];
        f.tx.status = 200 + (int)(i % 5);
        pf_filter_metrics.on_done(&f.tx, &f.slot);
    }
    text = render(&st, 1);
    assert_int_equal(sample(text, "pilotfish_http_request_duration_seconds_count{route=\"api\"}"),
                     n);
    /* i % 4 == 0 and i % 5 == 0: every 20th call */
    assert_int_equal(sample(text, "pilotfish_http_requests_total{route=\"api\",upstream=\"app\","
                                  "method=\"GET\",code=\"200\"}"),
                     n / 20);
    assert_int_equal(sample(text, "pilotfish_http_requests_total{route=\"api\",upstream=\"app\","
                                  "method=\"DELETE\",code=\"204\"}"),
                     n / 20);
    free(text);
    free(f.slot.ctx);
    pf_filter_metrics.worker_fini(ws);
    pf_stats_free(st);
}

/* ---- threads: the owner creates series while a scrape walks them ---- */

struct writer_arg {
    struct pf_stats *st;
    unsigned routes;
};

static void *writer(void *arg)
{
    struct writer_arg *a = arg;
    char name[32];

    for (unsigned i = 0; i < a->routes; i++) {
        snprintf(name, sizeof(name), "r%u", i);
        for (unsigned k = 0; k < 10; k++)
            pf_stats_route_count(pf_stats_route_get(a->st, name, "u"), "GET", 200 + (int)k, k);
    }
    return NULL;
}

static void test_stats_scrape_while_the_owner_creates_series(void **state UNUSED)
{
    struct writer_arg a = {pf_stats_new(NULL), 400};
    pthread_t t;
    char *text;
    double total = 0;

    assert_int_equal(pthread_create(&t, NULL, writer, &a), 0);
    for (unsigned i = 0; i < 20; i++)
        free(render(&a.st, 1));
    pthread_join(t, NULL);
    text = render(&a.st, 1);
    for (unsigned i = 0; i < a.routes; i++) {
        char series[96];

        snprintf(series, sizeof(series),
                 "pilotfish_http_request_duration_seconds_count{route=\"r%u\"}", i);
        total += sample(text, series);
    }
    assert_true(total == a.routes * 10.0);
    free(text);
    pf_stats_free(a.st);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_stats_histogram_boundaries_land_in_their_bucket),
        cmocka_unit_test(test_stats_default_buckets_run_from_half_ms_to_10s),
        cmocka_unit_test(test_stats_counters_sum_across_workers),
        cmocka_unit_test(test_stats_method_is_normalised_and_code_bounded),
        cmocka_unit_test(test_stats_label_values_are_escaped),
        cmocka_unit_test(test_stats_render_has_help_and_type_once_per_family),
        cmocka_unit_test(test_stats_render_server_passes_promtool),
        cmocka_unit_test(test_stats_conf_buckets_must_increase),
        cmocka_unit_test(test_stats_conf_same_compares_effective_buckets),
        cmocka_unit_test(test_stats_filter_counts_replies_errors_and_aborts),
        cmocka_unit_test(test_stats_filter_on_done_counts_every_call),
        cmocka_unit_test(test_stats_scrape_while_the_owner_creates_series),
    };

    return cmocka_run_group_tests_name("stats", tests, NULL, NULL);
}
