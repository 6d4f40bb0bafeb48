/*
 * filters/metrics.h: the metrics filter (docs/metrics.md).
 *
 * Counts every request of its routes in pilotfish_http_requests_total and
 * times it in pilotfish_http_request_duration_seconds. It has no settings
 * under `filters:`; histogram buckets are the top-level `metrics:` map.
 */
#ifndef PF_METRICS_H
#define PF_METRICS_H

#include "proxy/filter.h"

extern const struct pf_filter_ops pf_filter_metrics;

#endif /* PF_METRICS_H */
