/*
 * A fake transaction for filter unit tests: implements every function of
 * proxy/filter.h without sockets. #include "tests/unit/fake_tx.h" in exactly
 * one test file (it defines the functions), and link with the library.
 */
#ifndef PF_FAKE_TX_H
#define PF_FAKE_TX_H

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <event2/buffer.h>

#include "proxy/arena.h"
#include "proxy/filter.h"

#define FAKE_MAX_HDRS 64

struct fake_hdr {
    char *name;
    char *value;
};

struct pf_worker {
    unsigned index;
    unsigned count;
    void *base;
};

struct pf_tx {
    struct pf_arena *arena;
    struct pf_worker *worker;
    const char *method;
    const char *path;
    int http_minor;
    const char *client;
    const char *route;
    const char *upstream;
    struct fake_hdr req[FAKE_MAX_HDRS];
    unsigned n_req;
    struct fake_hdr resp[FAKE_MAX_HDRS];
    unsigned n_resp;
    int status;
    int replied_status;     /* status given to pf_tx_reply/pf_tx_error, 0 if none */
    const char *error_code; /* code given to pf_tx_error */
    struct evbuffer *reply_body;
    int resumed; /* times pf_tx_resume was called */
    enum pf_verdict resume_verdict;
};

static struct pf_worker fake_worker = {0, 1, NULL};
static uint64_t fake_now_us = 1000000;

static inline void fake_tx_init(struct pf_tx *tx, const char *method, const char *path)
{
    memset(tx, 0, sizeof(*tx));
    tx->arena = pf_arena_new(8192);
    tx->worker = &fake_worker;
    tx->method = method;
    tx->path = path;
    tx->http_minor = 1;
    tx->client = "127.0.0.1";
    tx->route = "route-0";
    tx->upstream = "app";
    tx->status = 200;
    tx->reply_body = evbuffer_new();
}

static inline void fake_tx_fini(struct pf_tx *tx)
{
    evbuffer_free(tx->reply_body);
    pf_arena_free(tx->arena);
}

static inline void fake_tx_req_add(struct pf_tx *tx, const char *name, const char *value)
{
    tx->req[tx->n_req].name = pf_arena_strndup(tx->arena, name, strlen(name));
    tx->req[tx->n_req].value = pf_arena_strndup(tx->arena, value, strlen(value));
    tx->n_req++;
}

void pf_tx_resp_header_add(struct pf_tx *tx, const char *name, const char *value)
{
    tx->resp[tx->n_resp].name = pf_arena_strndup(tx->arena, name, strlen(name));
    tx->resp[tx->n_resp].value = pf_arena_strndup(tx->arena, value, strlen(value));
    tx->n_resp++;
}

void pf_tx_resp_header_del(struct pf_tx *tx, const char *name)
{
    unsigned j = 0;
    for (unsigned i = 0; i < tx->n_resp; i++) {
        if (strcasecmp(tx->resp[i].name, name) != 0)
            tx->resp[j++] = tx->resp[i];
    }
    tx->n_resp = j;
}

void pf_tx_resp_header_set(struct pf_tx *tx, const char *name, const char *value)
{
    pf_tx_resp_header_del(tx, name);
    pf_tx_resp_header_add(tx, name, value);
}

static const char *fake_find(const struct fake_hdr *h, unsigned n, const char *name)
{
    for (unsigned i = 0; i < n; i++) {
        if (strcasecmp(h[i].name, name) == 0)
            return h[i].value;
    }
    return NULL;
}

const char *pf_tx_req_header(const struct pf_tx *tx, const char *name)
{
    return fake_find(tx->req, tx->n_req, name);
}

const char *pf_tx_resp_header(const struct pf_tx *tx, const char *name)
{
    return fake_find(tx->resp, tx->n_resp, name);
}

void pf_tx_req_header_each(const struct pf_tx *tx, pf_header_fn fn, void *arg)
{
    for (unsigned i = 0; i < tx->n_req; i++) {
        if (fn(arg, tx->req[i].name, tx->req[i].value) != 0)
            return;
    }
}

void pf_tx_resp_header_each(const struct pf_tx *tx, pf_header_fn fn, void *arg)
{
    for (unsigned i = 0; i < tx->n_resp; i++) {
        if (fn(arg, tx->resp[i].name, tx->resp[i].value) != 0)
            return;
    }
}

void pf_tx_reply(struct pf_tx *tx, int status, struct evbuffer *body)
{
    tx->replied_status = status;
    tx->status = status;
    tx->n_resp = 0;
    if (body != NULL)
        evbuffer_add_buffer(tx->reply_body, body);
}

void pf_tx_error(struct pf_tx *tx, int status, const char *code)
{
    pf_tx_reply(tx, status, NULL);
    tx->error_code = code;
    evbuffer_add_printf(tx->reply_body, "{\"error\":\"%s\"}", code);
    pf_tx_resp_header_set(tx, "X-Pilotfish-Error", code);
}

void pf_tx_resume(struct pf_tx *tx, enum pf_verdict v)
{
    tx->resumed++;
    tx->resume_verdict = v;
}

struct pf_arena *pf_tx_arena(struct pf_tx *tx)
{
    return tx->arena;
}

struct pf_worker *pf_tx_worker(struct pf_tx *tx)
{
    return tx->worker;
}

unsigned pf_worker_index(const struct pf_worker *w)
{
    return w->index;
}

unsigned pf_worker_count(const struct pf_worker *w)
{
    return w->count;
}

void *pf_worker_base(struct pf_worker *w)
{
    return w->base;
}

const char *pf_tx_method(const struct pf_tx *tx)
{
    return tx->method;
}

const char *pf_tx_path(const struct pf_tx *tx)
{
    return tx->path;
}

int pf_tx_http_minor(const struct pf_tx *tx)
{
    return tx->http_minor;
}

bool pf_tx_is_head(const struct pf_tx *tx)
{
    return strcmp(tx->method, "HEAD") == 0;
}

const char *pf_tx_client_addr(const struct pf_tx *tx)
{
    return tx->client;
}

const char *pf_tx_route_name(const struct pf_tx *tx)
{
    return tx->route;
}

const char *pf_tx_upstream_name(const struct pf_tx *tx)
{
    return tx->upstream;
}

int pf_tx_status(const struct pf_tx *tx)
{
    return tx->status;
}

uint64_t pf_now_us(void)
{
    return fake_now_us;
}

#endif /* PF_FAKE_TX_H */
