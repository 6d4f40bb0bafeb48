/*
 * filters/cache/refresh.c: background refreshes (stale-while-revalidate: a
 * stale entry is served at once and refreshed by a background transaction,
 * see cache.c): what the refresh sends upstream, the counters of how
 * refreshes ended and their metrics family.
 */
#include "filters/cache/cache-int.h"

#include <strings.h>

#include "proxy/defs.h"
#include "proxy/filter.h"
#include "proxy/stats.h"
#include "proxy/syntax.h"
#include "filters/cache/store.h"

static const char *const names[PF_REFRESH_N] = {
    "updated", "revalidated", "uncacheable", "failed", "redis",
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

/*
 * A request credential a background refresh does not carry (it is made for a shared entry, not
 * for the client whose hit started it), unless the entry is keyed on that field (Vary or
 * key.include_headers): then the value is the entry's own and the origin needs it to answer the
 * same variant.
 */
static bool credential_dropped(const struct pf_cache_conf *c, const char *vary, const char *name)
{
    for (unsigned i = 0; i < c->include_headers.n; i++) {
        if (strcasecmp(c->include_headers.v[i], name) == 0)
            return false;
    }
    return vary == NULL || !pf_http_list_has(vary, name);
}

void pf_cache_refresh_headers(const struct pf_cache_conf *c, struct pf_cstore *st, struct pf_tx *tx,
                              const char *key)
{
    static const char *const dropped[] = {
        "if-none-match", "if-modified-since",   "if-range",
        "if-match",      "if-unmodified-since", "range",
    };
    static const char *const credentials[] = {"authorization", "proxy-authorization", "cookie"};
    char vary[VARY_MAX];
    bool has_vary = pf_cstore_vary(st, key, vary, sizeof(vary));

    for (size_t i = 0; i < PF_COUNTOF(dropped); i++)
        pf_tx_req_header_del(tx, dropped[i]);
    for (size_t i = 0; i < PF_COUNTOF(credentials); i++) {
        if (credential_dropped(c, has_vary ? vary : NULL, credentials[i]))
            pf_tx_req_header_del(tx, credentials[i]);
    }
}
