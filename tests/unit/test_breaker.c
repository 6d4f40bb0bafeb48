/*
 * Unit tests of proxy/upstream/breaker.c, driven by their own clock (every
 * breaker function takes the time): consecutive failures, failure and slow
 * rates over the sliding window with min_requests, open_for doubling with
 * jitter up to max_open_for and its reset after a clean close, half-open
 * trials, max_ejection after the ejection, Retry-After, overflow, the
 * settings, the log line and the state an endpoint keeps or loses across
 * configurations.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <unistd.h>

#include <cmocka.h>

#include "proxy/defs.h"
#include "proxy/upstream/breaker.h"
#include "proxy/upstream/health.h"
#include "up_fx.h"

#define UNUSED __attribute__((unused))
#define SEC    1000000ull
#define MS     1000ull

static uint64_t tk; /* the ticket of the last admit: the reports after it are its trial */

static int setup(void **state UNUSED)
{
    pf_upstream_free_all();
    return 0;
}

static int teardown(void **state UNUSED)
{
    pf_upstream_free_all();
    return 0;
}

static struct pf_endpoint *ep_at(const struct pf_upstream_conf *up, unsigned i)
{
    return pf_endpoint_get(up->endpoint_ids[i]);
}

static enum pf_circuit state_of(const struct pf_endpoint *ep)
{
    return (enum pf_circuit)atomic_load(&ep->br.state);
}

static void failed(const struct pf_upstream_conf *up, struct pf_endpoint *ep, uint64_t now)
{
    pf_breaker_report(up, ep, tk, PF_OUTCOME_OK, 503, 1 * MS, now);
}

static void succeed(const struct pf_upstream_conf *up, struct pf_endpoint *ep, uint64_t now)
{
    pf_breaker_report(up, ep, tk, PF_OUTCOME_OK, 200, 1 * MS, now);
}

static void reason_of(const struct pf_upstream_conf *up, const struct pf_endpoint *ep, uint64_t now,
                      char *buf)
{
    struct pf_breaker_view v;

    pf_breaker_view(ep, &up->breaker, now, &v);
    strcpy(buf, v.reason);
}

static void test_consecutive_failures_open(void **state UNUSED)
{
    struct pf_config *cfg = fx_cfg_new(3, PF_BALANCE_ROUND_ROBIN);
    struct pf_upstream_conf *up = &cfg->upstreams[0];
    struct pf_endpoint *ep = ep_at(up, 0);
    char why[160];
    uint64_t t = 100 * SEC;

    up->breaker.failure_rate = 0;
    for (unsigned i = 0; i < 4; i++)
        failed(up, ep, t + i * MS);
    succeed(up, ep, t + 5 * MS); /* a success starts the count again */
    for (unsigned i = 0; i < 4; i++)
        failed(up, ep, t + (6 + i) * MS);
    assert_int_equal(state_of(ep), PF_CIRCUIT_CLOSED);
    assert_true(pf_breaker_admit(ep, &up->breaker, t + 10 * MS, &tk));
    pf_breaker_report(up, ep, tk, PF_OUTCOME_RESET, 0, 1 * MS, t + 11 * MS);
    assert_int_equal(state_of(ep), PF_CIRCUIT_OPEN);
    assert_false(pf_breaker_admit(ep, &up->breaker, t + 12 * MS, &tk));
    reason_of(up, ep, t + 12 * MS, why);
    assert_string_equal(why, "consecutive_failures=5");
    assert_int_equal(atomic_load(&ep->br.opened_total), 1);
    /* the others serve */
    assert_true(pf_breaker_admit(ep_at(up, 1), &up->breaker, t + 12 * MS, &tk));
    fx_cfg_free(cfg);
}

static void test_failure_rate_needs_min_requests(void **state UNUSED)
{
    struct pf_config *cfg = fx_cfg_new(3, PF_BALANCE_ROUND_ROBIN);
    struct pf_upstream_conf *up = &cfg->upstreams[0];
    struct pf_endpoint *ep = ep_at(up, 0);
    uint64_t t = 50 * SEC;
    char why[160];

    up->breaker.consecutive_failures = 0;
    /* 19 calls, 10 failures (53%): below min_requests */
    for (unsigned i = 0; i < 19; i++) {
        if (i % 2 == 0)
            failed(up, ep, t + i * 100 * MS);
        else
            succeed(up, ep, t + i * 100 * MS);
    }
    assert_int_equal(state_of(ep), PF_CIRCUIT_CLOSED);
    succeed(up, ep, t + 1900 * MS); /* 20 calls, 50%: a success cannot trip */
    assert_int_equal(state_of(ep), PF_CIRCUIT_CLOSED);
    failed(up, ep, t + 2000 * MS); /* 21 calls, 11 failures: 52% */
    assert_int_equal(state_of(ep), PF_CIRCUIT_OPEN);
    reason_of(up, ep, t + 2000 * MS, why);
    assert_string_equal(why, "failure_rate=52% over 21 requests in 10s");
    fx_cfg_free(cfg);
}

