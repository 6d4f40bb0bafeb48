/*
 * Transactions: the chain around the upstream, replies and errors,
 * the accessors of proxy/filter.h, and the access log line.
 */
#include "proxy/tx.h"

#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <event2/buffer.h>

#include "proxy/admin.h"
#include "proxy/arena.h"
#include "proxy/chain.h"
#include "proxy/http1.h"
#include "proxy/log.h"
#include "proxy/route.h"
#include "proxy/sbuf.h"
#include "proxy/server.h"
#include "proxy/stats.h"
#include "proxy/upstream/upstream.h"

static const char *const error_names[PF_ERR_MAX] = {
    [PF_ERR_BAD_REQUEST] = "bad_request",
    [PF_ERR_REQUEST_TIMEOUT] = "request_timeout",
    [PF_ERR_BODY_TOO_LARGE] = "body_too_large",
    [PF_ERR_URI_TOO_LONG] = "uri_too_long",
    [PF_ERR_HEADERS_TOO_LARGE] = "headers_too_large",
    [PF_ERR_NO_ROUTE] = "no_route",
    [PF_ERR_CONNECT_FAILED] = "upstream_connect_failed",
    [PF_ERR_RESET] = "upstream_reset",
    [PF_ERR_BAD_RESPONSE] = "upstream_bad_response",
    [PF_ERR_TIMEOUT] = "upstream_timeout",
    [PF_ERR_FILTER_FAILED] = "filter_failed",
    [PF_ERR_RATE_LIMITED] = "rate_limited",
    [PF_ERR_CIRCUIT_OPEN] = "circuit_open",
    [PF_ERR_NO_HEALTHY_UPSTREAM] = "no_healthy_upstream",
    [PF_ERR_OVERFLOW] = "overflow",
    [PF_ERR_OTHER] = "other",
};

uint64_t pf_clock_fixed_us;

