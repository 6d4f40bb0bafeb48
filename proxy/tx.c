/*
 * Transactions: the lifecycle of one request and its response (start, the
 * chain around the upstream, replies and errors, the end), and the pf_tx
 * accessors of proxy/filter.h.
 */
#include "proxy/tx.h"

#include <stdio.h>
#include <string.h>
#include <strings.h>

#include <event2/buffer.h>

#include "proxy/accesslog.h"
#include "proxy/admin.h"
#include "proxy/arena.h"
#include "proxy/bufpool.h"
#include "proxy/chain.h"
#include "proxy/clock.h"
#include "proxy/errors.h"
#include "proxy/http1.h"
#include "proxy/log.h"
#include "proxy/route.h"
#include "proxy/sbuf.h"
#include "proxy/server.h"
#include "proxy/stats.h"
#include "proxy/trace.h"
#include "proxy/upstream/upstream.h"

/* ---- filter.h accessors ---- */

struct pf_arena *pf_tx_arena(struct pf_tx *tx)
{
    return tx->arena;
}

struct pf_worker *pf_tx_worker(struct pf_tx *tx)
{
    return tx->w;
}

const char *pf_tx_method(const struct pf_tx *tx)
{
    return tx->method;
}

const char *pf_tx_path(const struct pf_tx *tx)
{
    return tx->url;
}

const char *pf_tx_host(const struct pf_tx *tx)
{
    return tx->host;
}

int pf_tx_http_minor(const struct pf_tx *tx)
{
    return tx->http_minor;
}

bool pf_tx_is_head(const struct pf_tx *tx)
{
    return tx->method_id == HTTP_HEAD;
}

const char *pf_tx_client_addr(const struct pf_tx *tx)
{
    if (tx->conn != NULL)
        return tx->conn->client;
    return tx->bg_client != NULL ? tx->bg_client : "-";
}

const char *pf_tx_route_name(const struct pf_tx *tx)
{
    return tx->route != NULL ? tx->route->name : "";
}

const char *pf_tx_upstream_name(const struct pf_tx *tx)
{
    return tx->up != NULL ? tx->up->name : "";
}

const char *pf_tx_req_header(const struct pf_tx *tx, const char *name)
{
    return pf_hdrs_get(&tx->req, name);
}

static void hdrs_each(const struct pf_hdrs *h, pf_header_fn fn, void *arg)
{
    for (unsigned i = 0; i < h->n; i++) {
        if (fn(arg, h->v[i].name, h->v[i].value) != 0)
            return;
    }
}

void pf_tx_req_header_each(const struct pf_tx *tx, pf_header_fn fn, void *arg)
{
    hdrs_each(&tx->req, fn, arg);
}

int pf_tx_status(const struct pf_tx *tx)
{
    return tx->status;
}

const char *pf_tx_resp_header(const struct pf_tx *tx, const char *name)
{
    return pf_hdrs_get(&tx->resp, name);
}

void pf_tx_resp_header_each(const struct pf_tx *tx, pf_header_fn fn, void *arg)
{
    hdrs_each(&tx->resp, fn, arg);
}

void pf_tx_resp_header_set(struct pf_tx *tx, const char *name, const char *value)
{
    tx->resp_raw = NULL;
    pf_hdrs_del(&tx->resp, name);
    pf_hdrs_add(tx->arena, &tx->resp, name, value);
}

void pf_tx_resp_header_add(struct pf_tx *tx, const char *name, const char *value)
{
    pf_hdrs_add(tx->arena, &tx->resp, name, value);
}

void pf_tx_resp_header_add_ref(struct pf_tx *tx, const char *name, const char *value)
{
    pf_hdrs_add_ref(tx->arena, &tx->resp, name, strlen(name), value, strlen(value));
}

void pf_tx_resp_fields_ref(struct pf_tx *tx, const struct pf_hdr *v, unsigned n)
{
    pf_hdrs_add_many(tx->arena, &tx->resp, v, n);
}

void pf_tx_resp_header_del(struct pf_tx *tx, const char *name)
{
    tx->resp_raw = NULL;
    pf_hdrs_del(&tx->resp, name);
}

