/*
 * A transaction for filter unit tests, without sockets: a real struct pf_tx
 * (proxy/core.h) built by hand, so filters run against the real accessors,
 * pf_tx_reply() and pf_tx_error() of proxy/tx.c. Link with the library.
 * #include "tests/unit/fake_tx.h" in exactly one test file (it defines the
 * fake worker).
 *
 * fake_now_us freezes pf_now_us() (0: the real clock again).
 */
#ifndef PF_FAKE_TX_H
#define PF_FAKE_TX_H

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>

#include "proxy/arena.h"
#include "proxy/core.h"
#include "proxy/filter.h"
#include "proxy/tx.h"

#define fake_now_us pf_clock_fixed_us

static struct pf_worker fake_worker = {.index = 0, .count = 1, .rng = {0x1234, 0x5678}};

static inline void fake_tx_set_client(struct pf_tx *tx, const char *addr)
{
    size_t n = strlen(addr);

    if (n >= sizeof(tx->conn->client))
        n = sizeof(tx->conn->client) - 1;
    memcpy(tx->conn->client, addr, n);
    tx->conn->client[n] = '\0';
}

static inline void fake_tx_set_route(struct pf_tx *tx, const char *name)
{
    struct pf_route *r = pf_arena_alloc(tx->arena, sizeof(*r));

    r->name = pf_arena_strndup(tx->arena, name, strlen(name));
    tx->route = r;
}

/* A GET-like transaction for method and path, from client 127.0.0.1 on route-0 to app. */
static inline void fake_tx_init(struct pf_tx *tx, const char *method, const char *path)
{
    struct pf_upstream_conf *up;

    memset(tx, 0, sizeof(*tx));
    tx->arena = pf_arena_new(PF_ARENA_CHUNK);
    tx->w = &fake_worker;
    tx->method = method;
    tx->method_id = HTTP_GET;
    for (int m = 0; http_method_str((enum http_method)m)[0] != '<'; m++) {
        if (strcmp(http_method_str((enum http_method)m), method) == 0)
            tx->method_id = (enum http_method)m; /* as the parser would set it */
    }
    tx->url = path;
    tx->http_major = 1;
    tx->http_minor = 1;
    tx->conn = pf_arena_alloc(tx->arena, sizeof(*tx->conn));
    fake_tx_set_client(tx, "127.0.0.1");
    fake_tx_set_route(tx, "route-0");
    up = pf_arena_alloc(tx->arena, sizeof(*up));
    up->name = pf_arena_strndup(tx->arena, "app", 3);
    tx->up = up;
    tx->status = 200;
}

static inline void fake_tx_fini(struct pf_tx *tx)
{
    pf_arena_free(tx->arena); /* the reply body too */
}

static inline void fake_tx_req_add(struct pf_tx *tx, const char *name, const char *value)
{
    pf_hdrs_add(tx->arena, &tx->req, name, value);
}

/* The status given to pf_tx_reply()/pf_tx_error(), 0 when the filter did not reply. */
static inline int fake_tx_replied_status(const struct pf_tx *tx)
{
    return tx->reply != NULL ? tx->status : 0;
}

#endif /* PF_FAKE_TX_H */
