/*
 * Unit tests of proxy/chain.c: the onion semantics of proxy/filter.h, checked
 * with test-only filters that record every callback in a global call log.
 *
 * A transaction is built by hand (config, route, wconf, worker, arena) and
 * the chain functions are called directly. The tests that end in
 * pf_tx_resume()/pf_tx_abort() let the real core finish the transaction: with
 * no client connection it never touches a socket.
 */
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

#include "proxy/arena.h"
#include "proxy/chain.h"
#include "proxy/core.h"
#include "proxy/filter.h"
#include "proxy/tx.h"

#define MAXF 8

/* ---- the call log ---- */

static char calls[4096];

static void log_call(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static void log_call(const char *fmt, ...)
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
    unsigned id;             /* index in cfg->filters, printed in the log */
    enum pf_verdict req;     /* on_request verdict */
    enum pf_verdict resp;    /* on_response verdict */
    enum pf_verdict body;    /* on_body verdict */
    int reply_status;        /* on PF_REPLIED from on_request: pf_tx_reply() with this */
    struct pf_slot *seen[4]; /* the slot given to on_request/response/body/done */
};

static void *id_of(const struct pf_slot *s)
{
    return (void *)s->conf;
}

static enum pf_verdict rec_on_request(struct pf_tx *tx, struct pf_slot *s)
{
    struct tconf *c = id_of(s);

    c->seen[0] = s;
    log_call("req:%u", c->id);
    if (c->req == PF_REPLIED && c->reply_status != 0) {
        struct evbuffer *b = evbuffer_new();

        evbuffer_add_printf(b, "reply-from-%u", c->id);
        pf_tx_reply(tx, c->reply_status, b);
        evbuffer_free(b);
    }
    return c->req;
}

static enum pf_verdict rec_on_response(struct pf_tx *tx, struct pf_slot *s)
{
    struct tconf *c = id_of(s);

    c->seen[1] = s;
    log_call("resp:%u/%d", c->id, pf_tx_status(tx));
    return c->resp;
}

static enum pf_verdict rec_on_body(struct pf_tx *tx, struct pf_slot *s, struct pf_body *b)
{
    struct tconf *c = id_of(s);

    (void)tx;
    c->seen[2] = s;
    log_call("%s:%u", b->eos ? "eos" : "body", c->id);
    evbuffer_add_buffer(b->out, b->in);
    return c->body;
}

static void rec_on_done(struct pf_tx *tx, struct pf_slot *s)
{
    struct tconf *c = id_of(s);

    (void)tx;
    c->seen[3] = s;
    log_call("done:%u", c->id);
}

static const struct pf_filter_ops rec_ops = {
    .name = "rec",
    .on_request = rec_on_request,
    .on_response = rec_on_response,
    .on_body = rec_on_body,
    .on_done = rec_on_done,
};

/* Every callback NULL: the core must pass through it. */
static const struct pf_filter_ops null_ops = {
    .name = "null",
};

/* Same as null_ops but with a ctx, to see ctx allocation without callbacks. */
static const struct pf_filter_ops ctx24_ops = {
    .name = "ctx24",
    .ctx_size = 24,
};

/* ctx of 100 bytes, used as a byte counter by on_request/on_response. */
struct big_ctx {
    uint64_t requests; /* on_request calls seen in this ctx */
    unsigned char pad[92];
};

static enum pf_verdict big_on_request(struct pf_tx *tx, struct pf_slot *s)
{
    struct big_ctx *x = s->ctx;

    (void)tx;
    x->requests++;
    log_call("big-req:%llu", (unsigned long long)x->requests);
    return PF_NEXT;
}

static enum pf_verdict big_on_response(struct pf_tx *tx, struct pf_slot *s)
{
    struct big_ctx *x = s->ctx;

    (void)tx;
    log_call("big-resp:%llu", (unsigned long long)x->requests);
    return PF_NEXT;
}

static const struct pf_filter_ops big_ops = {
    .name = "big",
    .ctx_size = sizeof(struct big_ctx),
    .on_request = big_on_request,
    .on_response = big_on_response,
};

/* Uppercases the body as it streams. */
static enum pf_verdict upper_on_body(struct pf_tx *tx, struct pf_slot *s, struct pf_body *b)
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

static const struct pf_filter_ops upper_ops = {
    .name = "upper",
    .on_body = upper_on_body,
};

/* Passes the body and, at eos, appends "-tail:<bytes seen>" (state in ctx). */
struct tail_ctx {
    uint64_t bytes; /* body bytes seen so far */
    unsigned eos;   /* eos calls seen */
};

