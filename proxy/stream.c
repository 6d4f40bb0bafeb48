/*
 * Buffered sockets with deferred, coalesced writes. See proxy/stream.h.
 */
#include "proxy/stream.h"

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include <event2/buffer.h>

#include "proxy/arena.h"
#include "proxy/bufpool.h"
#include "proxy/clock.h"
#include "proxy/log.h"

#define READ_SMALL (16 * 1024)
#define READ_LARGE (64 * 1024)
#define USEC_MASK  0xfffff      /* libevent's MICROSECONDS_MASK: below a common timeout's bits */
#define READ_MORE  (128 * 1024) /* read on in one callback while reads fill up, to this */
#define WRITE_IOV  16           /* pieces of output per writev */
#define WRITE_COPY 4096         /* pieces that add up to no more are copied and sent at once */

/*
 * Freed streams wait in l->grave until the flush event runs, so that code
 * still on the stack after a callback freed its stream can test s->closed.
 */
static void reap(struct pf_stream_loop *l)
{
    for (unsigned i = 0; i < l->n_grave; i++) {
        pf_bufpool_evbuffer_put(l->grave[i]->in); /* NULL when parked */
        pf_bufpool_evbuffer_put(l->grave[i]->out);
        if (l->grave[i]->wev != NULL)
            event_free(l->grave[i]->wev);
        free(l->grave[i]->tmo);
        free(l->grave[i]);
    }
    l->n_grave = 0;
}

static void schedule(struct pf_stream_loop *l)
{
    if (!l->scheduled) {
        l->scheduled = true;
        event_active(&l->flush_ev, EV_TIMEOUT, 0);
    }
}

static void flush_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    pf_stream_flush_all(arg);
}

/*
 * The corked set: the streams whose last write had MSG_MORE, in an array of
 * the loop (a stream keeps its place + 1 in cork_at: two bytes, not a list
 * link, since client connections are many). Out of it in O(1): the last one
 * takes the place.
 */
static void cork_remove(struct pf_stream *s)
{
    struct pf_stream_loop *l = s->loop;
    unsigned i = s->cork_at - 1u;

    l->corked[i] = l->corked[--l->n_corked];
    l->corked[i]->cork_at = (uint16_t)(i + 1);
    s->cork_at = 0;
}