unsigned pf_tx_resp_raw_put(const struct pf_tx *tx, const char *conn_value, struct pf_sbuf *b)
{
    if (tx->resp_raw == NULL || conn_value != NULL || tx->resp_raw_n > tx->resp.n)
        return 0;
    pf_sb_put(b, tx->resp_raw, tx->resp_raw_len);
    return tx->resp_raw_n;
}

void pf_tx_resp_raw(struct pf_tx *tx, const char *raw, size_t len)
{
    tx->resp_raw = raw;
    tx->resp_raw_len = len;
    tx->resp_raw_n = tx->resp.n;
}

void pf_tx_req_header_set(struct pf_tx *tx, const char *name, const char *value)
{
    pf_hdrs_del(&tx->req, name);
    pf_hdrs_add(tx->arena, &tx->req, name, value);
}

void pf_tx_req_header_del(struct pf_tx *tx, const char *name)
{
    pf_hdrs_del(&tx->req, name);
}

void pf_tx_set_path(struct pf_tx *tx, const char *path)
{
    tx->url = pf_arena_strndup(tx->arena, path, strlen(path));
}

void pf_tx_set_status(struct pf_tx *tx, int status)
{
    tx->status = status;
}

bool pf_tx_client_privileged(const struct pf_tx *tx)
{
    const char *client = pf_tx_client_addr(tx);
    const char *token = tx->cfg->admin_token;
    const char *auth = pf_tx_req_header(tx, "authorization");

    if (strncmp(client, "127.", 4) == 0 || strcmp(client, "::1") == 0 ||
        strcmp(client, "unix") == 0 || strncmp(client, "::ffff:127.", 11) == 0)
        return true;
    return token != NULL && token[0] != '\0' && auth != NULL &&
           strncasecmp(auth, "Bearer ", 7) == 0 &&
           pf_admin_token_equal(auth + 7, strlen(auth + 7), token);
}

/* ---- lifetime ---- */

void pf_tx_ids(struct pf_tx *tx)
{
    if (tx->request_id == NULL)
        pf_trace_request_id(tx);
    if (tx->traceparent[0] == '\0')
        pf_trace_start(tx);
}

static void evbuffer_put_cb(void *arg)
{
    pf_bufpool_evbuffer_put(arg); /* the arena ends on the tx's worker: its pool */
}

/* A buffer for the transaction's life, from this worker's pool and back to it. */
static struct evbuffer *tx_evbuffer(struct pf_tx *tx)
{
    struct evbuffer *b = pf_bufpool_evbuffer();

    pf_arena_defer(tx->arena, evbuffer_put_cb, b);
    return b;
}

struct pf_tx *pf_tx_new(struct pf_conn *c)
{
    struct pf_arena *a = pf_arena_new(PF_ARENA_CHUNK);
    struct pf_tx *tx = pf_arena_alloc(a, sizeof(*tx));

    tx->arena = a;
    tx->w = c->w;
    tx->conn = c;
    tx->wc = c->w->wc;
    tx->wc->refs++;
    tx->cfg = tx->wc->cfg;
    tx->is_admin = c->is_admin;
    tx->is_probe = c->is_probe;
    tx->t_start = pf_now_us();
    tx->client_keepalive = true;
    return tx;
}

/* The response went out whole (or cannot): end the transaction. */
static void tx_finish(struct pf_tx *tx)
{
    tx->phase = PF_TX_DONE;
    if (!tx->req_done)
        tx->close_after = true; /* an unread request body is not waited for */
    if (tx->conn != NULL)
        pf_conn_tx_done(tx->conn);
    else
        pf_tx_free(tx);
}

