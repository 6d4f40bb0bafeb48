/*
 * Unit tests of proxy/upstream/balancer.c: each policy's distribution over a
 * fixed seed, the tried mask (a retry goes to an endpoint not tried yet),
 * one endpoint, all tried; weights, health and panic, ring_hash stability,
 * slow_start with a fixed clock, and the balancer's settings.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include <event2/buffer.h>

#include "proxy/clock.h"
#include "proxy/tx.h"
#include "proxy/upstream/balancer.h"
#include "proxy/upstream/health.h"
#include "proxy/upstream/pool.h"
#include "up_fx.h"

#define UNUSED __attribute__((unused))
#define PICKS  4000

static struct pf_worker w;

static int setup(void **state UNUSED)
{
    pf_upstream_free_all();
    fx_worker_init(&w);
    return 0;
}

static int teardown(void **state UNUSED)
{
    pf_upstream_sweep(&w, true); /* round_robin keeps its weights in the worker's pools */
    fx_worker_fini(&w);
    pf_upstream_free_all();
    return 0;
}

/* Index of id in up's endpoint list. */
static unsigned index_of(const struct pf_upstream_conf *up, unsigned id)
{
    for (unsigned i = 0; i < up->n_endpoints; i++) {
        if (up->endpoint_ids[i] == id)
            return i;
    }
    fail_msg("endpoint %u is not listed", id);
    return 0;
}

/* Picks of PICKS draws with nothing tried, per endpoint index. */
static void count_picks(const struct pf_upstream_conf *up, unsigned *counts)
{
    for (unsigned i = 0; i < PICKS; i++)
        counts[index_of(up, pf_balancer_pick(up, 0, &w))]++;
}

static void test_round_robin_takes_turns(void **state UNUSED)
{
    struct pf_config *cfg = fx_cfg_new(4, PF_BALANCE_ROUND_ROBIN);
    const struct pf_upstream_conf *up = &cfg->upstreams[0];
    unsigned counts[4] = {0};

    for (unsigned i = 0; i < 8; i++)
        assert_int_equal(index_of(up, pf_balancer_pick(up, 0, &w)), i % 4);
    count_picks(up, counts);
    for (unsigned i = 0; i < 4; i++)
        assert_int_equal(counts[i], PICKS / 4);
    fx_cfg_free(cfg);
}

static void test_random_spreads_evenly(void **state UNUSED)
{
    struct pf_config *cfg = fx_cfg_new(4, PF_BALANCE_RANDOM);
    const struct pf_upstream_conf *up = &cfg->upstreams[0];
    unsigned counts[4] = {0};

    count_picks(up, counts); /* fixed seed: the same counts every run */
    for (unsigned i = 0; i < 4; i++) {
        assert_true(counts[i] > PICKS / 4 * 8 / 10);
        assert_true(counts[i] < PICKS / 4 * 12 / 10);
    }
    fx_cfg_free(cfg);
}

static void test_least_request_avoids_the_loaded_endpoint(void **state UNUSED)
{
    struct pf_config *cfg = fx_cfg_new(4, PF_BALANCE_LEAST_REQUEST);
    const struct pf_upstream_conf *up = &cfg->upstreams[0];
    unsigned counts[4] = {0};

    /* equal load: even */
    count_picks(up, counts);
    for (unsigned i = 0; i < 4; i++)
        assert_true(counts[i] > PICKS / 4 * 8 / 10 && counts[i] < PICKS / 4 * 12 / 10);
    /* endpoint 0 busy: the two draws differ, so it is never chosen */
    atomic_store(&pf_endpoint_get(up->endpoint_ids[0])->active, 10);
    memset(counts, 0, sizeof(counts));
    count_picks(up, counts);
    assert_int_equal(counts[0], 0);
    for (unsigned i = 1; i < 4; i++)
        assert_true(counts[i] > PICKS / 3 * 8 / 10 && counts[i] < PICKS / 3 * 12 / 10);
    atomic_store(&pf_endpoint_get(up->endpoint_ids[0])->active, 0);
    fx_cfg_free(cfg);
}