static void test_window_slides(void **state UNUSED)
{
    struct pf_config *cfg = fx_cfg_new(3, PF_BALANCE_ROUND_ROBIN);
    struct pf_upstream_conf *up = &cfg->upstreams[0];
    struct pf_endpoint *ep = ep_at(up, 0);
    struct pf_breaker_view v;
    uint64_t t = 1000 * SEC;

    up->breaker.consecutive_failures = 0;
    up->breaker.failure_rate = 0.9;
    up->breaker.min_requests = 10;
    for (unsigned i = 0; i < 9; i++) {
        succeed(up, ep, t);
        failed(up, ep, t + 1);
    }
    pf_breaker_view(ep, &up->breaker, t + 1, &v);
    assert_int_equal(v.calls, 18);
    assert_int_equal(v.failures, 9);
    /* 11 s later the window has none of them: one failure among one call is too few */
    failed(up, ep, t + 11 * SEC);
    pf_breaker_view(ep, &up->breaker, t + 11 * SEC, &v);
    assert_int_equal(v.calls, 1);
    assert_int_equal(state_of(ep), PF_CIRCUIT_CLOSED);
    fx_cfg_free(cfg);
}

static void test_slow_rate_opens(void **state UNUSED)
{
    struct pf_config *cfg = fx_cfg_new(2, PF_BALANCE_ROUND_ROBIN);
    struct pf_upstream_conf *up = &cfg->upstreams[0];
    struct pf_endpoint *ep = ep_at(up, 0);
    uint64_t t = 10 * SEC;
    char why[160];

    up->breaker.slow_call_ms = 100;
    up->breaker.slow_rate = 0.8;
    up->breaker.min_requests = 10;
    for (unsigned i = 0; i < 9; i++)
        pf_breaker_report(up, ep, tk, PF_OUTCOME_OK, 200, 250 * MS, t + i * MS);
    pf_breaker_report(up, ep, tk, PF_OUTCOME_OK, 200, 20 * MS, t + 9 * MS); /* fast: 90% slow */
    assert_int_equal(state_of(ep), PF_CIRCUIT_CLOSED);                      /* a fast call */
    pf_breaker_report(up, ep, tk, PF_OUTCOME_OK, 200, 250 * MS, t + 10 * MS);
    assert_int_equal(state_of(ep), PF_CIRCUIT_OPEN);
    reason_of(up, ep, t + 10 * MS, why);
    assert_string_equal(why, "slow_rate=91% over 11 requests in 10s (slower than 100ms)");
    fx_cfg_free(cfg);
}

/* A tenth full of calls takes no more: failures alone counted on would fake a rate. */
static void test_full_tenth_counts_nothing_more(void **state UNUSED)
{
    struct pf_config *cfg = fx_cfg_new(2, PF_BALANCE_ROUND_ROBIN);
    struct pf_upstream_conf *up = &cfg->upstreams[0];
    struct pf_endpoint *ep = ep_at(up, 0);
    struct pf_breaker_view v;
    uint64_t t = 10 * SEC;

    up->breaker.consecutive_failures = 0;
    for (unsigned i = 0; i < 32767; i++)
        succeed(up, ep, t);
    for (unsigned i = 0; i < 20000; i++) /* 38 % of 52767: below failure_rate 50 % */
        failed(up, ep, t);
    assert_int_equal(state_of(ep), PF_CIRCUIT_CLOSED);
    pf_breaker_view(ep, &up->breaker, t, &v);
    assert_int_equal(v.calls, 32767);
    assert_int_equal(v.failures, 0);
    fx_cfg_free(cfg);
}

/* Slow calls are counted as far as calls: all slow is 100 % however many. */
static void test_slow_calls_count_as_far_as_calls(void **state UNUSED)
{
    struct pf_config *cfg = fx_cfg_new(2, PF_BALANCE_ROUND_ROBIN);
    struct pf_upstream_conf *up = &cfg->upstreams[0];
    struct pf_endpoint *ep = ep_at(up, 0);
    uint64_t t = 10 * SEC;

    up->breaker.slow_call_ms = 100;
    up->breaker.min_requests = 20000;
    for (unsigned i = 0; i < 20000 && state_of(ep) == PF_CIRCUIT_CLOSED; i++)
        pf_breaker_report(up, ep, tk, PF_OUTCOME_OK, 200, 250 * MS, t);
    assert_int_equal(state_of(ep), PF_CIRCUIT_OPEN);
    fx_cfg_free(cfg);
}

/* Open ep with consecutive failures at t. */
static void trip_at(const struct pf_upstream_conf *up, struct pf_endpoint *ep, uint64_t t)
{
    for (unsigned i = 0; i < up->breaker.consecutive_failures; i++)
        failed(up, ep, t);
    assert_int_equal(state_of(ep), PF_CIRCUIT_OPEN);
}

