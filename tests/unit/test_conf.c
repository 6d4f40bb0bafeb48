/*
 * Unit tests of proxy/conf.c and proxy/conf_node.c.
 *
 * This file defines pf_filter_find() and pf_filter_default_chain itself, so
 * the linker takes them from here and leaves filters/registry.o out: the
 * tests see three fake filters (metrics, gzip, cache) whatever the real
 * registry holds at the time.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/un.h>
#include <unistd.h>

#include <cmocka.h>
#include <event2/buffer.h>

#include "filters/registry.h"
#include "proxy/arena.h"
#include "proxy/conf.h"
#include "proxy/filter.h"
#include "proxy/log.h"

#define UNUSED  __attribute__((unused))
#define MINIMAL "upstreams:\n  app:\n    endpoints: [\"127.0.0.1:3000\"]\n"

/* ---- fake filters ---- */

struct fake_conf {
    int64_t level;           /* 1..9 */
    char *password;          /* secret */
    struct pf_strlist types; /* list */
    uint64_t ttl_ms;         /* duration */
    char *redis_address;     /* nested map */
    char *redis_password;    /* nested secret */
};

static unsigned fake_parses, fake_null_parses, fake_frees;

static const struct pf_conf_key fake_redis_keys[] = {
    {"address", PF_CONF_STRING, offsetof(struct fake_conf, redis_address), 0, 0, NULL},
    {"password", PF_CONF_STRING, offsetof(struct fake_conf, redis_password), 0, 0, NULL},
    {NULL, 0, 0, 0, 0, NULL},
};

static int fake_parse_redis(const struct pf_conf_node *n, void *field, struct pf_err *err)
{
    return pf_conf_fill_section(n, "cache.redis", fake_redis_keys, field, err);
}

static const struct pf_conf_key fake_keys[] = {
    {"level", PF_CONF_INT, offsetof(struct fake_conf, level), 1, 9, NULL},
    {"password", PF_CONF_STRING, offsetof(struct fake_conf, password), 0, 0, NULL},
    {"types", PF_CONF_STRLIST, offsetof(struct fake_conf, types), 0, 0, NULL},
    {"ttl", PF_CONF_DURATION, offsetof(struct fake_conf, ttl_ms), 0, 0, NULL},
    {"redis", PF_CONF_CUSTOM, 0, 0, 0, fake_parse_redis},
    {NULL, 0, 0, 0, 0, NULL},
};

static void fake_conf_free(void *conf)
{
    struct fake_conf *c = conf;

    fake_frees++;
    pf_conf_fields_free(fake_keys, c);
    pf_conf_fields_free(fake_redis_keys, c);
    free(c);
}

static int fake_conf_parse(const struct pf_conf_node *n, void **conf, struct pf_err *err)
{
    struct fake_conf *c = pf_xcalloc(1, sizeof(*c));

    fake_parses++;
    if (n == NULL)
        fake_null_parses++;
    c->level = 6;
    if (pf_conf_fill(n, fake_keys, c, err) < 0) {
        fake_conf_free(c);
        return -EINVAL;
    }
    *conf = c;
    return 0;
}

#define FAKE_FILTER(n)                                                                             \
    {                                                                                              \
        .name = n, .conf_parse = fake_conf_parse, .conf_free = fake_conf_free                      \
    }

static const struct pf_filter_ops fake_filters[] = {
    FAKE_FILTER("metrics"),
    FAKE_FILTER("gzip"),
    FAKE_FILTER("cache"),
};

const char *const pf_filter_default_chain[] = {"metrics", "gzip", "nonexistent", NULL};

const struct pf_filter_ops *pf_filter_at(unsigned i)
{
    return i < sizeof(fake_filters) / sizeof(fake_filters[0]) ? &fake_filters[i] : NULL;
}

const struct pf_filter_ops *pf_filter_find(const char *name)
{
    for (unsigned i = 0; i < sizeof(fake_filters) / sizeof(fake_filters[0]); i++) {
        if (strcmp(fake_filters[i].name, name) == 0)
            return &fake_filters[i];
    }
    return NULL;
}

/* ---- helpers ---- */

static struct pf_err err;

static int setup(void **state UNUSED)
{
    pf_err_init(&err, "t.yaml");
    fake_parses = fake_null_parses = fake_frees = 0;
    return 0;
}

static int teardown(void **state UNUSED)
{
    pf_err_fini(&err);
    return 0;
}

static struct pf_config *load(const char *yaml)
{
    struct pf_config *cfg = pf_conf_load_string(yaml, "t.yaml", &err);

