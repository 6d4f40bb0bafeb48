/*
 * Unit tests of proxy/stream.c: a pf_stream on one end of a socketpair, the
 * test on the other, and a private event_base run one iteration at a time.
 *
 * Timeouts use real time, because libevent's clock cannot be injected; every
 * assertion on them is one-sided: a timeout that must fire is waited for
 * (bounded by a 10 s guard that fails the test), and a timeout that must not
 * fire is given a deadline far shorter than the guard that ends the wait, so
 * a slow machine can only make the test wait longer, never fail it.
 */
#include <errno.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cmocka.h>
#include <event2/buffer.h>
#include <event2/event.h>

#include "proxy/bufpool.h"
#include "proxy/clock.h"
#include "proxy/stream.h"

#define UNUSED     __attribute__((unused))
#define MAX_EVENTS 8

/* What the callbacks saw. */
struct rec {
    unsigned reads;
    unsigned writes;
    int events[MAX_EVENTS];
    unsigned n_events;
    bool free_in_read; /* readcb frees the stream */
    bool closed_seen;  /* s->closed right after that free */
    bool dirty_seen;   /* s->dirty after marking the freed stream */
    unsigned grave;    /* streams waiting to be released, right after the free */
    bool stop_in_read; /* readcb stops reading */
};

struct fixture {
    struct event_base *base;
    struct pf_stream_loop loop;
    struct pf_stream *s;
    int peer;
    struct rec r;
    bool guard_fired;
};

static void on_read(struct pf_stream *s, void *arg)
{
    struct rec *r = arg;

    r->reads++;
    if (r->stop_in_read)
        pf_stream_read(s, false);
    if (r->free_in_read) {
        pf_stream_free(s);
        /* still valid memory until the flush at the end of this batch */
        r->closed_seen = s->closed;
        pf_stream_mark(s);
        r->dirty_seen = s->dirty;
        r->grave = s->loop->n_grave;
    }
}

static void on_write(struct pf_stream *s UNUSED, void *arg)
{
    ((struct rec *)arg)->writes++;
}

static void on_event(struct pf_stream *s UNUSED, int what, void *arg)
{
    struct rec *r = arg;

    if (r->n_events < MAX_EVENTS)
        r->events[r->n_events] = what;
    r->n_events++;
}

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof(*f));
    int sv[2];

    assert_non_null(f);
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    f->base = event_base_new();
    assert_non_null(f->base);
    pf_stream_loop_init(&f->loop, f->base);
    f->s = pf_stream_new(&f->loop, sv[0]);
    f->peer = sv[1];
    pf_stream_setcb(f->s, on_read, on_write, on_event, &f->r);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;

    pf_stream_free(f->s);
    pf_stream_flush_all(&f->loop);
    pf_stream_loop_fini(&f->loop);
    event_base_free(f->base);
    if (f->peer >= 0)
        close(f->peer);
    free(f);
    return 0;
}

static void guard_cb(evutil_socket_t fd UNUSED, short what UNUSED, void *arg)
{
    ((struct fixture *)arg)->guard_fired = true;
}

/*
 * Run the loop one iteration at a time until done(f) or ms have passed.
 * Returns done(f). Every event that became active in the iteration in which
 * the guard fired has run too.
 */
static bool run_until(struct fixture *f, bool (*done)(struct fixture *), unsigned ms)
{
    struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
    struct event *guard = evtimer_new(f->base, guard_cb, f);

    assert_non_null(guard);
    f->guard_fired = false;
    evtimer_add(guard, &tv);
    while (!done(f) && !f->guard_fired)
        event_base_loop(f->base, EVLOOP_ONCE);
    event_free(guard);
    return done(f);
}

static bool never(struct fixture *f UNUSED)
{
    return false;
}

static bool got_event(struct fixture *f)
{
    return f->r.n_events > 0;
}

static bool got_write(struct fixture *f)
{
    return f->r.writes > 0;
}

static size_t in_len(struct fixture *f)
{
    return evbuffer_get_length(f->s->in);
}

static void peer_send(struct fixture *f, const void *p, size_t n)
{
    assert_int_equal(send(f->peer, p, n, 0), (ssize_t)n);
}

/* What the peer can read now, without waiting. */
static ssize_t peer_recv_now(struct fixture *f, void *buf, size_t n)
{
    return recv(f->peer, buf, n, MSG_DONTWAIT);
}

/* ---- reading ---- */

static bool got_5(struct fixture *f)
{
    return in_len(f) >= 5;
}

static bool got_6(struct fixture *f)
{
    return in_len(f) >= 6;
}

static bool got_event_or_read(struct fixture *f)
{
    return f->r.reads > 0 || f->r.n_events > 0;
}

static bool got_second_read(struct fixture *f)
{
    return f->r.reads > 1 || f->r.n_events > 0;
}

static void test_stream_reads_into_in_and_calls_readcb(void **state)
{
    struct fixture *f = *state;

    peer_send(f, "hello", 5);
    pf_stream_read(f->s, true);
    assert_true(run_until(f, got_5, 10000));
    assert_int_equal(in_len(f), 5);
    assert_memory_equal(evbuffer_pullup(f->s->in, 5), "hello", 5);
    assert_int_equal(f->r.reads, 1);
    assert_int_equal(f->r.n_events, 0);
}

