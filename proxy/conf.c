/*
 * The pilotfish configuration: sections, defaults (docs/configuration.md),
 * cross-checks between routes, upstreams and filters, and snapshots. The node
 * tree, ${VAR}, scalar parsers and key tables are in conf_node.c, addresses in
 * conf_addr.c and the /config rendering in conf_json.c.
 */
#include "proxy/conf.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "filters/registry.h"
#include "proxy/arena.h"
#include "proxy/filter.h"
#include "proxy/log.h"
#include "proxy/route.h"
#include "proxy/stats.h"
#include "proxy/syntax.h"
#include "proxy/upstream/retry.h"
#include "proxy/upstream/breaker.h"
#include "proxy/upstream/balancer.h"
#include "proxy/upstream/health.h"

#define MAX_FILE_SIZE (16u << 20) /* a configuration, not a data set */
#define MAX_WORKERS   256

/* ---- top-level sections ---- */

static int parse_later(const struct pf_conf_node *n, void *field, struct pf_err *err)
{
    (void)n, (void)field, (void)err;
    return 0; /* handled after the table, in order */
}

static int parse_listen(const struct pf_conf_node *n, void *field, struct pf_err *err)
{
    struct pf_config *cfg = field;

    pf_conf_addr_list(n, "listen", &cfg->listen, &cfg->n_listen, err);
    return 0;
}

static int parse_workers(const struct pf_conf_node *n, void *field, struct pf_err *err)
{
    unsigned *workers = field;
    unsigned v = 0;
    const char *s = n->value;

    if (n->type == PF_NODE_SCALAR && strcmp(s, "auto") == 0) {
        *workers = 0;
        return 0;
    }
    for (; n->type == PF_NODE_SCALAR && *s >= '0' && *s <= '9' && v <= MAX_WORKERS; s++)
        v = v * 10 + (unsigned)(*s - '0');
    if (n->type != PF_NODE_SCALAR || s == n->value || *s != '\0' || v < 1 || v > MAX_WORKERS) {
        pf_err_at(err, n, "workers: must be auto or a number between 1 and %d", MAX_WORKERS);
        return -EINVAL;
    }
    *workers = v;
    return 0;
}

static int parse_admin_listen(const struct pf_conf_node *n, void *field, struct pf_err *err)
{
    struct pf_addr *a = field, tmp;

    if (n->type == PF_NODE_SCALAR && strcmp(n->value, "off") == 0) {
        free(a->text);
        memset(a, 0, sizeof(*a));
        a->text = pf_xstrdup("off");
        return 0;
    }
    if (pf_conf_addr(n, &tmp, "admin.listen", err) < 0)
        return -EINVAL;
    free(a->text);
    *a = tmp;
    return 0;
}

static const struct pf_conf_key admin_keys[] = {
    {"listen", PF_CONF_CUSTOM, offsetof(struct pf_config, admin_listen), 0, 0, parse_admin_listen},
    {"token", PF_CONF_STRING, offsetof(struct pf_config, admin_token), 0, 0, NULL},
    {NULL, 0, 0, 0, 0, NULL},
};

static int parse_admin(const struct pf_conf_node *n, void *field, struct pf_err *err)
{
    return pf_conf_fill_section(n, "admin", admin_keys, field, err);
}

/* probes.listen: "" (the default) is off */
static int parse_probes_listen(const struct pf_conf_node *n, void *field, struct pf_err *err)
{
    struct pf_addr *a = field, tmp;

    if (n->type == PF_NODE_SCALAR && (n->value[0] == '\0' || strcmp(n->value, "off") == 0))
        return 0;
    if (pf_conf_addr(n, &tmp, "probes.listen", err) < 0)
        return -EINVAL;
    free(a->text);
    *a = tmp;
    return 0;
}

static const struct pf_conf_key probes_keys[] = {
    {"listen", PF_CONF_CUSTOM, offsetof(struct pf_config, probes_listen), 0, 0,
     parse_probes_listen},
    {NULL, 0, 0, 0, 0, NULL},
};

static int parse_probes(const struct pf_conf_node *n, void *field, struct pf_err *err)
{
    return pf_conf_fill_section(n, "probes", probes_keys, field, err);
}

