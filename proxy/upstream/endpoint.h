/*
 * The endpoint table. Endpoints are process-wide and keyed by "upstream name
 * + address", so their state (pools now; health and breaker later) survives
 * reloads: a snapshot refers to them by id. They are reference-counted by
 * the snapshots that list them and the connections open to them, and freed
 * when both are gone; ids are then reused.
 */
#ifndef PF_UPSTREAM_ENDPOINT_H
#define PF_UPSTREAM_ENDPOINT_H

#include "proxy/conf.h"
#include "proxy/upstream/endpoint-t.h"

/*
 * Give every endpoint of cfg its id, taking one reference per listed address
 * (creating endpoints seen for the first time), and make the snapshot drop
 * them when it is freed (cfg->release). Main thread, before the snapshot is
 * published. 0, or -ENOSPC with nothing taken and, when err is not NULL, a
 * message naming the upstream and address that did not fit.
 */
int pf_endpoint_bind(struct pf_config *cfg, struct pf_err *err);
/* Same without a message (tests; proxy/snapshot.c). */
int pf_upstream_bind(struct pf_config *cfg);
/*
 * Main thread, after pf_endpoint_bind: the breaker of each endpoint of cfg
 * that prev (the configuration in service; NULL: none) does not list starts
 * closed, even while an older snapshot still holds the endpoint.
 */
void pf_endpoint_fresh_breakers(const struct pf_config *cfg, const struct pf_config *prev);
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

/* Free the endpoint table (at exit, when no worker runs). */
void pf_upstream_free_all(void);

#endif /* PF_UPSTREAM_ENDPOINT_H */