/* Every policy, every mask of 4 endpoints that leaves one: never a tried one. */
static void test_tried_endpoints_are_skipped(void **state UNUSED)
{
    static const enum pf_balance policies[] = {PF_BALANCE_ROUND_ROBIN, PF_BALANCE_LEAST_REQUEST,
                                               PF_BALANCE_RANDOM};

    for (unsigned p = 0; p < 3; p++) {
        struct pf_config *cfg = fx_cfg_new(4, policies[p]);
        const struct pf_upstream_conf *up = &cfg->upstreams[0];

        for (pf_lb_tried tried = 1; tried < 15; tried++) {
            unsigned seen = 0;

            for (unsigned i = 0; i < 200; i++) {
                unsigned k = index_of(up, pf_balancer_pick(up, tried, &w));

                assert_false(tried & ((pf_lb_tried)1 << k));
                seen |= 1u << k;
            }
            assert_int_equal(seen, ~tried & 15); /* and every one left is used */
        }
        fx_cfg_free(cfg);
    }
}

static void test_all_tried_picks_any(void **state UNUSED)
{
    static const enum pf_balance policies[] = {PF_BALANCE_ROUND_ROBIN, PF_BALANCE_LEAST_REQUEST,
                                               PF_BALANCE_RANDOM};

    for (unsigned p = 0; p < 3; p++) {
        struct pf_config *cfg = fx_cfg_new(3, policies[p]);
        const struct pf_upstream_conf *up = &cfg->upstreams[0];
        unsigned seen = 0;

        for (unsigned i = 0; i < 200; i++)
            seen |= 1u << index_of(up, pf_balancer_pick(up, 7, &w));
        assert_int_equal(seen, 7);
        fx_cfg_free(cfg);
    }
}

static void test_one_endpoint_draws_nothing(void **state UNUSED)
{
    struct pf_config *cfg = fx_cfg_new(1, PF_BALANCE_RANDOM);
    const struct pf_upstream_conf *up = &cfg->upstreams[0];
    uint64_t rng0 = w.rng[0], rng1 = w.rng[1];

    assert_int_equal(pf_balancer_pick(up, 0, &w), up->endpoint_ids[0]);
    assert_int_equal(pf_balancer_pick(up, 1, &w), up->endpoint_ids[0]); /* tried: still it */
    assert_true(w.rng[0] == rng0 && w.rng[1] == rng1);
    fx_cfg_free(cfg);
}

/* Nothing tried: one draw per pick, as before the mask existed (the seed stays comparable). */
static void test_untried_pick_draws_as_before(void **state UNUSED)
{
    struct pf_config *cfg = fx_cfg_new(5, PF_BALANCE_RANDOM);
    const struct pf_upstream_conf *up = &cfg->upstreams[0];
    struct pf_worker twin = w;

    for (unsigned i = 0; i < 50; i++) {
        unsigned want = up->endpoint_ids[pf_worker_rand(&twin) % 5];

        assert_int_equal(pf_balancer_pick(up, 0, &w), want);
    }
    fx_cfg_free(cfg);
}

static void test_tried_bit_tracks_the_first_64(void **state UNUSED)
{
    struct pf_config *cfg = fx_cfg_new(70, PF_BALANCE_ROUND_ROBIN);
    const struct pf_upstream_conf *up = &cfg->upstreams[0];

    assert_true(pf_balancer_tried_bit(up, up->endpoint_ids[3]) == (pf_lb_tried)1 << 3);
    assert_true(pf_balancer_tried_bit(up, up->endpoint_ids[63]) == (pf_lb_tried)1 << 63);
    assert_true(pf_balancer_tried_bit(up, up->endpoint_ids[65]) == 0); /* not tracked */
    assert_true(pf_balancer_tried_bit(up, 100000) == 0);               /* not listed */
    /* all 64 tracked ones tried: only the six past them are left */
    for (unsigned i = 0; i < 100; i++)
        assert_true(index_of(up, pf_balancer_pick(up, ~(pf_lb_tried)0, &w)) >= 64);
    pf_balancer_report(up, up->endpoint_ids[0], PF_OUTCOME_RESET); /* no state: nothing */
    fx_cfg_free(cfg);
}

