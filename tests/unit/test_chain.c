/*
 * Unit tests of proxy/chain.c: the onion semantics (order, short-circuits,
 * the state of each filter, on_done, ctx, body streaming), with the
 * test-only filters of chain_fx.h. Pausing is in test_pause.c.
 */
#include "tests/unit/chain_fx.h"

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
    fx.conf[2].error_code = PF_ERR_RATE_LIMITED;
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
    pf_tx_abort(tx, PF_ERR_CLIENT_ABORT);
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

/* ---- the upstream failing while a filter holds the head or the body ---- */

/*
 * on_response (or on_body) during which the upstream fails: pf_tx_fail, as upstream.c calls it.
 * The transaction must not be answered, and end, while the filter still holds what it was given:
 * the chain would then go on and answer a second time (the response it was handed) with a
 * transaction that is gone.
 */
static void fail_inside(struct pf_tx *tx, struct pf_slot *s, const char *where)
{
    struct pf_tx_ref ref = pf_tx_ref(tx);

    log_call("%s-fails:%u", where, ((struct tconf *)id_of(s))->id);
    pf_tx_fail(tx, 502, PF_ERR_RESET);
    assert_ptr_equal(pf_tx_deref(ref), tx); /* not answered yet: still the filter's */
}

static enum pf_verdict upfail_on_response(struct pf_tx *tx, struct pf_slot *s)
{
    fail_inside(tx, s, "resp");
    return PF_NEXT;
}

static enum pf_verdict upfail_on_body(struct pf_tx *tx, struct pf_slot *s, struct pf_body *b)
{
    evbuffer_add_buffer(b->out, b->in);
    if (b->eos)
        fail_inside(tx, s, "eos");
    return PF_NEXT;
}

static const struct pf_filter_ops upfail_resp_ops = {
    .name = "upfail",
    .on_request = rec_on_request,
    .on_response = upfail_on_response,
    .on_done = rec_on_done,
};

static const struct pf_filter_ops upfail_body_ops = {
    .name = "upfail",
    .on_request = rec_on_request,
    .on_response = rec_on_response,
    .on_body = upfail_on_body,
    .on_done = rec_on_done,
};

static struct pf_tx *upfail_chain(const struct pf_filter_ops *middle)
{
    const struct pf_filter_ops *const ops[] = {&rec_ops, middle, &rec_ops};
    static const unsigned order[] = {0, 1, 2};
    struct pf_tx *tx = chain_build(3, ops, 3, order);

    assert_int_equal(pf_chain_request(tx), PF_NEXT);
    tx->phase = PF_TX_UPSTREAM; /* the upstream's response head has come */
    tx->status = 200;
    return tx;
}

static void test_chain_upstream_failing_in_on_response_answers_once_after_it(void **state)
{
    struct pf_tx *tx = upfail_chain(&upfail_resp_ops);

    (void)state;
    fx.tx_freed = true; /* no client: the failure ends the transaction */
    assert_false(pf_tx_respond(tx));
    /* every filter saw the response, none its error; then one end */
    assert_string_equal(
        calls, "req:0 req:1 req:2 resp:2/200 resp-fails:1 resp:0/200 done:2 done:1 done:0");
    assert_int_equal(fx.w.errors[PF_ERR_RESET], 1);
    assert_int_equal(fx.w.requests, 1);
}

static void test_chain_upstream_failing_in_on_body_answers_once_after_it(void **state)
{
    struct pf_tx *tx = upfail_chain(&upfail_body_ops);

    (void)state;
    assert_true(pf_tx_respond(tx));
    fx.tx_freed = true;
    pf_tx_resp_end(tx);
    assert_string_equal(calls, "req:0 req:1 req:2 resp:2/200 resp:1/200 resp:0/200 eos:2 "
                               "eos-fails:1 eos:0 done:2 done:1 done:0");
    assert_int_equal(fx.w.errors[PF_ERR_RESET], 1);
    assert_int_equal(fx.w.requests, 1);
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
        T(test_chain_upstream_failing_in_on_response_answers_once_after_it),
        T(test_chain_upstream_failing_in_on_body_answers_once_after_it),
#undef T
    };

    return cmocka_run_group_tests_name("chain", tests, NULL, NULL);
}
