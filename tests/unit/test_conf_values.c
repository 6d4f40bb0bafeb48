/*
 * Unit tests of the scalar parsers (durations, sizes, percentages, booleans),
 * of key tables filled by pf_conf_fill (proxy/conf_node.c) and of the
 * `splice:` section (proxy/conf.c). The loading of whole configuration files
 * is tested in test_conf.c.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <event2/buffer.h>

#include "proxy/arena.h"
#include "proxy/conf.h"
#include "proxy/log.h"

#define UNUSED __attribute__((unused))

static struct pf_err err;

static int setup(void **state UNUSED)
{
    pf_err_init(&err, "t.yaml");
    return 0;
}

static int teardown(void **state UNUSED)
{
    pf_err_fini(&err);
    return 0;
}

static bool has_error(const char *msg)
{
    for (unsigned i = 0; i < err.n; i++) {
        if (strcmp(err.msgs[i], msg) == 0)
            return true;
    }
    fprintf(stderr, "missing error: %s\ngot:\n", msg);
    pf_conf_print_errors(&err, stderr);
    return false;
}

static uint64_t dur(const char *s)
{
    uint64_t v = 0;

    assert_int_equal(pf_parse_duration_ms(s, &v), 0);
    return v;
}

static uint64_t size(const char *s)
{
    uint64_t v = 0;

    assert_int_equal(pf_parse_size(s, &v), 0);
    return v;
}

/* ---- scalar parsers ---- */

static void test_conf_parse_duration_accepts_units(void **state UNUSED)
{
    assert_int_equal(dur("250ms"), 250);
    assert_int_equal(dur("5s"), 5000);
    assert_int_equal(dur("2m"), 120000);
    assert_int_equal(dur("1h"), 3600000);
    assert_int_equal(dur("7"), 7000);
    assert_int_equal(dur("0"), 0);
    assert_int_equal(dur("0s"), 0);
    assert_int_equal(dur("1.5s"), 1500);
    assert_int_equal(dur("0.25m"), 15000);
}

static void test_conf_parse_duration_rejects_garbage(void **state UNUSED)
{
    static const char *const bad[] = {
        "",     "-1s",    "5 s", "5sec", "s",   "1.5ms", "1.s",  ".5s",
        "5S",   "1d",     "+5s", " 5s",  "5s ", "1e3s",  "0x10", "99999999999999999999ms",
        "5s5s", "1.2.3s", NULL,
    };
    uint64_t v;

    for (unsigned i = 0; bad[i] != NULL; i++) {
        if (pf_parse_duration_ms(bad[i], &v) != -EINVAL)
            fail_msg("accepted duration '%s'", bad[i]);
    }
    assert_int_equal(pf_parse_duration_ms("5124095576030431h", &v), -EINVAL); /* overflow */
}

static void test_conf_parse_size_accepts_units(void **state UNUSED)
{
    assert_int_equal(size("512"), 512);
    assert_int_equal(size("64KiB"), 65536);
    assert_int_equal(size("1MiB"), 1048576);
    assert_int_equal(size("1GiB"), 1073741824);
    assert_int_equal(size("2KB"), 2048);
    assert_int_equal(size("3mb"), 3 * 1048576);
    assert_int_equal(size("1k"), 1024);
    assert_int_equal(size("1g"), 1073741824);
    assert_int_equal(size("1.5KiB"), 1536);
    assert_int_equal(size("0"), 0);
}

static void test_conf_parse_size_rejects_garbage(void **state UNUSED)
{
    static const char *const bad[] = {
        "",   "-1", "1 KiB", "1KiBs", "KiB", "1.1B", "1x", "18446744073709551616", "17179869184GiB",
        NULL,
    };
    uint64_t v;

    for (unsigned i = 0; bad[i] != NULL; i++) {
        if (pf_parse_size(bad[i], &v) != -EINVAL)
            fail_msg("accepted size '%s'", bad[i]);
    }
}

static void test_conf_parse_percent_and_bool(void **state UNUSED)
{
    double r = -1;
    bool b = false;

    assert_int_equal(pf_parse_percent("20%", &r), 0);
    assert_true(r > 0.1999 && r < 0.2001);
    assert_int_equal(pf_parse_percent("0.5%", &r), 0);
    assert_true(r > 0.004999 && r < 0.005001);
    assert_int_equal(pf_parse_percent("20", &r), -EINVAL);
    assert_int_equal(pf_parse_percent("-5%", &r), -EINVAL);
    assert_int_equal(pf_parse_percent("5%%", &r), -EINVAL);
    assert_int_equal(pf_parse_bool("yes", &b), 0);
    assert_true(b);
    assert_int_equal(pf_parse_bool("Off", &b), 0);
    assert_false(b);
    assert_int_equal(pf_parse_bool("true", &b), 0);
    assert_true(b);
    assert_int_equal(pf_parse_bool("no", &b), 0);
    assert_false(b);
    assert_int_equal(pf_parse_bool("maybe", &b), -EINVAL);
    assert_int_equal(pf_parse_bool("1", &b), -EINVAL);
}