static void test_stream_does_not_read_when_stopped(void **state)
{
    struct fixture *f = *state;

    f->r.stop_in_read = true;
    peer_send(f, "one", 3);
    pf_stream_read(f->s, true);
    assert_true(run_until(f, got_event_or_read, 10000));
    assert_int_equal(f->r.reads, 1);
    /* more input while stopped: nothing is read however long the loop runs */
    peer_send(f, "two", 3);
    event_base_loop(f->base, EVLOOP_NONBLOCK);
    run_until(f, never, 50);
    assert_int_equal(f->r.reads, 1);
    assert_int_equal(in_len(f), 3);
    /* reading again picks it up */
    f->r.stop_in_read = false;
    pf_stream_read(f->s, true);
    assert_true(run_until(f, got_6, 10000));
    assert_memory_equal(evbuffer_pullup(f->s->in, 6), "onetwo", 6);
}

/*
 * A read that fills its buffer is followed by more reads in the same callback
 * (64 KiB each) until one does not fill up or 128 KiB have been read; the
 * stream then reads 64 KiB at a time from the start.
 */
static void test_stream_reads_on_while_reads_fill_up(void **state)
{
    struct fixture *f = *state;
    static char big[512 * 1024];
    int sz = sizeof(big) * 2;
    size_t first;

    memset(big, 'b', sizeof(big));
    assert_int_equal(setsockopt(f->peer, SOL_SOCKET, SO_SNDBUF, &sz, sizeof(sz)), 0);
    peer_send(f, big, sizeof(big));
    f->r.stop_in_read = true; /* one callback per pf_stream_read(true) */
    pf_stream_read(f->s, true);
    assert_true(run_until(f, got_event_or_read, 10000));
    assert_int_equal(f->r.reads, 1);
    first = in_len(f);
    /* at least 128 KiB in one callback, not everything (the room of the last read over) */
    assert_true(first >= 128 * 1024 && first < 384 * 1024);
    assert_true(f->s->big_reads);
    pf_stream_read(f->s, true);
    assert_true(run_until(f, got_second_read, 10000));
    assert_true(in_len(f) - first >= 128 * 1024);
}

/* A short read ends the callback: one callback per piece that arrives. */
static void test_stream_short_read_is_passed_on_at_once(void **state)
{
    struct fixture *f = *state;

    peer_send(f, "hello", 5);
    pf_stream_read(f->s, true);
    assert_true(run_until(f, got_5, 10000));
    assert_int_equal(f->r.reads, 1);
    assert_false(f->s->big_reads);
}

/* ---- end of input and errors ---- */

static void test_stream_eof_is_an_event_and_stops_reading(void **state)
{
    struct fixture *f = *state;

    peer_send(f, "bye", 3);
    shutdown(f->peer, SHUT_WR);
    pf_stream_read(f->s, true);
    assert_true(run_until(f, got_event, 10000));
    assert_int_equal(f->r.events[0], PF_STREAM_EOF);
    assert_int_equal(f->s->err, 0);
    assert_int_equal(in_len(f), 3); /* the bytes before the end were read first */
    assert_false(f->s->reading);
}

/* The peer closes with bytes we sent still unread: our read fails. */
static void test_stream_read_error_is_an_event_with_errno(void **state)
{
    struct fixture *f = *state;

    evbuffer_add(f->s->out, "x", 1);
    pf_stream_flush(f->s);
    close(f->peer);
    f->peer = -1;
    pf_stream_read(f->s, true);
    assert_true(run_until(f, got_event, 10000));
    assert_int_equal(f->r.events[0], PF_STREAM_ERROR);
    assert_int_equal(f->s->err, ECONNRESET);
}

/*
 * The bytes before an error are passed on first, in a callback of their own,
 * and the error (not a plain end of input) follows with its errno, though
 * the read that met it was one of several in one callback.
 */
static bool got_reads_and_event(struct fixture *f)
{
    return f->r.n_events > 0;
}

static void test_stream_read_error_after_bytes_keeps_its_errno(void **state)
{
    struct fixture *f = *state;
    struct evbuffer *scratch = evbuffer_new();
    struct evbuffer_iovec v[2];
    static char big[128 * 1024];
    size_t room;

    /*
     * Exactly the room of the first read (16 KiB asked of a fresh evbuffer):
     * it fills up, so the callback reads on and meets the error.
     */
    assert_non_null(scratch);
    assert_true(evbuffer_reserve_space(scratch, 16 * 1024, v, 2) >= 1);
    room = v[0].iov_len;
    evbuffer_free(scratch);
    assert_true(room >= 16 * 1024 && room <= sizeof(big));
    memset(big, 'e', sizeof(big));
    peer_send(f, big, room);
    /* unread bytes at the peer when it closes: our reads end in ECONNRESET */
    evbuffer_add(f->s->out, "x", 1);
    pf_stream_flush(f->s);
    close(f->peer);
    f->peer = -1;
    pf_stream_read(f->s, true);
    assert_true(run_until(f, got_reads_and_event, 10000));
    assert_int_equal(in_len(f), room); /* every byte first */
    assert_int_equal(f->r.reads, 1);
    assert_int_equal(f->r.n_events, 1);
    assert_int_equal(f->r.events[0], PF_STREAM_ERROR);
    assert_int_equal(f->s->err, ECONNRESET);
}

