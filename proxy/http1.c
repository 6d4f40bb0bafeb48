/*
 * The HTTP/1.1 engine, client side: pf_stream sockets + the request head
 * parser of proxy/h1parse.c, with the framing rules of docs/operations.md
 * checked on what it found.
 *
 * A connection parses one request head at a time. When the head is complete
 * reading stops and a transaction starts; the body is de-framed only when
 * the transaction asks for it (the upstream is ready), and the next pipelined
 * request only when the transaction has ended. So memory per connection is
 * bounded by the head limit plus the output watermarks.
 */
#include "proxy/http1.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/event.h>

#include "proxy/arena.h"
#include "proxy/chunked.h"
#include "proxy/errors.h"
#include "proxy/hdrs.h"
#include "proxy/log.h"
#include "proxy/sbuf.h"
#include "proxy/server.h"
#include "proxy/syntax.h"
#include "proxy/tx.h"
#include "proxy/upstream/upstream.h"

#define LINGER_MS    2000          /* longest lingering close */
#define LINGER_BYTES (1024 * 1024) /* most input discarded while lingering */

static void conn_process(struct pf_conn *c);
static void conn_arm_timer(struct pf_conn *c, uint64_t ms);
static void conn_arm_body_timer(struct pf_conn *c);

/* ---- connection lifetime ---- */

static void conn_enter(struct pf_conn *c)
{
    c->busy++;
    pf_stream_unpark(c->s); /* an idle connection holds no buffers (see conn_leave) */
}

/* The parser may run: the connection is reading a head or a body. */
static bool conn_parsing(const struct pf_conn *c)
{
    return c->state == PF_CONN_READING_HEAD || c->state == PF_CONN_READING_BODY;
}

/* The parser is stopped until the transaction lets it go on. */
static bool conn_paused(const struct pf_conn *c)
{
    return c->state == PF_CONN_BODY_PAUSED || c->state == PF_CONN_WAITING;
}

static void conn_free(struct pf_conn *c)
{
    struct pf_worker *w = c->w;

    if (c->tx != NULL)
        pf_tx_abort(c->tx, PF_ERR_CLIENT_ABORT);
    pf_timer_del(&c->w->sloop.timers, &c->timer);
    pf_stream_free(c->s);
    if (c->body_tmp != NULL)
        evbuffer_free(c->body_tmp);
    TAILQ_REMOVE(&w->conns, c, link);
    w->n_conns--;
    free(c);
    pf_server_conn_closed(w);
}

/* Leave a callback: free the connection if it died meanwhile. */
static void conn_leave(struct pf_conn *c)
{
    if (--c->busy == 0 && c->state == PF_CONN_DEAD)
        conn_free(c);
    else if (c->busy == 0 && c->state == PF_CONN_READING_HEAD && c->tx == NULL && !c->closing &&
             c->head_bytes == 0)
        pf_stream_park(c->s); /* idle: its empty buffers go back to the worker's pool */
}

void pf_conn_close(struct pf_conn *c)
{
    if (c->state == PF_CONN_DEAD)
        return;
#ifdef PF_DEBUG
    if (pf_log_get_level() >= PF_LOG_DEBUG) {
        char st[PF_CONN_DUMP_SIZE];

        pf_conn_dump(c, st, sizeof(st));
        pf_debug("client connection closed: %s", st);
    }
#endif
    c->state = PF_CONN_DEAD;
    conn_enter(c);
    conn_leave(c);
}

bool pf_conn_is_idle(const struct pf_conn *c)
{
    /* between requests, and the last response has left entirely */
    return c->tx == NULL && c->head_bytes == 0 && c->state != PF_CONN_DEAD &&
           pf_stream_out_len(c->s) == 0;
}

size_t pf_conn_out_len(const struct pf_conn *c)
{
    return pf_stream_out_len(c->s);
}

/* ---- writing responses ---- */

/* Connection cannot remove Content-Length: the framing chosen below relies on it. */
static bool resp_hop_by_hop(const struct pf_hdr *h, const char *conn_value)
{
    return PF_H_IS_HOP(h->id) || (conn_value != NULL && h->id != PF_H_CONTENT_LENGTH &&
                                  pf_http_list_has(conn_value, h->name));
}

