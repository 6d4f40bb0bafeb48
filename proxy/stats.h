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
 * owner's list under a per-stats mutex. A scrape, on the main thread, takes
 * that mutex only while copying the list, then reads the values with relaxed
 * loads: it never waits for a request, and a request never waits for it
 * (except that a series creation may wait for the copy).
 *
 * Histogram buckets come from `metrics: {buckets: [...]}` at startup; a
 * reload that changes them is reported and applies at the next restart.
 *
 * This header is safe for filters to include (filters/metrics.c does): it
 * names core types only as opaque pointers.
 */
#ifndef PF_STATS_H
#define PF_STATS_H

#include <stdbool.h>
#include <stdint.h>

struct evbuffer;
struct pf_conf_node;
struct pf_err;
struct pf_metrics_conf;
struct pf_server;
struct pf_stats;
struct pf_stats_route;
struct pf_tx;
struct pf_worker;

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
 * Core: count a client request that never reached a route's filter chain
 * (400, 404 no_route, 408, 431 ...) under route="" and upstream="", timed
 * from the start of the transaction. Worker thread of tx.
 */
void pf_stats_count_unrouted(struct pf_tx *tx);

/* ---- upstream attempts (owner thread) ---- */

/*
 * Count one attempt to endpoint ep_id (a stable endpoint id) of upstream:
 * pilotfish_upstream_requests_total{upstream, endpoint, code} + 1, code being
 * status when > 0, else error (an error code of docs/operations.md), and us into the
 * upstream's duration histogram. upstream and endpoint are copied the first
 * time ep_id is seen and must not change for that id.
 */
void pf_stats_upstream_count(struct pf_stats *st, unsigned ep_id, const char *upstream,
                             const char *endpoint, int status, const char *error, uint64_t us);

/* pilotfish_upstream_retries_total{upstream} + 1 (same naming rules). */
void pf_stats_upstream_retry(struct pf_stats *st, unsigned ep_id, const char *upstream,
                             const char *endpoint);

/*
 * Core (proxy/upstream.c): the outcome (enum pf_outcome) of tx's current
 * attempt, timed from tx->t_up_start; with PF_OUTCOME_OK the status is taken
 * from the response head being handled.
 */
void pf_stats_upstream_report(struct pf_tx *tx, int outcome);

/* Core: tx is about to be retried after a failed attempt on its endpoint. */
void pf_stats_upstream_retried(struct pf_tx *tx);

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
 * the admin loop, plus connections, endpoint pools, errors, gzip, rate
 * limiting, reloads, build and process families. Main thread.
 */
void pf_stats_render(struct pf_server *s, struct evbuffer *out);

/* The Content-Type of the exposition format. */
#define PF_STATS_CONTENT_TYPE "text/plain; version=0.0.4; charset=utf-8"

/* Append s as a label value: backslash, double quote and newline escaped. */
void pf_stats_label_escape(struct evbuffer *out, const char *s);

#endif /* PF_STATS_H */