static const struct pf_conf_key limit_keys[] = {
    {"max_connections", PF_CONF_UINT, offsetof(struct pf_limits, max_connections), 1, 10000000,
     NULL},
    {"max_header_size", PF_CONF_SIZE, offsetof(struct pf_limits, max_header_size), 1024, 16 << 20,
     NULL},
    {"max_headers", PF_CONF_UINT, offsetof(struct pf_limits, max_headers), 1, 10000, NULL},
    {"max_uri_size", PF_CONF_SIZE, offsetof(struct pf_limits, max_uri_size), 256, 16 << 20, NULL},
    {"max_body_size", PF_CONF_SIZE, offsetof(struct pf_limits, max_body_size), 0, 0, NULL},
    {"header_timeout", PF_CONF_DURATION, offsetof(struct pf_limits, header_timeout_ms), 1, 3600000,
     NULL},
    {"idle_timeout", PF_CONF_DURATION, offsetof(struct pf_limits, idle_timeout_ms), 1, 86400000,
     NULL},
    {"backlog", PF_CONF_UINT, offsetof(struct pf_limits, backlog), 1, 65535, NULL},
    {"body_timeout", PF_CONF_DURATION, offsetof(struct pf_limits, body_timeout_ms), 1, 86400000,
     NULL},
    {"request_buffering", PF_CONF_SIZE, offsetof(struct pf_limits, request_buffering), 0, 16 << 20,
     NULL},
    {NULL, 0, 0, 0, 0, NULL},
};

static int parse_limits(const struct pf_conf_node *n, void *field, struct pf_err *err)
{
    return pf_conf_fill_section(n, "limits", limit_keys, field, err);
}

static const struct pf_conf_key access_log_keys[] = {
    {"path", PF_CONF_STRING, offsetof(struct pf_config, access_log_path), 0, 0, NULL},
    {"format", PF_CONF_STRING, offsetof(struct pf_config, access_log_format), 0, 0, NULL},
    {NULL, 0, 0, 0, 0, NULL},
};

/* { path, format } or just the path ("access_log: off"). */
static int parse_access_log(const struct pf_conf_node *n, void *field, struct pf_err *err)
{
    struct pf_config *cfg = field;
    const struct pf_conf_node *path = n, *format = pf_conf_get(n, "format");

    if (n->type == PF_NODE_SCALAR && !pf_conf_is_null(n)) {
        free(cfg->access_log_path);
        cfg->access_log_path = pf_xstrdup(n->value);
    } else if (pf_conf_fill_section(n, "access_log", access_log_keys, cfg, err) < 0) {
        return -EINVAL;
    } else {
        path = pf_conf_get(n, "path");
    }
    if (cfg->access_log_path[0] == '\0')
        pf_err_at(err, path, "access_log.path: must be stdout, stderr, off or a file name");
    if (strcmp(cfg->access_log_format, "json") != 0 && strcmp(cfg->access_log_format, "text") != 0)
        pf_err_at(err, format, "access_log.format: expected json or text");
    return 0;
}

static int parse_log_level(const struct pf_conf_node *n, void *field, struct pf_err *err)
{
    int level = n->type == PF_NODE_SCALAR ? pf_log_level_parse(n->value) : -1;

    if (level < 0) {
        pf_err_at(err, n, "log_level: must be one of error, warn, info, debug");
        return -EINVAL;
    }
    *(int *)field = level;
    return 0;
}

/* One of names[] (n of them): its index, or -1 with an error naming them all. */
static int parse_choice(const struct pf_conf_node *n, const char *what, const char *const *names,
                        unsigned count, struct pf_err *err)
{
    for (unsigned i = 0; n->type == PF_NODE_SCALAR && i < count; i++) {
        if (strcmp(n->value, names[i]) == 0)
            return (int)i;
    }
    pf_err_at(err, n, "%s: must be one of %s", what, names[count]);
    return -1;
}

const char *const pf_conf_underscores_names[] = {"drop", "allow", "reject", "drop, allow, reject"};

static int parse_underscores(const struct pf_conf_node *n, void *field, struct pf_err *err)
{
    int v = parse_choice(n, "underscores_in_headers", pf_conf_underscores_names, 3, err);

    if (v < 0)
        return -EINVAL;
    *(enum pf_underscores *)field = (enum pf_underscores)v;
    return 0;
}

/* Sizes are Content-Lengths: 0 would splice bodies that came whole with their head. */
static const struct pf_conf_key splice_keys[] = {
    {"requests", PF_CONF_BOOL, offsetof(struct pf_splice_conf, requests), 0, 0, NULL},
    {"min_request_size", PF_CONF_SIZE, offsetof(struct pf_splice_conf, min_request_size), 1,
     (double)(1ull << 40), NULL},
    {"responses", PF_CONF_BOOL, offsetof(struct pf_splice_conf, responses), 0, 0, NULL},
    {"min_response_size", PF_CONF_SIZE, offsetof(struct pf_splice_conf, min_response_size), 1,
     (double)(1ull << 40), NULL},
    {NULL, 0, 0, 0, 0, NULL},
};

