/*
 * filters/ratelimit.h: the rate-limit filter (token bucket per key, 429 when
 * empty) and its counters.
 *
 * The buckets are the filter's process state (pstate): shared by every
 * worker, so requests_per_second and burst hold for the whole process
 * whatever the number of workers. A reload keeps them when rate, burst, key
 * and max_keys are unchanged, and starts with full buckets otherwise. The
 * rejection counters below are per process and survive reloads.
 */
#ifndef PF_RATELIMIT_H
#define PF_RATELIMIT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "proxy/filter.h"

extern const struct pf_filter_ops pf_filter_ratelimit;

/*
 * Requests answered 429 on route (pilotfish_ratelimit_rejected_total{route})
 * since the process started; 0 for a route never limited. Any thread; reads
 * relaxed atomics, never blocks.
 */
uint64_t pf_ratelimit_rejected(const char *route);

typedef void (*pf_ratelimit_count_fn)(void *arg, const char *route, uint64_t rejected);

/*
 * Call fn once for each route that has had at least one rejection, in first
 * seen order. At most 255 routes are named; the rejections of any further
 * route are counted under the route "_other". route stays valid for the
 * life of the process. Any thread; lock-free.
 */
void pf_ratelimit_rejected_each(pf_ratelimit_count_fn fn, void *arg);

/*
 * Number of keys (buckets) currently held by pstate, as returned by
 * pf_filter_ratelimit.init_process; always <= its max_keys. Any thread; reads
 * every slot without a lock (O(max_keys)), so the total is not an atomic
 * snapshot. For tests and a possible gauge.
 */
size_t pf_ratelimit_keys(const void *pstate);

/*
 * Take one token from the bucket of key (len bytes, counted as a header
 * value is) at now_us, as on_request does after finding the key: true when
 * admitted. conf from conf_parse, pstate from init_process. For tests and
 * bench/ratelimit.c. Any thread.
 */
bool pf_ratelimit_take(const void *conf, void *pstate, const void *key, size_t len,
                       uint64_t now_us);

#endif /* PF_RATELIMIT_H */