void pf_tx_free(struct pf_tx *tx)
{
    pf_txref_release(tx); /* before on_done: a waiter woken from there finds nothing */
    if (tx->background || tx->detached) {
        event_del(&tx->bg_start);
        TAILQ_REMOVE(&tx->w->bg_txs, tx, bg_link);
    }
    if (tx->timer_set)
        event_del(&tx->timer);
    pf_upstream_end(tx);
    pf_chain_done(tx);
    if (tx->route == NULL && !tx->is_admin)
        pf_stats_count_unrouted(tx); /* no chain ran, so no metrics filter either */
    tx->w->requests++;
    if (!pf_alog_is_off() && !tx->is_admin) {
        if (tx->ids_due)
            pf_tx_ids(tx); /* not for a request refused while its head was read */
        pf_accesslog_write(tx);
    }
    pf_server_wconf_unref(tx->w, tx->wc);
    pf_arena_free(tx->arena);
}

/* A detached transaction's first turn: its upstream read may be blocked on the gone client. */
static void detached_cb(evutil_socket_t fd, short what, void *arg)
{
    struct pf_tx *tx = arg;

    (void)fd;
    (void)what;
    if (tx->uc != NULL)
        pf_upstream_resume_read(tx->uc);
}

/*
 * pf_tx_keep_fetching: the client went away while the response is being
 * read; the transaction goes on without it, as a background one does (in
 * bg_txs, so that a stopping worker aborts it). True when it did.
 */
static bool tx_detach(struct pf_tx *tx, enum pf_error why)
{
    const char *client;

    if (!tx->keep_fetching || tx->conn == NULL || tx->uc == NULL || !tx->req_done ||
        tx->resp_done || why != PF_ERR_CLIENT_ABORT)
        return false;
    client = tx->conn->client;
    tx->bg_client = pf_arena_strndup(tx->arena, client, strlen(client));
    tx->conn->tx = NULL;
    tx->conn = NULL;
    tx->detached = true;
    if (tx->error == PF_ERR_NONE)
        tx->error = why; /* for the access log */
    TAILQ_INSERT_TAIL(&tx->w->bg_txs, tx, bg_link);
    event_assign(&tx->bg_start, tx->w->base, -1, 0, detached_cb, tx);
    event_active(&tx->bg_start, EV_TIMEOUT, 1);
    return true;
}

void pf_tx_keep_fetching(struct pf_tx *tx)
{
    tx->keep_fetching = true;
}

void pf_tx_unpace(struct pf_tx *tx, bool on)
{
    tx->unpaced = on;
    if (on && tx->uc != NULL)
        pf_upstream_resume_read(tx->uc); /* a no-op unless it waits for the client */
}

/* From the loop: a detached fetch nobody needs any more. */
static void stop_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    pf_tx_abort(arg, PF_ERR_CLIENT_ABORT);
}

void pf_tx_stop_fetching(struct pf_tx *tx)
{
    tx->keep_fetching = false;
    if (!tx->detached)
        return;
    event_del(&tx->bg_start); /* pf_tx_free deletes it if tx ends first */
    event_assign(&tx->bg_start, tx->w->base, -1, 0, stop_cb, tx);
    event_active(&tx->bg_start, EV_TIMEOUT, 1);
}

void pf_tx_abort(struct pf_tx *tx, enum pf_error why)
{
    struct pf_conn *c = tx->conn;

    if (tx_detach(tx, why))
        return;
    if (c != NULL)
        c->tx = NULL;
    tx->conn = NULL;
    if (tx->error == PF_ERR_NONE && tx->phase != PF_TX_DONE) {
        tx->error = why;
        if (!tx->head_sent)
            tx->status = 499;
    }
    if (tx->uc != NULL)
        pf_upstream_abort(tx);
    pf_tx_free(tx);
}

static void tx_dispatch(struct pf_tx *tx, enum pf_verdict v);
static void tx_send_reply(struct pf_tx *tx);
static bool tx_fail_pending(struct pf_tx *tx);

/* ---- background transactions (no client) ---- */

bool pf_tx_is_background(const struct pf_tx *tx)
{
    return tx->background;
}

/* From the loop: run the chain from the filter that asked, then the upstream. */
static void bg_start_cb(evutil_socket_t fd, short what, void *arg)
{
    struct pf_tx *tx = arg;

    (void)fd;
    (void)what;
    tx->phase = PF_TX_FILTERS;
    pf_trace_request_id(tx);
    pf_trace_start(tx);
    tx_dispatch(tx, pf_chain_request(tx));
}

