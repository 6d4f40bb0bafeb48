/*
 * Unit tests of proxy/chain.c: the onion semantics of STYLE.md §2, checked
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
#include <event2/event.h>

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
    const char *error_code;  /* ... or pf_tx_error() with this code, when set */
    struct pf_slot *seen[4]; /* the slot given to on_request/response/body/done */
    unsigned done;           /* on_done calls, over every transaction */
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
    if (c->req == PF_REPLIED && c->error_code != NULL) {
        pf_tx_error(tx, c->reply_status, c->error_code);
    } else if (c->req == PF_REPLIED && c->reply_status != 0) {
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
    c->done++;
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

static struct waiter waiters[MAX_WAITERS];
static unsigned n_waiters;
static unsigned n_woken_live; /* the transaction was there: resumed */
static unsigned n_woken_gone; /* it had ended: nothing touched */

static void waiter_cb(evutil_socket_t fd, short what, void *arg)
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

static enum pf_verdict timer_on_request(struct pf_tx *tx, struct pf_slot *s)
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

static const struct pf_filter_ops timer_ops = {
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

static struct chain_fx fx;

static void evbuffer_free_cb(void *arg)
{
    evbuffer_free(arg);
}

static struct evbuffer *arena_evbuffer(struct pf_arena *a)
{
    struct evbuffer *b = evbuffer_new();

    assert_non_null(b);
    pf_arena_defer(a, evbuffer_free_cb, b);
    return b;
}

static int setup(void **state)
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

static int teardown(void **state)
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
static void chain_config(unsigned n, const struct pf_filter_ops *const ops[], unsigned n_route,
                         const unsigned order[])
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
static struct pf_tx *tx_make(struct pf_arena *a)
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
static struct pf_tx *chain_build(unsigned n, const struct pf_filter_ops *const ops[],
                                 unsigned n_route, const unsigned order[])
{
    chain_config(n, ops, n_route, order);
    fx.tx = tx_make(fx.arena);
    return fx.tx;
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

/* ---- pausing safely: the waiter holds a pf_tx_ref ---- */

/* Route [rec 0, timer 1, rec 2]; filter 2 replies 200 when its on_request runs. */
static void timer_route(void)
{
    static const struct pf_filter_ops *const ops[] = {&rec_ops, &timer_ops, &rec_ops};
    static const unsigned order[] = {0, 1, 2};

    chain_config(3, ops, 3, order);
    fx.conf[2].req = PF_REPLIED;
    fx.conf[2].reply_status = 200;
}

static void test_chain_timer_resumes_a_paused_tx(void **state)
{
    struct pf_tx *tx;

    (void)state;
    timer_route();
    tx = fx.tx = tx_make(fx.arena);
    assert_int_equal(pf_chain_request(tx), PF_PAUSED);
    assert_string_equal(calls, "req:0 wait:1");
    calls[0] = '\0';
    fx.tx_freed = true;                                 /* the resume ends the transaction */
    assert_int_equal(event_base_loop(fx.w.base, 0), 1); /* 1: ran until no event was left */
    assert_int_equal(n_woken_live, 1);
    assert_string_equal(calls, "req:2 resp:0/200 body:0 eos:0 done:2 done:1 done:0");
    assert_int_equal(fx.w.requests, 1);
    assert_int_equal(fx.wc.refs, 1);
}

static void test_chain_abort_while_paused_then_timer_touches_nothing(void **state)
{
    struct pf_tx *tx;

    (void)state;
    timer_route();
    tx = fx.tx = tx_make(fx.arena);
    assert_int_equal(pf_chain_request(tx), PF_PAUSED);
    calls[0] = '\0';
    pf_tx_abort(tx, "client_abort"); /* frees tx and its arena */
    fx.tx_freed = true;
    assert_string_equal(calls, "done:1 done:0");
    assert_int_equal(event_base_loop(fx.w.base, 0), 1);
    /* 1: ran until no event was left */ /* the timer fires */
    assert_int_equal(n_woken_gone, 1);
    assert_int_equal(n_woken_live, 0);
    assert_string_equal(calls, "done:1 done:0"); /* nothing more ran */
    assert_int_equal(fx.w.requests, 1);
    assert_int_equal(fx.wc.refs, 1);
}

/* A reference outlives its slot's reuse: it never finds the next transaction. */
static void test_chain_stale_ref_does_not_find_the_next_tx_in_its_slot(void **state)
{
    struct pf_tx *a;
    struct pf_tx *b;
    struct pf_tx_ref zero;

    (void)state;
    timer_route();
    a = tx_make(pf_arena_new(PF_ARENA_CHUNK));
    assert_int_equal(pf_chain_request(a), PF_PAUSED);
    assert_ptr_equal(pf_tx_deref(waiters[0].ref), a);
    pf_tx_abort(a, "client_abort");
    b = tx_make(pf_arena_new(PF_ARENA_CHUNK));
    assert_int_equal(pf_chain_request(b), PF_PAUSED);
    assert_int_equal(waiters[1].ref.slot, waiters[0].ref.slot); /* the slot was reused */
    assert_null(pf_tx_deref(waiters[0].ref));
    assert_ptr_equal(pf_tx_deref(waiters[1].ref), b);
    calls[0] = '\0';
    waiter_cb(-1, 0, &waiters[0]); /* a's wake-up, late */
    assert_string_equal(calls, "");
    assert_int_equal(b->phase, PF_TX_FILTERS);
    assert_int_equal(b->next_filter, 1); /* b is still paused in filter 1 */
    pf_tx_abort(b, "client_abort");
    assert_null(pf_tx_deref(waiters[1].ref));
    memset(&zero, 0, sizeof(zero));
    assert_null(pf_tx_deref(zero));
    assert_int_equal(fx.w.requests, 2);
}

/* 1000 paused transactions, a seeded third of them aborted, then every timer fires. */
static void test_chain_1000_paused_with_random_aborts(void **state)
{
    static const enum pf_verdict resume[] = {PF_NEXT, PF_REPLIED, PF_FAILED};
    struct pf_tx *txs[MAX_WAITERS];
    uint64_t rng = 0x9E3779B97F4A7C15ull; /* fixed seed: the same run every time */
    unsigned aborted = 0;
    unsigned next = 0;

    (void)state;
    timer_route();
    for (unsigned i = 0; i < MAX_WAITERS; i++) {
        txs[i] = tx_make(pf_arena_new(PF_ARENA_CHUNK));
        assert_int_equal(pf_chain_request(txs[i]), PF_PAUSED);
        rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
        waiters[i].v = resume[rng % 3];
    }
    for (unsigned i = 0; i < MAX_WAITERS; i++) {
        rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
        if (rng % 3 == 0) {
            pf_tx_abort(txs[i], "client_abort");
            aborted++;
        } else if (waiters[i].v == PF_NEXT) {
            next++;
        }
    }
    assert_true(aborted > 200 && aborted < 500);        /* the seed gives a real mix */
    assert_int_equal(event_base_loop(fx.w.base, 0), 1); /* 1: ran until no event was left */
    assert_int_equal(n_woken_gone, aborted);
    assert_int_equal(n_woken_live, MAX_WAITERS - aborted);
    assert_int_equal(fx.w.requests, MAX_WAITERS);
    assert_int_equal(fx.wc.refs, 1); /* every transaction ended */
    assert_int_equal(fx.conf[0].done, MAX_WAITERS);
    assert_int_equal(fx.conf[1].done, MAX_WAITERS);
    assert_int_equal(fx.conf[2].done, next); /* only where on_request ran */
    assert_int_equal(fx.w.txref_free != 0, true);
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

/* ---- state transitions, one row per scenario ---- */

#define N PF_NEXT
#define R PF_REPLIED /* from on_request: after pf_tx_reply(429) */
#define P PF_PAUSED
#define F PF_FAILED

/*
 * Three rec filters. Without a pause the chain functions are driven directly:
 * on_request; unless it failed, on_response, then one eos body call even when
 * on_response failed (to show which on_body may still run); the slot states;
 * on_done twice. With a pause, the core takes over through pf_tx_resume().
 */
struct scenario {
    const char *name;
    enum pf_verdict req[3], resp[3], body[3];
    unsigned n_resume;         /* pf_tx_resume() calls after a pause */
    enum pf_verdict resume[2]; /* their verdicts (PF_REPLIED: after pf_tx_reply(202)) */
    const char *calls;         /* the whole call log */
    const char *states;        /* before on_done: I idle, Q request, S response, D done */
};

static const struct scenario scenarios[] = {
    {"all pass",
     {N, N, N},
     {N, N, N},
     {N, N, N},
     0,
     {N},
     "req:0 req:1 req:2 resp:2/200 resp:1/200 resp:0/200 eos:2 eos:1 eos:0 "
     "done:2 done:1 done:0",
     "SSS"},
    {"2nd of 3 replies",
     {N, R, N},
     {N, N, N},
     {N, N, N},
     0,
     {N},
     "req:0 req:1 resp:0/429 eos:0 done:1 done:0",
     "SQI"},
    {"1st replies", {R, N, N}, {N, N, N}, {N, N, N}, 0, {N}, "req:0 done:0", "QII"},
    {"on_request fails in the 2nd",
     {N, F, N},
     {N, N, N},
     {N, N, N},
     0,
     {N},
     "req:0 req:1 done:1 done:0",
     "QQI"},
    {"on_response fails in the 2nd",
     {N, N, N},
     {N, F, N},
     {N, N, N},
     0,
     {N},
     "req:0 req:1 req:2 resp:2/200 resp:1/200 eos:2 done:2 done:1 done:0",
     "QQS"},
    {"on_response fails in the innermost",
     {N, N, N},
     {N, N, F},
     {N, N, N},
     0,
     {N},
     "req:0 req:1 req:2 resp:2/200 done:2 done:1 done:0",
     "QQQ"},
    {"on_body fails in the 2nd",
     {N, N, N},
     {N, N, N},
     {N, F, N},
     0,
     {N},
     "req:0 req:1 req:2 resp:2/200 resp:1/200 resp:0/200 eos:2 eos:1 done:2 done:1 done:0",
     "SSS"},
    {"2nd pauses, resumed NEXT: the 3rd replies",
     {N, P, R},
     {N, N, N},
     {N, N, N},
     1,
     {N},
     "req:0 req:1 req:2 resp:1/429 resp:0/429 body:1 body:0 eos:1 eos:0 done:2 done:1 done:0",
     NULL},
    {"2nd pauses, resumed REPLIED",
     {N, P, N},
     {N, N, N},
     {N, N, N},
     1,
     {R},
     "req:0 req:1 resp:0/202 body:0 eos:0 done:1 done:0",
     NULL},
    {"2nd pauses, resumed FAILED",
     {N, P, N},
     {N, N, N},
     {N, N, N},
     1,
     {F},
     "req:0 req:1 done:1 done:0",
     NULL},
    {"2nd pauses, resumed PAUSED then REPLIED",
     {N, P, N},
     {N, N, N},
     {N, N, N},
     2,
     {P, R},
     "req:0 req:1 resp:0/202 body:0 eos:0 done:1 done:0",
     NULL},
};

#undef N
#undef R
#undef P
#undef F

static void scenario_states(const struct pf_tx *tx, char *out)
{
    static const char letter[] = {[PF_SLOT_IDLE] = 'I',
                                  [PF_SLOT_REQUEST] = 'Q',
                                  [PF_SLOT_RESPONSE] = 'S',
                                  [PF_SLOT_DONE] = 'D'};

    for (unsigned i = 0; i < tx->n_filters; i++)
        out[i] = letter[tx->slot_state[i]];
    out[tx->n_filters] = '\0';
}

static void scenario_resume(const struct scenario *sc, struct pf_tx *tx)
{
    for (unsigned r = 0; r < sc->n_resume; r++) {
        if (sc->resume[r] == PF_REPLIED)
            pf_tx_reply(tx, 202, NULL);
        pf_tx_resume(tx, sc->resume[r]);
    }
    fx.tx_freed = true; /* the last verdict ended the transaction */
    assert_int_equal(fx.w.requests, 1);
    assert_int_equal(fx.wc.refs, 1);
}

static void scenario_run(const struct scenario *sc)
{
    struct pf_tx *tx = chain_rec(3);
    struct evbuffer *res = evbuffer_new();
    enum pf_verdict v;
    char states[4];

    for (unsigned i = 0; i < 3; i++) {
        fx.conf[i].req = sc->req[i];
        fx.conf[i].resp = sc->resp[i];
        fx.conf[i].body = sc->body[i];
        fx.conf[i].reply_status = 429;
    }
    v = pf_chain_request(tx);
    if (v == PF_PAUSED) {
        scenario_resume(sc, tx);
    } else if (v != PF_FAILED) {
        if (v == PF_NEXT)
            tx->status = 200;
        pf_chain_response(tx);
        body_through(tx, NULL, 0, true, res);
    }
    if (sc->states != NULL) {
        scenario_states(tx, states);
        if (strcmp(states, sc->states) != 0)
            fail_msg("%s: states %s, want %s", sc->name, states, sc->states);
        pf_chain_done(tx);
        pf_chain_done(tx); /* a second call runs nothing */
        scenario_states(tx, states);
        for (unsigned i = 0; i < 3; i++)
            assert_true(states[i] == (sc->states[i] == 'I' ? 'I' : 'D'));
    }
    if (strcmp(calls, sc->calls) != 0)
        fail_msg("%s:\n  calls %s\n  want  %s", sc->name, calls, sc->calls);
    evbuffer_free(res);
}

static void test_chain_scenarios(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(scenarios) / sizeof(scenarios[0]); i++) {
        teardown(NULL);
        setup(NULL);
        scenario_run(&scenarios[i]);
    }
}

/*
 * An error reply (pf_tx_error in the 3rd filter) whose on_response fails in
 * the 1st: the head was changed by the 2nd, so the core sends a fresh copy of
 * the error past every filter; no on_body runs, not even the 2nd's.
 */
static void test_chain_failed_on_response_of_an_error_reply_bypasses_the_chain(void **state)
{
    struct pf_tx *tx = chain_rec(3);

    (void)state;
    fx.conf[0].resp = PF_FAILED;
    fx.conf[2].req = PF_REPLIED;
    fx.conf[2].reply_status = 429;
    fx.conf[2].error_code = "rate_limited";
    assert_int_equal(pf_chain_request(tx), PF_REPLIED);
    fx.tx_freed = true; /* no client: pf_tx_respond ends the transaction */
    assert_false(pf_tx_respond(tx));
    assert_string_equal(calls, "req:0 req:1 req:2 resp:1/429 resp:0/429 done:2 done:1 done:0");
    assert_int_equal(fx.w.errors[PF_ERR_RATE_LIMITED], 1); /* counted once */
    assert_int_equal(fx.w.errors[PF_ERR_FILTER_FAILED], 0);
    assert_int_equal(fx.w.requests, 1);
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
    assert_int_equal(pf_chain_response(tx), PF_NEXT);
    return tx;
}

/*
 * The body of each row, cut in chunks of the row's size (0: only the eos
 * call), goes through [upper, tail] and comes out uppercased with the tail,
 * streamed: after each chunk, everything so far is out.
 */
static void test_chain_body_transforms_in_chunks(void **state)
{
    static const struct {
        size_t total, chunk;
    } rows[] = {{12, 1}, {12, 5}, {2 * 4096, 4096}, {0, 0}};

    (void)state;
    for (size_t r = 0; r < sizeof(rows) / sizeof(rows[0]); r++) {
        struct pf_tx *tx;
        struct evbuffer *res = evbuffer_new();
        char *in = malloc(rows[r].total + 1);
        char *want = malloc(rows[r].total + 32);
        size_t n = rows[r].total;

        teardown(NULL);
        setup(NULL);
        tx = chain_upper_tail();
        for (size_t i = 0; i < n; i++) {
            in[i] = (char)('a' + i % 26);
            want[i] = (char)('A' + i % 26);
        }
        for (size_t off = 0; off < n; off += rows[r].chunk) {
            size_t len = n - off < rows[r].chunk ? n - off : rows[r].chunk;

            assert_int_equal(body_through(tx, in + off, len, false, res), PF_NEXT);
            assert_int_equal(evbuffer_get_length(res), off + len); /* not held back */
        }
        assert_int_equal(body_through(tx, NULL, 0, true, res), PF_NEXT);
        n += (size_t)sprintf(want + n, "-TAIL:%zu", rows[r].total);
        assert_int_equal(evbuffer_get_length(res), n);
        assert_memory_equal(evbuffer_pullup(res, -1), want, n);
        assert_int_equal(((struct tail_ctx *)tx->slots[1].ctx)->eos, 1);
        free(in);
        free(want);
        evbuffer_free(res);
    }
}

static void test_chain_body_fails_when_filter_leaves_input(void **state)
{
    static const struct pf_filter_ops *const ops[] = {&rec_ops, &lazy_ops};
    static const unsigned order[] = {0, 1};
    struct pf_tx *tx = chain_build(2, ops, 2, order);
    struct evbuffer *res = evbuffer_new();

    (void)state;
    assert_int_equal(pf_chain_request(tx), PF_NEXT);
    assert_int_equal(pf_chain_response(tx), PF_NEXT);
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
        T(test_chain_paused_points_next_filter_at_paused_filter),
        T(test_chain_resume_next_runs_rest_then_reply_goes_out_through_earlier),
        T(test_chain_resume_failed_ends_tx_with_filter_failed),
        T(test_chain_resume_is_ignored_outside_the_filter_phase),
        T(test_chain_timer_resumes_a_paused_tx),
        T(test_chain_abort_while_paused_then_timer_touches_nothing),
        T(test_chain_stale_ref_does_not_find_the_next_tx_in_its_slot),
        T(test_chain_1000_paused_with_random_aborts),
        T(test_chain_resume_next_inside_on_request_runs_next_filter_once),
        T(test_chain_resume_next_inside_on_request_twice_in_a_row),
        T(test_chain_resume_next_inside_on_request_after_async_resume),
        T(test_chain_resume_replied_inside_on_request_skips_later_filters),
        T(test_chain_resume_replied_inside_on_request_sends_the_reply),
        T(test_chain_scenarios),
        T(test_chain_failed_on_response_of_an_error_reply_bypasses_the_chain),
        T(test_chain_done_runs_once_in_reverse_when_called_twice),
        T(test_chain_done_skips_filters_whose_on_request_did_not_run),
        T(test_chain_abort_while_paused_calls_on_done_once),
        T(test_chain_ctx_is_zeroed_distinct_and_from_the_arena),
        T(test_chain_ctx_persists_from_on_request_to_on_response),
        T(test_chain_body_transforms_in_chunks),
        T(test_chain_body_fails_when_filter_leaves_input),
        T(test_chain_null_callbacks_are_pass_through),
        T(test_chain_without_on_body_has_no_body_filters),
#undef T
    };

    return cmocka_run_group_tests_name("chain", tests, NULL, NULL);
}
