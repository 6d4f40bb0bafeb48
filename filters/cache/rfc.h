/*
 * HTTP caching decisions of RFC 9111 (and 9110, 9211, 9213) as pure
 * functions: no I/O, no store, no clock of their own (every "now" is passed
 * in, in seconds since the epoch). The cache filter (filters/cache/cache.c)
 * asks these; the unit tests (tests/unit/test_cache_rfc.c) pin them down.
 *
 * Header values are passed as arrays of the field lines as received (a
 * header may appear several times); names are matched case-insensitively.
 */
#ifndef PF_CACHE_RFC_H
#define PF_CACHE_RFC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define PF_CC_ABSENT INT64_C(-1) /* a delta-seconds directive that is not there */
#define PF_CC_ANY    INT64_MAX   /* max-stale without a value: any staleness */

/* Cache-Control of a request or a response, parsed (RFC 9111 §5.2). */
struct pf_cc {
    int64_t max_age;       /* PF_CC_ABSENT when absent or invalid */
    int64_t s_maxage;      /* response */
    int64_t max_stale;     /* request; PF_CC_ANY without a value */
    int64_t min_fresh;     /* request */
    int64_t swr;           /* stale-while-revalidate (RFC 5861) */
    int64_t sie;           /* stale-if-error (RFC 5861) */
    bool no_store;         /* */
    bool no_cache;         /* unqualified no-cache (pf_cc_parse: a qualified one too) */
    bool no_cache_fields;  /* response: no-cache="field, ..." (pf_cache_field_withheld) */
    bool private_;         /* response: unqualified private (pf_cc_parse: a qualified one too) */
    bool private_fields;   /* response: private="field, ..." */
    bool public_;          /* response */
    bool must_revalidate;  /* response */
    bool proxy_revalidate; /* response */
    bool only_if_cached;   /* request */
    bool no_transform;     /* either */
    bool immutable;        /* response (RFC 8246) */
    bool must_understand;  /* response (RFC 9111 §5.2.2.3) */
    bool invalid;          /* a directive we rely on was malformed (e.g. max-age=1x) */
};

/*
 * Parse every line of a Cache-Control-like field into cc (zeroed + ABSENT first). The qualified
 * no-cache="f" and private="f" also set no_cache and private_ here (a request's, or wherever the
 * field list is not honoured); pf_cache_meta_from_headers keeps them apart for a response.
 */
void pf_cc_parse(struct pf_cc *cc, const char *const *lines, unsigned n);

/*
 * An HTTP-date (IMF-fixdate, RFC 850, asctime; case-sensitive, as RFC 9110
 * §5.6.7 says) as seconds since the epoch, -1 if invalid (dates before 1970
 * give 0). RFC 850's two-digit year is read relative to the year 2000 here
 * (00-50 -> 20xx, 51-99 -> 19xx); pf_http_date_at() reads it relative to
 * now as RFC 9110 says (more than 50 years ahead means the century before).
 */
int64_t pf_http_date_parse(const char *s);
int64_t pf_http_date_at(const char *s, int64_t now);

/* Write t as an IMF-fixdate into out (at least 30 bytes); returns out. */
char *pf_http_date_fmt(int64_t t, char *out);

/*
 * What the cache knows of a stored (or candidate) response, taken from its
 * head once (pf_cache_meta_from_headers) and kept with the object.
 */
struct pf_cache_meta {
    int status;
    int64_t date;          /* Date, -1 when absent or invalid */
    int64_t expires;       /* Expires: -1 absent, 0 invalid (= already stale) */
    int64_t last_modified; /* -1 when absent or invalid */
    int64_t age;           /* Age header: -1 absent/invalid; capped at 2^31 (RFC 9111 §1.2.2) */
    int64_t request_time;  /* when the request that got it was sent (now, seconds) */
    int64_t response_time; /* when its head arrived */
    struct pf_cc cc;       /* the effective response Cache-Control (targeted field wins) */
    bool has_etag;
    bool weak_etag;
    char etag[128]; /* the ETag as received (with W/ and quotes), "" when none */
    bool vary_star; /* Vary: * */
};

/*
 * Fill m from a response head. get(arg, name, lines, max) returns how many
 * lines of header name it wrote to lines[] (at most max). targeted is the
 * configured targeted field name (e.g. "Pilotfish-Cache-Control") or NULL;
 * CDN-Cache-Control is always honoured (RFC 9213): the first present of
 * targeted, CDN-Cache-Control, Cache-Control decides m->cc.
 */
typedef unsigned (*pf_cache_hdr_fn)(void *arg, const char *name, const char **lines, unsigned max);
void pf_cache_meta_from_headers(struct pf_cache_meta *m, int status, pf_cache_hdr_fn get, void *arg,
                                const char *targeted, int64_t request_time, int64_t response_time);

/* Settings that decisions depend on (from filters.cache). */
struct pf_cache_policy {
    int64_t default_ttl;    /* seconds, 0 = none */
    bool heuristic;         /* RFC 9111 §4.2.2 */
    int64_t heuristic_max;  /* seconds */
    int64_t stale_if_error; /* seconds the config allows on errors (0 = only the response's) */
};

/* Freshness lifetime in seconds (RFC 9111 §4.2.1), 0 when none. */
int64_t pf_cache_lifetime(const struct pf_cache_meta *m, const struct pf_cache_policy *p);

/* Current age in seconds at now (RFC 9111 §4.2.3). */
int64_t pf_cache_age(const struct pf_cache_meta *m, int64_t now);

