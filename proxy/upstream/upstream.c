/*
 * Upstream connections: endpoint table, per-worker LIFO keep-alive pools,
 * request forwarding (re-framed) and response parsing with http-parser.
 *
 * The seam for the breaker, health and balancer work: upstream_pick() chooses
 * the endpoint, upstream_report() hears the outcome of every attempt.
 */
#include "proxy/upstream/upstream.h"

#include <errno.h>
#include <limits.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/event.h>

#include "proxy/arena.h"
#include "proxy/chunked.h"
#include "proxy/http1.h"
#include "proxy/log.h"
#include "proxy/sbuf.h"
#include "proxy/stats.h"
#include "proxy/tx.h"

#define UP_MAX_HEAD    (64 * 1024)
#define UP_MAX_HEADERS 200

static void up_process(struct pf_upconn *uc);
static void up_eof(struct pf_upconn *uc);
static bool up_start_attempt(struct pf_tx *tx, bool fresh);

/* ---- the seam: pick an endpoint, hear outcomes ---- */

static unsigned upstream_pick(struct pf_tx *tx)
{
    const struct pf_upstream_conf *up = tx->up;
    unsigned i;

    if (up->n_endpoints == 1)
        return up->endpoint_ids[0];
    switch (up->balance) {
    case PF_BALANCE_RANDOM:
        i = (unsigned)(pf_worker_rand(tx->w) % up->n_endpoints);
        break;
    case PF_BALANCE_LEAST_REQUEST: {
        /* power of two choices */
        unsigned a = (unsigned)(pf_worker_rand(tx->w) % up->n_endpoints);
        unsigned b = (unsigned)(pf_worker_rand(tx->w) % up->n_endpoints);
        unsigned la = atomic_load_explicit(&pf_endpoint_get(up->endpoint_ids[a])->active,
                                           memory_order_relaxed);
        unsigned lb = atomic_load_explicit(&pf_endpoint_get(up->endpoint_ids[b])->active,
                                           memory_order_relaxed);
        i = lb < la ? b : a;
        break;
    }
    default:
        i = (unsigned)(tx->w->rr++ % up->n_endpoints);
        break;
    }
    return up->endpoint_ids[i];
}

static void upstream_report(struct pf_tx *tx, enum pf_outcome o)
{
    /* the circuit breaker and passive health hook in here */
    pf_stats_upstream_report(tx, (int)o);
}

/* ---- pools ---- */

static struct pf_pool *worker_pool(struct pf_worker *w, unsigned id)
{
    if (id >= w->n_pools) {
        unsigned n = pf_endpoint_id_limit(); /* ids are reused: bounded by the most live at once */

        w->pools = pf_xrealloc(w->pools, n * sizeof(*w->pools));
        for (unsigned i = w->n_pools; i < n; i++) {
            w->pools[i] = pf_xcalloc(1, sizeof(**w->pools));
            TAILQ_INIT(&w->pools[i]->idle);
        }
        w->n_pools = n;
    }
    return w->pools[id];
}

static void up_free(struct pf_upconn *uc)
{
    struct pf_endpoint *ep;

    pf_stream_free(uc->s);
    evbuffer_free(uc->body);
    pf_head_free(&uc->head);
    ep = pf_endpoint_get(uc->endpoint_id);
    atomic_fetch_sub_explicit(&ep->open, 1, memory_order_relaxed);
    free(uc);
    pf_endpoint_unref(ep); /* the connection's reference: may free the endpoint */
}

/* Close uc now, or as soon as its callbacks have returned. */
static void up_close(struct pf_upconn *uc)
{
    if (uc->dead)
        return;
    uc->dead = true;
    if (uc->busy == 0)
        up_free(uc);
}

static void up_leave(struct pf_upconn *uc)
{
    if (--uc->busy == 0 && uc->dead)
        up_free(uc);
}

static void pool_remove(struct pf_upconn *uc)
{
    struct pf_pool *p = worker_pool(uc->w, uc->endpoint_id);

    TAILQ_REMOVE(&p->idle, uc, link);
    p->n_idle--;
}

