/*
 * Transactions: one request and its response, from the parsed request head to
 * the access log line. Worker thread only.
 */
#ifndef PF_TX_H
#define PF_TX_H

#include <stdbool.h>

/* clock, hdrs and worker: also for the files that reach them through this one */
#include "proxy/clock.h"
#include "proxy/core.h"
#include "proxy/hdrs.h"
#include "proxy/worker.h"

/* A new transaction for c's request head (arena, snapshot reference). */
struct pf_tx *pf_tx_new(struct pf_conn *c);

/*
 * The request head is complete and valid: route it and run the chain, then
 * go upstream or reply. May finish the transaction before returning.
 */
void pf_tx_start(struct pf_tx *tx);

/*
 * tx's X-Request-Id and traceparent (pf_trace_request_id, pf_trace_start), made when something
 * needs them (the upstream request, the access log), not for every request: a reply from a
 * filter, e.g. a cache hit, needs neither. Made once; a no-op after.
 */
void pf_tx_ids(struct pf_tx *tx);

/* Request body data arrived (de-framed): move len bytes out of src. */
void pf_tx_req_body(struct pf_tx *tx, struct evbuffer *src, size_t len);
/* The request is complete. */
void pf_tx_req_end(struct pf_tx *tx);

/* A core error before anything was sent: reply with it through the chain. */
void pf_tx_fail(struct pf_tx *tx, int status, enum pf_error code);
/* Same with a Retry-After of secs (503 circuit_open), when the answer is still to come. */
void pf_tx_fail_retry_after(struct pf_tx *tx, int status, enum pf_error code, uint64_t secs);

/*
 * The response head is in tx->status / tx->resp (from the upstream or a
 * reply): run on_response, then send the head to the client. Returns false
 * when the transaction ended instead (a filter failed): tx may be freed.
 */
bool pf_tx_respond(struct pf_tx *tx);

/*
 * Response body data (from the upstream or the reply), through on_body.
 * Returns false when a filter failed and the connection was closed.
 */
bool pf_tx_resp_body(struct pf_tx *tx, struct evbuffer *data);

/* The end of the response body. */
void pf_tx_resp_end(struct pf_tx *tx);

/* The client went away or the connection must close: abort the transaction. */
void pf_tx_abort(struct pf_tx *tx, enum pf_error why);

struct pf_sbuf;
/*
 * pf_tx_resp_raw: put the block of the first response fields into b, unless
 * the response's Connection (conn_value) could nominate one of them; how
 * many fields it stands for (0: none, write them all one by one).
 */
unsigned pf_tx_resp_raw_put(const struct pf_tx *tx, const char *conn_value, struct pf_sbuf *b);

/* Release: on_done for the filters that ran, access log line, arena. */
void pf_tx_free(struct pf_tx *tx);
/* The process stops: end w's background transactions (their on_done runs). */
void pf_tx_abort_background(struct pf_worker *w);

/* The transaction ends: references to it (pf_tx_ref) stop finding it. */
void pf_txref_release(struct pf_tx *tx);
/* Free w's reference table (when the worker is freed). */
void pf_txref_fini(struct pf_worker *w);

#endif /* PF_TX_H */