static int parse_splice(const struct pf_conf_node *n, void *field, struct pf_err *err)
{
    return pf_conf_fill_section(n, "splice", splice_keys, field, err);
}

static const struct pf_conf_key top_keys[] = {
    {"listen", PF_CONF_CUSTOM, 0, 0, 0, parse_listen},
    {"workers", PF_CONF_CUSTOM, offsetof(struct pf_config, workers), 0, 0, parse_workers},
    {"admin", PF_CONF_CUSTOM, 0, 0, 0, parse_admin},
    {"probes", PF_CONF_CUSTOM, 0, 0, 0, parse_probes},
    {"limits", PF_CONF_CUSTOM, offsetof(struct pf_config, limits), 0, 0, parse_limits},
    {"drain_delay", PF_CONF_DURATION, offsetof(struct pf_config, drain_delay_ms), 0, 3600000, NULL},
    {"drain_timeout", PF_CONF_DURATION, offsetof(struct pf_config, drain_timeout_ms), 0, 3600000,
     NULL},
    {"access_log", PF_CONF_CUSTOM, 0, 0, 0, parse_access_log},
    {"log_level", PF_CONF_CUSTOM, offsetof(struct pf_config, log_level), 0, 0, parse_log_level},
    {"underscores_in_headers", PF_CONF_CUSTOM, offsetof(struct pf_config, underscores), 0, 0,
     parse_underscores},
    {"upstreams", PF_CONF_CUSTOM, 0, 0, 0, parse_later},
    {"routes", PF_CONF_CUSTOM, 0, 0, 0, parse_later},
    {"filters", PF_CONF_CUSTOM, 0, 0, 0, parse_later},
    {"metrics", PF_CONF_CUSTOM, offsetof(struct pf_config, metrics), 0, 0, pf_stats_conf_parse},
    {"splice", PF_CONF_CUSTOM, offsetof(struct pf_config, splice), 0, 0, parse_splice},
    {NULL, 0, 0, 0, 0, NULL},
};

/* ---- upstreams ---- */

static const struct pf_conf_key pool_keys[] = {
    {"max_idle", PF_CONF_UINT, offsetof(struct pf_pool_conf, max_idle), 0, 100000, NULL},
    {"idle_timeout", PF_CONF_DURATION, offsetof(struct pf_pool_conf, idle_timeout_ms), 1, 86400000,
     NULL},
    {"max_lifetime", PF_CONF_DURATION, offsetof(struct pf_pool_conf, max_lifetime_ms), 1,
     7 * 86400000.0, NULL},
    {NULL, 0, 0, 0, 0, NULL},
};

static const struct pf_conf_key upstream_keys[] = {
    {"endpoints", PF_CONF_CUSTOM, 0, 0, 0, parse_later},
    {"balance", PF_CONF_CUSTOM, 0, 0, 0, parse_later},
    {"connect_timeout", PF_CONF_DURATION, offsetof(struct pf_upstream_conf, connect_timeout_ms), 1,
     3600000, NULL},
    {"request_timeout", PF_CONF_DURATION, offsetof(struct pf_upstream_conf, request_timeout_ms), 1,
     86400000, NULL},
    {"pool", PF_CONF_CUSTOM, 0, 0, 0, parse_later},
    {"hash_on", PF_CONF_CUSTOM, 0, 0, 0, parse_later},
    {"slow_start", PF_CONF_DURATION, offsetof(struct pf_upstream_conf, slow_start_ms), 0, 3600000,
     NULL},
    {"health_check", PF_CONF_CUSTOM, 0, 0, 0, parse_later},
    {"retries", PF_CONF_CUSTOM, 0, 0, 0, parse_later},
    {"circuit_breaker", PF_CONF_CUSTOM, 0, 0, 0, parse_later},
    {NULL, 0, 0, 0, 0, NULL},
};

const char *const pf_conf_balance_names[] = {"round_robin", "least_request", "random", "ring_hash",
                                             NULL};

static void parse_balance(const struct pf_conf_node *n, struct pf_upstream_conf *u,
                          const char *section, struct pf_err *err)
{
    for (unsigned i = 0; n->type == PF_NODE_SCALAR && pf_conf_balance_names[i] != NULL; i++) {
        if (strcmp(n->value, pf_conf_balance_names[i]) == 0) {
            u->balance = (enum pf_balance)i;
            return;
        }
    }
    pf_err_at(err, n, "%s.balance: must be round_robin, least_request, random or ring_hash",
              section);
}