/* Push what MSG_MORE left in the kernel: setting TCP_NODELAY sends pending frames. */
static void push_now(int fd)
{
    int one = 1;

    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

static void push(struct pf_stream *s)
{
    cork_remove(s);
    push_now(s->fd);
}

static void push_cb(evutil_socket_t fd, short what, void *arg)
{
    struct pf_stream_loop *l = arg;

    (void)fd;
    (void)what;
    l->push_armed = false;
    while (l->n_corked > 0)
        push(l->corked[l->n_corked - 1]);
}

static void cork(struct pf_stream *s)
{
    struct pf_stream_loop *l = s->loop;

    if (s->cork_at != 0)
        return;
    if (l->n_corked == UINT16_MAX) {
        push_now(s->fd); /* the set is full: no holding back for this one */
        return;
    }
    if (l->n_corked == l->cap_corked) {
        l->cap_corked = l->cap_corked ? l->cap_corked * 2 : 64;
        if (l->cap_corked > UINT16_MAX)
            l->cap_corked = UINT16_MAX;
        l->corked = pf_xrealloc(l->corked, l->cap_corked * sizeof(*l->corked));
    }
    l->corked[l->n_corked++] = s;
    s->cork_at = (uint16_t)l->n_corked;
    if (!l->push_armed) {
        struct timeval tv = {0, PF_STREAM_PUSH_MS * 1000};

        l->push_armed = true;
        evtimer_add(&l->push_ev, &tv);
    }
}

void pf_stream_loop_init(struct pf_stream_loop *l, struct event_base *base)
{
    l->base = base;
    STAILQ_INIT(&l->dirty);
    l->corked = NULL;
    l->n_corked = l->cap_corked = 0;
    evtimer_assign(&l->push_ev, base, push_cb, l);
    /*
     * Same priority as every other event: activated during a batch of
     * callbacks, it joins the tail of the active queue and runs after them in
     * the same loop iteration (a lower priority would cost an extra epoll_wait).
     */
    event_assign(&l->flush_ev, base, -1, 0, flush_cb, l);
    pf_timers_init(&l->timers, base);
    l->cbs[0] = (struct pf_stream_cbs){NULL, NULL, NULL}; /* a new stream's: none */
    l->n_cbs = 1;
}

const struct timeval *pf_stream_timeout(struct pf_stream_loop *l, uint64_t ms, struct timeval *tmp)
{
    const struct timeval *tv;

    tmp->tv_sec = (time_t)(ms / 1000);
    tmp->tv_usec = (suseconds_t)(ms % 1000) * 1000;
    for (unsigned i = 0; i < l->n_tmo; i++) {
        if (l->tmo[i].ms == ms)
            return l->tmo[i].tv;
    }
    if (l->n_tmo == sizeof(l->tmo) / sizeof(l->tmo[0]))
        return tmp;
    tv = event_base_init_common_timeout(l->base, tmp);
    if (tv == NULL)
        return tmp;
    l->tmo[l->n_tmo].ms = ms;
    l->tmo[l->n_tmo].tv = tv;
    l->n_tmo++;
    return tv;
}

void pf_stream_loop_fini(struct pf_stream_loop *l)
{
    STAILQ_INIT(&l->dirty); /* it may list streams of the grave */
    reap(l);
    free(l->grave);
    l->grave = NULL;
    l->cap_grave = 0;
    event_del(&l->flush_ev);
    pf_timers_fini(&l->timers);
    event_del(&l->push_ev);
    l->push_armed = false;
    free(l->corked);
    l->corked = NULL;
    l->n_corked = l->cap_corked = 0;
}

/* Write every marked stream; freed ones stay in the grave (callers may hold them). */
static void flush_dirty(struct pf_stream_loop *l)
{
    struct pf_stream *s;

    while ((s = STAILQ_FIRST(&l->dirty)) != NULL) {
        STAILQ_REMOVE_HEAD(&l->dirty, dirty_link);
        if (s->closed)
            continue; /* freed after it was marked: in the grave, reaped later */
        s->dirty = false;
        pf_stream_flush(s);
    }
}

void pf_stream_flush_all(struct pf_stream_loop *l)
{
    l->scheduled = false;
    flush_dirty(l);
    reap(l);
}

/*
 * Writers call this after adding to s->out (an evbuffer callback would do it
 * for them, at a cost of a few hundred instructions per evbuffer_add).
 */
void pf_stream_mark(struct pf_stream *s)
{
    if (s->dirty || s->closed || s->connecting || s->wev_added)
        return;
    s->dirty = true;
    STAILQ_INSERT_TAIL(&s->loop->dirty, s, dirty_link);
    schedule(s->loop);
}

static void stream_event(struct pf_stream *s, int what)
{
    pf_stream_event_cb cb = s->loop->cbs[s->cbs].eventcb;

    if (cb != NULL)
        cb(s, what, s->arg);
}

/*
 * The read timeout's state, made for the streams that set one (upstream
 * connections; client connections time out on their own timer).
 *
 * The timer is lazy, as nginx's and HAProxy's: a read, or a timeout or
 * deadline moved later, only records the new end; the timer stays armed for
 * the old one and, when it fires, waits for what is left. Only an end moved
 * earlier re-arms it: a keep-alive upstream request costs no timer operation.
 */
struct pf_stream_tmo {
    struct event ev;
    uint64_t rto_us;      /* read inactivity timeout; 0: none */
    uint64_t deadline_us; /* pf_stream_set_read_deadline; 0: none */
    uint64_t last_us;     /* the last read (or the start of reading) */
    uint64_t at_us;       /* when ev fires; 0: not armed */
};

/* When the read timeout ends: rto after the last read, or the deadline if earlier; 0: never. */
static uint64_t tmo_due(const struct pf_stream *s)
{
    const struct pf_stream_tmo *t = s->tmo;
    uint64_t due = 0;

    if (t == NULL || !s->reading || s->closed)
        return 0;
    if (t->rto_us != 0)
        due = t->last_us + t->rto_us;
    if (t->deadline_us != 0 && (due == 0 || t->deadline_us < due))
        due = t->deadline_us;
    return due;
}

static void tmo_arm(struct pf_stream *s, uint64_t due, uint64_t now)
{
    uint64_t left = due > now ? due - now : 0;
    struct timeval tv = {(time_t)(left / 1000000), (suseconds_t)(left % 1000000)};

    event_add(&s->tmo->ev, &tv);
    s->tmo->at_us = due;
}

/* The timer must fire no later than the read timeout's end: re-arm only if it would. */
static void tmo_update(struct pf_stream *s, uint64_t now)
{
    uint64_t due = tmo_due(s);

    if (due != 0 && (s->tmo->at_us == 0 || due < s->tmo->at_us))
        tmo_arm(s, due, now);
}

static void tmo_cb(evutil_socket_t fd, short what, void *arg)
{
    struct pf_stream *s = arg;
    uint64_t due = tmo_due(s);
    uint64_t now;

    (void)fd;
    (void)what;
    s->tmo->at_us = 0;
    if (due == 0)
        return;
    now = pf_now_us();
    if (now < due) {
        tmo_arm(s, due, now); /* the end moved later since it was armed */
        return;
    }
    /* as a persistent event's timeout would, the next one counts from here */
    s->tmo->last_us = now;
    stream_event(s, PF_STREAM_TIMEOUT);
    if (!s->closed)
        tmo_update(s, now);
}

static struct pf_stream_tmo *tmo_get(struct pf_stream *s)
{
    if (s->tmo == NULL) {
        s->tmo = pf_xcalloc(1, sizeof(*s->tmo));
        event_assign(&s->tmo->ev, s->loop->base, -1, 0, tmo_cb, s);
    }
    return s->tmo;
}

/* Readability (or the start of reading): the inactivity timeout counts from now. */
static void tmo_activity(struct pf_stream *s)
{
    if (s->tmo != NULL && !s->closed) {
        uint64_t now = pf_now_us();

        s->tmo->last_us = now;
        tmo_update(s, now);
    }
}

/*
 * One read into s->in of up to about want bytes: the count (committed), 0 at
 * the end of input, -1 with errno. *filled: the read took all the room it had.
 */
static ssize_t read_once(struct pf_stream *s, size_t want, bool *filled)
{
    struct evbuffer_iovec v[2];
    struct iovec iov[2];
    size_t room = 0;
    ssize_t got;
    int n = evbuffer_reserve_space(s->in, (ev_ssize_t)want, v, 2);
    ssize_t r;

    for (int i = 0; i < n; i++) {
        iov[i].iov_base = v[i].iov_base;
        iov[i].iov_len = v[i].iov_len;
        room += v[i].iov_len;
    }
    /* recv for one piece: no iovec to import (cheaper in the kernel than readv) */
    r = n == 1 ? recv(s->fd, iov[0].iov_base, iov[0].iov_len, 0) : readv(s->fd, iov, n);
    if (r <= 0) {
        evbuffer_commit_space(s->in, v, 0);
        return r;
    }
    *filled = (size_t)r == room;
    got = r;
    for (int i = 0; i < n; i++) {
        size_t take = (size_t)r < v[i].iov_len ? (size_t)r : v[i].iov_len;

        v[i].iov_len = take;
        r -= (ssize_t)take;
    }
    evbuffer_commit_space(s->in, v, n);
    return got;
}

/*
 * A read that took all the room it had leaves more in the socket: read on
 * (up to READ_MORE in all) before passing it on, so that a response that came
 * in several pieces leaves in one write and fewer TCP segments, instead of one
 * write per piece (bench/README.md). An error waits for the next callback.
 */
static void read_on(struct pf_stream *s, size_t total)
{
    bool filled = true;

    while (filled && total < READ_MORE) {
        ssize_t r;

        filled = false;
        r = read_once(s, READ_LARGE, &filled);
        if (r <= 0) {
            if (r == -1 && errno != EAGAIN && errno != EINTR)
                s->err_pending = errno;
            return;
        }
        total += (size_t)r;
    }
}

static void rev_read(evutil_socket_t fd, short what, void *arg)
{
    struct pf_stream *s = arg;
    /* a read that filled its buffer announced a stream: read bigger */
    size_t want = s->big_reads ? READ_LARGE : READ_SMALL;
    bool filled = false;
    ssize_t r;

    (void)fd;
    (void)what; /* the read event has no timeout of its own (struct pf_stream_tmo) */
    pf_stream_unpark(s);
    tmo_activity(s);
    if (s->raw) {
        s->loop->cbs[s->cbs].readcb(s, s->arg);
        return;
    }
    if (s->err_pending != 0) {
        r = -1;
        errno = s->err_pending;
        s->err_pending = 0;
    } else {
        r = read_once(s, want, &filled);
    }
    if (r <= 0) {
        if (r == -1 && (errno == EAGAIN || errno == EINTR))
            return;
        s->err = r == 0 ? 0 : errno;
        pf_stream_read(s, false);
        stream_event(s, r == 0 ? PF_STREAM_EOF : PF_STREAM_ERROR);
        return;
    }
    s->big_reads = (size_t)r >= want;
    if (filled)
        read_on(s, (size_t)r);
    if (s->loop->cbs[s->cbs].readcb != NULL)
        s->loop->cbs[s->cbs].readcb(s, s->arg);
    /*
     * Write what this read produced now rather than after the whole batch:
     * the bytes are still in cache (a batch of 30 events holds up to 1 MiB of
     * 100 KiB responses, more than L2), and the buffer goes back to the pool
     * in time to be the next read's, so the heap neither grows nor is trimmed.
     * Still one write for a head and a body made in the same callback.
     */
    flush_dirty(s->loop);
}

/* One clock read for everything a read leads to (proxy/clock.h). */
static void rev_cb(evutil_socket_t fd, short what, void *arg)
{
    pf_clock_hold();
    rev_read(fd, what, arg);
    pf_clock_release();
}

static void wev_cb(evutil_socket_t fd, short what, void *arg);

/*
 * The write event, made the first time the stream waits for writability (a
 * connect, a full send buffer): most client connections never do, and an
 * idle keep-alive connection is then smaller by a struct event.
 */
static struct event *wev_get(struct pf_stream *s)
{
    if (s->wev == NULL) {
        s->wev = event_new(s->loop->base, s->fd, EV_WRITE, wev_cb, s);
        if (s->wev == NULL)
            pf_fatal("out of memory (event_new)");
    }
    return s->wev;
}

/* Wait for writability, within the write timeout. */
static void wev_add(struct pf_stream *s)
{
    struct timeval tmp;

    event_add(wev_get(s), s->has_wto ? pf_stream_timeout(s->loop, s->wto_ms, &tmp) : NULL);
}

static void wev_cb(evutil_socket_t fd, short what, void *arg)
{
    struct pf_stream *s = arg;

    s->wev_added = false;
    if (what & EV_TIMEOUT) {
        stream_event(s, PF_STREAM_TIMEOUT);
        return;
    }
    if (s->connecting) {
        int err = 0;
        socklen_t len = sizeof(err);

        s->connecting = false;
        if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) == -1)
            err = errno;
        if (err != 0) {
            s->err = err;
            stream_event(s, PF_STREAM_ERROR);
            return;
        }
        stream_event(s, PF_STREAM_CONNECTED);
        if (s->closed)
            return;
    }
    pf_stream_flush(s);
}

