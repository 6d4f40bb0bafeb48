/*
 * Unit tests of proxy/upstream/balancer.c: each policy's distribution over a
 * fixed seed, the tried mask (a retry goes to an endpoint not tried yet),
 * one endpoint, all tried.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "proxy/tx.h"
#include "proxy/upstream/balancer.h"
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
    /* endpoint 0 busy: chosen only when both draws fall on it (1 in 16) */
    atomic_store(&pf_endpoint_get(up->endpoint_ids[0])->active, 10);
    memset(counts, 0, sizeof(counts));
    count_picks(up, counts);
    assert_true(counts[0] < PICKS / 16 * 15 / 10);
    for (unsigned i = 1; i < 4; i++)
        assert_true(counts[i] > counts[0] * 3);
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

static void test_policy_table(void **state UNUSED)
{
    assert_ptr_equal(pf_balancer_get(PF_BALANCE_ROUND_ROBIN), &pf_lb_round_robin);
    assert_ptr_equal(pf_balancer_get(PF_BALANCE_LEAST_REQUEST), &pf_lb_least_request);
    assert_ptr_equal(pf_balancer_get(PF_BALANCE_RANDOM), &pf_lb_random);
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
        cmocka_unit_test(test_policy_table),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
