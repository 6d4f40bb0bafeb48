/*
 * Unit tests for proxy/clock.c: pf_now_us() read once per held callback,
 * pf_clock_read_us() always fresh, the tests' fixed clock above both.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "proxy/clock.h"

#define SPIN_MAX 100000000u /* reads of the clock to wait for it to move */

/* Read the clock until it passes t (bounded by count, not by time). */
static uint64_t wait_past(uint64_t t)
{
    uint64_t now = pf_clock_read_us();

    for (unsigned i = 0; i < SPIN_MAX && now <= t; i++)
        now = pf_clock_read_us();
    assert_true(now > t);
    return now;
}

static void test_clock_held_time_stays_until_the_outermost_release(void **state)
{
    uint64_t held, later;

    (void)state;
    pf_clock_hold();
    held = pf_now_us();
    later = wait_past(held);
    assert_int_equal(pf_now_us(), held); /* the callback's time */
    pf_clock_hold();                     /* a nested callback keeps it */
    assert_int_equal(pf_now_us(), held);
    pf_clock_release();
    assert_int_equal(pf_now_us(), held);
    assert_true(pf_clock_read_us() >= later); /* a fresh read is fresh */
    pf_clock_release();
    assert_true(pf_now_us() >= later); /* outside a callback: the clock itself */
}

static void test_clock_reads_afresh_outside_a_hold(void **state)
{
    uint64_t t;

    (void)state;
    t = pf_now_us();
    wait_past(t);
    assert_true(pf_now_us() > t);
    pf_clock_release(); /* an unpaired release does not start a hold */
    t = pf_now_us();
    wait_past(t);
    assert_true(pf_now_us() > t);
}

static void test_clock_fixed_time_wins_over_a_hold(void **state)
{
    (void)state;
    pf_clock_hold();
    pf_clock_fixed_us = 42;
    assert_int_equal(pf_now_us(), 42);
    assert_int_equal(pf_clock_read_us(), 42);
    pf_clock_fixed_us = 0;
    pf_clock_release();
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_clock_held_time_stays_until_the_outermost_release),
        cmocka_unit_test(test_clock_reads_afresh_outside_a_hold),
        cmocka_unit_test(test_clock_fixed_time_wins_over_a_hold),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
