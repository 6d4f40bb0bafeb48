/*
 * filters/cache: the HTTP cache filter (docs/filters/cache.md). RFC 9111
 * decisions live in rfc.c, objects and the L1 store in object.c and mem.c,
 * the Redis tier in l2.c; cache.c is the filter (lookup, store, revalidate),
 * cache_l2.c its use of the Redis tier, purge.c invalidation, the PURGE
 * method and purges between processes, hfm.c hit-for-miss markers,
 * refresh.c background refreshes, cache_conf.c its settings, metrics and
 * the admin purge.
 */
#ifndef PF_FILTER_CACHE_H
#define PF_FILTER_CACHE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "proxy/conf.h"
#include "filters/cache/rfc.h"

extern const struct pf_filter_ops pf_filter_cache;

struct pf_cstore;

/* filters.cache, parsed (defaults in cache_conf.c and docs/filters/cache.md). */
struct pf_cache_conf {
    uint64_t memory;          /* L1 bytes */
    uint64_t max_object_size; /* bytes */
    uint64_t default_ttl_ms;  /* freshness when the response gives none; 0 = none */
    bool coalesce;            /* one upstream fetch per key */
    uint64_t lock_timeout_ms; /* how long a coalesced request waits */
    uint64_t stale_if_error_ms;
    bool heuristic;
    uint64_t heuristic_max_ms;
    char *targeted_header; /* "" = none */
    char *tag_header;      /* Surrogate-Key */
    bool purge_method;     /* the PURGE method on the data path */
    bool debug_key;        /* Cache-Status carries key= */
    struct pf_strlist ignore_query;
    struct pf_strlist include_headers;
    struct pf_strlist redis_addresses; /* none = no L2 */
    unsigned redis_db;
    char *redis_password;
    uint64_t redis_timeout_ms;
    char *redis_key_prefix;
    struct pf_cache_policy policy; /* derived */
};

/* Counters of pilotfish_cache_requests_total{result}, by index. */
enum pf_cache_result {
    PF_CACHE_HIT = 0,
    PF_CACHE_MISS,
    PF_CACHE_STALE,
    PF_CACHE_REVALIDATED,
    PF_CACHE_BYPASS,
    PF_CACHE_N_RESULTS,
};

/* refresh.c: background refreshes (stale-while-revalidate), by how they ended */
enum pf_cache_refresh {
    PF_REFRESH_UPDATED = 0, /* a new response replaced the entry */
    PF_REFRESH_REVALIDATED, /* a 304 refreshed the entry */
    PF_REFRESH_UNCACHEABLE, /* the response could not be stored: the entry stays */
    PF_REFRESH_FAILED,      /* 5xx, no response, or cut: the stale entry stays */
    PF_REFRESH_FROM_L2,     /* Redis had a fresh copy: it replaced the entry, no upstream request */
    PF_REFRESH_N,
};
struct evbuffer;
void pf_cache_count_refresh(enum pf_cache_refresh r);
void pf_cache_refresh_metrics(struct evbuffer *out);

/* coalesce.c: one upstream fetch per key (see the file's comment) */
struct pf_tx;
enum pf_coalesce {
    PF_COALESCE_LEADER = 0, /* nobody fetches the key: go, then call pf_coalesce_done */
    PF_COALESCE_WAITING,    /* another request fetches it: return PF_PAUSED, fn will run */
    PF_COALESCE_ALONE,      /* could not wait (no memory for the timer): go uncoalesced */
};
struct pf_cgrow;
/*
 * Runs once on the waiter's worker with its live tx: the flight ended, or
 * timed_out, or (g not NULL, borrowed) the leader's response is being stored
 * and streams in as g.
 */
typedef void (*pf_coalesce_fn)(struct pf_tx *tx, void *arg, bool timed_out, struct pf_cgrow *g);
/*
 * gen is the key's purge generation now (pf_cstore_gen): a flight that started under another
 * one (before a purge of the key) is not joined, the request leads a flight of its own. The
 * leader names its flight by the same gen in the calls below.
 */
enum pf_coalesce pf_coalesce_join(const void *store, const char *key, uint64_t gen,
                                  struct pf_tx *tx, uint64_t timeout_ms, pf_coalesce_fn fn,
                                  void *arg);
