/*
 * filters/cache/cache_conf.c: the cache filter's settings (filters.cache),
 * its metrics, Range parsing, and purge (POST /cache/purge on the admin API, and the PURGE
 * method of cache.c).
 */
#include "filters/cache/cache.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <event2/buffer.h>
#include <hiredis/hiredis.h>

#include "proxy/arena.h"
#include "proxy/conf.h"
#include "proxy/filter.h"
#include "proxy/log.h"
#include "proxy/route.h"
#include "proxy/stats.h"
#include "filters/cache/l2.h"
#include "filters/cache/store.h"

#define MIB             (UINT64_C(1) << 20)
#define CACHE_MEMORY    (64 * MIB)
#define CACHE_OBJECT    (1 * MIB)
#define CACHE_KEY_MAX   4096
#define CACHE_DAY_MS    (UINT64_C(24) * 3600 * 1000)
#define CACHE_MEMORY_LO (UINT64_C(64) << 10)
#define CACHE_MEMORY_HI (UINT64_C(1) << 40)

/* ---- configuration ---- */

static int parse_key(const struct pf_conf_node *n, void *field, struct pf_err *err);
static int parse_redis(const struct pf_conf_node *n, void *field, struct pf_err *err);

#define OFF(f) offsetof(struct pf_cache_conf, f)

static const struct pf_conf_key cache_keys[] = {
    {"memory", PF_CONF_SIZE, OFF(memory), CACHE_MEMORY_LO, CACHE_MEMORY_HI, NULL},
    {"max_object_size", PF_CONF_SIZE, OFF(max_object_size), 1, CACHE_MEMORY_HI, NULL},
    {"default_ttl", PF_CONF_DURATION, OFF(default_ttl_ms), 0, 0, NULL},
    {"coalesce", PF_CONF_BOOL, OFF(coalesce), 0, 0, NULL},
    {"lock_timeout", PF_CONF_DURATION, OFF(lock_timeout_ms), 0, 0, NULL},
    {"stale_if_error", PF_CONF_DURATION, OFF(stale_if_error_ms), 0, 0, NULL},
    {"heuristic", PF_CONF_BOOL, OFF(heuristic), 0, 0, NULL},
    {"heuristic_max", PF_CONF_DURATION, OFF(heuristic_max_ms), 0, 0, NULL},
    {"targeted_header", PF_CONF_STRING, OFF(targeted_header), 0, 0, NULL},
    {"tag_header", PF_CONF_STRING, OFF(tag_header), 0, 0, NULL},
    {"purge_method", PF_CONF_BOOL, OFF(purge_method), 0, 0, NULL},
    {"debug_key", PF_CONF_BOOL, OFF(debug_key), 0, 0, NULL},
    /* both sub-maps fill fields of the whole struct: their field is the struct itself */
    {"key", PF_CONF_CUSTOM, 0, 0, 0, parse_key},
    {"redis", PF_CONF_CUSTOM, 0, 0, 0, parse_redis},
    {NULL, PF_CONF_INT, 0, 0, 0, NULL},
};

static const struct pf_conf_key cache_key_keys[] = {
    {"ignore_query", PF_CONF_STRLIST, OFF(ignore_query), 0, 0, NULL},
    {"include_headers", PF_CONF_STRLIST, OFF(include_headers), 0, 0, NULL},
    {NULL, PF_CONF_INT, 0, 0, 0, NULL},
};

static const struct pf_conf_key cache_redis_keys[] = {
    {"address", PF_CONF_STRLIST, OFF(redis_addresses), 0, 0, NULL},
    {"addresses", PF_CONF_STRLIST, OFF(redis_addresses), 0, 0, NULL},
    {"db", PF_CONF_UINT, OFF(redis_db), 0, 15, NULL},
    {"password", PF_CONF_STRING, OFF(redis_password), 0, 0, NULL},
    {"timeout", PF_CONF_DURATION, OFF(redis_timeout_ms), 1, 60000, NULL},
    {"key_prefix", PF_CONF_STRING, OFF(redis_key_prefix), 0, 0, NULL},
    {NULL, PF_CONF_INT, 0, 0, 0, NULL},
};

