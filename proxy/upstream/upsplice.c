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
 */
#include "proxy/upstream/upsplice.h"

#include <errno.h>
#include <fcntl.h>

#include <event2/buffer.h>

#include "proxy/core.h"
#include "proxy/pipe.h"
#include "proxy/stream.h"

/* Rounds of one pump call: the loop's other connections get their turn after ~4 MiB. */
#define PUMP_ROUNDS 16

bool pf_upsplice_eligible(const struct pf_tx *tx, const struct pf_upconn *uc)
{
    if (!pf_splice_enabled() || tx->conn == NULL || tx->keep_fetching)
        return false;
    if (tx->has_body_filters && tx->out_from > 0)
        return false; /* a filter reads the body */
    if (uc->body_mode == PF_BODY_LENGTH)
        return tx->out_mode == PF_OUT_LENGTH && uc->body_left >= pf_splice_min();
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