static uint64_t open_left(const struct pf_endpoint *ep, uint64_t now)
{
    return atomic_load(&ep->br.retry_us) - now;
}

static void test_open_for_doubles_with_jitter_up_to_max(void **state UNUSED)
{
    struct pf_config *cfg = fx_cfg_new(2, PF_BALANCE_ROUND_ROBIN);
    struct pf_upstream_conf *up = &cfg->upstreams[0];
    struct pf_endpoint *ep = ep_at(up, 0);
    uint64_t t = 10 * SEC, d;
    static const uint64_t want[] = {30, 60, 120, 200, 200};

    up->breaker.max_open_for_ms = 200000;
    trip_at(up, ep, t);
    for (unsigned i = 0; i < PF_COUNTOF(want); i++) {
        d = open_left(ep, t);
        assert_true(d <= want[i] * SEC);
        assert_true(d >= want[i] * SEC * 9 / 10); /* jitter: at most 10 % shorter */
        assert_false(pf_breaker_admit(ep, &up->breaker, t + d - 1, &tk));
        t += d;
        assert_true(pf_breaker_admit(ep, &up->breaker, t, &tk)); /* the half-open trial */
        assert_int_equal(state_of(ep), PF_CIRCUIT_HALF_OPEN);
        assert_false(pf_breaker_admit(ep, &up->breaker, t, &tk)); /* one trial at a time */
        pf_breaker_report(up, ep, tk, PF_OUTCOME_CONNECT_FAILED, 0, 1 * MS, t + 1);
        assert_int_equal(state_of(ep), PF_CIRCUIT_OPEN);
    }
    assert_int_equal(atomic_load(&ep->br.opened_total), 1 + PF_COUNTOF(want));
    fx_cfg_free(cfg);
}

static void test_half_open_success_closes_and_clean_close_resets(void **state UNUSED)
{
    struct pf_config *cfg = fx_cfg_new(2, PF_BALANCE_ROUND_ROBIN);
    struct pf_upstream_conf *up = &cfg->upstreams[0];
    struct pf_endpoint *ep = ep_at(up, 0);
    uint64_t t = 10 * SEC;
    char why[160];

    trip_at(up, ep, t);
    t += open_left(ep, t);
    assert_true(pf_breaker_admit(ep, &up->breaker, t, &tk));
    succeed(up, ep, t + 1);
    assert_int_equal(state_of(ep), PF_CIRCUIT_CLOSED);
    reason_of(up, ep, t + 1, why);
    assert_string_equal(why, "half_open trials passed: 1");
    /* tripped again at once: the close was not clean, open_for doubles */
    trip_at(up, ep, t + 2 * SEC);
    assert_true(open_left(ep, t + 2 * SEC) > 50 * SEC);
    t += 2 * SEC + open_left(ep, t + 2 * SEC);
    assert_true(pf_breaker_admit(ep, &up->breaker, t, &tk));
    succeed(up, ep, t);
    /* closed for longer than window and open_for: back to open_for */
    t += 31 * SEC;
    trip_at(up, ep, t);
    assert_true(open_left(ep, t) <= 30 * SEC);
    fx_cfg_free(cfg);
}

static void test_half_open_requests(void **state UNUSED)
{
    struct pf_config *cfg = fx_cfg_new(2, PF_BALANCE_ROUND_ROBIN);
    struct pf_upstream_conf *up = &cfg->upstreams[0];
    struct pf_endpoint *ep = ep_at(up, 0);
    uint64_t t = 10 * SEC;

    up->breaker.half_open_requests = 3;
    trip_at(up, ep, t);
    t += open_left(ep, t);
    for (unsigned i = 0; i < 3; i++)
        assert_true(pf_breaker_admit(ep, &up->breaker, t, &tk));
    assert_false(pf_breaker_admit(ep, &up->breaker, t, &tk));
    succeed(up, ep, t);
    succeed(up, ep, t);
    assert_int_equal(state_of(ep), PF_CIRCUIT_HALF_OPEN);
    succeed(up, ep, t);
    assert_int_equal(state_of(ep), PF_CIRCUIT_CLOSED);
    fx_cfg_free(cfg);
}

static void test_lost_trial_permit_comes_back(void **state UNUSED)
{
    struct pf_config *cfg = fx_cfg_new(2, PF_BALANCE_ROUND_ROBIN);
    struct pf_upstream_conf *up = &cfg->upstreams[0];
    struct pf_endpoint *ep = ep_at(up, 0);
    uint64_t t = 10 * SEC;

    trip_at(up, ep, t);
    t += open_left(ep, t);
    assert_true(pf_breaker_admit(ep, &up->breaker, t, &tk)); /* its client goes away: no report */
    assert_false(pf_breaker_admit(ep, &up->breaker, t + 29 * SEC, &tk));
    assert_true(pf_breaker_admit(ep, &up->breaker, t + 30 * SEC, &tk));
    fx_cfg_free(cfg);
}