static int parse_key(const struct pf_conf_node *n, void *field, struct pf_err *err)
{
    if (pf_conf_is_null(n))
        return 0;
    if (n->type != PF_NODE_MAP) {
        pf_err_at(err, n, "cache.key: expected a map (ignore_query, include_headers)");
        return -EINVAL;
    }
    return pf_conf_fill_section(n, "cache.key", cache_key_keys, field, err);
}

/* host:port (port 1-65535) or unix:/path: what the L2 client can connect to. */
static bool redis_address_ok(const char *a)
{
    const char *colon = strrchr(a, ':');
    unsigned long port = 0;

    if (strncmp(a, "unix:/", 6) == 0)
        return a[6] != '\0';
    if (colon == NULL || colon == a || colon[1] == '\0')
        return false;
    for (const char *p = colon + 1; *p != '\0'; p++) {
        if (*p < '0' || *p > '9' || (port = port * 10 + (unsigned long)(*p - '0')) > 65535)
            return false;
    }
    return port > 0;
}

static int parse_redis(const struct pf_conf_node *n, void *field, struct pf_err *err)
{
    struct pf_cache_conf *c = field;

    if (pf_conf_is_null(n))
        return 0;
    if (n->type != PF_NODE_MAP) {
        pf_err_at(err, n, "cache.redis: expected a map (address or addresses, db, ...)");
        return -EINVAL;
    }
    if (pf_conf_get(n, "address") != NULL && pf_conf_get(n, "addresses") != NULL) {
        pf_err_at(err, pf_conf_get(n, "addresses"),
                  "cache.redis: give address or addresses, not both");
        return -EINVAL;
    }
    if (pf_conf_fill_section(n, "cache.redis", cache_redis_keys, field, err) != 0)
        return -EINVAL;
    if (c->redis_addresses.n == 0) {
        pf_err_at(err, n, "cache.redis: address (or addresses) is required");
        return -EINVAL;
    }
    for (unsigned i = 0; i < c->redis_addresses.n; i++) {
        if (!redis_address_ok(c->redis_addresses.v[i])) {
            pf_err_at(err, n, "cache.redis: '%s' is not host:port or unix:/path",
                      c->redis_addresses.v[i]);
            return -EINVAL;
        }
    }
    return 0;
}

/* Every name in include_headers must be a header name (tchar only). */
static int check_names(const struct pf_cache_conf *c, const struct pf_conf_node *n,
                       struct pf_err *err)
{
    const struct pf_conf_node *at = pf_conf_get(pf_conf_get(n, "key"), "include_headers");
    static const char tchar[] = "!#$%&'*+-.^_`|~";
    int rc = 0;

    for (unsigned i = 0; i < c->include_headers.n; i++) {
        const char *s = c->include_headers.v[i];

        for (const char *p = s; *p != '\0' || p == s; p++) {
            unsigned char ch = (unsigned char)*p;

            if (ch == '\0' || (!(ch >= '0' && ch <= '9') && !(ch >= 'a' && ch <= 'z') &&
                               !(ch >= 'A' && ch <= 'Z') && strchr(tchar, ch) == NULL)) {
                pf_err_at(err, at, "cache.key.include_headers: \"%s\" is not a header name", s);
                rc = -EINVAL;
                break;
            }
        }
    }
    return rc;
}

void pf_cache_conf_free(void *conf)
{
    struct pf_cache_conf *c = conf;

    if (c == NULL)
        return;
    pf_conf_fields_free(cache_keys, c);
    pf_conf_fields_free(cache_key_keys, c);
    pf_conf_fields_free(cache_redis_keys + 1, c); /* address and addresses share one list */
    free(c);
}

