/*
 * Response bodies moved with splice(2). See proxy/upstream/upsplice.h.
 *
 * The bytes that came with the head are passed on by the copying path
 * first; the pump then moves the rest upstream socket -> pipe -> client
 * socket. It reads no further than Content-Length (so a kept-alive upstream
 * connection is left at the next response) and writes to the client only
 * once its buffered output (the head) has left, so bytes keep their order.
 * Backpressure is the pipe: while it holds bytes the client cannot take,
 * the upstream is not read.
 *
 * Request bodies go the other way, client socket -> pipe -> upstream socket,
 * after the bytes read with the head and the first read after it. The pump
 * reads no further than Content-Length (the next pipelined request stays in
 * the socket), writes upstream once its buffered output (the head, the first
 * bytes) has left, and while the pipe holds bytes the upstream cannot take,
 * the client is not read (the caller blocks the body as the copying path
 * does above its high watermark).
 */
#include "proxy/upstream/upsplice.h"

#include <errno.h>
#include <fcntl.h>

#include <event2/buffer.h>

#include "proxy/core.h"
#include "proxy/http1.h"
#include "proxy/pipe.h"
#include "proxy/stream.h"

/* Rounds of one pump call: the loop's other connections get their turn after ~4 MiB. */
#define PUMP_ROUNDS 16

bool pf_upsplice_eligible(const struct pf_tx *tx, const struct pf_upconn *uc)
{
    const struct pf_splice_conf *sc = &tx->cfg->splice; /* the snapshot tx started with */

    if (!sc->responses || tx->conn == NULL || tx->keep_fetching)
        return false;
    if (tx->has_body_filters && tx->out_from > 0)
        return false; /* a filter reads the body */
    if (uc->body_mode == PF_BODY_LENGTH)
        return tx->out_mode == PF_OUT_LENGTH && uc->body_left >= sc->min_response_size;
    return uc->body_mode == PF_BODY_CLOSE && tx->out_mode == PF_OUT_CLOSE;
}

bool pf_upsplice_begin(struct pf_upconn *uc)
{
    struct pf_worker *w = uc->w;

    uc->splice_want = false;
    if (w->pipes == NULL)
        w->pipes = pf_pipes_new(PF_PIPES_MAX, PF_PIPE_SIZE);
    uc->pipe = pf_pipes_get(w->pipes);
    if (uc->pipe == NULL) {
        pf_splice_count(PF_SPLICE_NO_PIPE, 1);
        return false;
    }
    uc->splicing = true;
    uc->splice_eof = false;
    uc->s->raw = true;
    pf_splice_count(PF_SPLICE_RESPONSES, 1);
    return true;
}

void pf_upsplice_end(struct pf_upconn *uc)
{
    if (uc->pipe != NULL) {
        pf_pipes_put(uc->w->pipes, uc->pipe);
        uc->pipe = NULL;
    }
    uc->splicing = false;
    uc->splice_want = false;
    uc->s->raw = false;
}

static bool in_done(const struct pf_upconn *uc)
{
    return uc->splice_eof || (uc->body_mode == PF_BODY_LENGTH && uc->body_left == 0);
}