static void test_stream_write_error_is_an_event_with_errno(void **state)
{
    struct fixture *f = *state;

    close(f->peer);
    f->peer = -1;
    evbuffer_add(f->s->out, "late", 4);
    pf_stream_mark(f->s);
    assert_true(run_until(f, got_event, 10000));
    assert_int_equal(f->r.events[0], PF_STREAM_ERROR);
    assert_int_equal(f->s->err, EPIPE);
    assert_int_equal(f->r.writes, 0);
}

/* ---- deferred, coalesced writes ---- */

static void test_stream_marked_writes_wait_for_the_loop_and_coalesce(void **state)
{
    struct fixture *f = *state;
    char buf[64];

    evbuffer_add(f->s->out, "HEAD|", 5);
    pf_stream_mark(f->s);
    evbuffer_add(f->s->out, "BODY", 4);
    pf_stream_mark(f->s);
    /* nothing is written before the batch of callbacks ends */
    assert_int_equal(peer_recv_now(f, buf, sizeof(buf)), -1);
    assert_int_equal(errno, EAGAIN);
    assert_true(f->s->dirty);
    assert_ptr_equal(STAILQ_FIRST(&f->loop.dirty), f->s);
    assert_ptr_equal(STAILQ_NEXT(f->s, dirty_link), NULL); /* listed once */
    assert_true(run_until(f, got_write, 10000));
    /* one write: the peer gets both pieces in one read */
    assert_int_equal(peer_recv_now(f, buf, sizeof(buf)), 9);
    assert_memory_equal(buf, "HEAD|BODY", 9);
    assert_int_equal(f->r.writes, 1);
    assert_false(f->s->dirty);
    assert_true(STAILQ_EMPTY(&f->loop.dirty));
}

/* ---- backpressure ---- */

static size_t drained;

static unsigned char expect_byte(size_t i)
{
    return (unsigned char)('a' + i % 26);
}

static bool peer_drained(struct fixture *f)
{
    unsigned char buf[65536];
    ssize_t n;

    while ((n = peer_recv_now(f, buf, sizeof(buf))) > 0) {
        for (ssize_t i = 0; i < n; i++)
            assert_int_equal(buf[i], expect_byte(drained + (size_t)i));
        drained += (size_t)n;
    }
    return f->r.writes > 0 && evbuffer_get_length(f->s->out) == 0;
}

static void test_stream_backpressure_waits_for_the_peer_then_resumes(void **state)
{
    struct fixture *f = *state;
    const size_t total = 4 << 20; /* far more than a socketpair holds */
    unsigned char *data = malloc(total);
    int sz = 16 * 1024;

    assert_non_null(data);
    for (size_t i = 0; i < total; i++)
        data[i] = expect_byte(i);
    assert_int_equal(setsockopt(f->peer, SOL_SOCKET, SO_RCVBUF, &sz, sizeof(sz)), 0);
    /* a stream that never waited for writability has no write event yet */
    assert_null(f->s->wev);
    evbuffer_add(f->s->out, data, total);
    free(data);
    pf_stream_mark(f->s);
    event_base_loop(f->base, EVLOOP_NONBLOCK);
    /* the socket is full: the rest waits in out, on the write event, no writecb */
    assert_true(evbuffer_get_length(f->s->out) > 0);
    assert_non_null(f->s->wev);
    assert_true(f->s->wev_added);
    assert_int_equal(f->r.writes, 0);
    /* marking again while waiting for writability changes nothing */
    pf_stream_mark(f->s);
    assert_false(f->s->dirty);
    /* the peer reads: everything arrives, in order, and writecb says so */
    drained = 0;
    assert_true(run_until(f, peer_drained, 10000));
    peer_drained(f);
    assert_int_equal(drained, total);
    assert_int_equal(f->r.writes, 1);
    assert_int_equal(f->r.n_events, 0);
}

/* ---- idle buffers ---- */

static bool got_read(struct fixture *f)
{
    return f->r.reads > 0;
}

