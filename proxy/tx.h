/*
 * Transactions: one request and its response, from the parsed request head to
 * the access log line. Worker thread only.
 */
#ifndef PF_TX_H
#define PF_TX_H

#include <stdbool.h>

#include "proxy/core.h"

/* A new transaction for c's request head (arena, snapshot reference). */
struct pf_tx *pf_tx_new(struct pf_conn *c);

/*
 * The request head is complete and valid: route it and run the chain, then
 * go upstream or reply. May finish the transaction before returning.
 */
void pf_tx_start(struct pf_tx *tx);

/* Request body data arrived (de-framed): move len bytes out of src. */
void pf_tx_req_body(struct pf_tx *tx, struct evbuffer *src, size_t len);
/* The request is complete. */
void pf_tx_req_end(struct pf_tx *tx);

/* A core error before anything was sent: reply with it through the chain. */
void pf_tx_fail(struct pf_tx *tx, int status, const char *code);

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
void pf_tx_abort(struct pf_tx *tx, const char *why);

/* Release: on_done for the filters that ran, access log line, arena. */
void pf_tx_free(struct pf_tx *tx);

/* The transaction ends: references to it (pf_tx_ref) stop finding it. */
void pf_txref_release(struct pf_tx *tx);
/* Free w's reference table (when the worker is freed). */
void pf_txref_fini(struct pf_worker *w);

/* Header list helpers (arena-backed). */
const char *pf_hdrs_get(const struct pf_hdrs *h, const char *name);
/* First value of the header recognised as id (faster than by name). */
const char *pf_hdrs_get_id(const struct pf_hdrs *h, enum pf_hdr_id id);
/* Which known header name[0..len) is (PF_H_OTHER when none). */
enum pf_hdr_id pf_hdr_classify(const char *name, size_t len);
void pf_hdrs_add(struct pf_arena *a, struct pf_hdrs *h, const char *name, const char *value);
void pf_hdrs_del(struct pf_hdrs *h, const char *name);

/* Count an error of the worker (pilotfish_errors_total). */
void pf_count_error(struct pf_worker *w, const char *code);
/* Name of error e (the code of docs/operations.md, "Errors"). */
const char *pf_error_name(enum pf_error e);

/* Tests only: when non-zero, pf_now_us() returns this instead of the clock. */
extern uint64_t pf_clock_fixed_us;

/* Random 64-bit value from the worker's generator. */
uint64_t pf_worker_rand(struct pf_worker *w);

#endif /* PF_TX_H */