static void idle_readcb(struct pf_stream *s, void *arg)
{
    struct pf_upconn *uc = arg;

    /* an idle connection must not speak: drop it */
    (void)s;
    pool_remove(uc);
    up_close(uc);
}

static void idle_eventcb(struct pf_stream *s, int what, void *arg)
{
    (void)what;
    idle_readcb(s, arg);
}

static void set_rto(struct pf_upconn *uc, uint64_t ms)
{
    struct timeval tmp;

    pf_stream_set_read_timeout(uc->s, pf_stream_timeout(&uc->w->sloop, ms, &tmp));
}

/* False once no snapshot lists the endpoint: its idle connections only hold it alive. */
static bool endpoint_listed(unsigned id)
{
    return atomic_load_explicit(&pf_endpoint_get(id)->snaps, memory_order_relaxed) > 0;
}

/*
 * An idle connection keeps a read timeout of idle_timeout: the stream's
 * timeout closes it (idle_eventcb), and no syscall is spent switching it.
 */
static void pool_put(struct pf_upconn *uc, const struct pf_upstream_conf *up)
{
    struct pf_pool *p = worker_pool(uc->w, uc->endpoint_id);
    uint64_t now = pf_now_us();

    if (p->n_idle >= up->pool.max_idle || now >= uc->expire_us || uc->w->draining ||
        !endpoint_listed(uc->endpoint_id)) {
        up_close(uc);
        return;
    }
    uc->idle_deadline_us = now + up->pool.idle_timeout_ms * 1000;
    uc->reused = true;
    set_rto(uc, up->pool.idle_timeout_ms);
    pf_stream_setcb(uc->s, idle_readcb, NULL, idle_eventcb, uc);
    pf_stream_read(uc->s, true);
    TAILQ_INSERT_HEAD(&p->idle, uc, link);
    p->n_idle++;
}

static struct pf_upconn *pool_get(struct pf_worker *w, unsigned id)
{
    struct pf_pool *p = worker_pool(w, id);
    uint64_t now = pf_now_us();
    struct pf_upconn *uc;

    while ((uc = TAILQ_FIRST(&p->idle)) != NULL) {
        pool_remove(uc);
        if (now < uc->idle_deadline_us && now < uc->expire_us)
            return uc;
        up_close(uc);
    }
    return NULL;
}

void pf_upstream_sweep(struct pf_worker *w, bool all)
{
    uint64_t now = pf_now_us();

    for (unsigned i = 0; i < w->n_pools; i++) {
        struct pf_upconn *uc, *next;

        for (uc = TAILQ_FIRST(&w->pools[i]->idle); uc != NULL; uc = next) {
            next = TAILQ_NEXT(uc, link);
            if (all || now >= uc->idle_deadline_us || now >= uc->expire_us ||
                !endpoint_listed(uc->endpoint_id)) {
                pool_remove(uc);
                up_close(uc);
            }
        }
    }
    if (w->stats != NULL)
        pf_stats_prune_endpoints(w->stats); /* series of endpoints that are gone */
    if (all) {
        for (unsigned i = 0; i < w->n_pools; i++)
            free(w->pools[i]);
        free(w->pools);
        w->pools = NULL;
        w->n_pools = 0;
    }
}

/* ---- response parsing ---- */

static int up_on_message_begin(http_parser *p)
{
    struct pf_upconn *uc = p->data;

    pf_head_reset(&uc->head);
    return 0;
}

static int up_on_header_field(http_parser *p, const char *at, size_t len)
{
    struct pf_upconn *uc = p->data;

    return pf_head_append(&uc->head, PF_HEAD_FIELD, at, len, UP_MAX_HEAD, UP_MAX_HEADERS) == 0 ? 0
                                                                                               : -1;
}

static int up_on_header_value(http_parser *p, const char *at, size_t len)
{
    struct pf_upconn *uc = p->data;

    return pf_head_append(&uc->head, PF_HEAD_VALUE, at, len, UP_MAX_HEAD, UP_MAX_HEADERS) == 0 ? 0
                                                                                               : -1;
}

