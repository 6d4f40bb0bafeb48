/*
 * The filter chain (an onion): on_request in route order, on_response and
 * on_body in reverse order over the filters whose on_request ran, on_done
 * exactly once for each of those. Worker thread only.
 */
#ifndef PF_CHAIN_H
#define PF_CHAIN_H

#include <stdbool.h>

#include "proxy/filter.h"

struct evbuffer;

/*
 * Where one filter of a transaction stands (tx->slot_state[i]). It only moves
 * forward: IDLE -> REQUEST -> RESPONSE -> DONE, or REQUEST -> DONE when no
 * response reached the filter (or its on_response failed).
 */
enum pf_slot_state {
    PF_SLOT_IDLE = 0, /* on_request has not run: no other callback will */
    PF_SLOT_REQUEST,  /* on_request ran (or is paused): on_done is owed */
    PF_SLOT_RESPONSE, /* on_response passed: on_body runs (unless skip_body) */
    PF_SLOT_DONE,     /* on_done ran: nothing more */
};

/* Allocate the slots and ctxs of tx's route filters from its arena. */
void pf_chain_init(struct pf_tx *tx);

/*
 * Run on_request from tx->next_filter on. Returns PF_NEXT when every filter
 * passed, PF_REPLIED (tx->out_from set), PF_PAUSED, or PF_FAILED (out_from
 * set to the failing filter).
 */
enum pf_verdict pf_chain_request(struct pf_tx *tx);

/*
 * on_response over [0, out_from) in reverse, for the filters in state REQUEST;
 * PF_FAILED when one failed: it and the filters outside it stay in REQUEST
 * and get no on_body. has_body_filters is recomputed either way.
 */
enum pf_verdict pf_chain_response(struct pf_tx *tx);

/*
 * Pass data (may be NULL at eos) through on_body of the filters of
 * [0, out_from) in state RESPONSE, in reverse;
 * the result is left in out. Returns PF_FAILED if a filter failed.
 */
enum pf_verdict pf_chain_body(struct pf_tx *tx, struct evbuffer *data, bool eos,
                              struct evbuffer **out);

/* on_done for every filter whose on_request ran, once. */
void pf_chain_done(struct pf_tx *tx);

#endif /* PF_CHAIN_H */
