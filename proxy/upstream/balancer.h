/* Balancing policies (proxy/upstream/balancer.c): round_robin, least_request, random. */
#ifndef PF_UPSTREAM_BALANCER_H
#define PF_UPSTREAM_BALANCER_H

#include "proxy/upstream/balancer-t.h"

extern const struct pf_balancer_ops pf_lb_round_robin;
extern const struct pf_balancer_ops pf_lb_least_request;
extern const struct pf_balancer_ops pf_lb_random;

/* The policy of a balance setting (round_robin for an unknown one). */
const struct pf_balancer_ops *pf_balancer_get(enum pf_balance b);

/* The endpoint id up's policy picks, not one in tried when any is left. */
unsigned pf_balancer_pick(const struct pf_upstream_conf *up, pf_lb_tried tried,
                          struct pf_worker *w);

/* Tell up's policy the outcome of an attempt on endpoint_id. */
void pf_balancer_report(const struct pf_upstream_conf *up, unsigned endpoint_id, enum pf_outcome o);

/* The tried bit of endpoint_id in up (0 when it is not listed or not tracked). */
pf_lb_tried pf_balancer_tried_bit(const struct pf_upstream_conf *up, unsigned endpoint_id);

#endif /* PF_UPSTREAM_BALANCER_H */
