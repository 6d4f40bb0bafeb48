/*
 * The upstream side: endpoints, per-worker keep-alive pools, and one request
 * at a time per upstream connection.
 *
 * Endpoints are process-wide and keyed by "upstream name + address", so their
 * state (pools now; health and breaker later) survives reloads: a snapshot
 * refers to them by stable id. Pools are per worker, no locks.
 */
#ifndef PF_UPSTREAM_H
#define PF_UPSTREAM_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>

#include "proxy/core.h"

#define PF_MAX_ENDPOINTS 4096

struct pf_endpoint {
    unsigned id;
    char *upstream;      /* upstream name */
    struct pf_addr addr; /* address (text + sockaddr) */
    atomic_uint active;  /* atomic: requests in flight, all workers */
    atomic_uint open;    /* atomic: open connections, all workers */
};

/* Outcome of one attempt, reported to the breaker / health seam. */
enum pf_outcome {
    PF_OUTCOME_OK = 0, /* a response head arrived */
    PF_OUTCOME_CONNECT_FAILED,
    PF_OUTCOME_RESET,
    PF_OUTCOME_TIMEOUT,
    PF_OUTCOME_BAD_RESPONSE,
};

/*
 * Give every endpoint of cfg its stable id (creating endpoints seen for the
 * first time). Main thread, before the snapshot is published. 0 or -ENOSPC.
 */
int pf_upstream_bind(struct pf_config *cfg);

/* The endpoint with id (any thread; endpoints are never freed). */
struct pf_endpoint *pf_endpoint_get(unsigned id);
unsigned pf_endpoint_count(void);

/* Send tx's request upstream (pick, pool or connect, write the head). */
void pf_upstream_start(struct pf_tx *tx);

/* Forward request body bytes / the end of the body (re-framed). */
void pf_upstream_send_body(struct pf_tx *tx, struct evbuffer *src, size_t len);
void pf_upstream_send_end(struct pf_tx *tx);

/* Detach tx from its upstream connection and close that connection. */
void pf_upstream_abort(struct pf_tx *tx);

/* The client drained its output: read the upstream again. */
void pf_upstream_resume_read(struct pf_upconn *uc);

/* Close idle connections past their idle timeout or lifetime (tick). */
void pf_upstream_sweep(struct pf_worker *w, bool all);

/* Free the endpoint table (at exit, when no worker runs). */
void pf_upstream_free_all(void);

#endif /* PF_UPSTREAM_H */
