/*
 * A worker thread (one event loop), the configuration snapshot as it uses it
 * and its mailbox. Nothing here is touched by another thread except the
 * mailbox (its own lock; its eventfd wakes the worker) and the atomics, which say so.
 */
#ifndef PF_WORKER_T_H
#define PF_WORKER_T_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/queue.h>

#include "proxy/errors-t.h"
#include "proxy/stream.h"

struct event;
struct event_base;
struct evbuffer;
struct pf_config;
struct pf_listener;
struct pf_pipes;
struct pf_pool;
struct pf_server;
struct pf_stats;
struct pf_tx;
struct pf_worker;

/* A configuration snapshot as one worker uses it: the snapshot + wstates. */
struct pf_wconf {
    struct pf_config *cfg; /* one reference */
    void **wstates;        /* one per cfg->filters[i] */
    unsigned refs;         /* worker-local: the worker + its transactions */
};

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
    TAILQ_HEAD(pf_tx_list, pf_tx) bg_txs; /* background transactions (pf_tx_background) */
    struct pf_pool *
        *pools; /* indexed by endpoint id; each allocated once (TAILQ heads must not move) */
    unsigned n_pools;
    struct pf_pipes *pipes; /* splice pipes (proxy/pipe.h), made at the first spliced body */
    struct evbuffer *alog;  /* access log lines not yet handed to the writer */
    struct event *tick;     /* 100 ms housekeeping: log flush, pool sweep */
    struct event *mail_ev;  /* reads mail_fd */
    int mail_fd;            /* eventfd: written by pf_server_mail from any thread */
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

#endif /* PF_WORKER_T_H */
