/*
 * The upstream side: endpoints, per-worker keep-alive pools, and one request
 * at a time per upstream connection.
 *
 * Endpoints are process-wide and keyed by "upstream name + address", so their
 * state (pools now; health and breaker later) survives reloads: a snapshot
 * refers to them by id. They are reference-counted by the snapshots that list
 * them and the connections open to them, and freed when both are gone
 * (proxy/endpoint.c); ids are then reused. Pools are per worker, no locks.
 */
#ifndef PF_UPSTREAM_H
#define PF_UPSTREAM_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>

#include "proxy/core.h"

#define PF_MAX_ENDPOINTS 4096 /* endpoints live at once */

struct pf_endpoint {
    unsigned id;
    uint64_t gen;        /* unique per endpoint ever made: tells a reused id apart */
    char *upstream;      /* upstream name */
    struct pf_addr addr; /* address (text + sockaddr) */
    atomic_uint active;  /* atomic: requests in flight, all workers */
    atomic_uint open;    /* atomic: open connections, all workers */
    atomic_uint refs;    /* atomic: snapshot bindings + open connections */
    atomic_uint snaps;   /* atomic: snapshot bindings only (0: idle connections go) */
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
 * Give every endpoint of cfg its id, taking one reference per listed address
 * (creating endpoints seen for the first time), and make the snapshot drop
 * them when it is freed (cfg->release). Main thread, before the snapshot is
 * published. 0, or -ENOSPC with nothing taken and, when err is not NULL, a
 * message naming the upstream and address that did not fit.
 */
int pf_endpoint_bind(struct pf_config *cfg, struct pf_err *err);
/* Same without a message (tests). */
int pf_upstream_bind(struct pf_config *cfg);
/* Drop what pf_endpoint_bind took for cfg (from cfg->release). Any thread. */
void pf_endpoint_unbind(struct pf_config *cfg);

/* One more / one less reference (an open connection). The last unref frees. Any thread. */
void pf_endpoint_ref(struct pf_endpoint *ep);
void pf_endpoint_unref(struct pf_endpoint *ep);

/*
 * The endpoint with id. Valid while the caller holds a reference to it, or to
 * a snapshot that lists it (a tx's cfg, an upconn). Any thread.
 */
struct pf_endpoint *pf_endpoint_get(unsigned id);
/* Generation of the endpoint now at id, 0 when the id is free. Any thread. */
uint64_t pf_endpoint_gen(unsigned id);
/* Endpoints in the table (pilotfish_upstream_endpoints). Any thread. */
unsigned pf_endpoint_count(void);
/* Every id in use is below this (per-worker tables size by it). Any thread. */
unsigned pf_endpoint_id_limit(void);

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
