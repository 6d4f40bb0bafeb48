/*
 * Unit tests of pausing a filter: pf_tx_resume() with each verdict, from
 * inside on_request or later, and pf_tx_ref()/pf_tx_deref() when the client
 * aborts a paused transaction (proxy/chain.c, tx.c, txref.c). Fixture and
 * test-only filters: chain_fx.h.
 */
#include "tests/unit/chain_fx.h"

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
    pf_tx_abort(tx, PF_ERR_CLIENT_ABORT); /* frees tx and its arena */
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
    pf_tx_abort(a, PF_ERR_CLIENT_ABORT);
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
    pf_tx_abort(b, PF_ERR_CLIENT_ABORT);
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
            pf_tx_abort(txs[i], PF_ERR_CLIENT_ABORT);
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

int main(void)
{
    const struct CMUnitTest tests[] = {
#define T(f) cmocka_unit_test_setup_teardown(f, setup, teardown)
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
#undef T
    };

    return cmocka_run_group_tests_name("pause", tests, NULL, NULL);
}
