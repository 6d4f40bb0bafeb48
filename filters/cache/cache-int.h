/*
 * filters/cache/cache-int.h: what cache.c (the filter) and cache_l2.c (its
 * Redis tier and worker state) share: the per-request context and the
 * functions each calls in the other.
 */
#ifndef PF_FILTER_CACHE_INT_H
#define PF_FILTER_CACHE_INT_H

#include <string.h>
#include <time.h>

#include "proxy/arena.h"
#include "proxy/filter.h"
#include "proxy/sbuf.h" /* pf_fmt_u64 */
#include "filters/cache/cache.h"
#include "filters/cache/store.h"

#define KEY_MAX     4096 /* primary key, with the include_headers values */
#define VARIANT_MAX 2048
#define VARY_MAX    1024
#define LINES_MAX   32 /* field lines of one header name handed to rfc.c */
#define STATUS_MAX  256

enum mode {
    M_BYPASS = 0, /* not a cacheable method: pass (and invalidate when unsafe) */
    M_MISS,       /* nothing stored: fetch, maybe store */
    M_REVALIDATE, /* stale entry with a validator: conditional fetch */
    M_REFETCH,    /* stale entry without a validator (kept for stale-if-error) */
};

struct cache_ctx {
    enum mode mode;
    bool unsafe;               /* a method that invalidates on success */
    bool no_store;             /* the request said no-store */
    bool replacing;            /* on_body drops the upstream body and emits emit's */
    bool leader;               /* this request fetches the key for coalesced waiters */
    bool collapsed;            /* this request waited for another one's fetch */
    bool rejoined;             /* ... and, woken with nothing, took the flight logic again */
    int64_t hfm_s;             /* the leader's hit-for-miss marker for its waiters (0: none) */
    bool background;           /* a stale-while-revalidate refresh (pf_tx_background) */
    unsigned refresh;          /* ... how it ended (enum pf_cache_refresh), for on_done */
    bool l2_done;              /* the L2 tier was asked (once per request) */
    bool l2_vary;              /* ... and answered with the key's Vary record (once) */
    bool debug_key;            /* Cache-Status says key= (filters.cache.debug_key) */
    bool gateway_timeout;      /* a 502 of pilotfish turned 504 (stale not allowed) */
    struct evbuffer *err_body; /* ... its JSON body, until eos */
    uint64_t l2_get;           /* pending pf_l2_get handle, 0 = none */
    struct pf_tx_ref ref;      /* for the L2 callback */
    const char *fwd;           /* Cache-Status fwd= */
    char *key;                 /* arena */
    char *variant;             /* arena */
    const char *client_inm;    /* the client's own If-None-Match (arena copy) */
    const char *client_ims;    /* ... If-Modified-Since */
    int64_t req_time;          /* seconds, when the request went upstream */
    uint64_t gen;              /* the key's purge generation then (pf_cstore_gen) */
    struct pf_cc req_cc;       /* request Cache-Control */
    struct pf_cobj *stale;     /* a reference: the entry revalidated or kept for errors */
    struct pf_cobj *emit;      /* a reference: the body on_body emits at eos */
    struct pf_cobj_builder *b; /* the object being stored */
    const char *conn_value;    /* the response's Connection, while its headers are copied */
    bool vary_set;             /* the response had Vary: record it with the put */
    char *vary;                /* ... its lines, comma-joined (arena, VARY_MAX bytes) */
    struct pf_cgrow *grow;     /* a reference: the leader's response streaming to waiters */
    struct pf_cgrow_sub *sub;  /* a waiter served from another's grow (collapse.c) */
    struct pf_cgrow *sub_grow; /* ... a reference to it */
    bool replying;             /* ... its streamed reply started */
    uint64_t streamed;         /* ... body bytes handed to the reply */
};

static inline int64_t now_s(void)
{
    return (int64_t)time(NULL);
}

struct pf_arena;
struct pf_l2;