/* An idle stream parks its empty buffers in the worker's pool; the next read takes them back. */
static void test_stream_park_gives_buffers_back_until_the_next_read(void **state)
{
    struct fixture *f = *state;

    pf_bufpool_start();
    pf_stream_read(f->s, true);
    evbuffer_add(f->s->out, "x", 1);
    pf_stream_park(f->s); /* output waiting: kept */
    assert_non_null(f->s->out);
    assert_int_equal(pf_stream_out_len(f->s), 1);
    evbuffer_drain(f->s->out, 1);
    pf_stream_park(f->s);
    assert_null(f->s->in);
    assert_null(f->s->out);
    assert_int_equal(pf_stream_out_len(f->s), 0);
    assert_int_equal(pf_bufpool_evbuffer_count(), 2);
    pf_stream_park(f->s); /* parked already: a no-op */
    assert_int_equal(pf_bufpool_evbuffer_count(), 2);
    peer_send(f, "hello", 5);
    assert_true(run_until(f, got_read, 10000));
    assert_non_null(f->s->out);
    assert_int_equal(in_len(f), 5);
    assert_int_equal(pf_bufpool_evbuffer_count(), 0);
    pf_stream_park(f->s); /* input waiting: kept */
    assert_non_null(f->s->in);
    pf_bufpool_stop();
}

/* A stream freed while parked is released like any other (a leak fails under ASan). */
static void test_stream_freed_while_parked(void **state)
{
    struct fixture *f = *state;

    pf_stream_park(f->s);
    assert_null(f->s->in);
    pf_stream_unpark(f->s);
    assert_non_null(f->s->in);
    assert_non_null(f->s->out);
    pf_stream_park(f->s);
    /* teardown frees it parked */
}

/*
 * Output in many pieces (small ones that are copied together, large ones,
 * more pieces than one write takes) against a small receive buffer, so that
 * writes are partial: every byte arrives, in order.
 */
static void test_stream_output_in_many_pieces_arrives_in_order(void **state)
{
    struct fixture *f = *state;
    static const size_t sizes[] = {1, 114, 900, 3000, 1,     4096, 4097, 70000,
                                   7, 2,   1,   9,    65536, 50,   30,   200000};
    enum { ROUNDS = 3 };
    size_t total = 0, off = 0;
    unsigned char *data;
    int sz = 16 * 1024;

    for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++)
        total += sizes[i];
    total *= ROUNDS;
    data = malloc(total);
    assert_non_null(data);
    for (size_t i = 0; i < total; i++)
        data[i] = expect_byte(i);
    assert_int_equal(setsockopt(f->peer, SOL_SOCKET, SO_RCVBUF, &sz, sizeof(sz)), 0);
    for (unsigned r = 0; r < ROUNDS; r++) {
        for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
            /* a reference is a piece of its own (no merging into the previous one) */
            evbuffer_add_reference(f->s->out, data + off, sizes[i], NULL, NULL);
            off += sizes[i];
        }
    }
    pf_stream_mark(f->s);
    drained = 0;
    assert_true(run_until(f, peer_drained, 10000));
    peer_drained(f);
    assert_int_equal(drained, total);
    assert_int_equal(f->r.n_events, 0);
    free(data);
}

/* Output to a descriptor that is not a socket (a pipe) is written too. */
static void test_stream_writes_to_a_pipe(void **state)
{
    struct fixture *f = *state;
    struct pf_stream *p;
    int fds[2];
    char buf[16];

    assert_int_equal(pipe(fds), 0);
    p = pf_stream_new(&f->loop, fds[1]);
    pf_stream_setcb(p, NULL, on_write, NULL, &f->r);
    evbuffer_add(p->out, "HEAD|", 5);
    evbuffer_add_reference(p->out, "BODY", 4, NULL, NULL);
    pf_stream_mark(p);
    assert_true(run_until(f, got_write, 10000));
    assert_int_equal(read(fds[0], buf, sizeof(buf)), 9);
    assert_memory_equal(buf, "HEAD|BODY", 9);
    evbuffer_add(p->out, "one", 3);
    pf_stream_mark(p);
    f->r.writes = 0;
    assert_true(run_until(f, got_write, 10000));
    assert_int_equal(read(fds[0], buf, sizeof(buf)), 3);
    assert_memory_equal(buf, "one", 3);
    /* more announced, two pieces over the copy size: sendmsg, then writev */
    {
        static char big[2][5000];
        char back[sizeof(big)];
        size_t got = 0;

        memset(big[0], 'p', sizeof(big[0]));
        memset(big[1], 'q', sizeof(big[1]));
        pf_stream_set_more(p, true);
        evbuffer_add_reference(p->out, big[0], sizeof(big[0]), NULL, NULL);
        evbuffer_add_reference(p->out, big[1], sizeof(big[1]), NULL, NULL);
        pf_stream_mark(p);
        f->r.writes = 0;
        assert_true(run_until(f, got_write, 10000));
        while (got < sizeof(back)) {
            ssize_t n = read(fds[0], back + got, sizeof(back) - got);

            assert_true(n > 0);
            got += (size_t)n;
        }
        assert_memory_equal(back, big, sizeof(back));
        assert_int_equal(f->r.n_events, 0);
    }
    pf_stream_free(p);
    close(fds[0]);
}

/* ---- MSG_MORE ---- */