/* hash_on, the ring of ring_hash, health_check (proxy/upstream/balancer_conf.c, health.c). */
static void parse_upstream_lb(const struct pf_conf_node *n, struct pf_upstream_conf *u,
                              const char *section, struct pf_err *err)
{
    const struct pf_conf_node *v = pf_conf_get(n, "hash_on");

    if (v != NULL && u->balance != PF_BALANCE_RING_HASH)
        pf_err_at(err, v->key_node, "%s.hash_on: only with balance: ring_hash", section);
    else if (v != NULL)
        pf_balancer_conf_hash_on(v, section, u, err);
    if (u->balance == PF_BALANCE_RING_HASH)
        pf_balancer_ring_build(u);
    pf_health_conf_parse(pf_conf_get(n, "health_check"), section, &u->health, err);
}

static void parse_upstream(const struct pf_conf_node *n, struct pf_upstream_conf *u,
                           struct pf_err *err)
{
    const struct pf_conf_node *v;
    char section[300], sub[320];

    u->name = pf_xstrdup(n->key);
    u->balance = PF_BALANCE_ROUND_ROBIN;
    u->connect_timeout_ms = 1000;
    u->request_timeout_ms = 30000;
    u->pool = (struct pf_pool_conf){64, 60000, 3600000}; /* max_idle, idle_timeout, lifetime */
    pf_retry_conf_defaults(&u->retry);
    pf_breaker_conf_defaults(&u->breaker);
    snprintf(section, sizeof(section), "upstreams.%s", n->key);
    if (n->type != PF_NODE_MAP) {
        pf_err_at(err, n, "%s: expected a map with at least endpoints", section);
        return;
    }
    pf_conf_fill_section(n, section, upstream_keys, u, err);
    snprintf(sub, sizeof(sub), "%s.endpoints", section);
    if ((v = pf_conf_get(n, "endpoints")) != NULL)
        pf_balancer_conf_endpoints(v, sub, u, err);
    else
        pf_err_at(err, n->key_node, "%s: 'endpoints' is required", section);
    if ((v = pf_conf_get(n, "balance")) != NULL)
        parse_balance(v, u, section, err);
    snprintf(sub, sizeof(sub), "%s.pool", section);
    pf_conf_fill_section(pf_conf_get(n, "pool"), sub, pool_keys, &u->pool, err);
    snprintf(sub, sizeof(sub), "%s.retries", section);
    pf_retry_conf_parse(pf_conf_get(n, "retries"), sub, &u->retry, err);
    snprintf(sub, sizeof(sub), "%s.circuit_breaker", section);
    pf_breaker_conf_parse(pf_conf_get(n, "circuit_breaker"), sub, &u->breaker, err);
    parse_upstream_lb(n, u, section, err);
}

static void parse_upstreams(struct pf_config *cfg, const struct pf_conf_node *n, struct pf_err *err)
{
    if (n == NULL || pf_conf_is_null(n) || (n->type == PF_NODE_MAP && n->n_items == 0)) {
        pf_err_at(
            err, n != NULL ? n : cfg->root,
            "upstreams: at least one upstream is required, as in upstreams: {app: {endpoints: [\"127.0.0.1:3000\"]}}");
        return;
    }
    if (n->type != PF_NODE_MAP) {
        pf_err_at(err, n, "upstreams: expected a map of NAME: {endpoints: [...]}");
        return;
    }
    cfg->upstreams = pf_xcalloc(n->n_items, sizeof(*cfg->upstreams));
    /* every upstream counts, even a broken one: routes naming it are not wrong */
    for (unsigned i = 0; i < n->n_items; i++)
        parse_upstream(n->items[i], &cfg->upstreams[cfg->n_upstreams++], err);
}

int pf_conf_upstream_index(const struct pf_config *cfg, const char *name)
{
    for (unsigned i = 0; i < cfg->n_upstreams; i++) {
        if (strcmp(cfg->upstreams[i].name, name) == 0)
            return (int)i;
    }
    return -1;
}

/* ---- filters ---- */