/* cache.c */
enum pf_verdict pf_cache_lookup(const struct pf_cache_conf *c, struct pf_tx *tx, struct pf_slot *s,
                                struct cache_ctx *x);
enum pf_verdict pf_cache_after_lookup(const struct pf_cache_conf *c, struct pf_tx *tx,
                                      struct pf_slot *s, struct cache_ctx *x, enum pf_verdict v);
enum pf_verdict pf_cache_refresh_request(struct pf_tx *tx, struct pf_slot *s, struct cache_ctx *x);

/* hit.c: answer tx from o (a hit), the whole body or one range of it: PF_REPLIED (PF_FAILED). */
enum pf_verdict pf_cache_serve(const struct pf_cache_conf *c, struct pf_tx *tx, struct cache_ctx *x,
                               struct pf_cobj *o, enum pf_cache_result r, const char *extra);
/* The stored head of o, Age and Content-Length (len), added to the response's (empty) head. */
void pf_cache_put_stored_head(struct pf_tx *tx, struct pf_cobj *o, int status, size_t len,
                              int64_t now);
/* Does the client's own conditional match o (answered 304)? */
bool pf_cache_client_not_modified(const struct cache_ctx *x, const struct pf_cobj *o);

/* ttl= of Cache-Status: freshness left, negative when stale. */
static inline long long pf_cache_ttl_of(const struct pf_cache_conf *c, const struct pf_cobj *o,
                                        int64_t now)
{
    return (long long)(pf_cache_lifetime(&o->meta, &c->policy) - pf_cache_age(&o->meta, now));
}

/* The field lines of request header name of tx (arg), at most max (a pf_cache_hdr_fn). */
unsigned pf_cache_req_lines(void *arg, const char *name, const char **lines, unsigned max);

/*
 * refresh.c: what a background refresh sends: tx's headers without the client's conditionals and
 * range, nor its credentials (Authorization, Proxy-Authorization, Cookie) unless the entry of key
 * is keyed on them (its Vary in st, or key.include_headers).
 */
void pf_cache_refresh_headers(const struct pf_cache_conf *c, struct pf_cstore *st, struct pf_tx *tx,
                              const char *key);

/* purge.c: the PURGE method, invalidation by unsafe methods, purges between processes */
bool pf_cache_tx_key(const struct pf_cache_conf *c, struct pf_tx *tx, const char *target, char *out,
                     size_t size);
enum pf_verdict pf_cache_on_purge(const struct pf_cache_conf *c, struct pf_tx *tx,
                                  struct pf_slot *s);
void pf_cache_invalidate(const struct pf_cache_conf *c, struct pf_tx *tx, struct pf_slot *s,
                         const struct cache_ctx *x);
/* pf_l2_msg_fn of the worker's subscriber: a purge another process published (any thread). */
void pf_cache_bus_receive(void *arg, const char *msg, size_t len);
/* Is st alive (registered) and did a purge since gen cover o (pf_cstore_covered)? Any thread. */
bool pf_cache_bus_covered(struct pf_cstore *st, const struct pf_cobj *o, uint64_t gen);
/* pf_cstore_purge_key of st when it is alive (registered): 0 otherwise. Any thread. */
size_t pf_cache_bus_purge_key(struct pf_cstore *st, const char *key);
/* Delete key (without the L2 prefix) from the Redis tier again, then drop key (every variant)
 * from this process's memory and tell the others (purge.c). */
void pf_cache_l2_undo(struct pf_l2 *l2, struct pf_cstore *st, const char *key, const char *l2key);

/* A Cache-Status of buf (n bytes formatted into STATUS_MAX), with collapsed and key= as x says. */
void pf_cache_status_line(struct pf_tx *tx, const struct cache_ctx *x, char *buf, int n);

/* pf_cobj_unref for pf_arena_defer. */
static inline void pf_cache_unref_cb(void *o)
{
    pf_cobj_unref(o);
}

/* A response field whose name is a literal: only the value is copied. */
static inline void pf_cache_add_value(struct pf_tx *tx, const char *name, const char *value)
{
    pf_tx_resp_header_add_ref(tx, name, pf_arena_strndup(pf_tx_arena(tx), value, strlen(value)));
}