/* Decide how the body goes to the client (docs/operations.md "Response framing"). */
static enum pf_out_mode conn_out_mode(struct pf_tx *tx, bool *keep_cl)
{
    int s = tx->status;

    *keep_cl = false;
    if (s < 200 || s == 204) {
        return PF_OUT_NONE;
    }
    if (s == 304 || tx->method_id == HTTP_HEAD) {
        *keep_cl = true; /* describes the selected representation; no body follows */
        return PF_OUT_NONE;
    }
    if (pf_hdrs_get_id(&tx->resp, PF_H_CONTENT_LENGTH) != NULL) {
        *keep_cl = true;
        return PF_OUT_LENGTH;
    }
    if (tx->http_major == 1 && tx->http_minor >= 1)
        return PF_OUT_CHUNKED;
    return PF_OUT_CLOSE;
}

void pf_conn_send_head(struct pf_tx *tx)
{
    struct pf_conn *c = tx->conn;
    struct pf_sbuf b;
    const char *conn_value;
    bool keep_cl;
    char status[8];

    if (c == NULL || tx->head_sent)
        return;
    tx->head_sent = true;
    tx->out_mode = conn_out_mode(tx, &keep_cl);
    if (tx->out_mode == PF_OUT_CLOSE || c->closing || tx->w->draining || !tx->client_keepalive)
        tx->close_after = true;
    pf_sb_init(&b, c->s->out);
    pf_sb_put(&b, tx->http_minor >= 1 ? "HTTP/1.1 " : "HTTP/1.0 ", 9);
    status[0] = (char)('0' + tx->status / 100 % 10);
    status[1] = (char)('0' + tx->status / 10 % 10);
    status[2] = (char)('0' + tx->status % 10);
    status[3] = ' ';
    pf_sb_put(&b, status, 4);
    pf_sb_str(&b, pf_http_reason(tx->status));
    pf_sb_put(&b, "\r\n", 2);
    conn_value = pf_hdrs_get_id(&tx->resp, PF_H_CONNECTION);
    for (unsigned i = pf_tx_resp_raw_put(tx, conn_value, &b); i < tx->resp.n; i++) {
        const struct pf_hdr *h = &tx->resp.v[i];

        if (resp_hop_by_hop(h, conn_value))
            continue;
        if (!keep_cl && h->id == PF_H_CONTENT_LENGTH)
            continue;
        pf_sb_header(&b, h->name, h->name_len, h->value, h->value_len);
    }
    if (tx->out_mode == PF_OUT_CHUNKED)
        pf_sb_str(&b, "Transfer-Encoding: chunked\r\n");
    if (tx->close_after)
        pf_sb_str(&b, "Connection: close\r\n");
    else if (tx->http_minor == 0)
        pf_sb_str(&b, "Connection: keep-alive\r\n");
    pf_sb_put(&b, "\r\n", 2);
    pf_sb_flush(&b);
    tx->bytes_out += b.total;
    pf_stream_mark(c->s);
}

void pf_conn_send_body(struct pf_tx *tx, struct evbuffer *data)
{
    struct pf_conn *c = tx->conn;
    size_t len = evbuffer_get_length(data);
    struct evbuffer *out;

    if (c == NULL || tx->out_mode == PF_OUT_NONE || len == 0) {
        evbuffer_drain(data, len);
        return;
    }
    out = c->s->out;
    if (tx->out_mode == PF_OUT_CHUNKED) {
        char hex[24];
        size_t n = pf_hex(hex, len);

        hex[n++] = '\r';
        hex[n++] = '\n';
        evbuffer_add(out, hex, n);
        evbuffer_add_buffer(out, data);
        evbuffer_add(out, "\r\n", 2);
        tx->bytes_out += len + n + 2;
    } else {
        evbuffer_add_buffer(out, data);
        tx->bytes_out += len;
    }
    /* a body of known length is not over before pf_conn_send_end: let segments fill */
    if (tx->out_mode == PF_OUT_LENGTH && !c->s->more)
        pf_stream_set_more(c->s, true);
    pf_stream_mark(c->s);
}

