/*
 * filters/cache/cache.c: the cache filter (docs/filters/cache.md).
 *
 * on_request computes the key, looks the request up in the L1 store and
 * either answers from it (a hit, hit.c: the stored head, an Age, and the
 * stored body appended by reference, never copied), or lets the request go
 * upstream, remembering a stale entry to revalidate (conditional headers
 * added to the upstream request) or to serve when the upstream fails.
 * on_response decides whether the response is stored, or replaces it with
 * the stored one (a 304 that validated the entry, stale-if-error); on_body
 * copies the bytes into an object builder without altering the stream, and
 * at the end of the body puts the object in the store. Unsafe methods
 * invalidate the target URI and the same-origin Location / Content-Location
 * (purge.c).
 *
 * Every response that passed through the filter carries a Cache-Status
 * field (RFC 9211).
 */
#include "filters/cache/cache-int.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <event2/buffer.h>
#include <event2/event.h>

#include "proxy/arena.h"
#include "proxy/filter.h"
#include "proxy/hdrs-t.h"
#include "proxy/log.h"
#include "filters/cache/l2.h"
#include "filters/cache/store.h"

/* ---- header access for rfc.c ---- */

struct lines {
    const char *name;
    const char **v;
    unsigned n, max;
};

static int collect_line(void *arg, const char *name, const char *value)
{
    struct lines *l = arg;

    if (strcasecmp(name, l->name) == 0 && l->n < l->max)
        l->v[l->n++] = value;
    return 0;
}

unsigned pf_cache_req_lines(void *arg, const char *name, const char **lines, unsigned max)
{
    struct lines l = {name, lines, 0, max};

    pf_tx_req_header_each(arg, collect_line, &l);
    return l.n;
}

static unsigned resp_get(void *arg, const char *name, const char **lines, unsigned max)
{
    struct lines l = {name, lines, 0, max};

    pf_tx_resp_header_each(arg, collect_line, &l);
    return l.n;
}

/* Header name's lines of the request joined with ", " into out (the way a list is folded). */
static void join_lines(const char *const *v, unsigned n, char *out, size_t size)
{
    size_t len = 0;

    out[0] = '\0';
    for (unsigned i = 0; i < n && len < size; i++)
        len += (size_t)snprintf(out + len, size - len, "%s%s", i > 0 ? ", " : "", v[i]);
}

/* ---- keys ---- */

/* The primary key of tx: pf_cache_key plus the values of key.include_headers. */
bool pf_cache_tx_key(const struct pf_cache_conf *c, struct pf_tx *tx, const char *target, char *out,
                     size_t size)
{
    /* the authority the upstream is asked for: an absolute-form target's wins over Host */
    const char *host = pf_tx_host(tx);
    size_t len = pf_cache_key("http", host != NULL ? host : "", target,
                              (const char *const *)c->ignore_query.v, c->ignore_query.n, out, size);

    if (len == 0)
        return false;
    for (unsigned i = 0; i < c->include_headers.n; i++) {
        const char *lines[LINES_MAX];
        /* every field line of the name, comma-joined (as a list is folded, and as for Vary) */
        unsigned nl = pf_cache_req_lines(tx, c->include_headers.v[i], lines, LINES_MAX);
        int n = snprintf(out + len, size - len, "\n%s:", c->include_headers.v[i]);

        if (n < 0 || (size_t)n >= size - len)
            return false;
        len += (size_t)n;
        join_lines(lines, nl, out + len, size - len);
        len += strlen(out + len);
        if (len + 1 >= size)
            return false; /* may have been cut: too long for a key */
    }
    return true;
}

/* ---- Cache-Status ---- */

