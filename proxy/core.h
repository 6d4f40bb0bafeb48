/*
 * Internal types of the core: workers, client connections, transactions and
 * upstream connections. Filters never include this file (they see proxy/filter.h).
 *
 * Ownership, per worker thread (nothing here is touched by another thread,
 * except the mailbox, which has its own lock):
 *   pf_worker owns its pf_conns, its upstream pools and its pf_wconfs.
 *   pf_conn owns at most one pf_tx at a time (requests are processed in order;
 *   a pipelined request is parsed only when the previous one has ended).
 *   pf_tx owns its arena; everything per-request lives in it.
 *   pf_upconn is owned by its pool while idle and by its tx while busy.
 */
#ifndef PF_CORE_H
#define PF_CORE_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/queue.h>

#include <event2/event.h>
#include <event2/event_struct.h>
#include <http_parser.h>

#include "proxy/chunked.h"
#include "proxy/conf.h"
#include "proxy/filter.h"
#include "proxy/stream.h"

struct bufferevent;
struct evconnlistener;
struct pf_listener;
struct pf_server;
struct pf_stats;

#define PF_OUT_HIGH_WATER (256 * 1024) /* stop the producer above this */
#define PF_OUT_LOW_WATER  (64 * 1024)  /* resume it below this */
#define PF_ARENA_CHUNK    8192
#define PF_IN_SLACK       (64 * 1024) /* unparsed client input kept beyond a head */

/* Errors pilotfish makes itself (pilotfish_errors_total{error}). */
enum pf_error {
    PF_ERR_BAD_REQUEST = 0,
    PF_ERR_REQUEST_TIMEOUT,
    PF_ERR_BODY_TOO_LARGE,
    PF_ERR_URI_TOO_LONG,
    PF_ERR_HEADERS_TOO_LARGE,
    PF_ERR_NO_ROUTE,
    PF_ERR_CONNECT_FAILED,
    PF_ERR_RESET,
    PF_ERR_BAD_RESPONSE,
    PF_ERR_TIMEOUT,
    PF_ERR_FILTER_FAILED,
    PF_ERR_RATE_LIMITED,
    PF_ERR_CIRCUIT_OPEN,
    PF_ERR_NO_HEALTHY_UPSTREAM,
    PF_ERR_OVERFLOW,
    PF_ERR_OTHER,
    PF_ERR_MAX,
};

/* Headers the core acts on, recognised once when a head is parsed. */
enum pf_hdr_id {
    PF_H_OTHER = 0,
    PF_H_CONNECTION,
    PF_H_KEEP_ALIVE,
    PF_H_PROXY_CONNECTION,
    PF_H_TE,
    PF_H_TRAILER,
    PF_H_TRANSFER_ENCODING,
    PF_H_UPGRADE, /* the last hop-by-hop one */
    PF_H_EXPECT,
    PF_H_CONTENT_LENGTH,
    PF_H_HOST,
    PF_H_X_FORWARDED_FOR,
    PF_H_X_FORWARDED_PROTO,
    PF_H_X_FORWARDED_HOST,
    PF_H_X_REQUEST_ID,
    PF_H_TRACEPARENT,
};

#define PF_H_IS_HOP(id) ((id) >= PF_H_CONNECTION && (id) <= PF_H_UPGRADE)

/* One header; name and value are NUL-terminated. */
struct pf_hdr {
    const char *name;
    const char *value;
    uint32_t name_len;
    uint32_t value_len;
    enum pf_hdr_id id;
};

struct pf_hdrs {
    struct pf_hdr *v;
    unsigned n;
    unsigned cap;
};

/*
 * Incremental assembly of a message head from http-parser callbacks, which
 * may deliver a name or value in several pieces across TCP reads. Names and
 * values are stored NUL-terminated in buf; offsets stay valid while it grows.
 */
struct pf_head {
    char *buf; /* url \0 name \0 value \0 ... */
    uint32_t len;
    uint32_t cap;
    uint32_t url_len;
    struct pf_head_ent {
        uint32_t name_off;
        uint32_t name_len;
        uint32_t value_off;
        uint32_t value_len;
    } * ent;
    unsigned n; /* headers started */
    unsigned cap_ent;
    uint8_t last; /* 0 none, 1 url, 2 field, 3 value */
};