int pf_cache_conf_parse(const struct pf_conf_node *n, void **conf, struct pf_err *err)
{
    struct pf_cache_conf *c = pf_xcalloc(1, sizeof(*c));

    c->memory = CACHE_MEMORY;
    c->max_object_size = CACHE_OBJECT;
    c->coalesce = true;
    c->lock_timeout_ms = 5000;
    c->heuristic = true;
    c->heuristic_max_ms = CACHE_DAY_MS;
    c->targeted_header = pf_xstrdup("");
    c->tag_header = pf_xstrdup("Surrogate-Key");
    c->redis_password = pf_xstrdup("");
    c->redis_timeout_ms = 50;
    c->redis_key_prefix = pf_xstrdup("pilotfish:");
    if (pf_conf_fill(n, cache_keys, c, err) != 0 || check_names(c, n, err) != 0) {
        pf_cache_conf_free(c);
        return -EINVAL;
    }
    if (c->max_object_size > c->memory) {
        pf_err_at(err, pf_conf_get(n, "max_object_size"),
                  "cache.max_object_size: must not exceed memory");
        pf_cache_conf_free(c);
        return -EINVAL;
    }
    c->policy.default_ttl = (int64_t)(c->default_ttl_ms / 1000);
    c->policy.heuristic = c->heuristic;
    c->policy.heuristic_max = (int64_t)(c->heuristic_max_ms / 1000);
    c->policy.stale_if_error = (int64_t)(c->stale_if_error_ms / 1000);
    *conf = c;
    return 0;
}

/* ---- metrics ---- */

enum { C_SERVED_BYTES = PF_CACHE_N_RESULTS, C_L2_HIT, C_L2_MISS, C_COALESCED, C_L2_UNDO, C_N };

static const char *const result_names[PF_CACHE_N_RESULTS] = {
    "hit", "miss", "stale", "revalidated", "bypass",
};

static struct pf_counter_set counters = PF_COUNTER_SET(C_N);
static __thread _Atomic uint64_t *my_counters;

void pf_cache_count(enum pf_cache_result r, uint64_t bytes_served)
{
    if (my_counters == NULL)
        my_counters = pf_counter_cells(&counters);
    pf_counter_add(&my_counters[r], 1);
    if (bytes_served > 0)
        pf_counter_add(&my_counters[C_SERVED_BYTES], bytes_served);
}

void pf_cache_count_l2(bool hit)
{
    if (my_counters == NULL)
        my_counters = pf_counter_cells(&counters);
    pf_counter_add(&my_counters[hit ? C_L2_HIT : C_L2_MISS], 1);
}

void pf_cache_count_l2_undo(void)
{
    if (my_counters == NULL)
        my_counters = pf_counter_cells(&counters);
    pf_counter_add(&my_counters[C_L2_UNDO], 1);
}

void pf_cache_count_coalesced(void)
{
    if (my_counters == NULL)
        my_counters = pf_counter_cells(&counters);
    pf_counter_add(&my_counters[C_COALESCED], 1);
}

