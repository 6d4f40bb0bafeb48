/*
 * filters/metrics.c: counts and times every request of the routes that list
 * it (docs/metrics.md). It is first in the default chain, so
 * its on_done sees every outcome: upstream responses, short-circuits of later
 * filters (a 429, a cache hit), the proxy's own errors (502, 503, 504) and
 * client aborts (499).
 *
 * The only filter that includes proxy/stats.h: it records into the stats of
 * its worker, through one handle per route that its wstate caches by the
 * route's name pointer (stable for the snapshot the wstate belongs to).
 */
#include "filters/metrics.h"

#include <errno.h>
#include <stdlib.h>

#include "proxy/arena.h"
#include "proxy/conf.h"
#include "proxy/filter.h"
#include "proxy/stats.h"

struct metrics_ctx {
    uint64_t t0; /* us, when on_request ran */
};

struct route_cache {
    const char *name;         /* the snapshot's route name (compared by address) */
    struct pf_stats_route *h; /* owned by the worker's stats */
};

struct metrics_wstate {
    struct pf_stats *st;   /* the worker's */
    struct route_cache *v; /* routes seen with this snapshot */
    unsigned n;
    unsigned cap;
};

static const struct pf_conf_key metrics_keys[] = {
    {NULL, 0, 0, 0, 0, NULL},
};

/* No settings of its own: the buckets are the top-level `metrics:` map. */
static int metrics_conf_parse(const struct pf_conf_node *n, void **conf, struct pf_err *err)
{
    const struct pf_conf_node *b = pf_conf_get(n, "buckets");

    *conf = NULL;
    if (b != NULL) {
        pf_err_at(err, b->key_node,
                  "filters.metrics.buckets: histogram buckets are a top-level setting, "
                  "metrics: {buckets: [...]}");
        return -EINVAL;
    }
    return pf_conf_fill(n, metrics_keys, NULL, err);
}

static int metrics_worker_init(const void *conf, struct pf_worker *w, void **wstate)
{
    struct metrics_wstate *ws = pf_xcalloc(1, sizeof(*ws));

    (void)conf;
    ws->st = pf_stats_of(w);
    *wstate = ws;
    return 0;
}

static void metrics_worker_fini(void *wstate)
{
    struct metrics_wstate *ws = wstate;

    if (ws == NULL)
        return;
    free(ws->v);
    free(ws);
}

static enum pf_verdict metrics_on_request(struct pf_tx *tx, struct pf_slot *s)
{
    struct metrics_ctx *ctx = s->ctx;

    (void)tx;
    ctx->t0 = pf_now_us();
    return PF_NEXT;
}

static struct pf_stats_route *route_handle(struct metrics_wstate *ws, struct pf_tx *tx)
{
    const char *name = pf_tx_route_name(tx);

    for (unsigned i = 0; i < ws->n; i++) {
        if (ws->v[i].name == name)
            return ws->v[i].h;
    }
    if (ws->n == ws->cap) {
        ws->cap = ws->cap ? ws->cap * 2 : 8;
        ws->v = pf_xrealloc(ws->v, ws->cap * sizeof(*ws->v));
    }
    ws->v[ws->n].name = name;
    ws->v[ws->n].h = pf_stats_route_get(ws->st, name, pf_tx_upstream_name(tx));
    return ws->v[ws->n++].h;
}

static void metrics_on_done(struct pf_tx *tx, struct pf_slot *s)
{
    struct metrics_wstate *ws = s->wstate;
    struct metrics_ctx *ctx = s->ctx;
    int status = pf_tx_status(tx);
    uint64_t us = pf_clock_read_us() - ctx->t0;
    struct pf_stats_route *h;

    if (ws == NULL || ws->st == NULL)
        return;
    h = route_handle(ws, tx);
    /* no status at all: the client went away before anything was answered */
    pf_stats_route_count(h, pf_tx_method(tx), status > 0 ? status : 499, us);
    pf_stats_slo_count(h, tx, us);
}

const struct pf_filter_ops pf_filter_metrics = {
    .name = "metrics",
    .ctx_size = sizeof(struct metrics_ctx),
    .conf_parse = metrics_conf_parse,
    .worker_init = metrics_worker_init,
    .worker_fini = metrics_worker_fini,
    .on_request = metrics_on_request,
    .on_done = metrics_on_done,
};
