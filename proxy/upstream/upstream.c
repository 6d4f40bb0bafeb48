/*
 * Upstream attempts: one request at a time per upstream connection. An
 * attempt picks an endpoint (balancer.c), takes a pooled connection or opens
 * one (pool.c), writes the request and reads the response (h1client.c), and
 * ends with the connection back in its pool, closed, or a retry.
 *
 * Timers: connect_timeout on the tx timer until connected; request_timeout
 * from the end of the request to the final head (the stream's read timeout
 * held to a deadline, pf_stream_set_read_deadline), then between reads (the
 * stream's read timeout).
 */
#include "proxy/upstream/upstream.h"

#include <stdatomic.h>
#include <string.h>

#include <event2/buffer.h>
#include <event2/event.h>

#include "proxy/arena.h"
#include "proxy/errors.h"
#include "proxy/http1.h"
#include "proxy/log.h"
#include "proxy/stats.h"
#include "proxy/tx.h"
#include "proxy/upstream/balancer.h"
#include "proxy/upstream/breaker.h"
#include "proxy/upstream/h1client.h"
#include "proxy/upstream/health.h"
#include "proxy/upstream/pool.h"
#include "proxy/upstream/retry.h"
#include "proxy/upstream/upsplice.h"

static void up_process(struct pf_upconn *uc);
static void up_eof(struct pf_upconn *uc);
static bool up_start_attempt(struct pf_tx *tx, bool fresh);
static void up_retry_go(struct pf_tx *tx, bool fresh);
static void up_retry_schedule(struct pf_tx *tx);

/* ---- the seam: pick an endpoint, hear outcomes ---- */

/* An attempt that was a retry is over: its place in the budget goes back. */
static void up_retry_release(struct pf_tx *tx)
{
    if (tx->retry_held) {
        tx->retry_held = false;
        pf_retry_budget_put(tx->up->rstate);
    }
}

/* The outcome of the attempt on uc (NULL: it failed before a connection); status when OK. */
static void upstream_report(struct pf_tx *tx, const struct pf_upconn *uc, enum pf_outcome o,
                            int status)
{
    uint64_t now = pf_now_us();
    uint64_t dur = uc != NULL && uc->t_attempt_us != 0 ? now - uc->t_attempt_us : 0;

    pf_balancer_report(tx->up, tx->endpoint_id, o);
    pf_breaker_report(tx->up, pf_endpoint_get(tx->endpoint_id), tx->br_ticket, o, status, dur, now);
    tx->br_ticket = 0;
    pf_stats_upstream_report(tx, (int)o);
}

/* The attempt's trial permit, if it holds one, goes back unreported. */
static void up_release_permit(struct pf_tx *tx)
{
    if (tx->br_ticket != 0) {
        pf_breaker_release(pf_endpoint_get(tx->endpoint_id), tx->br_ticket);
        tx->br_ticket = 0;
    }
}

/* uc's attempt has its connection (or gave up waiting): it no longer counts as pending. */
static void up_unpend(struct pf_upconn *uc)
{
    if (uc->pending) {
        uc->pending = false;
        atomic_fetch_sub_explicit(&pf_endpoint_get(uc->endpoint_id)->br.pending, 1,
                                  memory_order_relaxed);
    }
}

static bool uc_connected(const struct pf_upconn *uc)
{
    return uc->state != PF_UC_CONNECTING;
}

/*
 * The response head of tx went on to the filters: no retry from here on. Told
 * by the upstream side, not by head_sent, which only a client connection
 * sets (a background request has none) and a filter may hold back.
 */
static bool resp_started(const struct pf_tx *tx)
{
    return tx->t_up_head != 0;
}

/* ---- attempts, failures and retries ---- */

static bool method_idempotent(enum http_method m)
{
    switch (m) {
    case HTTP_GET:
    case HTTP_HEAD:
    case HTTP_OPTIONS:
    case HTTP_TRACE:
    case HTTP_PUT:
    case HTTP_DELETE:
        return true;
    default:
        return false;
    }
}

