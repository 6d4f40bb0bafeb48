/*
 * The fixture of the chain unit tests (test_chain.c, test_pause.c): test-only
 * filters that record every callback in a global call log, and a transaction
 * built by hand (config, route, wconf, worker, arena) whose chain functions
 * are called directly. Tests that end in pf_tx_resume()/pf_tx_abort() let the
 * real core finish the transaction: with no client connection it never
 * touches a socket. Include it in one test file per binary; each file uses
 * part of it, hence FX_UNUSED.
 */
#ifndef PF_CHAIN_FX_H
#define PF_CHAIN_FX_H

#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <event2/buffer.h>
#include <event2/event.h>

#include "proxy/arena.h"
#include "proxy/chain.h"
#include "proxy/core.h"
#include "proxy/filter.h"
#include "proxy/tx.h"

#define FX_UNUSED __attribute__((unused))
#define MAXF      8

/* ---- the call log ---- */

static FX_UNUSED char calls[4096];

static FX_UNUSED void log_call(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static FX_UNUSED void log_call(const char *fmt, ...)
{
    size_t len = strlen(calls);
    va_list ap;

    if (len > 0 && len < sizeof(calls) - 1)
        calls[len++] = ' ';
    va_start(ap, fmt);
    vsnprintf(calls + len, sizeof(calls) - len, fmt, ap);
    va_end(ap);
}

/* ---- test filters ---- */

/* What one filter instance does; its slot's conf points here. */
struct tconf {
    unsigned id;              /* index in cfg->filters, printed in the log */
    enum pf_verdict req;      /* on_request verdict */
    enum pf_verdict resp;     /* on_response verdict */
    enum pf_verdict body;     /* on_body verdict */
    int reply_status;         /* on PF_REPLIED from on_request: pf_tx_reply() with this */
    enum pf_error error_code; /* ... or pf_tx_error() with this code, when set */
    struct pf_slot *seen[4];  /* the slot given to on_request/response/body/done */
    unsigned done;            /* on_done calls, over every transaction */
};

static FX_UNUSED void *id_of(const struct pf_slot *s)
{
    return (void *)s->conf;
}

static FX_UNUSED enum pf_verdict rec_on_request(struct pf_tx *tx, struct pf_slot *s)
{
    struct tconf *c = id_of(s);

    c->seen[0] = s;
    log_call("req:%u", c->id);
    if (c->req == PF_REPLIED && c->error_code != PF_ERR_NONE) {
        pf_tx_error(tx, c->reply_status, c->error_code);
    } else if (c->req == PF_REPLIED && c->reply_status != 0) {
        struct evbuffer *b = evbuffer_new();

        evbuffer_add_printf(b, "reply-from-%u", c->id);
        pf_tx_reply(tx, c->reply_status, b);
        evbuffer_free(b);
    }
    return c->req;
}

static FX_UNUSED enum pf_verdict rec_on_response(struct pf_tx *tx, struct pf_slot *s)
{
    struct tconf *c = id_of(s);

    c->seen[1] = s;
    log_call("resp:%u/%d", c->id, pf_tx_status(tx));
    return c->resp;
}

static FX_UNUSED enum pf_verdict rec_on_body(struct pf_tx *tx, struct pf_slot *s, struct pf_body *b)
{
    struct tconf *c = id_of(s);

    (void)tx;
    c->seen[2] = s;
    log_call("%s:%u", b->eos ? "eos" : "body", c->id);
    evbuffer_add_buffer(b->out, b->in);
    return c->body;
}

static FX_UNUSED void rec_on_done(struct pf_tx *tx, struct pf_slot *s)
{
    struct tconf *c = id_of(s);

    (void)tx;
    c->seen[3] = s;
    c->done++;
    log_call("done:%u", c->id);
}

static FX_UNUSED const struct pf_filter_ops rec_ops = {
    .name = "rec",
    .on_request = rec_on_request,
    .on_response = rec_on_response,
    .on_body = rec_on_body,
    .on_done = rec_on_done,
};

/* Every callback NULL: the core must pass through it. */
static FX_UNUSED const struct pf_filter_ops null_ops = {
    .name = "null",
};

/* Same as null_ops but with a ctx, to see ctx allocation without callbacks. */
static FX_UNUSED const struct pf_filter_ops ctx24_ops = {
    .name = "ctx24",
    .ctx_size = 24,
};

/* ctx of 100 bytes, used as a byte counter by on_request/on_response. */
struct big_ctx {
    uint64_t requests; /* on_request calls seen in this ctx */
    unsigned char pad[92];
};

static FX_UNUSED enum pf_verdict big_on_request(struct pf_tx *tx, struct pf_slot *s)
{
    struct big_ctx *x = s->ctx;

    (void)tx;
    x->requests++;
    log_call("big-req:%llu", (unsigned long long)x->requests);
    return PF_NEXT;
}

static FX_UNUSED enum pf_verdict big_on_response(struct pf_tx *tx, struct pf_slot *s)
{
    struct big_ctx *x = s->ctx;

    (void)tx;
    log_call("big-resp:%llu", (unsigned long long)x->requests);
    return PF_NEXT;
}

static FX_UNUSED const struct pf_filter_ops big_ops = {
    .name = "big",
    .ctx_size = sizeof(struct big_ctx),
    .on_request = big_on_request,
    .on_response = big_on_response,
};

/* Uppercases the body as it streams. */
static FX_UNUSED enum pf_verdict upper_on_body(struct pf_tx *tx, struct pf_slot *s,
                                               struct pf_body *b)
{
    size_t n = evbuffer_get_length(b->in);
    unsigned char *p;

    (void)tx;
    (void)s;
    if (n == 0)
        return PF_NEXT;
    p = evbuffer_pullup(b->in, -1);
    for (size_t i = 0; i < n; i++) {
        if (p[i] >= 'a' && p[i] <= 'z')
            p[i] = (unsigned char)(p[i] - 'a' + 'A');
    }
    evbuffer_add_buffer(b->out, b->in);
    return PF_NEXT;
}

static FX_UNUSED const struct pf_filter_ops upper_ops = {
    .name = "upper",
    .on_body = upper_on_body,
};

/* Passes the body and, at eos, appends "-tail:<bytes seen>" (state in ctx). */
struct tail_ctx {
    uint64_t bytes; /* body bytes seen so far */
    unsigned eos;   /* eos calls seen */
};

static FX_UNUSED enum pf_verdict tail_on_body(struct pf_tx *tx, struct pf_slot *s,
                                              struct pf_body *b)
{
    struct tail_ctx *x = s->ctx;

    (void)tx;
    x->bytes += evbuffer_get_length(b->in);
    evbuffer_add_buffer(b->out, b->in);
    if (b->eos) {
        x->eos++;
        evbuffer_add_printf(b->out, "-tail:%llu", (unsigned long long)x->bytes);
    }
    return PF_NEXT;
}

static FX_UNUSED const struct pf_filter_ops tail_ops = {
    .name = "tail",
    .ctx_size = sizeof(struct tail_ctx),
    .on_body = tail_on_body,
};

/* Breaks the contract: reads nothing of in. */
static FX_UNUSED enum pf_verdict lazy_on_body(struct pf_tx *tx, struct pf_slot *s,
                                              struct pf_body *b)
{
    (void)tx;
    (void)s;
    (void)b;
    log_call("lazy");
    return PF_NEXT;
}

static FX_UNUSED const struct pf_filter_ops lazy_ops = {
    .name = "lazy",
    .on_body = lazy_on_body,
};

/*
 * Resumes itself from inside on_request, then returns PF_PAUSED (the I/O it
 * waited for was already done): pf_tx_resume(tx, conf->req), after
 * pf_tx_reply() when that verdict is PF_REPLIED. Logs "sync:<id>".
 */
static FX_UNUSED enum pf_verdict sync_on_request(struct pf_tx *tx, struct pf_slot *s)
{
    struct tconf *c = id_of(s);

    c->seen[0] = s;
    log_call("sync:%u", c->id);
    if (c->req == PF_REPLIED) {
        struct evbuffer *b = evbuffer_new();

        evbuffer_add_printf(b, "reply-from-%u", c->id);
        pf_tx_reply(tx, c->reply_status, b);
        evbuffer_free(b);
    }
    pf_tx_resume(tx, c->req);
    return PF_PAUSED;
}

static FX_UNUSED const struct pf_filter_ops sync_ops = {
    .name = "sync",
    .on_request = sync_on_request,
    .on_response = rec_on_response,
    .on_body = rec_on_body,
    .on_done = rec_on_done,
};

/*
 * Pauses on_request and waits for a zero-delay timer, which resumes with the
 * verdict conf->resp (after pf_tx_reply(202) for PF_REPLIED). The waiter is
 * the filter's own memory (as a wstate would hold), not the transaction's: it
 * keeps a pf_tx_ref, never the struct pf_tx *.
 */
#define MAX_WAITERS 1000

struct waiter {
    struct event *ev;
    struct pf_tx_ref ref;
    enum pf_verdict v;
};

static FX_UNUSED struct waiter waiters[MAX_WAITERS];
static FX_UNUSED unsigned n_waiters;
static FX_UNUSED unsigned n_woken_live; /* the transaction was there: resumed */
static FX_UNUSED unsigned n_woken_gone; /* it had ended: nothing touched */

static FX_UNUSED void waiter_cb(evutil_socket_t fd, short what, void *arg)
{
    struct waiter *wt = arg;
    struct pf_tx *tx = pf_tx_deref(wt->ref);

    (void)fd;
    (void)what;
    if (tx == NULL) {
        n_woken_gone++;
        return;
    }
    n_woken_live++;
    if (wt->v == PF_REPLIED)
        pf_tx_reply(tx, 202, NULL);
    pf_tx_resume(tx, wt->v);
}

static FX_UNUSED enum pf_verdict timer_on_request(struct pf_tx *tx, struct pf_slot *s)
{
    struct tconf *c = id_of(s);
    struct waiter *wt;
    struct timeval now = {0, 0};

    assert_true(n_waiters < MAX_WAITERS);
    wt = &waiters[n_waiters++];
    log_call("wait:%u", c->id);
    wt->ref = pf_tx_ref(tx);
    wt->v = c->resp;
    wt->ev = evtimer_new(pf_worker_base(pf_tx_worker(tx)), waiter_cb, wt);
    assert_non_null(wt->ev);
    evtimer_add(wt->ev, &now);
    return PF_PAUSED;
}

static FX_UNUSED const struct pf_filter_ops timer_ops = {
    .name = "timer",
    .on_request = timer_on_request,
    .on_done = rec_on_done,
};

/* ---- the fixture: a transaction built by hand ---- */

struct chain_fx {
    struct pf_config cfg;
    struct pf_filter_inst inst[MAXF];
    struct tconf conf[MAXF];
    unsigned order[MAXF]; /* the route's list: indexes into cfg.filters */
    struct pf_route route;
    void *wstates[MAXF];
    int wstate_tags[MAXF]; /* wstates[k] points at wstate_tags[k] */
    struct pf_wconf wc;
    struct pf_worker w;
    struct pf_arena *arena;
    struct pf_tx *tx;
    bool tx_freed; /* the core released the transaction (and the arena) */
};

static FX_UNUSED struct chain_fx fx;

static FX_UNUSED void evbuffer_free_cb(void *arg)
{
    evbuffer_free(arg);
}

static FX_UNUSED struct evbuffer *arena_evbuffer(struct pf_arena *a)
{
    struct evbuffer *b = evbuffer_new();

    assert_non_null(b);
    pf_arena_defer(a, evbuffer_free_cb, b);
    return b;
}

static FX_UNUSED int setup(void **state)
{
    (void)state;
    memset(&fx, 0, sizeof(fx));
    calls[0] = '\0';
    fx.arena = pf_arena_new(PF_ARENA_CHUNK);
    fx.w.base = event_base_new();
    assert_non_null(fx.w.base);
    n_waiters = n_woken_live = n_woken_gone = 0;
    return 0;
}

static FX_UNUSED int teardown(void **state)
{
    (void)state;
    if (!fx.tx_freed)
        pf_arena_free(fx.arena);
    for (unsigned i = 0; i < n_waiters; i++)
        event_free(waiters[i].ev);
    event_base_free(fx.w.base);
    pf_txref_fini(&fx.w);
    return 0;
}

/*
 * Configure n filter instances (cfg.filters[k] uses ops[k], conf[k]) and a
 * route listing them in order[0..n_route).
 */
static FX_UNUSED void chain_config(unsigned n, const struct pf_filter_ops *const ops[],
                                   unsigned n_route, const unsigned order[])
{
    assert_true(n <= MAXF && n_route <= MAXF);
    for (unsigned k = 0; k < n; k++) {
        fx.conf[k].id = k;
        fx.inst[k].ops = ops[k];
        fx.inst[k].conf = &fx.conf[k];
        fx.wstates[k] = &fx.wstate_tags[k];
    }
    for (unsigned i = 0; i < n_route; i++)
        fx.order[i] = order[i];
    fx.cfg.filters = fx.inst;
    fx.cfg.n_filters = n;
    fx.route.name = "r";
    fx.route.prefix = "/";
    fx.route.prefix_len = 1;
    fx.route.filters = fx.order;
    fx.route.n_filters = n_route;
    fx.wc.cfg = &fx.cfg;
    fx.wc.wstates = fx.wstates;
    fx.wc.refs = 1; /* the worker's; each transaction adds one */
    fx.w.wc = &fx.wc;
    fx.w.rng[0] = 0x1234;
    fx.w.rng[1] = 0x5678;
}

/* A transaction of the configured route in arena a, through pf_chain_init. */
static FX_UNUSED struct pf_tx *tx_make(struct pf_arena *a)
{
    struct pf_tx *tx = pf_arena_alloc(a, sizeof(*tx));

    tx->arena = a;
    tx->w = &fx.w;
    tx->wc = &fx.wc;
    fx.wc.refs++;
    tx->cfg = &fx.cfg;
    tx->route = &fx.route;
    tx->method = "GET";
    tx->method_id = HTTP_GET;
    tx->url = "/";
    tx->http_major = 1;
    tx->http_minor = 1;
    tx->client_keepalive = true;
    tx->req_done = true;
    tx->phase = PF_TX_FILTERS;
    tx->body_a = arena_evbuffer(a);
    tx->body_b = arena_evbuffer(a);
    pf_chain_init(tx);
    return tx;
}

/* chain_config, then the fixture's transaction (in fx.arena). */
static FX_UNUSED struct pf_tx *chain_build(unsigned n, const struct pf_filter_ops *const ops[],
                                           unsigned n_route, const unsigned order[])
{
    chain_config(n, ops, n_route, order);
    fx.tx = tx_make(fx.arena);
    return fx.tx;
}

/* n rec filters, listed in the route in cfg order. */
static FX_UNUSED struct pf_tx *chain_rec(unsigned n)
{
    const struct pf_filter_ops *ops[MAXF];
    unsigned order[MAXF];

    for (unsigned i = 0; i < n; i++) {
        ops[i] = &rec_ops;
        order[i] = i;
    }
    return chain_build(n, ops, n, order);
}

/* Run data (may be NULL) through pf_chain_body and append the result to out. */
static FX_UNUSED enum pf_verdict body_through(struct pf_tx *tx, const char *data, size_t len,
                                              bool eos, struct evbuffer *result)
{
    struct evbuffer *in = NULL;
    struct evbuffer *out = NULL;
    enum pf_verdict v;

    if (data != NULL) {
        in = evbuffer_new();
        evbuffer_add(in, data, len);
    }
    v = pf_chain_body(tx, in, eos, &out);
    if (in != NULL) {
        assert_int_equal(evbuffer_get_length(in), 0); /* the chain took the data */
        evbuffer_free(in);
    }
    if (v == PF_NEXT) {
        assert_non_null(out);
        evbuffer_add_buffer(result, out);
    }
    return v;
}

/* The contents of b as a NUL-terminated string (static buffer). */
static FX_UNUSED const char *buf_str(struct evbuffer *b)
{
    static char s[8192];
    size_t n = evbuffer_get_length(b);

    assert_true(n < sizeof(s));
    evbuffer_copyout(b, s, n);
    s[n] = '\0';
    return s;
}

#endif /* PF_CHAIN_FX_H */