/* The Redis client's own counts and the time of its gets (l2.c's process-wide totals). */
static void redis_metrics(struct evbuffer *out)
{
    static const char *const name = "pilotfish_cache_redis_duration_seconds";
    struct pf_l2_totals t;
    uint64_t cum = 0;
    char le[32];

    pf_l2_totals(&t);
    pf_stats_put_one(out, "pilotfish_cache_redis_errors_total", "counter",
                     "Redis error replies, replies of the wrong type, commands lost with a "
                     "connection.",
                     t.errors);
    pf_stats_put_one(out, "pilotfish_cache_redis_timeouts_total", "counter",
                     "Redis lookups that got no reply within redis.timeout.", t.timeouts);
    pf_stats_put_one(out, "pilotfish_cache_redis_reconnects_total", "counter",
                     "Connections to a Redis server made again after one was lost.", t.reconnects);
    pf_stats_put_head(out, name, "histogram",
                      "Time of Redis lookups, from the command to its reply or timeout.");
    for (unsigned b = 0; b < PF_L2_BUCKETS; b++) {
        cum += t.buckets[b];
        snprintf(le, sizeof(le), "%g", pf_l2_bounds[b]);
        pf_stats_put_sample(out, "pilotfish_cache_redis_duration_seconds_bucket", "le", le, cum);
    }
    /* the cells are read one by one while workers count: keep the histogram monotonic */
    if (t.count < cum)
        t.count = cum;
    pf_stats_put_sample(out, "pilotfish_cache_redis_duration_seconds_bucket", "le", "+Inf",
                        t.count);
    evbuffer_add_printf(out, "%s_sum %llu.%06llu\n", name, (unsigned long long)(t.sum_us / 1000000),
                        (unsigned long long)(t.sum_us % 1000000));
    pf_stats_put_sample(out, "pilotfish_cache_redis_duration_seconds_count", NULL, NULL, t.count);
}

void pf_cache_metrics(const void *conf, void *pstate, struct evbuffer *out)
{
    struct pf_cstore_stats st = {0, 0, 0};

    (void)conf;
    if (pstate != NULL)
        pf_cstore_stats(pstate, &st);
    pf_stats_put_head(out, "pilotfish_cache_requests_total", "counter",
                      "Requests through the cache filter, by result.");
    for (unsigned i = 0; i < PF_CACHE_N_RESULTS; i++)
        pf_stats_put_sample(out, "pilotfish_cache_requests_total", "result", result_names[i],
                            pf_counter_sum(&counters, i));
    pf_stats_put_one(out, "pilotfish_cache_served_bytes_total", "counter",
                     "Response body bytes served from the cache (upstream bytes saved).",
                     pf_counter_sum(&counters, C_SERVED_BYTES));
    pf_stats_put_head(out, "pilotfish_cache_redis_lookups_total", "counter",
                      "Lookups in the Redis tier after a memory miss, by result.");
    pf_stats_put_sample(out, "pilotfish_cache_redis_lookups_total", "result", "hit",
                        pf_counter_sum(&counters, C_L2_HIT));
    pf_stats_put_sample(out, "pilotfish_cache_redis_lookups_total", "result", "miss",
                        pf_counter_sum(&counters, C_L2_MISS));
    redis_metrics(out);
    pf_stats_put_one(out, "pilotfish_cache_redis_undone_writes_total", "counter",
                     "Writes to Redis of a fetch that a purge overtook, deleted again.",
                     pf_counter_sum(&counters, C_L2_UNDO));
    pf_stats_put_one(out, "pilotfish_cache_coalesced_total", "counter",
                     "Requests that waited for another request's fetch of the same key.",
                     pf_counter_sum(&counters, C_COALESCED));
    pf_cache_refresh_metrics(out);
    pf_stats_put_one(out, "pilotfish_cache_bytes", "gauge",
                     "Bytes charged in the memory cache (keys, headers, bodies, bookkeeping).",
                     st.bytes);
    pf_stats_put_one(out, "pilotfish_cache_objects", "gauge", "Objects in the memory cache.",
                     st.objects);
    pf_stats_put_one(out, "pilotfish_cache_evictions_total", "counter",
                     "Objects evicted from the memory cache to make room.", st.evictions);
}

/* ---- Range (a hit answers one byte range with a 206) ---- */

static bool digit(char c)
{
    return c >= '0' && c <= '9';
}

enum pf_cache_range pf_cache_parse_range(const char *v, size_t len, size_t *from, size_t *n)
{
    unsigned long long a, b;
    char *end;