static int up_on_headers_complete(http_parser *p)
{
    struct pf_upconn *uc = p->data;

    if (p->status_code < 100 || p->status_code > 599)
        return -1; /* not a status code (RFC 9110 §15): 502 */
    if (p->status_code / 100 == 1) {
        if (p->status_code == 101)
            return -1;     /* no upgrade was asked for */
        uc->in_1xx = true; /* interim: dropped (pilotfish sends its own 100) */
        return 0;
    }
    uc->head_ready = true;
    http_parser_pause(p, 1);
    if (uc->tx != NULL && uc->tx->method_id == HTTP_HEAD)
        return 1; /* the parser knows no method: no body follows a HEAD */
    if (p->status_code == 204 || p->status_code == 304)
        return 1; /* never a body, whatever the framing headers say */
    /*
     * The parser reads heads only: bodies are de-framed by up_body(), which
     * moves bytes to the client without copying them.
     */
    if (p->flags & F_CHUNKED) {
        uc->body_mode = PF_BODY_CHUNKED;
        pf_chunked_init(&uc->chunked);
    } else if (p->content_length != ULLONG_MAX) {
        if (p->content_length == 0)
            return 0; /* the parser ends the message itself */
        uc->body_mode = PF_BODY_LENGTH;
        uc->body_left = p->content_length;
    } else {
        uc->body_mode = PF_BODY_CLOSE;
    }
    uc->head_lf = true;
    return 0;
}

static int up_on_message_complete(http_parser *p)
{
    struct pf_upconn *uc = p->data;

    if (uc->in_1xx) {
        uc->in_1xx = false;
        return 0;
    }
    uc->msg_done = true;
    http_parser_pause(p, 1);
    return 0;
}

static const http_parser_settings resp_settings = {
    .on_message_begin = up_on_message_begin,
    .on_header_field = up_on_header_field,
    .on_header_value = up_on_header_value,
    .on_headers_complete = up_on_headers_complete,
    .on_message_complete = up_on_message_complete,
};

/* ---- attempts, failures and retries ---- */

static bool tx_retryable(const struct pf_tx *tx)
{
    switch (tx->method_id) {
    case HTTP_GET:
    case HTTP_HEAD:
    case HTTP_OPTIONS:
    case HTTP_TRACE:
    case HTTP_PUT:
    case HTTP_DELETE:
        return !tx->req_has_body;
    default:
        return false;
    }
}

/* Unhook uc from tx; keep it for reuse only when told so. */
static void up_detach(struct pf_tx *tx, struct pf_upconn *uc, bool reuse)
{
    struct pf_pool *p = worker_pool(tx->w, uc->endpoint_id);

    if (tx->timer_set) {
        event_del(&tx->timer);
        tx->timer_set = false;
    }
    p->n_active--;
    atomic_fetch_sub_explicit(&pf_endpoint_get(uc->endpoint_id)->active, 1, memory_order_relaxed);
    tx->uc = NULL;
    uc->tx = NULL;
    if (reuse)
        pool_put(uc, tx->up);
    else
        up_close(uc);
}

/* The attempt failed before a response head: retry, or answer the error. */
static void up_failed(struct pf_upconn *uc, enum pf_outcome o)
{
    struct pf_tx *tx = uc->tx;
    bool retry = uc->reused && !uc->got_bytes && tx_retryable(tx) && tx->attempts < 2 &&
                 (o == PF_OUTCOME_RESET);
    static const int status[] = {200, 502, 502, 504, 502};
    static const char *const code[] = {"", "upstream_connect_failed", "upstream_reset",
                                       "upstream_timeout", "upstream_bad_response"};

    upstream_report(tx, o);
    up_detach(tx, uc, false);
    if (retry) {
        /* a reused connection the upstream had closed: once, on a fresh one */
        pf_stats_upstream_retried(tx);
        (void)up_start_attempt(tx, true);
        return;
    }
    pf_tx_fail(tx, status[o], code[o]);
}

static void tx_timeoutcb(evutil_socket_t fd, short what, void *arg)
{
    struct pf_tx *tx = arg;
    struct pf_upconn *uc = tx->uc;

    (void)fd;
    (void)what;
    tx->timer_set = false;
    if (uc != NULL)
        up_failed(uc, PF_OUTCOME_TIMEOUT);
}