static enum pf_verdict tail_on_body(struct pf_tx *tx, struct pf_slot *s, struct pf_body *b)
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

static const struct pf_filter_ops tail_ops = {
    .name = "tail",
    .ctx_size = sizeof(struct tail_ctx),
    .on_body = tail_on_body,
};

/* Breaks the contract: reads nothing of in. */
static enum pf_verdict lazy_on_body(struct pf_tx *tx, struct pf_slot *s, struct pf_body *b)
{
    (void)tx;
    (void)s;
    (void)b;
    log_call("lazy");
    return PF_NEXT;
}

static const struct pf_filter_ops lazy_ops = {
    .name = "lazy",
    .on_body = lazy_on_body,
};

/*
 * Resumes itself from inside on_request, then returns PF_PAUSED (the I/O it
 * waited for was already done): pf_tx_resume(tx, conf->req), after
 * pf_tx_reply() when that verdict is PF_REPLIED. Logs "sync:<id>".
 */
static enum pf_verdict sync_on_request(struct pf_tx *tx, struct pf_slot *s)
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

static const struct pf_filter_ops sync_ops = {
    .name = "sync",
    .on_request = sync_on_request,
    .on_response = rec_on_response,
    .on_body = rec_on_body,
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

static struct chain_fx fx;

static void evbuffer_free_cb(void *arg)
{
    evbuffer_free(arg);
}

static struct evbuffer *arena_evbuffer(void)
{
    struct evbuffer *b = evbuffer_new();

    assert_non_null(b);
    pf_arena_defer(fx.arena, evbuffer_free_cb, b);
    return b;
}

static int setup(void **state)
{
    (void)state;
    memset(&fx, 0, sizeof(fx));
    calls[0] = '\0';
    fx.arena = pf_arena_new(PF_ARENA_CHUNK);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    if (!fx.tx_freed)
        pf_arena_free(fx.arena);
    return 0;
}

/*
 * Configure n filter instances (cfg.filters[k] uses ops[k], conf[k]) and a
 * route listing them in order[0..n_route), then create the transaction and
 * run pf_chain_init.
 */
static struct pf_tx *chain_build(unsigned n, const struct pf_filter_ops *const ops[],
                                 unsigned n_route, const unsigned order[])
{
    struct pf_tx *tx;

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
    fx.wc.refs = 2; /* the worker's + the transaction's */
    fx.w.wc = &fx.wc;
    fx.w.rng[0] = 0x1234;
    fx.w.rng[1] = 0x5678;

    tx = pf_arena_alloc(fx.arena, sizeof(*tx));
    tx->arena = fx.arena;
    tx->w = &fx.w;
    tx->wc = &fx.wc;
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
    tx->body_a = arena_evbuffer();
    tx->body_b = arena_evbuffer();
    fx.tx = tx;
    pf_chain_init(tx);
    return tx;
}

/* n rec filters, listed in the route in cfg order. */
static struct pf_tx *chain_rec(unsigned n)
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
static enum pf_verdict body_through(struct pf_tx *tx, const char *data, size_t len, bool eos,
                                    struct evbuffer *result)
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
static const char *buf_str(struct evbuffer *b)
{
    static char s[8192];
    size_t n = evbuffer_get_length(b);

    assert_true(n < sizeof(s));
    evbuffer_copyout(b, s, n);
    s[n] = '\0';
    return s;
}

/* ---- order ---- */

static void test_chain_runs_on_request_in_route_order(void **state)
{
    static const struct pf_filter_ops *const ops[] = {&rec_ops, &rec_ops, &rec_ops};
    static const unsigned order[] = {2, 0, 1};
    struct pf_tx *tx = chain_build(3, ops, 3, order);

    (void)state;
    assert_int_equal(pf_chain_request(tx), PF_NEXT);
    assert_string_equal(calls, "req:2 req:0 req:1");
    assert_int_equal(tx->n_ran, 3);
    assert_int_equal(tx->out_from, 3);
    assert_int_equal(tx->next_filter, 3);
}

static void test_chain_runs_on_response_and_on_body_in_reverse_order(void **state)
{
    static const struct pf_filter_ops *const ops[] = {&rec_ops, &rec_ops, &rec_ops};
    static const unsigned order[] = {2, 0, 1};
    struct pf_tx *tx = chain_build(3, ops, 3, order);
    struct evbuffer *res = evbuffer_new();

    (void)state;
    assert_int_equal(pf_chain_request(tx), PF_NEXT);
    calls[0] = '\0';
    tx->status = 200;
    assert_int_equal(pf_chain_response(tx), PF_NEXT);
    assert_string_equal(calls, "resp:1/200 resp:0/200 resp:2/200");
    calls[0] = '\0';
    assert_int_equal(body_through(tx, "abc", 3, false, res), PF_NEXT);
    assert_int_equal(body_through(tx, NULL, 0, true, res), PF_NEXT);
    assert_string_equal(calls, "body:1 body:0 body:2 eos:1 eos:0 eos:2");
    assert_string_equal(buf_str(res), "abc");
    calls[0] = '\0';
    pf_chain_done(tx);
    assert_string_equal(calls, "done:1 done:0 done:2");
    evbuffer_free(res);
}

static void test_chain_slots_carry_conf_and_wstate_of_their_instance(void **state)
{
    static const struct pf_filter_ops *const ops[] = {&rec_ops, &rec_ops, &rec_ops};
    static const unsigned order[] = {2, 0, 1};
    struct pf_tx *tx = chain_build(3, ops, 3, order);

    (void)state;
    assert_int_equal(tx->n_filters, 3);
    assert_non_null(tx->slots);
    for (unsigned i = 0; i < 3; i++) {
        assert_ptr_equal(tx->slots[i].conf, &fx.conf[order[i]]);
        assert_ptr_equal(tx->slots[i].wstate, &fx.wstate_tags[order[i]]);
        assert_null(tx->slots[i].ctx); /* ctx_size 0 */
    }
    tx->status = 200;
    assert_int_equal(pf_chain_request(tx), PF_NEXT);
    assert_int_equal(pf_chain_response(tx), PF_NEXT);
    pf_chain_done(tx);
    /* each callback of filter k got the slot of k's position in the route */
    for (unsigned i = 0; i < 3; i++) {
        for (unsigned cb = 0; cb < 4; cb++) {
            if (cb == 2)
                continue; /* no body was run */
            assert_ptr_equal(fx.conf[order[i]].seen[cb], &tx->slots[i]);
        }
    }
}

static void test_chain_empty_route_passes(void **state)
{
    struct pf_tx *tx = chain_build(0, NULL, 0, NULL);
    struct evbuffer *res = evbuffer_new();

    (void)state;
    assert_int_equal(tx->n_filters, 0);
    assert_false(tx->has_body_filters);
    assert_int_equal(pf_chain_request(tx), PF_NEXT);
    assert_int_equal(tx->out_from, 0);
    assert_int_equal(pf_chain_response(tx), PF_NEXT);
    assert_int_equal(body_through(tx, "xyz", 3, true, res), PF_NEXT);
    assert_string_equal(buf_str(res), "xyz");
    pf_chain_done(tx);
    assert_string_equal(calls, "");
    evbuffer_free(res);
}

/* ---- short-circuits ---- */

static void test_chain_replied_stops_later_filters_and_sets_out_from(void **state)
{
    struct pf_tx *tx = chain_rec(4);
    struct evbuffer *res = evbuffer_new();

    (void)state;
    fx.conf[2].req = PF_REPLIED;
    fx.conf[2].reply_status = 429;
    assert_int_equal(pf_chain_request(tx), PF_REPLIED);
    assert_string_equal(calls, "req:0 req:1 req:2");
    assert_int_equal(tx->out_from, 2);
    assert_int_equal(tx->n_ran, 3);
    assert_int_equal(tx->status, 429);
    calls[0] = '\0';
    assert_int_equal(pf_chain_response(tx), PF_NEXT);
    assert_string_equal(calls, "resp:1/429 resp:0/429");
    calls[0] = '\0';
    assert_int_equal(body_through(tx, "x", 1, true, res), PF_NEXT);
    assert_string_equal(calls, "eos:1 eos:0");
    calls[0] = '\0';
    pf_chain_done(tx);
    assert_string_equal(calls, "done:2 done:1 done:0"); /* the replier too, not filter 3 */
    evbuffer_free(res);
}

static void test_chain_replied_by_first_filter_sees_no_response(void **state)
{
    struct pf_tx *tx = chain_rec(3);
    struct evbuffer *res = evbuffer_new();

    (void)state;
    fx.conf[0].req = PF_REPLIED;
    fx.conf[0].reply_status = 200;
    assert_int_equal(pf_chain_request(tx), PF_REPLIED);
    assert_string_equal(calls, "req:0");
    assert_int_equal(tx->out_from, 0);
    calls[0] = '\0';
    assert_int_equal(pf_chain_response(tx), PF_NEXT);
    assert_int_equal(body_through(tx, "raw", 3, false, res), PF_NEXT);
    assert_int_equal(body_through(tx, NULL, 0, true, res), PF_NEXT);
    assert_string_equal(calls, "");
    assert_string_equal(buf_str(res), "raw");
    pf_chain_done(tx);
    assert_string_equal(calls, "done:0");
    evbuffer_free(res);
}

static void test_chain_failed_stops_later_filters(void **state)
{
    struct pf_tx *tx = chain_rec(3);

    (void)state;
    fx.conf[1].req = PF_FAILED;
    assert_int_equal(pf_chain_request(tx), PF_FAILED);
    assert_string_equal(calls, "req:0 req:1");
    assert_int_equal(tx->out_from, 1);
    assert_int_equal(tx->n_ran, 2);
    calls[0] = '\0';
    pf_chain_done(tx);
    assert_string_equal(calls, "done:1 done:0");
}

static void test_chain_on_response_failure_stops_outer_filters(void **state)
{
    struct pf_tx *tx = chain_rec(3);

    (void)state;
    fx.conf[1].resp = PF_FAILED;
    assert_int_equal(pf_chain_request(tx), PF_NEXT);
    calls[0] = '\0';
    tx->status = 200;
    assert_int_equal(pf_chain_response(tx), PF_FAILED);
    assert_string_equal(calls, "resp:2/200 resp:1/200");
}

static void test_chain_on_body_failure_returns_failed(void **state)
{
    struct pf_tx *tx = chain_rec(3);
    struct evbuffer *res = evbuffer_new();

    (void)state;
    fx.conf[1].body = PF_FAILED;
    assert_int_equal(pf_chain_request(tx), PF_NEXT);
    calls[0] = '\0';
    assert_int_equal(body_through(tx, "abc", 3, false, res), PF_FAILED);
    assert_string_equal(calls, "body:2 body:1");
    evbuffer_free(res);
}

/* ---- pause and resume ---- */

static void test_chain_paused_points_next_filter_at_paused_filter(void **state)
{
    struct pf_tx *tx = chain_rec(3);

    (void)state;
    fx.conf[1].req = PF_PAUSED;
    assert_int_equal(pf_chain_request(tx), PF_PAUSED);
    assert_string_equal(calls, "req:0 req:1");
    assert_int_equal(tx->next_filter, 1);
    assert_int_equal(tx->n_ran, 2);
    /* what pf_tx_resume(tx, PF_NEXT) does: go on after the paused filter */
    calls[0] = '\0';
    tx->next_filter++;
    assert_int_equal(pf_chain_request(tx), PF_NEXT);
    assert_string_equal(calls, "req:2");
    assert_int_equal(tx->out_from, 3);
    assert_int_equal(tx->n_ran, 3);
}

static void test_chain_resume_next_runs_rest_then_reply_goes_out_through_earlier(void **state)
{
    struct pf_tx *tx = chain_rec(4);

    (void)state;
    fx.conf[1].req = PF_PAUSED;
    fx.conf[2].req = PF_REPLIED;
    fx.conf[2].reply_status = 202;
    assert_int_equal(pf_chain_request(tx), PF_PAUSED);
    calls[0] = '\0';
    fx.conf[1].req = PF_NEXT; /* so a re-run of filter 1 would not pause again */
    pf_tx_resume(tx, PF_NEXT);
    fx.tx_freed = true; /* no client: the reply went nowhere and tx ended */
    assert_string_equal(calls, "req:2 resp:1/202 resp:0/202 body:1 body:0 eos:1 eos:0 "
                               "done:2 done:1 done:0");
    assert_int_equal(fx.w.requests, 1);
    assert_int_equal(fx.wc.refs, 1); /* the transaction dropped its snapshot reference */
}

static void test_chain_resume_replied_goes_out_through_filters_before_paused(void **state)
{
    struct pf_tx *tx = chain_rec(3);

    (void)state;
    fx.conf[1].req = PF_PAUSED;
    assert_int_equal(pf_chain_request(tx), PF_PAUSED);
    calls[0] = '\0';
    pf_tx_reply(tx, 429, NULL); /* what the paused filter does when its I/O ends */
    pf_tx_resume(tx, PF_REPLIED);
    fx.tx_freed = true;
    assert_string_equal(calls, "resp:0/429 body:0 eos:0 done:1 done:0");
    assert_int_equal(fx.w.requests, 1);
}

static void test_chain_resume_failed_ends_tx_with_filter_failed(void **state)
{
    struct pf_tx *tx = chain_rec(3);

    (void)state;
    fx.conf[1].req = PF_PAUSED;
    assert_int_equal(pf_chain_request(tx), PF_PAUSED);
    calls[0] = '\0';
    pf_tx_resume(tx, PF_FAILED);
    fx.tx_freed = true;
    assert_string_equal(calls, "done:1 done:0");
    assert_int_equal(fx.w.errors[PF_ERR_FILTER_FAILED], 1);
    assert_int_equal(fx.w.requests, 1);
}

static void test_chain_resume_is_ignored_outside_the_filter_phase(void **state)
{
    struct pf_tx *tx = chain_rec(2);

    (void)state;
    fx.conf[0].req = PF_PAUSED;
    assert_int_equal(pf_chain_request(tx), PF_PAUSED);
    calls[0] = '\0';
    tx->phase = PF_TX_REPLYING; /* e.g. answered by a timeout meanwhile */
    pf_tx_resume(tx, PF_NEXT);
    assert_string_equal(calls, "");
    assert_int_equal(tx->next_filter, 0);
    assert_int_equal(fx.w.requests, 0);
}

/* ---- resume from inside on_request (deferred until the filter returns) ---- */

static void test_chain_resume_next_inside_on_request_runs_next_filter_once(void **state)
{
    static const struct pf_filter_ops *const ops[] = {&rec_ops, &sync_ops, &rec_ops};
    static const unsigned order[] = {0, 1, 2};
    struct pf_tx *tx = chain_build(3, ops, 3, order);

    (void)state;
    fx.conf[1].req = PF_NEXT;
    assert_int_equal(pf_chain_request(tx), PF_NEXT);
    assert_string_equal(calls, "req:0 sync:1 req:2"); /* nothing skipped, nothing twice */
    assert_int_equal(tx->n_ran, 3);
    assert_int_equal(tx->out_from, 3);
    assert_int_equal(tx->next_filter, 3);
    assert_false(tx->in_chain);
    assert_false(tx->resume_pending);
    assert_int_equal(fx.w.requests, 0); /* the chain did not end the transaction */
    calls[0] = '\0';
    tx->status = 200;
    assert_int_equal(pf_chain_response(tx), PF_NEXT);
    assert_string_equal(calls, "resp:2/200 resp:1/200 resp:0/200");
    calls[0] = '\0';
    pf_chain_done(tx);
    assert_string_equal(calls, "done:2 done:1 done:0");
}

static void test_chain_resume_next_inside_on_request_twice_in_a_row(void **state)
{
    static const struct pf_filter_ops *const ops[] = {&sync_ops, &sync_ops, &rec_ops};
    static const unsigned order[] = {0, 1, 2};
    struct pf_tx *tx = chain_build(3, ops, 3, order);

    (void)state;
    fx.conf[0].req = PF_NEXT;
    fx.conf[1].req = PF_NEXT;
    assert_int_equal(pf_chain_request(tx), PF_NEXT);
    assert_string_equal(calls, "sync:0 sync:1 req:2");
    assert_int_equal(tx->out_from, 3);
    assert_false(tx->resume_pending);
}

/* After an ordinary pause and resume, the next filter resumes itself inside on_request. */
static void test_chain_resume_next_inside_on_request_after_async_resume(void **state)
{
    static const struct pf_filter_ops *const ops[] = {&rec_ops, &rec_ops, &sync_ops, &rec_ops};
    static const unsigned order[] = {0, 1, 2, 3};
    struct pf_tx *tx = chain_build(4, ops, 4, order);

    (void)state;
    fx.conf[1].req = PF_PAUSED;
    fx.conf[2].req = PF_NEXT;
    fx.conf[3].req = PF_REPLIED; /* so the core answers instead of going upstream */
    fx.conf[3].reply_status = 202;
    assert_int_equal(pf_chain_request(tx), PF_PAUSED);
    assert_string_equal(calls, "req:0 req:1");
    calls[0] = '\0';
    fx.conf[1].req = PF_NEXT;
    pf_tx_resume(tx, PF_NEXT); /* outside the chain: runs 2, which resumes inside */
    fx.tx_freed = true;
    assert_string_equal(calls, "sync:2 req:3 resp:2/202 resp:1/202 resp:0/202 "
                               "body:2 body:1 body:0 eos:2 eos:1 eos:0 "
                               "done:3 done:2 done:1 done:0");
    assert_int_equal(fx.w.requests, 1);
    assert_int_equal(fx.wc.refs, 1);
}

static void test_chain_resume_replied_inside_on_request_skips_later_filters(void **state)
{
    static const struct pf_filter_ops *const ops[] = {&rec_ops, &sync_ops, &rec_ops};
    static const unsigned order[] = {0, 1, 2};
    struct pf_tx *tx = chain_build(3, ops, 3, order);
    struct evbuffer *res = evbuffer_new();

    (void)state;
    fx.conf[1].req = PF_REPLIED;
    fx.conf[1].reply_status = 403;
    assert_int_equal(pf_chain_request(tx), PF_REPLIED);
    assert_string_equal(calls, "req:0 sync:1"); /* filter 2 is skipped */
    assert_int_equal(tx->n_ran, 2);
    assert_int_equal(tx->out_from, 1); /* the replier's own on_response is not run */
    assert_int_equal(tx->status, 403);
    assert_false(tx->in_chain);
    assert_false(tx->resume_pending);
    assert_non_null(tx->reply);
    assert_string_equal(buf_str(tx->reply), "reply-from-1");
    calls[0] = '\0';
    assert_int_equal(pf_chain_response(tx), PF_NEXT);
    assert_string_equal(calls, "resp:0/403");
    calls[0] = '\0';
    assert_int_equal(body_through(tx, "x", 1, true, res), PF_NEXT);
    assert_string_equal(calls, "eos:0");
    calls[0] = '\0';
    pf_chain_done(tx);
    assert_string_equal(calls, "done:1 done:0");
    evbuffer_free(res);
}

/* The same through the core: the reply is sent, through the filters before the replier. */
static void test_chain_resume_replied_inside_on_request_sends_the_reply(void **state)
{
    static const struct pf_filter_ops *const ops[] = {&rec_ops, &rec_ops, &sync_ops, &rec_ops};
    static const unsigned order[] = {0, 1, 2, 3};
    struct pf_tx *tx = chain_build(4, ops, 4, order);

    (void)state;
    fx.conf[1].req = PF_PAUSED;
    fx.conf[2].req = PF_REPLIED;
    fx.conf[2].reply_status = 403;
    assert_int_equal(pf_chain_request(tx), PF_PAUSED);
    calls[0] = '\0';
    fx.conf[1].req = PF_NEXT;
    pf_tx_resume(tx, PF_NEXT);
    fx.tx_freed = true;
    assert_string_equal(calls, "sync:2 resp:1/403 resp:0/403 body:1 body:0 eos:1 eos:0 "
                               "done:2 done:1 done:0");
    assert_int_equal(fx.w.requests, 1);
    assert_int_equal(fx.wc.refs, 1);
}

/* ---- on_done ---- */

static void test_chain_done_runs_once_in_reverse_when_called_twice(void **state)
{
    struct pf_tx *tx = chain_rec(3);

    (void)state;
    assert_int_equal(pf_chain_request(tx), PF_NEXT);
    calls[0] = '\0';
    pf_chain_done(tx);
    pf_chain_done(tx);
    assert_string_equal(calls, "done:2 done:1 done:0");
}

static void test_chain_done_skips_filters_whose_on_request_did_not_run(void **state)
{
    struct pf_tx *tx = chain_rec(3);

    (void)state;
    /* the transaction ended before the chain ran (e.g. a 400) */
    pf_chain_done(tx);
    assert_string_equal(calls, "");
}

static void test_chain_abort_while_paused_calls_on_done_once(void **state)
{
    struct pf_tx *tx = chain_rec(3);

    (void)state;
    fx.conf[1].req = PF_PAUSED;
    assert_int_equal(pf_chain_request(tx), PF_PAUSED);
    calls[0] = '\0';
    pf_chain_done(tx); /* an earlier abort path already ran on_done */
    pf_tx_abort(tx, "client_abort");
    fx.tx_freed = true;
    assert_string_equal(calls, "done:1 done:0");
    assert_int_equal(fx.w.requests, 1);
}

/* ---- ctx ---- */

static bool all_zero(const unsigned char *p, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (p[i] != 0)
            return false;
    }
    return true;
}

