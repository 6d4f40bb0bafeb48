/*
 * Unit tests of proxy/upstream/retry.c: the `retries:` settings and their
 * defaults, which outcomes are retried, the jittered exponential backoff's
 * bounds, the budget's arithmetic and its min_per_second window on an
 * injected clock, and the shared state across a reload.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include <event2/buffer.h>

#include "proxy/conf.h"
#include "proxy/tx.h"
#include "proxy/upstream/balancer.h"
#include "proxy/upstream/pool.h"
#include "proxy/upstream/retry.h"
#include "up_fx.h"

#define UNUSED __attribute__((unused))
#define MS     1000ull /* microseconds */
#define SEC    1000000ull

static struct pf_err err;

static struct pf_config *load(const char *retries)
{
    char yaml[1024];

    snprintf(yaml, sizeof(yaml), "upstreams:\n  app:\n    endpoints: [\"127.0.0.1:3000\"]\n%s%s\n",
             retries[0] != '\0' ? "    retries: " : "", retries);
    pf_err_fini(&err);
    pf_err_init(&err, "t.yaml");
    return pf_conf_load_string(yaml, "t.yaml", &err);
}

static bool has_error(const char *msg)
{
    for (unsigned i = 0; i < err.n; i++) {
        if (strcmp(err.msgs[i], msg) == 0)
            return true;
    }
    pf_conf_print_errors(&err, stderr);
    return false;
}

static void test_defaults(void **state UNUSED)
{
    struct pf_config *cfg = load("");
    const struct pf_retry_conf *rc;

    assert_non_null(cfg);
    rc = &cfg->upstreams[0].retry;
    assert_int_equal(rc->attempts, 1);
    assert_int_equal(rc->on, PF_RETRY_ON_CONNECT_FAILURE | PF_RETRY_ON_RESET);
    assert_true(pf_retry_on_outcome(rc, PF_OUTCOME_OK, 502));
    assert_true(pf_retry_on_outcome(rc, PF_OUTCOME_OK, 503));
    assert_false(pf_retry_on_outcome(rc, PF_OUTCOME_OK, 500));
    assert_int_equal(rc->per_try_timeout_ms, 0);
    assert_true(rc->budget > 0.199 && rc->budget < 0.201);
    assert_int_equal(rc->min_per_second, 10);
    assert_int_equal(rc->backoff_ms, 25);
    assert_int_equal(rc->max_buffered_body, 64 * 1024);
    pf_conf_unref(cfg);
}

static void test_parse_every_key(void **state UNUSED)
{
    struct pf_config *cfg =
        load("{attempts: 3, on: [timeout, 5xx, 429], per_try_timeout: 250ms, budget: 50%, "
             "min_per_second: 0, backoff: 10ms, max_buffered_body: 1KiB}");
    const struct pf_retry_conf *rc;

    assert_non_null(cfg);
    rc = &cfg->upstreams[0].retry;
    assert_int_equal(rc->attempts, 3);
    assert_int_equal(rc->on, PF_RETRY_ON_TIMEOUT);
    assert_int_equal(rc->per_try_timeout_ms, 250);
    assert_true(rc->budget > 0.499 && rc->budget < 0.501);
    assert_int_equal(rc->min_per_second, 0);
    assert_int_equal(rc->backoff_ms, 10);
    assert_int_equal(rc->max_buffered_body, 1024);
    pf_conf_unref(cfg);
}

static void test_parse_errors(void **state UNUSED)
{
    assert_null(load("{on: [connect_failure, 200]}"));
    assert_true(has_error("t.yaml:4:37: retries.on: each item must be connect_failure, reset, "
                          "timeout, 5xx, 4xx or a status 400-599"));
    assert_null(load("{on: [teapot]}"));
    assert_int_equal(err.n, 1);
    assert_null(load("{attempts: 11}"));
    assert_int_equal(err.n, 1);
    assert_null(load("{tries: 2}"));
    assert_true(has_error("t.yaml:4:15: unknown key 'tries' in upstreams.app.retries"));
    assert_null(load("{budget: 120%}"));
    assert_int_equal(err.n, 1);
}