/* ---- the admission gate (the circuit breaker's) ---- */

struct gate {
    unsigned refuse; /* this endpoint id is refused (PF_LB_NONE: every one) */
    unsigned asked;
};

static bool gate_fn(unsigned id, void *arg)
{
    struct gate *g = arg;

    g->asked++;
    return g->refuse != PF_LB_NONE && id != g->refuse;
}

static unsigned pick_gated(const struct pf_upstream_conf *up, pf_lb_tried tried, uint64_t key,
                           struct gate *g)
{
    struct pf_lb_admit a;

    memset(&a, 0, sizeof(a));
    a.fn = gate_fn;
    a.arg = g;
    return pf_balancer_pick_key_admit(up, tried, &w, key, &a);
}

/* Every endpoint tried, one refused: the retry goes to the other, never to the refused one. */
static void test_refused_endpoint_stays_out_when_all_are_tried(void **state UNUSED)
{
    static const enum pf_balance policies[] = {PF_BALANCE_ROUND_ROBIN, PF_BALANCE_LEAST_REQUEST,
                                               PF_BALANCE_RANDOM};

    for (unsigned p = 0; p < 3; p++) {
        struct pf_config *cfg = fx_cfg_new(2, policies[p]);
        const struct pf_upstream_conf *up = &cfg->upstreams[0];

        for (unsigned i = 0; i < 50; i++) {
            struct gate g = {.refuse = up->endpoint_ids[0]};

            assert_int_equal(pick_gated(up, 3, 0, &g), up->endpoint_ids[1]);
        }
        fx_cfg_free(cfg);
    }
}

/* ring_hash keeps picking its key's endpoint: refused past index 64, another one serves. */
static void test_refused_endpoint_past_64_is_excluded(void **state UNUSED)
{
    struct pf_config *cfg = fx_cfg_new(70, PF_BALANCE_RING_HASH);
    struct pf_upstream_conf *up = &cfg->upstreams[0];
    uint64_t key = 0;
    unsigned first = 0, got;
    struct gate g;

    pf_balancer_ring_build(up);
    for (unsigned k = 0; k < 10000 && first < 64; k++) {
        key = pf_balancer_hash((const char *)&k, sizeof(k));
        first = index_of(up, pf_balancer_pick_key(up, 0, &w, key));
    }
    assert_true(first >= 64);
    g = (struct gate){.refuse = up->endpoint_ids[first]};
    got = pick_gated(up, 0, key, &g);
    assert_int_not_equal(got, PF_LB_NONE);
    assert_int_not_equal(got, up->endpoint_ids[first]);
    assert_int_equal(g.asked, 2);
    g = (struct gate){.refuse = PF_LB_NONE}; /* all refused: none, after asking each once */
    assert_int_equal(pick_gated(up, 0, key, &g), PF_LB_NONE);
    assert_int_equal(g.asked, 70);
    pf_balancer_conf_free(up);
    fx_cfg_free(cfg);
}

/* Refused picks take no round-robin turn: the rotation goes on as if they never happened. */
static void test_refused_pick_leaves_round_robin_alone(void **state UNUSED)
{
    struct pf_config *cfg = fx_cfg_new(4, PF_BALANCE_ROUND_ROBIN);
    const struct pf_upstream_conf *up = &cfg->upstreams[0];
    struct gate g = {.refuse = PF_LB_NONE};

    assert_int_equal(pick_gated(up, 0, 0, &g), PF_LB_NONE);
    assert_int_equal(g.asked, 4);
    for (unsigned i = 0; i < 8; i++)
        assert_int_equal(index_of(up, pf_balancer_pick(up, 0, &w)), i % 4);
    fx_cfg_free(cfg);
}

/* ---- weights, health, ring_hash, slow_start ---- */