static void cache_status(struct pf_tx *tx, const struct cache_ctx *x, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* status plus "; key=" and the stored object's key as an sf-string (RFC 9211 §2.7): the primary
 * key, then a newline and the variant when there is one. In the arena. */
static const char *with_key(struct pf_tx *tx, const struct cache_ctx *x, const char *status)
{
    size_t sl = strlen(status), kl = strlen(x->key);
    size_t vl = x->variant != NULL ? strlen(x->variant) : 0;
    char *out = pf_arena_alloc(pf_tx_arena(tx), sl + 3 * (kl + 1 + vl) + 16);
    size_t n = sl;

    memcpy(out, status, sl);
    memcpy(out + n, "; key=\"", 7);
    n += 7;
    n += pf_cache_sf_escape(out + n, x->key);
    if (vl > 0) {
        n += pf_cache_sf_escape(out + n, "\n");
        n += pf_cache_sf_escape(out + n, x->variant);
    }
    out[n++] = '"';
    out[n] = '\0';
    return out;
}

/* buf (n bytes formatted into STATUS_MAX, or n < 0) as the Cache-Status, with "; collapsed" and
 * key= when they apply. */
void pf_cache_status_line(struct pf_tx *tx, const struct cache_ctx *x, char *buf, int n)
{
    if (x->collapsed && n > 0 && (size_t)n < STATUS_MAX)
        snprintf(buf + n, STATUS_MAX - (size_t)n, "; collapsed");
    if (x->debug_key && x->key != NULL)
        pf_tx_resp_header_add(tx, "Cache-Status", with_key(tx, x, buf));
    else /* the name is a literal: only the value is copied */
        pf_tx_resp_header_add_ref(tx, "Cache-Status",
                                  pf_arena_strndup(pf_tx_arena(tx), buf, strlen(buf)));
}

static void cache_status(struct pf_tx *tx, const struct cache_ctx *x, const char *fmt, ...)
{
    char buf[STATUS_MAX];
    va_list ap;
    int n;

    va_start(ap, fmt);
    n = vsnprintf(buf, sizeof(buf), fmt, ap);
    va_end(ap);
    pf_cache_status_line(tx, x, buf, n);
}

/* ---- answering from a stored object ---- */

static int del_name(void *arg, const char *name, const char *value)
{
    (void)value;
    *(const char **)arg = name;
    return 1;
}

/* Remove every response header (pilotfish_tx has no "clear": delete by name until none). */
static void resp_clear(struct pf_tx *tx)
{
    const char *name = NULL;

    for (;;) {
        name = NULL;
        pf_tx_resp_header_each(tx, del_name, &name);
        if (name == NULL)
            return;
        /* a copy: the name may live in the header being removed (never truncated: a
         * shorter name would not match and the loop would not end) */
        pf_tx_resp_header_del(tx, pf_arena_strndup(pf_tx_arena(tx), name, strlen(name)));
    }
}

/* ---- the request ---- */

static bool same_method(const char *m, const char *want)
{
    return strcmp(m, want) == 0;
}

/* Copy a request header's value v into the arena (it may be replaced later). */
static const char *req_copy(struct pf_tx *tx, const char *v)
{
    return v != NULL ? pf_arena_strndup(pf_tx_arena(tx), v, strlen(v)) : NULL;
}

/* The request fields on_request reads, found in one pass (the first line of each, all of CC). */
struct req_scan {
    const char **cc;
    unsigned n_cc;
    const char *pragma, *inm, *ims;
};

static int scan_req(void *arg, const char *name, const char *value)
{
    struct req_scan *r = arg;

    switch (name[0] | 0x20) { /* the first letter rules out most names */
    case 'c':
        if (r->n_cc < LINES_MAX && strcasecmp(name, "cache-control") == 0)
            r->cc[r->n_cc++] = value;
        break;
    case 'p':
        if (r->pragma == NULL && strcasecmp(name, "pragma") == 0)
            r->pragma = value;
        break;
    case 'i':
        if (r->inm == NULL && strcasecmp(name, "if-none-match") == 0)
            r->inm = value;
        else if (r->ims == NULL && strcasecmp(name, "if-modified-since") == 0)
            r->ims = value;
        break;
    default:
        break;
    }
    return 0;
}

/*
 * The object for tx's variant of key (a reference) into *o: one store call when key has no Vary
 * record (variant ""), else the variant key computed from the record first. false for Vary: *.
 */
static bool lookup_variant(struct pf_cstore *st, struct pf_tx *tx, const char *key, char *out,
                           size_t size, bool *has_vary, struct pf_cobj **o)
{
    char vary[VARY_MAX];
    const char *line = vary;

    out[0] = '\0';
    *o = pf_cstore_lookup(st, key, vary, sizeof(vary), has_vary);
    if (!*has_vary)
        return true;
    if (!pf_cache_variant_key(&line, 1, pf_cache_req_lines, tx, out, size))
        return false;
    *o = pf_cstore_get(st, key, out);
    return true;
}

/* Nothing fits and the request said only-if-cached: 504 (RFC 9111 §5.2.1.7). */
static enum pf_verdict only_if_cached(struct pf_tx *tx, struct cache_ctx *x)
{
    pf_tx_reply(tx, 504, NULL);
    cache_status(tx, x, "pilotfish; fwd=%s; detail=only-if-cached", x->fwd);
    pf_cache_count(PF_CACHE_MISS, 0);
    return PF_REPLIED;
}

/* A stale entry: revalidate it (conditional request) when it has a validator. */
static void go_revalidate(struct pf_tx *tx, struct cache_ctx *x, struct pf_cobj *o)
{
    char date[40];

    x->stale = o;
    x->fwd = x->req_cc.no_cache ? "request" : "stale";
    if (!o->meta.has_etag && o->meta.last_modified < 0) {
        x->mode = M_REFETCH;
        return;
    }
    x->mode = M_REVALIDATE;
    pf_tx_req_header_del(tx, "If-None-Match");
    pf_tx_req_header_del(tx, "If-Modified-Since");
    pf_tx_req_header_del(tx, "If-Range");
    if (o->meta.has_etag)
        pf_tx_req_header_set(tx, "If-None-Match", o->meta.etag);
    if (o->meta.last_modified >= 0)
        pf_tx_req_header_set(tx, "If-Modified-Since",
                             pf_http_date_fmt(o->meta.last_modified, date));
}

enum pf_verdict pf_cache_lookup(const struct pf_cache_conf *c, struct pf_tx *tx, struct pf_slot *s,
                                struct cache_ctx *x)
{
    struct pf_cstore *st = s->pstate;
    char variant[VARIANT_MAX];
    bool has_vary;
    struct pf_cobj *o;
    enum pf_verdict v;

    if (!lookup_variant(st, tx, x->key, variant, sizeof(variant), &has_vary, &o)) {
        x->fwd = "vary-miss";
        return x->req_cc.only_if_cached ? only_if_cached(tx, x) : PF_NEXT;
    }
    x->variant =
        variant[0] != '\0' ? pf_arena_strndup(pf_tx_arena(tx), variant, strlen(variant)) : "";
    if (o == NULL) {
        x->fwd = has_vary ? "vary-miss" : "uri-miss";
        if (pf_cache_l2_of(s) != NULL && !x->l2_done)
            return pf_cache_l2_lookup(tx, s, x);
        return x->req_cc.only_if_cached ? only_if_cached(tx, x) : PF_NEXT;
    }
    switch (pf_cache_usable(&o->meta, &x->req_cc, &c->policy, now_s())) {
    case PF_CACHE_USE_FRESH:
        v = pf_cache_serve(c, tx, x, o, PF_CACHE_HIT, "");
        pf_cobj_unref(o); /* the reply's body holds its own reference */
        return v;
    case PF_CACHE_USE_STALE_OK:
        v = pf_cache_serve(c, tx, x, o, PF_CACHE_STALE, "; detail=stale");
        pf_cobj_unref(o);
        return v;
    case PF_CACHE_USE_STALE_SWR:
        /* a hit (this request does not go forward); one refresh runs in the background */
        v = pf_cache_serve(c, tx, x, o, PF_CACHE_STALE, "; detail=stale-while-revalidate");
        pf_cobj_unref(o);
        if (v == PF_REPLIED && !pf_coalesce_busy(s->pstate, x->key, x->gen))
            pf_tx_background(tx, s);
        return v;
    case PF_CACHE_USE_REVALIDATE:
    default:
        break;
    }
    if (x->req_cc.only_if_cached) {
        pf_cobj_unref(o);
        x->fwd = "stale";
        return only_if_cached(tx, x);
    }
    go_revalidate(tx, x, o);
    return PF_NEXT;
}

/*
 * A request that waited for another's fetch (coalesce.c), on its worker: look
 * the store up again (served, or a miss that goes upstream after all), or go
 * upstream when lock_timeout passed.
 */
static void coalesced(struct pf_tx *tx, void *arg, bool timed_out, struct pf_cgrow *g)
{
    struct pf_slot *s = arg;
    struct cache_ctx *x = s->ctx;

    x->collapsed = true;
    if (g != NULL) { /* the leader's response streams in: served from it as it comes */
        pf_tx_resume(tx, pf_cache_collapse_start(s->conf, tx, s, x, g));
    } else if (timed_out || x->rejoined) {
        pf_tx_resume(tx, timed_out ? PF_NEXT : pf_cache_lookup(s->conf, tx, s, x));
    } else {
        /*
         * The leader ended with nothing to serve (it went away before its response, or the
         * response was not stored): the first waiter here leads a new fetch, the others wait
         * for it, rather than all going upstream at once (a not-stored response left a
         * hit-for-miss marker: then they do). Once only: a second wake goes upstream.
         */
        x->rejoined = true;
        pf_tx_resume(tx,
                     pf_cache_after_lookup(s->conf, tx, s, x, pf_cache_lookup(s->conf, tx, s, x)));
    }
}

/*
 * A background refresh of a stale entry that a stale-while-revalidate hit
 * started (a copy of that request, with no client): it asks Redis first
 * (another process may hold a fresher copy: then it fills L1 and ends), then
 * leads the key's flight (or ends at once when another fetch of the key is
 * under way, or the entry went or is fresh again), and revalidates the entry
 * with its validators, or refetches it. cache_l2.c calls it again once Redis
 * answered.
 */
enum pf_verdict pf_cache_refresh_request(struct pf_tx *tx, struct pf_slot *s, struct cache_ctx *x)
{
    const struct pf_cache_conf *c = s->conf;
    char variant[VARIANT_MAX];
    bool has_vary;
    struct pf_cobj *o = NULL;

    if (!lookup_variant(s->pstate, tx, x->key, variant, sizeof(variant), &has_vary, &o))
        o = NULL;
    if (o != NULL &&
        pf_cache_usable(&o->meta, &x->req_cc, &c->policy, now_s()) == PF_CACHE_USE_FRESH) {
        pf_cobj_unref(o); /* refreshed meanwhile */
        o = NULL;
    }
    if (o != NULL && pf_cache_l2_of(s) != NULL && !x->l2_done) {
        pf_cobj_unref(o);
        x->variant = pf_arena_strndup(pf_tx_arena(tx), variant, strlen(variant));
        return pf_cache_l2_refresh(tx, s, x);
    }
    if (o == NULL || !pf_coalesce_lead(s->pstate, x->key, x->gen)) {
        pf_cobj_unref(o);
        x->fwd = NULL; /* not counted, no Cache-Status: nobody reads this answer */
        pf_tx_reply(tx, 204, NULL);
        return PF_REPLIED;
    }
    x->leader = true;
    x->background = true;
    x->refresh = PF_REFRESH_FAILED; /* until a response says otherwise */
    x->variant = pf_arena_strndup(pf_tx_arena(tx), variant, strlen(variant));
    pf_cache_refresh_headers(c, s->pstate, tx, x->key);
    go_revalidate(tx, x, o); /* takes the reference */
    return PF_NEXT;
}

/*
 * The upstream does not get the query parameters the key ignores: a response that varied on them
 * would be stored for every value (cache poisoning), so the origin must not see them.
 */
static void strip_ignored(const struct pf_cache_conf *c, struct pf_tx *tx)
{
    char t[KEY_MAX];
    size_t n = pf_cache_strip_query(pf_tx_path(tx), (const char *const *)c->ignore_query.v,
                                    c->ignore_query.n, t, sizeof(t));

    if (n > 0 && strcmp(t, pf_tx_path(tx)) != 0)
        pf_tx_set_path(tx, t);
}

static enum pf_verdict cache_on_request(struct pf_tx *tx, struct pf_slot *s)
{
    const struct pf_cache_conf *c = s->conf;
    struct cache_ctx *x = s->ctx;
    const char *m = pf_tx_method(tx);
    char key[KEY_MAX];
    const char *lines[LINES_MAX];
    struct req_scan r = {lines, 0, NULL, NULL, NULL};

    if (s->pstate == NULL)
        return PF_NEXT;
    if (c->purge_method && same_method(m, "PURGE"))
        return pf_cache_on_purge(c, tx, s);
    x->mode = M_BYPASS;
    x->fwd = "bypass";
    if (!same_method(m, "GET") && !same_method(m, "HEAD")) {
        x->unsafe = !pf_cache_method_safe(m);
        if (x->unsafe && pf_cache_tx_key(c, tx, pf_tx_path(tx), key, sizeof(key)))
            x->key = pf_arena_strndup(pf_tx_arena(tx), key, strlen(key));
        return PF_NEXT;
    }
    if (!pf_cache_tx_key(c, tx, pf_tx_path(tx), key, sizeof(key)))
        return PF_NEXT;
    x->key = pf_arena_strndup(pf_tx_arena(tx), key, strlen(key));
    x->debug_key = c->debug_key;
    x->mode = M_MISS;
    x->req_time = now_s();
    x->gen = pf_cstore_gen(s->pstate, x->key); /* a purge from now on: nothing stored */
    pf_tx_req_header_each(tx, scan_req, &r);
    pf_cc_parse(&x->req_cc, r.cc, r.n_cc);
    if (r.n_cc == 0 && r.pragma != NULL && strcasecmp(r.pragma, "no-cache") == 0)
        x->req_cc.no_cache = true; /* RFC 9111 §5.4: Pragma only without Cache-Control */
    x->no_store = x->req_cc.no_store;
    if (c->ignore_query.n > 0 && !x->no_store)
        strip_ignored(c, tx);
    if (pf_tx_is_background(tx))
        return pf_cache_refresh_request(tx, s, x);
    x->client_inm = req_copy(tx, r.inm);
    x->client_ims = req_copy(tx, r.ims);
    return pf_cache_after_lookup(c, tx, s, x, pf_cache_lookup(c, tx, s, x));
}

/* A miss (v PF_NEXT) of a request that may wait for another's fetch: coalesce it. */
enum pf_verdict pf_cache_after_lookup(const struct pf_cache_conf *c, struct pf_tx *tx,
                                      struct pf_slot *s, struct cache_ctx *x, enum pf_verdict v)
{
    /* a Range or a conditional gets a 206 / 304, never stored: it would lead a fetch for nothing */
    if (v != PF_NEXT || x->mode != M_MISS || !c->coalesce || pf_tx_is_head(tx) || x->no_store ||
        pf_tx_req_header(tx, "authorization") != NULL || pf_tx_req_header(tx, "range") != NULL ||
        x->client_inm != NULL || x->client_ims != NULL ||
        pf_cache_hfm_active(s->pstate, x->key, now_s()))
        return v;
    /*
     * Nothing was read from the store for this miss, and its fetch (or its wait) starts here: a
     * purge before now does not concern it, one from now on does. A flight from before a purge
     * is not joined (coalesce.c): its response is the purged one.
     */
    x->gen = pf_cstore_gen(s->pstate, x->key);
    switch (pf_coalesce_join(s->pstate, x->key, x->gen, tx, c->lock_timeout_ms, coalesced, s)) {
    case PF_COALESCE_LEADER:
        x->leader = true;
        return PF_NEXT;
    case PF_COALESCE_WAITING:
        if (!x->rejoined)
            pf_cache_count_coalesced(); /* once a request, as it starts waiting */
        return PF_PAUSED;
    case PF_COALESCE_ALONE:
    default:
        return PF_NEXT;
    }
}

/* The leader's fetch is over: wake the requests waiting for it. */
void pf_cache_leader_done(struct pf_slot *s, struct cache_ctx *x)
{
    if (x->leader) {
        x->leader = false;
        pf_coalesce_done(s->pstate, x->key, x->gen, now_s(), x->hfm_s);
    }
}

/* ---- the response ---- */

/* Replace the response by the stored o (status kept from o, or 304 for the client's conditional).
 */
static void replace_response(struct pf_tx *tx, struct pf_slot *s, struct cache_ctx *x,
                             struct pf_cobj *o, int64_t now, enum pf_cache_result r)
{
    int status = pf_cache_client_not_modified(x, o) ? 304 : o->status;

    pf_tx_set_status(tx, status);
    resp_clear(tx);
    pf_cache_put_stored_head(tx, o, status, o->body_len, now);
    x->emit = o;
    x->replacing = status != 304 && status != 204 && !pf_tx_is_head(tx);
    s->skip_body = false;
    pf_cache_count(r, x->replacing ? o->body_len : 0);
}

/* A 304 validated the stale entry: update it (headers, freshness), answer from it. */
static enum pf_verdict revalidated(const struct pf_cache_conf *c, struct pf_tx *tx,
                                   struct pf_slot *s, struct cache_ctx *x, int64_t now)
{
    struct pf_cobj *o = pf_cache_merge_304(c, tx, x, now);
    char vary[VARY_MAX];

    if (o == NULL)
        return PF_FAILED;
    /* a purge since the request started: the entry stays purged (the client is answered) */
    if (!x->no_store && pf_cstore_put_at(s->pstate, o, x->gen) == 0) {
        pf_cache_l2_store(c, tx, s, o, x->gen);
        if (pf_cstore_vary(s->pstate, o->key, vary, sizeof(vary)))
            pf_cache_l2_store_vary(c, tx, s, o, vary, x->gen); /* TTL: the refreshed entry's */
    }
    if (x->background) { /* nobody to answer: the entry is refreshed */
        pf_cobj_unref(o);
        x->refresh = PF_REFRESH_REVALIDATED;
        s->skip_body = true;
        pf_cache_leader_done(s, x);
        return PF_NEXT;
    }
    replace_response(tx, s, x, o, now, PF_CACHE_REVALIDATED);
    cache_status(tx, x, "pilotfish; fwd=%s; fwd-status=304; ttl=%lld", x->fwd,
                 pf_cache_ttl_of(c, o, now));
    return PF_NEXT;
}

static bool forbids_stale(const struct pf_cc *cc)
{
    return cc->must_revalidate || cc->proxy_revalidate || cc->no_cache || cc->s_maxage >= 0;
}

/* The upstream failed (5xx, or pilotfish's own 502/504) and a stale entry is there. */
static bool on_error(const struct pf_cache_conf *c, struct pf_tx *tx, struct pf_slot *s,
                     struct cache_ctx *x, int status, int64_t now)
{
    struct pf_cobj *o = x->stale;

    /* a request no-cache allows no stored response without a successful validation (RFC 9111
     * §5.2.1.4): the client gets the error */
    if (!x->req_cc.no_cache && pf_cache_stale_on_error(&o->meta, &c->policy, now)) {
        /* pilotfish's own error (circuit_open, no_healthy_upstream, ...): say which */
        const char *own = pf_tx_resp_header(tx, "x-pilotfish-error");
        char code[40];

        snprintf(code, sizeof(code), "%s%s", own != NULL ? "; fwd-error=" : "",
                 own != NULL ? own : "");
        x->stale = NULL; /* emit holds the reference now */
        replace_response(tx, s, x, o, now, PF_CACHE_STALE);
        cache_status(tx, x, "pilotfish; fwd=%s; fwd-status=%d; ttl=%lld; detail=stale-if-error%s",
                     x->fwd, status, pf_cache_ttl_of(c, o, now), code);
        return true;
    }
    /*
     * RFC 9111 §4.2.4: a stale response that must be revalidated and could not be: 504. The
     * error keeps its code (why the upstream could not be reached); on_body makes its JSON
     * body say 504 too.
     */
    if (status == 502 && pf_tx_resp_header(tx, "x-pilotfish-error") != NULL &&
        forbids_stale(&o->meta.cc)) {
        pf_tx_set_status(tx, 504);
        x->gateway_timeout = true;
        s->skip_body = false;
        cache_status(tx, x, "pilotfish; fwd=%s; fwd-status=%d; detail=must-revalidate", x->fwd,
                     status);
        pf_cache_count(PF_CACHE_MISS, 0);
        return true;
    }
    return false;
}

/* The JSON body of pilotfish's own 502 turned 504: "status":502 becomes 504 (same length, so
 * Content-Length holds). Kept whole until the end: it is one small buffer. */
static enum pf_verdict body_504(struct cache_ctx *x, struct pf_body *b)
{
    static const char from[] = "\"status\":502";
    unsigned char *p;
    size_t len;
    char *at;

    if (x->err_body == NULL && (x->err_body = evbuffer_new()) == NULL)
        return PF_FAILED;
    evbuffer_add_buffer(x->err_body, b->in);
    if (!b->eos)
        return PF_NEXT;
    len = evbuffer_get_length(x->err_body);
    p = evbuffer_pullup(x->err_body, -1);
    at = p != NULL ? memmem(p, len, from, sizeof(from) - 1) : NULL;
    if (at != NULL)
        at[sizeof(from) - 2] = '4';
    evbuffer_add_buffer(b->out, x->err_body);
    return PF_NEXT;
}

bool pf_cache_resp_field_kept(struct pf_tx *tx, const char *conn_value, const char *targeted,
                              bool withhold, const char *name)
{
    return strcasecmp(name, "age") != 0 && strcasecmp(name, "cache-status") != 0 &&
           pf_cache_header_stored(name, conn_value) &&
           !(withhold && pf_cache_field_withheld(resp_get, tx, targeted, name));
}

struct stored_arg {
    struct cache_ctx *x;
    struct pf_tx *tx;
    const char *targeted;
    bool withhold; /* Cache-Control has no-cache="..." or private="..." */
};

/* Copy one response header into the builder when it is stored (pf_cache_resp_field_kept). */
static int add_stored(void *arg, const char *name, const char *value)
{
    struct stored_arg *a = arg;

    if (pf_cache_resp_field_kept(a->tx, a->x->conn_value, a->targeted, a->withhold, name))
        pf_cobj_builder_header(a->x->b, name, value);
    return 0;
}

/* Should the response be stored? Starts the builder when so; the Cache-Status either way. */
static void maybe_store(const struct pf_cache_conf *c, struct pf_tx *tx, struct pf_slot *s,
                        struct cache_ctx *x, int status, int64_t now)
{
    const char *targeted = c->targeted_header[0] != '\0' ? c->targeted_header : NULL;
    const char *why = NULL;
    const char *lines[LINES_MAX];
    const char *cl = pf_tx_resp_header(tx, "content-length");
    char variant[VARIANT_MAX];
    struct pf_cache_meta m;
    unsigned n;

    pf_cache_meta_from_headers(&m, status, resp_get, tx, targeted, x->req_time, now);
    if (pf_tx_is_head(tx))
        why = "head";
    else if (!pf_cache_storable(pf_tx_method(tx), pf_tx_req_header(tx, "authorization") != NULL,
                                &x->req_cc, &m, &c->policy, &why))
        ;
    else if (cl != NULL && strtoull(cl, NULL, 10) > c->max_object_size)
        why = "too-big";
    n = resp_get(tx, "vary", lines, LINES_MAX);
    variant[0] = '\0';
    if (why == NULL && n > 0 &&
        !pf_cache_variant_key(lines, n, pf_cache_req_lines, tx, variant, sizeof(variant)))
        why = "vary";
    if (why != NULL) {
        /*
         * the next requests need not queue behind one fetch each; errors are not the URL's own,
         * nor is a 206 / 304 (an answer to the request's own Range or conditional)
         */
        if (x->leader && status < 500 && status != 206 && status != 304)
            x->hfm_s = pf_cache_hfm_ttl(
                pf_cache_lifetime(&m, &c->policy)); /* set by pf_cache_leader_done */
        cache_status(tx, x, "pilotfish; fwd=%s; fwd-status=%d; detail=%s", x->fwd, status,
                     why[0] != '\0' ? why : "not-storable");
        s->skip_body = true;
        return;
    }
    x->vary_set = n > 0;
    if (n > 0) {
        /* not in cache_ctx: a hit would clear it for nothing */
        x->vary = pf_arena_alloc_raw(pf_tx_arena(tx), VARY_MAX);
        join_lines(lines, n, x->vary, VARY_MAX);
    }
    x->conn_value = pf_tx_resp_header(tx, "connection");
    x->b = pf_cobj_builder_new(x->key, variant, status, &m, c->max_object_size);
    if (x->b != NULL) {
        struct stored_arg a = {x, tx, targeted, m.cc.no_cache_fields || m.cc.private_fields};

        pf_tx_resp_header_each(tx, add_stored, &a);
    }
    if (x->b != NULL && c->tag_header[0] != '\0' && pf_tx_resp_header(tx, c->tag_header) != NULL)
        pf_cobj_builder_tags(x->b, pf_tx_resp_header(tx, c->tag_header));
    pf_cache_collapse_lead(c, tx, s, x, &m, variant); /* the waiters start now */
    cache_status(tx, x, "pilotfish; fwd=%s; fwd-status=%d; stored", x->fwd, status);
}

/*
 * The response to a background refresh: store it; an error keeps the stale entry, and so does a
 * refusal to authenticate (401, 403, 407): the refresh went without the client's credentials, so
 * that answer is about the refresh, not about the resource.
 */
static void refresh_response(const struct pf_cache_conf *c, struct pf_tx *tx, struct pf_slot *s,
                             struct cache_ctx *x, int status, int64_t now)
{
    s->skip_body = true;
    if (status >= 500 || status == 401 || status == 403 || status == 407) {
        pf_cache_leader_done(s, x);
        return;
    }
    maybe_store(c, tx, s, x, status, now);
    if (x->b != NULL) {
        x->refresh = PF_REFRESH_UPDATED;
        s->skip_body = false;
        return;
    }
    x->refresh = PF_REFRESH_UNCACHEABLE;
    pf_cache_leader_done(s, x);
}

static enum pf_verdict cache_on_response(struct pf_tx *tx, struct pf_slot *s)
{
    const struct pf_cache_conf *c = s->conf;
    struct cache_ctx *x = s->ctx;
    int status = pf_tx_status(tx);
    int64_t now = now_s();

    if (s->pstate == NULL || x->fwd == NULL) {
        s->skip_body = true;
        return PF_NEXT;
    }
    if (x->mode == M_BYPASS) {
        if (x->unsafe)
            pf_cache_invalidate(c, tx, s, x);
        cache_status(tx, x, "pilotfish; fwd=bypass; fwd-status=%d", status);
        pf_cache_count(PF_CACHE_BYPASS, 0);
        s->skip_body = true;
        return PF_NEXT;
    }
    if (x->stale != NULL && x->mode == M_REVALIDATE && status == 304)
        return revalidated(c, tx, s, x, now);
    if (x->background) {
        refresh_response(c, tx, s, x, status, now);
        return PF_NEXT;
    }
    if (x->stale != NULL && status >= 500 && on_error(c, tx, s, x, status, now))
        return PF_NEXT;
    pf_cache_count(PF_CACHE_MISS, 0);
    maybe_store(c, tx, s, x, pf_tx_status(tx), now);
    if (x->b == NULL)
        pf_cache_leader_done(s, x); /* nothing to wait for: the waiters go upstream now */
    return PF_NEXT;
}

static enum pf_verdict cache_on_body(struct pf_tx *tx, struct pf_slot *s, struct pf_body *b)
{
    struct cache_ctx *x = s->ctx;
    struct pf_cobj *o;

    if (x->gateway_timeout)
        return body_504(x, b);
    if (x->replacing) {
        evbuffer_drain(b->in, evbuffer_get_length(b->in));
        if (b->eos && pf_cobj_body_to(x->emit, b->out, 0, x->emit->body_len) != 0)
            return PF_FAILED;
        return PF_NEXT;
    }
    if (x->b != NULL && !pf_cobj_builder_body(x->b, b->in)) {
        pf_cobj_builder_abandon(x->b); /* grew past max_object_size: never truncated */
        x->b = NULL;
    }
    if (x->grow != NULL && !pf_cache_collapse_body(tx, x, b->in))
        pf_cache_collapse_abandoned(tx, s, x);
    evbuffer_add_buffer(b->out, b->in);
    if (b->eos && x->b != NULL) {
        o = pf_cobj_builder_finish(x->b, now_s());
        x->b = NULL;
        /* purged while it was fetched (key, prefix, tag, invalidation): the purge stands, the
         * response still goes to its client and to the waiters */
        /* a response without Vary drops the record: lookups use variant "" again */
        if (o != NULL &&
            pf_cstore_set_vary_at(s->pstate, x->key, x->vary_set ? x->vary : NULL, x->gen) == 0 &&
            pf_cstore_put_at(s->pstate, o, x->gen) == 0) {
            pf_cache_l2_store(s->conf, tx, s, o, x->gen);
            if (x->vary_set)
                pf_cache_l2_store_vary(s->conf, tx, s, o, x->vary, x->gen);
        }
        if (o != NULL) {
            pf_cobj_unref(o);
            pf_cache_collapse_end(x, true);
        }
    }
    if (b->eos) {
        pf_cache_collapse_end(x, false); /* not stored: the waiters' responses are cut */
        pf_cache_leader_done(s, x);
    }
    (void)tx;
    return PF_NEXT;
}

static void cache_on_done(struct pf_tx *tx, struct pf_slot *s)
{
    struct cache_ctx *x = s->ctx;

    (void)tx;
    if (x->b != NULL) {
        pf_cobj_builder_abandon(x->b); /* the body never ended: nothing stored */
        if (x->refresh == PF_REFRESH_UPDATED)
            x->refresh = PF_REFRESH_FAILED;
    }
    if (x->background)
        pf_cache_count_refresh(x->refresh);
    pf_cache_collapse_done(x);
    pf_cache_leader_done(s, x);
    if (x->l2_get != 0)
        pf_l2_cancel(pf_cache_l2_of(s), x->l2_get); /* its callback would find the ctx freed */
    pf_cobj_unref(x->stale);
    pf_cobj_unref(x->emit);
    if (x->err_body != NULL)
        evbuffer_free(x->err_body);
    x->err_body = NULL;
    x->b = NULL;
    x->stale = NULL;
    x->emit = NULL;
}

/* ---- process state: the L1 store outlives a reload that keeps `memory` ---- */

/*
 * Shards of the store (16 at most): each holds memory / shards, and refuses
 * an object bigger than that, so each must still hold a few of the largest.
 */
static unsigned shards_of(const struct pf_cache_conf *c)
{
    unsigned n = 16;

    while (n > 1 && c->memory / n < 4 * c->max_object_size)
        n /= 2;
    return n;
}

static int cache_init_process(const void *conf, void **pstate)
{
    const struct pf_cache_conf *c = conf;

    *pstate = pf_cstore_new((size_t)c->memory, shards_of(c));
    if (*pstate != NULL)
        pf_cache_bus_register(*pstate); /* purges published by other processes reach it */
    return *pstate != NULL ? 0 : -12;
}

static bool cache_reuse_process(const void *old_conf, const void *new_conf)
{
    const struct pf_cache_conf *o = old_conf, *n = new_conf;

    return o->memory == n->memory && shards_of(o) == shards_of(n);
}

static void cache_fini_process(void *pstate)
{
    pf_cache_bus_unregister(pstate);
    pf_cstore_free(pstate);
}

const struct pf_filter_ops pf_filter_cache = {
    .name = "cache",
    .ctx_size = sizeof(struct cache_ctx),
    .conf_parse = pf_cache_conf_parse,
    .conf_free = pf_cache_conf_free,
    .worker_init = pf_cache_worker_init,
    .worker_start = pf_cache_worker_start,
    .worker_fini = pf_cache_worker_fini,
    .on_request = cache_on_request,
    .on_response = cache_on_response,
    .on_body = cache_on_body,
    .on_done = cache_on_done,
    .init_process = cache_init_process,
    .reuse_process = cache_reuse_process,
    .fini_process = cache_fini_process,
    .metrics = pf_cache_metrics,
    .admin = pf_cache_admin,
};
