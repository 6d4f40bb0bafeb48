/*
 * Configuration: YAML -> one immutable, reference-counted struct pf_config.
 *
 * pf_conf_load() reads the file with libyaml into a node tree that keeps
 * line/column marks, substitutes ${VAR} and ${VAR:-default} in scalars, then
 * fills the typed structs below from key tables (pf_conf_fill). Unknown keys
 * are errors. Every error is collected in struct pf_err as
 * "FILE:LINE:COL: message" (1-based line and column), so one pass reports all
 * of them. Loading runs on the main thread; a loaded snapshot is read-only and
 * shared by every worker until its last reference is dropped.
 */
#ifndef PF_CONF_H
#define PF_CONF_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/socket.h>

#include "proxy/upstream/breaker-t.h"
#include "proxy/slo.h"

struct evbuffer;
struct pf_filter_ops;
struct pf_conf_node;

/* ---- errors ---- */

struct pf_err {
    char **msgs;      /* "FILE:LINE:COL: message", pf_xmalloc'd */
    unsigned n;       /* number of messages */
    unsigned cap;     /* allocated slots */
    const char *file; /* file name used as prefix (not owned) */
};

void pf_err_init(struct pf_err *err, const char *file);
void pf_err_fini(struct pf_err *err);
/* Add an error at node n's mark (n may be NULL: no line/column). */
void pf_err_at(struct pf_err *err, const struct pf_conf_node *n, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Order the messages by line and column, keeping the order of equal marks. */
void pf_err_sort(struct pf_err *err);
/* Print every message of err to f, one per line (pilotfish -t). */
void pf_conf_print_errors(const struct pf_err *err, FILE *f);

/* ---- the YAML node tree ---- */

enum pf_node_type {
    PF_NODE_SCALAR = 0,
    PF_NODE_MAP,
    PF_NODE_SEQ,
};

struct pf_conf_node {
    enum pf_node_type type;
    unsigned line;                       /* 1-based */
    unsigned col;                        /* 1-based */
    char *value;                         /* scalar after ${VAR} substitution; NULL otherwise */
    bool quoted;                         /* scalar was quoted in the file */
    char *key;                           /* this node's key when it is a map value */
    const struct pf_conf_node *key_node; /* the key scalar (for its mark) */
    struct pf_conf_node **items;         /* map values (in file order) or sequence items */
    unsigned n_items;
};

/* Value of key in map n (NULL when n is NULL, not a map, or has no such key). */
const struct pf_conf_node *pf_conf_get(const struct pf_conf_node *n, const char *key);

/* True when n is an unquoted empty, "~" or "null" scalar (`key:` with no value). */
bool pf_conf_is_null(const struct pf_conf_node *n);

/*
 * Parse YAML text into a node tree. Returns 0 with *root set (NULL for an
 * empty document), or -EINVAL when the text is not YAML (syntax errors,
 * several documents). Errors that do not stop parsing (duplicate keys,
 * anchors or aliases, ${VAR} problems) are added to err and the tree is still
 * returned: callers check err->n. ${VAR} is substituted in keys and values;
 * "$${" stands for a literal "${". Free with pf_conf_node_free(). Main thread.
 */
int pf_conf_node_parse(const char *yaml, size_t len, struct pf_conf_node **root,
                       struct pf_err *err);
/* Free a tree from pf_conf_node_parse(); NULL is a no-op. */
void pf_conf_node_free(struct pf_conf_node *n);

/*
 * Append n as JSON: maps and lists as such, unquoted numbers and true/false
 * as JSON values, every other scalar as a string. The value of any key named
 * "password" or "token" is written "<redacted>" unless it is empty.
 */
void pf_conf_node_to_json(const struct pf_conf_node *n, struct evbuffer *out);

/* "250ms", "5s", "2m", "1h" (the largest unit dividing ms; "0s" for 0). */
void pf_conf_format_duration(uint64_t ms, char *buf, size_t size);

/* Scalar parsers: 0 on success, -EINVAL when s is not of that form. */
int pf_parse_duration_ms(const char *s, uint64_t *ms); /* 250ms 5s 2m 1h (bare number = s) */
int pf_parse_size(const char *s, uint64_t *bytes);     /* 512 64KiB 1MiB 1GiB (and KB/MB/k/m) */
int pf_parse_percent(const char *s, double *ratio);    /* "20%" -> 0.2 */
int pf_parse_bool(const char *s, bool *b);             /* true/false/yes/no/on/off */

/* ---- key tables (filters use these for their own sections) ---- */

enum pf_conf_kind {
    PF_CONF_INT = 0,  /* int64_t field, bounds min..max */
    PF_CONF_UINT,     /* unsigned field, bounds min..max */
    PF_CONF_BOOL,     /* bool field */
    PF_CONF_DURATION, /* uint64_t milliseconds, bounds in ms */
    PF_CONF_SIZE,     /* uint64_t bytes, bounds in bytes */
    PF_CONF_PERCENT,  /* double 0..1 */
    PF_CONF_DOUBLE,   /* double, bounds min..max */
    PF_CONF_STRING,   /* char * (pf_xstrdup'd; freed by pf_conf_fields_free) */
    PF_CONF_STRLIST,  /* struct pf_strlist (scalar or sequence of scalars) */
    PF_CONF_CUSTOM,   /* parse(n, field_ptr, err) */
};

struct pf_strlist {
    char **v;   /* pf_xstrdup'd strings */
    unsigned n; /* count */
};

struct pf_conf_key {
    const char *name;
    enum pf_conf_kind kind;
    size_t offset; /* offsetof(struct, field) */
    double min;    /* bounds for numbers (min == max == 0: none) */
    double max;
    int (*parse)(const struct pf_conf_node *n, void *field, struct pf_err *err);
};

/* Edit distance of a and b (optimal string alignment), for "did you mean". */
unsigned pf_conf_distance(const char *a, const char *b);

/* out = " (did you mean 'KEY'?)" with the key of keys closest to word, or "" when none is close. */
void pf_conf_hint(const char *word, const struct pf_conf_key *keys, char *out, size_t size);

/*
 * Fill dst from map n with keys (terminated by a {NULL} entry). Absent keys
 * leave dst untouched (set defaults first). Unknown keys, wrong types and
 * out-of-bound values are reported in err. n may be NULL (nothing to do).
 * Returns 0 when no error was added, -EINVAL otherwise.
 * A STRING or STRLIST field that is set frees its previous value, so their
 * defaults must be NULL / empty or pf_xstrdup'd, never string literals.
 * Messages name the section after n's own key ("unknown key 'x' in gzip").
 */
int pf_conf_fill(const struct pf_conf_node *n, const struct pf_conf_key *keys, void *dst,
                 struct pf_err *err);
/* Same, naming the section in messages ("upstreams.app.pool"; NULL = top level). */
int pf_conf_fill_section(const struct pf_conf_node *n, const char *section,
                         const struct pf_conf_key *keys, void *dst, struct pf_err *err);
/* Free the STRING and STRLIST fields of dst described by keys. */
void pf_conf_fields_free(const struct pf_conf_key *keys, void *dst);

/* ---- the configuration ---- */

struct pf_addr {
    char *text;                 /* as written: "127.0.0.1:3000", "unix:/run/a.sock" */
    struct sockaddr_storage ss; /* resolved address (host names resolved at load) */
    socklen_t len;              /* length of ss in use */
};

/*
 * "host:port", "[v6]:port", ":port", "port", "unix:/path" -> addr (text is
 * pf_xstrdup'd; the caller frees it). ":port" and "port" mean 0.0.0.0. Host
 * names other than numeric IPs go through getaddrinfo(), first IPv4 result
 * preferred, else the first IPv6 one. Returns 0, -EINVAL when s is malformed
 * or -ENOENT when the host name does not resolve (addr untouched on error).
 */
int pf_addr_parse(const char *s, struct pf_addr *addr);

/*
 * Names of the choices of balance, normalize_path and underscores_in_headers,
 * by enum value (proxy/conf.c, for the parser and /config). After the last
 * choice: NULL (balance), or all of them in one string for error messages.
 */
extern const char *const pf_conf_balance_names[];
extern const char *const pf_conf_normalize_names[];
extern const char *const pf_conf_underscores_names[];

/* Configuration parsing only (proxy/conf_addr.c), main thread: */
/* Parse scalar n into a; errors name what ("listen", "upstreams.app.endpoints"). */
int pf_conf_addr(const struct pf_conf_node *n, struct pf_addr *a, const char *what,
                 struct pf_err *err);
/* A scalar or a non-empty list of addresses, each listed once, into *out (replaced). */
void pf_conf_addr_list(const struct pf_conf_node *n, const char *what, struct pf_addr **out,
                       unsigned *count, struct pf_err *err);
/*
 * Parsing a list into v: keep v[*k] (*k grows) unless an earlier v[0..*k)
 * has its text; then report "listed twice" at n and free its text.
 */
void pf_conf_addr_keep_unique(const struct pf_conf_node *n, const char *what, struct pf_addr *v,
                              unsigned *k, struct pf_err *err);
/* Free n addresses and their array. */
void pf_addr_list_free(struct pf_addr *a, unsigned n);
/* The items of a list, or the scalar n itself as a list of one. */
unsigned pf_conf_node_items(const struct pf_conf_node *const *n,
                            const struct pf_conf_node *const **items);

enum pf_balance {
    PF_BALANCE_ROUND_ROBIN = 0,
    PF_BALANCE_LEAST_REQUEST,
    PF_BALANCE_RANDOM,
    PF_BALANCE_RING_HASH,
};

struct pf_pool_conf {
    unsigned max_idle;        /* idle connections kept per endpoint and worker (64) */
    uint64_t idle_timeout_ms; /* 60s */
    uint64_t max_lifetime_ms; /* 1h */
};

/* `retries:` of an upstream (parsed by pf_retry_conf_parse, proxy/upstream/retry.c). */
struct pf_retry_conf {
    unsigned attempts;           /* retries after the first try (1); 0 = none */
    unsigned on;                 /* PF_RETRY_ON_* bits (connect_failure, reset, 502, 503) */
    uint64_t statuses[4];        /* bit s - 400 for each status 400..599 in `on` */
    uint64_t per_try_timeout_ms; /* 0s: request_timeout alone bounds each try */
    double budget;               /* 20%: retries in flight <= budget * active requests ... */
    unsigned min_per_second;     /* 10: ... plus this many per second, always */
    uint64_t backoff_ms;         /* 25ms: base of the jittered exponential backoff */
    uint64_t max_buffered_body;  /* 64KiB: bodies kept for a retry up to this; 0 = none */
};

struct pf_retry_state;         /* per upstream, shared by workers and snapshots (retry.c) */
#define PF_HEALTH_MAX_EXPECT 8 /* status ranges in health_check.expect */

/* upstreams.NAME.health_check (parsed by proxy/upstream/health.c). */
struct pf_health_conf {
    bool enabled;                 /* the section is present */
    bool panic;                   /* true: all unhealthy -> spread over all */
    char *path;                   /* "/health" */
    char *host;                   /* Host of the probe; NULL: the endpoint's address */
    uint64_t interval_ms;         /* 5s (jittered) */
    uint64_t timeout_ms;          /* 1s */
    unsigned healthy_threshold;   /* 2 passes in a row: healthy again */
    unsigned unhealthy_threshold; /* 3 failures in a row: unhealthy */
    unsigned n_expect;            /* "200-399" */
    uint16_t expect_lo[PF_HEALTH_MAX_EXPECT];
    uint16_t expect_hi[PF_HEALTH_MAX_EXPECT];
};

/* A point of a ring_hash upstream's ring (proxy/upstream/balancer.c). */
struct pf_ring_point {
    uint64_t hash;
    unsigned index; /* into endpoints */
};

struct pf_upstream_conf {
    char *name;
    struct pf_addr *endpoints;
    unsigned *weights; /* per endpoint: {address, weight}, 1 by default */
    unsigned n_endpoints;
    unsigned *endpoint_ids; /* from pf_upstream_bind(), not conf.c; freed with the snapshot */
    enum pf_balance balance;
    uint64_t connect_timeout_ms; /* 1s */
    uint64_t request_timeout_ms; /* 30s: until the response head arrives */
    struct pf_pool_conf pool;
    struct pf_retry_conf retry;
    struct pf_retry_state *rstate;  /* from pf_snapshot_bind(), not conf.c */
    struct pf_breaker_conf breaker; /* circuit_breaker (proxy/upstream/breaker.c) */
    char *hash_header;              /* ring_hash: hash_on header:NAME; NULL = client_ip */
    uint64_t slow_start_ms;         /* 0: a recovered endpoint gets its whole weight at once */
    struct pf_ring_point *ring;     /* ring_hash: points sorted by hash; NULL otherwise */
    unsigned n_ring;
    struct pf_health_conf health; /* health_check */
};

struct pf_filter_inst {
    const struct pf_filter_ops *ops; /* from filters/registry.c */
    void *conf;                      /* ops->conf_parse() result */
    void *pstate;                    /* ops->init_process() result (proxy/snapshot.c) */
    atomic_uint *pstate_refs;        /* atomic: snapshots sharing pstate; NULL = none */
};

/* routes[].normalize_path: what the upstream gets when the path was normalised */
enum pf_normalize_path {
    PF_NORMALIZE_FORWARD = 0, /* the normalised path (the default) */
    PF_NORMALIZE_MATCH_ONLY,  /* the target as received */
};

struct pf_route {
    char *name;   /* "route-N" unless given with `name:` */
    char *prefix; /* "/" by default */
    size_t prefix_len;
    bool case_insensitive;            /* match.case_insensitive: prefix compared ignoring case */
    enum pf_normalize_path normalize; /* normalize_path */
    char *host;                       /* NULL = any; compared case-insensitively, port ignored */
    struct pf_strlist methods;        /* empty = any */
    unsigned upstream;                /* index into pf_config.upstreams */
    unsigned *filters;                /* indexes into pf_config.filters, in listed order */
    unsigned n_filters;
    struct pf_slo_conf slo; /* slo: (proxy/slo.h); zero when none */
};

#define PF_METRICS_MAX_BUCKETS 64

/* `metrics:` (parsed by pf_stats_conf_parse in proxy/stats.c). */
struct pf_metrics_conf {
    double buckets[PF_METRICS_MAX_BUCKETS]; /* histogram upper bounds, seconds, increasing */
    unsigned n_buckets;                     /* 0 = the defaults, 0.5 ms .. 10 s */
};

struct pf_limits {
    unsigned max_connections;   /* 10000 */
    uint64_t max_header_size;   /* 32KiB: request line + headers -> 431 */
    unsigned max_headers;       /* 100 -> 431 */
    uint64_t max_uri_size;      /* 8KiB -> 414 */
    uint64_t max_body_size;     /* 0 = unlimited -> 413 */
    uint64_t header_timeout_ms; /* 10s -> 408 */
    uint64_t idle_timeout_ms;   /* 60s */
    unsigned backlog;           /* 1024: listen() backlog, capped by net.core.somaxconn */
    uint64_t body_timeout_ms;   /* 60s: a whole request body -> 408 */
    uint64_t request_buffering; /* 64KiB: bodies up to this are read before connecting; 0 = off */
};

/*
 * `splice:` which bodies move socket -> pipe -> socket with splice(2)
 * (proxy/upstream/upsplice.c). Read per transaction from its snapshot.
 */
struct pf_splice_conf {
    bool requests;              /* true: request bodies that stream upstream */
    uint64_t min_request_size;  /* 1MiB: smaller Content-Length request bodies are copied */
    bool responses;             /* false: response bodies no filter reads */
    uint64_t min_response_size; /* 64KiB: smaller Content-Length response bodies are copied */
};

/* underscores_in_headers: request header names with '_' */
enum pf_underscores {
    PF_UNDERSCORES_DROP = 0, /* removed before forwarding (the default) */
    PF_UNDERSCORES_ALLOW,    /* forwarded, unless they would read as a header pilotfish handles */
    PF_UNDERSCORES_REJECT,   /* 400 */
};

struct pf_config {
    atomic_uint refs;       /* atomic: snapshot holders */
    char *path;             /* file it was loaded from */
    struct pf_addr *listen; /* default one: 0.0.0.0:8080 */
    unsigned n_listen;
    unsigned workers;             /* 0 = auto */
    struct pf_addr admin_listen;  /* 127.0.0.1:9901; text "off" disables */
    char *admin_token;            /* "" = none */
    struct pf_addr probes_listen; /* read-only /live /ready /health /metrics; len 0 = off */
    struct pf_limits limits;
    uint64_t drain_delay_ms;         /* 0 */
    uint64_t drain_timeout_ms;       /* 15s */
    char *access_log_path;           /* stdout|stderr|off|FILE */
    char *access_log_format;         /* "json" */
    int log_level;                   /* enum pf_log_level, info */
    enum pf_underscores underscores; /* underscores_in_headers: drop */
    struct pf_splice_conf splice;    /* splice */
    struct pf_upstream_conf *upstreams;
    unsigned n_upstreams;
    struct pf_route *routes; /* default: one route "/" to the only upstream */
    unsigned n_routes;
    struct pf_filter_inst *filters; /* every filter some route uses, one instance each */
    unsigned n_filters;
    struct pf_conf_node *root; /* the node tree, kept for /config */
    /* metrics: the histogram buckets; fixed at startup (see proxy/stats.h) */
    struct pf_metrics_conf metrics;
    /* releases what the snapshot holds outside itself (proxy/snapshot.c), or NULL */
    void (*release)(struct pf_config *cfg);
};

/*
 * Load and validate path. On success returns a snapshot with refs == 1; on
 * failure returns NULL with every problem in err. Main thread.
 */
struct pf_config *pf_conf_load(const char *path, struct pf_err *err);

/* Same from a string (tests); name is used in error messages. */
struct pf_config *pf_conf_load_string(const char *yaml, const char *name, struct pf_err *err);

/* Take / drop a reference; the last drop frees everything. Any thread. */
struct pf_config *pf_conf_ref(struct pf_config *cfg);
void pf_conf_unref(struct pf_config *cfg);

/* Index of the upstream named name, or -1. */
int pf_conf_upstream_index(const struct pf_config *cfg, const char *name);

/* The effective configuration as JSON, secrets ("token", "password") redacted. */
void pf_conf_to_json(const struct pf_config *cfg, struct evbuffer *out);

#endif /* PF_CONF_H */
