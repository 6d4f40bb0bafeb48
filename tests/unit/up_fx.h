/*
 * Fixtures for the upstream subsystem's unit tests: a hand-built snapshot of
 * one upstream "app" with n endpoints, bound to the endpoint table, and a
 * worker with its own event_base (no threads, no listeners).
 */
#ifndef PF_TEST_UP_FX_H
#define PF_TEST_UP_FX_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>

#include "proxy/arena.h"
#include "proxy/conf.h"
#include "proxy/core.h"
#include "proxy/upstream/breaker.h"
#include "proxy/upstream/endpoint.h"

/* Upstream "app" with n endpoints "127.0.<i>:80" (text only), balance b, bound. */
static inline struct pf_config *fx_cfg_new(unsigned n, enum pf_balance b)
{
    struct pf_config *cfg = pf_xcalloc(1, sizeof(*cfg));
    struct pf_upstream_conf *up;
    char text[32];

    cfg->path = pf_xstrdup("test.yaml");
    cfg->n_upstreams = 1;
    cfg->upstreams = up = pf_xcalloc(1, sizeof(*up));
    up->name = pf_xstrdup("app");
    up->n_endpoints = n;
    up->balance = b;
    up->connect_timeout_ms = 1000;
    up->request_timeout_ms = 30000;
    up->pool.max_idle = 64;
    up->pool.idle_timeout_ms = 60000;
    up->pool.max_lifetime_ms = 3600000;
    pf_breaker_conf_defaults(&up->breaker);
    up->endpoints = pf_xcalloc(n, sizeof(*up->endpoints));
    for (unsigned i = 0; i < n; i++) {
        snprintf(text, sizeof(text), "127.0.%u.%u:80", i >> 8, i & 0xff);
        up->endpoints[i].text = pf_xstrdup(text);
    }
    if (pf_upstream_bind(cfg) != 0)
        abort();
    return cfg;
}

static inline void fx_cfg_free(struct pf_config *cfg)
{
    if (cfg->release != NULL)
        cfg->release(cfg);
    for (unsigned i = 0; i < cfg->upstreams[0].n_endpoints; i++)
        free(cfg->upstreams[0].endpoints[i].text);
    free(cfg->upstreams[0].endpoints);
    free(cfg->upstreams[0].endpoint_ids);
    free(cfg->upstreams[0].name);
    free(cfg->upstreams);
    free(cfg->path);
    free(cfg);
}

/* A worker with a private event_base and a fixed random seed. */
static inline void fx_worker_init(struct pf_worker *w)
{
    memset(w, 0, sizeof(*w));
    w->base = event_base_new();
    if (w->base == NULL)
        abort();
    pf_stream_loop_init(&w->sloop, w->base);
    TAILQ_INIT(&w->conns);
    w->rng[0] = 0x9E3779B97F4A7C15ull;
    w->rng[1] = 0xD1B54A32D192ED03ull;
}

static inline void fx_worker_fini(struct pf_worker *w)
{
    pf_stream_loop_fini(&w->sloop);
    event_base_free(w->base);
}

#endif /* PF_TEST_UP_FX_H */
