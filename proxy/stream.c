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
#include "proxy/clock.h"
#include "proxy/log.h"

#define READ_SMALL (16 * 1024)
#define READ_LARGE (64 * 1024)
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
        evbuffer_free(l->grave[i]->in);
        evbuffer_free(l->grave[i]->out);
        if (l->grave[i]->wev != NULL)
            event_free(l->grave[i]->wev);
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

/* Push what MSG_MORE left in the kernel: setting TCP_NODELAY sends pending frames. */
static void push(struct pf_stream *s)
{
    int one = 1;

    TAILQ_REMOVE(&s->loop->corked, s, cork_link);
    s->corked = false;
    setsockopt(s->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

static void push_cb(evutil_socket_t fd, short what, void *arg)
{
    struct pf_stream_loop *l = arg;
    struct pf_stream *s;

    (void)fd;
    (void)what;
    l->push_armed = false;
    while ((s = TAILQ_FIRST(&l->corked)) != NULL)
        push(s);
}

static void cork(struct pf_stream *s)
{
    struct pf_stream_loop *l = s->loop;

    if (s->corked)
        return;
    s->corked = true;
    TAILQ_INSERT_TAIL(&l->corked, s, cork_link);
    if (!l->push_armed) {
        struct timeval tv = {0, PF_STREAM_PUSH_MS * 1000};

        l->push_armed = true;
        evtimer_add(&l->push_ev, &tv);
    }
}

void pf_stream_loop_init(struct pf_stream_loop *l, struct event_base *base)
{
    l->base = base;
    TAILQ_INIT(&l->dirty);
    TAILQ_INIT(&l->corked);
    evtimer_assign(&l->push_ev, base, push_cb, l);
    /*
     * Same priority as every other event: activated during a batch of
     * callbacks, it joins the tail of the active queue and runs after them in
     * the same loop iteration (a lower priority would cost an extra epoll_wait).
     */
    event_assign(&l->flush_ev, base, -1, 0, flush_cb, l);
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
    reap(l);
    free(l->grave);
    l->grave = NULL;
    l->cap_grave = 0;
    event_del(&l->flush_ev);
    event_del(&l->push_ev);
    l->push_armed = false;
}

/* Write every marked stream; freed ones stay in the grave (callers may hold them). */
static void flush_dirty(struct pf_stream_loop *l)
{
    struct pf_stream *s;

    while ((s = TAILQ_FIRST(&l->dirty)) != NULL) {
        TAILQ_REMOVE(&l->dirty, s, dirty_link);
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
    TAILQ_INSERT_TAIL(&s->loop->dirty, s, dirty_link);
    schedule(s->loop);
}

static void stream_event(struct pf_stream *s, int what)
{
    if (s->eventcb != NULL)
        s->eventcb(s, what, s->arg);
}

/* (Re)arm the read event: the read timeout, or what is left to the read deadline. */
static void rev_add(struct pf_stream *s)
{
    if (s->read_deadline_us != 0) {
        uint64_t now = pf_now_us();
        uint64_t left = s->read_deadline_us > now ? s->read_deadline_us - now : 0;
        struct timeval tv = {(time_t)(left / 1000000), (suseconds_t)(left % 1000000)};

        event_add(&s->rev, &tv);
        s->rto_cut = true;
        return;
    }
    event_add(&s->rev, s->has_rto ? &s->rto : NULL);
    s->rto_cut = false;
}

/*
 * A persistent event re-arms its whole timeout each time it runs: with a
 * deadline, take it back to what is left (the callback may have cleared it).
 */
static void rev_deadline(struct pf_stream *s)
{
    if (s->read_deadline_us != 0 && s->reading && !s->closed)
        rev_add(s);
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

static void rev_cb(evutil_socket_t fd, short what, void *arg)
{
    struct pf_stream *s = arg;
    /* a read that filled its buffer announced a stream: read bigger */
    size_t want = s->big_reads ? READ_LARGE : READ_SMALL;
    bool filled = false;
    ssize_t r;

    (void)fd;
    if (what & EV_TIMEOUT) {
        stream_event(s, PF_STREAM_TIMEOUT);
        return;
    }
    if (s->raw) {
        s->readcb(s, s->arg);
        rev_deadline(s);
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
        if (r == -1 && (errno == EAGAIN || errno == EINTR)) {
            rev_deadline(s);
            return;
        }
        s->err = r == 0 ? 0 : errno;
        pf_stream_read(s, false);
        stream_event(s, r == 0 ? PF_STREAM_EOF : PF_STREAM_ERROR);
        return;
    }
    s->big_reads = (size_t)r >= want;
    if (filled)
        read_on(s, (size_t)r);
    if (s->readcb != NULL)
        s->readcb(s, s->arg);
    /*
     * Write what this read produced now rather than after the whole batch:
     * the bytes are still in cache (a batch of 30 events holds up to 1 MiB of
     * 100 KiB responses, more than L2), and the buffer goes back to malloc in
     * time to be the next read's, so the heap neither grows nor is trimmed.
     * Still one write for a head and a body made in the same callback.
     */
    flush_dirty(s->loop);
    rev_deadline(s); /* a freed stream waits in the grave: s->closed can be read */
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

/* Off the corked list without a push (a write without MSG_MORE did it). */
static void push_forget(struct pf_stream *s)
{
    TAILQ_REMOVE(&s->loop->corked, s, cork_link);
    s->corked = false;
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
        else if (s->corked) /* the kernel sent what it held with this write */
            push_forget(s);
    }
    return w;
}

void pf_stream_flush(struct pf_stream *s)
{
    size_t left;

    if (s->closed || s->connecting)
        return;
    while ((left = evbuffer_get_length(s->out)) > 0) {
        ssize_t w = out_write(s);

        if (w > 0)
            continue;
        if (w == -1 && (errno == EAGAIN || errno == EINTR)) {
            if (!s->wev_added) {
                event_add(wev_get(s), s->has_wto ? &s->wto : NULL);
                s->wev_added = true;
            }
            return;
        }
        s->err = w == -1 ? errno : EPIPE;
        stream_event(s, PF_STREAM_ERROR);
        return;
    }
    if (s->corked && !s->more)
        push(s); /* the message ended with nothing left to write */
    if (s->writecb != NULL)
        s->writecb(s, s->arg);
}

void pf_stream_wait_write(struct pf_stream *s)
{
    if (s->closed || s->connecting)
        return;
    if (evbuffer_get_length(s->out) > 0) {
        pf_stream_mark(s); /* its flush waits for writability itself */
        return;
    }
    if (!s->wev_added) {
        event_add(wev_get(s), s->has_wto ? &s->wto : NULL);
        s->wev_added = true;
    }
}

struct pf_stream *pf_stream_new(struct pf_stream_loop *l, int fd)
{
    struct pf_stream *s = pf_xcalloc(1, sizeof(*s));

    s->loop = l;
    s->fd = fd;
    s->in = pf_evbuffer_new();
    s->out = pf_evbuffer_new();
    if (s->in == NULL || s->out == NULL)
        pf_fatal("out of memory");
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
    s->readcb = readcb;
    s->writecb = writecb;
    s->eventcb = eventcb;
    s->arg = arg;
}

void pf_stream_read(struct pf_stream *s, bool on)
{
    if (s->closed || s->reading == on)
        return;
    s->reading = on;
    if (on)
        rev_add(s);
    else
        event_del(&s->rev);
}

void pf_stream_set_read_timeout(struct pf_stream *s, const struct timeval *tv)
{
    bool had = s->has_rto;

    s->has_rto = tv != NULL;
    if (tv != NULL)
        s->rto = *tv;
    if (s->reading && (had || s->has_rto)) {
        /* re-adding with NULL keeps an old timeout: remove first */
        if (!s->has_rto)
            event_del(&s->rev);
        rev_add(s);
    }
}

void pf_stream_set_read_deadline(struct pf_stream *s, uint64_t us)
{
    s->read_deadline_us = us;
    if (us == 0 && s->rto_cut) {
        s->rto_cut = false;
        if (s->reading && !s->closed) {
            /* back to the plain read timeout ("re-adding with NULL keeps an old timeout") */
            if (!s->has_rto)
                event_del(&s->rev);
            rev_add(s);
        }
    }
}

void pf_stream_set_more(struct pf_stream *s, bool more)
{
    s->more = more;
    if (!more && s->corked)
        pf_stream_mark(s); /* its flush pushes what is held if nothing else does */
}

void pf_stream_set_write_timeout(struct pf_stream *s, const struct timeval *tv)
{
    s->has_wto = tv != NULL;
    if (tv != NULL)
        s->wto = *tv;
}

void pf_stream_free(struct pf_stream *s)
{
    if (s == NULL || s->closed)
        return;
    s->closed = true;
    event_del(&s->rev);
    if (s->wev != NULL)
        event_del(s->wev);
    if (s->dirty)
        TAILQ_REMOVE(&s->loop->dirty, s, dirty_link);
    s->dirty = false;
    if (s->corked)
        push_forget(s); /* close sends what is held */
    close(s->fd);
    if (s->loop->n_grave == s->loop->cap_grave) {
        s->loop->cap_grave = s->loop->cap_grave ? s->loop->cap_grave * 2 : 64;
        s->loop->grave = pf_xrealloc(s->loop->grave, s->loop->cap_grave * sizeof(*s->loop->grave));
    }
    s->loop->grave[s->loop->n_grave++] = s;
    schedule(s->loop);
}