/*
 * The request can be sent again as it was: an idempotent method with no body
 * or a kept one, or any method whose whole body was kept (within
 * retries.max_buffered_body).
 */
static bool tx_replayable(const struct pf_tx *tx)
{
    if (tx->req_keep != NULL)
        return true;
    return !tx->req_has_body && method_idempotent(tx->method_id);
}

bool pf_upstream_should_retry(const struct pf_tx *tx, const struct pf_upconn *uc, enum pf_outcome o)
{
    return uc->reused && !uc->got_bytes && tx_replayable(tx) && !tx->stale_retried &&
           o == PF_OUTCOME_RESET;
}

/*
 * The retry budget's base: requests in flight to tx's upstream, all workers
 * (the endpoints' own counts, read only when a retry is considered), this
 * one included when it is between attempts.
 */
static unsigned up_active(const struct pf_tx *tx)
{
    unsigned n = tx->uc == NULL;

    for (unsigned i = 0; i < tx->up->n_endpoints; i++)
        n += atomic_load_explicit(&pf_endpoint_get(tx->up->endpoint_ids[i])->active,
                                  memory_order_relaxed);
    return n;
}

/*
 * Whether the policy retries tx after outcome o (status: of the head with
 * PF_OUTCOME_OK), taking a place in the budget when it does. Retries the
 * budget refuses are counted.
 */
static bool up_retry_allowed(struct pf_tx *tx, enum pf_outcome o, int status)
{
    const struct pf_retry_conf *rc = &tx->up->retry;

    if (tx->retries >= rc->attempts || resp_started(tx) || tx->up->rstate == NULL ||
        !pf_retry_on_outcome(rc, o, status) || !tx_replayable(tx))
        return false;
    /* circuit_breaker.max_retries caps retries in flight as the budget does: not made, counted */
    if (!pf_retry_budget_take(tx->up->rstate, rc, tx->up->breaker.max_retries, up_active(tx),
                              pf_now_us())) {
        pf_stats_upstream_retry_refused(tx);
        return false;
    }
    tx->retry_held = true;
    tx->retries++;
    return true;
}

/* Unhook uc from tx; keep it for reuse only when told so. */
static void up_detach(struct pf_tx *tx, struct pf_upconn *uc, bool reuse)
{
    struct pf_pool *p = pf_pool_of(tx->w, uc->endpoint_id);

    if (tx->timer_set) {
        event_del(&tx->timer);
        tx->timer_set = false;
    }
    pf_stream_set_read_deadline(uc->s, 0);
    pf_upsplice_end(uc); /* a pipe with bytes left in it is closed */
    up_unpend(uc);
    p->n_active--;
    atomic_fetch_sub_explicit(&pf_endpoint_get(uc->endpoint_id)->active, 1, memory_order_relaxed);
    tx->uc = NULL;
    uc->tx = NULL;
    if (reuse)
        pf_pool_put(uc, tx->up);
    else
        pf_upconn_close(uc);
}

/* The attempt failed before a response head: retry, or answer the error. */
static void up_failed(struct pf_upconn *uc, enum pf_outcome o)
{
    struct pf_tx *tx = uc->tx;
    bool stale = pf_upstream_should_retry(tx, uc, o);
    enum pf_error code = pf_error_of_outcome(o);

    if (pf_log_get_level() >= PF_LOG_DEBUG) {
        char dump[256];

        pf_log(PF_LOG_DEBUG, "upstream attempt %u failed (outcome %d): %s", tx->attempts, (int)o,
               pf_upconn_dump(uc, dump, sizeof(dump)));
    }
    if (stale) {
        /* a pooled connection the upstream closed while idle: no failure of the endpoint now,
         * nor a failed trial (its permit goes back; the retry asks for one again) */
        up_release_permit(tx);
        pf_stats_upstream_report(tx, (int)o);
    } else {
        upstream_report(tx, uc, o, 0);
    }
    up_retry_release(tx);
    up_detach(tx, uc, false);
    if (stale) {
        /* a reused connection the upstream had closed: once, at once, on a fresh one (another
         * endpoint when there is one), outside the policy and its budget */
        tx->stale_retried = true;
        tx->retry_code = code;
        pf_stats_upstream_retried(tx);
        up_retry_go(tx, true);
        return;
    }
    if (up_retry_allowed(tx, o, 0)) {
        tx->retry_code = code;
        up_retry_schedule(tx);
        return;
    }
    pf_tx_fail(tx, pf_error_status(code), code);
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
    else
        up_retry_go(tx, false); /* the backoff is over */
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
 * a head that trickles in do not extend it; up_handle_head lifts it), and
 * the read timeout, the same length, bounds each silence of the body after it.
 * The read event carries both: no timer of its own to add and delete for
 * each request.
 */
