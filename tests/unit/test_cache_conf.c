/*
 * Unit tests of filters/cache/cache_conf.c's pure helpers: the sf-string of
 * Cache-Status key= (RFC 8941 §3.3.3), Range parsing, the key of a URL to purge.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "filters/cache/cache.h"
#include "filters/cache/store.h"

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

/* A purge by URL keys the URL the way a request is keyed: its path normalised as routes do. */
static void test_url_key_normalises_the_path(void **state)
{
    static const struct {
        const char *url, *want;
    } cases[] = {
        {"http://H.example./a", "http://h.example/a"},
        {"http://h/a/%62/../c?x=%41", "http://h/a/c?x=%41"},
        {"http://h/a/./b//c", "http://h/a/b/c"},
        {"http://h/%7euser", "http://h/~user"},
        {"http://h:80/a%2fb", "http://h/a/b"},
        {"https://h:443/", "https://h/"},
    };
    struct pf_cache_conf c = {0};
    char out[256];

    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        assert_int_equal(pf_cache_url_key(&c, cases[i].url, NULL, out, sizeof(out)),
                         strlen(cases[i].want));
        assert_string_equal(out, cases[i].want);
    }
}

static void put_key(struct pf_cstore *st, const char *key)
{
    struct pf_cache_meta m = {0};
    struct pf_cobj_builder *b = pf_cobj_builder_new(key, "", 200, &m, 1024);
    struct pf_cobj *o;

    assert_non_null(b);
    o = pf_cobj_builder_finish(b, 1);
    assert_non_null(o);
    assert_int_equal(pf_cstore_put(st, o), 0);
    pf_cobj_unref(o);
}

/* Both the normalised key (normalize_path: forward) and the key as written (match_only) go. */
static void test_purge_url_normalised_and_as_written(void **state)
{
    struct pf_cache_conf c = {0};
    struct pf_cstore *st = pf_cstore_new(1 << 20, 1);

    (void)state;
    put_key(st, "http://h/a/c");
    put_key(st, "http://h/a/./c");
    put_key(st, "http://h/a/d");
    assert_int_equal(pf_cache_purge(&c, st, "url", "http://h/a/./c"), 2);
    assert_int_equal(pf_cache_purge(&c, st, "url", "http://H/a/%64"), 1);
    assert_int_equal(pf_cache_purge(&c, st, "url", "http://h/a/c"), 0);
    pf_cstore_free(st);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sf_escape),
        cmocka_unit_test(test_range),
        cmocka_unit_test(test_url_key_normalises_the_path),
        cmocka_unit_test(test_purge_url_normalised_and_as_written),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