/* Give up the weights w[0..n). */
static void set_weights(struct pf_upstream_conf *up, const unsigned *wt)
{
    up->weights = calloc(up->n_endpoints, sizeof(*up->weights));
    assert_non_null(up->weights);
    memcpy(up->weights, wt, up->n_endpoints * sizeof(*wt));
}

static void free_lb(struct pf_config *cfg)
{
    pf_balancer_conf_free(&cfg->upstreams[0]);
    fx_cfg_free(cfg);
}

static void set_health(const struct pf_upstream_conf *up, unsigned i, enum pf_health_state st)
{
    atomic_store(&pf_endpoint_get(up->endpoint_ids[i])->health, st);
}

/*
 * Panic is decided by health alone: a healthy endpoint whose circuit is open
 * keeps the unhealthy ones out (the answer is circuit_open, not a pick in
 * panic), and no panic request is counted.
 */
static void test_open_circuit_of_a_healthy_endpoint_is_no_panic(void **state UNUSED)
{
    struct pf_config *cfg = fx_cfg_new(2, PF_BALANCE_ROUND_ROBIN);
    struct pf_upstream_conf *up = &cfg->upstreams[0];
    struct pf_endpoint *a = pf_endpoint_get(up->endpoint_ids[0]);

    up->health.enabled = true;
    up->health.panic = true;
    set_health(up, 0, PF_HEALTH_HEALTHY);
    set_health(up, 1, PF_HEALTH_UNHEALTHY);
    atomic_store(&a->br.retry_us, UINT64_MAX);
    atomic_store(&a->br.state, PF_CIRCUIT_OPEN);
    for (unsigned i = 0; i < 10; i++)
        assert_int_equal(pf_balancer_pick(up, 0, &w), PF_LB_NONE);
    assert_int_equal(atomic_load(&pf_endpoint_get(up->endpoint_ids[1])->panic_requests), 0);
    set_health(up, 0, PF_HEALTH_UNHEALTHY); /* none healthy: panic, the circuit still holds */
    for (unsigned i = 0; i < 10; i++)
        assert_int_equal(pf_balancer_pick(up, 0, &w), up->endpoint_ids[1]);
    fx_cfg_free(cfg);
}

/* Smooth weighted round robin: exact shares, and each endpoint's turns spread out. */
static void test_round_robin_weights_are_exact_and_smooth(void **state UNUSED)
{
    static const unsigned wt[4] = {1, 2, 3, 4};
    struct pf_config *cfg = fx_cfg_new(4, PF_BALANCE_ROUND_ROBIN);
    struct pf_upstream_conf *up = &cfg->upstreams[0];
    unsigned counts[4] = {0};

    set_weights(up, wt);
    for (unsigned round = 0; round < 100; round++) {
        unsigned in_round[4] = {0};

        for (unsigned i = 0; i < 10; i++)
            in_round[index_of(up, pf_balancer_pick(up, 0, &w))]++;
        for (unsigned k = 0; k < 4; k++) {
            assert_int_equal(in_round[k], wt[k]); /* every 10 picks, weight turns each */
            counts[k] += in_round[k];
        }
    }
    assert_int_equal(counts[3], 400);
    free_lb(cfg);
}

/* random and least_request follow the weights within 5% (fixed seed). */
static void test_weighted_random_and_least_request_follow_weights(void **state UNUSED)
{
    static const unsigned wt[3] = {1, 2, 5};
    static const enum pf_balance policies[] = {PF_BALANCE_RANDOM, PF_BALANCE_LEAST_REQUEST};

    for (unsigned p = 0; p < 2; p++) {
        struct pf_config *cfg = fx_cfg_new(3, policies[p]);
        struct pf_upstream_conf *up = &cfg->upstreams[0];
        unsigned counts[3] = {0};

        set_weights(up, wt);
        count_picks(up, counts);
        for (unsigned k = 0; k < 3; k++) {
            double want = (double)PICKS * wt[k] / 8;

            assert_true(counts[k] > want * 0.95 && counts[k] < want * 1.05);
        }
        free_lb(cfg);
    }
}

