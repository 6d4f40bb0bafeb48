/*
 * proxy/filter.h: the whole contract between proxy/chain.c and filters/.
 *
 * State lifetimes, longest first:
 *  - pstate (process state): made by init_process on the main thread when a
 *    snapshot that uses the filter is about to be published, shared by every
 *    worker (the filter does its own locking or atomics). A reload hands the
 *    running snapshot's pstate to the new one when reuse_process(old conf,
 *    new conf) says it still fits, so rate-limit buckets, a cache store or
 *    breaker state outlive the reload; otherwise the new snapshot gets a new
 *    one. fini_process runs once no snapshot holds it (the last transaction
 *    of the last such snapshot has ended), on whichever thread drops that
 *    snapshot. pstate is NULL in `pilotfish -t` and for filters without
 *    init_process.
 *  - conf: parsed once per configuration snapshot, read-only, shared by all
 *    workers, freed with the snapshot.
 *  - wstate: one per worker thread and snapshot, no locks.
 *  - ctx: one per transaction, ctx_size zeroed bytes from the arena.
 * Counters that must survive reloads belong in per-thread cells (see
 * pf_counter_set in proxy/stats.h), rendered by the metrics hook.
 *
 * Chain order: on_request runs in the order the route lists the filters;
 * on_response and on_body run in reverse order, and only for filters whose
 * on_request ran (and, after a short-circuit, only for those listed before
 * the filter that replied). on_done runs exactly once for every filter whose
 * on_request ran, whether the transaction succeeded, failed or the client went
 * away. All callbacks run on the transaction's worker thread.
 */
#ifndef PF_FILTER_H
#define PF_FILTER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "proxy/errors-t.h"

struct pf_tx;
struct pf_worker;
struct pf_conf_node;
struct pf_err;
struct pf_arena;
struct pf_hdr;
struct evbuffer;

enum pf_verdict {
    PF_NEXT = 0, /* continue with the next stage */
    PF_REPLIED,  /* pf_tx_reply() was called: stop going inward */
    PF_PAUSED,   /* filter will call pf_tx_resume() later (see below) */
    PF_FAILED,   /* internal error: core answers 500 and logs the filter name */
};

struct pf_slot {      /* what one filter sees of itself in one tx */
    const void *conf; /* parsed YAML; shared by all workers; read-only */
    void *wstate;     /* this worker only; no locking */
    void *ctx;        /* this tx only; ctx_size bytes from the tx arena, zeroed */
    bool skip_body;   /* set in on_response: on_body is not called for this response */
    void *pstate;     /* process state (init_process); all workers: the filter's own locking */
};

struct pf_body {
    struct evbuffer *in;  /* produced by the previous stage; drain it all, every call */
    struct evbuffer *out; /* consumed by the next stage */
    bool eos;             /* last call for this response: flush everything */
};

struct pf_filter_ops {
    const char *name; /* key under `filters:` in YAML */
    size_t ctx_size;
    /* n is the filter's map under `filters:`, or NULL when absent (defaults). */
    int (*conf_parse)(const struct pf_conf_node *n, void **conf, struct pf_err *err);
    void (*conf_free)(void *conf);
    /*
     * Runs on the main thread when a snapshot is built for worker w (start,
     * reload). Non-zero fails the start or the reload (the running snapshot
     * stays): leave nothing allocated then. w's loop may be running: add no
     * event to pf_worker_base(w) here, do it in worker_start.
     */
    int (*worker_init)(const void *conf, struct pf_worker *w, void **wstate);
    /*
     * Runs on worker w's own thread (or before that thread starts) when the
     * snapshot becomes w's current one: the place for anything that touches
     * w's event base (connections, timers), which worker_init must not do.
     * Called at most once per wstate; never for a snapshot that a failed
     * reload drops.
     */
    void (*worker_start)(void *wstate);
    void (*worker_fini)(void *wstate);
    enum pf_verdict (*on_request)(struct pf_tx *tx, struct pf_slot *s);
    enum pf_verdict (*on_response)(struct pf_tx *tx, struct pf_slot *s);
    enum pf_verdict (*on_body)(struct pf_tx *tx, struct pf_slot *s, struct pf_body *b);
    void (*on_done)(struct pf_tx *tx, struct pf_slot *s); /* exactly once, even on abort */
    /* Process state (see the lifetimes above). 0, or -errno to refuse the snapshot. */
    int (*init_process)(const void *conf, void **pstate);
    /* True when the pstate made for old_conf serves new_conf as it is (NULL: never). */
    bool (*reuse_process)(const void *old_conf, const void *new_conf);
    void (*fini_process)(void *pstate);
    /*
     * Append the filter's families to /metrics (Prometheus text, with
     * pf_stats_put_head / pf_stats_put_sample of proxy/stats.h). Called once per
     * scrape for every registered filter, on the main thread; conf and pstate
     * are those of the running snapshot, NULL when it does not use the filter
     * (counters kept since an earlier snapshot still render).
     */
    void (*metrics)(const void *conf, void *pstate, struct evbuffer *out);
    /*
     * An admin API request (POST path, body of len bytes) for the filter,
     * already authorized: append the JSON answer to out and return its
     * status, or 0 when the path is not the filter's. Called by
     * proxy/admin.c for every registered filter with the running
     * snapshot's conf and pstate (NULL when no route uses the filter), on
     * the main thread.
     */
    int (*admin)(const void *conf, void *pstate, const char *path, const char *body, size_t len,
                 struct evbuffer *out);
};