static ssize_t send1(int fd, const void *p, size_t len, int flags)
{
    ssize_t w = send(fd, p, len, MSG_NOSIGNAL | flags);

    return w == -1 && errno == ENOTSOCK ? write(fd, p, len) : w;
}

/*
 * One write of what s->out holds. send(2) rather than writev(2) whenever the
 * bytes are one piece, or several small ones (a head and a small body)
 * copied together: send skips the iovec import and file lookup of writev,
 * ~0.2 µs a call on this path (bench/README.md). A socket is not required
 * (ENOTSOCK falls back to write).
 */
static ssize_t out_write(struct pf_stream *s)
{
    struct evbuffer_iovec v[WRITE_IOV];
    struct iovec iov[WRITE_IOV];
    char small[WRITE_COPY];
    int flags = s->more ? MSG_MORE : 0;
    int n = evbuffer_peek(s->out, -1, NULL, v, WRITE_IOV);
    size_t total = 0;
    ssize_t w;

    if (n > WRITE_IOV)
        n = WRITE_IOV;
    for (int i = 0; i < n; i++) {
        iov[i].iov_base = v[i].iov_base;
        iov[i].iov_len = v[i].iov_len;
        total += v[i].iov_len;
    }
    if (n == 1) {
        w = send1(s->fd, iov[0].iov_base, iov[0].iov_len, flags);
    } else if (total <= sizeof(small)) {
        total = 0;
        for (int i = 0; i < n; i++) {
            memcpy(small + total, iov[i].iov_base, iov[i].iov_len);
            total += iov[i].iov_len;
        }
        w = send1(s->fd, small, total, flags);
    } else if (flags != 0) {
        struct msghdr mh = {.msg_iov = iov, .msg_iovlen = (size_t)n};

        w = sendmsg(s->fd, &mh, MSG_NOSIGNAL | flags);
        if (w == -1 && errno == ENOTSOCK)
            w = writev(s->fd, iov, n);
    } else {
        w = writev(s->fd, iov, n);
    }
    if (w > 0) {
        evbuffer_drain(s->out, (size_t)w);
        if (flags != 0)
            cork(s);
        else if (s->cork_at != 0) /* the kernel sent what it held with this write */
            cork_remove(s);
    }
    return w;
}

