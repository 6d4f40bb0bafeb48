/*
 * filters/cache/collapse.c: coalesced requests served from the leader's
 * response while it streams in (docs/filters/cache.md, "Coalescing").
 *
 * The leader (the request that fetches a key for the others) publishes its
 * response as a struct pf_cgrow (grow.c) as soon as on_response has decided
 * to store it, copies every body chunk into it, and ends it complete (after
 * the object is in the store), dropped (the body grew past max_object_size)
 * or abandoned (the fetch failed or was cut). It asks the core to keep
 * fetching when its own client goes away, so that the waiters and the store
 * still get the whole response, and, while anyone reads the object, not to
 * follow its own client's pace (pf_tx_unpace): a stalled client of the leader
 * then holds at most max_object_size in its output, and stalls nobody else.
 *
 * A waiter woken with the pf_cgrow subscribes to it and stays paused until
 * the object has body bytes or has ended; then it answers with a streamed
 * reply (pf_tx_reply_stream): the stored head, an Age, Content-Length when the
 * leader's response had one (else chunked), Cache-Status "hit; collapsed";
 * then every chunk as it arrives, on its own worker, by reference to the
 * object's chunks. An object dropped before the waiter's reply started sends
 * it upstream itself; an abandoned one gets it a 502. Once the reply started,
 * an object that ends incomplete cuts the waiter's response (pf_tx_reply_cut:
 * a 502 when nothing reached the socket yet, else a closed connection), never
 * a complete framing around a partial body. A waiter whose Vary variant differs from the leader's,
 * or with a Range or a conditional of its own, goes upstream instead, and so does an HTTP/1.0 one
 * when the length is unknown: its body would be close-delimited, and a cut would look like the end.
 */
#include "filters/cache/cache-int.h"

#include <stdlib.h>
#include <strings.h>

#include <event2/buffer.h>

#include "proxy/arena.h"

/* ---- the leader ---- */

/* On the leader's worker: a request subscribed to its object; the fetch no longer waits for the
 * leader's client (pf_cgrow_watch is withdrawn before x goes). */
static void readers_came(struct pf_worker *w, void *arg)
{
    struct pf_slot *s = arg;
    struct cache_ctx *x = s->ctx;
    struct pf_tx *tx = pf_tx_deref(x->ref);

    (void)w;
    if (tx != NULL && x->grow != NULL && pf_cgrow_readers(x->grow) > 0)
        pf_tx_unpace(tx, true); /* tx may end here */
}

struct fields {
    struct pf_arena *a;
    struct pf_tx *tx;
    const char *conn_value;
    const char *targeted;
    bool withhold;
    struct pf_chdr *v;
    size_t n, max;
};

/* The fields the stored object keeps: the waiters get no more than a hit would. */
static int collect_stored(void *arg, const char *name, const char *value)
{
    struct fields *f = arg;

    if (f->n < f->max &&
        pf_cache_resp_field_kept(f->tx, f->conn_value, f->targeted, f->withhold, name)) {
        f->v[f->n].name = name;
        f->v[f->n].value = value;
        f->n++;
    }
    return 0;
}

void pf_cache_collapse_lead(const struct pf_cache_conf *c, struct pf_tx *tx, struct pf_slot *s,
                            struct cache_ctx *x, const struct pf_cache_meta *m, const char *variant)
{
    const char *cl = pf_tx_resp_header(tx, "content-length");
    struct fields f = {pf_tx_arena(tx),
                       tx,
                       pf_tx_resp_header(tx, "connection"),
                       c->targeted_header[0] != '\0' ? c->targeted_header : NULL,
                       m->cc.no_cache_fields || m->cc.private_fields,
                       NULL,
                       0,
                       256};
    struct pf_cgrow_head h;

    if (!x->leader || x->b == NULL || x->grow != NULL)
        return;
    f.v = pf_arena_alloc(f.a, f.max * sizeof(*f.v));
    pf_tx_resp_header_each(tx, collect_stored, &f);
    h.status = pf_tx_status(tx);
    h.meta = *m;
    h.hdrs = f.v;
    h.n_hdrs = f.n;
    h.variant = variant;
    h.vary = x->vary_set ? x->vary : NULL;
    h.length = cl != NULL ? (long long)strtoull(cl, NULL, 10) : -1;
    x->grow = pf_cgrow_new(&h, c->max_object_size);
    x->ref = pf_tx_ref(tx);
    pf_cgrow_watch(x->grow, pf_tx_worker(tx), readers_came, s);
    pf_coalesce_stream(s->pstate, x->key, x->gen, x->grow);
    pf_tx_keep_fetching(tx);
}

