/*
 * Retry policy of an upstream (proxy/upstream/retry.c): the `retries:`
 * settings, which outcomes are retried, the jittered exponential backoff and
 * the retry budget. upstream.c asks and acts; nothing here touches a
 * connection, so every rule is testable with an injected clock.
 *
 * The budget is per upstream and shared by all workers (atomics): retries
 * in flight may be at most `budget` x the requests in flight, and beyond
 * that `min_per_second` more are always allowed per second. A reload keeps
 * the counters of an upstream that remains (same name).
 */
#ifndef PF_UPSTREAM_RETRY_H
#define PF_UPSTREAM_RETRY_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

struct evbuffer;

#include "proxy/conf.h"
#include "proxy/upstream/endpoint-t.h"

/* Conditions of `on` other than statuses (struct pf_retry_conf.on). */
#define PF_RETRY_ON_CONNECT_FAILURE 0x1u
#define PF_RETRY_ON_RESET           0x2u
#define PF_RETRY_ON_TIMEOUT         0x4u

/* Backoff of retry n is at most backoff << (n - 1), capped at this many times backoff. */
#define PF_RETRY_BACKOFF_CAP 10

struct pf_retry_state {
    atomic_uint refs;          /* snapshots sharing it */
    atomic_uint in_flight;     /* retries in flight (from the decision to their outcome) */
    atomic_uint_least64_t sec; /* second << 32 | min_per_second retries taken in it */
    char *name;                /* the upstream's */
};

/* The defaults of `retries:` (attempts 1, on [connect_failure, reset, 502, 503], ...). */
void pf_retry_conf_defaults(struct pf_retry_conf *rc);

/* Fill rc from the `retries:` map n (NULL: nothing); errors name section. */
void pf_retry_conf_parse(const struct pf_conf_node *n, const char *section,
                         struct pf_retry_conf *rc, struct pf_err *err);

/* ,"retries":{...} for GET /config. */
void pf_retry_conf_json(const struct pf_retry_conf *rc, struct evbuffer *out);

/* Whether rc retries an attempt that ended with o (PF_OUTCOME_OK: status decides). */
bool pf_retry_on_outcome(const struct pf_retry_conf *rc, enum pf_outcome o, int status);

/*
 * The backoff before retry n (1 = the first retry), in microseconds:
 * uniformly in [cap / 2, cap], cap = min(backoff << (n - 1), backoff x
 * PF_RETRY_BACKOFF_CAP); r is a random number.
 */
uint64_t pf_retry_backoff_us(const struct pf_retry_conf *rc, unsigned n, uint64_t r);

/*
 * Take a place for one retry in st's budget at now_us: true when retries in
 * flight (this one included) stay within max_in_flight (max_retries) and
 * within budget x active (requests in flight to the upstream), or a
 * min_per_second place of this second is left. A true must be given back
 * with pf_retry_budget_put. Any thread.
 */
bool pf_retry_budget_take(struct pf_retry_state *st, const struct pf_retry_conf *rc,
                          unsigned max_in_flight, unsigned active, uint64_t now_us);
void pf_retry_budget_put(struct pf_retry_state *st);

/* Retries of upstream up in flight now, all workers (the max_retries overflow). */
unsigned pf_retry_in_flight(const struct pf_upstream_conf *up);

/*
 * Give each upstream of cfg its shared state: prev's for an upstream of the
 * same name, else a new one. Main thread, before publishing cfg.
 */
void pf_retry_bind(struct pf_config *cfg, const struct pf_config *prev);
/* Drop cfg's references (the last one frees). Any thread. */
void pf_retry_unbind(struct pf_config *cfg);

#endif /* PF_UPSTREAM_RETRY_H */
