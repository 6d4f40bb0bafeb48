/*
 * Internal types of the core, for the files that want them all: each lives in
 * its module's -t.h; the upstream side (pf_pool, pf_upconn) is defined here.
 * Filters never include this file (they see proxy/filter.h).
 *
 * Ownership, per worker thread (nothing here is touched by another thread,
 * except the mailbox, which has its own lock):
 *   pf_worker owns its pf_conns, its upstream pools and its pf_wconfs.
 *   pf_conn owns at most one pf_tx at a time.
 *   pf_tx owns its arena; everything per-request lives in it.
 *   pf_upconn is owned by its pool while idle and by its tx while busy.
 */
#ifndef PF_CORE_H
#define PF_CORE_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/queue.h>

#include <event2/event.h>
#include <event2/event_struct.h>
#include <http_parser.h>

#include "proxy/chunked.h"
#include "proxy/conf.h"
#include "proxy/conn-t.h"
#include "proxy/errors-t.h"
#include "proxy/filter.h"
#include "proxy/hdrs-t.h"
#include "proxy/head-t.h"
#include "proxy/stream.h"
#include "proxy/tx-t.h"
#include "proxy/worker-t.h"

struct bufferevent;
struct evconnlistener;

/* Idle keep-alive connections of one endpoint on one worker (LIFO). */
struct pf_upconn;
TAILQ_HEAD(pf_upconn_list, pf_upconn);
struct pf_pool {
    struct pf_upconn_list idle; /* most recently used first */
    unsigned n_idle;
    unsigned n_active; /* busy connections of this worker */
};

struct pf_upconn {
    struct pf_worker *w;
    struct pf_stream *s;
    http_parser parser;
    struct pf_head head;
    struct evbuffer *body; /* response body bytes parsed, not yet passed on */
    unsigned endpoint_id;
    struct pf_tx *tx;          /* NULL while idle */
    uint64_t expire_us;        /* created + max_lifetime */
    uint64_t idle_deadline_us; /* while idle: closed after this */
    unsigned busy;             /* callbacks on the stack */
    bool dead;                 /* free when busy drops to 0 */
    bool connected;
    bool reused;               /* served a request before this one */
    bool got_bytes;            /* any response byte for the current request */
    bool head_ready;           /* response head parsed, not yet handled */
    bool msg_done;             /* response complete, not yet handled */
    bool in_1xx;               /* parsing an interim response */
    bool req_chunked;          /* request body goes chunked */
    bool req_sent;             /* whole request written */
    bool read_blocked;         /* stopped by the client's backpressure */
    bool eof_pending;          /* the upstream closed while reads were blocked */
    bool head_lf;              /* the parser left the head's final LF unread */
    uint8_t body_mode;         /* PF_BODY_*: how the response body is framed */
    uint64_t body_left;        /* Content-Length bytes still to come */
    struct pf_chunked chunked; /* chunked decoder state */
    TAILQ_ENTRY(pf_upconn) link;
};

#endif /* PF_CORE_H */