uint64_t pf_now_us(void)
{
    struct timespec ts;

    if (pf_clock_fixed_us != 0)
        return pf_clock_fixed_us;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

const char *pf_error_name(enum pf_error e)
{
    return error_names[e];
}

void pf_count_error(struct pf_worker *w, const char *code)
{
    for (unsigned i = 0; i < PF_ERR_MAX; i++) {
        if (strcmp(error_names[i], code) == 0) {
            pf_counter_add(&w->errors[i], 1);
            return;
        }
    }
    pf_counter_add(&w->errors[PF_ERR_OTHER], 1);
}

uint64_t pf_worker_rand(struct pf_worker *w)
{
    uint64_t s1 = w->rng[0];
    const uint64_t s0 = w->rng[1];

    w->rng[0] = s0;
    s1 ^= s1 << 23;
    w->rng[1] = s1 ^ s0 ^ (s1 >> 17) ^ (s0 >> 26);
    return w->rng[1] + s0;
}

/* ---- header lists ---- */

static bool name_is(const char *name, const char *lower, size_t len)
{
    return strncasecmp(name, lower, len) == 0;
}

enum pf_hdr_id pf_hdr_classify(const char *name, size_t len)
{
    /* by length first: most names are rejected without a comparison */
    switch (len) {
    case 2:
        return name_is(name, "te", 2) ? PF_H_TE : PF_H_OTHER;
    case 4:
        return name_is(name, "host", 4) ? PF_H_HOST : PF_H_OTHER;
    case 6:
        return name_is(name, "expect", 6) ? PF_H_EXPECT : PF_H_OTHER;
    case 7:
        if (name_is(name, "trailer", 7))
            return PF_H_TRAILER;
        return name_is(name, "upgrade", 7) ? PF_H_UPGRADE : PF_H_OTHER;
    case 10:
        if (name_is(name, "connection", 10))
            return PF_H_CONNECTION;
        return name_is(name, "keep-alive", 10) ? PF_H_KEEP_ALIVE : PF_H_OTHER;
    case 11:
        return name_is(name, "traceparent", 11) ? PF_H_TRACEPARENT : PF_H_OTHER;
    case 12:
        return name_is(name, "x-request-id", 12) ? PF_H_X_REQUEST_ID : PF_H_OTHER;
    case 14:
        return name_is(name, "content-length", 14) ? PF_H_CONTENT_LENGTH : PF_H_OTHER;
    case 15:
        return name_is(name, "x-forwarded-for", 15) ? PF_H_X_FORWARDED_FOR : PF_H_OTHER;
    case 16:
        if (name_is(name, "proxy-connection", 16))
            return PF_H_PROXY_CONNECTION;
        return name_is(name, "x-forwarded-host", 16) ? PF_H_X_FORWARDED_HOST : PF_H_OTHER;
    case 17:
        if (name_is(name, "transfer-encoding", 17))
            return PF_H_TRANSFER_ENCODING;
        return name_is(name, "x-forwarded-proto", 17) ? PF_H_X_FORWARDED_PROTO : PF_H_OTHER;
    default:
        return PF_H_OTHER;
    }
}

const char *pf_hdrs_get_id(const struct pf_hdrs *h, enum pf_hdr_id id)
{
    for (unsigned i = 0; i < h->n; i++) {
        if (h->v[i].id == id)
            return h->v[i].value;
    }
    return NULL;
}

const char *pf_hdrs_get(const struct pf_hdrs *h, const char *name)
{
    for (unsigned i = 0; i < h->n; i++) {
        if (strcasecmp(h->v[i].name, name) == 0)
            return h->v[i].value;
    }
    return NULL;
}

void pf_hdrs_add(struct pf_arena *a, struct pf_hdrs *h, const char *name, const char *value)
{
    size_t nl = strlen(name), vl = strlen(value);

    if (h->n == h->cap) {
        unsigned cap = h->cap ? h->cap * 2 : 16;
        struct pf_hdr *v = pf_arena_alloc(a, cap * sizeof(*v));

        if (h->n > 0)
            memcpy(v, h->v, h->n * sizeof(*v));
        h->v = v;
        h->cap = cap;
    }
    h->v[h->n].name = pf_arena_strndup(a, name, nl);
    h->v[h->n].name_len = (uint32_t)nl;
    h->v[h->n].value = pf_arena_strndup(a, value, vl);
    h->v[h->n].value_len = (uint32_t)vl;
    h->v[h->n].id = pf_hdr_classify(name, nl);
    h->n++;
}

void pf_hdrs_del(struct pf_hdrs *h, const char *name)
{
    unsigned j = 0;

    for (unsigned i = 0; i < h->n; i++) {
        if (strcasecmp(h->v[i].name, name) != 0)
            h->v[j++] = h->v[i];
    }
    h->n = j;
}

/* ---- filter.h accessors ---- */

struct pf_arena *pf_tx_arena(struct pf_tx *tx)
{
    return tx->arena;
}

struct pf_worker *pf_tx_worker(struct pf_tx *tx)
{
    return tx->w;
}

unsigned pf_worker_index(const struct pf_worker *w)
{
    return w->index;
}

unsigned pf_worker_count(const struct pf_worker *w)
{
    return w->count;
}

void *pf_worker_base(struct pf_worker *w)
{
    return w->base;
}

const char *pf_tx_method(const struct pf_tx *tx)
{
    return tx->method;
}

const char *pf_tx_path(const struct pf_tx *tx)
{
    return tx->url;
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
    return tx->conn != NULL ? tx->conn->client : "-";
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
    pf_hdrs_del(&tx->resp, name);
    pf_hdrs_add(tx->arena, &tx->resp, name, value);
}

void pf_tx_resp_header_add(struct pf_tx *tx, const char *name, const char *value)
{
    pf_hdrs_add(tx->arena, &tx->resp, name, value);
}

void pf_tx_resp_header_del(struct pf_tx *tx, const char *name)
{
    pf_hdrs_del(&tx->resp, name);
}

/* ---- lifetime ---- */

static void evbuffer_free_cb(void *arg)
{
    evbuffer_free(arg);
}

static struct evbuffer *tx_evbuffer(struct pf_tx *tx)
{
    struct evbuffer *b = pf_evbuffer_new();

    pf_arena_defer(tx->arena, evbuffer_free_cb, b);
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

static void tx_log(struct pf_tx *tx);

void pf_tx_free(struct pf_tx *tx)
{
    pf_txref_release(tx); /* before on_done: a waiter woken from there finds nothing */
    if (tx->timer_set)
        event_del(&tx->timer);
    if (tx->uc != NULL)
        pf_upstream_abort(tx);
    pf_chain_done(tx);
    if (tx->route == NULL && !tx->is_admin)
        pf_stats_count_unrouted(tx); /* no chain ran, so no metrics filter either */
    tx->w->requests++;
    if (!pf_alog_is_off() && !tx->is_admin)
        tx_log(tx);
    pf_server_wconf_unref(tx->w, tx->wc);
    pf_arena_free(tx->arena);
}

void pf_tx_abort(struct pf_tx *tx, const char *why)
{
    struct pf_conn *c = tx->conn;

    if (c != NULL)
        c->tx = NULL;
    tx->conn = NULL;
    if (tx->error == NULL && tx->phase != PF_TX_DONE) {
        tx->error = why;
        if (!tx->head_sent)
            tx->status = 499;
    }
    if (tx->uc != NULL)
        pf_upstream_abort(tx);
    pf_tx_free(tx);
}

/* ---- request identity ---- */

static void hex64(char *out, uint64_t v)
{
    static const char digits[] = "0123456789abcdef";

    for (int i = 15; i >= 0; i--) {
        out[i] = digits[v & 15];
        v >>= 4;
    }
}

static bool is_hex(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
            return false;
    }
    return true;
}

static bool is_zero(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (s[i] != '0')
            return false;
    }
    return true;
}