/*
 * May a shared cache store this response to this request (RFC 9111 §3,
 * §3.5 Authorization, status list of the cache filter, no-store, private,
 * Vary: *, 206 never, 1xx never)? When not, *why names the rule
 * ("no-store", "private", "status", "authorization", "no-freshness", ...).
 */
bool pf_cache_storable(const char *method, bool req_has_authorization, const struct pf_cc *req_cc,
                       const struct pf_cache_meta *m, const struct pf_cache_policy *p,
                       const char **why);

enum pf_cache_use {
    PF_CACHE_USE_FRESH = 0,  /* serve it */
    PF_CACHE_USE_STALE_OK,   /* stale, but the request's max-stale allows it: serve */
    PF_CACHE_USE_STALE_SWR,  /* stale within stale-while-revalidate: serve, refresh behind */
    PF_CACHE_USE_REVALIDATE, /* must be validated with the origin before use */
};

/*
 * How a stored response may be used for a request at now (RFC 9111 §4.2,
 * §4.2.4, request max-age/min-fresh/max-stale/no-cache; response no-cache,
 * must-revalidate, proxy-revalidate, s-maxage forbid stale use).
 */
enum pf_cache_use pf_cache_usable(const struct pf_cache_meta *m, const struct pf_cc *req_cc,
                                  const struct pf_cache_policy *p, int64_t now);

/*
 * May the stored response be served stale because the origin failed
 * (5xx, connect failure, timeout, open circuit) at now? stale-if-error of
 * the response or p->stale_if_error; never under must-revalidate,
 * proxy-revalidate, no-cache or s-maxage.
 */
bool pf_cache_stale_on_error(const struct pf_cache_meta *m, const struct pf_cache_policy *p,
                             int64_t now);

/*
 * The request's conditional headers against a stored response (RFC 9110
 * §13.2.2: If-None-Match, weak comparison, takes precedence over
 * If-Modified-Since): true when the cache answers 304.
 */
bool pf_cache_not_modified(const char *if_none_match, const char *if_modified_since,
                           const struct pf_cache_meta *m);

/* Does a response with this status to this method invalidate the target (RFC 9111 §4.4)? */
bool pf_cache_invalidates(const char *method, int status);

/* Is method safe (GET, HEAD, OPTIONS, TRACE)? */
bool pf_cache_method_safe(const char *method);

/*
 * Is a response header stored and replayed? No for hop-by-hop fields,
 * Connection and the fields it names (conn_value may be NULL), the
 * framing fields (Transfer-Encoding, Content-Length is recomputed), the
 * proxy authentication fields (RFC 9111 §3.1), and Age (a hit carries an
 * Age computed by pf_cache_age, RFC 9111 §4).
 */
bool pf_cache_header_stored(const char *name, const char *conn_value);

/*
 * Does the response's effective Cache-Control (targeted, CDN-Cache-Control, Cache-Control, as
 * pf_cache_meta_from_headers chooses) list field in a qualified no-cache="..." or private="..."?
 * Such a field is not stored, so never replayed (RFC 9111 §5.2.2.4, §5.2.2.7).
 */
bool pf_cache_field_withheld(pf_cache_hdr_fn get, void *arg, const char *targeted,
                             const char *field);

/*
 * Does a 304 update this stored header (RFC 9111 §3.2: all but the fields
 * not stored, Content-Length, and the fields the stored body depends on:
 * Content-Encoding, Content-Range)?
 */
bool pf_cache_header_updated_by_304(const char *name);

/*
 * Is field `name` of a 304 merged into the stored response it validated? When
 * pf_cache_header_updated_by_304 holds, the 304's Connection (conn_value, may be NULL) does not
 * name it, it is not a Cache-Status, and the Cache-Control of the merged response (merged: the
 * 304's fields over the stored ones) does not withhold it with a qualified no-cache="..." or
 * private="..." (pf_cache_field_withheld): a withheld field is not stored, from a 304 either.
 */
bool pf_cache_304_field_merged(pf_cache_hdr_fn merged, void *arg, const char *targeted,
                               const char *conn_value, const char *name);

/*
 * The variant key of a request for the Vary field lines of a stored
 * response: the listed request headers' values, normalised (names
 * lower-cased, members trimmed, empty members dropped, several Vary lines
 * joined), written to out (NUL-terminated). Returns false for Vary: *
 * and when the key does not fit in size (or a Vary member is not a field
 * name, or it lists more than 32 names): such a response never matches,
 * rather than match a request whose key was cut short.
 */
bool pf_cache_variant_key(const char *const *vary_lines, unsigned n_vary, pf_cache_hdr_fn req_get,
                          void *req_arg, char *out, size_t size);

/*
 * The primary cache key (method class GET/HEAD shared, scheme, host
 * lower-cased without the default port, path, query without parameters
 * matching ignore_query globs like "utm_*"), written to out; returns its
 * length, or 0 when it does not fit.
 */
size_t pf_cache_key(const char *scheme, const char *host, const char *target,
                    const char *const *ignore_query, unsigned n_ignore, char *out, size_t size);

/*
 * target (path and query) without the query parameters matching ignore_query, as pf_cache_key
 * leaves them out (and without a fragment), written to out: what the upstream is sent so that it
 * cannot vary on what the key ignores. Its length, or 0 when it does not fit.
 */
size_t pf_cache_strip_query(const char *target, const char *const *ignore_query, unsigned n_ignore,
                            char *out, size_t size);

#endif /* PF_CACHE_RFC_H */