/* Weighted least_request: a heavier endpoint may carry more in flight before it is avoided. */
static void test_least_request_weighs_load(void **state UNUSED)
{
    static const unsigned wt[2] = {1, 4};
    struct pf_config *cfg = fx_cfg_new(2, PF_BALANCE_LEAST_REQUEST);
    struct pf_upstream_conf *up = &cfg->upstreams[0];
    unsigned counts[2] = {0};

    set_weights(up, wt);
    /* 3 in flight on the weight-4 one is less load than 1 on the weight-1 one */
    atomic_store(&pf_endpoint_get(up->endpoint_ids[0])->active, 1);
    atomic_store(&pf_endpoint_get(up->endpoint_ids[1])->active, 3);
    count_picks(up, counts);
    /* the two draws differ: endpoint 0 is always compared with endpoint 1, and loses */
    assert_int_equal(counts[0], 0);
    atomic_store(&pf_endpoint_get(up->endpoint_ids[0])->active, 0);
    atomic_store(&pf_endpoint_get(up->endpoint_ids[1])->active, 0);
    free_lb(cfg);
}

/* Health: unhealthy and unknown endpoints get nothing; none left: NONE or panic. */
static void test_unhealthy_endpoints_are_skipped(void **state UNUSED)
{
    static const enum pf_balance policies[] = {PF_BALANCE_ROUND_ROBIN, PF_BALANCE_LEAST_REQUEST,
                                               PF_BALANCE_RANDOM, PF_BALANCE_RING_HASH};

    for (unsigned p = 0; p < 4; p++) {
        struct pf_config *cfg = fx_cfg_new(4, policies[p]);
        struct pf_upstream_conf *up = &cfg->upstreams[0];
        unsigned seen = 0;

        pf_balancer_ring_build(up);
        up->health.enabled = true;
        set_health(up, 0, PF_HEALTH_HEALTHY);
        set_health(up, 1, PF_HEALTH_UNHEALTHY);
        set_health(up, 2, PF_HEALTH_UNKNOWN);
        set_health(up, 3, PF_HEALTH_HEALTHY);
        for (unsigned i = 0; i < 400; i++)
            seen |= 1u << index_of(up, pf_balancer_pick_key(up, 0, &w, pf_worker_rand(&w)));
        assert_int_equal(seen, 9);
        /* the only healthy one tried: a retry goes to it again, never to an unhealthy one */
        set_health(up, 3, PF_HEALTH_UNHEALTHY);
        assert_int_equal(index_of(up, pf_balancer_pick(up, 1, &w)), 0);
        /* none healthy, panic off: nobody */
        set_health(up, 0, PF_HEALTH_UNHEALTHY);
        assert_int_equal(pf_balancer_pick(up, 0, &w), PF_LB_NONE);
        /* panic on: spread over those found unhealthy, never over one not probed yet */
        up->health.panic = true;
        seen = 0;
        for (unsigned i = 0; i < 400; i++)
            seen |= 1u << index_of(up, pf_balancer_pick_key(up, 0, &w, pf_worker_rand(&w)));
        assert_int_equal(seen, 1 | 2 | 8);
        assert_true(atomic_load(&pf_endpoint_get(up->endpoint_ids[0])->panic_requests) > 0);
        free_lb(cfg);
    }
}

/* The endpoint of each of n keys, by index. */
static void ring_map(const struct pf_upstream_conf *up, unsigned *out, unsigned n)
{
    char key[32];

    for (unsigned k = 0; k < n; k++) {
        int len = snprintf(key, sizeof(key), "user-%u", k);

        out[k] = index_of(up, pf_balancer_pick_key(up, 0, &w, pf_balancer_hash(key, len)));
    }
}

#define KEYS 4000