bool pf_tx_background(struct pf_tx *tx, struct pf_slot *s)
{
    struct pf_worker *w = tx->w;
    struct pf_arena *a;
    struct pf_tx *bg;
    const char *client;
    struct timeval now = {0, 0};

    if (w->draining || tx->route == NULL || s < tx->slots || s >= tx->slots + tx->n_filters)
        return false;
    a = pf_arena_new(PF_ARENA_CHUNK);
    bg = pf_arena_alloc(a, sizeof(*bg));
    bg->arena = a;
    bg->w = w;
    bg->wc = tx->wc; /* the snapshot (and the filters' state) outlive bg */
    bg->wc->refs++;
    bg->cfg = tx->cfg;
    bg->route = tx->route;
    bg->up = tx->up;
    bg->t_start = pf_now_us();
    bg->client_keepalive = true;
    bg->background = true;
    client = pf_tx_client_addr(tx); /* X-Forwarded-For names the client it refreshes for */
    bg->bg_client = pf_arena_strndup(a, client, strlen(client));
    bg->method = "GET";
    bg->method_id = HTTP_GET;
    bg->url = pf_arena_strndup(a, tx->url, strlen(tx->url));
    bg->http_major = 1;
    bg->http_minor = 1;
    bg->req_done = true;
    for (unsigned i = 0; i < tx->req.n; i++)
        pf_hdrs_add(a, &bg->req, tx->req.v[i].name, tx->req.v[i].value);
    if (tx->host != NULL)
        bg->host = pf_arena_strndup(a, tx->host, strlen(tx->host));
    bg->host_from_target = tx->host_from_target;
    pf_chain_init(bg);
    bg->next_filter = (unsigned)(s - tx->slots); /* the filters before it do not run */
    TAILQ_INSERT_TAIL(&w->bg_txs, bg, bg_link);
    event_assign(&bg->bg_start, w->base, -1, 0, bg_start_cb, bg);
    event_add(&bg->bg_start, &now);
    return true;
}

void pf_tx_abort_background(struct pf_worker *w)
{
    struct pf_tx *tx;

    while ((tx = TAILQ_FIRST(&w->bg_txs)) != NULL)
        pf_tx_abort(tx, PF_ERR_CLIENT_ABORT);
}

/* ---- the request path ---- */

void pf_tx_start(struct pf_tx *tx)
{
    tx->phase = PF_TX_FILTERS;
    tx->ids_due = true; /* made when needed: a reply from a filter (a cache hit) needs none */
    if (tx->is_admin) {
        /* refused on the head alone: the body is never read */
        if (!pf_admin_head_ok(tx)) {
            tx_send_reply(tx);
            return;
        }
        /* the admin API answers once the (small) body is in */
        tx->req_buf = tx_evbuffer(tx);
        if (tx->req_done) {
            pf_admin_handle(tx);
            tx_send_reply(tx);
        } else {
            pf_conn_resume_body(tx->conn);
        }
        return;
    }
    if (pf_route_select(tx) != 0) {
        pf_tx_fail(tx, 400, PF_ERR_BAD_REQUEST); /* double encoding in the path */
        return;
    }
    if (tx->route == NULL) {
        pf_tx_fail(tx, 404, PF_ERR_NO_ROUTE);
        return;
    }
    tx->up = &tx->cfg->upstreams[tx->route->upstream];
    pf_chain_init(tx);
    tx_dispatch(tx, pf_chain_request(tx));
}

static void tx_dispatch(struct pf_tx *tx, enum pf_verdict v)
{
    if (tx_fail_pending(tx))
        return;
    switch (v) {
    case PF_NEXT:
        tx->phase = PF_TX_UPSTREAM;
        pf_tx_ids(tx);
        pf_upstream_start(tx);
        break;
    case PF_REPLIED:
        tx_send_reply(tx);
        break;
    case PF_FAILED:
        pf_tx_fail(tx, 500, PF_ERR_FILTER_FAILED);
        break;
    case PF_PAUSED:
        break;
    }
}