/* Which outcomes are retried, and `on` as a scalar. */
static void test_which_outcomes_retry(void **state UNUSED)
{
    struct pf_config *cfg = load("{on: [connect_failure, timeout, 5xx, 4xx]}");
    const struct pf_retry_conf *rc;

    assert_non_null(cfg);
    rc = &cfg->upstreams[0].retry;
    assert_true(pf_retry_on_outcome(rc, PF_OUTCOME_CONNECT_FAILED, 0));
    assert_true(pf_retry_on_outcome(rc, PF_OUTCOME_TIMEOUT, 0));
    assert_false(pf_retry_on_outcome(rc, PF_OUTCOME_RESET, 0));
    assert_false(pf_retry_on_outcome(rc, PF_OUTCOME_BAD_RESPONSE, 0)); /* never */
    for (int s = 100; s < 700; s++)
        assert_int_equal(pf_retry_on_outcome(rc, PF_OUTCOME_OK, s), s >= 400 && s <= 599);
    pf_conf_unref(cfg);

    cfg = load("{on: reset}");
    assert_non_null(cfg);
    rc = &cfg->upstreams[0].retry;
    assert_true(pf_retry_on_outcome(rc, PF_OUTCOME_RESET, 0));
    assert_false(pf_retry_on_outcome(rc, PF_OUTCOME_CONNECT_FAILED, 0));
    assert_false(pf_retry_on_outcome(rc, PF_OUTCOME_OK, 503));
    pf_conf_unref(cfg);

    cfg = load("{on: []}"); /* nothing is retried */
    assert_non_null(cfg);
    rc = &cfg->upstreams[0].retry;
    assert_false(pf_retry_on_outcome(rc, PF_OUTCOME_RESET, 0));
    assert_false(pf_retry_on_outcome(rc, PF_OUTCOME_OK, 503));
    pf_conf_unref(cfg);
}

/* Retry n waits in [cap / 2, cap], cap = min(backoff << (n - 1), 10 x backoff). */
static void test_backoff_bounds(void **state UNUSED)
{
    struct pf_retry_conf rc;
    static const uint64_t caps[] = {0, 25 * MS, 50 * MS, 100 * MS, 200 * MS, 250 * MS, 250 * MS};

    pf_retry_conf_defaults(&rc);
    for (unsigned n = 1; n < sizeof(caps) / sizeof(caps[0]); n++) {
        assert_int_equal(pf_retry_backoff_us(&rc, n, 0), caps[n] / 2);
        assert_int_equal(pf_retry_backoff_us(&rc, n, caps[n] - caps[n] / 2), caps[n]);
        assert_int_equal(pf_retry_backoff_us(&rc, n, UINT64_MAX) <= caps[n], true);
        assert_int_equal(pf_retry_backoff_us(&rc, n, UINT64_MAX) >= caps[n] / 2, true);
    }
    assert_int_equal(pf_retry_backoff_us(&rc, 60, 0), 125 * MS); /* no overflow */
    rc.backoff_ms = 0;
    assert_int_equal(pf_retry_backoff_us(&rc, 1, 12345), 0);
}

/* Jitter: draws spread over the whole [cap / 2, cap] range. */
static void test_backoff_jitter_spreads(void **state UNUSED)
{
    struct pf_retry_conf rc;
    uint64_t x = 88172645463325252ull, lo = UINT64_MAX, hi = 0;
    unsigned buckets[10] = {0};

    pf_retry_conf_defaults(&rc);
    for (unsigned i = 0; i < 10000; i++) {
        uint64_t d;

        x ^= x << 13; /* xorshift64: a fixed sequence */
        x ^= x >> 7;
        x ^= x << 17;
        d = pf_retry_backoff_us(&rc, 2, x);
        assert_true(d >= 25 * MS && d <= 50 * MS);
        lo = d < lo ? d : lo;
        hi = d > hi ? d : hi;
        buckets[d == 50 * MS ? 9 : (d - 25 * MS) / (2500)]++;
    }
    assert_true(lo < 25 * MS + 100 && hi > 50 * MS - 100);
    for (unsigned b = 0; b < 10; b++)
        assert_true(buckets[b] > 800 && buckets[b] < 1200); /* 1000 each, within 20 % */
}

static struct pf_retry_state st;
static unsigned active; /* requests in flight to the upstream, as upstream.c counts them */

static void state_reset(unsigned n)
{
    memset(&st, 0, sizeof(st));
    active = n;
}