/* "00-<32 hex trace-id>-<16 hex parent-id>-<2 hex flags>" (W3C Trace Context) */
static bool traceparent_valid(const char *in)
{
    size_t len = strlen(in);

    if (len < 55 || in[2] != '-' || in[35] != '-' || in[52] != '-')
        return false;
    if (!is_hex(in, 2) || strncmp(in, "ff", 2) == 0 || (strncmp(in, "00", 2) == 0 && len != 55))
        return false;
    if (len > 55 && in[55] != '-')
        return false;
    return is_hex(in + 3, 32) && !is_zero(in + 3, 32) && is_hex(in + 36, 16) &&
           !is_zero(in + 36, 16) && is_hex(in + 53, 2);
}

/*
 * Continue a valid incoming traceparent with the same trace-id and flags and a
 * new span id (ours), otherwise start a new trace.
 */
static void tx_trace(struct pf_tx *tx)
{
    const char *in = pf_hdrs_get_id(&tx->req, PF_H_TRACEPARENT);
    char *o = tx->traceparent;
    char flags[2] = {'0', '1'};

    if (in != NULL && traceparent_valid(in)) {
        memcpy(tx->trace_id, in + 3, 32);
        flags[0] = in[53];
        flags[1] = in[54];
    } else {
        hex64(tx->trace_id, pf_worker_rand(tx->w));
        hex64(tx->trace_id + 16, pf_worker_rand(tx->w));
    }
    tx->trace_id[32] = '\0';
    memcpy(o, "00-", 3);
    memcpy(o + 3, tx->trace_id, 32);
    o[35] = '-';
    hex64(o + 36, pf_worker_rand(tx->w) | 1);
    o[52] = '-';
    o[53] = flags[0];
    o[54] = flags[1];
    o[55] = '\0';
}

static void tx_request_id(struct pf_tx *tx)
{
    const char *id = pf_hdrs_get_id(&tx->req, PF_H_X_REQUEST_ID);
    char *buf;

    if (id != NULL && id[0] != '\0' && strlen(id) <= 200) {
        tx->request_id = id;
        return;
    }
    buf = pf_arena_alloc(tx->arena, 33);
    hex64(buf, pf_worker_rand(tx->w));
    hex64(buf + 16, pf_worker_rand(tx->w));
    tx->request_id = buf;
}

/* ---- the request path ---- */

static void tx_dispatch(struct pf_tx *tx, enum pf_verdict v);
static void tx_request_id(struct pf_tx *tx);
static void tx_send_reply(struct pf_tx *tx);