/* A connected TCP pair on 127.0.0.1 (MSG_MORE means nothing to AF_UNIX). */
static void tcp_pair(int *a, int *b)
{
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(sa);
    int l = socket(AF_INET, SOCK_STREAM, 0);

    assert_true(l >= 0);
    assert_int_equal(bind(l, (struct sockaddr *)&sa, sizeof(sa)), 0);
    assert_int_equal(listen(l, 1), 0);
    assert_int_equal(getsockname(l, (struct sockaddr *)&sa, &len), 0);
    *a = socket(AF_INET, SOCK_STREAM, 0);
    assert_int_equal(connect(*a, (struct sockaddr *)&sa, sizeof(sa)), 0);
    *b = accept(l, NULL, NULL);
    assert_true(*b >= 0);
    close(l);
}

static int more_peer = -1;
static size_t more_got;
static struct pf_stream *more_stream;

static bool uncorked(struct fixture *f)
{
    (void)f;
    return more_stream->cork_at == 0;
}

static bool more_arrived(struct fixture *f)
{
    char buf[64];
    ssize_t n;

    (void)f;
    while ((n = recv(more_peer, buf, sizeof(buf), MSG_DONTWAIT)) > 0)
        more_got += (size_t)n;
    return more_got >= 3;
}

/*
 * A write while more output is announced carries MSG_MORE and leaves the
 * stream corked; what the kernel holds is pushed by the loop's push timer
 * (or by a write without it, or when the announcement ends): the peer gets
 * every byte and no stream stays corked.
 */
static void test_stream_more_is_pushed_out(void **state)
{
    struct fixture *f = *state;
    struct pf_stream *s;
    int a, b;

    tcp_pair(&a, &b);
    more_peer = b;
    s = pf_stream_new(&f->loop, a);
    pf_stream_setcb(s, NULL, NULL, NULL, NULL);
    /* held back: pushed by the timer */
    pf_stream_set_more(s, true);
    evbuffer_add(s->out, "abc", 3);
    pf_stream_mark(s);
    event_base_loop(f->base, EVLOOP_NONBLOCK);
    assert_true(s->cork_at != 0);
    assert_ptr_equal(f->loop.corked[0], s);
    more_got = 0;
    assert_true(run_until(f, more_arrived, 10000));
    more_stream = s;
    assert_true(run_until(f, uncorked, 10000)); /* the push timer ran */
    assert_int_equal(f->loop.n_corked, 0);
    /* held back: pushed when the announcement ends */
    evbuffer_add(s->out, "def", 3);
    pf_stream_mark(s);
    event_base_loop(f->base, EVLOOP_NONBLOCK);
    assert_true(s->cork_at != 0);
    pf_stream_set_more(s, false);
    event_base_loop(f->base, EVLOOP_NONBLOCK);
    assert_int_equal(s->cork_at, 0);
    more_got = 0;
    assert_true(run_until(f, more_arrived, 10000));
    /* a write without MSG_MORE takes the held bytes along */
    pf_stream_set_more(s, true);
    evbuffer_add(s->out, "ghi", 3);
    pf_stream_mark(s);
    event_base_loop(f->base, EVLOOP_NONBLOCK);
    assert_true(s->cork_at != 0);
    s->more = false; /* as if cleared without a flush */
    evbuffer_add(s->out, "jkl", 3);
    pf_stream_mark(s);
    event_base_loop(f->base, EVLOOP_NONBLOCK);
    assert_int_equal(s->cork_at, 0);
    more_got = 0;
    assert_true(run_until(f, more_arrived, 10000));
    /* a corked stream freed leaves the list */
    pf_stream_set_more(s, true);
    evbuffer_add(s->out, "mno", 3);
    pf_stream_mark(s);
    event_base_loop(f->base, EVLOOP_NONBLOCK);
    assert_true(s->cork_at != 0);
    pf_stream_free(s);
    assert_int_equal(f->loop.n_corked, 0);
    event_base_loop(f->base, EVLOOP_NONBLOCK);
    close(b);
    more_peer = -1;
}

/* ---- timeouts ---- */

static void test_stream_read_timeout_fires_without_input(void **state)
{
    struct fixture *f = *state;
    struct timeval tv = {0, 20000};

    pf_stream_set_read_timeout(f->s, &tv);
    pf_stream_read(f->s, true);
    assert_true(run_until(f, got_event, 10000));
    assert_int_equal(f->r.events[0], PF_STREAM_TIMEOUT);
    assert_int_equal(f->r.reads, 0);
}

/* A removed read timeout never fires (20 ms removed, 500 ms watched). */
static void test_stream_read_timeout_removed_does_not_fire(void **state)
{
    struct fixture *f = *state;
    struct timeval tv = {0, 20000};

    pf_stream_set_read_timeout(f->s, &tv);
    pf_stream_read(f->s, true);
    pf_stream_set_read_timeout(f->s, NULL);
    run_until(f, got_event, 500);
    assert_int_equal(f->r.n_events, 0);
    /* and one set before reading starts applies once it does */
    pf_stream_read(f->s, false);
    pf_stream_set_read_timeout(f->s, &tv);
    pf_stream_read(f->s, true);
    assert_true(run_until(f, got_event, 10000));
    assert_int_equal(f->r.events[0], PF_STREAM_TIMEOUT);
}

