/*
 * The upstream side, as the HTTP engine sees it: send a transaction's request
 * to an endpoint of its upstream and feed the response back to it.
 *
 * The subsystem (proxy/upstream/): endpoint.c (the process-wide endpoint
 * table), balancer.c (policies), pool.c (connections and per-worker
 * keep-alive pools), h1client.c (request writer, response parser) and
 * upstream.c (attempts, timers, retries). Pools are per worker, no locks.
 */
#ifndef PF_UPSTREAM_H
#define PF_UPSTREAM_H

#include <stdbool.h>
#include <stddef.h>

#include "proxy/core.h"
#include "proxy/upstream/endpoint.h"
#include "proxy/upstream/pool.h"
#include "proxy/upstream/upconn-t.h"

struct evbuffer;

/* Send tx's request upstream (pick, pool or connect, write the head). */
void pf_upstream_start(struct pf_tx *tx);

/*
 * Forward request body bytes / the end of the body (re-framed). While the
 * body moves with splice (the client's stream is raw, upsplice.h), the
 * connection calls send_body with no bytes: it moves what splice can.
 */
void pf_upstream_send_body(struct pf_tx *tx, struct evbuffer *src, size_t len);
void pf_upstream_send_end(struct pf_tx *tx);

/* Detach tx from its upstream connection and close that connection. */
void pf_upstream_abort(struct pf_tx *tx);

/* tx ends: detach it and give back what it holds in its upstream's retry budget. */
void pf_upstream_end(struct pf_tx *tx);

/* The client drained its output: read the upstream again. */
void pf_upstream_resume_read(struct pf_upconn *uc);

/*
 * The rule for a dead pooled connection: an attempt that failed with outcome
 * o on uc is tried again at once on a fresh connection (another endpoint
 * when there is one), outside the retry policy and its budget, only when uc
 * was reused, no response byte came, the request can be sent again (an
 * idempotent method without a body, or a body kept within
 * retries.max_buffered_body) and this rule was not used yet for tx.
 */
bool pf_upstream_should_retry(const struct pf_tx *tx, const struct pf_upconn *uc,
                              enum pf_outcome o);

/* Health checks let ep serve: healthy, or found unhealthy when panic may use it. */
bool pf_upstream_health_lets_serve(const struct pf_upstream_conf *up, const struct pf_endpoint *ep);

/*
 * The endpoint of tx's next attempt (proxy/upstream/pick.c), admitted by its
 * breaker (*ticket: a half-open trial's permit). PF_ERR_NONE, or the error
 * to answer: circuit_open when circuits keep the endpoints out, else
 * no_healthy_upstream (health checks, panic off).
 */
enum pf_error pf_upstream_pick(struct pf_tx *tx, unsigned *id, uint64_t *ticket);

#endif /* PF_UPSTREAM_H */