void pf_conn_send_end(struct pf_tx *tx)
{
    struct pf_conn *c = tx->conn;

    if (c == NULL)
        return;
    if (c->s->more)
        pf_stream_set_more(c->s, false);
    if (tx->out_mode == PF_OUT_CHUNKED) {
        evbuffer_add(c->s->out, "0\r\n\r\n", 5);
        tx->bytes_out += 5;
        pf_stream_mark(c->s);
    }
}

void pf_conn_send_continue(struct pf_tx *tx)
{
    static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";

    if (tx->conn == NULL || !tx->expect_continue || tx->sent_continue || tx->head_sent)
        return;
    tx->sent_continue = true;
    evbuffer_add(tx->conn->s->out, cont, sizeof(cont) - 1);
    pf_stream_mark(tx->conn->s);
}

/* ---- request parsing ---- */

static int conn_fail(struct pf_conn *c, int status, enum pf_error code)
{
    if (c->pending_status == 0) {
        c->pending_status = status;
        c->pending_code = code;
    }
    return -1;
}

/* A transaction for a head refused before it was read: nothing of it is known. */
static void conn_tx_blank(struct pf_tx *tx)
{
    tx->method = "-";
    tx->url = "-";
    tx->http_major = 1;
    tx->http_minor = 1;
}

/*
 * The framing rules of docs/operations.md, from what the head's parse noted:
 * one Content-Length of digits only, or one Transfer-Encoding that is exactly
 * "chunked", never both; exactly one Host for HTTP/1.1.
 */
static int conn_check_framing(struct pf_conn *c, struct pf_tx *tx, const struct pf_h1p_head *h)
{
    if (h->n_cl > 1 || h->cl_bad || h->n_te > 1 || (h->n_te > 0 && !h->te_chunked) ||
        (h->n_cl > 0 && h->n_te > 0))
        return conn_fail(c, 400, PF_ERR_BAD_REQUEST);
    if (h->n_host > 1 || (h->n_host == 0 && tx->http_minor >= 1) ||
        (h->n_host == 1 && !pf_http_host_valid(h->host, h->host_len)))
        return conn_fail(c, 400, PF_ERR_BAD_REQUEST);
    tx->req_has_length = h->n_cl > 0;
    tx->req_length = h->length;
    tx->req_chunked = h->n_te > 0;
    tx->host = h->host;
    if (h->n_te > 0 && tx->http_minor == 0) {
        /*
         * RFC 9112 §6.1: Transfer-Encoding in an HTTP/1.0 message is faulty
         * framing; the request is served, and the connection closed after it,
         * so that nothing read behind the body is taken for a request.
         */
        tx->client_keepalive = false;
    }
    return 0;
}

/* An underscore name that, read as '-', names a header pilotfish handles itself. */
static bool underscore_collides(const struct pf_hdr *h)
{
    char name[24];

    if (h->name_len >= sizeof(name))
        return false;
    for (uint32_t i = 0; i < h->name_len; i++)
        name[i] = h->name[i] == '_' ? '-' : h->name[i];
    return pf_hdr_classify(name, h->name_len) != PF_H_OTHER;
}

/*
 * Header names with '_' (underscores_in_headers): some servers read "_" and
 * "-" alike (CGI-style variables), so "Content_Length" could frame a body
 * for them. Dropped by default, refused with reject; allow forwards them,
 * except those that would read as a header pilotfish handles itself.
 */
static int conn_underscores(struct pf_conn *c, struct pf_tx *tx)
{
    enum pf_underscores mode = c->w->wc->cfg->underscores;
    unsigned j = 0;

    for (unsigned i = 0; i < tx->req.n; i++) {
        const struct pf_hdr *h = &tx->req.v[i];

        if (memchr(h->name, '_', h->name_len) != NULL) {
            if (mode == PF_UNDERSCORES_REJECT)
                return conn_fail(c, 400, PF_ERR_BAD_REQUEST);
            if (mode == PF_UNDERSCORES_DROP || underscore_collides(h))
                continue;
        }
        tx->req.v[j++] = *h;
    }
    tx->req.n = j;
    return 0;
}