/* Input before the timeout: read, no timeout event (20 s timeout). */
static void test_stream_read_timeout_not_fired_by_a_prompt_peer(void **state)
{
    struct fixture *f = *state;
    struct timeval tv = {20, 0};

    pf_stream_set_read_timeout(f->s, &tv);
    pf_stream_read(f->s, true);
    peer_send(f, "hello", 5);
    assert_true(run_until(f, got_5, 10000));
    assert_int_equal(f->r.n_events, 0);
}

/*
 * The read timer is lazy: a timeout moved later keeps the armed timer, which
 * then waits for the rest (30 ms moved to 20 s: no event in 500 ms).
 */
static void test_stream_read_timeout_moved_later_waits_for_the_rest(void **state)
{
    struct fixture *f = *state;
    struct timeval early = {0, 30000};
    struct timeval late = {20, 0};

    pf_stream_set_read_timeout(f->s, &early);
    pf_stream_read(f->s, true);
    pf_stream_set_read_timeout(f->s, &late);
    run_until(f, got_event, 500);
    assert_int_equal(f->r.n_events, 0);
}

/* A common timeout (its index is in tv_usec's upper bits) is a read timeout of its length. */
static void test_stream_read_timeout_common_fires(void **state)
{
    struct fixture *f = *state;
    struct timeval tmp;

    pf_stream_set_read_timeout(f->s, pf_stream_timeout(&f->loop, 20, &tmp));
    pf_stream_read(f->s, true);
    assert_true(run_until(f, got_event, 10000));
    assert_int_equal(f->r.events[0], PF_STREAM_TIMEOUT);
}

/* A timeout moved earlier re-arms the timer (20 s moved to 20 ms). */
static void test_stream_read_timeout_moved_earlier_fires(void **state)
{
    struct fixture *f = *state;
    struct timeval late = {20, 0};
    struct timeval early = {0, 20000};

    pf_stream_set_read_timeout(f->s, &late);
    pf_stream_read(f->s, true);
    pf_stream_set_read_timeout(f->s, &early);
    assert_true(run_until(f, got_event, 10000));
    assert_int_equal(f->r.events[0], PF_STREAM_TIMEOUT);
}

/* A timeout moved later still fires at its new end, not before (20 ms moved to 80 ms). */
static void test_stream_read_timeout_moved_later_fires_at_its_end(void **state)
{
    struct fixture *f = *state;
    struct timeval early = {0, 20000};
    struct timeval late = {0, 80000};
    uint64_t t0 = pf_now_us();

    pf_stream_set_read_timeout(f->s, &early);
    pf_stream_read(f->s, true);
    pf_stream_set_read_timeout(f->s, &late);
    assert_true(run_until(f, got_event, 10000));
    assert_int_equal(f->r.events[0], PF_STREAM_TIMEOUT);
    assert_true(pf_now_us() - t0 >= 80000); /* one-sided: never earlier than its end */
}

/*
 * A read deadline is not pushed back by reads: with a 20 s read timeout and a
 * deadline already reached (the clock is fixed), the read that comes re-arms
 * the event with nothing left, and the timeout fires (the guard is 10 s).
 */
static void test_stream_read_deadline_is_not_extended_by_reads(void **state)
{
    struct fixture *f = *state;
    struct timeval tv = {20, 0};

    pf_clock_fixed_us = 5000000;
    pf_stream_set_read_timeout(f->s, &tv);
    pf_stream_read(f->s, true);
    pf_stream_set_read_deadline(f->s, pf_clock_fixed_us);
    peer_send(f, "hello", 5);
    assert_true(run_until(f, got_event, 10000));
    pf_clock_fixed_us = 0;
    assert_int_equal(f->r.reads, 1);
    assert_int_equal(f->r.events[0], PF_STREAM_TIMEOUT);
}

/* Clearing the deadline goes back to the read timeout (20 s: no event in 500 ms). */
static void test_stream_read_deadline_cleared_restores_the_read_timeout(void **state)
{
    struct fixture *f = *state;
    struct timeval tv = {20, 0};

    pf_clock_fixed_us = 5000000;
    pf_stream_set_read_timeout(f->s, &tv);
    pf_stream_read(f->s, true);
    pf_stream_set_read_deadline(f->s, pf_clock_fixed_us);
    peer_send(f, "hello", 5);
    assert_true(run_until(f, got_5, 10000)); /* now armed with nothing left */
    pf_stream_set_read_deadline(f->s, 0);
    run_until(f, got_event, 500);
    pf_clock_fixed_us = 0;
    assert_int_equal(f->r.n_events, 0);
}

/* A peer that stops reading: the wait for writability times out. */
static void test_stream_write_timeout_fires_when_the_peer_stops_reading(void **state)
{
    struct fixture *f = *state;
    struct timeval tv = {0, 20000};
    static char chunk[1 << 20];

    memset(chunk, 'w', sizeof(chunk));
    pf_stream_set_write_timeout(f->s, &tv);
    for (int i = 0; i < 4; i++)
        evbuffer_add(f->s->out, chunk, sizeof(chunk));
    pf_stream_mark(f->s);
    assert_true(run_until(f, got_event, 10000));
    assert_int_equal(f->r.events[0], PF_STREAM_TIMEOUT);
    assert_int_equal(f->r.writes, 0);
}

