/*
 * The identity of a request: its X-Request-Id and its W3C traceparent.
 * Worker thread.
 */
#ifndef PF_TRACE_H
#define PF_TRACE_H

struct pf_tx;

/* tx->request_id: the client's X-Request-Id when usable, else a new random one. */
void pf_trace_request_id(struct pf_tx *tx);

/*
 * tx->traceparent and tx->trace_id: a valid incoming traceparent continued
 * with the same trace-id and flags and a new span id (ours), otherwise a new
 * trace.
 */
void pf_trace_start(struct pf_tx *tx);

#endif /* PF_TRACE_H */
