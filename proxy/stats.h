/*
 * The metrics registry (docs/metrics.md): per-worker series of
 * counters and histograms, summed across workers when /metrics is scraped.
 *
 * Each worker (and the admin loop) owns one struct pf_stats, hung off struct
 * pf_worker and never part of a configuration snapshot, so counts survive
 * reloads. A series is one label set of one family; label values are copied
 * into the stats and are bounded by construction: route and upstream names
 * come from the configuration, the method is one of the standard methods or
 * "OTHER", the code a status number or an error code of docs/operations.md.
 *
 * Threads. Only the owner thread records: values are written with relaxed
 * atomic loads and stores (never a read-modify-write, never a lock). Creating
 * a series (rare: the first time a label set is seen) appends it to the
 * owner's list under a per-stats mutex, and so does removing one (the
 * owner's sweep drops the series of endpoints that are gone, and frees
 * them). A scrape, on the main thread, holds that mutex while it copies the
 * list and reads the values (relaxed loads), so no series it reads is freed
 * under it: it never waits for a request, and a request never waits for it,
 * except that a series creation or removal waits for the scrape.
 *
 * Histogram buckets come from `metrics: {buckets: [...]}` at startup; a
 * reload that changes them is reported and applies at the next restart.
 *
 * This header is safe for filters to include (filters/metrics.c does): it
 * names core types only as opaque pointers.
 */
#ifndef PF_STATS_H
#define PF_STATS_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "proxy/errors-t.h"

struct evbuffer;
struct pf_conf_node;
struct pf_err;
struct pf_metrics_conf;
struct pf_server;
struct pf_stats;
struct pf_stats_route;
struct pf_tx;
struct pf_worker;

/* ---- counters: the one mechanism of every module ---- */

/*
 * A counter is an _Atomic uint64_t written by one thread only (its owner:
 * a worker, or the admin loop) and summed by scrapes. The owner adds with a
 * relaxed load and a relaxed store, never a read-modify-write or a lock, so
 * counting costs what a plain `++` costs while a concurrent scrape still
 * reads a whole value (no data race under C11). The cells live where their
 * owner is: struct pf_worker (core errors), struct pf_stats (series), or a
 * pf_counter_set (filters, which see no worker struct).
 */
static inline void pf_counter_add(_Atomic uint64_t *c, uint64_t n)
{
    atomic_store_explicit(c, atomic_load_explicit(c, memory_order_relaxed) + n,
                          memory_order_relaxed);
}

static inline uint64_t pf_counter_get(const _Atomic uint64_t *c)
{
    return atomic_load_explicit((_Atomic uint64_t *)c, memory_order_relaxed);
}

/*
 * n counters per thread for a module, as a static struct of process
 * lifetime (so counts survive reloads): PF_COUNTER_SET(n). Each thread that
 * counts gets its own n cells the first time (pf_counter_cells), linked once
 * into the set and never freed; the caller keeps the pointer in a __thread
 * variable of its own. pf_counter_sum() adds counter i of every thread.
 */
struct pf_counter_cells;
struct pf_counter_set {
    unsigned n;                                 /* counters per thread */
    _Atomic(struct pf_counter_cells *) threads; /* atomic: every thread's cells */
};
#define PF_COUNTER_SET(count)                                                                      \
    {                                                                                              \
        (count), NULL                                                                              \
    }

/* This thread's n cells of set (zeroed when new). Never NULL (OOM aborts). Any thread. */
_Atomic uint64_t *pf_counter_cells(struct pf_counter_set *set);
/* Counter i summed over every thread. Any thread; lock-free. */
uint64_t pf_counter_sum(struct pf_counter_set *set, unsigned i);

/* ---- configuration ---- */

/*
 * PF_CONF_CUSTOM parser of the top-level `metrics:` map (field is a struct
 * pf_metrics_conf). buckets: a non-empty, strictly increasing list of
 * positive upper bounds in seconds (numbers, or durations such as "250ms").
 * 0, or -EINVAL with the problems in err. Main thread.
 */
int pf_stats_conf_parse(const struct pf_conf_node *n, void *field, struct pf_err *err);

/* True when a and b give the same histogram buckets (after defaults). */
bool pf_stats_conf_same(const struct pf_metrics_conf *a, const struct pf_metrics_conf *b);

/* ---- lifetime ---- */

/*
 * New, empty stats with the buckets of mc (NULL or no buckets: the defaults,
 * 0.5 ms to 10 s). Never NULL (OOM aborts). Any thread; then owned by one.
 */
struct pf_stats *pf_stats_new(const struct pf_metrics_conf *mc);

/* Free st and every series; NULL is a no-op. No scrape may be running. */
void pf_stats_free(struct pf_stats *st);

/* The stats of worker w (filters cannot see struct pf_worker). */
struct pf_stats *pf_stats_of(struct pf_worker *w);