void pf_stream_flush(struct pf_stream *s)
{
    size_t left;

    if (s->closed || s->connecting || s->out == NULL)
        return;
    while ((left = evbuffer_get_length(s->out)) > 0) {
        ssize_t w = out_write(s);

        if (w > 0)
            continue;
        if (w == -1 && (errno == EAGAIN || errno == EINTR)) {
            if (!s->wev_added) {
                wev_add(s);
                s->wev_added = true;
            }
            return;
        }
        s->err = w == -1 ? errno : EPIPE;
        stream_event(s, PF_STREAM_ERROR);
        return;
    }
    if (s->cork_at != 0 && !s->more)
        push(s); /* the message ended with nothing left to write */
    if (s->loop->cbs[s->cbs].writecb != NULL)
        s->loop->cbs[s->cbs].writecb(s, s->arg);
}

void pf_stream_wait_write(struct pf_stream *s)
{
    if (s->closed || s->connecting)
        return;
    pf_stream_unpark(s);
    if (evbuffer_get_length(s->out) > 0) {
        pf_stream_mark(s); /* its flush waits for writability itself */
        return;
    }
    if (!s->wev_added) {
        wev_add(s);
        s->wev_added = true;
    }
}

struct pf_stream *pf_stream_new(struct pf_stream_loop *l, int fd)
{
    struct pf_stream *s = pf_xcalloc(1, sizeof(*s));