/* Upstream -> pipe. 1: moved, 0: nothing now, -1: the body is cut. */
static int pump_in(struct pf_upconn *uc, struct pf_pipe *p)
{
    size_t want = p->cap - p->len;
    ssize_t r;

    if (uc->body_mode == PF_BODY_LENGTH && uc->body_left < want)
        want = (size_t)uc->body_left;
    r = splice(uc->s->fd, NULL, p->wr, NULL, want, SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
    if (r > 0) {
        p->len += (size_t)r;
        if (uc->body_mode == PF_BODY_LENGTH)
            uc->body_left -= (uint64_t)r;
        return 1;
    }
    if (r == 0) {
        uc->splice_eof = true; /* the end of a close-delimited body, a cut of any other */
        return uc->body_mode == PF_BODY_CLOSE ? 0 : -1;
    }
    if (errno == EAGAIN || errno == EINTR)
        return 0; /* no input, or the pipe's slots are full of small pieces */
    uc->s->err = errno;
    return -1;
}

/* Pipe -> client. 1: moved, 0: the client is full, -1: it failed. */
static int pump_out(struct pf_pipe *p, struct pf_stream *client, uint64_t *out)
{
    ssize_t r;

    if (evbuffer_get_length(client->out) > 0)
        return 0; /* the head (and the first bytes) go first */
    r = splice(p->rd, NULL, client->fd, NULL, p->len, SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
    if (r > 0) {
        p->len -= (size_t)r;
        *out += (uint64_t)r;
        pf_splice_count(PF_SPLICE_BYTES, (uint64_t)r);
        return 1;
    }
    if (r == -1 && (errno == EAGAIN || errno == EINTR))
        return 0;
    client->err = r == -1 ? errno : EPIPE;
    return -1;
}

enum pf_upsplice_res pf_upsplice_pump(struct pf_upconn *uc, struct pf_stream *client, uint64_t *out)
{
    struct pf_pipe *p = uc->pipe;

    for (unsigned round = 0; round < PUMP_ROUNDS; round++) {
        int in = 0, wrote = 0;

        if (!in_done(uc) && p->len < p->cap && (in = pump_in(uc, p)) < 0)
            return PF_UPSPLICE_UP_CUT;
        if (p->len > 0 && (wrote = pump_out(p, client, out)) < 0)
            return PF_UPSPLICE_CLIENT_ERR;
        if (in_done(uc) && p->len == 0)
            return PF_UPSPLICE_DONE;
        if (in == 0 && wrote == 0)
            return p->len > 0 ? PF_UPSPLICE_WAIT_CLIENT : PF_UPSPLICE_WAIT_UP;
    }
    /* enough for one turn: come back when either side is ready */
    return p->len > 0 ? PF_UPSPLICE_WAIT_CLIENT : PF_UPSPLICE_WAIT_UP;
}

/* ---- request bodies ---- */

bool pf_upsplice_req_begin(struct pf_tx *tx)
{
    struct pf_conn *c = tx->conn;
    struct pf_upconn *uc = tx->uc;
    struct pf_worker *w = tx->w;

    if (!tx->cfg->splice.requests || c == NULL || uc == NULL || uc->req_pipe != NULL ||
        tx->req_no_splice || tx->req_buffering || tx->req_tee != NULL)
        return false; /* a body kept for a retry is copied: that copy is the reason it can be */
    if (c->body_mode != PF_BODY_LENGTH || uc->req_chunked || c->body_left == 0 ||
        tx->req_length < tx->cfg->splice.min_request_size || evbuffer_get_length(c->s->in) > 0 ||
        c->state == PF_CONN_DEAD)
        return false;
    if (w->pipes == NULL)
        w->pipes = pf_pipes_new(PF_PIPES_MAX, PF_PIPE_SIZE);
    uc->req_pipe = pf_pipes_get(w->pipes);
    if (uc->req_pipe == NULL) {
        tx->req_no_splice = true; /* copied to the end, counted once */
        pf_splice_count(PF_SPLICE_NO_PIPE, 1);
        return false;
    }
    c->s->raw = true;
    pf_splice_count(PF_SPLICE_REQUESTS, 1);
    return true;
}

void pf_upsplice_req_end(struct pf_tx *tx)
{
    struct pf_upconn *uc = tx->uc;

    if (uc == NULL || uc->req_pipe == NULL)
        return;
    pf_pipes_put(tx->w->pipes, uc->req_pipe);
    uc->req_pipe = NULL;
    if (tx->conn != NULL)
        tx->conn->s->raw = false;
}

/* Client -> pipe, no further than the body. 1: moved, 0: nothing now, -1: the client is gone. */
static int req_in(struct pf_tx *tx, struct pf_pipe *p)
{
    struct pf_conn *c = tx->conn;
    size_t want = p->cap - p->len;
    ssize_t r;

    if (c->body_left - p->len < want)
        want = (size_t)(c->body_left - p->len);
    r = splice(c->s->fd, NULL, p->wr, NULL, want, SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
    if (r > 0) {
        p->len += (size_t)r;
        tx->body_in += (uint64_t)r;
        return 1;
    }
    if (r == -1 && (errno == EAGAIN || errno == EINTR))
        return 0;
    c->s->err = r == -1 ? errno : 0; /* an end of input inside the body, or an error */
    return -1;
}

/* Pipe -> upstream. 1: moved, 0: the upstream is full (or not ready), -1: it failed. */
static int req_out(struct pf_tx *tx, struct pf_pipe *p)
{
    struct pf_stream *up = tx->uc->s;
    ssize_t r;

    if (up->connecting || evbuffer_get_length(up->out) > 0)
        return 0; /* connected first, and the head (and the first bytes) go first */
    r = splice(p->rd, NULL, up->fd, NULL, p->len, SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
    if (r > 0) {
        p->len -= (size_t)r;
        tx->conn->body_left -= (uint64_t)r;
        pf_splice_count(PF_SPLICE_REQ_BYTES, (uint64_t)r);
        return 1;
    }
    if (r == -1 && (errno == EAGAIN || errno == EINTR))
        return 0;
    up->err = r == -1 ? errno : EPIPE;
    return -1;
}

bool pf_upsplice_req_pump(struct pf_tx *tx)
{
    struct pf_conn *c = tx->conn;
    struct pf_upconn *uc = tx->uc;
    struct pf_pipe *p = uc->req_pipe;

    for (unsigned round = 0; round < PUMP_ROUNDS; round++) {
        int in = 0, wrote = 0;

        if (c->body_left > p->len && p->len < p->cap && (in = req_in(tx, p)) < 0) {
            pf_conn_close(c); /* as an end of input inside the body on the copying path */
            return false;
        }
        if (p->len > 0 && (wrote = req_out(tx, p)) < 0) {
            /* as a failed write of the copying path (pf_stream_flush) */
            uc->s->loop->cbs[uc->s->cbs].eventcb(uc->s, PF_STREAM_ERROR, uc->s->arg);
            return false;
        }
        if (c->body_left == 0) {
            pf_upsplice_req_end(tx); /* all of it went: the connection ends the body */
            return false;
        }
        if (in == 0 && wrote == 0)
            return p->len > 0;
    }
    /* enough for one turn: bytes in the pipe wait for the upstream, else for the client */
    return p->len > 0;
}