/* ---- client requests (owner thread) ---- */

/*
 * The handle of one (route, upstream) pair, created the first time. The
 * strings are copied; the handle lives as long as st, so callers may cache
 * it (filters/metrics.c keeps one per route in its wstate).
 */
struct pf_stats_route *pf_stats_route_get(struct pf_stats *st, const char *route,
                                          const char *upstream);

/*
 * Count one finished request: pilotfish_http_requests_total{route, upstream,
 * method, code} + 1 and duration us into the route's duration histogram.
 * method is normalised (GET, HEAD, POST, PUT, DELETE, CONNECT, OPTIONS,
 * TRACE, PATCH, else OTHER); status must be 100..999, others count as 0.
 */
void pf_stats_route_count(struct pf_stats_route *r, const char *method, int status, uint64_t us);

/*
 * For a route with a latency SLO (tx's route's slo.latency): one request in
 * pilotfish_slo_latency_requests_total{route}, and in
 * pilotfish_slo_latency_good_total{route} when us is within the threshold.
 * Nothing for other routes. Owner thread.
 */
void pf_stats_slo_count(struct pf_stats_route *r, const struct pf_tx *tx, uint64_t us);

/*
 * Core: count a client request that never reached a route's filter chain
 * (400, 404 no_route, 408, 431 ...) under route="" and upstream="", timed
 * from the start of the transaction. Worker thread of tx.
 */
void pf_stats_count_unrouted(struct pf_tx *tx);

/* ---- upstream attempts (owner thread) ---- */

/*
 * Count one attempt to endpoint ep_id (a stable endpoint id) of upstream:
 * pilotfish_upstream_requests_total{upstream, endpoint, code} + 1, code being
 * status when > 0, else the name of error (a code of docs/operations.md), and
 * us into the upstream's duration histogram. upstream and endpoint are copied
 * the first time ep_id is seen and must not change for that id.
 */
void pf_stats_upstream_count(struct pf_stats *st, unsigned ep_id, const char *upstream,
                             const char *endpoint, int status, enum pf_error error, uint64_t us);

/* pilotfish_upstream_retries_total{upstream} + 1 (same naming rules). */
void pf_stats_upstream_retry(struct pf_stats *st, unsigned ep_id, const char *upstream,
                             const char *endpoint);

/*
 * Core (proxy/upstream/upstream.c): the outcome (enum pf_outcome) of tx's current
 * attempt, timed from tx->t_up_start; with PF_OUTCOME_OK the status is taken
 * from the response head being handled.
 */
void pf_stats_upstream_report(struct pf_tx *tx, int outcome);

/* Core: tx is about to be retried after a failed attempt on its endpoint. */
void pf_stats_upstream_retried(struct pf_tx *tx);
/* Core: the retry budget refused tx's retry (pilotfish_upstream_retries_budget_exceeded_total). */
void pf_stats_upstream_retry_refused(struct pf_tx *tx);

/* ---- exposition ---- */

/*
 * Append the registry families (requests, durations, upstream requests,
 * upstream durations, retries) summed over the n stats of st, in Prometheus
 * text format 0.0.4: HELP and TYPE once per family, series sorted by labels.
 * All st must have the same buckets. Any thread, while the owners record.
 */
void pf_stats_render_series(struct pf_stats *const *st, unsigned n, struct evbuffer *out);

/*
 * The whole /metrics answer for server s: the registry of every worker and
 * the admin loop, plus connections, endpoints and their pools, errors,
 * reloads, build and process families, and every registered filter's
 * families through its metrics hook (proxy/filter.h). Main thread.
 */
void pf_stats_render(struct pf_server *s, struct evbuffer *out);

/* The Content-Type of the exposition format. */
#define PF_STATS_CONTENT_TYPE "text/plain; version=0.0.4; charset=utf-8"

/* Append s as a label value: backslash, double quote and newline escaped. */
void pf_stats_label_escape(struct evbuffer *out, const char *s);

/* For filters' metrics hooks: "# HELP name help" and "# TYPE name type". */
void pf_stats_put_head(struct evbuffer *out, const char *name, const char *type, const char *help);
/* One sample "name{key="val"} v"; key NULL for none (val escaped). */
void pf_stats_put_sample(struct evbuffer *out, const char *name, const char *key, const char *val,
                         uint64_t v);
/* A family of one unlabelled sample: its head, then "name v". */
void pf_stats_put_one(struct evbuffer *out, const char *name, const char *type, const char *help,
                      uint64_t v);

/*
 * Owner thread (the worker's sweep): drop the upstream series of endpoints
 * that are gone (their id free or reused), so rotating endpoint addresses
 * do not grow the registry. Waits for a scrape in progress.
 */
void pf_stats_prune_endpoints(struct pf_stats *st);

#endif /* PF_STATS_H */