static void test_chain_ctx_is_zeroed_distinct_and_from_the_arena(void **state)
{
    static const struct pf_filter_ops *const ops[] = {&ctx24_ops, &null_ops, &big_ops, &ctx24_ops};
    static const unsigned order[] = {0, 1, 2, 3};
    static const size_t sizes[] = {24, 0, sizeof(struct big_ctx), 24};
    size_t before = pf_arena_used(fx.arena);
    struct pf_tx *tx = chain_build(4, ops, 4, order);
    size_t used = pf_arena_used(fx.arena) - before - sizeof(*tx);

    (void)state;
    assert_null(tx->slots[1].ctx);
    for (unsigned i = 0; i < 4; i++) {
        unsigned char *p = tx->slots[i].ctx;

        if (sizes[i] == 0)
            continue;
        assert_non_null(p);
        assert_true(all_zero(p, sizes[i]));
        /* no overlap with any other ctx */
        for (unsigned j = 0; j < 4; j++) {
            unsigned char *q = tx->slots[j].ctx;

            if (j == i || q == NULL)
                continue;
            assert_true(p + sizes[i] <= q || q + sizes[j] <= p);
        }
        memset(p, 0xA5, sizes[i]); /* the whole ctx is writable (ASan checks) */
    }
    /* slots + ctxs came from the arena */
    assert_true(used >= 4 * sizeof(struct pf_slot) + 24 + 24 + sizeof(struct big_ctx));
}