/* A permit that will not be reported (503 overflow after the admit, a client gone) goes back. */
static void test_released_permit_comes_back_at_once(void **state UNUSED)
{
    struct pf_config *cfg = fx_cfg_new(2, PF_BALANCE_ROUND_ROBIN);
    struct pf_upstream_conf *up = &cfg->upstreams[0];
    struct pf_endpoint *ep = ep_at(up, 0);
    uint64_t t = 10 * SEC;

    trip_at(up, ep, t);
    t += open_left(ep, t);
    assert_true(pf_breaker_admit(ep, &up->breaker, t, &tk));
    assert_true(tk != 0);
    assert_false(pf_breaker_admit(ep, &up->breaker, t + 1, &tk));
    pf_breaker_release(ep, tk);
    assert_true(pf_breaker_admit(ep, &up->breaker, t + 2, &tk)); /* not 30 s later */
    pf_breaker_release(ep, 0);                                   /* no permit: nothing */
    assert_false(pf_breaker_admit(ep, &up->breaker, t + 3, &tk));
    fx_cfg_free(cfg);
}

/*
 * Half-open: only the permit holders' outcomes are trials. A call admitted
 * while closed that fails late (a request_timeout after open_for) does not
 * open the circuit again; nor does a permit of an earlier half-open spell.
 */
static void test_only_permit_holders_are_trials(void **state UNUSED)
{
    struct pf_config *cfg = fx_cfg_new(2, PF_BALANCE_ROUND_ROBIN);
    struct pf_upstream_conf *up = &cfg->upstreams[0];
    struct pf_endpoint *ep = ep_at(up, 0);
    uint64_t t = 10 * SEC, old, first;

    trip_at(up, ep, t);
    t += open_left(ep, t);
    assert_true(pf_breaker_admit(ep, &up->breaker, t, &tk));
    pf_breaker_report(up, ep, 0, PF_OUTCOME_TIMEOUT, 0, 30 * SEC, t + 1); /* admitted closed */
    assert_int_equal(state_of(ep), PF_CIRCUIT_HALF_OPEN);
    old = tk;
    pf_breaker_report(up, ep, tk, PF_OUTCOME_RESET, 0, 1 * MS, t + 2); /* the trial fails */
    assert_int_equal(state_of(ep), PF_CIRCUIT_OPEN);
    first = atomic_load(&ep->br.opened_total);
    t += 2 + open_left(ep, t + 2);
    assert_true(pf_breaker_admit(ep, &up->breaker, t, &tk));
    assert_true(tk != old);
    pf_breaker_report(up, ep, old, PF_OUTCOME_RESET, 0, 1 * MS, t + 1); /* an old permit */
    assert_int_equal(state_of(ep), PF_CIRCUIT_HALF_OPEN);
    assert_int_equal(atomic_load(&ep->br.opened_total), first);
    succeed(up, ep, t + 2);
    assert_int_equal(state_of(ep), PF_CIRCUIT_CLOSED);
    fx_cfg_free(cfg);
}

/*
 * Another worker may have stored a later time than this thread's now: no
 * difference wraps. A permit taken at t + 1 ms is not "lost for open_for" to
 * a thread whose clock says t; a close at t + 1 s then a trip at t is no
 * clean close.
 */
static void test_times_from_other_threads_do_not_wrap(void **state UNUSED)
{
    struct pf_config *cfg = fx_cfg_new(2, PF_BALANCE_ROUND_ROBIN);
    struct pf_upstream_conf *up = &cfg->upstreams[0];
    struct pf_endpoint *ep = ep_at(up, 0);
    uint64_t t = 10 * SEC;

    trip_at(up, ep, t);
    t += open_left(ep, t);
    assert_true(pf_breaker_admit(ep, &up->breaker, t + 1 * MS, &tk));
    assert_false(pf_breaker_admit(ep, &up->breaker, t, &tk));
    succeed(up, ep, t + 1 * SEC); /* closed, since_us = t + 1 s */
    assert_int_equal(state_of(ep), PF_CIRCUIT_CLOSED);
    trip_at(up, ep, t); /* at once: open_for doubles */
    assert_true(open_left(ep, t) > 50 * SEC);
    fx_cfg_free(cfg);
}

/*
 * max_ejection counts an endpoint the health checks keep out as ejected: with
 * A unhealthy, B (the last one serving) does not open below 100 %.
 */
