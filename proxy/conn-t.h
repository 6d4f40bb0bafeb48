/*
 * A client connection (proxy/http1.c). It owns at most one pf_tx at a time:
 * requests are processed in order, a pipelined request is parsed only when
 * the previous one has ended. Worker thread.
 */
#ifndef PF_CONN_T_H
#define PF_CONN_T_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/queue.h>

#include <event2/event_struct.h>

#include "proxy/chunked.h"
#include "proxy/errors-t.h"
#include "proxy/h1parse.h"
#include "proxy/timer.h"

struct evbuffer;
struct pf_stream;
struct pf_tx;
struct pf_worker;

#define PF_OUT_HIGH_WATER (256 * 1024) /* stop the producer above this */
#define PF_OUT_LOW_WATER  (64 * 1024)  /* resume it below this */
#define PF_IN_SLACK       (64 * 1024)  /* unparsed client input kept beyond a head */

/*
 * Where a client connection is. Input is read only in the two READING
 * states; closing (a flag: it can coexist with any of the first four) makes
 * the connection close once its response is out.
 */
enum pf_conn_state {
    PF_CONN_READING_HEAD = 0, /* parsing: between requests or inside a head */
    PF_CONN_READING_BODY,     /* parsing / de-framing tx's request body */
    PF_CONN_BODY_PAUSED,      /* the body waits: tx not ready for it, or the upstream is full */
    PF_CONN_WAITING,          /* request read (or refused): tx busy, input waits */
    PF_CONN_LINGERING,        /* our side is shut: reading and discarding until EOF */
    PF_CONN_DEAD,             /* closed: freed when no callback is on the stack */
};

struct pf_conn {
    struct pf_worker *w;
    struct pf_stream *s;
    struct pf_h1p_scan scan; /* the request head being read */
    uint32_t head_bytes;     /* bytes of the current head so far (scanned, still in s->in) */
    uint8_t body_mode;       /* PF_BODY_*: how the request body is framed */
    bool is_admin;
    bool is_probe;             /* on the probes listener: read-only admin paths */
    bool head_timed;           /* header_timeout armed for this head */
    uint64_t body_left;        /* Content-Length bytes still to read */
    uint64_t body_deadline_us; /* limits.body_timeout: the body must be in by then (0: none yet) */
    struct pf_chunked chunked; /* chunked decoder state */
    struct evbuffer *body_tmp; /* decoded chunk data on its way to the tx */
    int pending_status;        /* error found while reading a head */
    enum pf_error pending_code;
    unsigned busy; /* callbacks on the stack; free when 0 and dead */
    enum pf_conn_state state;
    bool read_blocked;     /* client reads stopped by backpressure */
    bool processing;       /* conn_process() is on the stack */
    bool closing;          /* close once output is flushed */
    bool linger;           /* unread input may follow: close gently (lingering) */
    uint32_t linger_bytes; /* discarded while lingering */
    struct pf_tx *tx;
    struct pf_timer timer; /* header / body / idle timeout (on w->sloop.timers) */
    char client[40];       /* peer address without port (IPv6 text is at most 39 bytes) */
    TAILQ_ENTRY(pf_conn) link;
};

#endif /* PF_CONN_T_H */