static void test_chain_ctx_persists_from_on_request_to_on_response(void **state)
{
    static const struct pf_filter_ops *const ops[] = {&big_ops, &big_ops};
    static const unsigned order[] = {0, 1};
    struct pf_tx *tx = chain_build(2, ops, 2, order);

    (void)state;
    assert_ptr_not_equal(tx->slots[0].ctx, tx->slots[1].ctx);
    assert_int_equal(pf_chain_request(tx), PF_NEXT);
    assert_int_equal(pf_chain_response(tx), PF_NEXT);
    /* each instance counted only its own on_request */
    assert_string_equal(calls, "big-req:1 big-req:1 big-resp:1 big-resp:1");
}

/* ---- body streaming ---- */

/* Route [upper, tail]: on_body runs tail first, then upper uppercases its tail too. */
static struct pf_tx *chain_upper_tail(void)
{
    static const struct pf_filter_ops *const ops[] = {&upper_ops, &tail_ops};
    static const unsigned order[] = {0, 1};
    struct pf_tx *tx = chain_build(2, ops, 2, order);

    assert_true(tx->has_body_filters);
    assert_int_equal(pf_chain_request(tx), PF_NEXT);
    return tx;
}

static void test_chain_body_transforms_1_byte_chunks(void **state)
{
    struct pf_tx *tx = chain_upper_tail();
    struct evbuffer *res = evbuffer_new();
    const char *msg = "hello, world";

    (void)state;
    for (size_t i = 0; i < strlen(msg); i++) {
        assert_int_equal(body_through(tx, msg + i, 1, false, res), PF_NEXT);
        assert_int_equal(evbuffer_get_length(res), i + 1); /* streamed, not held back */
    }
    assert_int_equal(body_through(tx, NULL, 0, true, res), PF_NEXT);
    assert_string_equal(buf_str(res), "HELLO, WORLD-TAIL:12");
    evbuffer_free(res);
}