static void up_await_head(struct pf_tx *tx, struct pf_upconn *uc)
{
    uint64_t ms = tx->up->request_timeout_ms;

    if (tx->timer_set) {
        event_del(&tx->timer); /* the connect timeout, or the upload's */
        tx->timer_set = false;
    }
    if (tx->up->retry.per_try_timeout_ms != 0 && tx->up->retry.per_try_timeout_ms < ms)
        ms = tx->up->retry.per_try_timeout_ms; /* this try's share */
    /* the deadline first: setting the read timeout re-arms the read event with it */
    pf_stream_set_read_deadline(uc->s, pf_now_us() + ms * 1000);
    pf_upconn_set_rto(uc, tx->up->request_timeout_ms);
}

/* ---- the response ---- */

/*
 * Could a retry start now: no overflow, and some endpoint that health checks
 * let serve whose breaker would take it. Asked before a response with a
 * retried status is dropped: when no retry can start, the client gets it.
 */
static bool up_retry_could_start(const struct pf_tx *tx)
{
    const struct pf_upstream_conf *up = tx->up;
    uint64_t now = pf_now_us();

    if (pf_breaker_overflow(up, false))
        return false;
    for (unsigned i = 0; i < up->n_endpoints; i++) {
        const struct pf_endpoint *ep = pf_endpoint_get(up->endpoint_ids[i]);

        if (pf_upstream_health_lets_serve(up, ep) && pf_breaker_would_admit(ep, &up->breaker, now))
            return true;
    }
    return false;
}

/*
 * A status the policy retries, nothing of it sent yet: reported first (the
 * retry's pick sees what this try did to the breaker), then dropped with its
 * connection when a retry can start and is allowed. *reported: it was.
 */
static bool up_status_retry(struct pf_tx *tx, struct pf_upconn *uc, bool *reported)
{
    int status = uc->parser.status_code;

    *reported = false;
    if (!pf_retry_on_outcome(&tx->up->retry, PF_OUTCOME_OK, status))
        return false;
    upstream_report(tx, uc, PF_OUTCOME_OK, status);
    *reported = true;
    if (!up_retry_could_start(tx) || !up_retry_allowed(tx, PF_OUTCOME_OK, status))
        return false;
    tx->retry_code = PF_ERR_NONE; /* nothing to answer instead: the response is gone */
    up_detach(tx, uc, false);
    up_retry_schedule(tx);
    return true;
}