void pf_tx_resume(struct pf_tx *tx, enum pf_verdict v)
{
    if (tx->phase != PF_TX_FILTERS)
        return;
    if (tx->in_chain) {
        /* called from inside on_request: pf_chain_request() takes it on return */
        tx->resume_pending = true;
        tx->resume_verdict = v;
        return;
    }
    if (v == PF_NEXT) {
        tx->next_filter++;
        v = pf_chain_request(tx);
    } else if (v != PF_PAUSED) {
        tx->out_from = tx->next_filter;
        if (v == PF_FAILED)
            pf_log(PF_LOG_ERR, "filter failed after pause");
    }
    tx_dispatch(tx, v);
}

void pf_tx_req_body(struct pf_tx *tx, struct evbuffer *src, size_t len)
{
    if (tx->uc != NULL || tx->req_buffering)
        pf_upstream_send_body(tx, src, len);
    else if (tx->req_buf != NULL && evbuffer_get_length(tx->req_buf) + len <= PF_ADMIN_BODY_MAX)
        evbuffer_remove_buffer(src, tx->req_buf, len); /* admin: small bodies only */
    else
        evbuffer_drain(src, len); /* answered already, or too big: discarded */
}

void pf_tx_req_end(struct pf_tx *tx)
{
    tx->req_done = true;
    if (tx->is_admin && tx->phase == PF_TX_FILTERS) {
        pf_admin_handle(tx);
        tx_send_reply(tx);
        return;
    }
    if (tx->uc != NULL || tx->req_buffering)
        pf_upstream_send_end(tx);
}

/* ---- replies ---- */

struct evbuffer *pf_tx_reply_bare(struct pf_tx *tx, int status, struct evbuffer *body)
{
    tx->status = status;
    tx->resp.n = 0;
    tx->resp_raw = NULL;
    tx->reply_open = false;
    if (tx->reply == NULL)
        tx->reply = tx_evbuffer(tx);
    else
        evbuffer_drain(tx->reply, evbuffer_get_length(tx->reply));
    if (body != NULL)
        evbuffer_add_buffer(tx->reply, body);
    return tx->reply;
}

void pf_tx_reply(struct pf_tx *tx, int status, struct evbuffer *body)
{
    char len[24];

    pf_tx_reply_bare(tx, status, body);
    pf_hdrs_add(tx->arena, &tx->resp, "Date", pf_http_date());
    pf_fmt_u64(len, evbuffer_get_length(tx->reply));
    pf_hdrs_add(tx->arena, &tx->resp, "Content-Length", len);
}

void pf_tx_reply_stream(struct pf_tx *tx, int status)
{
    pf_tx_reply_bare(tx, status, NULL); /* the filter adds every field, Date too */
    tx->reply_open = true;
}

void pf_tx_reply_body(struct pf_tx *tx, struct evbuffer *data, bool eos)
{
    if (tx->phase != PF_TX_REPLYING || !tx->reply_open) {
        if (data != NULL)
            evbuffer_drain(data, evbuffer_get_length(data));
        return;
    }
    if (data != NULL && evbuffer_get_length(data) > 0 && !pf_tx_resp_body(tx, data))
        return; /* the transaction has ended */
    if (eos) {
        tx->reply_open = false;
        pf_tx_resp_end(tx);
    }
}

void pf_tx_reply_cut(struct pf_tx *tx)
{
    tx->reply_open = false;
    pf_tx_fail(tx, 502, PF_ERR_BAD_RESPONSE);
}

/* The JSON error reply of pf_tx_error(), without counting it. */
static void tx_error_reply(struct pf_tx *tx, int status, enum pf_error code)
{
    struct evbuffer *b = pf_evbuffer_new();

    if (tx->request_id == NULL)
        pf_trace_request_id(tx);
    evbuffer_add_printf(b, "{\"error\":\"%s\",\"status\":%d,\"request_id\":\"", pf_error_name(code),
                        status);
    if (tx->request_id != NULL)
        pf_json_escape(b, tx->request_id, strlen(tx->request_id));
    evbuffer_add(b, "\"}\n", 3);
    pf_tx_reply(tx, status, b);
    evbuffer_free(b);
    pf_hdrs_add(tx->arena, &tx->resp, "Content-Type", "application/json");
    pf_hdrs_add(tx->arena, &tx->resp, "X-Pilotfish-Error", pf_error_name(code));
}

