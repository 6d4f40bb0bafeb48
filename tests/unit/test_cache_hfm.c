/*
 * Unit tests of filters/cache/hfm.c: hit-for-miss markers, with explicit
 * clocks (seconds passed in).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <cmocka.h>

#include "filters/cache/cache.h"

static int store_a, store_b; /* two stores: only their addresses matter */

static void test_cache_hfm_marks_a_key_until_it_expires(void **state)
{
    (void)state;
    assert_false(pf_cache_hfm_active(&store_a, "http://h/k", 1000));
    pf_cache_hfm_set(&store_a, "http://h/k", 1000, 10);
    assert_true(pf_cache_hfm_active(&store_a, "http://h/k", 1000));
    assert_true(pf_cache_hfm_active(&store_a, "http://h/k", 1009));
    assert_false(pf_cache_hfm_active(&store_a, "http://h/k", 1010));
    /* expired: gone, and a new mark starts again */
    assert_false(pf_cache_hfm_active(&store_a, "http://h/k", 1000));
    pf_cache_hfm_set(&store_a, "http://h/k", 2000, 5);
    pf_cache_hfm_set(&store_a, "http://h/k", 2003, 5); /* extended */
    assert_true(pf_cache_hfm_active(&store_a, "http://h/k", 2007));
    assert_false(pf_cache_hfm_active(&store_a, "http://h/k", 2008));
}

static void test_cache_hfm_is_per_store_and_key(void **state)
{
    (void)state;
    pf_cache_hfm_set(&store_a, "http://h/x", 100, 10);
    assert_true(pf_cache_hfm_active(&store_a, "http://h/x", 100));
    assert_false(pf_cache_hfm_active(&store_b, "http://h/x", 100));
    assert_false(pf_cache_hfm_active(&store_a, "http://h/y", 100));
}

static void test_cache_hfm_ttl_is_the_lifetime_bounded(void **state)
{
    (void)state;
    assert_int_equal(pf_cache_hfm_ttl(0), PF_HFM_DEFAULT_S);
    assert_int_equal(pf_cache_hfm_ttl(-5), PF_HFM_DEFAULT_S);
    assert_int_equal(pf_cache_hfm_ttl(30), 30);
    assert_int_equal(pf_cache_hfm_ttl(3600), PF_HFM_MAX_S);
}

/* The table is bounded: far more keys than it holds, each marked once, never fail. */
static void test_cache_hfm_many_keys(void **state)
{
    char key[64];
    unsigned on = 0;

    (void)state;
    for (unsigned i = 0; i < 20000; i++) {
        snprintf(key, sizeof(key), "http://h/%u", i);
        pf_cache_hfm_set(&store_b, key, 5000, 10);
    }
    for (unsigned i = 0; i < 20000; i++) {
        snprintf(key, sizeof(key), "http://h/%u", i);
        on += pf_cache_hfm_active(&store_b, key, 5001);
    }
    assert_true(on > 0 && on <= 16384);
    /* once they expire, the room is there again */
    assert_false(pf_cache_hfm_active(&store_b, "http://h/0", 6000));
    for (unsigned i = 0; i < 20000; i++) {
        snprintf(key, sizeof(key), "http://h/%u", i);
        (void)pf_cache_hfm_active(&store_b, key, 6000);
    }
    pf_cache_hfm_set(&store_b, "http://h/new", 6000, 10);
    assert_true(pf_cache_hfm_active(&store_b, "http://h/new", 6000));
}

/* hfm.c's bucket of (store, key), to choose keys that avoid one bucket. */
static unsigned bucket_of(const void *store, const char *key)
{
    uint64_t h = UINT64_C(1469598103934665603) ^ (uint64_t)(uintptr_t)store;

    for (const unsigned char *p = (const unsigned char *)key; *p != '\0'; p++)
        h = (h ^ *p) * UINT64_C(1099511628211);
    return (unsigned)(h % 1024);
}

/* A table full of expired markers, none in the new key's bucket, still takes the new key. */
static void test_cache_hfm_full_table_drops_expired_markers(void **state)
{
    const char *k = "http://h/wanted";
    unsigned bk = bucket_of(&store_a, k);
    char key[64];

    (void)state;
    for (unsigned i = 0; i < 40000; i++) {
        snprintf(key, sizeof(key), "http://h/f%u", i);
        if (bucket_of(&store_a, key) != bk)
            pf_cache_hfm_set(&store_a, key, 100, 10);
    }
    pf_cache_hfm_set(&store_a, k, 100, 10);
    assert_false(pf_cache_hfm_active(&store_a, k, 100)); /* full of live markers: no room */
    pf_cache_hfm_set(&store_a, k, 200, 10);              /* every other one has expired */
    assert_true(pf_cache_hfm_active(&store_a, k, 200));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cache_hfm_full_table_drops_expired_markers), /* first: empty table */
        cmocka_unit_test(test_cache_hfm_marks_a_key_until_it_expires),
        cmocka_unit_test(test_cache_hfm_is_per_store_and_key),
        cmocka_unit_test(test_cache_hfm_ttl_is_the_lifetime_bounded),
        cmocka_unit_test(test_cache_hfm_many_keys),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