static void test_chain_body_transforms_4k_chunks(void **state)
{
    struct pf_tx *tx = chain_upper_tail();
    struct evbuffer *res = evbuffer_new();
    char chunk[4096];
    char *want = malloc(2 * sizeof(chunk) + 32);
    size_t n;

    (void)state;
    for (size_t i = 0; i < sizeof(chunk); i++)
        chunk[i] = (char)('a' + i % 26);
    assert_int_equal(body_through(tx, chunk, sizeof(chunk), false, res), PF_NEXT);
    assert_int_equal(body_through(tx, chunk, sizeof(chunk), true, res), PF_NEXT);
    for (size_t i = 0; i < 2 * sizeof(chunk); i++)
        want[i] = (char)('A' + i % 4096 % 26);
    n = 2 * sizeof(chunk);
    n += (size_t)sprintf(want + n, "-TAIL:%zu", 2 * sizeof(chunk));
    assert_int_equal(evbuffer_get_length(res), n);
    assert_memory_equal(evbuffer_pullup(res, -1), want, n);
    assert_int_equal(((struct tail_ctx *)tx->slots[1].ctx)->eos, 1);
    free(want);
    evbuffer_free(res);
}

static void test_chain_body_eos_only_call_flushes(void **state)
{
    struct pf_tx *tx = chain_upper_tail();
    struct evbuffer *res = evbuffer_new();

    (void)state;
    assert_int_equal(body_through(tx, NULL, 0, true, res), PF_NEXT);
    assert_string_equal(buf_str(res), "-TAIL:0");
    evbuffer_free(res);
}