static void tx_arm(struct pf_tx *tx, uint64_t ms)
{
    struct timeval tmp;

    if (!event_initialized(&tx->timer))
        event_assign(&tx->timer, tx->w->base, -1, 0, tx_timeoutcb, tx);
    event_add(&tx->timer, pf_stream_timeout(&tx->w->sloop, ms, &tmp));
    tx->timer_set = true;
}

/*
 * The whole request is with a connected upstream: request_timeout is now an
 * absolute deadline for the final response head (interim 1xx responses and
 * a head that trickles in do not extend it; up_handle_head disarms it), and
 * the read timeout, the same length, bounds each silence of the body after it.
 */
static void up_await_head(struct pf_tx *tx, struct pf_upconn *uc)
{
    tx_arm(tx, tx->up->request_timeout_ms);
    set_rto(uc, tx->up->request_timeout_ms);
}

/* ---- the response ---- */

/*
 * Transfer codings other than chunked were never asked for (no TE goes
 * upstream), and the response cannot be passed on as it is: Transfer-Encoding
 * is hop-by-hop and the client did not ask for them either. Such a response
 * is a bad one (502), whether it is close-delimited ("gzip") or chunked last
 * ("gzip, chunked", whose de-chunked bytes are still gzip-coded).
 */
static bool resp_te_ok(const struct pf_hdrs *h)
{
    for (unsigned i = 0; i < h->n; i++) {
        const char *v = h->v[i].value, *elem;
        size_t len;

        if (h->v[i].id != PF_H_TRANSFER_ENCODING)
            continue;
        while (pf_http_list_next(&v, &elem, &len)) {
            if (len != 7 || strncasecmp(elem, "chunked", 7) != 0)
                return false;
        }
    }
    return true;
}

static void up_handle_head(struct pf_upconn *uc)
{
    struct pf_tx *tx = uc->tx;

    uc->head_ready = false;
    pf_head_export(&uc->head, tx->arena, &tx->resp, NULL);
    if (!resp_te_ok(&tx->resp)) {
        tx->resp.n = 0;
        up_failed(uc, PF_OUTCOME_BAD_RESPONSE);
        return;
    }
    tx->t_up_head = pf_now_us();
    if (tx->timer_set) {
        event_del(&tx->timer);
        tx->timer_set = false;
    }
    upstream_report(tx, PF_OUTCOME_OK);
    tx->status = uc->parser.status_code;
    pf_tx_respond(tx);
}

static void up_handle_done(struct pf_upconn *uc)
{
    struct pf_tx *tx = uc->tx;
    bool reuse = http_should_keep_alive(&uc->parser) && uc->req_sent && tx->req_done &&
                 evbuffer_get_length(uc->s->in) == 0;

    uc->msg_done = false;
    up_detach(tx, uc, reuse);
    pf_tx_resp_end(tx);
}

/* Pass parsed body bytes to the client; false when the tx went away. */
static bool up_flush_body(struct pf_upconn *uc)
{
    if (evbuffer_get_length(uc->body) > 0 && uc->tx != NULL)
        pf_tx_resp_body(uc->tx, uc->body);
    return !uc->dead && uc->tx != NULL;
}

static bool up_backpressure(struct pf_upconn *uc)
{
    struct pf_conn *c = uc->tx->conn;

    if (c != NULL && pf_conn_out_len(c) > PF_OUT_HIGH_WATER) {
        uc->read_blocked = true;
        pf_stream_read(uc->s, false);
        return true;
    }
    return false;
}

/* The body is cut or malformed after the head went out: the client sees a cut. */
static void up_cut(struct pf_upconn *uc, const char *code)
{
    if (uc->tx->head_sent)
        pf_tx_fail(uc->tx, 502, code);
    else
        up_failed(uc, PF_OUTCOME_BAD_RESPONSE);
}

/*
 * De-frame response body bytes and pass them on. Returns 0 to go on, 1 to
 * stop (no input, backpressure, done or failed).
 */