/* A configuration snapshot as one worker uses it: the snapshot + wstates. */
struct pf_wconf {
    struct pf_config *cfg; /* one reference */
    void **wstates;        /* one per cfg->filters[i] */
    unsigned refs;         /* worker-local: the worker + its transactions */
};

struct pf_pool;
struct pf_upconn;

struct pf_conn;
TAILQ_HEAD(pf_conn_list, pf_conn);

struct pf_mail {
    void (*fn)(struct pf_worker *w, void *arg);
    void *arg;
    struct pf_mail *next;
};

/* One entry of a worker's pf_tx_ref table (proxy/txref.c). */
struct pf_txref_slot {
    struct pf_tx *tx;   /* NULL while free */
    uint32_t gen;       /* bumped when the transaction ends; never 0 */
    uint32_t next_free; /* free list: next free index + 1, 0 ends it */
};

struct pf_worker {
    unsigned index; /* 0..count-1; the admin loop is count */
    unsigned count; /* number of proxy workers */
    bool is_admin;  /* the main thread's admin loop */
    struct event_base *base;
    struct pf_stream_loop sloop; /* deferred writes of this loop */
    pthread_t thread;
    struct pf_server *srv;
    struct pf_wconf *wc;           /* current snapshot */
    struct pf_listener *listeners; /* proxy/listen.h */
    unsigned n_listeners;
    bool accepting;     /* listeners enabled */
    bool accept_paused; /* for a moment after an accept() error */
    _Atomic bool full;  /* atomic: paused, limits.max_connections reached (process-wide) */
    struct pf_conn_list conns;
    unsigned n_conns;
    struct pf_pool *
        *pools; /* indexed by endpoint id; each allocated once (TAILQ heads must not move) */
    unsigned n_pools;
    struct evbuffer *alog; /* access log lines not yet handed to the writer */
    struct event *tick;    /* 100 ms housekeeping: log flush, pool sweep */
    struct event *mail_ev;
    pthread_mutex_t mail_lock;
    struct pf_mail *mail_head; /* guarded by mail_lock */
    struct pf_mail *mail_tail; /* guarded by mail_lock */
    bool draining;
    struct event *accept_retry;          /* accepting again after an accept() error */
    uint64_t accept_err_logged;          /* when it was last logged (us) */
    uint64_t rng[2];                     /* xorshift128+ state */
    uint64_t rr;                         /* round-robin position */
    _Atomic uint64_t errors[PF_ERR_MAX]; /* pf_counter_add by this worker, summed by scrapes */
    uint64_t requests;                   /* transactions ended (tests, debugging) */
    _Atomic uint64_t heartbeat;          /* atomic: last tick, for /live */
    struct pf_stats *stats;              /* metric series of this worker (proxy/stats.h) */

    /* pf_tx_ref() slots: they outlive the transactions (proxy/txref.c) */
    struct pf_txref_slot *txrefs;
    uint32_t n_txrefs;
    uint32_t cap_txrefs;
    uint32_t txref_free; /* first free slot + 1, 0 when none */
};

enum pf_body_mode {
    PF_BODY_NONE = 0,
    PF_BODY_LENGTH,
    PF_BODY_CHUNKED,
    PF_BODY_CLOSE, /* responses: until the upstream closes */
};

enum pf_out_mode {
    PF_OUT_NONE = 0, /* no body (HEAD, 1xx, 204, 304) */
    PF_OUT_LENGTH,   /* Content-Length passed through */
    PF_OUT_CHUNKED,  /* HTTP/1.1 client, length unknown */
    PF_OUT_CLOSE,    /* HTTP/1.0 client, length unknown: close-delimited */
};

enum pf_tx_phase {
    PF_TX_HEAD = 0, /* request head being handled */
    PF_TX_FILTERS,  /* on_request chain running or paused */
    PF_TX_UPSTREAM, /* waiting for / reading the upstream response */
    PF_TX_REPLYING, /* response head sent, body streaming */
    PF_TX_DONE,     /* response complete */
};

struct pf_tx {
    struct pf_arena *arena;
    struct pf_worker *w;
    struct pf_conn *conn; /* NULL once the client has gone */
    struct pf_wconf *wc;
    const struct pf_config *cfg;
    const struct pf_route *route;
    const struct pf_upstream_conf *up;
    enum pf_tx_phase phase;