/* ring_hash: a key stays on its endpoint; one going away moves only its own keys. */
static void test_ring_hash_is_stable(void **state UNUSED)
{
    struct pf_config *cfg = fx_cfg_new(4, PF_BALANCE_RING_HASH);
    struct pf_upstream_conf *up = &cfg->upstreams[0];
    static unsigned before[KEYS], after[KEYS];
    unsigned counts[4] = {0}, moved = 0;

    pf_balancer_ring_build(up);
    ring_map(up, before, KEYS);
    ring_map(up, after, KEYS);
    assert_memory_equal(before, after, sizeof(before)); /* the same key, the same endpoint */
    for (unsigned k = 0; k < KEYS; k++)
        counts[before[k]]++;
    for (unsigned i = 0; i < 4; i++)
        assert_true(counts[i] > KEYS / 4 * 8 / 10 && counts[i] < KEYS / 4 * 12 / 10);
    /* endpoint 2 unhealthy: its keys move, no other key does */
    up->health.enabled = true;
    for (unsigned i = 0; i < 4; i++)
        set_health(up, i, i == 2 ? PF_HEALTH_UNHEALTHY : PF_HEALTH_HEALTHY);
    ring_map(up, after, KEYS);
    for (unsigned k = 0; k < KEYS; k++) {
        assert_int_not_equal(after[k], 2);
        if (before[k] != 2)
            assert_int_equal(after[k], before[k]);
        moved += after[k] != before[k];
    }
    assert_int_equal(moved, counts[2]);
    free_lb(cfg);
}

/* ring_hash: an endpoint leaving the configuration moves only its keys too. */
static void test_ring_hash_survives_a_removed_endpoint(void **state UNUSED)
{
    struct pf_config *cfg4 = fx_cfg_new(4, PF_BALANCE_RING_HASH);
    struct pf_config *cfg3;
    struct pf_upstream_conf *up4 = &cfg4->upstreams[0], *up3;
    static unsigned before[KEYS], after[KEYS];

    pf_balancer_ring_build(up4);
    ring_map(up4, before, KEYS);
    cfg3 = fx_cfg_new(3, PF_BALANCE_RING_HASH); /* the same first three addresses */
    up3 = &cfg3->upstreams[0];
    pf_balancer_ring_build(up3);
    ring_map(up3, after, KEYS);
    for (unsigned k = 0; k < KEYS; k++) {
        if (before[k] != 3)
            assert_int_equal(after[k], before[k]);
    }
    free_lb(cfg3);
    free_lb(cfg4);
}

/* slow_start: a recovered endpoint's weight ramps from a tenth to all of it. */
static void test_slow_start_ramps_the_weight(void **state UNUSED)
{
    struct pf_config *cfg = fx_cfg_new(2, PF_BALANCE_RANDOM);
    struct pf_upstream_conf *up = &cfg->upstreams[0];
    const uint64_t t0 = 1000000000;
    unsigned counts[2] = {0};

    up->slow_start_ms = 10000;
    pf_clock_fixed_us = t0 + 60000000;
    atomic_store(&pf_endpoint_get(up->endpoint_ids[0])->serving_since_us, 1); /* long ago */
    atomic_store(&pf_endpoint_get(up->endpoint_ids[1])->serving_since_us, t0 + 60000000);
    assert_int_equal(pf_balancer_weight(up, 0, pf_now_us()), 1000);
    assert_int_equal(pf_balancer_weight(up, 1, pf_now_us()), 100);
    count_picks(up, counts); /* 1000 : 100 */
    assert_true(counts[1] > PICKS / 11 * 8 / 10 && counts[1] < PICKS / 11 * 12 / 10);
    pf_clock_fixed_us += 5000000; /* half way: 100 + 900 / 2 */
    assert_int_equal(pf_balancer_weight(up, 1, pf_now_us()), 550);
    pf_clock_fixed_us += 5000000;
    assert_int_equal(pf_balancer_weight(up, 1, pf_now_us()), 1000);
    memset(counts, 0, sizeof(counts));
    count_picks(up, counts);
    assert_true(counts[1] > PICKS / 2 * 9 / 10 && counts[1] < PICKS / 2 * 11 / 10);
    pf_clock_fixed_us = 0;
    free_lb(cfg);
}