static int up_body(struct pf_upconn *uc)
{
    struct evbuffer *in = uc->s->in;
    size_t n;

    if (uc->head_lf) {
        unsigned char lf;

        if (evbuffer_copyout(in, &lf, 1) != 1)
            return 1;
        if (lf != '\n') {
            up_cut(uc, "upstream_bad_response");
            return 1;
        }
        evbuffer_drain(in, 1);
        uc->head_lf = false;
    }
    switch (uc->body_mode) {
    case PF_BODY_LENGTH:
        n = evbuffer_get_length(in);
        if (n > uc->body_left)
            n = (size_t)uc->body_left;
        evbuffer_remove_buffer(in, uc->body, n);
        uc->body_left -= n;
        if (uc->body_left == 0)
            uc->msg_done = true;
        break;
    case PF_BODY_CHUNKED:
        switch (pf_chunked_decode(&uc->chunked, in, uc->body)) {
        case -1:
            up_cut(uc, "upstream_bad_response");
            return 1;
        case 1:
            uc->msg_done = true;
            break;
        }
        break;
    default:
        evbuffer_add_buffer(uc->body, in);
        break;
    }
    if (!up_flush_body(uc))
        return 1;
    if (uc->msg_done) {
        uc->body_mode = PF_BODY_NONE;
        up_handle_done(uc);
        return 1;
    }
    return up_backpressure(uc) || evbuffer_get_length(in) == 0 ? 1 : 0;
}

static void up_process(struct pf_upconn *uc)
{
    struct evbuffer *in = uc->s->in;

    uc->busy++;
    while (!uc->dead && uc->tx != NULL && !uc->read_blocked) {
        struct evbuffer_iovec v;
        size_t n;
        enum http_errno e;

        if (uc->body_mode != PF_BODY_NONE) {
            if (up_body(uc) != 0)
                break;
            continue;
        }
        if (evbuffer_get_length(in) == 0)
            break;
        uc->got_bytes = true;
        evbuffer_peek(in, -1, NULL, &v, 1);
        n = http_parser_execute(&uc->parser, &resp_settings, v.iov_base, v.iov_len);
        evbuffer_drain(in, n);
        e = HTTP_PARSER_ERRNO(&uc->parser);
        if (e != HPE_OK && e != HPE_PAUSED) {
            up_cut(uc, "upstream_bad_response");
            break;
        }
        if (uc->head_ready)
            up_handle_head(uc);
        if (uc->dead || uc->tx == NULL)
            break;
        if (uc->msg_done) {
            up_handle_done(uc);
            break;
        }
        if (e == HPE_PAUSED && uc->body_mode == PF_BODY_NONE)
            http_parser_pause(&uc->parser, 0);
    }
    up_leave(uc);
}

void pf_upstream_resume_read(struct pf_upconn *uc)
{
    if (!uc->read_blocked || uc->dead)
        return;
    uc->busy++;
    uc->read_blocked = false;
    pf_stream_read(uc->s, true);
    up_process(uc);
    if (uc->eof_pending && !uc->dead && uc->tx != NULL && !uc->read_blocked)
        up_eof(uc);
    up_leave(uc);
}

static void up_readcb(struct pf_stream *s, void *arg)
{
    (void)s;
    up_process(arg);
}

/* The upstream closed: end a close-delimited body, or fail the attempt. */
static void up_eof(struct pf_upconn *uc)
{
    struct pf_tx *tx = uc->tx;

    if (evbuffer_get_length(uc->s->in) > 0) {
        up_process(uc);
        if (uc->dead || uc->tx == NULL)
            return;
        if (uc->read_blocked) {
            uc->eof_pending = true; /* finished when the client has drained */
            return;
        }
    }
    if (uc->body_mode == PF_BODY_CLOSE && !uc->head_lf) {
        /* a close-delimited body ends here */
        uc->body_mode = PF_BODY_NONE;
        up_detach(tx, uc, false);
        pf_tx_resp_end(tx);
    } else if (uc->body_mode != PF_BODY_NONE) {
        tx->error = "upstream_reset";
        pf_tx_fail(tx, 502, "upstream_reset");
    } else if (!tx->head_sent && !uc->head_ready) {
        up_failed(uc, uc->connected ? PF_OUTCOME_RESET : PF_OUTCOME_CONNECT_FAILED);
    } else {
        /* cut in the middle of the response: the client must see a cut too */
        tx->error = "upstream_reset";
        pf_tx_fail(tx, 502, "upstream_reset");
    }
}