    if (cfg == NULL)
        pf_conf_print_errors(&err, stderr);
    return cfg;
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

/* Loading yaml fails with msg among its errors (earlier errors are dropped). */
static void expect_error(const char *yaml, const char *msg)
{
    struct pf_config *cfg;

    pf_err_fini(&err);
    cfg = pf_conf_load_string(yaml, "t.yaml", &err);
    assert_null(cfg);
    assert_true(has_error(msg));
}

static char *to_json(const struct pf_config *cfg)
{
    struct evbuffer *b = evbuffer_new();
    char *s;

    pf_conf_to_json(cfg, b);
    s = pf_xstrndup((const char *)evbuffer_pullup(b, -1), evbuffer_get_length(b));
    evbuffer_free(b);
    return s;
}

/* ---- defaults ---- */

static void test_conf_defaults_when_minimal_file(void **state UNUSED)
{
    struct pf_config *cfg = load(MINIMAL);

    assert_non_null(cfg);
    assert_int_equal(cfg->n_listen, 1);
    assert_string_equal(cfg->listen[0].text, "0.0.0.0:8080");
    assert_int_equal(cfg->listen[0].ss.ss_family, AF_INET);
    assert_int_equal(ntohs(((struct sockaddr_in *)&cfg->listen[0].ss)->sin_port), 8080);
    assert_int_equal(cfg->workers, 0);
    assert_string_equal(cfg->admin_listen.text, "127.0.0.1:9901");
    assert_string_equal(cfg->admin_token, "");
    assert_int_equal(cfg->limits.max_connections, 10000);
    assert_int_equal(cfg->limits.max_header_size, 32 * 1024);
    assert_int_equal(cfg->limits.max_headers, 100);
    assert_int_equal(cfg->limits.max_uri_size, 8 * 1024);
    assert_int_equal(cfg->limits.max_body_size, 0);
    assert_int_equal(cfg->limits.header_timeout_ms, 10000);
    assert_int_equal(cfg->limits.idle_timeout_ms, 60000);
    assert_int_equal(cfg->drain_delay_ms, 0);
    assert_int_equal(cfg->drain_timeout_ms, 15000);
    assert_string_equal(cfg->access_log_path, "stdout");
    assert_string_equal(cfg->access_log_format, "json");
    assert_int_equal(cfg->log_level, PF_LOG_INFO);
    assert_int_equal(cfg->refs, 1);
    pf_conf_unref(cfg);
}

static void test_conf_upstream_defaults_when_minimal_file(void **state UNUSED)
{
    struct pf_config *cfg = load(MINIMAL);
    const struct pf_upstream_conf *u;

    assert_non_null(cfg);
    assert_int_equal(cfg->n_upstreams, 1);
    u = &cfg->upstreams[0];
    assert_string_equal(u->name, "app");
    assert_int_equal(u->n_endpoints, 1);
    assert_string_equal(u->endpoints[0].text, "127.0.0.1:3000");
    assert_null(u->endpoint_ids);
    assert_int_equal(u->balance, PF_BALANCE_ROUND_ROBIN);
    assert_int_equal(u->connect_timeout_ms, 1000);
    assert_int_equal(u->request_timeout_ms, 30000);
    assert_int_equal(u->pool.max_idle, 64);
    assert_int_equal(u->pool.idle_timeout_ms, 60000);
    assert_int_equal(u->pool.max_lifetime_ms, 3600000);
    assert_int_equal(pf_conf_upstream_index(cfg, "app"), 0);
    assert_int_equal(pf_conf_upstream_index(cfg, "nope"), -1);
    pf_conf_unref(cfg);
}

static void test_conf_routes_default_to_only_upstream(void **state UNUSED)
{
    struct pf_config *cfg = load(MINIMAL);

    assert_non_null(cfg);
    assert_int_equal(cfg->n_routes, 1);
    assert_string_equal(cfg->routes[0].name, "route-0");
    assert_string_equal(cfg->routes[0].prefix, "/");
    assert_int_equal(cfg->routes[0].prefix_len, 1);
    assert_null(cfg->routes[0].host);
    assert_int_equal(cfg->routes[0].methods.n, 0);
    assert_int_equal(cfg->routes[0].upstream, 0);
    /* default chain restricted to registered filters: metrics, gzip */
    assert_int_equal(cfg->routes[0].n_filters, 2);
    assert_int_equal(cfg->n_filters, 2);
    assert_string_equal(cfg->filters[cfg->routes[0].filters[0]].ops->name, "metrics");
    assert_string_equal(cfg->filters[cfg->routes[0].filters[1]].ops->name, "gzip");
    assert_int_equal(fake_null_parses, 2);
    pf_conf_unref(cfg);
    assert_int_equal(fake_frees, 2);
}

static void test_conf_limits_backlog_and_body_keys(void **state UNUSED)
{
    struct pf_config *cfg = load(MINIMAL);

    assert_non_null(cfg);
    assert_int_equal(cfg->limits.backlog, 1024);
    assert_int_equal(cfg->limits.body_timeout_ms, 60000);
    assert_int_equal(cfg->limits.request_buffering, 64 * 1024);
    pf_conf_unref(cfg);
    cfg = load("limits: {backlog: 4096, body_timeout: 5s, request_buffering: 0}\n" MINIMAL);
    assert_non_null(cfg);
    assert_int_equal(cfg->limits.backlog, 4096);
    assert_int_equal(cfg->limits.body_timeout_ms, 5000);
    assert_int_equal(cfg->limits.request_buffering, 0);
    pf_conf_unref(cfg);
    assert_null(load("limits: {backlog: 0}\n" MINIMAL));
    assert_null(load("limits: {backlog: 70000}\n" MINIMAL));
    assert_null(load("limits: {body_timeout: 0s}\n" MINIMAL));
    assert_null(load("limits: {request_buffering: 17MiB}\n" MINIMAL));
}

static void test_conf_sets_every_section(void **state UNUSED)
{
    struct pf_config *cfg = load("listen: \":9000\"\n"
                                 "workers: 4\n"
                                 "admin: {listen: \"127.0.0.1:9999\", token: s3cret}\n"
                                 "limits: {max_connections: 5, max_header_size: 64KiB,\n"
                                 "  max_body_size: 1MiB, header_timeout: 2s, idle_timeout: 250ms,\n"
                                 "  max_headers: 50, max_uri_size: 4KiB}\n"
                                 "drain_delay: 5s\n"
                                 "drain_timeout: 1m\n"
                                 "access_log: {path: /tmp/a.log, format: json}\n"
                                 "log_level: debug\n" MINIMAL);

    assert_non_null(cfg);
    assert_string_equal(cfg->listen[0].text, ":9000");
    assert_int_equal(cfg->workers, 4);
    assert_string_equal(cfg->admin_listen.text, "127.0.0.1:9999");
    assert_string_equal(cfg->admin_token, "s3cret");
    assert_int_equal(cfg->limits.max_connections, 5);
    assert_int_equal(cfg->limits.max_header_size, 65536);
    assert_int_equal(cfg->limits.max_body_size, 1 << 20);
    assert_int_equal(cfg->limits.header_timeout_ms, 2000);
    assert_int_equal(cfg->limits.idle_timeout_ms, 250);
    assert_int_equal(cfg->limits.max_headers, 50);
    assert_int_equal(cfg->limits.max_uri_size, 4096);
    assert_int_equal(cfg->drain_delay_ms, 5000);
    assert_int_equal(cfg->drain_timeout_ms, 60000);
    assert_string_equal(cfg->access_log_path, "/tmp/a.log");
    assert_int_equal(cfg->log_level, PF_LOG_DEBUG);
    pf_conf_unref(cfg);
}

/* ---- ${VAR} ---- */

static void test_conf_substitutes_env_var(void **state UNUSED)
{
    struct pf_config *cfg;

    setenv("PF_TEST_HOST", "127.0.0.2", 1);
    setenv("PF_TEST_PORT", "3001", 1);
    cfg = load("upstreams:\n  app:\n    endpoints: [\"${PF_TEST_HOST}:${PF_TEST_PORT}\"]\n"
               "admin: {token: \"tok-${PF_TEST_PORT}-x\"}\n");
    assert_non_null(cfg);
    assert_string_equal(cfg->upstreams[0].endpoints[0].text, "127.0.0.2:3001");
    assert_string_equal(cfg->admin_token, "tok-3001-x");
    pf_conf_unref(cfg);
    unsetenv("PF_TEST_HOST");
    unsetenv("PF_TEST_PORT");
}

static void test_conf_uses_default_when_env_var_unset(void **state UNUSED)
{
    struct pf_config *cfg;

    unsetenv("PF_TEST_UNSET");
    setenv("PF_TEST_EMPTY", "", 1);
    setenv("PF_TEST_SET", "9", 1);
    cfg = load(MINIMAL "listen: \"${PF_TEST_UNSET:-127.0.0.1:7000}\"\n"
                       "workers: ${PF_TEST_SET:-2}\n"
                       "admin: {token: \"${PF_TEST_EMPTY:-dflt}\"}\n");
    assert_non_null(cfg);
    assert_string_equal(cfg->listen[0].text, "127.0.0.1:7000");
    assert_int_equal(cfg->workers, 9);
    assert_string_equal(cfg->admin_token, "dflt");
    pf_conf_unref(cfg);
    unsetenv("PF_TEST_EMPTY");
    unsetenv("PF_TEST_SET");
}

static void test_conf_reports_unset_env_var_at_its_node(void **state UNUSED)
{
    unsetenv("PF_TEST_NOPE");
    expect_error(MINIMAL "admin:\n  token: ${PF_TEST_NOPE}\n",
                 "t.yaml:5:10: environment variable PF_TEST_NOPE is not set");
    expect_error(MINIMAL "admin: {token: \"${PF_TEST_NOPE\"}\n",
                 "t.yaml:4:16: unterminated '${' in value");
    expect_error(MINIMAL "admin: {token: \"${1BAD}\"}\n",
                 "t.yaml:4:16: invalid environment variable reference '${1BAD}'");
}

static void test_conf_keeps_dollar_text_literal(void **state UNUSED)
{
    struct pf_config *cfg;

    cfg = load(MINIMAL "admin: {token: \"a$b$$c$${HOME}$\"}\n");
    assert_non_null(cfg);
    assert_string_equal(cfg->admin_token, "a$b$$c${HOME}$");
    pf_conf_unref(cfg);
}

/* ---- errors with positions ---- */

static void test_conf_reports_unknown_key_at_line_and_col(void **state UNUSED)
{
    expect_error(MINIMAL "limits:\n  max_conections: 5\n",
                 "t.yaml:5:3: unknown key 'max_conections' in limits"
                 " (did you mean 'max_connections'?)");
    assert_int_equal(err.n, 1);
    expect_error("lisen: \":80\"\n" MINIMAL,
                 "t.yaml:1:1: unknown key 'lisen' at the top level (did you mean 'listen'?)");
}

static void test_conf_reports_all_errors_at_once(void **state UNUSED)
{
    expect_error("workers: lots\n"
                 "limits:\n"
                 "  header_timeout: soon\n"
                 "  bogus: 1\n"
                 "log_level: loud\n"
                 "upstreams:\n"
                 "  app:\n"
                 "    endpoints: [\"127.0.0.1:0\"]\n"
                 "    balance: fastest\n",
                 "t.yaml:1:10: workers: must be auto or a number between 1 and 256");
    assert_int_equal(err.n, 6);
    assert_true(has_error("t.yaml:3:19: limits.header_timeout: expected a duration like 250ms, "
                          "5s, 2m or 1h"));
    assert_true(has_error("t.yaml:4:3: unknown key 'bogus' in limits"));
    assert_true(has_error("t.yaml:5:12: log_level: must be one of error, warn, info, debug"));
    assert_true(has_error("t.yaml:8:17: upstreams.app.endpoints: invalid address '127.0.0.1:0': "
                          "the port must be a number between 1 and 65535"));
    assert_true(has_error(
        "t.yaml:9:14: upstreams.app.balance: must be round_robin, least_request, random or "
        "ring_hash"));
}

static void test_conf_reports_bad_duration_in_nested_key(void **state UNUSED)
{
    expect_error("upstreams:\n"
                 "  app:\n"
                 "    endpoints: [\"127.0.0.1:3000\"]\n"
                 "    pool:\n"
                 "      idle_timeout: 5 seconds\n",
                 "t.yaml:5:21: upstreams.app.pool.idle_timeout: expected a duration like 250ms, "
                 "5s, 2m or 1h");
    assert_int_equal(err.n, 1);
}

static void test_conf_reports_yaml_syntax_error_with_position(void **state UNUSED)
{
    assert_null(pf_conf_load_string("upstreams:\n  app: [\n", "t.yaml", &err));
    assert_int_equal(err.n, 1);
    assert_non_null(strstr(err.msgs[0], "t.yaml:3:1: "));
    pf_err_fini(&err);
    assert_null(pf_conf_load_string("a: b\n---\nc: d\n", "t.yaml", &err));
    assert_true(has_error("t.yaml:2:1: only one YAML document is allowed"));
}

static void test_conf_rejects_duplicate_keys_and_aliases(void **state UNUSED)
{
    expect_error(MINIMAL "workers: 2\nworkers: 3\n", "t.yaml:5:1: duplicate key 'workers'");
    expect_error("upstreams:\n  app:\n    endpoints: &eps [\"127.0.0.1:3000\"]\n"
                 "  other:\n    endpoints: *eps\n",
                 "t.yaml:5:16: YAML aliases are not supported");
    assert_true(has_error("t.yaml:3:16: YAML anchors are not supported"));
}

static void test_conf_requires_an_upstream(void **state UNUSED)
{
    expect_error("", "t.yaml: the configuration is empty: at least one upstream is required");
    expect_error("workers: 2\n", "t.yaml:1:1: upstreams: at least one upstream is required, as in "
                                 "upstreams: {app: {endpoints: [\"127.0.0.1:3000\"]}}");
    expect_error("upstreams:\n  app: {balance: random}\n",
                 "t.yaml:2:3: upstreams.app: 'endpoints' is required");
    expect_error("upstreams:\n  app: {endpoints: []}\n",
                 "t.yaml:2:20: upstreams.app.endpoints: must list at least one address");
    expect_error("- a\n", "t.yaml:1:1: expected a map of settings at the top level");
}

static void test_conf_upstream_sections_report_their_own_mistakes(void **state UNUSED)
{
    expect_error(MINIMAL "    retries: {attempts: 2}\n"
                         "    circuit_breaker: {consecutive_failures: 5, bogus: 1}\n"
                         "    health_check: {path: /health}\n",
                 "t.yaml:5:48: unknown key 'bogus' in upstreams.app.circuit_breaker");
    /* retries, circuit_breaker and health_check are parsed: only their own mistakes count */
    assert_int_equal(err.n, 1);
}

/* ---- routes ---- */

static void test_conf_route_normalisation_keys(void **state UNUSED)
{
    struct pf_config *cfg = load(MINIMAL "underscores_in_headers: reject\nroutes:\n"
                                         "  - match: {prefix: /api/, case_insensitive: true}\n"
                                         "    normalize_path: match_only\n"
                                         "  - match: {prefix: /}\n");

    assert_non_null(cfg);
    assert_int_equal(cfg->underscores, PF_UNDERSCORES_REJECT);
    assert_true(cfg->routes[0].case_insensitive);
    assert_int_equal(cfg->routes[0].normalize, PF_NORMALIZE_MATCH_ONLY);
    assert_false(cfg->routes[1].case_insensitive);
    assert_int_equal(cfg->routes[1].normalize, PF_NORMALIZE_FORWARD);
    pf_conf_unref(cfg);
    expect_error(MINIMAL "underscores_in_headers: keep\n",
                 "t.yaml:4:25: underscores_in_headers: must be one of drop, allow, reject");
    expect_error(MINIMAL "routes:\n  - normalize_path: yes\n",
                 "t.yaml:5:21: normalize_path: must be one of forward, match_only");
    expect_error(MINIMAL "routes:\n  - match: {prefix: \"/%61pi/./x/\"}\n",
                 "t.yaml:5:21: routes[0].match.prefix: paths are matched normalised; write it as "
                 "'/api/x/'");
    expect_error(MINIMAL "routes:\n  - match: {prefix: \"/a;p/\"}\n",
                 "t.yaml:5:21: routes[0].match.prefix: paths are matched normalised; write it as "
                 "'/a/'");
    expect_error(MINIMAL "routes:\n  - match: {prefix: \"/%2561/\"}\n",
                 "t.yaml:5:21: routes[0].match.prefix: refused in request paths (double "
                 "percent-encoding, %00 or an overlong UTF-8 escape)");
}

static void test_conf_rejects_route_to_unknown_upstream(void **state UNUSED)
{
    expect_error(MINIMAL "routes:\n  - upstream: ap\n",
                 "t.yaml:5:15: routes[0].upstream: unknown upstream 'ap'");
}

static void test_conf_rejects_several_upstreams_without_routes(void **state UNUSED)
{
    expect_error(MINIMAL "  b:\n    endpoints: [\"127.0.0.1:3001\"]\n",
                 "t.yaml:1:1: routes: required when there are several upstreams (say which "
                 "requests go to which upstream)");
    expect_error(MINIMAL "  b:\n    endpoints: [\"127.0.0.1:3001\"]\n"
                         "routes:\n  - match: {prefix: /b}\n",
                 "t.yaml:7:5: routes[0]: 'upstream' is required when there are several upstreams");
}

static void test_conf_parses_routes(void **state UNUSED)
{
    struct pf_config *cfg = load(MINIMAL "  api:\n    endpoints: [\"unix:/run/api.sock\"]\n"
                                         "routes:\n"
                                         "  - name: api\n"
                                         "    match: {prefix: /api/, host: API.example.com,\n"
                                         "            methods: [get, HEAD]}\n"
                                         "    upstream: api\n"
                                         "    filters: [cache, metrics]\n"
                                         "  - upstream: app\n"
                                         "    filters: []\n");
    const struct pf_route *r;

    assert_non_null(cfg);
    assert_int_equal(cfg->n_routes, 2);
    r = &cfg->routes[0];
    assert_string_equal(r->name, "api");
    assert_string_equal(r->prefix, "/api/");
    assert_int_equal(r->prefix_len, 5);
    assert_string_equal(r->host, "api.example.com");
    assert_int_equal(r->methods.n, 2);
    assert_string_equal(r->methods.v[0], "GET");
    assert_string_equal(r->methods.v[1], "HEAD");
    assert_int_equal(r->upstream, 1);
    assert_int_equal(r->n_filters, 2);
    assert_string_equal(cfg->filters[r->filters[0]].ops->name, "cache");
    assert_string_equal(cfg->filters[r->filters[1]].ops->name, "metrics");
    r = &cfg->routes[1];
    assert_string_equal(r->name, "route-1");
    assert_string_equal(r->prefix, "/");
    assert_int_equal(r->upstream, 0);
    assert_int_equal(r->n_filters, 0);
    assert_int_equal(cfg->n_filters, 2);
    pf_conf_unref(cfg);
}

static void test_conf_rejects_bad_routes(void **state UNUSED)
{
    expect_error(MINIMAL "routes:\n"
                         "  - match: {prefix: api, methods: [\"GE T\"], hots: x}\n"
                         "    filters: [metrics, nope, metrics]\n"
                         "  - name: route-0\n",
                 "t.yaml:5:45: unknown key 'hots' in routes[0].match (did you mean 'host'?)");
    assert_true(has_error("t.yaml:5:21: routes[0].match.prefix: must start with '/'"));
    assert_true(has_error("t.yaml:6:24: unknown filter 'nope'"));
    assert_true(has_error("t.yaml:6:30: filter 'metrics' is listed twice"));
    assert_true(
        has_error("t.yaml:7:5: routes[1]: the name 'route-0' is already used by routes[0]"));
    expect_error(MINIMAL "routes:\n  - match: {prefix: api, methods: [\"GE T\"]}\n",
                 "t.yaml:5:21: routes[0].match.prefix: must start with '/'");
    assert_true(has_error("t.yaml:5:36: routes[0].match.methods: 'GE T' is not a method"));
    expect_error(MINIMAL "routes: []\n",
                 "t.yaml:4:9: routes: expected a list of at least one route");
}

/* ---- filters ---- */

static void test_conf_parses_filter_settings(void **state UNUSED)
{
    struct pf_config *cfg = load(MINIMAL "filters:\n"
                                         "  gzip: {level: 3, types: [text/html]}\n"
                                         "  cache:\n");
    const struct fake_conf *c;

    assert_non_null(cfg);
    /* gzip and cache from filters:, metrics from the default chain */
    assert_int_equal(cfg->n_filters, 3);
    assert_string_equal(cfg->filters[0].ops->name, "gzip");
    c = cfg->filters[0].conf;
    assert_int_equal(c->level, 3);
    assert_string_equal(c->types.v[0], "text/html");
    assert_string_equal(cfg->filters[1].ops->name, "cache");
    assert_int_equal(((const struct fake_conf *)cfg->filters[1].conf)->level, 6);
    assert_string_equal(cfg->filters[2].ops->name, "metrics");
    assert_int_equal(fake_parses, 3);
    assert_int_equal(fake_null_parses, 2); /* cache: (empty) and metrics */
    assert_int_equal(cfg->routes[0].n_filters, 2);
    assert_int_equal(cfg->routes[0].filters[0], 2);
    assert_int_equal(cfg->routes[0].filters[1], 0);
    pf_conf_unref(cfg);
    assert_int_equal(fake_frees, 3);
}

static void test_conf_rejects_unknown_filter_and_bad_settings(void **state UNUSED)
{
    expect_error(MINIMAL "filters:\n  brotli: {}\n  gzip: {level: 12}\n",
                 "t.yaml:5:3: unknown filter 'brotli'");
    assert_true(has_error("t.yaml:6:17: gzip.level: must be between 1 and 9"));
    assert_int_equal(err.n, 2);
}

/* ---- listen, workers, admin, access_log ---- */

static void test_conf_listen_accepts_string_list_and_unix(void **state UNUSED)
{
    struct pf_config *cfg = load(MINIMAL "listen: \"127.0.0.1:8081\"\n");
    const struct sockaddr_un *sun;

    assert_non_null(cfg);
    assert_int_equal(cfg->n_listen, 1);
    assert_string_equal(cfg->listen[0].text, "127.0.0.1:8081");
    pf_conf_unref(cfg);
    cfg = load(MINIMAL "listen: [\"[::1]:8080\", \"unix:/tmp/pf.sock\", \":8082\"]\n");
    assert_non_null(cfg);
    assert_int_equal(cfg->n_listen, 3);
    assert_int_equal(cfg->listen[0].ss.ss_family, AF_INET6);
    assert_int_equal(cfg->listen[0].len, sizeof(struct sockaddr_in6));
    sun = (const struct sockaddr_un *)&cfg->listen[1].ss;
    assert_int_equal(sun->sun_family, AF_UNIX);
    assert_string_equal(sun->sun_path, "/tmp/pf.sock");
    assert_int_equal(cfg->listen[2].ss.ss_family, AF_INET);
    pf_conf_unref(cfg);
    expect_error(MINIMAL "listen: [\":80\", \":80\", \"::1:80\"]\n",
                 "t.yaml:4:17: listen: ':80' is listed twice");
    assert_true(has_error("t.yaml:4:24: listen: invalid address '::1:80': IPv6 addresses need "
                          "brackets, as in [::1]:8080"));
}

static void test_conf_workers_accepts_auto_and_number(void **state UNUSED)
{
    struct pf_config *cfg = load(MINIMAL "workers: auto\n");

    assert_non_null(cfg);
    assert_int_equal(cfg->workers, 0);
    pf_conf_unref(cfg);
    cfg = load(MINIMAL "workers: 256\n");
    assert_non_null(cfg);
    assert_int_equal(cfg->workers, 256);
    pf_conf_unref(cfg);
}

static void test_conf_workers_rejects_bad_values(void **state UNUSED)
{
    static const char *const bad[] = {"0", "257", "-1", "two", "4x", "99999999999", "\"\"", NULL};
    char yaml[256];

    for (unsigned i = 0; bad[i] != NULL; i++) {
        snprintf(yaml, sizeof(yaml), MINIMAL "workers: %s\n", bad[i]);
        expect_error(yaml, "t.yaml:4:10: workers: must be auto or a number between 1 and 256");
    }
}

static void test_conf_admin_off_and_access_log(void **state UNUSED)
{
    struct pf_config *cfg = load(MINIMAL "admin: {listen: \"off\"}\naccess_log: off\n");

    assert_non_null(cfg);
    assert_string_equal(cfg->admin_listen.text, "off");
    assert_int_equal(cfg->admin_listen.len, 0);
    assert_string_equal(cfg->access_log_path, "off");
    pf_conf_unref(cfg);
    cfg = load(MINIMAL "access_log: {format: text}\n");
    assert_non_null(cfg);
    assert_string_equal(cfg->access_log_format, "text");
    pf_conf_unref(cfg);
    expect_error(MINIMAL "access_log: {format: xml}\n",
                 "t.yaml:4:22: access_log.format: expected json or text");
}

static void test_conf_addr_parse_forms(void **state UNUSED)
{
    struct pf_addr a;

    assert_int_equal(pf_addr_parse("10.1.2.3:80", &a), 0);
    assert_int_equal(ntohs(((struct sockaddr_in *)&a.ss)->sin_port), 80);
    free(a.text);
    assert_int_equal(pf_addr_parse("8080", &a), 0);
    assert_int_equal(((struct sockaddr_in *)&a.ss)->sin_addr.s_addr, htonl(INADDR_ANY));
    free(a.text);
    assert_int_equal(pf_addr_parse("localhost:3000", &a), 0);
    assert_true(a.ss.ss_family == AF_INET || a.ss.ss_family == AF_INET6);
    free(a.text);
    assert_int_equal(pf_addr_parse("[fe80::1]:443", &a), 0);
    assert_int_equal(a.ss.ss_family, AF_INET6);
    free(a.text);
    assert_int_equal(pf_addr_parse("1.2.3.4:65536", &a), -EINVAL);
    assert_int_equal(pf_addr_parse("1.2.3.4:", &a), -EINVAL);
    assert_int_equal(pf_addr_parse("1.2.3.4", &a), -EINVAL);
    assert_int_equal(pf_addr_parse("[1.2.3.4]:80", &a), -EINVAL);
    assert_int_equal(pf_addr_parse("[::1]80", &a), -EINVAL);
    assert_int_equal(pf_addr_parse("unix:", &a), -EINVAL);
    assert_int_equal(pf_addr_parse("app", &a), -EINVAL);
    assert_int_equal(pf_addr_parse("no-such-host.invalid:80", &a), -ENOENT);
    char longpath[200] = "unix:/";
    memset(longpath + 6, 'a', 150);
    longpath[156] = '\0';
    assert_int_equal(pf_addr_parse(longpath, &a), -EINVAL);
}

/* ---- snapshots, output ---- */

static void test_conf_to_json_redacts_secrets(void **state UNUSED)
{
    struct pf_config *cfg;
    char *json;

    setenv("PF_TEST_PW", "hunter2", 1);
    cfg = load(MINIMAL "admin: {token: topsecret}\n"
                       "filters:\n"
                       "  cache: {password: \"${PF_TEST_PW}\", redis: {address: r:1, password: pw},"
                       " level: 2}\n");
    assert_non_null(cfg);
    json = to_json(cfg);
    assert_null(strstr(json, "topsecret"));
    assert_null(strstr(json, "hunter2"));
    assert_null(strstr(json, "\"pw\""));
    assert_non_null(strstr(json, "\"admin\":{\"listen\":\"127.0.0.1:9901\","
                                 "\"token\":\"<redacted>\"}"));
    assert_non_null(strstr(json, "\"cache\":{\"password\":\"<redacted>\",\"redis\":{\"address\":"
                                 "\"r:1\",\"password\":\"<redacted>\"},\"level\":2}"));
    free(json);
    pf_conf_unref(cfg);
    unsetenv("PF_TEST_PW");
}

static void test_conf_to_json_shows_effective_config(void **state UNUSED)
{
    struct pf_config *cfg = load(MINIMAL);
    char *json;

    assert_non_null(cfg);
    json = to_json(cfg);
    assert_non_null(strstr(json, "\"listen\":[\"0.0.0.0:8080\"],\"workers\":\"auto\""));
    assert_non_null(strstr(json, "\"token\":\"\""));
    assert_non_null(strstr(json, "\"limits\":{\"max_connections\":10000,\"max_header_size\":32768,"
                                 "\"max_headers\":100,\"max_uri_size\":8192,\"max_body_size\":0,"
                                 "\"header_timeout\":\"10s\",\"idle_timeout\":\"1m\","
                                 "\"backlog\":1024,\"body_timeout\":\"1m\","
                                 "\"request_buffering\":65536}"));
    assert_non_null(strstr(json, "\"drain_delay\":\"0s\",\"drain_timeout\":\"15s\""));
    assert_non_null(strstr(json, "\"access_log\":{\"path\":\"stdout\",\"format\":\"json\"},"
                                 "\"log_level\":\"info\",\"underscores_in_headers\":\"drop\""));
    assert_non_null(strstr(json, "\"upstreams\":{\"app\":{\"balance\":\"round_robin\","
                                 "\"endpoints\":[\"127.0.0.1:3000\"],\"connect_timeout\":\"1s\","
                                 "\"request_timeout\":\"30s\",\"pool\":{\"max_idle\":64,"
                                 "\"idle_timeout\":\"1m\",\"max_lifetime\":\"1h\"},"
                                 "\"retries\":{\"attempts\":1,\"on\":[\"connect_failure\","
                                 "\"reset\",502,503],\"per_try_timeout\":\"0s\","
                                 "\"budget\":\"20%\",\"min_per_second\":10,\"backoff\":"
                                 "\"25ms\",\"max_buffered_body\":65536},"
                                 "\"circuit_breaker\":{\"consecutive_failures\":5,"
                                 "\"failure_rate\":\"50%\",\"min_requests\":20,\"window\":\"10s\","
                                 "\"slow_call_duration\":\"0s\",\"slow_rate\":\"100%\","
                                 "\"failure_statuses\":\"500-599\",\"open_for\":\"30s\","
                                 "\"max_open_for\":\"5m\",\"half_open_requests\":1,"
                                 "\"max_connections\":1024,\"max_pending\":1024,"
                                 "\"max_requests\":1024,\"max_retries\":3,"
                                 "\"max_ejection\":\"50%\"},\"weights\":[1],"
                                 "\"slow_start\":\"0s\",\"health_check\":null}}"));
    assert_non_null(strstr(json, "\"routes\":[{\"name\":\"route-0\",\"match\":{\"prefix\":\"/\","
                                 "\"host\":null,\"methods\":[],\"case_insensitive\":false},"
                                 "\"normalize_path\":\"forward\",\"upstream\":\"app\","
                                 "\"filters\":[\"metrics\",\"gzip\"]}]"));
    assert_non_null(strstr(json, "\"filters\":{\"metrics\":{},\"gzip\":{}}}"));
    free(json);
    pf_conf_unref(cfg);
}

static void test_conf_ref_keeps_snapshot_alive(void **state UNUSED)
{
    struct pf_config *cfg = load(MINIMAL);

    assert_non_null(cfg);
    assert_ptr_equal(pf_conf_ref(cfg), cfg);
    assert_int_equal(atomic_load(&cfg->refs), 2);
    pf_conf_unref(cfg);
    assert_int_equal(fake_frees, 0);
    assert_string_equal(cfg->upstreams[0].name, "app");
    pf_conf_unref(cfg);
    assert_int_equal(fake_frees, 2);
    pf_conf_unref(NULL);
}

static void test_conf_load_reads_file(void **state UNUSED)
{
    char path[] = "/tmp/pf_test_conf_XXXXXX";
    int fd = mkstemp(path);
    struct pf_config *cfg;

    assert_true(fd >= 0);
    assert_int_equal(write(fd, MINIMAL "bogus: 1\n", strlen(MINIMAL) + 9), strlen(MINIMAL) + 9);
    close(fd);
    pf_err_init(&err, NULL);
    assert_null(pf_conf_load(path, &err));
    assert_int_equal(err.n, 1);
    assert_non_null(strstr(err.msgs[0], ":4:1: unknown key 'bogus' at the top level"));
    assert_ptr_equal(err.msgs[0], strstr(err.msgs[0], path));
    pf_err_fini(&err);
    assert_int_equal(truncate(path, (off_t)strlen(MINIMAL)), 0);
    cfg = pf_conf_load(path, &err);
    assert_non_null(cfg);
    assert_string_equal(cfg->path, path);
    pf_conf_unref(cfg);
    unlink(path);
    pf_err_init(&err, "missing.yaml");
    assert_null(pf_conf_load("/nonexistent/pf.yaml", &err));
    assert_true(has_error("missing.yaml: cannot open: No such file or directory"));
}

static void test_conf_print_errors_one_per_line(void **state UNUSED)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);

    expect_error("workers: 0\nlog_level: x\n", "t.yaml:1:10: workers: must be auto or a number "
                                               "between 1 and 256");
    pf_conf_print_errors(&err, f);
    fclose(f);
    /* sorted by position */
    assert_string_equal(buf, "t.yaml:1:1: upstreams: at least one upstream is required, as in "
                             "upstreams: {app: {endpoints: [\"127.0.0.1:3000\"]}}\n"
                             "t.yaml:1:10: workers: must be auto or a number between 1 and 256\n"
                             "t.yaml:2:12: log_level: must be one of error, warn, info, debug\n");
    free(buf);
}

