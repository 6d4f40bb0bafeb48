/*
 * Upstream connection and pool types (proxy/upstream/). A pf_upconn is owned
 * by its worker's pool while idle and by its transaction while busy.
 */
#ifndef PF_UPSTREAM_UPCONN_T_H
#define PF_UPSTREAM_UPCONN_T_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/queue.h>

#include "proxy/chunked.h"
#include "proxy/h1parse.h"
#include "proxy/head-t.h"
#include "proxy/pipe.h"
#include "proxy/stream.h"

/* Idle keep-alive connections of one endpoint on one worker (LIFO). */
struct pf_upconn;
TAILQ_HEAD(pf_upconn_list, pf_upconn);
struct pf_pool {
    struct pf_upconn_list idle; /* most recently used first */
    unsigned n_idle;
    unsigned n_active;  /* busy connections of this worker */
    int64_t lb_current; /* smooth weighted round_robin: this worker's current weight */
};

/*
 * Where a connection is in its life. The request and the response overlap
 * (an upstream may answer before the body is in), so the request side keeps
 * a flag of its own (req_sent) and the state follows the response.
 */
enum pf_upconn_state {
    PF_UC_CONNECTING = 0, /* connect() in progress, a tx attached */
    PF_UC_IDLE,           /* in a pool, no tx */
    PF_UC_SENDING,        /* connected, the request is being written */
    PF_UC_WAITING_HEAD,   /* the whole request is written, no final head yet */
    PF_UC_READING_BODY,   /* the head went to the tx, the body is de-framed */
    PF_UC_DONE,           /* the response is complete, not yet handled */
    PF_UC_CLOSED,         /* closed: freed when busy drops to 0 */
};

struct pf_upconn {
    struct pf_worker *w;
    struct pf_stream *s;
    struct pf_h1p_rscan rscan; /* the response head being read */
    struct pf_head head;       /* its bytes */
    struct evbuffer *body;     /* response body bytes parsed, not yet passed on */
    unsigned endpoint_id;
    struct pf_tx *tx;          /* NULL while idle */
    uint64_t expire_us;        /* created + max_lifetime */
    uint64_t idle_deadline_us; /* while idle: closed after this */
    unsigned busy;             /* callbacks on the stack */
    enum pf_upconn_state state;
    bool reused;               /* served a request before this one */
    bool got_bytes;            /* any response byte for the current request */
    bool head_ready;           /* response head parsed, not yet handled */
    bool resp_bad;             /* the response head is malformed (502) */
    bool resp_keepalive;       /* the final head lets the connection be reused */
    uint16_t status;           /* of the final head */
    bool req_chunked;          /* request body goes chunked */
    bool req_sent;             /* whole request written */
    bool read_blocked;         /* stopped by the client's backpressure */
    bool eof_pending;          /* the upstream closed while reads were blocked */
    bool pending;              /* counted in its endpoint's br.pending until connected */
    uint64_t t_attempt_us;     /* when the current attempt started (the breaker's durations) */
    uint8_t body_mode;         /* PF_BODY_*: how the response body is framed */
    uint64_t body_left;        /* Content-Length bytes still to come */
    struct pf_chunked chunked; /* chunked decoder state */
    struct pf_pipe *pipe;      /* while splicing the body (proxy/upstream/upsplice.c) */
    bool splice_want; /* the body may be spliced once the bytes read with the head are out */
    bool splicing;    /* the body moves with splice: uc->s is raw */
    bool splice_eof;  /* splicing: the upstream closed */
    struct pf_pipe *req_pipe; /* while the request body moves with splice (upsplice.c) */
    TAILQ_ENTRY(pf_upconn) link;
};

#endif /* PF_UPSTREAM_UPCONN_T_H */