static void up_eventcb(struct pf_stream *s, int what, void *arg)
{
    struct pf_upconn *uc = arg;
    struct pf_tx *tx = uc->tx;

    (void)s;
    if (tx == NULL)
        return;
    uc->busy++;
    if (what & PF_STREAM_CONNECTED) {
        uc->connected = true;
        if (uc->req_sent) {
            up_await_head(tx, uc); /* replaces the connect timeout */
        } else {
            /*
             * The body is still coming: request_timeout bounds how long the
             * upstream may leave it unread (up_writecb disarms on progress).
             */
            tx_arm(tx, tx->up->request_timeout_ms);
        }
    } else if (what & PF_STREAM_TIMEOUT) {
        if (tx->head_sent)
            pf_tx_fail(tx, 504, "upstream_timeout");
        else
            up_failed(uc, PF_OUTCOME_TIMEOUT);
    } else if (what & PF_STREAM_EOF) {
        up_eof(uc);
    } else if (what & PF_STREAM_ERROR) {
        if (uc->connected) {
            if (tx->head_sent)
                pf_tx_fail(tx, 502, "upstream_reset");
            else
                up_failed(uc, PF_OUTCOME_RESET);
        } else {
            up_failed(uc, PF_OUTCOME_CONNECT_FAILED);
        }
    }
    up_leave(uc);
}

static void up_writecb(struct pf_stream *s, void *arg)
{
    struct pf_upconn *uc = arg;

    (void)s;
    if (uc->tx != NULL && uc->tx->conn != NULL && !uc->tx->req_done) {
        if (uc->tx->timer_set && uc->connected) {
            event_del(&uc->tx->timer);
            uc->tx->timer_set = false;
        }
        pf_conn_resume_body(uc->tx->conn);
    }
}

/* ---- the request ---- */

static struct pf_upconn *up_connect(struct pf_worker *w, unsigned id,
                                    const struct pf_upstream_conf *up)
{
    struct pf_endpoint *ep = pf_endpoint_get(id);
    struct pf_upconn *uc;
    int fd, one = 1;

    fd = socket(ep->addr.ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd == -1)
        return NULL;
    if (ep->addr.ss.ss_family != AF_UNIX)
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    uc = pf_xcalloc(1, sizeof(*uc));
    uc->w = w;
    uc->endpoint_id = id;
    uc->body = pf_evbuffer_new();
    uc->expire_us = pf_now_us() + up->pool.max_lifetime_ms * 1000;
    uc->s = pf_stream_new(&w->sloop, fd);
    http_parser_init(&uc->parser, HTTP_RESPONSE);
    uc->parser.data = uc;
    atomic_fetch_add_explicit(&ep->open, 1, memory_order_relaxed);
    pf_endpoint_ref(ep); /* dropped by up_free */
    if (pf_stream_connect(uc->s, (struct sockaddr *)&ep->addr.ss, ep->addr.len) != 0) {
        up_free(uc);
        return NULL;
    }
    return uc;
}

/*
 * Not forwarded as received: hop-by-hop headers (and those Connection lists),
 * Expect (answered here), Content-Length (re-framed), and the X-Forwarded-*,
 * X-Request-Id and traceparent headers, which are written anew below. Host is
 * always kept: Connection cannot remove a header pilotfish handles itself
 * ("Connection: Host" would otherwise send an HTTP/1.1 request without Host).
 */
static bool req_hop_by_hop(const struct pf_hdr *h, const char *conn_value)
{
    if (h->id != PF_H_OTHER)
        return h->id != PF_H_HOST;
    return conn_value != NULL && pf_http_list_has(conn_value, h->name);
}

static void put_header(struct pf_sbuf *b, const char *name, const char *value)
{
    pf_sb_header(b, name, strlen(name), value, strlen(value));
}