bool pf_cache_collapse_body(struct pf_tx *tx, struct cache_ctx *x, struct evbuffer *buf)
{
    if (x->grow == NULL)
        return true;
    if (x->b == NULL) {
        pf_cgrow_drop(x->grow); /* the object was abandoned (too big) */
        return false;
    }
    if (!pf_cgrow_append(x->grow, buf))
        return false;
    /* the fetch follows the client's pace again once nobody else reads */
    pf_tx_unpace(tx, pf_cgrow_readers(x->grow) > 0);
    return true;
}

void pf_cache_collapse_end(struct cache_ctx *x, bool complete)
{
    if (x->grow == NULL)
        return;
    pf_cgrow_end(x->grow, complete);
    pf_cgrow_watch(x->grow, NULL, NULL, NULL); /* x goes with the tx */
    pf_cgrow_unref(x->grow);
    x->grow = NULL;
}

/*
 * The leader's object grew past max_object_size mid-body: its waiters are cut, the flight ends now
 * (not when the body does) so that new requests go upstream rather than join a dead object, and a
 * marker lets the next ones go in parallel instead of each leading a fetch that ends the same way.
 */
void pf_cache_collapse_abandoned(struct pf_tx *tx, struct pf_slot *s, struct cache_ctx *x)
{
    const struct pf_cache_conf *c = s->conf;

    if (x->b != NULL) {
        pf_cobj_builder_abandon(x->b);
        x->b = NULL;
    }
    x->hfm_s = pf_cache_hfm_ttl(pf_cache_lifetime(&x->grow->meta, &c->policy));
    pf_cache_collapse_end(x, false);
    pf_cache_leader_done(s, x);
    pf_tx_unpace(tx, false);
    pf_tx_stop_fetching(tx); /* no store, no waiters: no reason to read on without the client */
}

/* ---- a waiter ---- */

/* Can tx be answered with g as it is (same variant, no range or conditional of its own, and a
 * framing that shows a cut)? */
static bool fits(struct pf_tx *tx, struct cache_ctx *x, const struct pf_cgrow *g)
{
    char variant[VARIANT_MAX];
    const char *line = g->vary;

    if (x->client_inm != NULL || x->client_ims != NULL || pf_tx_req_header(tx, "range") != NULL)
        return false;
    /* HTTP/1.0 without a length: close-delimited, where a cut would read as a complete body */
    if (g->length < 0 && pf_tx_http_minor(tx) == 0)
        return false;
    if (g->vary == NULL)
        return true;
    if (!pf_cache_variant_key(&line, 1, pf_cache_req_lines, tx, variant, sizeof(variant)) ||
        strcmp(variant, g->variant) != 0) {
        x->fwd = "vary-miss";
        return false;
    }
    return true;
}

/* The streamed reply's head: the stored one, Age, Content-Length when known, Cache-Status. */
static void reply_head(const struct pf_cache_conf *c, struct pf_tx *tx, struct cache_ctx *x,
                       const struct pf_cgrow *g)
{
    char num[32];
    char buf[STATUS_MAX];
    int64_t now = now_s();
    size_t n;

    pf_tx_reply_stream(tx, g->status);
    for (unsigned i = 0; i < g->n_hdrs; i++)
        pf_tx_resp_header_add(tx, g->hdrs[i].name, g->hdrs[i].value);
    fmt_ll(num, (long long)pf_cache_age(&g->meta, now));
    pf_tx_resp_header_add(tx, "Age", num);
    if (g->length >= 0) {
        pf_fmt_u64(num, (uint64_t)g->length);
        pf_tx_resp_header_add(tx, "Content-Length", num);
    }
    memcpy(buf, "pilotfish; hit; ttl=", 20);
    n = 20 + fmt_ll(buf + 20, (long long)(pf_cache_lifetime(&g->meta, &c->policy) -
                                          pf_cache_age(&g->meta, now)));
    buf[n] = '\0';
    pf_cache_status_line(tx, x, buf, (int)n); /* "; collapsed" follows */
}

