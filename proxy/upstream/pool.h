/*
 * Upstream connections and the per-worker keep-alive pools
 * (proxy/upstream/pool.c): making, closing and keeping connections. Pools
 * are per worker and per endpoint id, LIFO, without locks.
 */
#ifndef PF_UPSTREAM_POOL_H
#define PF_UPSTREAM_POOL_H

#include <stdbool.h>
#include <stddef.h>

#include "proxy/conf.h"
#include "proxy/upstream/upconn-t.h"

/* The pool of endpoint id on w (made on first use). */
struct pf_pool *pf_pool_of(struct pf_worker *w, unsigned id);

/*
 * A connection to endpoint id on fd (connected or connecting), in state
 * CONNECTING, holding a reference to the endpoint. Out of memory is fatal.
 */
struct pf_upconn *pf_upconn_new(struct pf_worker *w, unsigned id, int fd,
                                const struct pf_upstream_conf *up);
/* Open a socket to endpoint id and start connecting; NULL when that failed at once. */
struct pf_upconn *pf_upconn_connect(struct pf_worker *w, unsigned id,
                                    const struct pf_upstream_conf *up);
/* Close uc now, or as soon as its callbacks have returned (busy). */
void pf_upconn_close(struct pf_upconn *uc);
/* A callback on uc returns: free it when it was closed meanwhile. */
void pf_upconn_leave(struct pf_upconn *uc);
/* Read timeout of uc (a stream timeout: closes it, or fails its attempt). */
void pf_upconn_set_rto(struct pf_upconn *uc, uint64_t ms);

/*
 * Keep uc (no tx) for reuse, or close it: the pool is full, the connection
 * is past max_lifetime, the worker drains or no snapshot lists the endpoint.
 */
void pf_pool_put(struct pf_upconn *uc, const struct pf_upstream_conf *up);
/* The most recently used idle connection to id still in its time, or NULL. */
struct pf_upconn *pf_pool_get(struct pf_worker *w, unsigned id);

/* Close idle connections past their idle timeout or lifetime (tick), or all of them. */
void pf_upstream_sweep(struct pf_worker *w, bool all);

/* Name of a state ("connecting", ...). */
const char *pf_upconn_state_name(enum pf_upconn_state st);
/*
 * One line describing uc (state, flags, framing, endpoint) into buf of size
 * len, NUL-terminated and cut to fit; returns buf. For debug logs and tests.
 */
char *pf_upconn_dump(const struct pf_upconn *uc, char *buf, size_t len);

#endif /* PF_UPSTREAM_POOL_H */
