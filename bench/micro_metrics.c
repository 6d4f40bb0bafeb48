/*
 * bench/micro_metrics.c: CPU cost of the metrics filter's on_done, the work
 * every proxied request does to count itself (a series lookup and a
 * histogram update). Prints nanoseconds per call; the unit tests check only
 * that every call is counted.
 *
 *   make bench-micro            (or: build/rel/bench/micro_metrics [CALLS])
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "filters/metrics.h"
#include "proxy/arena.h"
#include "proxy/core.h"
#include "proxy/stats.h"
#include "proxy/upstream/upstream.h"

static double now_s(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

int main(int argc, char **argv)
{
    static const char *const methods[] = {"GET", "POST", "HEAD", "DELETE"};
    unsigned long n = argc > 1 ? strtoul(argv[1], NULL, 10) : 5000000;
    struct pf_stats *st = pf_stats_new(NULL);
    struct pf_worker w = {.stats = st};
    struct pf_route route = {.name = "api"};
    struct pf_upstream_conf up = {.name = "app"};
    struct pf_tx tx;
    struct pf_slot slot = {0};
    double t0, took;

    if (n == 0) {
        fprintf(stderr, "usage: %s [CALLS > 0]\n", argv[0]);
        return 2;
    }
    if (pf_filter_metrics.worker_init(NULL, &w, &slot.wstate) != 0)
        return 1;
    memset(&tx, 0, sizeof(tx));
    tx.w = &w;
    tx.route = &route;
    tx.up = &up;
    tx.method = "GET";
    slot.ctx = pf_xcalloc(1, pf_filter_metrics.ctx_size);
    pf_filter_metrics.on_request(&tx, &slot);
    t0 = now_s();
    for (unsigned long i = 0; i < n; i++) {
        tx.method = methods[i & 3];
        tx.status = 200 + (int)(i % 5);
        pf_filter_metrics.on_done(&tx, &slot);
    }
    took = now_s() - t0;
    printf("metrics on_done: %.1f ns per call (%lu calls, 4 methods x 5 statuses)\n",
           took / (double)n * 1e9, n);
    free(slot.ctx);
    pf_filter_metrics.worker_fini(slot.wstate);
    pf_stats_free(st);
    return 0;
}