static void up_handle_head(struct pf_upconn *uc)
{
    struct pf_tx *tx = uc->tx;
    bool reported;

    uc->head_ready = false;
    up_retry_release(tx);
    if (up_status_retry(tx, uc, &reported))
        return;
    pf_head_export(&uc->head, tx->arena, &tx->resp, NULL);
    pf_head_release(&uc->head);
    if (!pf_h1c_resp_te_ok(&tx->resp)) {
        tx->resp.n = 0;
        if (!reported) {
            up_failed(uc, PF_OUTCOME_BAD_RESPONSE);
        } else {
            up_detach(tx, uc, false); /* reported once already; never retried */
            pf_tx_fail(tx, 502, PF_ERR_BAD_RESPONSE);
        }
        return;
    }
    /* RFC 9110 §6.6.1: a recipient with a clock adds the Date an upstream left out (the
     * worker's string of this second, copied: it changes with the second) */
    if (pf_hdrs_get_id(&tx->resp, PF_H_DATE) == NULL) {
        const char *date = pf_http_date();
        size_t n = strlen(date);

        pf_hdrs_add_ref(tx->arena, &tx->resp, "Date", 4, pf_arena_strndup(tx->arena, date, n), n);
    }
    tx->t_up_head = pf_now_us();
    if (tx->timer_set) {
        event_del(&tx->timer);
        tx->timer_set = false;
    }
    pf_stream_set_read_deadline(uc->s, 0);
    if (!reported)
        upstream_report(tx, uc, PF_OUTCOME_OK, uc->parser.status_code);
    tx->status = uc->parser.status_code;
    tx->up_status = tx->status;
    uc->state = PF_UC_READING_BODY;
    if (pf_tx_respond(tx) && uc->tx == tx)
        uc->splice_want = pf_upsplice_eligible(tx, uc);
}

static void up_handle_done(struct pf_upconn *uc)
{
    struct pf_tx *tx = uc->tx;
    bool reuse = http_should_keep_alive(&uc->parser) && uc->req_sent && tx->req_done &&
                 evbuffer_get_length(uc->s->in) == 0;

    up_detach(tx, uc, reuse); /* the state becomes IDLE or CLOSED */
    pf_tx_resp_end(tx);
}

/* Pass parsed body bytes to the client; false when the tx went away. */
static bool up_flush_body(struct pf_upconn *uc)
{
    if (evbuffer_get_length(uc->body) > 0 && uc->tx != NULL)
        pf_tx_resp_body(uc->tx, uc->body);
    return uc->state != PF_UC_CLOSED && uc->tx != NULL;
}

static bool up_backpressure(struct pf_upconn *uc)
{
    struct pf_conn *c = uc->tx->conn;

    if (c != NULL && !uc->tx->unpaced && pf_conn_out_len(c) > PF_OUT_HIGH_WATER) {
        uc->read_blocked = true;
        pf_stream_read(uc->s, false);
        return true;
    }
    return false;
}

/* The body is cut or malformed after the head went out: the client sees a cut. */
static void up_cut(struct pf_upconn *uc, enum pf_error code)
{
    if (resp_started(uc->tx))
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

    if (pf_h1c_deframe(uc, in) < 0) {
        up_cut(uc, PF_ERR_BAD_RESPONSE);
        return 1;
    }
    if (!up_flush_body(uc))
        return 1;
    if (uc->state == PF_UC_DONE) {
        uc->body_mode = PF_BODY_NONE;
        up_handle_done(uc);
        return 1;
    }
    if (uc->splice_want && !uc->head_lf && evbuffer_get_length(in) == 0 && pf_upsplice_begin(uc))
        return 0; /* the rest goes with splice (up_process) */
    return up_backpressure(uc) || evbuffer_get_length(in) == 0 ? 1 : 0;
}

/* The spliced body's end: the response is complete. */
static void up_splice_done(struct pf_upconn *uc)
{
    struct pf_tx *tx = uc->tx;
    bool closed = uc->body_mode == PF_BODY_CLOSE;

    pf_upsplice_end(uc);
    uc->body_mode = PF_BODY_NONE;
    if (closed) {
        up_detach(tx, uc, false);
        pf_tx_resp_end(tx);
        return;
    }
    uc->state = PF_UC_DONE; /* exactly Content-Length bytes moved: reusable */
    up_handle_done(uc);
}