    if (strncasecmp(v, "bytes=", 6) != 0 || strchr(v, ',') != NULL)
        return PF_RANGE_NONE;
    v += 6;
    if (v[0] == '-') { /* the last N bytes */
        if (!digit(v[1]) || (b = strtoull(v + 1, &end, 10), *end != '\0'))
            return PF_RANGE_NONE;
        if (b == 0 || len == 0)
            return PF_RANGE_UNSATISFIABLE;
        *n = b > len ? len : (size_t)b;
        *from = len - *n;
        return PF_RANGE_OK;
    }
    if (!digit(v[0]) || (a = strtoull(v, &end, 10), *end != '-'))
        return PF_RANGE_NONE;
    v = end + 1;
    b = UINT64_MAX;
    if (*v != '\0' && (!digit(*v) || (b = strtoull(v, &end, 10), *end != '\0') || b < a))
        return PF_RANGE_NONE;
    if (a >= len)
        return PF_RANGE_UNSATISFIABLE;
    if (b >= len)
        b = len - 1;
    *from = (size_t)a;
    *n = (size_t)(b - a + 1);
    return PF_RANGE_OK;
}

/* ---- Cache-Status key= ---- */

/* Append s to out as the inside of an sf-string: \\ and \" escaped, bytes outside 0x20-0x7e
 * (the newline between a key and its variant) as %XX, since an sf-string cannot hold them. */
size_t pf_cache_sf_escape(char *out, const char *s)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t n = 0;

    for (; *s != '\0'; s++) {
        unsigned char ch = (unsigned char)*s;

        if (ch == '"' || ch == '\\') {
            out[n++] = '\\';
            out[n++] = (char)ch;
        } else if (ch < 0x20 || ch > 0x7e) {
            out[n++] = '%';
            out[n++] = hex[ch >> 4];
            out[n++] = hex[ch & 15];
        } else {
            out[n++] = (char)ch;
        }
    }
    return n;
}

/* ---- keys of URLs, purge ---- */

static void l2_purge(const struct pf_cache_conf *c, const char *what, const char *key);
static void l2_publish(const struct pf_cache_conf *c, char op, const char *arg);

/*
 * The key of url; with normalize, its path normalised the way a route normalises a request's
 * (percent-encoding, dot segments: the path a normalize_path: forward route keys on).
 */
static size_t url_key(const struct pf_cache_conf *c, const char *url, const char *host,
                      bool normalize, char *out, size_t size)
{
    const char *scheme = "http";
    const char *p = url;
    const char *slash;
    char h[256];
    char t[CACHE_KEY_MAX];
    size_t plen;
    ssize_t n;

    if (strncasecmp(p, "http://", 7) == 0 || strncasecmp(p, "https://", 8) == 0) {
        scheme = p[4] == ':' ? "http" : "https";
        p += p[4] == ':' ? 7 : 8;
        slash = p + strcspn(p, "/?#");
        if (slash == p || (size_t)(slash - p) >= sizeof(h))
            return 0;
        memcpy(h, p, (size_t)(slash - p));
        h[slash - p] = '\0';
        host = h;
        p = *slash == '/' ? slash : "/";
        if (*slash == '?')
            return 0;
    } else if (p[0] != '/' || host == NULL) {
        return 0;
    }
    plen = strcspn(p, "?#");
    if (normalize && plen + 2 <= sizeof(t)) {
        n = pf_route_normalize(p, plen, t);
        if (n < 0 || (size_t)n + strlen(p + plen) + 1 > sizeof(t))
            return 0;
        memcpy(t + n, p + plen, strlen(p + plen) + 1);
        p = t;
    }
    return pf_cache_key(scheme, host, p, (const char *const *)c->ignore_query.v, c->ignore_query.n,
                        out, size);
}

size_t pf_cache_url_key(const struct pf_cache_conf *c, const char *url, const char *host, char *out,
                        size_t size)
{
    return url_key(c, url, host, true, out, size);
}

static size_t mem_purge(struct pf_cstore *st, char op, const char *arg)
{
    if (op == PF_BUS_TAG)
        return pf_cstore_purge_tag(st, arg);
    return op == PF_BUS_PREFIX ? pf_cstore_purge_prefix(st, arg) : pf_cstore_purge_key(st, arg);
}