/* Retries in flight, this one included, within budget x active requests. */
static void test_budget_share_of_active(void **state UNUSED)
{
    struct pf_retry_conf rc;

    pf_retry_conf_defaults(&rc);
    rc.min_per_second = 0;
    state_reset(10); /* 20 % of 10: 2 retries in flight */
    assert_true(pf_retry_budget_take(&st, &rc, 1000, active, 1 * SEC));
    assert_true(pf_retry_budget_take(&st, &rc, 1000, active, 1 * SEC));
    assert_false(pf_retry_budget_take(&st, &rc, 1000, active, 1 * SEC));
    assert_int_equal(atomic_load(&st.in_flight), 2); /* a refusal takes nothing */
    pf_retry_budget_put(&st);
    assert_true(pf_retry_budget_take(&st, &rc, 1000, active, 1 * SEC));
    active = 20; /* more requests, more room */
    assert_true(pf_retry_budget_take(&st, &rc, 1000, active, 1 * SEC));
    assert_true(pf_retry_budget_take(&st, &rc, 1000, active, 1 * SEC));
    assert_false(pf_retry_budget_take(&st, &rc, 1000, active, 1 * SEC));
    assert_int_equal(atomic_load(&st.in_flight), 4);

    state_reset(4); /* 20 % of 4 is below one: no retry without min_per_second */
    assert_false(pf_retry_budget_take(&st, &rc, 1000, active, 1 * SEC));
    rc.budget = 1.0; /* 100 %: as many retries as requests */
    assert_true(pf_retry_budget_take(&st, &rc, 1000, active, 1 * SEC));
    assert_int_equal(atomic_load(&st.in_flight), 1);
    rc.budget = 0;
    state_reset(1000);
    assert_false(pf_retry_budget_take(&st, &rc, 1000, active, 1 * SEC));
}

/* circuit_breaker.max_retries caps retries in flight in the take itself, min_per_second too. */
static void test_budget_capped_by_max_retries(void **state UNUSED)
{
    struct pf_retry_conf rc;

    pf_retry_conf_defaults(&rc);
    rc.budget = 1.0;
    state_reset(1000);
    assert_true(pf_retry_budget_take(&st, &rc, 2, active, 1 * SEC));
    assert_true(pf_retry_budget_take(&st, &rc, 2, active, 1 * SEC));
    assert_false(pf_retry_budget_take(&st, &rc, 2, active, 1 * SEC));
    assert_int_equal(atomic_load(&st.in_flight), 2); /* the refusal took nothing */
    pf_retry_budget_put(&st);
    assert_true(pf_retry_budget_take(&st, &rc, 2, active, 1 * SEC));
    assert_false(pf_retry_budget_take(&st, &rc, 0, active, 1 * SEC)); /* max_retries: 0 */
    assert_int_equal(atomic_load(&st.in_flight), 2);
}

/* Beyond the share, min_per_second retries per second of the clock are always allowed. */
static void test_budget_min_per_second(void **state UNUSED)
{
    struct pf_retry_conf rc;

    pf_retry_conf_defaults(&rc);
    rc.budget = 0;
    rc.min_per_second = 3;
    state_reset(0);
    for (int i = 0; i < 3; i++)
        assert_true(pf_retry_budget_take(&st, &rc, 1000, active, 5 * SEC + 100 * MS));
    assert_false(pf_retry_budget_take(&st, &rc, 1000, active, 5 * SEC + 200 * MS));
    for (int i = 0; i < 3; i++)
        pf_retry_budget_put(&st); /* ended: their places in this second stay used */
    assert_false(pf_retry_budget_take(&st, &rc, 1000, active, 6 * SEC - 1));
    assert_int_equal(atomic_load(&st.in_flight), 0);
    for (int i = 0; i < 3; i++) /* the next second */
        assert_true(pf_retry_budget_take(&st, &rc, 1000, active, 6 * SEC));
    assert_false(pf_retry_budget_take(&st, &rc, 1000, active, 6 * SEC + 999 * MS));
    assert_true(pf_retry_budget_take(&st, &rc, 1000, active, 60 * SEC)); /* a long gap */
    assert_int_equal(atomic_load(&st.in_flight), 4);

    /* the share first: retries it allows take no min_per_second place */
    rc.budget = 0.5;
    state_reset(4);
    assert_true(pf_retry_budget_take(&st, &rc, 1000, active, 7 * SEC));
    assert_true(pf_retry_budget_take(&st, &rc, 1000, active, 7 * SEC)); /* 2 <= 50 % of 4 */
    for (int i = 0; i < 3; i++)
        assert_true(pf_retry_budget_take(&st, &rc, 1000, active, 7 * SEC));
    assert_false(pf_retry_budget_take(&st, &rc, 1000, active, 7 * SEC));
    assert_int_equal(atomic_load(&st.in_flight), 5);
}

