/*
 * A transaction: one request and its response (proxy/tx.c), its phases and
 * how its bodies are framed. It owns its arena; everything per-request lives
 * in it. Worker thread.
 */
#ifndef PF_TX_T_H
#define PF_TX_T_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/queue.h>

#include <event2/event_struct.h>
#include <http_parser.h>

#include "proxy/errors-t.h"
#include "proxy/filter.h"
#include "proxy/hdrs-t.h"

struct evbuffer;
struct pf_arena;
struct pf_config;
struct pf_conn;
struct pf_route;
struct pf_slot;
struct pf_upconn;
struct pf_upstream_conf;
struct pf_wconf;
struct pf_worker;

#define PF_ARENA_CHUNK 8192 /* arena chunk of a transaction */

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
    bool ids_due; /* pf_tx_start ran: the ids above are made when needed (pf_tx_ids) */

    /* response */
    int status;
    struct pf_hdrs resp;
    struct evbuffer *reply; /* body of a pf_tx_reply() */
    const char *resp_raw;   /* pf_tx_resp_raw(): resp.v[0, resp_raw_n) serialised, or NULL */
    size_t resp_raw_len;
    unsigned resp_raw_n;
    enum pf_error error; /* error code for the log, or PF_ERR_NONE */
    enum pf_out_mode out_mode;
    bool head_sent;
    bool resp_done;     /* last byte handed to the client buffer */
    bool close_after;   /* close the connection after this response */
    bool reply_open;    /* pf_tx_reply_stream(): the reply's body is still coming */
    bool keep_fetching; /* pf_tx_keep_fetching(): a client abort detaches, not aborts */
    bool unpaced;       /* pf_tx_unpace(): upstream reads ignore the client's backpressure */
    bool detached;      /* ... and it did: in bg_txs until the response is read */
    uint64_t bytes_out; /* response bytes toward the client */

    /* filter chain */
    struct pf_slot *slots; /* one per route filter */
    unsigned n_filters;
    unsigned next_filter; /* next on_request to run */
    unsigned n_ran;       /* on_request ran for [0, n_ran) */
    unsigned out_from;    /* on_response/on_body for [0, out_from) */
    bool has_body_filters;
    bool is_admin;
    bool is_probe;            /* from its connection */
    struct evbuffer *req_buf; /* admin: the request body, bounded; proxy: body being buffered */
    bool req_buffering;       /* limits.request_buffering: body read before connecting */
    /* this tx's pf_tx_ref() slot + 1, 0 when none */
    uint32_t ref_slot;
    bool in_chain;      /* inside pf_chain_request() (resume is deferred) */
    uint8_t in_filters; /* inside pf_chain_response() or pf_chain_body(): a failure waits */
    bool fail_pending;  /* pf_tx_fail() was called from inside the chain: answered after it */
    int fail_status;    /* ... its status and code */
    enum pf_error fail_code;
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
    unsigned retries;          /* attempts made by the retry policy (retries:) */
    uint64_t tried;            /* endpoints tried, pf_lb_tried bits (balancer-t.h) */
    uint64_t br_ticket;        /* the attempt's half-open trial permit (breaker.h), 0: none */
    struct evbuffer *req_keep; /* the whole request body, kept for a retry (retry.c) */
    struct evbuffer *req_tee;  /* a copy of the body streaming upstream, while small enough */
    bool retry_held;           /* holds a place in the retry budget */
    bool stale_retried;        /* the retry of a dead pooled connection was used */
    bool req_no_splice;        /* no pipe could be had for the request body: it is copied */
    enum pf_error retry_code;  /* a retry's failed try's error, answered if the retry cannot go */
    int up_status;             /* status of the upstream's response head, 0 when none came */
    uint64_t t_start;          /* us */
    uint64_t t_up_start;
    uint64_t t_up_head;
    struct event timer; /* connect / request timeout */
    bool timer_set;

    /* a background transaction (pf_tx_background): no client, ever */
    bool background;
    const char *bg_client;      /* the address of the client whose request it copies */
    struct event bg_start;      /* starts its chain from the loop */
    TAILQ_ENTRY(pf_tx) bg_link; /* in its worker's bg_txs */
};

#endif /* PF_TX_T_H */