/*
 * "GET http://host/path": the target's authority replaces the Host header
 * (RFC 9112 §3.2.2) and the upstream gets the origin form "/path" ("/" for
 * an empty path, "*" for OPTIONS with neither path nor query).
 */
static int conn_absolute_form(struct pf_conn *c, struct pf_tx *tx, size_t url_len)
{
    const char *auth, *path;
    size_t alen;
    char *url;

    if (!pf_http_target_valid(tx->url, url_len))
        return conn_fail(c, 400, PF_ERR_BAD_REQUEST); /* CTLs, 8-bit bytes, '#', bad '%' */
    if (tx->url[0] == '/')
        return 0; /* origin-form, by far the most common: no scheme to compare */
    if (strncasecmp(tx->url, "http://", 7) == 0) {
        auth = tx->url + 7;
    } else if (strncasecmp(tx->url, "https://", 8) == 0) {
        auth = tx->url + 8;
    } else {
        if (strcmp(tx->url, "*") == 0 && tx->method_id == HTTP_OPTIONS)
            return 0; /* asterisk-form for OPTIONS (RFC 9112 §3.2) */
        return conn_fail(c, 400, PF_ERR_BAD_REQUEST);
    }
    alen = strcspn(auth, "/?#");
    if (alen == 0 || !pf_http_host_valid(auth, alen))
        return conn_fail(c, 400, PF_ERR_BAD_REQUEST);
    path = auth + alen;
    url = pf_arena_alloc_raw(tx->arena, strlen(path) + 2);
    url[0] = '/';
    strcpy(url + (path[0] == '/' ? 0 : 1), path);
    if (path[0] == '\0' && tx->method_id == HTTP_OPTIONS)
        strcpy(url, "*"); /* RFC 9112 §3.2.4: no path, no query: the server as a whole */
    tx->host = pf_arena_strndup(tx->arena, auth, alen);
    tx->host_from_target = true;
    tx->url = url;
    return 0;
}

/* Fill tx from the parsed head h; -1 (c->pending_status set) to refuse it. */
static int conn_head_checks(struct pf_conn *c, struct pf_tx *tx, struct pf_h1p_head *h)
{
    const struct pf_limits *l = &c->w->wc->cfg->limits;

    tx->head_in = c->head_bytes;
    tx->req.v = h->v;
    tx->req.n = h->n;
    tx->req.cap = c->scan.lines + 8;
    tx->url = h->url;
    tx->method_id = c->scan.method;
    tx->method = pf_h1p_method_name(c->scan.method);
    tx->http_major = 1;
    tx->http_minor = c->scan.minor;
    tx->client_keepalive =
        (tx->http_minor >= 1 ? !h->conn_close : h->conn_keepalive) && !c->closing;
    if (conn_check_framing(c, tx, h) != 0 || (h->underscore && conn_underscores(c, tx) != 0) ||
        conn_absolute_form(c, tx, h->url_len) != 0)
        return -1;
    tx->req_has_body = tx->req_chunked || (tx->req_has_length && tx->req_length > 0);
    if (h->expect != NULL) {
        if (strcasecmp(h->expect, "100-continue") != 0)
            return conn_fail(c, 417, PF_ERR_BAD_REQUEST);
        tx->expect_continue = tx->http_minor >= 1 && tx->req_has_body;
    }
    if (l->max_body_size > 0 && tx->req_has_length && tx->req_length > l->max_body_size)
        return conn_fail(c, 413, PF_ERR_BODY_TOO_LARGE);
    return 0;
}

/*
 * The head is whole (c->head_bytes at the start of the input): move it into
 * a new transaction's arena, parse it there in one pass and check it.
 * Returns 0, or -1 with c->pending_status set.
 */