/* Move the body with splice until one side must be waited for. */
static void up_splice_run(struct pf_upconn *uc)
{
    struct pf_tx *tx = uc->tx;
    struct pf_conn *c = tx->conn;

    if (c == NULL) {
        pf_tx_fail(tx, 502, PF_ERR_RESET); /* not reached: an abort detaches first */
        return;
    }
    switch (pf_upsplice_pump(uc, c->s, &tx->bytes_out)) {
    case PF_UPSPLICE_WAIT_UP:
        break;
    case PF_UPSPLICE_WAIT_CLIENT:
        /* as up_backpressure: no reading until the client takes output */
        uc->read_blocked = true;
        pf_stream_read(uc->s, false);
        pf_stream_wait_write(c->s);
        break;
    case PF_UPSPLICE_DONE:
        up_splice_done(uc);
        break;
    case PF_UPSPLICE_UP_CUT:
        /* never a complete framing around a truncated body: the client is cut */
        tx->error = PF_ERR_RESET;
        pf_tx_fail(tx, 502, PF_ERR_RESET);
        break;
    case PF_UPSPLICE_CLIENT_ERR:
        pf_conn_close(c); /* as a failed write: the client is gone (499) */
        break;
    }
}

static void up_process(struct pf_upconn *uc)
{
    struct evbuffer *in = uc->s->in;

    uc->busy++;
    while (uc->state != PF_UC_CLOSED && uc->tx != NULL && !uc->read_blocked) {
        struct evbuffer_iovec v;
        size_t n;
        enum http_errno e;

        if (uc->splicing) {
            up_splice_run(uc);
            break;
        }
        if (uc->body_mode != PF_BODY_NONE) {
            if (up_body(uc) != 0)
                break;
            continue;
        }
        if (evbuffer_get_length(in) == 0)
            break;
        uc->got_bytes = true;
        evbuffer_peek(in, -1, NULL, &v, 1);
        n = pf_h1c_parse(uc, v.iov_base, v.iov_len);
        evbuffer_drain(in, n);
        e = HTTP_PARSER_ERRNO(&uc->parser);
        if (e != HPE_OK && e != HPE_PAUSED) {
            up_cut(uc, PF_ERR_BAD_RESPONSE);
            break;
        }
        if (uc->head_ready)
            up_handle_head(uc);
        if (uc->state == PF_UC_CLOSED || uc->tx == NULL)
            break;
        if (uc->state == PF_UC_DONE) {
            up_handle_done(uc);
            break;
        }
        if (e == HPE_PAUSED && uc->body_mode == PF_BODY_NONE)
            http_parser_pause(&uc->parser, 0);
    }
    pf_upconn_leave(uc);
}

void pf_upstream_resume_read(struct pf_upconn *uc)
{
    if (!uc->read_blocked || uc->state == PF_UC_CLOSED)
        return;
    uc->busy++;
    uc->read_blocked = false;
    pf_stream_read(uc->s, true);
    up_process(uc);
    if (uc->eof_pending && uc->state != PF_UC_CLOSED && uc->tx != NULL && !uc->read_blocked)
        up_eof(uc);
    pf_upconn_leave(uc);
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
        if (uc->state == PF_UC_CLOSED || uc->tx == NULL)
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
        tx->error = PF_ERR_RESET;
        pf_tx_fail(tx, 502, PF_ERR_RESET);
    } else if (!resp_started(tx) && !uc->head_ready) {
        up_failed(uc, uc_connected(uc) ? PF_OUTCOME_RESET : PF_OUTCOME_CONNECT_FAILED);
    } else {
        /* cut in the middle of the response: the client must see a cut too */
        tx->error = PF_ERR_RESET;
        pf_tx_fail(tx, 502, PF_ERR_RESET);
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
        up_unpend(uc);
        uc->state = uc->req_sent ? PF_UC_WAITING_HEAD : PF_UC_SENDING;
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
        if (resp_started(tx))
            pf_tx_fail(tx, 504, PF_ERR_TIMEOUT);
        else
            up_failed(uc, PF_OUTCOME_TIMEOUT);
    } else if (what & PF_STREAM_EOF) {
        up_eof(uc);
    } else if (what & PF_STREAM_ERROR) {
        if (uc_connected(uc)) {
            if (resp_started(tx))
                pf_tx_fail(tx, 502, PF_ERR_RESET);
            else
                up_failed(uc, PF_OUTCOME_RESET);
        } else {
            up_failed(uc, PF_OUTCOME_CONNECT_FAILED);
        }
    }
    pf_upconn_leave(uc);
}

