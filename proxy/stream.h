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

#include <event2/event.h>
#include <event2/event_struct.h>

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

TAILQ_HEAD(pf_stream_list, pf_stream);

/* Per event_base state: the list of streams with output to write. */
struct pf_stream_loop {
    struct event_base *base;
    struct event flush_ev; /* runs after the batch of callbacks that wrote */
    struct pf_stream_list dirty;
    struct event push_ev;         /* pushes what MSG_MORE left in the kernel (PF_STREAM_PUSH_MS) */
    struct pf_stream_list corked; /* streams whose last write had MSG_MORE */
    bool push_armed;
    struct pf_stream **grave; /* freed, released at the next flush */
    unsigned n_grave;
    unsigned cap_grave;
    struct {
        uint64_t ms;
        const struct timeval *tv;
    } tmo[16]; /* libevent common timeouts by duration */
    unsigned n_tmo;
    bool scheduled;
};

struct pf_stream {
    struct pf_stream_loop *loop;
    int fd;
    int err;         /* errno of the last PF_STREAM_ERROR */
    int err_pending; /* a read error met after bytes were read: reported next time */
    struct event rev;
    struct event *wev; /* made at the first wait for writability (wev_get) */
    struct evbuffer *in;
    struct evbuffer *out;
    pf_stream_cb readcb;
    pf_stream_cb writecb; /* a flush wrote everything queued (backpressure may resume) */
    pf_stream_event_cb eventcb;
    void *arg;
    struct timeval rto;        /* read inactivity timeout, if has_rto */
    struct timeval wto;        /* longest wait for writability, if has_wto */
    uint64_t read_deadline_us; /* pf_stream_set_read_deadline; 0: none */
    bool has_rto;
    bool has_wto;
    bool rto_cut;   /* the read event is armed up to the deadline, not with rto */
    bool big_reads; /* the last read filled its buffer */
    bool reading;   /* read event wanted */
    bool connecting;
    bool wev_added;
    bool dirty;
    bool closed; /* freed while its callbacks ran: ignore */
    bool more;   /* more output follows soon: writes carry MSG_MORE (pf_stream_set_more) */
    bool corked; /* the last write had MSG_MORE: on the loop's corked list */
    bool raw;    /* readability goes to readcb unread: it reads the socket itself (splice) */
    TAILQ_ENTRY(pf_stream) dirty_link;
    TAILQ_ENTRY(pf_stream) cork_link;
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
 * Read inactivity timeout (NULL: none). Changing one timeout for another
 * costs no syscall; removing it does (epoll_ctl twice): keep one set.
 */
void pf_stream_set_read_timeout(struct pf_stream *s, const struct timeval *tv);

/*
 * A deadline (pf_now_us() time; 0: none) for the read timeout: while it is
 * set, the read event is re-armed after each read with what is left until
 * it, instead of the whole read timeout, so that reads do not extend it.
 * Setting one does not re-arm the event: set it with a read timeout that
 * ends no later. Clearing it goes back to the plain read timeout; a stream
 * that has not read since it was set costs no event operation.
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

#endif /* PF_STREAM_H */