static int conn_head_done(struct pf_conn *c)
{
    struct pf_tx *tx = pf_tx_new(c);
    struct pf_h1p_head h;
    char *buf = pf_arena_alloc_raw(tx->arena, c->head_bytes + 1);

    c->tx = tx;
    evbuffer_remove(c->s->in, buf, c->head_bytes);
    buf[c->head_bytes] = '\0';
    h.v = pf_arena_alloc_raw(tx->arena, (c->scan.lines + 8) * sizeof(*h.v));
    if (pf_h1p_parse_request(&c->scan, buf, c->head_bytes, &h) != 0) {
        conn_tx_blank(tx);
        return conn_fail(c, 400, PF_ERR_BAD_REQUEST);
    }
    if (c->scan.method == HTTP_CONNECT) {
        conn_tx_blank(tx);
        return conn_fail(c, 405, PF_ERR_BAD_REQUEST);
    }
    if (conn_head_checks(c, tx, &h) != 0)
        return -1;
    if (tx->req_has_body) {
        /* the body waits until the transaction is ready for it (conn_body()) */
        c->body_mode = tx->req_chunked ? PF_BODY_CHUNKED : PF_BODY_LENGTH;
        c->body_left = tx->req_length;
        pf_chunked_init(&c->chunked);
        c->state = PF_CONN_BODY_PAUSED;
    } else {
        c->state = PF_CONN_WAITING;
    }
    return 0;
}

static void conn_head_reset(struct pf_conn *c)
{
    c->head_bytes = 0;
    c->body_mode = PF_BODY_NONE;
    pf_h1p_scan_init(&c->scan);
    c->head_timed = false;
}

/* Answer an error found while parsing, then close. */
static void conn_reply_error(struct pf_conn *c, int status, enum pf_error code)
{
    struct pf_tx *tx = c->tx;

    if (tx == NULL) {
        tx = pf_tx_new(c);
        c->tx = tx;
        conn_tx_blank(tx);
    }
    c->closing = true;
    c->linger = tx->req_has_body && !tx->req_done; /* the client may still be sending it */
    c->state = PF_CONN_WAITING;
    pf_stream_read(c->s, false);
    if (tx->head_sent) {
        /* too late for a status: the log and the counters say what happened */
        tx->error = code;
        pf_error_count(c->w, code);
        pf_conn_close(c);
        return;
    }
    tx->client_keepalive = false;
    pf_tx_fail(tx, status, code);
}

/* The request body is complete: the next head waits for the transaction's end. */
static void conn_body_done(struct pf_conn *c)
{
    pf_timer_del(&c->w->sloop.timers, &c->timer);
    c->body_deadline_us = 0;
    c->body_mode = PF_BODY_NONE;
    c->state = PF_CONN_WAITING;
    pf_tx_req_end(c->tx);
}

/*
 * De-frame request body bytes (Content-Length or strict chunked) and hand
 * them to the transaction without copying. Returns 0 to go on, -1 to stop.
 */
static int conn_body(struct pf_conn *c)
{
    struct evbuffer *in = c->s->in;
    struct pf_tx *tx = c->tx;
    uint64_t max = tx->cfg->limits.max_body_size;
    size_t n;
    int rc;

    /* a body must keep coming: idle_timeout of silence ends the request */
    conn_arm_body_timer(c);
    if (c->body_mode == PF_BODY_LENGTH) {
        n = evbuffer_get_length(in);
        if (n > c->body_left)
            n = (size_t)c->body_left;
        c->body_left -= n;
        tx->body_in += n;
        if (n > 0 || c->s->raw) /* raw: the body moves with splice (pf_upstream_send_body) */
            pf_tx_req_body(tx, in, n);
        if (c->body_left == 0 && c->state != PF_CONN_DEAD && c->tx == tx)
            conn_body_done(c);
        if (c->state == PF_CONN_DEAD)
            return -1;
        if (c->tx != tx)
            return 0; /* the tx ended: the next head, unless closing (see pf_conn_tx_done) */
        return evbuffer_get_length(in) == 0 ? -1 : 0;
    }
    if (c->body_tmp == NULL)
        c->body_tmp = pf_evbuffer_new();
    rc = pf_chunked_decode(&c->chunked, in, c->body_tmp);
    if (rc < 0) {
        conn_reply_error(c, 400, PF_ERR_BAD_REQUEST);
        return -1;
    }
    n = evbuffer_get_length(c->body_tmp);
    tx->body_in = c->chunked.total;
    if (max > 0 && tx->body_in > max) {
        conn_reply_error(c, 413, PF_ERR_BODY_TOO_LARGE);
        return -1;
    }
    if (n > 0)
        pf_tx_req_body(tx, c->body_tmp, n);
    if (rc == 0)
        return -1; /* needs more input */
    if (c->state != PF_CONN_DEAD && c->tx == tx)
        conn_body_done(c);
    return c->state == PF_CONN_DEAD ? -1 : 0;
}