    s->loop = l;
    s->fd = fd;
    s->in = pf_bufpool_evbuffer();
    s->out = pf_bufpool_evbuffer();
    evutil_make_socket_nonblocking(fd);
    event_assign(&s->rev, l->base, fd, EV_READ | EV_PERSIST, rev_cb, s);
    return s;
}

int pf_stream_connect(struct pf_stream *s, const struct sockaddr *sa, socklen_t len)
{
    if (connect(s->fd, sa, len) == -1 && errno != EINPROGRESS)
        return -errno;
    /* even an immediate success is reported through the write event */
    s->connecting = true;
    event_add(wev_get(s), NULL);
    s->wev_added = true;
    return 0;
}

void pf_stream_setcb(struct pf_stream *s, pf_stream_cb readcb, pf_stream_cb writecb,
                     pf_stream_event_cb eventcb, void *arg)
{
    struct pf_stream_loop *l = s->loop;
    unsigned i;

    for (i = 0; i < l->n_cbs; i++) {
        if (l->cbs[i].readcb == readcb && l->cbs[i].writecb == writecb &&
            l->cbs[i].eventcb == eventcb)
            break;
    }
    if (i == l->n_cbs) {
        if (i == PF_STREAM_CBS_MAX)
            pf_fatal("more than %d sets of stream callbacks", PF_STREAM_CBS_MAX);
        l->cbs[i] = (struct pf_stream_cbs){readcb, writecb, eventcb};
        l->n_cbs++;
    }
    s->cbs = (uint8_t)i;
    s->arg = arg;
}