/*
 * Purge arg (op, as on the bus) from memory, from Redis (what, rarg: l2_purge) and from memory
 * again, then tell the other processes. Memory first: its generation moves before Redis is
 * asked, so a fetch's write to Redis that lands after these deletes is deleted again once its
 * reply is in (cache_l2.c); and again after, for what a lookup copied back from Redis in between.
 * The count of the first.
 */
static size_t purge_both(const struct pf_cache_conf *c, struct pf_cstore *st, char op,
                         const char *arg, const char *what, const char *rarg)
{
    size_t n = mem_purge(st, op, arg);

    if (c->redis_addresses.n > 0) {
        l2_purge(c, what, rarg);
        mem_purge(st, op, arg);
    }
    l2_publish(c, op, arg);
    return n;
}

/* Purge one URL key (every variant, and every include_headers value) from both tiers. */
static size_t purge_url(const struct pf_cache_conf *c, struct pf_cstore *st, const char *key,
                        size_t len)
{
    char all[CACHE_KEY_MAX + 1];

    /* L2 keys are key, newline, variant: every variant of the URL */
    memcpy(all, key, len);
    all[len] = '\n';
    all[len + 1] = '\0';
    /* with include_headers the stored keys are the URL's, a newline and the values of those
     * headers: every one of them, whatever the values, is this URL */
    if (c->include_headers.n > 0)
        return purge_both(c, st, PF_BUS_PREFIX, all, "url", all);
    return purge_both(c, st, PF_BUS_KEY, key, "url", all);
}

size_t pf_cache_purge(const struct pf_cache_conf *c, struct pf_cstore *st, const char *what,
                      const char *value)
{
    char key[CACHE_KEY_MAX], raw[CACHE_KEY_MAX];
    size_t len, rlen, n;

    if (strcmp(what, "tag") == 0)
        return purge_both(c, st, PF_BUS_TAG, value, what, value);
    len = url_key(c, value, NULL, true, key, sizeof(key) - 1);
    rlen = url_key(c, value, NULL, false, raw, sizeof(raw) - 1);
    if (len == 0 && rlen == 0)
        return 0;
    if (len == 0 || (rlen > 0 && strcmp(key, raw) == 0)) {
        memcpy(key, raw, rlen + 1); /* refused by the normalisation, or the same */
        len = rlen;
        rlen = 0;
    }
    if (strcmp(what, "prefix") == 0) {
        n = purge_both(c, st, PF_BUS_PREFIX, key, what, key);
        return rlen > 0 ? n + purge_both(c, st, PF_BUS_PREFIX, raw, what, raw) : n;
    }
    /* the normalised URL (what a forward route keys on), and the URL as written (a match_only
     * route keys on the target as received) */
    n = purge_url(c, st, key, len);
    return rlen > 0 ? n + purge_url(c, st, raw, rlen) : n;
}

/* ---- purge in the Redis tier, from the admin thread (blocking, bounded by redis.timeout) ---- */

#define L2_SERVERS_MAX 64