/*
 * Scan the input beyond what was scanned of the head so far; when the head is
 * whole, read it into a transaction and start that. Returns 0 to go on, -1 to
 * stop (more input needed, or the head was refused).
 */
static int conn_read_head(struct pf_conn *c)
{
    const struct pf_limits *l = &c->w->wc->cfg->limits;
    struct evbuffer *in = c->s->in;
    int rc = PF_H1P_MORE;

    while (rc == PF_H1P_MORE && c->head_bytes < evbuffer_get_length(in)) {
        struct evbuffer_ptr pos;
        struct evbuffer_iovec v;
        size_t used = 0;

        evbuffer_ptr_set(in, &pos, c->head_bytes, EVBUFFER_PTR_SET);
        if (evbuffer_peek(in, -1, &pos, &v, 1) < 1)
            break;
        rc = pf_h1p_scan_request(&c->scan, v.iov_base, v.iov_len, &used);
        if (rc > PF_H1P_DONE) {
            conn_fail(c, 400, PF_ERR_BAD_REQUEST);
            break;
        }
        c->head_bytes += (uint32_t)used;
        if (c->head_bytes > l->max_header_size + 2 || c->scan.lines > l->max_headers)
            conn_fail(c, 431, PF_ERR_HEADERS_TOO_LARGE);
        else if (c->scan.url_len > l->max_uri_size)
            conn_fail(c, 414, PF_ERR_URI_TOO_LONG);
        if (c->pending_status != 0)
            break;
    }
    if (c->pending_status == 0 && rc == PF_H1P_DONE)
        conn_head_done(c);
    if (c->pending_status != 0) {
        conn_reply_error(c, c->pending_status, c->pending_code);
        return -1;
    }
    if (rc != PF_H1P_DONE)
        return -1;
    /* the client timer stays: if it fires it finds the tx (conn_timer_fired) */
    c->tx->req_done = c->state == PF_CONN_WAITING;
    pf_tx_start(c->tx);
    return 0;
}

static void conn_process(struct pf_conn *c)
{
    if (c->processing)
        return; /* the loop below on the stack goes on by itself */
    c->processing = true;
    /* raw: the socket is read by splice (conn_body), not into the buffer */
    while (conn_parsing(c) && (evbuffer_get_length(c->s->in) > 0 || c->s->raw)) {
        if (c->tx == NULL) {
            if (conn_read_head(c) != 0)
                break;
        } else if (c->body_mode == PF_BODY_NONE || conn_body(c) != 0) {
            break;
        }
    }
    if (c->state == PF_CONN_READING_HEAD && c->tx == NULL && c->head_bytes > 0 && !c->head_timed) {
        /* a head that did not come in one read: header_timeout from its first bytes */
        c->head_timed = true;
        conn_arm_timer(c, c->w->wc->cfg->limits.header_timeout_ms);
    }
    c->processing = false;
}

/* ---- callbacks ---- */

static void conn_readcb(struct pf_stream *s, void *arg)
{
    struct pf_conn *c = arg;

    conn_enter(c);
    if (c->state == PF_CONN_LINGERING) {
        size_t n = evbuffer_get_length(s->in);

        evbuffer_drain(s->in, n);
        c->linger_bytes += (uint32_t)n;
        if (c->linger_bytes > LINGER_BYTES)
            pf_conn_close(c);
        conn_leave(c);
        return;
    }
    conn_process(c);
    if (conn_paused(c) && !c->read_blocked &&
        evbuffer_get_length(s->in) > c->w->wc->cfg->limits.max_header_size + PF_IN_SLACK) {
        /*
         * Input waits while a transaction is in progress (pipelining or a
         * body the upstream is not ready for): stop reading, so memory per
         * connection stays bounded. pf_conn_resume_body()/tx_done resume.
         */
        c->read_blocked = true;
        pf_stream_read(s, false);
    }
    conn_leave(c);
}

