/*
 * filters/cache/refresh.c: the counters of background refreshes
 * (stale-while-revalidate: a stale entry is served at once and refreshed by a
 * background transaction, see cache.c) and their metrics family.
 */
#include "filters/cache/cache.h"

#include "proxy/stats.h"

static const char *const names[PF_REFRESH_N] = {
    "updated",
    "revalidated",
    "uncacheable",
    "failed",
};

static struct pf_counter_set counters = PF_COUNTER_SET(PF_REFRESH_N);
static __thread _Atomic uint64_t *mine;

void pf_cache_count_refresh(enum pf_cache_refresh r)
{
    if (mine == NULL)
        mine = pf_counter_cells(&counters);
    pf_counter_add(&mine[r], 1);
}

void pf_cache_refresh_metrics(struct evbuffer *out)
{
    pf_stats_put_head(out, "pilotfish_cache_background_refreshes_total", "counter",
                      "Background refreshes of stale entries (stale-while-revalidate), by result.");
    for (unsigned i = 0; i < PF_REFRESH_N; i++)
        pf_stats_put_sample(out, "pilotfish_cache_background_refreshes_total", "result", names[i],
                            pf_counter_sum(&counters, i));
}