/* The waiter is done with its object (x->sub_grow's reference is the caller's now). */
static void leave(struct cache_ctx *x)
{
    pf_cgrow_unsubscribe(x->sub);
    x->sub = NULL;
    x->sub_grow = NULL;
}

/*
 * The waiter's first bytes (b), or its object's end before any: it replies now (true), or it
 * goes upstream (dropped: not stored, so the waiter fetches for itself, as after a response that
 * is not stored) or answers 502 (the fetch failed) and leaves (false). False too when tx ended in
 * the reply.
 */
static bool start_reply(struct pf_slot *s, struct pf_tx *tx, struct cache_ctx *x,
                        enum pf_cgrow_state st)
{
    struct pf_cgrow *g = x->sub_grow;
    struct pf_tx_ref ref = x->ref;

    if (st == PF_CGROW_DROPPED || st == PF_CGROW_ABANDONED) {
        leave(x);
        pf_cgrow_unref(g);
        if (st == PF_CGROW_ABANDONED)
            pf_tx_error(tx, 502, PF_ERR_BAD_RESPONSE);
        pf_tx_resume(tx, st == PF_CGROW_DROPPED ? PF_NEXT : PF_REPLIED);
        return false;
    }
    reply_head(s->conf, tx, x, g);
    x->replying = true;
    pf_tx_resume(tx, PF_REPLIED); /* the head goes out */
    return pf_tx_deref(ref) != NULL;
}

/* On the waiter's worker: new bytes, or the end. */
static void pump(struct pf_worker *w, void *arg)
{
    struct pf_slot *s = arg;
    struct cache_ctx *x = s->ctx;
    struct pf_tx *tx = pf_tx_deref(x->ref);
    struct evbuffer *b;
    enum pf_cgrow_state st;
    struct pf_cgrow *g = x->sub_grow;

    (void)w;
    if (tx == NULL || x->sub == NULL)
        return; /* ended: on_done unsubscribes */
    b = pf_evbuffer_new();
    st = pf_cgrow_read(x->sub, b);
    if (!x->replying && st == PF_CGROW_GROWING && evbuffer_get_length(b) == 0) {
        evbuffer_free(b); /* nothing to send yet: a drop now can still send it upstream */
        return;
    }
    if (!x->replying && !start_reply(s, tx, x, st)) {
        evbuffer_free(b); /* tx went upstream, answered 502, or ended */
        return;
    }
    x->streamed += evbuffer_get_length(b);
    if (st == PF_CGROW_GROWING) {
        pf_tx_reply_body(tx, b, false);
    } else {
        leave(x); /* g is released below: tx (and x) may end in the reply */
        if (st == PF_CGROW_COMPLETE && (g->length < 0 || (long long)x->streamed == g->length)) {
            pf_cache_count(PF_CACHE_HIT, x->streamed);
            pf_tx_reply_body(tx, b, true);
        } else {
            pf_tx_reply_cut(tx);
        }
        pf_cgrow_unref(g);
    }
    evbuffer_free(b);
}

enum pf_verdict pf_cache_collapse_start(const struct pf_cache_conf *c, struct pf_tx *tx,
                                        struct pf_slot *s, struct cache_ctx *x, struct pf_cgrow *g)
{
    (void)c;
    if (!fits(tx, x, g))
        return PF_NEXT;
    /* paused until the object has bytes or has ended (pump): then a reply, or upstream */
    x->ref = pf_tx_ref(tx);
    x->sub_grow = pf_cgrow_ref(g);
    x->sub = pf_cgrow_subscribe(g, pf_tx_worker(tx), pump, s);
    return PF_PAUSED;
}

void pf_cache_collapse_done(struct cache_ctx *x)
{
    pf_cgrow_unsubscribe(x->sub);
    x->sub = NULL;
    pf_cgrow_unref(x->sub_grow);
    x->sub_grow = NULL;
    pf_cache_collapse_end(x, false);
}
