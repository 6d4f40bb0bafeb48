/*
 * filters/gzip.h: on-the-fly gzip compression of response bodies
 * (docs/filters/gzip.md).
 *
 * The filter decides in on_response whether a response is compressed and
 * then deflates it chunk by chunk in on_body; it never holds a whole body.
 */
#ifndef PF_GZIP_H
#define PF_GZIP_H

#include <stdint.h>

#include "proxy/conf.h"
#include "proxy/filter.h"

/* Settings under `filters: gzip:`; read-only once parsed. */
struct pf_gzip_conf {
    int64_t level;           /* deflate level 1..9 (6) */
    uint64_t min_length;     /* smallest Content-Length compressed, bytes (1000) */
    struct pf_strlist types; /* media types, lower case; wildcards: see gzip.md */
    int64_t window;          /* deflate window bits 9..15 (15) */
    int64_t mem_level;       /* deflate memLevel 1..9 (8) */
};

extern const struct pf_filter_ops pf_filter_gzip;

/*
 * Process-wide totals since start, for pilotfish_gzip_bytes_in_total and
 * pilotfish_gzip_bytes_out_total: body bytes fed to deflate and gzip bytes
 * it produced, over every compressed response (also unfinished ones). The
 * counters survive reloads. Any thread; relaxed atomics, so a scrape may see
 * in and out from slightly different instants.
 */
void pf_gzip_stats(uint64_t *bytes_in, uint64_t *bytes_out);

#endif /* PF_GZIP_H */