static void test_max_ejection_counts_unhealthy_endpoints(void **state UNUSED)
{
    struct pf_config *cfg = fx_cfg_new(2, PF_BALANCE_ROUND_ROBIN);
    struct pf_upstream_conf *up = &cfg->upstreams[0];
    struct pf_endpoint *b = ep_at(up, 1);

    up->health.enabled = true;
    atomic_store(&ep_at(up, 0)->health, PF_HEALTH_UNHEALTHY);
    atomic_store(&b->health, PF_HEALTH_HEALTHY);
    for (unsigned i = 0; i < 10; i++)
        failed(up, b, 10 * SEC);
    assert_int_equal(state_of(b), PF_CIRCUIT_CLOSED);
    up->breaker.max_ejection = 1.0;
    failed(up, b, 10 * SEC);
    assert_int_equal(state_of(b), PF_CIRCUIT_OPEN);
    fx_cfg_free(cfg);
}

/* Trip every endpoint of up in order; how many opened. */
static unsigned trip_all(const struct pf_upstream_conf *up, uint64_t t)
{
    unsigned opened = 0;

    for (unsigned i = 0; i < up->n_endpoints; i++) {
        for (unsigned k = 0; k < up->breaker.consecutive_failures * 2; k++)
            failed(up, ep_at(up, i), t);
        opened += state_of(ep_at(up, i)) == PF_CIRCUIT_OPEN;
    }
    return opened;
}

static void test_max_ejection_after_the_ejection(void **state UNUSED)
{
    static const struct {
        unsigned n;
        double cap;
        unsigned opened;
    } cases[] = {
        {1, 0.5, 0},  {2, 0.5, 1}, {3, 0.5, 1}, {4, 0.5, 2}, {3, 0.34, 1},
        {2, 0.99, 1}, {1, 1.0, 1}, {2, 1.0, 2}, {3, 1.0, 3}, {5, 0.2, 1},
    };

    for (unsigned c = 0; c < PF_COUNTOF(cases); c++) {
        struct pf_config *cfg = fx_cfg_new(cases[c].n, PF_BALANCE_ROUND_ROBIN);
        struct pf_upstream_conf *up = &cfg->upstreams[0];

        up->breaker.max_ejection = cases[c].cap;
        assert_int_equal(trip_all(up, 10 * SEC), cases[c].opened);
        /* below 100 %, one endpoint always serves */
        if (cases[c].cap < 1.0)
            assert_int_equal(state_of(ep_at(up, up->n_endpoints - 1)), PF_CIRCUIT_CLOSED);
        fx_cfg_free(cfg);
        pf_upstream_free_all();
    }
}

static void test_capped_endpoint_opens_when_another_closes(void **state UNUSED)
{
    struct pf_config *cfg = fx_cfg_new(2, PF_BALANCE_ROUND_ROBIN);
    struct pf_upstream_conf *up = &cfg->upstreams[0];
    struct pf_endpoint *a = ep_at(up, 0), *b = ep_at(up, 1);
    uint64_t t = 10 * SEC;

    trip_at(up, a, t);
    for (unsigned k = 0; k < 7; k++)
        failed(up, b, t);
    assert_int_equal(state_of(b), PF_CIRCUIT_CLOSED); /* kept by the cap, still counted */
    assert_int_equal(atomic_load(&b->br.consecutive), 7);
    assert_int_equal(atomic_load(&b->br.capped), 1);
    t += open_left(a, t);
    assert_true(pf_breaker_admit(a, &up->breaker, t, &tk));
    succeed(up, a, t);
    failed(up, b, t + 1);
    assert_int_equal(state_of(b), PF_CIRCUIT_OPEN);
    fx_cfg_free(cfg);
}

static void test_all_open_retry_after(void **state UNUSED)
{
    struct pf_config *cfg = fx_cfg_new(2, PF_BALANCE_ROUND_ROBIN);
    struct pf_upstream_conf *up = &cfg->upstreams[0];
    uint64_t t = 10 * SEC, first;

    up->breaker.max_ejection = 1.0;
    trip_at(up, ep_at(up, 0), t);
    trip_at(up, ep_at(up, 1), t + 5 * SEC);
    first = atomic_load(&ep_at(up, 0)->br.retry_us);
    assert_int_equal(pf_breaker_retry_after(up, t + 5 * SEC),
                     (first - (t + 5 * SEC) + SEC - 1) / SEC);
    assert_int_equal(pf_breaker_retry_after(up, first - 1), 1);
    assert_int_equal(pf_breaker_retry_after(up, first + 1), 1); /* a trial may go now */
    fx_cfg_free(cfg);
}