static void up_writecb(struct pf_stream *s, void *arg)
{
    struct pf_upconn *uc = arg;

    (void)s;
    if (uc->tx != NULL && uc->tx->conn != NULL && !uc->tx->req_done) {
        if (uc->tx->timer_set && uc_connected(uc)) {
            event_del(&uc->tx->timer);
            uc->tx->timer_set = false;
        }
        pf_conn_resume_body(uc->tx->conn);
    }
}

/* ---- the request ---- */

/*
 * The attempt cannot start (code: overflow, circuit_open, ...): 503 code, or,
 * for a retry of a try that failed without a response, that try's error.
 */
static void up_refused(struct pf_tx *tx, enum pf_error code)
{
    if (tx->retry_code != PF_ERR_NONE)
        code = tx->retry_code;
    pf_tx_fail(tx, code == PF_ERR_OVERFLOW ? 503 : pf_error_status(code), code);
}

/*
 * A connect that failed at once (a unix socket refused or missing, no file
 * descriptor left, no route): reported, then retried as one that fails later
 * would be, or answered.
 */
static void up_connect_failed(struct pf_tx *tx)
{
    upstream_report(tx, NULL, PF_OUTCOME_CONNECT_FAILED, 0);
    up_retry_release(tx);
    if (up_retry_allowed(tx, PF_OUTCOME_CONNECT_FAILED, 0)) {
        tx->retry_code = PF_ERR_CONNECT_FAILED;
        up_retry_schedule(tx);
        return;
    }
    pf_tx_fail(tx, 502, PF_ERR_CONNECT_FAILED);
}

/*
 * Start one attempt; false when none is under way on return: it failed at
 * once, and tx was answered (and may be gone) or its retry was scheduled
 * (or already made).
 */
static bool up_start_attempt(struct pf_tx *tx, bool fresh)
{
    unsigned id;
    struct pf_upconn *uc;
    enum pf_error code;
    uint64_t ticket;

    if (pf_breaker_overflow(tx->up, false)) {
        up_refused(tx, PF_ERR_OVERFLOW); /* max_requests: at once, never queued */
        return false;
    }
    code = pf_upstream_pick(tx, &id, &ticket);
    if (code != PF_ERR_NONE && tx->retry_code != PF_ERR_NONE) {
        up_refused(tx, code); /* a retry: the failed try's answer */
        return false;
    }
    if (code == PF_ERR_CIRCUIT_OPEN) {
        pf_tx_fail_retry_after(tx, 503, code, pf_breaker_retry_after(tx->up, pf_now_us()));
        return false;
    }
    if (code != PF_ERR_NONE) {
        pf_tx_fail(tx, 503, code); /* health checks found no endpoint healthy, panic is off */
        return false;
    }
    uc = fresh ? NULL : pf_pool_get(tx->w, id);
    if (uc == NULL && pf_breaker_overflow(tx->up, true)) {
        pf_breaker_release(pf_endpoint_get(id), ticket); /* the trial never went */
        up_refused(tx, PF_ERR_OVERFLOW);                 /* max_connections or max_pending */
        return false;
    }
    tx->br_ticket = ticket;
    tx->attempts++;
    tx->tried |= pf_balancer_tried_bit(tx->up, id);
    tx->endpoint_id = id;
    tx->endpoint = pf_endpoint_get(id)->addr.text;
    if (tx->t_up_start == 0)
        tx->t_up_start = pf_now_us();
    if (uc == NULL) {
        uc = pf_upconn_connect(tx->w, id, tx->up);
        if (uc == NULL) {
            up_connect_failed(tx); /* refused at once: a retry, or the answer */
            return false;
        }
        /* connect_timeout on the tx timer, then request_timeout on reads */
        tx_arm(tx, tx->up->connect_timeout_ms);
        uc->pending = true;
        atomic_fetch_add_explicit(&pf_endpoint_get(id)->br.pending, 1, memory_order_relaxed);
    } else {
        uc->state = PF_UC_SENDING;
        if (!tx->req_done)
            pf_stream_set_read_timeout(uc->s,
                                       NULL); /* a silent upstream is fine during an upload */
    }
    pf_pool_of(tx->w, id)->n_active++;
    atomic_fetch_add_explicit(&pf_endpoint_get(id)->active, 1, memory_order_relaxed);
    uc->tx = tx;
    uc->t_attempt_us = pf_now_us();
    uc->got_bytes = false;
    uc->req_sent = false;
    uc->body_mode = PF_BODY_NONE;
    uc->splice_want = false;
    uc->head_lf = false;
    uc->head_ready = false;
    uc->in_1xx = false;
    tx->uc = uc;
    pf_h1c_reset(uc);
    pf_stream_setcb(uc->s, up_readcb, up_writecb, up_eventcb, uc);
    pf_stream_read(uc->s, true);
    uc->req_chunked = tx->req_chunked;
    pf_h1c_write_head(tx, uc->s->out, pf_endpoint_get(uc->endpoint_id)->addr.text);
    pf_stream_mark(uc->s);
    if (tx->req_done) {
        uc->req_sent = true;
        /* request_timeout: from the end of the request to the head, then between reads */
        if (uc_connected(uc)) {
            uc->state = PF_UC_WAITING_HEAD;
            up_await_head(tx, uc);
        }
    }
    return true;
}