static void test_conf_format_duration_picks_largest_unit(void **state UNUSED)
{
    char buf[32];

    pf_conf_format_duration(0, buf, sizeof(buf));
    assert_string_equal(buf, "0s");
    pf_conf_format_duration(250, buf, sizeof(buf));
    assert_string_equal(buf, "250ms");
    pf_conf_format_duration(1000, buf, sizeof(buf));
    assert_string_equal(buf, "1s");
    pf_conf_format_duration(90000, buf, sizeof(buf));
    assert_string_equal(buf, "90s");
    pf_conf_format_duration(120000, buf, sizeof(buf));
    assert_string_equal(buf, "2m");
    pf_conf_format_duration(7200000, buf, sizeof(buf));
    assert_string_equal(buf, "2h");
}

/* ---- key tables ---- */

struct table_dst {
    int64_t i;
    unsigned u;
    bool b;
    uint64_t d;
    uint64_t sz;
    double pct;
    double dbl;
    char *str;
    struct pf_strlist list;
};

static const struct pf_conf_key table_keys[] = {
    {"i", PF_CONF_INT, offsetof(struct table_dst, i), -5, 5, NULL},
    {"u", PF_CONF_UINT, offsetof(struct table_dst, u), 0, 0, NULL},
    {"b", PF_CONF_BOOL, offsetof(struct table_dst, b), 0, 0, NULL},
    {"d", PF_CONF_DURATION, offsetof(struct table_dst, d), 1000, 60000, NULL},
    {"sz", PF_CONF_SIZE, offsetof(struct table_dst, sz), 1024, 1048576, NULL},
    {"pct", PF_CONF_PERCENT, offsetof(struct table_dst, pct), 0, 0, NULL},
    {"dbl", PF_CONF_DOUBLE, offsetof(struct table_dst, dbl), 0.5, 2.5, NULL},
    {"str", PF_CONF_STRING, offsetof(struct table_dst, str), 0, 0, NULL},
    {"list", PF_CONF_STRLIST, offsetof(struct table_dst, list), 0, 0, NULL},
    {NULL, 0, 0, 0, 0, NULL},
};

static void test_conf_fill_sets_every_kind(void **state UNUSED)
{
    static const char yaml[] = "t:\n  i: -3\n  u: 4000000000\n  b: on\n  d: 2s\n  sz: 2KiB\n"
                               "  pct: 50%\n  dbl: 1.25\n  str: hello\n  list: [a, b]\n";
    struct pf_conf_node *root;
    struct table_dst d;

    memset(&d, 0, sizeof(d));
    d.str = pf_xstrdup("default");
    assert_int_equal(pf_conf_node_parse(yaml, strlen(yaml), &root, &err), 0);
    assert_int_equal(pf_conf_fill(pf_conf_get(root, "t"), table_keys, &d, &err), 0);
    assert_int_equal(err.n, 0);
    assert_int_equal(d.i, -3);
    assert_int_equal(d.u, 4000000000u);
    assert_true(d.b);
    assert_int_equal(d.d, 2000);
    assert_int_equal(d.sz, 2048);
    assert_true(d.pct > 0.499 && d.pct < 0.501);
    assert_true(d.dbl > 1.249 && d.dbl < 1.251);
    assert_string_equal(d.str, "hello");
    assert_int_equal(d.list.n, 2);
    assert_string_equal(d.list.v[1], "b");
    pf_conf_fields_free(table_keys, &d);
    assert_null(d.str);
    assert_int_equal(d.list.n, 0);
    pf_conf_node_free(root);
}

static void test_conf_fill_reports_types_and_bounds(void **state UNUSED)
{
    static const char yaml[] = "t:\n  i: 6\n  u: -1\n  b: maybe\n  d: 500ms\n  sz: 2MiB\n"
                               "  pct: 150%\n  dbl: nan\n  str: [x]\n  list: {a: b}\n  zz: 1\n";
    struct pf_conf_node *root;
    struct table_dst d;

    memset(&d, 0, sizeof(d));
    assert_int_equal(pf_conf_node_parse(yaml, strlen(yaml), &root, &err), 0);
    assert_int_equal(pf_conf_fill(pf_conf_get(root, "t"), table_keys, &d, &err), -EINVAL);
    assert_int_equal(err.n, 10);
    assert_true(has_error("t.yaml:2:6: t.i: must be between -5 and 5"));
    assert_true(has_error("t.yaml:3:6: t.u: must be between 0 and 4294967295"));
    assert_true(has_error("t.yaml:4:6: t.b: expected true or false"));
    assert_true(has_error("t.yaml:5:6: t.d: must be between 1s and 1m"));
    assert_true(has_error("t.yaml:6:7: t.sz: must be between 1KiB and 1MiB"));
    assert_true(has_error("t.yaml:7:8: t.pct: must be between 0% and 100%"));
    assert_true(has_error("t.yaml:8:8: t.dbl: expected a number"));
    assert_true(has_error("t.yaml:9:8: t.str: expected a scalar"));
    assert_true(has_error("t.yaml:10:9: t.list: expected a list"));
    assert_true(has_error("t.yaml:11:3: unknown key 'zz' in t"));
    pf_conf_fields_free(table_keys, &d);
    pf_conf_node_free(root);
}