static void test_chain_body_fails_when_filter_leaves_input(void **state)
{
    static const struct pf_filter_ops *const ops[] = {&rec_ops, &lazy_ops};
    static const unsigned order[] = {0, 1};
    struct pf_tx *tx = chain_build(2, ops, 2, order);
    struct evbuffer *res = evbuffer_new();

    (void)state;
    assert_int_equal(pf_chain_request(tx), PF_NEXT);
    calls[0] = '\0';
    /* nothing to leave: fine */
    assert_int_equal(body_through(tx, NULL, 0, true, res), PF_NEXT);
    assert_string_equal(calls, "lazy eos:0");
    calls[0] = '\0';
    assert_int_equal(body_through(tx, "abc", 3, false, res), PF_FAILED);
    assert_string_equal(calls, "lazy"); /* the outer filter is not called */
    evbuffer_free(res);
}

static void test_chain_null_callbacks_are_pass_through(void **state)
{
    static const struct pf_filter_ops *const ops[] = {&rec_ops, &null_ops, &rec_ops};
    static const unsigned order[] = {0, 1, 2};
    struct pf_tx *tx = chain_build(3, ops, 3, order);
    struct evbuffer *res = evbuffer_new();

    (void)state;
    assert_int_equal(pf_chain_request(tx), PF_NEXT);
    assert_string_equal(calls, "req:0 req:2");
    assert_int_equal(tx->n_ran, 3);
    assert_int_equal(tx->out_from, 3);
    calls[0] = '\0';
    tx->status = 204;
    assert_int_equal(pf_chain_response(tx), PF_NEXT);
    assert_int_equal(body_through(tx, "data", 4, true, res), PF_NEXT);
    pf_chain_done(tx);
    assert_string_equal(calls, "resp:2/204 resp:0/204 eos:2 eos:0 done:2 done:0");
    assert_string_equal(buf_str(res), "data");
    evbuffer_free(res);
}