static void test_stream_timeout_values_become_common_timeouts(void **state)
{
    struct fixture *f = *state;
    struct timeval tmp;
    const struct timeval *a, *b, *c;

    a = pf_stream_timeout(&f->loop, 1500, &tmp);
    assert_int_equal(tmp.tv_sec, 1);
    assert_int_equal(tmp.tv_usec, 500000);
    b = pf_stream_timeout(&f->loop, 1500, &tmp);
    assert_ptr_equal(a, b); /* one per duration */
    assert_ptr_not_equal(a, &tmp);
    /* the table holds 16 durations; any other is returned as a plain timeval */
    for (unsigned ms = 1; f->loop.n_tmo < 16; ms++)
        pf_stream_timeout(&f->loop, ms, &tmp);
    c = pf_stream_timeout(&f->loop, 99999, &tmp);
    assert_ptr_equal(c, &tmp);
    assert_int_equal(tmp.tv_sec, 99);
    assert_int_equal(tmp.tv_usec, 999000);
    assert_ptr_equal(pf_stream_timeout(&f->loop, 1500, &tmp), a);
}

/* ---- connecting, freeing ---- */

static void test_stream_connect_reports_connected_then_writes(void **state)
{
    struct fixture *f = *state;
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    int lfd = socket(AF_UNIX, SOCK_STREAM, 0);
    int cfd = socket(AF_UNIX, SOCK_STREAM, 0);
    struct pf_stream *c;
    char buf[16];
    int afd;

    /* an abstract address: nothing in the file system */
    snprintf(sa.sun_path + 1, sizeof(sa.sun_path) - 1, "pf-test-stream-%d", (int)getpid());
    assert_int_equal(bind(lfd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    assert_int_equal(listen(lfd, 4), 0);
    c = pf_stream_new(&f->loop, cfd);
    pf_stream_setcb(c, NULL, on_write, on_event, &f->r);
    assert_int_equal(pf_stream_connect(c, (struct sockaddr *)&sa, sizeof(sa)), 0);
    /* output queued while connecting goes out once connected */
    evbuffer_add(c->out, "req", 3);
    pf_stream_mark(c);
    assert_false(c->dirty);
    assert_true(run_until(f, got_write, 10000));
    assert_int_equal(f->r.events[0], PF_STREAM_CONNECTED);
    afd = accept(lfd, NULL, NULL);
    assert_true(afd >= 0);
    assert_int_equal(recv(afd, buf, sizeof(buf), 0), 3);
    assert_memory_equal(buf, "req", 3);
    close(afd);
    close(lfd);
    pf_stream_free(c);
}

static void test_stream_connect_refused_is_an_error(void **state)
{
    struct fixture *f = *state;
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    struct pf_stream *c = pf_stream_new(&f->loop, socket(AF_UNIX, SOCK_STREAM, 0));

    snprintf(sa.sun_path + 1, sizeof(sa.sun_path) - 1, "pf-test-nobody-%d", (int)getpid());
    assert_int_equal(pf_stream_connect(c, (struct sockaddr *)&sa, sizeof(sa)), -ECONNREFUSED);
    pf_stream_free(c);
}

/* A callback may free its stream; the memory stays until the flush ends the batch. */
static void test_stream_free_inside_a_callback_is_deferred(void **state)
{
    struct fixture *f = *state;
    char buf[4];

    f->r.free_in_read = true;
    peer_send(f, "x", 1);
    pf_stream_read(f->s, true);
    f->s = NULL; /* freed by the callback */
    assert_true(run_until(f, got_event_or_read, 10000));
    assert_true(f->r.closed_seen);
    assert_false(f->r.dirty_seen); /* writes to a freed stream are ignored */
    assert_int_equal(f->r.grave, 1);
    assert_int_equal(f->loop.n_grave, 0); /* released by the flush of that batch */
    assert_int_equal(recv(f->peer, buf, sizeof(buf), 0), 0); /* the socket is closed */
}

/* ---- a read's output is written when its callback returns ---- */

/* Readers that pass what they read on to the fixture's stream (the writer). */
struct relay {
    struct fixture *f;
    struct pf_stream *s;
    int peer;
    ssize_t seen_at_peer; /* what the writer's peer could read when this readcb began */
    unsigned reads;
    bool free_self_on_error; /* the writer's error event frees this reader */
};

static struct relay *error_relay;

static void relay_read(struct pf_stream *s, void *arg)
{
    struct relay *r = arg;
    char buf[64];

    r->reads++;
    r->seen_at_peer = r->f->peer >= 0 ? peer_recv_now(r->f, buf, sizeof(buf)) : -1;
    evbuffer_add_buffer(r->f->s->out, s->in);
    pf_stream_mark(r->f->s);
}

static void relay_writer_event(struct pf_stream *s UNUSED, int what, void *arg)
{
    struct fixture *f = arg;

    on_event(s, what, &f->r);
    if (error_relay != NULL && error_relay->free_self_on_error) {
        pf_stream_free(error_relay->s);
        error_relay->s = NULL;
    }
}

static void relay_open(struct fixture *f, struct relay *r)
{
    int sv[2];

    memset(r, 0, sizeof(*r));
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    r->f = f;
    r->s = pf_stream_new(&f->loop, sv[0]);
    r->peer = sv[1];
    pf_stream_setcb(r->s, relay_read, NULL, NULL, r);
}

static void relay_close(struct relay *r)
{
    pf_stream_free(r->s);
    close(r->peer);
}

/*
 * Two readers readable in the same batch: whichever runs second finds the
 * first one's bytes already at the writer's peer (not held to the batch's end).
 */
static void test_stream_read_output_is_written_before_the_next_callback(void **state)
{
    struct fixture *f = *state;
    struct relay a, c;
    char buf[64];
    ssize_t n;

    relay_open(f, &a);
    relay_open(f, &c);
    assert_int_equal(send(a.peer, "AAAA", 4, 0), 4);
    assert_int_equal(send(c.peer, "CC", 2, 0), 2);
    pf_stream_read(a.s, true);
    pf_stream_read(c.s, true);
    /* both are readable before the loop polls: one batch runs both callbacks */
    event_base_loop(f->base, EVLOOP_ONCE);
    assert_int_equal(a.reads, 1);
    assert_int_equal(c.reads, 1);
    /* the first to run saw nothing, the second saw the first's bytes */
    if (a.seen_at_peer > 0) {
        assert_int_equal(a.seen_at_peer, 2);
        assert_int_equal(c.seen_at_peer, -1);
    } else {
        assert_int_equal(a.seen_at_peer, -1);
        assert_int_equal(c.seen_at_peer, 4);
    }
    n = peer_recv_now(f, buf, sizeof(buf));
    assert_int_equal(n, 6 - (a.seen_at_peer > 0 ? a.seen_at_peer : c.seen_at_peer));
    relay_close(&a);
    relay_close(&c);
}

/*
 * The write after a read fails, and the error event frees the reader whose
 * callback produced the output: the reader stays valid memory (the grave)
 * until the batch ends. Run under SANITIZE=1 to catch a use after free.
 */
static void test_stream_read_output_write_error_may_free_the_reader(void **state)
{
    struct fixture *f = *state;
    struct relay a;

    relay_open(f, &a);
    a.free_self_on_error = true;
    error_relay = &a;
    pf_stream_setcb(f->s, on_read, on_write, relay_writer_event, f);
    close(f->peer);
    f->peer = -1;
    assert_int_equal(send(a.peer, "x", 1, 0), 1);
    pf_stream_read(a.s, true);
    event_base_loop(f->base, EVLOOP_ONCE);
    assert_int_equal(a.reads, 1);
    assert_int_equal(f->r.n_events, 1);
    assert_int_equal(f->r.events[0], PF_STREAM_ERROR);
    assert_int_equal(f->s->err, EPIPE);
    assert_null(a.s); /* freed inside the error event */
    error_relay = NULL;
    assert_int_equal(f->loop.n_grave, 0); /* released at the end of that batch */
    close(a.peer);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_stream_reads_into_in_and_calls_readcb, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_stream_does_not_read_when_stopped, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stream_reads_on_while_reads_fill_up, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stream_short_read_is_passed_on_at_once, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_stream_eof_is_an_event_and_stops_reading, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_stream_read_error_is_an_event_with_errno, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_stream_read_error_after_bytes_keeps_its_errno, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_stream_write_error_is_an_event_with_errno, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_stream_marked_writes_wait_for_the_loop_and_coalesce,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_stream_backpressure_waits_for_the_peer_then_resumes,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_stream_park_gives_buffers_back_until_the_next_read,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_stream_freed_while_parked, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stream_output_in_many_pieces_arrives_in_order, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_stream_writes_to_a_pipe, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stream_more_is_pushed_out, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stream_read_timeout_fires_without_input, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_stream_read_timeout_removed_does_not_fire, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_stream_read_timeout_not_fired_by_a_prompt_peer, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_stream_read_timeout_moved_later_waits_for_the_rest,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_stream_read_timeout_common_fires, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stream_read_timeout_moved_earlier_fires, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_stream_read_timeout_moved_later_fires_at_its_end,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_stream_read_deadline_is_not_extended_by_reads, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_stream_read_deadline_cleared_restores_the_read_timeout,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_stream_write_timeout_fires_when_the_peer_stops_reading,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_stream_timeout_values_become_common_timeouts, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_stream_connect_reports_connected_then_writes, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_stream_connect_refused_is_an_error, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stream_read_output_is_written_before_the_next_callback,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_stream_read_output_write_error_may_free_the_reader,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_stream_free_inside_a_callback_is_deferred, setup,
                                        teardown),
    };

    signal(SIGPIPE, SIG_IGN); /* as pilotfish does: a write error is EPIPE */
    return cmocka_run_group_tests_name("stream", tests, NULL, NULL);
}