static void test_one_endpoint(void **state UNUSED)
{
    struct pf_config *cfg = fx_cfg_new(1, PF_BALANCE_ROUND_ROBIN);
    struct pf_upstream_conf *up = &cfg->upstreams[0];
    struct pf_endpoint *ep = ep_at(up, 0);

    for (unsigned i = 0; i < 20; i++)
        failed(up, ep, 10 * SEC);
    assert_int_equal(state_of(ep), PF_CIRCUIT_CLOSED); /* 50 %: the only endpoint stays */
    up->breaker.max_ejection = 1.0;
    failed(up, ep, 10 * SEC);
    assert_int_equal(state_of(ep), PF_CIRCUIT_OPEN);
    assert_false(pf_breaker_admit(ep, &up->breaker, 11 * SEC, &tk));
    assert_int_equal(pf_breaker_retry_after(up, 11 * SEC),
                     (atomic_load(&ep->br.retry_us) - 11 * SEC + SEC - 1) / SEC);
    fx_cfg_free(cfg);
}

static void test_usable_and_probe_passed(void **state UNUSED)
{
    struct pf_config *cfg = fx_cfg_new(2, PF_BALANCE_ROUND_ROBIN);
    struct pf_upstream_conf *up = &cfg->upstreams[0];
    struct pf_endpoint *ep = ep_at(up, 0);
    uint64_t t = 10 * SEC, left;
    char why[160];

    assert_true(pf_breaker_usable(ep, t));
    trip_at(up, ep, t);
    left = open_left(ep, t);
    assert_false(pf_breaker_usable(ep, t + left - 1));
    assert_true(pf_breaker_usable(ep, t + left));    /* a trial may go */
    assert_int_equal(state_of(ep), PF_CIRCUIT_OPEN); /* usable takes nothing */
    pf_breaker_probe_passed(ep, &up->breaker, t + 1);
    assert_int_equal(state_of(ep), PF_CIRCUIT_CLOSED);
    assert_true(pf_breaker_admit(ep, &up->breaker, t + 2, &tk));
    reason_of(up, ep, t + 2, why);
    assert_string_equal(why, "health_check passed");
    fx_cfg_free(cfg);
}

static void test_late_reports_while_open_are_ignored(void **state UNUSED)
{
    struct pf_config *cfg = fx_cfg_new(2, PF_BALANCE_ROUND_ROBIN);
    struct pf_upstream_conf *up = &cfg->upstreams[0];
    struct pf_endpoint *ep = ep_at(up, 0);

    trip_at(up, ep, 10 * SEC);
    succeed(up, ep, 10 * SEC + 1);
    failed(up, ep, 10 * SEC + 2);
    assert_int_equal(state_of(ep), PF_CIRCUIT_OPEN);
    assert_int_equal(atomic_load(&ep->br.opened_total), 1);
    fx_cfg_free(cfg);
}

static void test_overflow(void **state UNUSED)
{
    struct pf_config *cfg = fx_cfg_new(2, PF_BALANCE_ROUND_ROBIN);
    struct pf_upstream_conf *up = &cfg->upstreams[0];

    up->breaker.max_requests = 3;
    up->breaker.max_connections = 4;
    up->breaker.max_pending = 2;
    atomic_store(&ep_at(up, 0)->active, 1);
    atomic_store(&ep_at(up, 1)->active, 1);
    assert_false(pf_breaker_overflow(up, true));
    atomic_store(&ep_at(up, 1)->active, 2);
    assert_true(pf_breaker_overflow(up, false)); /* max_requests */
    atomic_store(&ep_at(up, 1)->active, 0);
    atomic_store(&ep_at(up, 0)->open, 4);
    assert_false(pf_breaker_overflow(up, false)); /* a pooled connection is fine */
    assert_true(pf_breaker_overflow(up, true));   /* max_connections */
    atomic_store(&ep_at(up, 0)->open, 0);
    atomic_store(&ep_at(up, 1)->br.pending, 2);
    assert_true(pf_breaker_overflow(up, true)); /* max_pending */
    atomic_store(&ep_at(up, 0)->active, 0);
    atomic_store(&ep_at(up, 1)->br.pending, 0);
    fx_cfg_free(cfg);
}

static void test_failure_statuses(void **state UNUSED)
{
    struct pf_err err;
    struct pf_config *cfg;
    const struct pf_breaker_conf *c;

    pf_err_init(&err, "t.yaml");
    cfg = pf_conf_load_string("upstreams:\n  app:\n    endpoints: [\"127.0.0.1:1\"]\n"
                              "    circuit_breaker: {failure_statuses: \"502, 503 520-529\","
                              " max_ejection: 100%, open_for: 2s, max_open_for: 8s}\n",
                              "t.yaml", &err);
    assert_non_null(cfg);
    c = &cfg->upstreams[0].breaker;
    assert_false(pf_breaker_status_fails(c, 500));
    assert_true(pf_breaker_status_fails(c, 502));
    assert_true(pf_breaker_status_fails(c, 503));
    assert_true(pf_breaker_status_fails(c, 525));
    assert_false(pf_breaker_status_fails(c, 530));
    assert_true(c->max_ejection > 0.999);
    assert_int_equal(c->open_for_ms, 2000);
    assert_int_equal(c->consecutive_failures, 5); /* the defaults of the others */
    assert_int_equal(c->max_retries, 3);
    pf_conf_unref(cfg);
    pf_err_fini(&err);

    pf_err_init(&err, "t.yaml");
    cfg = pf_conf_load_string("upstreams:\n  app:\n    endpoints: [\"127.0.0.1:1\"]\n"
                              "    circuit_breaker: {failure_statuses: \"5xx\", open_for: 10s,"
                              " max_open_for: 5s}\n",
                              "t.yaml", &err);
    assert_null(cfg);
    assert_int_equal(err.n, 2);
    assert_non_null(strstr(err.msgs[0], "max_open_for must be at least open_for"));
    assert_non_null(strstr(err.msgs[1], "upstreams.app.circuit_breaker.failure_statuses"));
    pf_err_fini(&err);
}