/*
 * Answer the request from a filter: sets the response status and body (moved
 * out of body, which may be NULL for none; body is left empty). Response
 * headers may then be added with pf_tx_resp_header_*(). The reply is sent when
 * the filter returns PF_REPLIED (or calls pf_tx_resume(tx, PF_REPLIED)).
 */
void pf_tx_reply(struct pf_tx *tx, int status, struct evbuffer *body);

/*
 * pf_tx_reply() without any header (not even Date and Content-Length): the
 * filter adds all of them (a cache answering with a stored head). Returns the
 * reply's body buffer (body moved into it, or NULL for none): the filter may
 * append to it until it returns PF_REPLIED, and no longer.
 */
struct evbuffer *pf_tx_reply_bare(struct pf_tx *tx, int status, struct evbuffer *body);

/*
 * A reply whose body follows later (the cache serving a response that is
 * still being fetched): pf_tx_reply_bare() without a body, so without any
 * header, not even Date (the filter adds the stored head); add Content-Length
 * when the length is known, otherwise the body is chunked, or close-delimited
 * to HTTP/1.0. Once the filter has returned
 * PF_REPLIED (or resumed with it), the head is sent and the filter hands the
 * body over with pf_tx_reply_body() on the tx's worker, until eos, or gives
 * up with pf_tx_reply_cut(). The client may go away meanwhile: hold a
 * pf_tx_ref, as a paused filter does.
 */
void pf_tx_reply_stream(struct pf_tx *tx, int status);
/* More of a streamed reply's body (moved out of data); eos ends it, and tx with it. */
void pf_tx_reply_body(struct pf_tx *tx, struct evbuffer *data, bool eos);
/*
 * A streamed reply that cannot be completed: the connection is closed (or,
 * when none of the response has reached the socket yet, a 502 replaces it),
 * so the client never sees a complete framing around a partial body. tx ends.
 */
void pf_tx_reply_cut(struct pf_tx *tx);

/*
 * From on_response of a response to a request read whole: when the client
 * goes away, the response is still read to its end (through the filters'
 * on_body, then dropped) instead of being aborted, as a background
 * transaction's is; on_done runs when it ends.
 */
void pf_tx_keep_fetching(struct pf_tx *tx);
/*
 * Withdraw pf_tx_keep_fetching: a client abort aborts again; a fetch that goes
 * on without its client already is aborted (from the loop, so a filter of tx
 * may call it from its own callbacks; tx ends there).
 */
void pf_tx_stop_fetching(struct pf_tx *tx);

/*
 * On tx's worker: while unpaced (on), the response is read from the upstream
 * without waiting for the client to take its output, which grows instead; the
 * filter that asks bounds it (the cache, while requests coalesced on the
 * response are served from the copy it stores). Turning it on resumes a read
 * that waits for the client: tx may end in that call.
 */