/* Index of ops' instance, created from settings n (NULL: defaults) if missing. */
static unsigned filter_instance(struct pf_config *cfg, const struct pf_filter_ops *ops,
                                const struct pf_conf_node *n, struct pf_err *err)
{
    struct pf_filter_inst *inst;
    unsigned before = err->n;

    for (unsigned i = 0; i < cfg->n_filters; i++) {
        if (cfg->filters[i].ops == ops)
            return i;
    }
    cfg->filters = pf_xrealloc(cfg->filters, (cfg->n_filters + 1) * sizeof(*cfg->filters));
    inst = &cfg->filters[cfg->n_filters];
    memset(inst, 0, sizeof(*inst));
    inst->ops = ops;
    if (ops->conf_parse != NULL && ops->conf_parse(n, &inst->conf, err) < 0) {
        if (err->n == before)
            pf_err_at(err, n, "filters.%s: invalid settings", ops->name);
        if (inst->conf != NULL && ops->conf_free != NULL)
            ops->conf_free(inst->conf);
        inst->conf = NULL;
    }
    return cfg->n_filters++;
}

/*
 * filters.ratelimit.key: header:NAME with a '_' in NAME never sees its header
 * unless underscores_in_headers is allow (drop removes it, reject refuses the
 * request): every request would fall into the one "empty key" bucket.
 */
static void check_ratelimit_key(const struct pf_config *cfg, struct pf_err *err)
{
    const struct pf_conf_node *key =
        pf_conf_get(pf_conf_get(pf_conf_get(cfg->root, "filters"), "ratelimit"), "key");

    if (key == NULL || key->type != PF_NODE_SCALAR || strncmp(key->value, "header:", 7) != 0 ||
        strchr(key->value + 7, '_') == NULL || cfg->underscores == PF_UNDERSCORES_ALLOW)
        return;
    pf_err_at(err, key,
              "ratelimit.key: header names with '_' never reach filters under "
              "underscores_in_headers: %s (every request would share one bucket); "
              "write the name with '-' or set underscores_in_headers: allow",
              pf_conf_underscores_names[cfg->underscores]);
}

static void parse_filters(struct pf_config *cfg, const struct pf_conf_node *n, struct pf_err *err)
{
    if (n == NULL || pf_conf_is_null(n))
        return;
    if (n->type != PF_NODE_MAP) {
        pf_err_at(err, n, "filters: expected a map of filter names to their settings");
        return;
    }
    for (unsigned i = 0; i < n->n_items; i++) {
        const struct pf_conf_node *item = n->items[i];
        const struct pf_filter_ops *ops = pf_filter_find(item->key);
        if (ops == NULL) {
            pf_err_at(err, item->key_node, "unknown filter '%s'", item->key);
            continue;
        }
        filter_instance(cfg, ops, pf_conf_is_null(item) ? NULL : item, err);
    }
}

/* ---- routes ---- */

struct route_raw {
    struct pf_route r; /* being filled */
    char *upstream;    /* name as written */
};

const char *const pf_conf_normalize_names[] = {"forward", "match_only", "forward, match_only"};

static int parse_normalize(const struct pf_conf_node *n, void *field, struct pf_err *err)
{
    int v = parse_choice(n, "normalize_path", pf_conf_normalize_names, 2, err);

    if (v < 0)
        return -EINVAL;
    *(enum pf_normalize_path *)field = (enum pf_normalize_path)v;
    return 0;
}

static const struct pf_conf_key route_keys[] = {
    {"name", PF_CONF_STRING, offsetof(struct route_raw, r.name), 0, 0, NULL},
    {"normalize_path", PF_CONF_CUSTOM, offsetof(struct route_raw, r.normalize), 0, 0,
     parse_normalize},
    {"match", PF_CONF_CUSTOM, 0, 0, 0, parse_later},
    {"upstream", PF_CONF_STRING, offsetof(struct route_raw, upstream), 0, 0, NULL},
    {"filters", PF_CONF_CUSTOM, 0, 0, 0, parse_later},
    {"slo", PF_CONF_CUSTOM, offsetof(struct route_raw, r.slo), 0, 0, pf_slo_conf_parse},
    {NULL, 0, 0, 0, 0, NULL},
};

static const struct pf_conf_key match_keys[] = {
    {"prefix", PF_CONF_STRING, offsetof(struct pf_route, prefix), 0, 0, NULL},
    {"host", PF_CONF_STRING, offsetof(struct pf_route, host), 0, 0, NULL},
    {"methods", PF_CONF_STRLIST, offsetof(struct pf_route, methods), 0, 0, NULL},
    {"case_insensitive", PF_CONF_BOOL, offsetof(struct pf_route, case_insensitive), 0, 0, NULL},
    {NULL, 0, 0, 0, 0, NULL},
};