static redisContext *l2_connect(const struct pf_cache_conf *c, const char *addr)
{
    struct timeval tv = {(time_t)(c->redis_timeout_ms / 1000),
                         (suseconds_t)(c->redis_timeout_ms % 1000) * 1000};
    const char *colon = strrchr(addr, ':');
    char host[256];
    redisContext *rc;
    redisReply *r;

    if (strncmp(addr, "unix:", 5) == 0) {
        rc = redisConnectUnixWithTimeout(addr + 5, tv);
    } else {
        snprintf(host, sizeof(host), "%.*s",
                 colon != NULL ? (int)(colon - addr) : (int)strlen(addr), addr);
        rc = redisConnectWithTimeout(host, colon != NULL ? atoi(colon + 1) : 6379, tv);
    }
    if (rc == NULL || rc->err != 0 || redisSetTimeout(rc, tv) != REDIS_OK)
        goto fail;
    if (c->redis_password[0] != '\0') {
        r = redisCommand(rc, "AUTH %s", c->redis_password);
        if (r == NULL || r->type == REDIS_REPLY_ERROR)
            goto fail_reply;
        freeReplyObject(r);
    }
    r = redisCommand(rc, "SELECT %u", c->redis_db);
    if (r == NULL || r->type == REDIS_REPLY_ERROR)
        goto fail_reply;
    freeReplyObject(r);
    return rc;
fail_reply:
    if (r != NULL)
        freeReplyObject(r);
fail:
    if (rc != NULL)
        redisFree(rc);
    return NULL;
}

static void l2_del(redisContext *rc, const struct pf_cache_conf *c, const char *key, size_t len)
{
    redisReply *r = redisCommand(rc, "DEL %s%b", c->redis_key_prefix, key, len);

    if (r != NULL)
        freeReplyObject(r);
}

/* SCAN one server for prefix + glob-escaped p + "*", deleting what matches. */
static void l2_scan_del(redisContext *rc, const struct pf_cache_conf *c, const char *p)
{
    char pattern[CACHE_KEY_MAX * 2 + 512];
    char cursor[32] = "0";
    size_t n = 0;
    redisReply *r;

    for (const char *parts[2] = {c->redis_key_prefix, p}, **q = parts; q < parts + 2; q++) {
        for (const char *ch = *q; *ch != '\0' && n + 3 < sizeof(pattern); ch++) {
            if (strchr("*?[]\\", *ch) != NULL)
                pattern[n++] = '\\';
            pattern[n++] = *ch;
        }
    }
    pattern[n++] = '*';
    pattern[n] = '\0';
    do {
        r = redisCommand(rc, "SCAN %s MATCH %s COUNT 1000", cursor, pattern);
        if (r == NULL || r->type != REDIS_REPLY_ARRAY || r->elements != 2 ||
            r->element[0]->type != REDIS_REPLY_STRING) {
            if (r != NULL)
                freeReplyObject(r);
            return;
        }
        snprintf(cursor, sizeof(cursor), "%s", r->element[0]->str);
        for (size_t i = 0; i < r->element[1]->elements; i++) {
            redisReply *k = r->element[1]->element[i];
            redisReply *d = redisCommand(rc, "DEL %b", k->str, (size_t)k->len);

            if (d != NULL)
                freeReplyObject(d);
        }
        freeReplyObject(r);
    } while (strcmp(cursor, "0") != 0);
}

/* A tag's set lives on one server; its members on theirs (rendezvous hashing, as l2.c). */
static void l2_purge_tag(redisContext **rc, const struct pf_cache_conf *c, const char *tag)
{
    const char *const *addrs = (const char *const *)c->redis_addresses.v;
    unsigned n = c->redis_addresses.n;
    char where[512];
    redisContext *home;
    redisReply *r;

    snprintf(where, sizeof(where), "tag:%s", tag);
    home = rc[pf_l2_pick_among(where, addrs, n)];
    if (home == NULL)
        return;
    r = redisCommand(home, "SMEMBERS %stag:%s", c->redis_key_prefix, tag);
    for (size_t i = 0; r != NULL && r->type == REDIS_REPLY_ARRAY && i < r->elements; i++) {
        redisContext *at = rc[pf_l2_pick_among(r->element[i]->str, addrs, n)];

        if (at != NULL && r->element[i]->type == REDIS_REPLY_STRING)
            l2_del(at, c, r->element[i]->str, (size_t)r->element[i]->len);
    }
    if (r != NULL)
        freeReplyObject(r);
    r = redisCommand(home, "DEL %stag:%s", c->redis_key_prefix, tag);
    if (r != NULL)
        freeReplyObject(r);
}

