/*
 * Balancing policies (proxy/upstream/balancer.c): round_robin (smooth
 * weighted), least_request (weighted power of two choices), random
 * (weighted), ring_hash (consistent hashing on the client address or a
 * header); and their settings (proxy/upstream/balancer_conf.c).
 */
#ifndef PF_UPSTREAM_BALANCER_H
#define PF_UPSTREAM_BALANCER_H

#include <stddef.h>

#include "proxy/upstream/balancer-t.h"

struct pf_tx;

extern const struct pf_balancer_ops pf_lb_round_robin;
extern const struct pf_balancer_ops pf_lb_least_request;
extern const struct pf_balancer_ops pf_lb_random;
extern const struct pf_balancer_ops pf_lb_ring_hash;

/* The policy of a balance setting (round_robin for an unknown one). */
const struct pf_balancer_ops *pf_balancer_get(enum pf_balance b);

/*
 * The endpoint id up's policy picks for tx's request: in service, not in
 * tried when any is left; PF_LB_NONE when no endpoint may take it (every one
 * unhealthy with panic: false). ring_hash hashes the request's key.
 */
unsigned pf_balancer_pick_tx(const struct pf_tx *tx, pf_lb_tried tried);
/*
 * pf_balancer_pick_tx, asking a->fn about each endpoint picked and picking
 * again without those it refuses (a must be zeroed but for fn and arg).
 */
unsigned pf_balancer_pick_admit(const struct pf_tx *tx, pf_lb_tried tried, struct pf_lb_admit *a);
/* pf_balancer_pick_admit with the ring_hash key given. */
unsigned pf_balancer_pick_key_admit(const struct pf_upstream_conf *up, pf_lb_tried tried,
                                    struct pf_worker *w, uint64_t key, struct pf_lb_admit *a);
/* Same with the ring_hash key given. */
unsigned pf_balancer_pick_key(const struct pf_upstream_conf *up, pf_lb_tried tried,
                              struct pf_worker *w, uint64_t key);
/* Same with key 0 (tests). */
unsigned pf_balancer_pick(const struct pf_upstream_conf *up, pf_lb_tried tried,
                          struct pf_worker *w);

/* Weight of endpoint index i of up at now_us: its weight, ramped by slow_start (thousandths). */
uint64_t pf_balancer_weight(const struct pf_upstream_conf *up, unsigned i, uint64_t now_us);

/* The 64-bit hash of ring_hash (keys and ring points). */
uint64_t pf_balancer_hash(const char *s, size_t len);

/* Tell up's policy the outcome of an attempt on endpoint_id. */
void pf_balancer_report(const struct pf_upstream_conf *up, unsigned endpoint_id, enum pf_outcome o);

/* The tried bit of endpoint_id in up (0 when it is not listed or not tracked). */
pf_lb_tried pf_balancer_tried_bit(const struct pf_upstream_conf *up, unsigned endpoint_id);

/* ---- settings (balancer_conf.c), main thread ---- */

struct evbuffer;
struct pf_conf_node;
struct pf_err;

/* endpoints: addresses or {address, weight} maps, into u->endpoints and u->weights. */
void pf_balancer_conf_endpoints(const struct pf_conf_node *n, const char *what,
                                struct pf_upstream_conf *u, struct pf_err *err);
/* hash_on: client_ip | header:NAME. */
void pf_balancer_conf_hash_on(const struct pf_conf_node *n, const char *section,
                              struct pf_upstream_conf *u, struct pf_err *err);
/* Build u's ring (ring_hash) from its endpoints and weights (replaces any). */
void pf_balancer_ring_build(struct pf_upstream_conf *u);
/* GET /config: ,"weights":[...],"slow_start":"..." (and "hash_on" for ring_hash). */
void pf_balancer_conf_json(struct evbuffer *out, const struct pf_upstream_conf *u);
/* Free what the functions above allocated in u. */
void pf_balancer_conf_free(struct pf_upstream_conf *u);

#endif /* PF_UPSTREAM_BALANCER_H */