/* RFC 9110 token, upper-cased in place. */
static bool method_fix(char *m)
{
    if (*m == '\0')
        return false;
    for (char *p = m; *p != '\0'; p++) {
        if (!pf_http_is_tchar((unsigned char)*p))
            return false;
        if (*p >= 'a' && *p <= 'z')
            *p = (char)(*p - 'a' + 'A');
    }
    return true;
}

/* Paths are matched normalised (proxy/route.h): a prefix must be written so. */
static void check_prefix_normal(const char *prefix, const struct pf_conf_node *at,
                                const char *section, struct pf_err *err)
{
    size_t len = strlen(prefix);
    char *norm = pf_xmalloc(len + 2);
    ssize_t n = pf_route_normalize(prefix, len, norm);

    if (n < 0)
        pf_err_at(err, at,
                  "%s.prefix: refused in request paths (double percent-encoding, %%00 or an "
                  "overlong UTF-8 escape)",
                  section);
    else if (pf_route_strip_params(norm, (size_t)n) != len || memcmp(norm, prefix, len) != 0)
        pf_err_at(err, at, "%s.prefix: paths are matched normalised; write it as '%s'", section,
                  norm);
    free(norm);
}

static void check_match(struct pf_route *r, const struct pf_conf_node *m, const char *section,
                        struct pf_err *err)
{
    const struct pf_conf_node *methods = pf_conf_get(m, "methods");

    if (r->prefix[0] != '/')
        pf_err_at(err, pf_conf_get(m, "prefix"), "%s.prefix: must start with '/'", section);
    else
        check_prefix_normal(r->prefix, pf_conf_get(m, "prefix"), section, err);
    if (r->host != NULL && r->host[0] == '\0')
        pf_err_at(err, pf_conf_get(m, "host"), "%s.host: must not be empty", section);
    for (char *p = r->host; p != NULL && *p != '\0'; p++) {
        if (*p >= 'A' && *p <= 'Z')
            *p = (char)(*p - 'A' + 'a');
    }
    for (unsigned i = 0; i < r->methods.n; i++) {
        const struct pf_conf_node *at = methods->type == PF_NODE_SEQ ? methods->items[i] : methods;
        if (!method_fix(r->methods.v[i]))
            pf_err_at(err, at, "%s.methods: '%s' is not a method", section, r->methods.v[i]);
    }
}

static void route_upstream(struct pf_config *cfg, struct route_raw *raw,
                           const struct pf_conf_node *n, const char *section, struct pf_err *err)
{
    int idx;

    if (raw->upstream == NULL) {
        if (cfg->n_upstreams > 1)
            pf_err_at(err, n, "%s: 'upstream' is required when there are several upstreams",
                      section);
        return;
    }
    idx = pf_conf_upstream_index(cfg, raw->upstream);
    if (idx < 0)
        pf_err_at(err, pf_conf_get(n, "upstream"), "%s.upstream: unknown upstream '%s'", section,
                  raw->upstream);
    else
        raw->r.upstream = (unsigned)idx;
}

static void route_add_filter(struct pf_config *cfg, struct pf_route *r,
                             const struct pf_filter_ops *ops, const struct pf_conf_node *at,
                             struct pf_err *err)
{
    unsigned idx = filter_instance(cfg, ops, NULL, err);

    for (unsigned i = 0; i < r->n_filters; i++) {
        if (r->filters[i] == idx) {
            pf_err_at(err, at, "filter '%s' is listed twice", ops->name);
            return;
        }
    }
    r->filters = pf_xrealloc(r->filters, (r->n_filters + 1) * sizeof(*r->filters));
    r->filters[r->n_filters++] = idx;
}

/* The route's `filters:` list, or the default chain when it has none. */
static void route_filters(struct pf_config *cfg, struct pf_route *r, const struct pf_conf_node *n,
                          const char *section, struct pf_err *err)
{
    const struct pf_conf_node *const *items;
    unsigned n_items = pf_conf_is_null(n) ? 0 : pf_conf_node_items(&n, &items);

    if (n->type == PF_NODE_MAP) {
        pf_err_at(err, n, "%s.filters: expected a list of filter names", section);
        return;
    }
    for (unsigned i = 0; i < n_items; i++) {
        const struct pf_filter_ops *ops = NULL;
        if (items[i]->type == PF_NODE_SCALAR)
            ops = pf_filter_find(items[i]->value);
        if (ops != NULL)
            route_add_filter(cfg, r, ops, items[i], err);
        else if (items[i]->type != PF_NODE_SCALAR)
            pf_err_at(err, items[i], "%s.filters: expected a filter name", section);
        else
            pf_err_at(err, items[i], "unknown filter '%s'", items[i]->value);
    }
}