void pf_stream_read(struct pf_stream *s, bool on)
{
    if (s->closed || s->reading == on)
        return;
    s->reading = on;
    if (on) {
        event_add(&s->rev, NULL);
        tmo_activity(s);
    } else {
        event_del(&s->rev); /* a timer left armed finds the stream not reading */
    }
}

void pf_stream_set_read_timeout(struct pf_stream *s, const struct timeval *tv)
{
    if (tv == NULL) {
        if (s->tmo != NULL)
            s->tmo->rto_us = 0; /* lazily: a timer left armed finds none */
        return;
    }
    /* a common timeout (pf_stream_timeout) keeps its index in tv_usec's upper bits */
    tmo_get(s)->rto_us = (uint64_t)tv->tv_sec * 1000000 + (uint64_t)(tv->tv_usec & USEC_MASK);
    if (s->reading)
        tmo_activity(s); /* counts from now, as re-adding the read event did */
}

void pf_stream_set_read_deadline(struct pf_stream *s, uint64_t us)
{
    if (us == 0 && s->tmo == NULL)
        return;
    tmo_get(s)->deadline_us = us; /* takes effect at the next read or read timeout set */
}

void pf_stream_set_more(struct pf_stream *s, bool more)
{
    s->more = more;
    if (!more && s->cork_at != 0)
        pf_stream_mark(s); /* its flush pushes what is held if nothing else does */
}

void pf_stream_set_write_timeout(struct pf_stream *s, const struct timeval *tv)
{
    s->has_wto = tv != NULL;
    if (tv != NULL) /* (a common timeout keeps its index in tv_usec's upper bits) */
        s->wto_ms =
            (uint32_t)((uint64_t)tv->tv_sec * 1000 + (uint64_t)(tv->tv_usec & USEC_MASK) / 1000);
}

void pf_stream_free(struct pf_stream *s)
{
    if (s == NULL || s->closed)
        return;
    s->closed = true;
    event_del(&s->rev);
    if (s->wev != NULL)
        event_del(s->wev);
    if (s->tmo != NULL)
        event_del(&s->tmo->ev);
    s->dirty = false; /* still queued if it was: flush_dirty skips it */
    if (s->cork_at != 0)
        cork_remove(s); /* without a push: close sends what is held */
    close(s->fd);
    if (s->loop->n_grave == s->loop->cap_grave) {
        s->loop->cap_grave = s->loop->cap_grave ? s->loop->cap_grave * 2 : 64;
        s->loop->grave = pf_xrealloc(s->loop->grave, s->loop->cap_grave * sizeof(*s->loop->grave));
    }
    s->loop->grave[s->loop->n_grave++] = s;
    schedule(s->loop);
}

/*
 * An idle stream holds no buffers: its empty evbuffers go back to the
 * worker's pool (proxy/bufpool.h) and come back with the next readable
 * event. Only a stream with nothing buffered and no write pending parks.
 */
void pf_stream_park(struct pf_stream *s)
{
    if (s->in == NULL || s->closed || s->dirty || s->wev_added || s->connecting ||
        evbuffer_get_length(s->in) > 0 || evbuffer_get_length(s->out) > 0)
        return;
    pf_bufpool_evbuffer_put(s->in);
    pf_bufpool_evbuffer_put(s->out);
    s->in = NULL;
    s->out = NULL;
}

void pf_stream_unpark(struct pf_stream *s)
{
    if (s->in != NULL)
        return;
    s->in = pf_bufpool_evbuffer();
    s->out = pf_bufpool_evbuffer();
}