/* ---- splice: ---- */

#define UPSTREAM "upstreams: {app: {endpoints: [\"127.0.0.1:3000\"]}}\n"

static struct pf_config *load(const char *yaml)
{
    struct pf_config *cfg = pf_conf_load_string(yaml, "t.yaml", &err);

    if (cfg == NULL)
        pf_conf_print_errors(&err, stderr);
    assert_non_null(cfg);
    return cfg;
}

static void test_conf_splice_defaults(void **state UNUSED)
{
    struct pf_config *cfg = load(UPSTREAM);

    /* requests on from 1 MiB, responses off (bench/README.md) */
    assert_true(cfg->splice.requests);
    assert_int_equal(cfg->splice.min_request_size, 1 << 20);
    assert_false(cfg->splice.responses);
    assert_int_equal(cfg->splice.min_response_size, 64 << 10);
    pf_conf_unref(cfg);
    /* an empty section is the defaults too */
    cfg = load("splice:\n" UPSTREAM);
    assert_true(cfg->splice.requests && !cfg->splice.responses);
    pf_conf_unref(cfg);
}

static void test_conf_splice_sets_every_key(void **state UNUSED)
{
    struct pf_config *cfg = load("splice:\n  requests: false\n  min_request_size: 256KiB\n"
                                 "  responses: on\n  min_response_size: 1.5MiB\n" UPSTREAM);
    struct evbuffer *out = evbuffer_new();
    char *json;

    assert_false(cfg->splice.requests);
    assert_int_equal(cfg->splice.min_request_size, 256 << 10);
    assert_true(cfg->splice.responses);
    assert_int_equal(cfg->splice.min_response_size, 3 << 19);
    assert_non_null(out);
    pf_conf_to_json(cfg, out);
    evbuffer_add(out, "", 1);
    json = (char *)evbuffer_pullup(out, -1);
    assert_non_null(strstr(json, "\"splice\":{\"requests\":false,\"min_request_size\":262144,"
                                 "\"responses\":true,\"min_response_size\":1572864}"));
    evbuffer_free(out);
    pf_conf_unref(cfg);
    /* the smallest size there is: 1 byte */
    cfg = load("splice: {min_request_size: 1, min_response_size: 1}\n" UPSTREAM);
    assert_int_equal(cfg->splice.min_request_size, 1);
    assert_int_equal(cfg->splice.min_response_size, 1);
    pf_conf_unref(cfg);
}

static void test_conf_splice_reports_bad_values(void **state UNUSED)
{
    static const char yaml[] = "splice:\n  requests: maybe\n  min_request_size: 0\n"
                               "  respones: true\n  min_response_size: big\n" UPSTREAM;

    assert_null(pf_conf_load_string(yaml, "t.yaml", &err));
    assert_int_equal(err.n, 4);
    assert_true(has_error("t.yaml:2:13: splice.requests: expected true or false"));
    assert_true(has_error("t.yaml:3:21: splice.min_request_size: must be between 1 and 1TiB"));
    assert_true(has_error("t.yaml:4:3: unknown key 'respones' in splice (did you mean "
                          "'responses'?)"));
    assert_true(has_error(
        "t.yaml:5:22: splice.min_response_size: expected a size like 512, 64KiB or 1MiB"));
    /* the section itself: a map, under its own name */
    pf_err_fini(&err);
    pf_err_init(&err, "t.yaml");
    assert_null(pf_conf_load_string("splice: on\nsplise: {}\n" UPSTREAM, "t.yaml", &err));
    assert_int_equal(err.n, 2);
    assert_true(has_error("t.yaml:1:9: splice: expected a map"));
    assert_true(has_error("t.yaml:2:1: unknown key 'splise' at the top level (did you mean "
                          "'splice'?)"));
}

#define T(name) cmocka_unit_test_setup_teardown(name, setup, teardown)

int main(void)
{
    const struct CMUnitTest tests[] = {
        T(test_conf_parse_duration_accepts_units),
        T(test_conf_parse_duration_rejects_garbage),
        T(test_conf_parse_size_accepts_units),
        T(test_conf_parse_size_rejects_garbage),
        T(test_conf_parse_percent_and_bool),
        T(test_conf_format_duration_picks_largest_unit),
        T(test_conf_fill_sets_every_kind),
        T(test_conf_fill_reports_types_and_bounds),
        T(test_conf_splice_defaults),
        T(test_conf_splice_sets_every_key),
        T(test_conf_splice_reports_bad_values),
    };

    return cmocka_run_group_tests_name("conf_values", tests, NULL, NULL);
}