static void route_default_filters(struct pf_config *cfg, struct pf_route *r, struct pf_err *err)
{
    for (unsigned i = 0; pf_filter_default_chain[i] != NULL; i++) {
        const struct pf_filter_ops *ops = pf_filter_find(pf_filter_default_chain[i]);
        if (ops != NULL)
            route_add_filter(cfg, r, ops, NULL, err);
    }
}

static void route_free(struct pf_route *r)
{
    free(r->name);
    free(r->filters);
    pf_conf_fields_free(match_keys, r);
}

static void parse_route(struct pf_config *cfg, unsigned idx, const struct pf_conf_node *n,
                        struct pf_err *err)
{
    struct route_raw raw;
    char section[32], sub[48];
    const struct pf_conf_node *v;

    memset(&raw, 0, sizeof(raw));
    raw.r.prefix = pf_xstrdup("/");
    snprintf(section, sizeof(section), "routes[%u]", idx);
    snprintf(sub, sizeof(sub), "%s.match", section);
    if (n != NULL && (pf_conf_is_null(n) || n->type != PF_NODE_MAP)) {
        pf_err_at(err, n, "%s: expected a map with match and upstream", section);
    } else if (n != NULL) {
        pf_conf_fill_section(n, section, route_keys, &raw, err);
        v = pf_conf_get(n, "match");
        /* check what was filled even if another match key was wrong */
        pf_conf_fill_section(v, sub, match_keys, &raw.r, err);
        check_match(&raw.r, v, sub, err);
    }
    if (raw.r.name == NULL) {
        raw.r.name = pf_xmalloc(24);
        snprintf(raw.r.name, 24, "route-%u", idx);
    }
    raw.r.prefix_len = strlen(raw.r.prefix);
    route_upstream(cfg, &raw, n, section, err);
    if ((v = pf_conf_get(n, "filters")) != NULL)
        route_filters(cfg, &raw.r, v, section, err);
    else
        route_default_filters(cfg, &raw.r, err);
    free(raw.upstream);
    cfg->routes[idx] = raw.r;
}

static void parse_routes(struct pf_config *cfg, const struct pf_conf_node *n, struct pf_err *err)
{
    if (n == NULL || pf_conf_is_null(n)) {
        if (cfg->n_upstreams > 1) {
            pf_err_at(
                err, n != NULL ? n : cfg->root,
                "routes: required when there are several upstreams (say which requests go to which upstream)");
            return;
        }
        cfg->routes = pf_xcalloc(1, sizeof(*cfg->routes));
        parse_route(cfg, 0, NULL, err);
        cfg->n_routes = 1;
        return;
    }
    if (n->type != PF_NODE_SEQ || n->n_items == 0) {
        pf_err_at(err, n, "routes: expected a list of at least one route");
        return;
    }
    cfg->routes = pf_xcalloc(n->n_items, sizeof(*cfg->routes));
    for (unsigned i = 0; i < n->n_items; i++) {
        parse_route(cfg, i, n->items[i], err);
        for (unsigned j = 0; j < i; j++) {
            if (strcmp(cfg->routes[i].name, cfg->routes[j].name) == 0) {
                pf_err_at(err, n->items[i],
                          "routes[%u]: the name '%s' is already used by routes[%u]", i,
                          cfg->routes[i].name, j);
                break;
            }
        }
        cfg->n_routes++;
    }
}

/* ---- snapshots ---- */

static struct pf_config *conf_new(const char *path)
{
    struct pf_config *cfg = pf_xcalloc(1, sizeof(*cfg));

    atomic_init(&cfg->refs, 1);
    cfg->path = pf_xstrdup(path);
    cfg->listen = pf_xcalloc(1, sizeof(*cfg->listen));
    cfg->n_listen = 1;
    pf_addr_parse("0.0.0.0:8080", &cfg->listen[0]);
    pf_addr_parse("127.0.0.1:9901", &cfg->admin_listen);
    cfg->admin_token = pf_xstrdup("");
    /*
     * max_connections, max_header_size, max_headers, max_uri_size, max_body_size, timeouts,
     * backlog, body_timeout, request_buffering
     */
    cfg->limits =
        (struct pf_limits){10000, 32 << 10, 100, 8 << 10, 0, 10000, 60000, 1024, 60000, 64 << 10};
    cfg->drain_timeout_ms = 15000;
    cfg->access_log_path = pf_xstrdup("stdout");
    cfg->access_log_format = pf_xstrdup("json");
    cfg->log_level = PF_LOG_INFO;
    /* requests, min_request_size, responses, min_response_size (bench/README.md, "splice") */
    cfg->splice = (struct pf_splice_conf){true, 1 << 20, false, 64 << 10};
    return cfg;
}