void pf_tx_unpace(struct pf_tx *tx, bool on);

/*
 * Like pf_tx_reply() for an error pilotfish makes itself: JSON body
 * {"error":"CODE",...}, X-Pilotfish-Error: CODE, counted in
 * pilotfish_errors_total{error} and marked in the access log.
 */
void pf_tx_error(struct pf_tx *tx, int status, enum pf_error code);

/*
 * Continue a transaction whose filter returned PF_PAUSED, with verdict v
 * (after pf_tx_reply() for PF_REPLIED). tx must still exist: call it from
 * inside on_request, or with a tx that pf_tx_deref() has just returned.
 * Anything else (the tx is not paused in on_request) is ignored.
 *
 * Pausing safely. While a filter waits, the client may go away: the core then
 * aborts the transaction, runs on_done for the filters whose on_request ran
 * (the paused one included) and frees the tx and its arena, ctx included. So:
 *  - a waiter never keeps a struct pf_tx * across a return to the event loop;
 *    it keeps the struct pf_tx_ref from pf_tx_ref(tx), and when it wakes it
 *    calls pf_tx_deref(): NULL means the transaction has ended (abort,
 *    timeout, drain) and the waiter just drops its work;
 *  - the waiter's own state (a timer event, a Redis callback's data) lives in
 *    memory the filter owns (wstate, malloc) unless on_done cancels it, since
 *    the arena is freed with the tx;
 *  - only the tx's worker thread may call pf_tx_deref() and pf_tx_resume():
 *    use pf_worker_call(pf_tx_worker(tx), ...) to get back there from
 *    another thread;
 *  - resume exactly once per PF_PAUSED: a stray second call could continue a
 *    later filter's pause.
 */
void pf_tx_resume(struct pf_tx *tx, enum pf_verdict v);

/* A reference to a transaction that stays safe to hold after it ends. */
struct pf_tx_ref {
    struct pf_worker *w; /* the transaction's worker */
    uint32_t slot;       /* in the worker's table */
    uint32_t gen;        /* the slot's generation when the reference was taken */
};

/* A reference to tx (the same one each time for one tx); cheap. */
struct pf_tx_ref pf_tx_ref(struct pf_tx *tx);
/* The transaction r refers to, or NULL once it has ended (or r is zeroed). */
struct pf_tx *pf_tx_deref(struct pf_tx_ref r);

/*
 * Start a background transaction: a GET of tx's target with tx's request
 * headers as they are now (the changes of the filters before s included), and
 * no client. From the event loop, soon, it runs the route's filters from the
 * one whose slot is s on (on_request of the filters before it does not run:
 * they have done their part on tx), then goes upstream as any request does
 * (balancer, pool, retries, connect_timeout, request_timeout); its response
 * passes through those filters' on_response and on_body and is then dropped.
 * on_done runs as for any transaction. It holds its snapshot (conf, wstate,
 * pstate) until it ends; a drain does not wait for it, and when the process
 * stops it is aborted. Call from on_request (s is the caller's slot). False
 * when it was not started (the worker is draining).
 */
bool pf_tx_background(struct pf_tx *tx, struct pf_slot *s);
/* Is tx a background transaction (pf_tx_background)? */
bool pf_tx_is_background(const struct pf_tx *tx);

/* ---- what a filter may read and change of the transaction ---- */

struct pf_arena *pf_tx_arena(struct pf_tx *tx);
struct pf_worker *pf_tx_worker(struct pf_tx *tx);
/* Index of the worker thread (0..n-1) and the number of workers. */
unsigned pf_worker_index(const struct pf_worker *w);
unsigned pf_worker_count(const struct pf_worker *w);
/*
 * The worker's event_base (struct event_base *), for filters doing I/O. It
 * has no lock: only w's own thread may add, delete or activate its events.
 */
void *pf_worker_base(struct pf_worker *w);
/*
 * Any thread: run fn(w, arg) on w's thread, soon, in the order of the calls
 * to w (the way to reach a worker from another thread). Calls still pending
 * when the worker stops are dropped without running.
 */
void pf_worker_call(struct pf_worker *w, void (*fn)(struct pf_worker *w, void *arg), void *arg);