/* The request head toward the upstream (SPEC §4: hop-by-hop, X-Forwarded-*). */
static void up_write_head(struct pf_tx *tx, struct pf_upconn *uc)
{
    struct pf_sbuf b;
    const char *conn_value = pf_hdrs_get_id(&tx->req, PF_H_CONNECTION);
    const char *xff = pf_hdrs_get_id(&tx->req, PF_H_X_FORWARDED_FOR);
    const char *client = pf_tx_client_addr(tx);

    pf_sb_init(&b, uc->s->out);
    pf_sb_str(&b, tx->method);
    pf_sb_put(&b, " ", 1);
    pf_sb_str(&b, tx->url);
    pf_sb_put(&b, " HTTP/1.1\r\n", 11);
    for (unsigned i = 0; i < tx->req.n; i++) {
        const struct pf_hdr *h = &tx->req.v[i];

        if (req_hop_by_hop(h, conn_value) || (h->id == PF_H_HOST && tx->host_from_target))
            continue;
        pf_sb_header(&b, h->name, h->name_len, h->value, h->value_len);
    }
    if (tx->host == NULL)
        put_header(&b, "Host", pf_endpoint_get(uc->endpoint_id)->addr.text);
    else if (tx->host_from_target)
        put_header(&b, "Host", tx->host);
    uc->req_chunked = tx->req_chunked;
    if (tx->req_chunked) {
        pf_sb_str(&b, "Transfer-Encoding: chunked\r\n");
    } else if (tx->req_has_length) {
        pf_sb_str(&b, "Content-Length: ");
        pf_sb_u64(&b, tx->req_length);
        pf_sb_put(&b, "\r\n", 2);
    }
    pf_sb_str(&b, "X-Forwarded-For: ");
    for (unsigned i = 0; xff != NULL && i < tx->req.n; i++) {
        /* every X-Forwarded-For line, in order, then the client */
        if (tx->req.v[i].id == PF_H_X_FORWARDED_FOR && tx->req.v[i].value_len > 0) {
            pf_sb_put(&b, tx->req.v[i].value, tx->req.v[i].value_len);
            pf_sb_put(&b, ", ", 2);
        }
    }
    pf_sb_str(&b, client);
    pf_sb_put(&b, "\r\n", 2);
    pf_sb_str(&b, "X-Forwarded-Proto: http\r\n");
    if (tx->host != NULL)
        put_header(&b, "X-Forwarded-Host", tx->host);
    put_header(&b, "X-Request-Id", tx->request_id);
    pf_sb_header(&b, "traceparent", 11, tx->traceparent, 55);
    pf_sb_put(&b, "\r\n", 2);
    pf_sb_flush(&b);
    pf_stream_mark(uc->s);
}

/* Start one attempt; false when it failed at once (tx was answered and may be gone). */
static bool up_start_attempt(struct pf_tx *tx, bool fresh)
{
    unsigned id = upstream_pick(tx);
    struct pf_upconn *uc = fresh ? NULL : pool_get(tx->w, id);

    tx->attempts++;
    tx->endpoint_id = id;
    tx->endpoint = pf_endpoint_get(id)->addr.text;
    if (tx->t_up_start == 0)
        tx->t_up_start = pf_now_us();
    if (uc == NULL) {
        uc = up_connect(tx->w, id, tx->up);
        if (uc == NULL) {
            upstream_report(tx, PF_OUTCOME_CONNECT_FAILED);
            pf_tx_fail(tx, 502, "upstream_connect_failed");
            return false;
        }
        /* connect_timeout on the tx timer, then request_timeout on reads */
        tx_arm(tx, tx->up->connect_timeout_ms);
    } else {
        uc->connected = true;
        if (!tx->req_done)
            pf_stream_set_read_timeout(uc->s,
                                       NULL); /* a silent upstream is fine during an upload */
    }
    worker_pool(tx->w, id)->n_active++;
    atomic_fetch_add_explicit(&pf_endpoint_get(id)->active, 1, memory_order_relaxed);
    uc->tx = tx;
    uc->got_bytes = false;
    uc->req_sent = false;
    uc->body_mode = PF_BODY_NONE;
    uc->head_lf = false;
    uc->msg_done = false;
    uc->head_ready = false;
    uc->in_1xx = false;
    tx->uc = uc;
    http_parser_init(&uc->parser, HTTP_RESPONSE);
    uc->parser.data = uc;
    pf_stream_setcb(uc->s, up_readcb, up_writecb, up_eventcb, uc);
    pf_stream_read(uc->s, true);
    up_write_head(tx, uc);
    if (tx->req_done) {
        uc->req_sent = true;
        /* request_timeout: from the end of the request to the head, then between reads */
        if (uc->connected)
            up_await_head(tx, uc);
    }
    return true;
}