static void conf_free(struct pf_config *cfg)
{
    if (cfg->release != NULL)
        cfg->release(cfg); /* endpoint references, filters' process state */
    free(cfg->path);
    pf_addr_list_free(cfg->listen, cfg->n_listen);
    free(cfg->admin_listen.text);
    free(cfg->admin_token);
    free(cfg->probes_listen.text);
    free(cfg->access_log_path);
    free(cfg->access_log_format);
    for (unsigned i = 0; i < cfg->n_upstreams; i++) {
        free(cfg->upstreams[i].name);
        pf_addr_list_free(cfg->upstreams[i].endpoints, cfg->upstreams[i].n_endpoints);
        free(cfg->upstreams[i].endpoint_ids);
        pf_breaker_conf_free(&cfg->upstreams[i].breaker);
        pf_balancer_conf_free(&cfg->upstreams[i]);
        pf_health_conf_free(&cfg->upstreams[i].health);
    }
    free(cfg->upstreams);
    for (unsigned i = 0; i < cfg->n_routes; i++)
        route_free(&cfg->routes[i]);
    free(cfg->routes);
    for (unsigned i = 0; i < cfg->n_filters; i++) {
        if (cfg->filters[i].conf != NULL && cfg->filters[i].ops->conf_free != NULL)
            cfg->filters[i].ops->conf_free(cfg->filters[i].conf);
    }
    free(cfg->filters);
    pf_conf_node_free(cfg->root);
    free(cfg);
}

static void conf_build(struct pf_config *cfg, struct pf_err *err)
{
    const struct pf_conf_node *root = cfg->root;

    if (root == NULL) {
        pf_err_at(err, NULL, "the configuration is empty: at least one upstream is required");
        return;
    }
    if (root->type != PF_NODE_MAP) {
        pf_err_at(err, root, "expected a map of settings at the top level");
        return;
    }
    pf_conf_fill_section(root, NULL, top_keys, cfg, err);
    parse_upstreams(cfg, pf_conf_get(root, "upstreams"), err);
    parse_filters(cfg, pf_conf_get(root, "filters"), err);
    check_ratelimit_key(cfg, err);
    parse_routes(cfg, pf_conf_get(root, "routes"), err);
}

static struct pf_config *load_text(const char *text, size_t len, const char *name,
                                   struct pf_err *err)
{
    struct pf_config *cfg = conf_new(name);
    unsigned before = err->n;

    if (pf_conf_node_parse(text, len, &cfg->root, err) == 0)
        conf_build(cfg, err);
    if (err->n != before) {
        pf_err_sort(err);
        conf_free(cfg);
        return NULL;
    }
    return cfg;
}

struct pf_config *pf_conf_load_string(const char *yaml, const char *name, struct pf_err *err)
{
    if (err->file == NULL)
        err->file = name;
    return load_text(yaml, strlen(yaml), name, err);
}

struct pf_config *pf_conf_load(const char *path, struct pf_err *err)
{
    struct pf_config *cfg = NULL;
    char *text = NULL;
    size_t len = 0, cap = 0, got;
    FILE *f;

    if (err->file == NULL)
        err->file = path;
    f = fopen(path, "r");
    if (f == NULL) {
        pf_err_at(err, NULL, "cannot open: %s", strerror(errno));
        return NULL;
    }
    do {
        if (len == cap) {
            cap = cap ? cap * 2 : 16384;
            text = pf_xrealloc(text, cap);
        }
        got = fread(text + len, 1, cap - len, f);
        len += got;
    } while (got > 0 && len <= MAX_FILE_SIZE);
    if (ferror(f))
        pf_err_at(err, NULL, "cannot read: %s", strerror(errno));
    else if (len > MAX_FILE_SIZE)
        pf_err_at(err, NULL, "larger than %u bytes", MAX_FILE_SIZE);
    else
        cfg = load_text(text, len, path, err);
    free(text);
    fclose(f);
    return cfg;
}

struct pf_config *pf_conf_ref(struct pf_config *cfg)
{
    atomic_fetch_add_explicit(&cfg->refs, 1, memory_order_relaxed);
    return cfg;
}

void pf_conf_unref(struct pf_config *cfg)
{
    if (cfg == NULL)
        return;
    if (atomic_fetch_sub_explicit(&cfg->refs, 1, memory_order_acq_rel) == 1)
        conf_free(cfg);
}