/*
 * Is the response field `name` kept in the stored object (and in what collapsed waiters get)?
 * Not hop-by-hop (conn_value: the Connection field), framing, Age, Cache-Status, nor, when
 * withhold (a qualified no-cache="..." / private="..."), a field those name.
 */
bool pf_cache_resp_field_kept(struct pf_tx *tx, const char *conn_value, const char *targeted,
                              bool withhold, const char *name);

/* merge304.c: the stale entry x->stale updated by tx's 304 (fields, freshness), one reference. */
struct pf_cobj *pf_cache_merge_304(const struct pf_cache_conf *c, struct pf_tx *tx,
                                   const struct cache_ctx *x, int64_t now);

/* The leader's fetch is over: wake the requests waiting for it (cache.c). */
void pf_cache_leader_done(struct pf_slot *s, struct cache_ctx *x);

/* collapse.c: coalesced requests served while the leader's response streams in */
void pf_cache_collapse_lead(const struct pf_cache_conf *c, struct pf_tx *tx, struct pf_slot *s,
                            struct cache_ctx *x, const struct pf_cache_meta *m,
                            const char *variant);
/* The leader's object was abandoned mid-body (too big): end it, the flight, the fetch. */
void pf_cache_collapse_abandoned(struct pf_tx *tx, struct pf_slot *s, struct cache_ctx *x);
/* A body chunk for the waiters; false once the object is abandoned (grew past the max). */
bool pf_cache_collapse_body(struct pf_tx *tx, struct cache_ctx *x, struct evbuffer *buf);
void pf_cache_collapse_end(struct cache_ctx *x, bool complete);
enum pf_verdict pf_cache_collapse_start(const struct pf_cache_conf *c, struct pf_tx *tx,
                                        struct pf_slot *s, struct cache_ctx *x, struct pf_cgrow *g);
void pf_cache_collapse_done(struct cache_ctx *x);

/* cache_l2.c */
char *pf_cache_l2_key(struct pf_arena *a, const char *key, const char *variant);
char *pf_cache_l2_variants_tag(struct pf_arena *a, const char *key);
/*
 * The writes of what a fetch stored in memory under purge generation gen (pf_cstore_put_at):
 * when the key's generation moved by the time Redis answered the SET (a purge overtook it, and
 * its DEL may have run first), the key is deleted again (see cache_l2.c).
 */
void pf_cache_l2_store_vary(const struct pf_cache_conf *c, struct pf_tx *tx, struct pf_slot *s,
                            struct pf_cobj *o, const char *vary, uint64_t gen);
void pf_cache_l2_store(const struct pf_cache_conf *c, struct pf_tx *tx, struct pf_slot *s,
                       struct pf_cobj *o, uint64_t gen);
enum pf_verdict pf_cache_l2_lookup(struct pf_tx *tx, struct pf_slot *s, struct cache_ctx *x);
/* A background refresh asks L2 for x->key / x->variant first: PF_PAUSED, then resumed with what
 * pf_cache_refresh_request says (after a fresh copy from L2, if any, filled L1). */
enum pf_verdict pf_cache_l2_refresh(struct pf_tx *tx, struct pf_slot *s, struct cache_ctx *x);
struct pf_l2 *pf_cache_l2_of(struct pf_slot *s);
int pf_cache_worker_init(const void *conf, struct pf_worker *w, void **wstate);
void pf_cache_worker_fini(void *wstate);
void pf_cache_worker_start(void *wstate);

/* "%lld" of v into out (room for 22 bytes); its length. */
static inline size_t fmt_ll(char *out, long long v)
{
    if (v >= 0)
        return pf_fmt_u64(out, (uint64_t)v);
    out[0] = '-';
    return 1 + pf_fmt_u64(out + 1, 0 - (uint64_t)v);
}

#endif /* PF_FILTER_CACHE_INT_H */