/* Is a fetch of (store, key) under generation gen under way? */
bool pf_coalesce_busy(const void *store, const char *key, uint64_t gen);
/* Become the leader of (store, key, gen) when nobody fetches it (true), or do nothing. */
bool pf_coalesce_lead(const void *store, const char *key, uint64_t gen);
/* The leader's response streams in as g: wake every waiter with it, and every later one. */
void pf_coalesce_stream(const void *store, const char *key, uint64_t gen, struct pf_cgrow *g);
/*
 * The leader of (store, key, gen) is done: wake every waiter (any thread). With mark_s > 0, when
 * the flight had waiters, the key gets a hit-for-miss marker of mark_s seconds first (so the
 * waiters woken see it); a one-off URL nobody waited for is not marked.
 */
void pf_coalesce_done(const void *store, const char *key, uint64_t gen, int64_t now,
                      int64_t mark_s);

/*
 * hfm.c: hit-for-miss markers. A key whose coalesced fetch got a response that cannot be stored
 * is marked for pf_cache_hfm_ttl(the response's freshness lifetime) seconds: requests for it go
 * upstream at once instead of queueing behind one fetch each. Any thread.
 */
#define PF_HFM_DEFAULT_S 10  /* a response without a freshness lifetime */
#define PF_HFM_MAX_S     120 /* the longest a marker lasts */
void pf_cache_hfm_set(const void *store, const char *key, int64_t now, int64_t ttl_s);
bool pf_cache_hfm_active(const void *store, const char *key, int64_t now);
int64_t pf_cache_hfm_ttl(int64_t lifetime);

/* cache_conf.c */
int pf_cache_conf_parse(const struct pf_conf_node *n, void **conf, struct pf_err *err);
void pf_cache_conf_free(void *conf);
void pf_cache_count(enum pf_cache_result r, uint64_t bytes_served);
/* One L2 lookup: found a usable object or not. */
void pf_cache_count_l2(bool hit);
/* One object written to Redis by a fetch that a purge overtook, deleted again. */
void pf_cache_count_l2_undo(void);
/* One request that waited for another's fetch (coalesce). */
void pf_cache_count_coalesced(void);
void pf_cache_metrics(const void *conf, void *pstate, struct evbuffer *out);
int pf_cache_admin(const void *conf, void *pstate, const char *path, const char *body, size_t len,
                   struct evbuffer *out);

enum pf_cache_range {
    PF_RANGE_NONE = 0,     /* no Range, or one the cache does not answer (several ranges): a 200 */
    PF_RANGE_OK,           /* one satisfiable range */
    PF_RANGE_UNSATISFIABLE /* 416 */
};

/* One byte range of a Range value (RFC 9110 §14.1.2) over len bytes: [*from, *from + *n). */
enum pf_cache_range pf_cache_parse_range(const char *v, size_t len, size_t *from, size_t *n);

/*
 * The primary key of an absolute or origin-form URL ("http://h/p?q" or
 * "/p?q" with host), into out; 0 when it does not fit or url is not one.
 */
size_t pf_cache_url_key(const struct pf_cache_conf *c, const char *url, const char *host, char *out,
                        size_t size);

/* s as the inside of an sf-string (RFC 8941) into out (room for 3 * strlen(s)); its length. */
size_t pf_cache_sf_escape(char *out, const char *s);

/*
 * purge.c: the purge bus between the processes that share the Redis tier (see purge.c). A
 * store is registered while it lives (init_process to fini_process) so that purges other
 * processes publish reach it; pf_cache_bus_message writes the message of one purge ("PF1",
 * this process's nonce, op, arg) into out, its length (0: does not fit). Any thread.
 */
#define PF_BUS_CHANNEL "purge"
#define PF_BUS_KEY     'k' /* a key: every variant */
#define PF_BUS_PREFIX  'p'
#define PF_BUS_TAG     't'
void pf_cache_bus_register(struct pf_cstore *st);
void pf_cache_bus_unregister(struct pf_cstore *st);
size_t pf_cache_bus_message(char op, const char *arg, char *out, size_t size);

/* Purge by url, prefix or tag from the L1 store; the number of objects removed. */
size_t pf_cache_purge(const struct pf_cache_conf *c, struct pf_cstore *st, const char *what,
                      const char *value);

#endif /* PF_FILTER_CACHE_H */
