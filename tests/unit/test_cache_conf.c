/*
 * Unit tests of filters/cache/cache_conf.c's pure helpers: the sf-string of
 * Cache-Status key= (RFC 8941 §3.3.3) and Range parsing.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "filters/cache/cache.h"

static void check_sf(const char *in, const char *want)
{
    char out[256];
    size_t n = pf_cache_sf_escape(out, in);

    assert_true(n <= 3 * strlen(in));
    out[n] = '\0';
    assert_string_equal(out, want);
}

static void test_sf_escape(void **state)
{
    (void)state;
    check_sf("", "");
    check_sf("http://h/p?a=1", "http://h/p?a=1");
    check_sf("a\"b", "a\\\"b");
    check_sf("a\\b", "a\\\\b");
    check_sf("k\nX-Tenant:t", "k%0AX-Tenant:t");
    check_sf("\x7f\x01\xff", "%7F%01%FF");
    check_sf("%41 ~", "%41 ~"); /* printable ASCII, space included, stays */
}

static void test_range(void **state)
{
    size_t from = 0, n = 0;

    (void)state;
    assert_int_equal(pf_cache_parse_range("bytes=10-19", 100, &from, &n), PF_RANGE_OK);
    assert_int_equal(from, 10);
    assert_int_equal(n, 10);
    assert_int_equal(pf_cache_parse_range("bytes=-5", 100, &from, &n), PF_RANGE_OK);
    assert_int_equal(from, 95);
    assert_int_equal(pf_cache_parse_range("bytes=200-", 100, &from, &n), PF_RANGE_UNSATISFIABLE);
    assert_int_equal(pf_cache_parse_range("bytes=0-1,5-6", 100, &from, &n), PF_RANGE_NONE);
    assert_int_equal(pf_cache_parse_range("bytes=5-1", 100, &from, &n), PF_RANGE_NONE);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sf_escape),
        cmocka_unit_test(test_range),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