/* The log lines written while fn runs (stderr redirected to a file). */
static void capture_log(void (*fn)(void *), void *arg, char *buf, size_t size)
{
    char path[] = "/tmp/pf-breaker-log-XXXXXX";
    int fd = mkstemp(path), saved = dup(STDERR_FILENO);
    ssize_t n;

    assert_true(fd >= 0 && saved >= 0);
    dup2(fd, STDERR_FILENO);
    fn(arg);
    dup2(saved, STDERR_FILENO);
    close(saved);
    n = pread(fd, buf, size - 1, 0);
    buf[n > 0 ? n : 0] = '\0';
    close(fd);
    unlink(path);
}

static void trip_and_close(void *arg)
{
    const struct pf_upstream_conf *up = arg;
    struct pf_endpoint *ep = ep_at(up, 0);
    uint64_t t = 10 * SEC;

    trip_at(up, ep, t);
    t += open_left(ep, t);
    assert_true(pf_breaker_admit(ep, &up->breaker, t, &tk));
    succeed(up, ep, t);
}

static void test_one_log_line_per_change(void **state UNUSED)
{
    struct pf_config *cfg = fx_cfg_new(2, PF_BALANCE_ROUND_ROBIN);
    char buf[4096], *line;
    unsigned lines = 0;

    capture_log(trip_and_close, &cfg->upstreams[0], buf, sizeof(buf));
    for (char *p = buf; (p = strchr(p, '\n')) != NULL; p++)
        lines++;
    assert_int_equal(lines, 3);
    line = strstr(buf, "\"to\":\"open\"");
    assert_non_null(line);
    assert_non_null(strstr(buf, "\"msg\":\"circuit breaker\",\"upstream\":\"app\","
                                "\"endpoint\":\"127.0.0.0:80\",\"from\":\"closed\",\"to\":\"open\","
                                "\"reason\":\"consecutive_failures=5\",\"retry_in_ms\":"));
    assert_non_null(strstr(buf, "\"from\":\"open\",\"to\":\"half_open\""));
    assert_non_null(strstr(buf, "\"from\":\"half_open\",\"to\":\"closed\","
                                "\"reason\":\"half_open trials passed: 1\""));
    fx_cfg_free(cfg);
}

/*
 * A reload keeps the breaker of an endpoint that stays listed; one that
 * leaves (kept alive only by a connection) and comes back starts closed.
 */
static void test_state_across_configurations(void **state UNUSED)
{
    struct pf_config *a = fx_cfg_new(2, PF_BALANCE_ROUND_ROBIN), *b, *c;
    struct pf_endpoint *stays = ep_at(&a->upstreams[0], 0), *leaves = ep_at(&a->upstreams[0], 1);

    a->upstreams[0].breaker.max_ejection = 1.0;
    trip_at(&a->upstreams[0], stays, 10 * SEC);
    trip_at(&a->upstreams[0], leaves, 10 * SEC);
    pf_endpoint_ref(leaves);                   /* an idle connection */
    b = fx_cfg_new(1, PF_BALANCE_ROUND_ROBIN); /* lists only the first */
    fx_cfg_free(a);
    assert_ptr_equal(ep_at(&b->upstreams[0], 0), stays);
    assert_int_equal(state_of(stays), PF_CIRCUIT_OPEN);
    c = fx_cfg_new(2, PF_BALANCE_ROUND_ROBIN); /* the second is back */
    assert_ptr_equal(ep_at(&c->upstreams[0], 1), leaves);
    assert_int_equal(state_of(leaves), PF_CIRCUIT_CLOSED);
    assert_int_equal(atomic_load(&leaves->br.opened_total), 0);
    assert_int_equal(state_of(stays), PF_CIRCUIT_OPEN);
    pf_endpoint_unref(leaves);
    fx_cfg_free(b);
    fx_cfg_free(c);
}

/*
 * An endpoint that left the configuration and comes back starts closed even
 * while an older snapshot (a request still in flight on it) holds it.
 */