/*
 * Close a connection whose output has all been written. When the client may
 * still be sending (an error answered before its body was read, requests
 * pipelined after a close), closing at once would make the kernel answer
 * those bytes with a reset, which can destroy the response in flight: shut
 * our side and discard input for a while first (nginx's lingering_close).
 */
static void conn_finish_close(struct pf_conn *c)
{
    if (c->state == PF_CONN_DEAD)
        return;
    if (c->state == PF_CONN_LINGERING || !(c->linger || evbuffer_get_length(c->s->in) > 0)) {
        pf_conn_close(c);
        return;
    }
    c->state = PF_CONN_LINGERING;
    shutdown(c->s->fd, SHUT_WR);
    evbuffer_drain(c->s->in, evbuffer_get_length(c->s->in));
    pf_stream_read(c->s, true);
    conn_arm_timer(c, LINGER_MS);
}

static void conn_writecb(struct pf_stream *s, void *arg)
{
    struct pf_conn *c = arg;
    size_t len = evbuffer_get_length(s->out);

    conn_enter(c);
    if (len == 0 && c->closing && (c->tx == NULL || c->tx->phase == PF_TX_DONE)) {
        conn_finish_close(c);
    } else if (c->tx != NULL && c->tx->uc != NULL && len <= PF_OUT_LOW_WATER) {
        pf_upstream_resume_read(c->tx->uc);
    }
    conn_leave(c);
}

/*
 * The client closed or failed. As nginx does, an end of input while a
 * response is still on its way is taken as the client giving up (499): the
 * upstream connection and the filters' state are released at once instead of
 * when the upstream finishes.
 */
static void conn_eventcb(struct pf_stream *s, int what, void *arg)
{
    struct pf_conn *c = arg;

    conn_enter(c);
    if (c->state != PF_CONN_LINGERING && (what & PF_STREAM_EOF) && c->tx == NULL &&
        evbuffer_get_length(s->out) > 0) {
        /* the client is done sending: the last response still goes out */
        c->closing = true;
    } else {
        pf_conn_close(c);
    }
    conn_leave(c);
}

static void conn_timer_fired(struct pf_timer *t)
{
    struct pf_conn *c = (struct pf_conn *)((char *)t - offsetof(struct pf_conn, timer));

    conn_enter(c);
    if (c->state == PF_CONN_LINGERING)
        pf_conn_close(c);
    else if (c->tx == NULL && c->head_bytes > 0)
        conn_reply_error(c, 408, PF_ERR_REQUEST_TIMEOUT);
    else if (c->tx == NULL && evbuffer_get_length(c->s->out) > 0)
        conn_arm_timer(c, c->w->wc->cfg->limits.idle_timeout_ms); /* still sending */
    else if (c->tx == NULL)
        pf_conn_close(c);
    else if (c->body_mode != PF_BODY_NONE)
        conn_reply_error(c, 408, PF_ERR_REQUEST_TIMEOUT); /* stalled or too slow: 408, or a cut */
    conn_leave(c);
}

static void conn_arm_timer(struct pf_conn *c, uint64_t ms)
{
    if (ms == 0)
        pf_timer_del(&c->w->sloop.timers, &c->timer);
    else
        pf_timer_add(&c->w->sloop.timers, &c->timer, pf_now_us() + ms * 1000);
}

/*
 * While a request body is read: idle_timeout of silence, and no later than
 * limits.body_timeout after the body started (a client trickling a byte now
 * and then must not hold the request, and perhaps an upstream connection,
 * for ever).
 */
static void conn_arm_body_timer(struct pf_conn *c)
{
    const struct pf_limits *l = &c->tx->cfg->limits;
    uint64_t now = pf_now_us();
    uint64_t left;

    if (c->body_deadline_us == 0)
        c->body_deadline_us = now + l->body_timeout_ms * 1000;
    left = c->body_deadline_us > now ? c->body_deadline_us - now : 0;
    if (l->body_timeout_ms == 0 || left >= l->idle_timeout_ms * 1000) { /* 0: none */
        conn_arm_timer(c, l->idle_timeout_ms);
    } else {
        pf_timer_add(&c->w->sloop.timers, &c->timer, now + left); /* the body's deadline */
    }
}