static void up_evbuffer_free(void *b)
{
    evbuffer_free(b);
}

/*
 * limits.request_buffering: read a small body (a Content-Length up to the
 * limit, or a chunked one until it passes it) before an upstream connection
 * is taken, so that a slow client holds none. Returns true when buffering.
 */
static bool up_buffer_start(struct pf_tx *tx)
{
    uint64_t limit = tx->cfg->limits.request_buffering;
    struct pf_conn *c = tx->conn;

    if (tx->req_done || c == NULL || limit == 0 || tx->req_buf != NULL)
        return false;
    if (c->body_mode != PF_BODY_CHUNKED && (c->body_mode != PF_BODY_LENGTH || c->body_left > limit))
        return false;
    tx->req_buf = evbuffer_new();
    if (tx->req_buf == NULL)
        return false; /* stream it instead */
    pf_arena_defer(tx->arena, up_evbuffer_free, tx->req_buf);
    tx->req_buffering = true;
    pf_conn_send_continue(tx);
    pf_conn_resume_body(c);
    return true;
}

/* Buffering ends (the body is in, or passed the limit): connect and send what is buffered. */
static void up_buffer_flush(struct pf_tx *tx)
{
    struct evbuffer *b = tx->req_buf;
    size_t len = evbuffer_get_length(b);

    tx->req_buffering = false;
    tx->req_buf = NULL; /* still freed with the arena */
    if (!up_start_attempt(tx, false))
        return;
    if (len > 0)
        pf_upstream_send_body(tx, b, len);
    if (tx->req_done && tx->uc != NULL)
        pf_upstream_send_end(tx);
}

void pf_upstream_start(struct pf_tx *tx)
{
    if (up_buffer_start(tx))
        return;
    if (!up_start_attempt(tx, false))
        return;
    if (!tx->req_done && tx->conn != NULL) {
        /* the body may flow now */
        pf_conn_send_continue(tx);
        pf_conn_resume_body(tx->conn);
    }
}

void pf_upstream_send_body(struct pf_tx *tx, struct evbuffer *src, size_t len)
{
    struct pf_upconn *uc = tx->uc;
    struct evbuffer *o;

    if (tx->req_buffering) {
        evbuffer_remove_buffer(src, tx->req_buf, len);
        if (evbuffer_get_length(tx->req_buf) > tx->cfg->limits.request_buffering)
            up_buffer_flush(tx); /* a chunked body past the limit: stream the rest */
        return;
    }
    o = uc->s->out;

    if (uc->req_chunked) {
        char hex[24];
        size_t n = pf_hex(hex, len);

        hex[n++] = '\r';
        hex[n++] = '\n';
        evbuffer_add(o, hex, n);
        evbuffer_remove_buffer(src, o, len);
        evbuffer_add(o, "\r\n", 2);
    } else {
        evbuffer_remove_buffer(src, o, len);
    }
    pf_stream_mark(uc->s);
    if (evbuffer_get_length(o) > PF_OUT_HIGH_WATER && tx->conn != NULL) {
        /* the upstream must take the body: request_timeout of no progress ends it */
        pf_conn_block_body(tx->conn);
        if (uc->connected)
            tx_arm(tx, tx->up->request_timeout_ms);
    }
}

void pf_upstream_send_end(struct pf_tx *tx)
{
    struct pf_upconn *uc = tx->uc;

    if (tx->req_buffering) {
        up_buffer_flush(tx); /* the whole body is in */
        return;
    }

    if (uc->req_chunked) {
        evbuffer_add(uc->s->out, "0\r\n\r\n", 5);
        pf_stream_mark(uc->s);
    }
    uc->req_sent = true;
    if (uc->connected && tx->t_up_head == 0)
        up_await_head(tx, uc);
    else if (uc->connected)
        set_rto(uc, tx->up->request_timeout_ms); /* an early head: the body's read timeout */
}

void pf_upstream_abort(struct pf_tx *tx)
{
    if (tx->uc != NULL)
        up_detach(tx, tx->uc, false);
}