static void test_back_while_an_old_snapshot_holds_it(void **state UNUSED)
{
    struct pf_config *a = fx_cfg_new(2, PF_BALANCE_ROUND_ROBIN), *b, *c;
    struct pf_endpoint *stays = ep_at(&a->upstreams[0], 0), *leaves = ep_at(&a->upstreams[0], 1);

    a->upstreams[0].breaker.max_ejection = 1.0;
    b = fx_cfg_new(1, PF_BALANCE_ROUND_ROBIN); /* lists only the first; a is still held */
    pf_endpoint_fresh_breakers(b, a);
    trip_at(&a->upstreams[0], stays, 10 * SEC);
    trip_at(&a->upstreams[0], leaves, 10 * SEC); /* a request of the old snapshot */
    c = fx_cfg_new(2, PF_BALANCE_ROUND_ROBIN);   /* the second is back, a still held */
    pf_endpoint_fresh_breakers(c, b);
    assert_ptr_equal(ep_at(&c->upstreams[0], 1), leaves);
    assert_int_equal(state_of(leaves), PF_CIRCUIT_CLOSED);
    assert_int_equal(atomic_load(&leaves->br.opened_total), 0);
    assert_int_equal(state_of(stays), PF_CIRCUIT_OPEN); /* listed all along: kept */
    fx_cfg_free(a);
    fx_cfg_free(b);
    fx_cfg_free(c);
}

/* One instant is one timestamp in every view, whatever the delay between a view's two clock
   reads; a stepped wall clock moves the anchor. */
static void test_view_times_anchored(void **state UNUSED)
{
    uint64_t base = 0, wall0 = 1700000000 * SEC;

    assert_int_equal(pf_breaker_wall_base(&base, 5 * SEC, wall0 + 5 * SEC), wall0);
    /* later views, their wall clock read 3 ms, then 0.9 s after their monotonic one */
    assert_int_equal(pf_breaker_wall_base(&base, 9 * SEC, wall0 + 9 * SEC + 3 * MS), wall0);
    assert_int_equal(pf_breaker_wall_base(&base, 9 * SEC, wall0 + 9 * SEC + 900 * MS), wall0);
    assert_int_equal(pf_breaker_wall_base(&base, 9 * SEC, wall0 + 9 * SEC - 900 * MS), wall0);
    /* the wall clock stepped 2 s forward, then 1.5 s back */
    assert_int_equal(pf_breaker_wall_base(&base, 10 * SEC, wall0 + 12 * SEC), wall0 + 2 * SEC);
    assert_int_equal(pf_breaker_wall_base(&base, 11 * SEC, wall0 + 11 * SEC + 500 * MS),
                     wall0 + 500 * MS);
    assert_int_equal(base, wall0 + 500 * MS);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_consecutive_failures_open, setup, teardown),
        cmocka_unit_test_setup_teardown(test_failure_rate_needs_min_requests, setup, teardown),
        cmocka_unit_test_setup_teardown(test_window_slides, setup, teardown),
        cmocka_unit_test_setup_teardown(test_slow_rate_opens, setup, teardown),
        cmocka_unit_test_setup_teardown(test_full_tenth_counts_nothing_more, setup, teardown),
        cmocka_unit_test_setup_teardown(test_slow_calls_count_as_far_as_calls, setup, teardown),
        cmocka_unit_test_setup_teardown(test_open_for_doubles_with_jitter_up_to_max, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_half_open_success_closes_and_clean_close_resets, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_half_open_requests, setup, teardown),
        cmocka_unit_test_setup_teardown(test_lost_trial_permit_comes_back, setup, teardown),
        cmocka_unit_test_setup_teardown(test_released_permit_comes_back_at_once, setup, teardown),
        cmocka_unit_test_setup_teardown(test_only_permit_holders_are_trials, setup, teardown),
        cmocka_unit_test_setup_teardown(test_times_from_other_threads_do_not_wrap, setup, teardown),
        cmocka_unit_test_setup_teardown(test_max_ejection_after_the_ejection, setup, teardown),
        cmocka_unit_test_setup_teardown(test_max_ejection_counts_unhealthy_endpoints, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_capped_endpoint_opens_when_another_closes, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_all_open_retry_after, setup, teardown),
        cmocka_unit_test_setup_teardown(test_one_endpoint, setup, teardown),
        cmocka_unit_test_setup_teardown(test_late_reports_while_open_are_ignored, setup, teardown),
        cmocka_unit_test_setup_teardown(test_usable_and_probe_passed, setup, teardown),
        cmocka_unit_test_setup_teardown(test_overflow, setup, teardown),
        cmocka_unit_test(test_failure_statuses),
        cmocka_unit_test_setup_teardown(test_one_log_line_per_change, setup, teardown),
        cmocka_unit_test_setup_teardown(test_state_across_configurations, setup, teardown),
        cmocka_unit_test_setup_teardown(test_back_while_an_old_snapshot_holds_it, setup, teardown),
        cmocka_unit_test(test_view_times_anchored),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