/* endpoints as {address, weight}, hash_on, and their errors. */
static void test_balancer_settings(void **state UNUSED)
{
    struct pf_err err;
    struct pf_config *cfg;

    pf_err_init(&err, "t.yaml");
    cfg = pf_conf_load_string("upstreams:\n  app:\n    endpoints: [\"127.0.0.1:1\", {address: "
                              "\"127.0.0.1:2\", weight: 7}]\n    balance: ring_hash\n"
                              "    hash_on: header:X-User\n    slow_start: 30s\n",
                              "t.yaml", &err);
    assert_non_null(cfg);
    assert_int_equal(cfg->upstreams[0].weights[0], 1);
    assert_int_equal(cfg->upstreams[0].weights[1], 7);
    assert_string_equal(cfg->upstreams[0].hash_header, "X-User");
    assert_int_equal(cfg->upstreams[0].slow_start_ms, 30000);
    assert_true(cfg->upstreams[0].n_ring > 0);
    {
        struct evbuffer *b = evbuffer_new();

        pf_balancer_conf_json(b, &cfg->upstreams[0]); /* GET /config */
        evbuffer_add(b, "", 1);
        assert_string_equal(
            (const char *)evbuffer_pullup(b, -1),
            ",\"weights\":[1,7],\"slow_start\":\"30s\",\"hash_on\":\"header:X-User\"");
        evbuffer_free(b);
    }
    pf_conf_unref(cfg);
    pf_err_fini(&err);
    pf_err_init(&err, "t.yaml");
    cfg = pf_conf_load_string("upstreams:\n  app:\n    endpoints: [{weight: 2}, {address: "
                              "\"127.0.0.1:2\", weight: 0}]\n    hash_on: client_ip\n",
                              "t.yaml", &err);
    assert_null(cfg);
    assert_int_equal(err.n, 3); /* no address, weight 0, hash_on without ring_hash */
    pf_err_fini(&err);
}

static void test_policy_table(void **state UNUSED)
{
    assert_ptr_equal(pf_balancer_get(PF_BALANCE_ROUND_ROBIN), &pf_lb_round_robin);
    assert_ptr_equal(pf_balancer_get(PF_BALANCE_LEAST_REQUEST), &pf_lb_least_request);
    assert_ptr_equal(pf_balancer_get(PF_BALANCE_RANDOM), &pf_lb_random);
    assert_ptr_equal(pf_balancer_get(PF_BALANCE_RING_HASH), &pf_lb_ring_hash);
    assert_string_equal(pf_lb_least_request.name, "least_request");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_round_robin_takes_turns, setup, teardown),
        cmocka_unit_test_setup_teardown(test_random_spreads_evenly, setup, teardown),
        cmocka_unit_test_setup_teardown(test_least_request_avoids_the_loaded_endpoint, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_tried_endpoints_are_skipped, setup, teardown),
        cmocka_unit_test_setup_teardown(test_all_tried_picks_any, setup, teardown),
        cmocka_unit_test_setup_teardown(test_one_endpoint_draws_nothing, setup, teardown),
        cmocka_unit_test_setup_teardown(test_untried_pick_draws_as_before, setup, teardown),
        cmocka_unit_test_setup_teardown(test_tried_bit_tracks_the_first_64, setup, teardown),
        cmocka_unit_test_setup_teardown(test_refused_endpoint_stays_out_when_all_are_tried, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_refused_endpoint_past_64_is_excluded, setup, teardown),
        cmocka_unit_test_setup_teardown(test_refused_pick_leaves_round_robin_alone, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_open_circuit_of_a_healthy_endpoint_is_no_panic, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_round_robin_weights_are_exact_and_smooth, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_weighted_random_and_least_request_follow_weights,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_least_request_weighs_load, setup, teardown),
        cmocka_unit_test_setup_teardown(test_unhealthy_endpoints_are_skipped, setup, teardown),
        cmocka_unit_test_setup_teardown(test_ring_hash_is_stable, setup, teardown),
        cmocka_unit_test_setup_teardown(test_ring_hash_survives_a_removed_endpoint, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_slow_start_ramps_the_weight, setup, teardown),
        cmocka_unit_test_setup_teardown(test_balancer_settings, setup, teardown),
        cmocka_unit_test(test_policy_table),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