void pf_tx_error(struct pf_tx *tx, int status, enum pf_error code)
{
    tx_error_reply(tx, status, code);
    pf_error_count(tx->w, code);
    tx->error = code;
}

/*
 * Take back a response none of whose bytes has reached the socket yet (the
 * head and a bad body arrived in the same read): the client can still get an
 * error status instead of a cut. True when it was taken back. Bytes ahead of
 * it (an earlier pipelined response still being written) stay.
 */
static bool tx_unsend(struct pf_tx *tx)
{
    struct evbuffer *out = tx->conn->s->out;
    size_t len = evbuffer_get_length(out);
    struct evbuffer *keep;

    if (len < tx->bytes_out)
        return false; /* some of it was written */
    keep = evbuffer_new();
    if (keep == NULL)
        return false;
    evbuffer_remove_buffer(out, keep, len - tx->bytes_out);
    evbuffer_drain(out, evbuffer_get_length(out));
    evbuffer_add_buffer(out, keep);
    evbuffer_free(keep);
    tx->head_sent = false;
    tx->bytes_out = 0;
    tx->close_after = true; /* the upstream connection is gone; keep it simple */
    tx->out_from = 0;       /* the filters saw a response already: none sees this one */
    return true;
}

/*
 * pf_tx_fail from inside a filter's callback (the upstream failed while a filter held the head, or
 * the body, in on_response or on_body; or on_request called something that failed): the upstream
 * goes now, the answer once the chain has returned (tx_fail_pending), since the tx may end in it
 * and the chain would then go on with the response it was given, a second answer.
 */
static bool tx_fail_later(struct pf_tx *tx, int status, enum pf_error code)
{
    if (!tx->in_chain && tx->in_filters == 0)
        return false;
    if (tx->uc != NULL)
        pf_upstream_abort(tx);
    if (!tx->fail_pending) { /* the first failure says why */
        tx->fail_pending = true;
        tx->fail_status = status;
        tx->fail_code = code;
    }
    return true;
}

/* The chain has returned: a failure it deferred is answered now (tx may end). True when so. */
static bool tx_fail_pending(struct pf_tx *tx)
{
    if (!tx->fail_pending || tx->in_chain || tx->in_filters > 0)
        return false;
    tx->fail_pending = false;
    pf_tx_fail(tx, tx->fail_status, tx->fail_code);
    return true;
}

void pf_tx_fail(struct pf_tx *tx, int status, enum pf_error code)
{
    if (tx_fail_later(tx, status, code))
        return;
    if (tx->uc != NULL)
        pf_upstream_abort(tx);
    if (tx->head_sent && tx->conn != NULL && !tx->resp_done && tx_unsend(tx)) {
        pf_tx_error(tx, status, code);
        tx->phase = PF_TX_REPLYING;
        pf_conn_send_head(tx);
        pf_conn_send_body(tx, tx->reply);
        pf_conn_send_end(tx);
        tx_finish(tx);
        return;
    }
    if (tx->head_sent || tx->conn == NULL) {
        /* too late for a status: all the client can learn is a cut connection */
        tx->error = code;
        pf_error_count(tx->w, code);
        if (tx->conn != NULL)
            pf_conn_close(tx->conn);
        else
            pf_tx_free(tx);
        return;
    }
    if (status == 408 || status == 413 || status == 431 || status == 414 || status == 400)
        tx->close_after = true;
    pf_tx_error(tx, status, code);
    /*
     * Every filter that ran sees a core error; a filter that failed in
     * on_request (the chain set out_from to it) does not see its own 500.
     */
    if (tx->phase != PF_TX_FILTERS)
        tx->out_from = tx->n_ran;
    tx_send_reply(tx);
}