/*
 * Tell the other processes sharing the Redis tier (purge.c's bus): PUBLISH on the server that
 * holds the channel. Redis down: only this process's memory is purged.
 */
static void l2_publish(const struct pf_cache_conf *c, char op, const char *arg)
{
    char msg[CACHE_KEY_MAX + 64];
    size_t len;
    redisContext *rc;
    redisReply *r;

    if (c->redis_addresses.n == 0 || (len = pf_cache_bus_message(op, arg, msg, sizeof(msg))) == 0)
        return;
    rc = l2_connect(
        c, c->redis_addresses.v[pf_l2_pick_among(
               PF_BUS_CHANNEL, (const char *const *)c->redis_addresses.v, c->redis_addresses.n)]);
    if (rc == NULL)
        return;
    r = redisCommand(rc, "PUBLISH %s" PF_BUS_CHANNEL " %b", c->redis_key_prefix, msg, len);
    if (r != NULL)
        freeReplyObject(r);
    redisFree(rc);
}

/* Purge in every Redis server; a server that cannot be reached is skipped. */
static void l2_purge(const struct pf_cache_conf *c, const char *what, const char *key)
{
    redisContext *rc[L2_SERVERS_MAX] = {NULL};
    unsigned n = c->redis_addresses.n < L2_SERVERS_MAX ? c->redis_addresses.n : L2_SERVERS_MAX;

    for (unsigned i = 0; i < n; i++)
        rc[i] = l2_connect(c, c->redis_addresses.v[i]);
    for (unsigned i = 0; i < n && strcmp(what, "tag") != 0; i++) {
        if (rc[i] != NULL)
            l2_scan_del(rc[i], c, key);
    }
    if (strcmp(what, "tag") == 0)
        l2_purge_tag(rc, c, key);
    for (unsigned i = 0; i < n; i++) {
        if (rc[i] != NULL)
            redisFree(rc[i]);
    }
}

/* POST /cache/purge {"url": ...} | {"prefix": ...} | {"tag": ...} (JSON is YAML). */
int pf_cache_admin(const void *conf, void *pstate, const char *path, const char *body, size_t len,
                   struct evbuffer *out)
{
    static const char *const kinds[] = {"url", "prefix", "tag"};
    struct pf_conf_node *root = NULL;
    const struct pf_conf_node *v = NULL;
    struct pf_err err;
    const char *kind = NULL;
    size_t n;

    if (strcmp(path, "/cache/purge") != 0)
        return 0;
    if (conf == NULL || pstate == NULL) {
        evbuffer_add_printf(out,
                            "{\"error\":\"not_found\",\"detail\":\"no route uses the cache\"}\n");
        return 404;
    }
    pf_err_init(&err, "body");
    if (pf_conf_node_parse(body, len, &root, &err) == 0 && err.n == 0 && root != NULL &&
        root->type == PF_NODE_MAP && root->n_items == 1) {
        for (unsigned i = 0; i < 3 && v == NULL; i++) {
            v = pf_conf_get(root, kinds[i]);
            kind = kinds[i];
        }
    }
    pf_err_fini(&err);
    if (v == NULL || v->type != PF_NODE_SCALAR || v->value[0] == '\0' ||
        (strcmp(kind, "tag") != 0 && strncasecmp(v->value, "http://", 7) != 0 &&
         strncasecmp(v->value, "https://", 8) != 0)) {
        pf_conf_node_free(root);
        evbuffer_add_printf(out, "{\"error\":\"bad_request\",\"detail\":\"expected {\\\"url\\\": "
                                 "\\\"http://host/path\\\"}, {\\\"prefix\\\": ...} or "
                                 "{\\\"tag\\\": ...}\"}\n");
        return 400;
    }
    n = pf_cache_purge(conf, pstate, kind, v->value);
    pf_conf_node_free(root);
    evbuffer_add_printf(out, "{\"purged\":%zu}\n", n);
    return 200;
}