/* A reload keeps the state of an upstream that remains; a new name gets a new one. */
static void test_state_survives_reload(void **state UNUSED)
{
    struct pf_config *a = load("");
    struct pf_config *b = load("{attempts: 2}");
    struct pf_config *c;
    struct pf_upstream_conf *ua, *ub;

    assert_non_null(a);
    assert_non_null(b);
    pf_retry_bind(a, NULL);
    pf_retry_bind(b, a);
    ua = &a->upstreams[0];
    ub = &b->upstreams[0];
    assert_non_null(ua->rstate);
    assert_ptr_equal(ua->rstate, ub->rstate);
    atomic_store(&ua->rstate->in_flight, 3);
    assert_int_equal(pf_retry_in_flight(ub), 3);
    pf_retry_unbind(a);
    assert_null(ua->rstate);
    assert_int_equal(pf_retry_in_flight(ua), 0);
    assert_int_equal(pf_retry_in_flight(ub), 3); /* still there */

    c = pf_conf_load_string("upstreams:\n  other:\n    endpoints: [\"127.0.0.1:3000\"]\n", "t",
                            &err);
    assert_non_null(c);
    pf_retry_bind(c, b);
    assert_ptr_not_equal(c->upstreams[0].rstate, ub->rstate);
    assert_int_equal(pf_retry_in_flight(&c->upstreams[0]), 0);
    pf_retry_unbind(b);
    pf_retry_unbind(c);
    pf_conf_unref(a);
    pf_conf_unref(b);
    pf_conf_unref(c);
}

/*
 * Round robin: a retry goes to an endpoint not tried and leaves the rotation
 * alone, so with one of two endpoints failing, first attempts still
 * alternate (they would all land on the failing one if retries moved it).
 */
static void test_retry_leaves_round_robin_alone(void **state UNUSED)
{
    struct pf_worker w;
    struct pf_config *cfg;
    const struct pf_upstream_conf *up;
    unsigned firsts[2] = {0, 0};

    pf_upstream_free_all();
    fx_worker_init(&w);
    cfg = fx_cfg_new(2, PF_BALANCE_ROUND_ROBIN);
    up = &cfg->upstreams[0];
    for (unsigned i = 0; i < 100; i++) {
        unsigned a = pf_balancer_pick(up, 0, &w);
        unsigned b = pf_balancer_pick(up, pf_balancer_tried_bit(up, a), &w);

        assert_int_not_equal(a, b);
        firsts[a == up->endpoint_ids[0] ? 0 : 1]++;
    }
    assert_int_equal(firsts[0], 50);
    assert_int_equal(firsts[1], 50);
    fx_cfg_free(cfg);
    pf_upstream_sweep(&w, true); /* round_robin keeps its weights in the worker's pools */
    fx_worker_fini(&w);
    pf_upstream_free_all();
}

static void test_conf_json(void **state UNUSED)
{
    struct pf_config *cfg = load("{on: [reset, 5xx], budget: 12.5%}");
    struct evbuffer *out = evbuffer_new();
    char *s;

    assert_non_null(cfg);
    assert_non_null(out);
    pf_retry_conf_json(&cfg->upstreams[0].retry, out);
    evbuffer_add(out, "", 1);
    s = (char *)evbuffer_pullup(out, -1);
    assert_non_null(strstr(s, ",\"retries\":{\"attempts\":1,\"on\":[\"reset\",500,501,"));
    assert_non_null(strstr(s, ",599],\"per_try_timeout\":\"0s\",\"budget\":\"12.5%\","
                              "\"min_per_second\":10,\"backoff\":\"25ms\","
                              "\"max_buffered_body\":65536}"));
    evbuffer_free(out);
    pf_conf_unref(cfg);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_parse_every_key),
        cmocka_unit_test(test_parse_errors),
        cmocka_unit_test(test_which_outcomes_retry),
        cmocka_unit_test(test_backoff_bounds),
        cmocka_unit_test(test_backoff_jitter_spreads),
        cmocka_unit_test(test_budget_share_of_active),
        cmocka_unit_test(test_budget_min_per_second),
        cmocka_unit_test(test_budget_capped_by_max_retries),
        cmocka_unit_test(test_state_survives_reload),
        cmocka_unit_test(test_retry_leaves_round_robin_alone),
        cmocka_unit_test(test_conf_json),
    };
    int rc;

    pf_err_init(&err, "t.yaml");
    rc = cmocka_run_group_tests(tests, NULL, NULL);
    pf_err_fini(&err);
    return rc;
}