#define T(name) cmocka_unit_test_setup_teardown(name, setup, teardown)

int main(void)
{
    const struct CMUnitTest tests[] = {
        T(test_conf_defaults_when_minimal_file),
        T(test_conf_upstream_defaults_when_minimal_file),
        T(test_conf_routes_default_to_only_upstream),
        T(test_conf_sets_every_section),
        T(test_conf_limits_backlog_and_body_keys),
        T(test_conf_substitutes_env_var),
        T(test_conf_uses_default_when_env_var_unset),
        T(test_conf_reports_unset_env_var_at_its_node),
        T(test_conf_keeps_dollar_text_literal),
        T(test_conf_reports_unknown_key_at_line_and_col),
        T(test_conf_reports_all_errors_at_once),
        T(test_conf_reports_bad_duration_in_nested_key),
        T(test_conf_reports_yaml_syntax_error_with_position),
        T(test_conf_rejects_duplicate_keys_and_aliases),
        T(test_conf_requires_an_upstream),
        T(test_conf_upstream_sections_report_their_own_mistakes),
        T(test_conf_route_normalisation_keys),
        T(test_conf_rejects_route_to_unknown_upstream),
        T(test_conf_rejects_several_upstreams_without_routes),
        T(test_conf_parses_routes),
        T(test_conf_rejects_bad_routes),
        T(test_conf_parses_filter_settings),
        T(test_conf_rejects_unknown_filter_and_bad_settings),
        T(test_conf_listen_accepts_string_list_and_unix),
        T(test_conf_workers_accepts_auto_and_number),
        T(test_conf_workers_rejects_bad_values),
        T(test_conf_admin_off_and_access_log),
        T(test_conf_addr_parse_forms),
        T(test_conf_to_json_redacts_secrets),
        T(test_conf_to_json_shows_effective_config),
        T(test_conf_ref_keeps_snapshot_alive),
        T(test_conf_load_reads_file),
        T(test_conf_print_errors_one_per_line),
    };

    return cmocka_run_group_tests_name("conf", tests, NULL, NULL);
}
