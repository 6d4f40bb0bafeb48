/*
 * A buffered socket for one worker's event loop: a persistent read event, and
 * writes done directly when a callback has finished (the write event is
 * registered only when the socket would block).
 *
 * libevent's bufferevent toggles EV_WRITE in epoll around every response and
 * asks the kernel for FIONREAD before every read: four epoll_ctl and two ioctl
 * calls per proxied request, about half of the syscalls on the data path.
 * pf_stream keeps the same shape (input and output evbuffers, read / write /
 * event callbacks, a low watermark) without them.
 *
 * Output is written when the callback that produced it has returned (writers
 * call pf_stream_mark()): right after a read callback, so that the bytes it
 * passed on are still in cache, and by pf_stream_flush_all() at the end of
 * the batch for output made elsewhere. A head and a body added separately in
 * one callback go out in one writev. Worker thread only.
 */
#ifndef PF_STREAM_H
#define PF_STREAM_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/queue.h>
#include <sys/socket.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/event_struct.h>

#include "proxy/timer.h"

struct evbuffer;
struct pf_stream;

enum {
    PF_STREAM_EOF = 0x01,       /* the peer closed its side */
    PF_STREAM_ERROR = 0x02,     /* a socket error (errno is saved in err) */
    PF_STREAM_TIMEOUT = 0x04,   /* no bytes read within the read timeout */
    PF_STREAM_CONNECTED = 0x08, /* a connect() completed */
};

typedef void (*pf_stream_cb)(struct pf_stream *s, void *arg);
typedef void (*pf_stream_event_cb)(struct pf_stream *s, int what, void *arg);

STAILQ_HEAD(pf_stream_queue, pf_stream);

/*
 * A set of callbacks (pf_stream_setcb). The few distinct sets of a loop are
 * kept once, in the loop; a stream holds the index of its set (one byte
 * instead of three pointers: client connections are many).
 */
struct pf_stream_cbs {
    pf_stream_cb readcb;
    pf_stream_cb writecb;
    pf_stream_event_cb eventcb;
};

#define PF_STREAM_CBS_MAX 32

/* Per event_base state: the list of streams with output to write. */
struct pf_stream_loop {
    struct event_base *base;
    struct event flush_ev;        /* runs after the batch of callbacks that wrote */
    struct pf_stream_queue dirty; /* a freed stream stays until the next flush, which skips it */
    struct event push_ev;         /* pushes what MSG_MORE left in the kernel (PF_STREAM_PUSH_MS) */
    struct pf_stream **corked;    /* streams whose last write had MSG_MORE (stream.c) */
    unsigned n_corked;
    unsigned cap_corked;
    bool push_armed;
    struct pf_stream **grave; /* freed, released at the next flush */
    unsigned n_grave;
    unsigned cap_grave;
    struct {
        uint64_t ms;
        const struct timeval *tv;
    } tmo[16]; /* libevent common timeouts by duration */
    unsigned n_tmo;
    struct pf_stream_cbs cbs[PF_STREAM_CBS_MAX]; /* [0]: none */
    unsigned n_cbs;
    bool scheduled;
    struct pf_timers timers; /* client connections' timers (proxy/timer.h) */
};

struct pf_stream {
    struct pf_stream_loop *loop;
    int fd;
    uint8_t err;         /* errno of the last PF_STREAM_ERROR */
    uint8_t err_pending; /* a read error met after bytes were read: reported next time */
    uint16_t cork_at;    /* the last write had MSG_MORE: its place + 1 in loop->corked */
    struct event rev;
    struct event *wev;    /* made at the first wait for writability (wev_get) */
    struct evbuffer *in;  /* NULL while parked (pf_stream_park) */
    struct evbuffer *out; /* NULL while parked */
    void *arg;
    struct pf_stream_tmo *tmo; /* read timeout and deadline (lazy timer), if ever set */
    uint32_t wto_ms;           /* longest wait for writability, if has_wto */
    uint8_t cbs; /* its callbacks: loop->cbs[cbs] (the writecb: a flush wrote everything queued) */
    /* two bytes of flags: client connections are many */
    bool has_wto : 1;
    bool big_reads : 1; /* the last read filled its buffer */
    bool reading : 1;   /* read event wanted */
    bool connecting : 1;
    bool wev_added : 1;
    bool dirty : 1;
    bool closed : 1; /* freed while its callbacks ran: ignore */
    bool raw : 1;    /* readability goes to readcb unread: it reads the socket itself (splice) */
    bool more : 1;   /* more output follows soon: writes carry MSG_MORE (pf_stream_set_more) */
    STAILQ_ENTRY(pf_stream) dirty_link;
};