static void tx_send_reply(struct pf_tx *tx)
{
    tx->phase = PF_TX_REPLYING;
    if (!tx->req_done && (tx->expect_continue || tx->req_has_body))
        tx->close_after = true; /* the unread body is not waited for */
    if (!pf_tx_respond(tx) || !pf_tx_resp_body(tx, tx->reply))
        return; /* the transaction has ended (and may be freed) */
    if (tx->reply_open)
        return; /* pf_tx_reply_stream: the filter sends the rest */
    pf_tx_resp_end(tx);
}

/* ---- the response path ---- */

bool pf_tx_respond(struct pf_tx *tx)
{
    enum pf_verdict v;

    tx->in_filters++;
    v = pf_chain_response(tx);
    tx->in_filters--;
    /* failed while a filter held the head: the error instead, past the filters (they saw one) */
    if (tx_fail_pending(tx))
        return false;
    if (v == PF_FAILED) {
        /*
         * The head is half-changed by the filters inside the failed one: send
         * a fresh error reply past every filter. An error reply that failed
         * is sent again as it was (counted once, its code kept for the log).
         */
        if (tx->error == PF_ERR_NONE)
            pf_tx_error(tx, 500, PF_ERR_FILTER_FAILED);
        else
            tx_error_reply(tx, tx->status >= 400 ? tx->status : 500, tx->error);
        if (tx->uc != NULL)
            pf_upstream_abort(tx);
        tx->out_from = 0;
        tx->phase = PF_TX_REPLYING;
        pf_conn_send_head(tx);
        pf_conn_send_body(tx, tx->reply);
        pf_conn_send_end(tx);
        tx_finish(tx);
        return false;
    }
    tx->phase = PF_TX_REPLYING;
    pf_conn_send_head(tx);
    return true;
}

static void tx_body_failed(struct pf_tx *tx)
{
    tx->error = PF_ERR_FILTER_FAILED;
    pf_error_count(tx->w, PF_ERR_FILTER_FAILED);
    if (tx->conn != NULL)
        pf_conn_close(tx->conn);
    else
        pf_tx_free(tx);
}

/* The body filters over data (NULL: none) and eos; false when tx ended (failed). */
static bool tx_body_chain(struct pf_tx *tx, struct evbuffer *data, bool eos, struct evbuffer **out)
{
    enum pf_verdict v;

    if (tx->body_a == NULL) {
        tx->body_a = tx_evbuffer(tx);
        tx->body_b = tx_evbuffer(tx);
    }
    tx->in_filters++;
    v = pf_chain_body(tx, data, eos, out);
    tx->in_filters--;
    if (tx_fail_pending(tx))
        return false;
    if (v == PF_FAILED) {
        tx_body_failed(tx);
        return false;
    }
    return true;
}

bool pf_tx_resp_body(struct pf_tx *tx, struct evbuffer *data)
{
    struct evbuffer *out = data;

    if (tx->has_body_filters && tx->out_from > 0 && !tx_body_chain(tx, data, false, &out))
        return false;
    pf_conn_send_body(tx, out);
    return true;
}

void pf_tx_resp_end(struct pf_tx *tx)
{
    if (tx->has_body_filters && tx->out_from > 0) {
        struct evbuffer *out;

        if (!tx_body_chain(tx, NULL, true, &out))
            return;
        pf_conn_send_body(tx, out);
    }
    pf_conn_send_end(tx);
    tx->resp_done = true;
    tx_finish(tx);
}

void pf_tx_fail_retry_after(struct pf_tx *tx, int status, enum pf_error code, uint64_t secs)
{
    char v[24];

    if (tx->uc != NULL || tx->head_sent || tx->conn == NULL || tx->in_chain || tx->in_filters > 0) {
        pf_tx_fail(tx, status, code);
        return;
    }
    pf_tx_error(tx, status, code);
    snprintf(v, sizeof(v), "%llu", (unsigned long long)secs);
    pf_hdrs_add(tx->arena, &tx->resp, "Retry-After", v);
    if (tx->phase != PF_TX_FILTERS)
        tx->out_from = tx->n_ran;
    tx_send_reply(tx);
}