static void up_evbuffer_free(void *b)
{
    evbuffer_free(b);
}

/* Append a copy of the first len bytes of src to dst; false when out of memory. */
static bool copy_bytes(struct evbuffer *dst, struct evbuffer *src, size_t len)
{
    struct evbuffer_ptr pos;
    struct evbuffer_iovec v;

    evbuffer_ptr_set(src, &pos, 0, EVBUFFER_PTR_SET);
    while (len > 0 && evbuffer_peek(src, -1, &pos, &v, 1) > 0) {
        size_t n = v.iov_len < len ? v.iov_len : len;

        if (evbuffer_add(dst, v.iov_base, n) != 0)
            return false;
        len -= n;
        if (len > 0 && evbuffer_ptr_set(src, &pos, n, EVBUFFER_PTR_ADD) != 0)
            return false;
    }
    return len == 0;
}

/* A copy of tx's kept body (NULL: out of memory). */
static struct evbuffer *up_kept_copy(struct pf_tx *tx)
{
    struct evbuffer *b = evbuffer_new();

    if (b != NULL && !copy_bytes(b, tx->req_keep, evbuffer_get_length(tx->req_keep))) {
        evbuffer_free(b);
        return NULL;
    }
    return b;
}

/*
 * A body that streams upstream (past request_buffering) is copied as it goes
 * while it stays within retries.max_buffered_body: once it has all passed,
 * the copy is the kept body and the request can be retried.
 */
static void up_tee_start(struct pf_tx *tx)
{
    const struct pf_retry_conf *rc = &tx->up->retry;
    struct pf_conn *c = tx->conn;

    if (tx->req_done || tx->req_tee != NULL || c == NULL || rc->attempts == 0 ||
        rc->max_buffered_body == 0 || tx->body_in > rc->max_buffered_body)
        return;
    if (c->body_mode == PF_BODY_LENGTH && tx->body_in + c->body_left > rc->max_buffered_body)
        return;
    if ((tx->req_tee = evbuffer_new()) != NULL)
        pf_arena_defer(tx->arena, up_evbuffer_free, tx->req_tee);
}

static void up_tee(struct pf_tx *tx, struct evbuffer *src, size_t len)
{
    if (evbuffer_get_length(tx->req_tee) + len > tx->up->retry.max_buffered_body ||
        !copy_bytes(tx->req_tee, src, len))
        tx->req_tee = NULL; /* too big (or no memory): it streams alone, not retried */
}

/*
 * Start an attempt and send the body that is at hand (b, len bytes), and
 * the end of the request when it is all in.
 */
static void up_send_buffered(struct pf_tx *tx, struct evbuffer *b, bool fresh)
{
    size_t len = b != NULL ? evbuffer_get_length(b) : 0;

    if (!up_start_attempt(tx, fresh))
        return;
    if (len > 0)
        pf_upstream_send_body(tx, b, len);
    if (tx->req_done && tx->uc != NULL)
        pf_upstream_send_end(tx);
}