/* A stream's last write with MSG_MORE is pushed out after at most this long. */
#define PF_STREAM_PUSH_MS 10

/* Set up the loop state of base. */
void pf_stream_loop_init(struct pf_stream_loop *l, struct event_base *base);

/*
 * A timeval for a timeout of ms on this loop. The few durations of a
 * configuration become libevent "common timeouts": adding and removing such a
 * timer is O(1) instead of a heap operation. Any other duration still works.
 */
const struct timeval *pf_stream_timeout(struct pf_stream_loop *l, uint64_t ms, struct timeval *tmp);

/* Release the loop state (the loop has stopped). */
void pf_stream_loop_fini(struct pf_stream_loop *l);

/* Write the output of every stream that has some (also called by the loop). */
void pf_stream_flush_all(struct pf_stream_loop *l);

/* A new stream on connected or listening-accepted fd (made non-blocking). */
struct pf_stream *pf_stream_new(struct pf_stream_loop *l, int fd);

/* Connect fd's stream to sa; completion is PF_STREAM_CONNECTED or ERROR. 0 or -errno. */
int pf_stream_connect(struct pf_stream *s, const struct sockaddr *sa, socklen_t len);

void pf_stream_setcb(struct pf_stream *s, pf_stream_cb readcb, pf_stream_cb writecb,
                     pf_stream_event_cb eventcb, void *arg);

/* Start / stop reading. */
void pf_stream_read(struct pf_stream *s, bool on);

/*
 * Read inactivity timeout (NULL: none), counted from now and from each
 * read. Its timer is lazy: setting, moving or removing a timeout costs no
 * timer operation unless it now ends earlier than the armed timer.
 */
void pf_stream_set_read_timeout(struct pf_stream *s, const struct timeval *tv);

/*
 * A deadline (pf_now_us() time; 0: none) for the read timeout: while it is
 * set, the read timeout ends no later than it, and reads do not extend it.
 * Setting one takes effect at the next read or read timeout set (set it
 * with a read timeout); clearing it goes back to the plain read timeout.
 */
void pf_stream_set_read_deadline(struct pf_stream *s, uint64_t us);

/*
 * Longest wait for the socket to take more output (NULL: none); past it the
 * event callback gets PF_STREAM_TIMEOUT (a peer that stopped reading).
 */
void pf_stream_set_write_timeout(struct pf_stream *s, const struct timeval *tv);

/* Close the socket and free the stream. */
void pf_stream_free(struct pf_stream *s);

/*
 * more: the output written from now on is not the last of its message and
 * more will follow soon (a Content-Length body still coming from upstream),
 * so writes carry MSG_MORE: the kernel holds a partial TCP segment back
 * until the next write fills it, instead of sending one segment per write.
 * What is held is pushed out by the next write without it, by a flush after
 * more is cleared, or PF_STREAM_PUSH_MS after the write at the latest.
 */
void pf_stream_set_more(struct pf_stream *s, bool more);

/* s->out has new data: write it when the current callback has returned. */
void pf_stream_mark(struct pf_stream *s);

/*
 * Report writability through writecb, within the write timeout (a caller
 * that writes the socket itself, as splice does, found it full).
 */
void pf_stream_wait_write(struct pf_stream *s);

/* Write what can be written now. */
void pf_stream_flush(struct pf_stream *s);

/*
 * Give the stream's empty buffers back to the worker's pool: in and out are
 * NULL until pf_stream_unpark(), which the next readable event does. A no-op
 * unless both are empty and no write is pending. For idle connections.
 */
void pf_stream_park(struct pf_stream *s);

/* Take buffers again after pf_stream_park() (a no-op otherwise). */
void pf_stream_unpark(struct pf_stream *s);

/* Bytes waiting in s->out (0 while parked). */
static inline size_t pf_stream_out_len(const struct pf_stream *s)
{
    return s->out != NULL ? evbuffer_get_length(s->out) : 0;
}

#endif /* PF_STREAM_H */