/* Request line; strings are NUL-terminated and live as long as the tx. */
const char *pf_tx_method(const struct pf_tx *tx);
const char *pf_tx_path(const struct pf_tx *tx); /* path and query, as received */
/* The authority the upstream gets as Host: an absolute-form target's, else Host; or NULL. */
const char *pf_tx_host(const struct pf_tx *tx);
int pf_tx_http_minor(const struct pf_tx *tx); /* 0 for HTTP/1.0, 1 for 1.1 */
bool pf_tx_is_head(const struct pf_tx *tx);
/* Client address without port ("127.0.0.1", "::1", "unix"). */
const char *pf_tx_client_addr(const struct pf_tx *tx);
const char *pf_tx_route_name(const struct pf_tx *tx);
const char *pf_tx_upstream_name(const struct pf_tx *tx); /* "" when none */

/* First request header named name (case-insensitive), NULL when absent. */
const char *pf_tx_req_header(const struct pf_tx *tx, const char *name);

/* Call fn for each request header in order; stop when fn returns non-zero. */
typedef int (*pf_header_fn)(void *arg, const char *name, const char *value);
void pf_tx_req_header_each(const struct pf_tx *tx, pf_header_fn fn, void *arg);

/* Response status and headers: valid from on_response (or after pf_tx_reply). */
int pf_tx_status(const struct pf_tx *tx);
const char *pf_tx_resp_header(const struct pf_tx *tx, const char *name);
void pf_tx_resp_header_each(const struct pf_tx *tx, pf_header_fn fn, void *arg);
/* Replace every header named name with one (value copied into the arena). */
void pf_tx_resp_header_set(struct pf_tx *tx, const char *name, const char *value);
/* Append one more header (value copied). */
void pf_tx_resp_header_add(struct pf_tx *tx, const char *name, const char *value);
/* Append one more header without copying name and value: they must stay valid, unchanged, until
 * the transaction ends (e.g. they live in an object the filter holds a reference on until then). */
void pf_tx_resp_header_add_ref(struct pf_tx *tx, const char *name, const char *value);
/* Append n headers at once, borrowed like pf_tx_resp_header_add_ref's: entries prepared with
 * their lengths and ids (pf_hdr_classify), e.g. kept with a stored object. */
void pf_tx_resp_fields_ref(struct pf_tx *tx, const struct pf_hdr *v, unsigned n);
/*
 * The fields added since the reply (all of them, in order) serialised in raw,
 * "Name: value\r\n" each, none hop-by-hop or Content-Length (borrowed like
 * pf_tx_resp_header_add_ref's strings): the connection may write raw in
 * their place, one copy, as long as no field is removed or replaced (any
 * pf_tx_resp_header_set or _del undoes it). A cache hit's stored head.
 */
void pf_tx_resp_raw(struct pf_tx *tx, const char *raw, size_t len);
/* Remove every header named name. */
void pf_tx_resp_header_del(struct pf_tx *tx, const char *name);
/*
 * Replace the response status (from on_response: the framing of the body to
 * the client is chosen after on_response, from the status and
 * Content-Length; a filter that turns a 304 into a 200 sets Content-Length
 * and emits the body from on_body at eos).
 */
void pf_tx_set_status(struct pf_tx *tx, int status);

/*
 * Change the request headers the upstream will get (from on_request, before
 * the request is sent): replace every header named name with one (value
 * copied), or remove them.
 */
void pf_tx_req_header_set(struct pf_tx *tx, const char *name, const char *value);
void pf_tx_req_header_del(struct pf_tx *tx, const char *name);
/* Change the path and query the upstream will get (from on_request; copied into the arena). */
void pf_tx_set_path(struct pf_tx *tx, const char *path);

/* Is the client allowed privileged requests: loopback, or it sent the admin token? */
bool pf_tx_client_privileged(const struct pf_tx *tx);

/*
 * Monotonic clock in microseconds (shared by the whole process). Within one
 * event callback it is read once, so pf_now_us() is the callback's start;
 * pf_clock_read_us() reads it afresh (the end of a measured duration).
 */
uint64_t pf_now_us(void);
uint64_t pf_clock_read_us(void);

#endif /* PF_FILTER_H */