static void test_chain_without_on_body_has_no_body_filters(void **state)
{
    static const struct pf_filter_ops *const ops[] = {&null_ops, &big_ops};
    static const unsigned order[] = {0, 1};
    struct pf_tx *tx = chain_build(2, ops, 2, order);
    struct evbuffer *res = evbuffer_new();

    (void)state;
    assert_false(tx->has_body_filters);
    assert_int_equal(pf_chain_request(tx), PF_NEXT);
    assert_int_equal(body_through(tx, "same", 4, false, res), PF_NEXT);
    assert_string_equal(buf_str(res), "same");
    evbuffer_free(res);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
#define T(f) cmocka_unit_test_setup_teardown(f, setup, teardown)
        T(test_chain_runs_on_request_in_route_order),
        T(test_chain_runs_on_response_and_on_body_in_reverse_order),
        T(test_chain_slots_carry_conf_and_wstate_of_their_instance),
        T(test_chain_empty_route_passes),
        T(test_chain_replied_stops_later_filters_and_sets_out_from),
        T(test_chain_replied_by_first_filter_sees_no_response),
        T(test_chain_failed_stops_later_filters),
        T(test_chain_on_response_failure_stops_outer_filters),
        T(test_chain_on_body_failure_returns_failed),
        T(test_chain_paused_points_next_filter_at_paused_filter),
        T(test_chain_resume_next_runs_rest_then_reply_goes_out_through_earlier),
        T(test_chain_resume_replied_goes_out_through_filters_before_paused),
        T(test_chain_resume_failed_ends_tx_with_filter_failed),
        T(test_chain_resume_is_ignored_outside_the_filter_phase),
        T(test_chain_resume_next_inside_on_request_runs_next_filter_once),
        T(test_chain_resume_next_inside_on_request_twice_in_a_row),
        T(test_chain_resume_next_inside_on_request_after_async_resume),
        T(test_chain_resume_replied_inside_on_request_skips_later_filters),
        T(test_chain_resume_replied_inside_on_request_sends_the_reply),
        T(test_chain_done_runs_once_in_reverse_when_called_twice),
        T(test_chain_done_skips_filters_whose_on_request_did_not_run),
        T(test_chain_abort_while_paused_calls_on_done_once),
        T(test_chain_ctx_is_zeroed_distinct_and_from_the_arena),
        T(test_chain_ctx_persists_from_on_request_to_on_response),
        T(test_chain_body_transforms_1_byte_chunks),
        T(test_chain_body_transforms_4k_chunks),
        T(test_chain_body_eos_only_call_flushes),
        T(test_chain_body_fails_when_filter_leaves_input),
        T(test_chain_null_callbacks_are_pass_through),
        T(test_chain_without_on_body_has_no_body_filters),
#undef T
    };

    return cmocka_run_group_tests_name("chain", tests, NULL, NULL);
}
