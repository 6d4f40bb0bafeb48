/*
 * Unit tests for proxy/timer.c: one loop's timers in a min-heap under a
 * single libevent timer. pf_timers_run() is driven with explicit times.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include <cmocka.h>

#include <event2/event.h>

#include "proxy/clock.h"
#include "proxy/timer.h"

#define N 200

static struct pf_timers q;
static struct pf_timer timers[N];
static unsigned fired[N];
static unsigned order[N];
static unsigned n_order;
static struct pf_timer *rearm; /* a callback arms this one again for now */

static void cb(struct pf_timer *t)
{
    unsigned i = (unsigned)(t - timers);

    fired[i]++;
    order[n_order++ % N] = i;
    if (t == rearm)
        pf_timer_add(&q, t, pf_now_us());
}

static int setup(void **state)
{
    struct event_base *base = event_base_new();

    assert_non_null(base);
    *state = base;
    pf_clock_fixed_us = 1000000;
    pf_timers_init(&q, base);
    for (unsigned i = 0; i < N; i++) {
        pf_timer_init(&timers[i], cb);
        fired[i] = 0;
    }
    n_order = 0;
    rearm = NULL;
    return 0;
}

static int teardown(void **state)
{
    pf_timers_fini(&q);
    event_base_free(*state);
    pf_clock_fixed_us = 0;
    return 0;
}

/* Timers run in the order of their times, each once, only when due. */
static void test_timer_runs_due_timers_in_order(void **state)
{
    (void)state;
    for (unsigned i = 0; i < N; i++) /* a scrambled order of distinct times */
        pf_timer_add(&q, &timers[i], 2000000 + (uint64_t)((i * 7919) % N) * 10);
    assert_int_equal(pf_timers_count(&q), N);
    pf_timers_run(&q, 1999999);
    assert_int_equal(n_order, 0);
    pf_timers_run(&q, 2000000 + (N / 2 - 1) * 10);
    assert_int_equal(n_order, N / 2);
    pf_timers_run(&q, 3000000);
    assert_int_equal(n_order, N);
    for (unsigned k = 1; k < N; k++)
        assert_true(timers[order[k - 1]].at_us == 0 && !pf_timer_pending(&timers[order[k]]));
    for (unsigned k = 1; k < N; k++)
        assert_true((order[k - 1] * 7919) % N < (order[k] * 7919) % N);
    for (unsigned i = 0; i < N; i++)
        assert_int_equal(fired[i], 1);
    assert_int_equal(pf_timers_count(&q), 0);
}

/* A timer moved later or earlier, or removed, fires at its new time or not at all. */
static void test_timer_move_and_delete(void **state)
{
    (void)state;
    for (unsigned i = 0; i < 10; i++)
        pf_timer_add(&q, &timers[i], 2000000 + i * 1000);
    pf_timer_add(&q, &timers[0], 9000000); /* the earliest moved last */
    pf_timer_add(&q, &timers[9], 1500000); /* the last moved first */
    pf_timer_del(&q, &timers[5]);
    pf_timer_del(&q, &timers[5]);  /* twice: a no-op */
    pf_timer_del(&q, &timers[50]); /* never armed: a no-op */
    assert_false(pf_timer_pending(&timers[5]));
    assert_int_equal(pf_timers_count(&q), 9);
    pf_timers_run(&q, 1500000);
    assert_int_equal(n_order, 1);
    assert_int_equal(order[0], 9);
    pf_timers_run(&q, 8999999);
    assert_int_equal(n_order, 8); /* 1, 2, 3, 4, 6, 7, 8 */
    assert_int_equal(fired[5], 0);
    assert_int_equal(fired[0], 0);
    pf_timers_run(&q, 9000000);
    assert_int_equal(fired[0], 1);
    assert_int_equal(pf_timers_count(&q), 0);
}

/* A callback arming its timer again for now does not run it again in the same turn. */
static void test_timer_rearmed_for_now_waits_for_the_next_turn(void **state)
{
    (void)state;
    rearm = &timers[3];
    pf_timer_add(&q, &timers[3], 1000000);
    pf_timers_run(&q, 1000000);
    assert_int_equal(fired[3], 1);
    assert_true(pf_timer_pending(&timers[3]));
    pf_timers_run(&q, 1000000);
    assert_int_equal(fired[3], 2);
    rearm = NULL;
    pf_timer_del(&q, &timers[3]);
}

/* The libevent timer fires the heap: one real 10 ms timer, run by the loop. */
static void test_timer_fires_from_the_loop(void **state)
{
    struct event_base *base = *state;

    pf_clock_fixed_us = 0;
    pf_timer_add(&q, &timers[1], pf_now_us() + 10000);
    pf_timer_add(&q, &timers[2], pf_now_us() + 5000000); /* later: not this turn */
    for (int i = 0; i < 1000 && fired[1] == 0; i++)
        event_base_loop(base, EVLOOP_ONCE);
    assert_int_equal(fired[1], 1);
    assert_int_equal(fired[2], 0);
    pf_timer_del(&q, &timers[2]);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_timer_runs_due_timers_in_order, setup, teardown),
        cmocka_unit_test_setup_teardown(test_timer_move_and_delete, setup, teardown),
        cmocka_unit_test_setup_teardown(test_timer_rearmed_for_now_waits_for_the_next_turn, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_timer_fires_from_the_loop, setup, teardown),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