    /* request */
    const char *method;
    enum http_method method_id;
    const char *url;
    unsigned short http_major;
    unsigned short http_minor;
    struct pf_hdrs req;
    const char *host;      /* Host header or NULL */
    bool host_from_target; /* host is the absolute-form target's authority */
    uint64_t req_length;   /* Content-Length, when req_has_length */
    bool req_has_length;
    bool req_chunked;
    bool req_has_body;
    bool req_done; /* whole request read */
    bool expect_continue;
    bool sent_continue;
    bool client_keepalive;
    uint64_t body_in; /* request body bytes read */
    uint64_t head_in; /* request head bytes read */
    const char *request_id;
    char traceparent[64];
    char trace_id[33];

    /* response */
    int status;
    struct pf_hdrs resp;
    struct evbuffer *reply; /* body of a pf_tx_reply() */
    const char *error;      /* error code for the log, or NULL */
    enum pf_out_mode out_mode;
    bool head_sent;
    bool resp_done;     /* last byte handed to the client buffer */
    bool close_after;   /* close the connection after this response */
    uint64_t bytes_out; /* response bytes toward the client */

    /* filter chain */
    struct pf_slot *slots; /* one per route filter */
    unsigned n_filters;
    unsigned next_filter; /* next on_request to run */
    unsigned n_ran;       /* on_request ran for [0, n_ran) */
    unsigned out_from;    /* on_response/on_body for [0, out_from) */
    bool has_body_filters;
    bool is_admin;
    struct evbuffer *req_buf; /* admin: the request body, bounded; proxy: body being buffered */
    bool req_buffering;       /* limits.request_buffering: body read before connecting */
    /* this tx's pf_tx_ref() slot + 1, 0 when none */
    uint32_t ref_slot;
    bool in_chain;       /* inside pf_chain_request() (resume is deferred) */
    bool resume_pending; /* pf_tx_resume() was called from inside the chain */
    enum pf_verdict resume_verdict;
    struct evbuffer *body_a; /* scratch for on_body stages */
    struct evbuffer *body_b;
    uint8_t *slot_state; /* enum pf_slot_state of each slot (proxy/chain.h) */

    /* upstream */
    struct pf_upconn *uc;
    unsigned endpoint_id;
    const char *endpoint; /* address text for logs */
    unsigned attempts;
    uint64_t t_start; /* us */
    uint64_t t_up_start;
    uint64_t t_up_head;
    struct event timer; /* connect / request timeout */
    bool timer_set;
};

struct pf_conn {
    struct pf_worker *w;
    struct pf_stream *s;
    http_parser parser;
    struct pf_head head;
    uint32_t head_bytes;       /* bytes of the current head so far (scanned) */
    uint32_t head_fed;         /* of those, bytes the parser consumed */
    uint8_t body_mode;         /* PF_BODY_*: how the request body is framed */
    uint64_t body_left;        /* Content-Length bytes still to read */
    uint64_t body_deadline_us; /* limits.body_timeout: the body must be in by then (0: none yet) */
    struct pf_chunked chunked; /* chunked decoder state */
    struct evbuffer *body_tmp; /* decoded chunk data on its way to the tx */
    char ver[9];               /* last bytes of the request line (version check) */
    bool first_done;           /* the request line has been checked */
    uint8_t scan;              /* head scanner state (bare LF, obs-fold, end) */
    bool line_used;            /* the current head line has bytes */
    bool seen_line;            /* the request line has started */
    int pending_status;        /* error found inside a parser callback */
    const char *pending_code;
    unsigned busy;         /* callbacks on the stack; free when 0 and dead */
    bool msg_complete;     /* parser reached message_complete for tx */
    bool parse_paused;     /* parser stopped until the tx lets it go on */
    bool read_blocked;     /* client reads stopped by backpressure */
    bool processing;       /* conn_process() is on the stack */
    bool closing;          /* close once output is flushed */
    bool linger;           /* unread input may follow: close gently (lingering) */
    bool lingering;        /* our side is shut: reading and discarding until EOF */
    uint32_t linger_bytes; /* discarded while lingering */
    bool is_admin;
    bool dead;
    struct pf_tx *tx;
    struct event timer; /* header / idle timeout */
    char client[48];    /* peer address without port */
    TAILQ_ENTRY(pf_conn) link;
};

#include "proxy/upstream/upconn-t.h" /* upstream connection types */

#endif /* PF_CORE_H */