void pf_tx_start(struct pf_tx *tx)
{
    tx->phase = PF_TX_FILTERS;
    tx_request_id(tx);
    tx_trace(tx);
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
        pf_tx_fail(tx, 400, "bad_request"); /* double encoding in the path */
        return;
    }
    if (tx->route == NULL) {
        pf_tx_fail(tx, 404, "no_route");
        return;
    }
    tx->up = &tx->cfg->upstreams[tx->route->upstream];
    pf_chain_init(tx);
    tx_dispatch(tx, pf_chain_request(tx));
}

static void tx_dispatch(struct pf_tx *tx, enum pf_verdict v)
{
    switch (v) {
    case PF_NEXT:
        tx->phase = PF_TX_UPSTREAM;
        pf_upstream_start(tx);
        break;
    case PF_REPLIED:
        tx_send_reply(tx);
        break;
    case PF_FAILED:
        pf_tx_fail(tx, 500, "filter_failed");
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
    else if (tx->req_buf != NULL && evbuffer_get_length(tx->req_buf) + len <= 1024 * 1024)
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

void pf_tx_reply(struct pf_tx *tx, int status, struct evbuffer *body)
{
    char len[24];

    tx->status = status;
    tx->resp.n = 0;
    if (tx->reply == NULL)
        tx->reply = tx_evbuffer(tx);
    else
        evbuffer_drain(tx->reply, evbuffer_get_length(tx->reply));
    if (body != NULL)
        evbuffer_add_buffer(tx->reply, body);
    pf_hdrs_add(tx->arena, &tx->resp, "Date", pf_http_date());
    snprintf(len, sizeof(len), "%zu", evbuffer_get_length(tx->reply));
    pf_hdrs_add(tx->arena, &tx->resp, "Content-Length", len);
}

/* The JSON error reply of pf_tx_error(), without counting it. */
static void tx_error_reply(struct pf_tx *tx, int status, const char *code)
{
    struct evbuffer *b = pf_evbuffer_new();

    if (tx->request_id == NULL)
        tx_request_id(tx);
    evbuffer_add_printf(b, "{\"error\":\"%s\",\"status\":%d,\"request_id\":\"", code, status);
    if (tx->request_id != NULL)
        pf_json_escape(b, tx->request_id, strlen(tx->request_id));
    evbuffer_add(b, "\"}\n", 3);
    pf_tx_reply(tx, status, b);
    evbuffer_free(b);
    pf_hdrs_add(tx->arena, &tx->resp, "Content-Type", "application/json");
    pf_hdrs_add(tx->arena, &tx->resp, "X-Pilotfish-Error", code);
}

void pf_tx_error(struct pf_tx *tx, int status, const char *code)
{
    tx_error_reply(tx, status, code);
    pf_count_error(tx->w, code);
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

void pf_tx_fail(struct pf_tx *tx, int status, const char *code)
{
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
        pf_count_error(tx->w, code);
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
    pf_tx_resp_end(tx);
}

/* ---- the response path ---- */

bool pf_tx_respond(struct pf_tx *tx)
{
    if (pf_chain_response(tx) == PF_FAILED) {
        /*
         * The head is half-changed by the filters inside the failed one: send
         * a fresh error reply past every filter. An error reply that failed
         * is sent again as it was (counted once, its code kept for the log).
         */
        if (tx->error == NULL)
            pf_tx_error(tx, 500, "filter_failed");
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
    tx->error = "filter_failed";
    pf_count_error(tx->w, "filter_failed");
    if (tx->conn != NULL)
        pf_conn_close(tx->conn);
    else
        pf_tx_free(tx);
}

bool pf_tx_resp_body(struct pf_tx *tx, struct evbuffer *data)
{
    struct evbuffer *out = data;

    if (tx->has_body_filters && tx->out_from > 0) {
        if (tx->body_a == NULL) {
            tx->body_a = tx_evbuffer(tx);
            tx->body_b = tx_evbuffer(tx);
        }
        if (pf_chain_body(tx, data, false, &out) == PF_FAILED) {
            tx_body_failed(tx);
            return false;
        }
    }
    pf_conn_send_body(tx, out);
    return true;
}

void pf_tx_resp_end(struct pf_tx *tx)
{
    if (tx->has_body_filters && tx->out_from > 0) {
        struct evbuffer *out;

        if (tx->body_a == NULL) {
            tx->body_a = tx_evbuffer(tx);
            tx->body_b = tx_evbuffer(tx);
        }
        if (pf_chain_body(tx, NULL, true, &out) == PF_FAILED) {
            tx_body_failed(tx);
            return;
        }
        pf_conn_send_body(tx, out);
    }
    pf_conn_send_end(tx);
    tx->resp_done = true;
    tx_finish(tx);
}

/* ---- access log ---- */

/* ,"key":"value" with value JSON-escaped (NULL: empty). */
static void log_str(struct pf_sbuf *b, const char *key, const char *v)
{
    pf_sb_put(b, ",\"", 2);
    pf_sb_str(b, key);
    pf_sb_put(b, "\":\"", 3);
    for (size_t len = v != NULL ? strlen(v) : 0; len > 0;) {
        size_t n = pf_json_plain_run(v, len);
        char esc[6];

        /* runs that need no escaping go in one piece; the rest stays valid UTF-8 */
        pf_sb_put(b, v, n);
        if (n < len)
            pf_sb_put(b, esc, pf_json_escape_byte(esc, (unsigned char)v[n++]));
        v += n;
        len -= n;
    }
    pf_sb_put(b, "\"", 1);
}

/* ,"key":N.NNN for a duration in microseconds. */
static void log_ms(struct pf_sbuf *b, const char *key, uint64_t us)
{
    char frac[4] = {(char)('0' + us / 100 % 10), (char)('0' + us / 10 % 10), (char)('0' + us % 10),
                    '\0'};

    pf_sb_put(b, ",\"", 2);
    pf_sb_str(b, key);
    pf_sb_put(b, "\":", 2);
    pf_sb_u64(b, us / 1000);
    pf_sb_put(b, ".", 1);
    pf_sb_put(b, frac, 3);
}

/* ,"key":N */
static void log_num(struct pf_sbuf *b, const char *key, uint64_t v)
{
    pf_sb_put(b, ",\"", 2);
    pf_sb_str(b, key);
    pf_sb_put(b, "\":", 2);
    pf_sb_u64(b, v);
}

/* One JSON line per request into the worker's log buffer (no printf: per request). */
static void tx_log(struct pf_tx *tx)
{
    struct pf_sbuf b;
    char ts[40];
    struct timespec wall;

    clock_gettime(CLOCK_REALTIME, &wall);
    pf_log_timestamp(ts, sizeof(ts),
                     (uint64_t)wall.tv_sec * 1000000u + (uint64_t)wall.tv_nsec / 1000u);
    pf_sb_init(&b, tx->w->alog);
    pf_sb_put(&b, "{\"ts\":\"", 7);
    pf_sb_str(&b, ts);
    pf_sb_put(&b, "\"", 1);
    log_str(&b, "request_id", tx->request_id);
    log_str(&b, "trace_id", tx->trace_id);
    log_str(&b, "client", tx->conn != NULL ? tx->conn->client : NULL);
    log_str(&b, "method", tx->method);
    log_str(&b, "path", tx->url);
    log_num(&b, "status", (uint64_t)tx->status);
    log_num(&b, "bytes_in", tx->head_in + tx->body_in);
    log_num(&b, "bytes_out", tx->bytes_out);
    log_ms(&b, "duration_ms", pf_now_us() - tx->t_start);
    log_str(&b, "route", tx->route != NULL ? tx->route->name : NULL);
    log_str(&b, "upstream", tx->up != NULL ? tx->up->name : NULL);
    log_str(&b, "endpoint", tx->endpoint);
    if (tx->t_up_head > 0)
        log_ms(&b, "upstream_ms", tx->t_up_head - tx->t_up_start);
    else
        pf_sb_str(&b, ",\"upstream_ms\":null");
    if (tx->error != NULL)
        log_str(&b, "error", tx->error);
    else
        pf_sb_str(&b, ",\"error\":null");
    pf_sb_put(&b, "}\n", 2);
    pf_sb_flush(&b);
    if (evbuffer_get_length(tx->w->alog) > 64 * 1024)
        pf_alog_submit(tx->w->alog);
}