/* Make the retry now: the same request, to an endpoint not tried yet when one is left. */
static void up_retry_go(struct pf_tx *tx, bool fresh)
{
    struct evbuffer *b = NULL;

    if (tx->req_keep != NULL && (b = up_kept_copy(tx)) == NULL) {
        up_retry_release(tx);
        pf_tx_fail(tx, 502, PF_ERR_CONNECT_FAILED); /* out of memory */
        return;
    }
    up_send_buffered(tx, b, fresh);
    if (b != NULL)
        evbuffer_free(b);
}

/* A retry the policy allowed: counted, then made after its backoff (on the tx timer). */
static void up_retry_schedule(struct pf_tx *tx)
{
    uint64_t us = pf_retry_backoff_us(&tx->up->retry, tx->retries, pf_worker_rand(tx->w));
    struct timeval tv = {.tv_sec = (time_t)(us / 1000000), .tv_usec = (suseconds_t)(us % 1000000)};

    pf_stats_upstream_retried(tx);
    if (us == 0) {
        up_retry_go(tx, false);
        return;
    }
    if (!event_initialized(&tx->timer))
        event_assign(&tx->timer, tx->w->base, -1, 0, tx_timeoutcb, tx);
    event_add(&tx->timer, &tv); /* a plain timeout: jittered lengths are not common timeouts */
    tx->timer_set = true;
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
    const struct pf_retry_conf *rc = &tx->up->retry;

    tx->req_buffering = false;
    tx->req_buf = NULL; /* still freed with the arena */
    if (tx->req_done && rc->attempts > 0 && evbuffer_get_length(b) <= rc->max_buffered_body) {
        tx->req_keep = b; /* whole and small: kept for a retry, a copy goes */
        up_retry_go(tx, false);
        return;
    }
    up_tee_start(tx); /* the rest streams: the copy starts with what was buffered */
    up_send_buffered(tx, b, false);
}

void pf_upstream_start(struct pf_tx *tx)
{
    if (up_buffer_start(tx))
        return;
    up_tee_start(tx);
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
    if (tx->req_tee != NULL)
        up_tee(tx, src, len);
    o = uc->s->out;
    pf_h1c_write_body(o, src, len, uc->req_chunked);
    pf_stream_mark(uc->s);
    if (evbuffer_get_length(o) > PF_OUT_HIGH_WATER && tx->conn != NULL) {
        /* the upstream must take the body: request_timeout of no progress ends it */
        pf_conn_block_body(tx->conn);
        if (uc_connected(uc))
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
    if (tx->req_tee != NULL) {
        tx->req_keep = tx->req_tee; /* all of it passed: it can be sent again */
        tx->req_tee = NULL;
    }

    if (uc->req_chunked) {
        evbuffer_add(uc->s->out, "0\r\n\r\n", 5);
        pf_stream_mark(uc->s);
    }
    uc->req_sent = true;
    if (tx->t_up_head == 0)
        uc->t_attempt_us = pf_now_us(); /* a slow upload is not a slow upstream */
    if (uc->state == PF_UC_SENDING)
        uc->state = PF_UC_WAITING_HEAD;
    if (uc_connected(uc) && tx->t_up_head == 0)
        up_await_head(tx, uc);
    else if (uc_connected(uc))
        pf_upconn_set_rto(uc,
                          tx->up->request_timeout_ms); /* an early head: the body's read timeout */
}

void pf_upstream_abort(struct pf_tx *tx)
{
    if (tx->uc != NULL)
        up_detach(tx, tx->uc, false);
    up_release_permit(tx); /* no outcome will come */
}

void pf_upstream_end(struct pf_tx *tx)
{
    if (tx->uc != NULL)
        up_detach(tx, tx->uc, false);
    up_release_permit(tx); /* ended before its outcome (the client went away) */
    up_retry_release(tx);
}