static void conn_client_name(struct pf_conn *c, const struct sockaddr *sa)
{
    if (sa->sa_family == AF_INET) {
        inet_ntop(AF_INET, &((const struct sockaddr_in *)sa)->sin_addr, c->client,
                  sizeof(c->client));
    } else if (sa->sa_family == AF_INET6) {
        inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)sa)->sin6_addr, c->client,
                  sizeof(c->client));
    } else {
        strcpy(c->client, "unix");
    }
}

void pf_conn_accept(struct pf_worker *w, int fd, const struct sockaddr *sa, bool is_admin)
{
    struct pf_conn *c = pf_xcalloc(1, sizeof(*c));
    int one = 1;

    if (sa->sa_family != AF_UNIX)
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    c->w = w;
    c->is_admin = is_admin;
    conn_client_name(c, sa);
    c->s = pf_stream_new(&w->sloop, fd);
    conn_head_reset(c);
    pf_timer_init(&c->timer, conn_timer_fired);
    pf_stream_setcb(c->s, conn_readcb, conn_writecb, conn_eventcb, c);
    {
        /* a client that takes no output for idle_timeout is gone (send timeout) */
        struct timeval tmp;

        pf_stream_set_write_timeout(
            c->s, pf_stream_timeout(&w->sloop, w->wc->cfg->limits.idle_timeout_ms, &tmp));
    }
    pf_stream_read(c->s, true);
    TAILQ_INSERT_TAIL(&w->conns, c, link);
    w->n_conns++;
    conn_arm_timer(c, w->wc->cfg->limits.header_timeout_ms);
}

void pf_conn_resume_body(struct pf_conn *c)
{
    struct pf_tx *tx = c->tx;

    if (tx == NULL || tx->req_done || c->state != PF_CONN_BODY_PAUSED)
        return;
    conn_enter(c);
    c->state = PF_CONN_READING_BODY;
    if (c->body_mode != PF_BODY_NONE)
        conn_arm_body_timer(c); /* the body must keep coming */
    if (c->read_blocked) {
        c->read_blocked = false;
        pf_stream_read(c->s, true);
    }
    conn_process(c);
    conn_leave(c);
}

void pf_conn_block_body(struct pf_conn *c)
{
    if (!conn_parsing(c))
        return;
    pf_timer_del(&c->w->sloop.timers, &c->timer); /* waiting on the upstream, not on the client */
    c->state = PF_CONN_BODY_PAUSED;
    c->read_blocked = true;
    pf_stream_read(c->s, false);
}

void pf_conn_tx_done(struct pf_conn *c)
{
    struct pf_tx *tx = c->tx;

    conn_enter(c);
    c->tx = NULL;
    if (c->s->more) /* a response that ended without pf_conn_send_end */
        pf_stream_set_more(c->s, false);
    if (tx->close_after || !tx->req_done)
        c->closing = true;
    if (!tx->req_done)
        c->linger = true;
    pf_tx_free(tx);
    if (c->closing) {
        /*
         * The parser stops for good. The tx may end inside conn_body() (an
         * upstream failing as the body is handed over): conn_process()'s loop
         * must not go on there, or the rest of the unread body, or a request
         * pipelined after this Connection: close response, would be parsed
         * as a new request (smuggling). What is left is discarded by the
         * lingering close.
         */
        if (conn_parsing(c) || conn_paused(c))
            c->state = PF_CONN_WAITING;
        pf_timer_del(&c->w->sloop.timers, &c->timer); /* none may fire on a closing one */
        pf_stream_read(c->s, false);
        if (pf_conn_out_len(c) == 0)
            conn_finish_close(c);
        conn_leave(c);
        return;
    }
    /* go on with the next (pipelined) request */
    c->state = PF_CONN_READING_HEAD;
    conn_head_reset(c);
    if (c->read_blocked) {
        c->read_blocked = false;
        pf_stream_read(c->s, true);
    }
    conn_arm_timer(c, c->w->wc->cfg->limits.idle_timeout_ms); /* moves it: no event operation */
    conn_process(c);
    conn_leave(c);
}
