/*
 * Unit tests of filters/cache/rfc.c, the fields and keys: invalidation by
 * unsafe methods, which response fields are stored and which a 304
 * updates, Vary and the variant key, the primary key.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <cmocka.h>

#include "filters/cache/rfc.h"
#include "tests/unit/cache_rfc_fx.h"

/* ---- invalidation ---- */

static void test_invalidation(void **state)
{
    static const struct {
        const char *method;
        int status;
        bool safe, invalidates;
    } cases[] = {
        {"GET", 200, true, false},   {"HEAD", 200, true, false},  {"OPTIONS", 200, true, false},
        {"TRACE", 200, true, false}, {"POST", 200, false, true},  {"POST", 201, false, true},
        {"POST", 204, false, true},  {"POST", 303, false, true},  {"POST", 399, false, true},
        {"POST", 400, false, false}, {"POST", 404, false, false}, {"POST", 500, false, false},
        {"POST", 100, false, false}, {"PUT", 200, false, true},   {"DELETE", 202, false, true},
        {"PATCH", 200, false, true}, {"PURGE", 200, false, true}, {"FOOBAR", 200, false, true},
        {"get", 200, false, true},   {"Get", 301, false, true},   {"", 200, false, true},
        {NULL, 200, false, true},
    };

    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        printf("# invalidation case %zu\n", i);
        assert_int_equal(pf_cache_method_safe(cases[i].method), cases[i].safe);
        assert_int_equal(pf_cache_invalidates(cases[i].method, cases[i].status),
                         cases[i].invalidates);
    }
}

/* ---- stored and updated headers ---- */

/* Qualified no-cache= / private= name fields that are not stored (RFC 9111 §5.2.2.4, §5.2.2.7). */
static void test_field_withheld(void **state)
{
    static const struct {
        const char *h[3];
        const char *targeted, *field;
        bool withheld;
    } cases[] = {
        {{"Cache-Control: max-age=60, no-cache=\"Set-Cookie\""}, NULL, "Set-Cookie", true},
        {{"Cache-Control: max-age=60, no-cache=\"Set-Cookie\""}, NULL, "set-cookie", true},
        {{"Cache-Control: max-age=60, no-cache=\"Set-Cookie\""}, NULL, "Content-Type", false},
        {{"Cache-Control: private=\"X-A, Set-Cookie\", max-age=9"}, NULL, "Set-Cookie", true},
        {{"Cache-Control: private=\"X-A, Set-Cookie\", max-age=9"}, NULL, "X-A", true},
        {{"Cache-Control: private=\"X-A,,X-B \""}, NULL, "X-B", true},
        {{"Cache-Control: no-cache=Set-Cookie"}, NULL, "Set-Cookie", true},
        {{"Cache-Control: max-age=60", "Cache-Control: no-cache=\"X-A\""}, NULL, "X-A", true},
        {{"Cache-Control: max-age=60, private"}, NULL, "Set-Cookie", false},
        {{"Cache-Control: max-age=60, x-other=\"Set-Cookie\""}, NULL, "Set-Cookie", false},
        {{"Cache-Control: no-cache=\"Set-Cookie"}, NULL, "Set-Cookie", false}, /* open quote */
        /* a targeted field replaces Cache-Control entirely */
        {{"CDN-Cache-Control: max-age=60", "Cache-Control: no-cache=\"Set-Cookie\""},
         NULL,
         "Set-Cookie",
         false},
        {{"PF-CC: private=\"Set-Cookie\"", "Cache-Control: max-age=5"},
         "PF-CC",
         "Set-Cookie",
         true},
        {{"PF-CC: junk x", "Cache-Control: private=\"X-A\""}, "PF-CC", "X-A", true},
    };
    struct pf_cache_meta m;

    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct hdrs hs = {0};

        for (unsigned j = 0; j < 3 && cases[i].h[j] != NULL; j++)
            hs.h[j] = cases[i].h[j];
        printf("# withheld case %zu\n", i);
        assert_int_equal(pf_cache_field_withheld(hdr_get, &hs, cases[i].targeted, cases[i].field),
                         cases[i].withheld);
    }
    /* in a response, the qualified forms are not the plain ones */
    meta_of(&m, 200, (const char *[]){"Cache-Control: max-age=60, private=\"Set-Cookie\"", NULL},
            NULL);
    assert_false(m.cc.private_);
    assert_true(m.cc.private_fields);
}

static void test_header_stored(void **state)
{
    static const struct {
        const char *name;
        const char *conn;
        bool stored, updated;
    } cases[] = {
        {"Set-Cookie", NULL, true, true},
        {"Content-Type", NULL, true, true},
        {"ETag", NULL, true, true},
        {"Cache-Control", NULL, true, true},
        {"Expires", NULL, true, true},
        {"Date", NULL, true, true},
        {"Last-Modified", NULL, true, true},
        {"Vary", NULL, true, true},
        {"X-Custom", NULL, true, true},
        {"Content-Encoding", NULL, true, false},
        {"Content-Range", NULL, true, false},
        {"Content-Length", NULL, false, false},
        {"content-length", NULL, false, false},
        {"Transfer-Encoding", NULL, false, false},
        {"TRANSFER-ENCODING", NULL, false, false},
        {"Connection", NULL, false, false},
        {"Keep-Alive", NULL, false, false},
        {"Proxy-Connection", NULL, false, false},
        {"TE", NULL, false, false},
        {"Trailer", NULL, false, false},
        {"Upgrade", NULL, false, false},
        {"Proxy-Authenticate", NULL, false, false},
        {"Proxy-Authentication-Info", NULL, false, false},
        {"Proxy-Authorization", NULL, false, false},
        {"Age", NULL, false, false},
        /* fields named by Connection */
        {"X-Hop", "close, X-Hop", false, false},
        {"x-hop", " keep-alive ,X-HOP ", false, false},
        {"X-Hop", "X-Hop2", true, true},
        {"X-Hop", ",,", true, true},
        {"Set-Cookie", "keep-alive", true, true},
    };

    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        printf("# header case %zu: %s\n", i, cases[i].name);
        assert_int_equal(pf_cache_header_stored(cases[i].name, cases[i].conn), cases[i].stored);
        if (cases[i].conn == NULL)
            assert_int_equal(pf_cache_header_updated_by_304(cases[i].name), cases[i].updated);
    }
}

/* A 304's field is merged unless never updated, hop-by-hop, or withheld by the merged response. */
static void test_304_field_merged(void **state)
{
    static const struct {
        const char *h[3]; /* the merged response's fields */
        const char *targeted, *conn, *field;
        bool merged;
    } cases[] = {
        {{"Cache-Control: max-age=60"}, NULL, NULL, "Set-Cookie", true},
        {{"Cache-Control: max-age=60"}, NULL, NULL, "X-A", true},
        {{"Cache-Control: no-cache=\"X-A\", max-age=60"}, NULL, NULL, "X-A", false},
        {{"Cache-Control: no-cache=\"X-A\", max-age=60"}, NULL, NULL, "x-a", false},
        {{"Cache-Control: no-cache=\"X-A\", max-age=60"}, NULL, NULL, "X-B", true},
        {{"Cache-Control: private=\"Set-Cookie, X-B\""}, NULL, NULL, "Set-Cookie", false},
        {{"Cache-Control: private=\"Set-Cookie, X-B\""}, NULL, NULL, "X-B", false},
        {{"Cache-Control: private=\"Set-Cookie, X-B\""}, NULL, NULL, "ETag", true},
        {{"PF-CC: private=\"X-A\"", "Cache-Control: max-age=5"}, "PF-CC", NULL, "X-A", false},
        {{"Cache-Control: max-age=60"}, NULL, NULL, "Content-Length", false},
        {{"Cache-Control: max-age=60"}, NULL, NULL, "Content-Encoding", false},
        {{"Cache-Control: max-age=60"}, NULL, NULL, "Transfer-Encoding", false},
        {{"Cache-Control: max-age=60"}, NULL, "close, X-Hop", "X-Hop", false},
        {{"Cache-Control: max-age=60"}, NULL, "close, X-Hop", "X-A", true},
        {{"Cache-Control: max-age=60"}, NULL, NULL, "Cache-Status", false},
    };

    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct hdrs hs = {0};

        for (unsigned j = 0; j < 3 && cases[i].h[j] != NULL; j++)
            hs.h[j] = cases[i].h[j];
        printf("# 304 merge case %zu\n", i);
        assert_int_equal(pf_cache_304_field_merged(hdr_get, &hs, cases[i].targeted, cases[i].conn,
                                                   cases[i].field),
                         cases[i].merged);
    }
}

/* ---- Vary ---- */

struct vary_case {
    const char *vary[NLINE];
    const char *req[NHDR];
    bool ok;
    const char *key;
};

static const struct vary_case vary_cases[] = {
    {{NULL}, {"Accept: x"}, true, ""},
    {{""}, {"Accept: x"}, true, ""},
    {{"Accept-Encoding"}, {"Accept-Encoding: gzip"}, true, "accept-encoding=gzip\n"},
    {{"accept-encoding"}, {"ACCEPT-ENCODING: gzip"}, true, "accept-encoding=gzip\n"},
    {{"Accept-Encoding"}, {NULL}, true, "accept-encoding\n"},
    {{"Accept-Encoding"}, {"Accept-Encoding: "}, true, "accept-encoding=\n"},
    /* members trimmed and re-joined, empty ones dropped, lines joined in order */
    {{"Accept-Encoding"},
     {"Accept-Encoding: gzip,deflate"},
     true,
     "accept-encoding=gzip, deflate\n"},
    {{"Accept-Encoding"},
     {"Accept-Encoding:  gzip ,, deflate ,"},
     true,
     "accept-encoding=gzip, deflate\n"},
    {{"Accept-Encoding"},
     {"Accept-Encoding: gzip", "Accept-Encoding: deflate"},
     true,
     "accept-encoding=gzip, deflate\n"},
    /* names sorted, duplicates and empty members dropped, several lines */
    {{"Accept-Language, Accept-Encoding"},
     {"Accept-Encoding: gzip", "Accept-Language: fr"},
     true,
     "accept-encoding=gzip\naccept-language=fr\n"},
    {{"Accept-Encoding", " , accept-language,ACCEPT-ENCODING,"},
     {"Accept-Encoding: gzip", "Accept-Language: fr"},
     true,
     "accept-encoding=gzip\naccept-language=fr\n"},
    /* Vary: * never matches */
    {{"*"}, {NULL}, false, ""},
    {{"Accept", " * "}, {NULL}, false, ""},
    {{"Accept, *"}, {NULL}, false, ""},
    {{"Accept Encoding"}, {NULL}, false, ""},
};

static void test_variant_key(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(vary_cases) / sizeof(vary_cases[0]); i++) {
        const struct vary_case *c = &vary_cases[i];
        struct hdrs hs = {0};
        char out[256];
        unsigned n = 0;

        while (n < NLINE && c->vary[n] != NULL)
            n++;
        for (unsigned k = 0; k < NHDR && c->req[k] != NULL; k++)
            hs.h[k] = c->req[k];
        printf("# vary case %zu\n", i);
        assert_int_equal(pf_cache_variant_key(c->vary, n, hdr_get, &hs, out, sizeof(out)), c->ok);
        assert_string_equal(out, c->key);
    }
}

/* Different requests get different keys; Vary order does not matter; no cut keys. */
static void test_variant_key_matching(void **state)
{
    const char *v1[] = {"Accept-Encoding, Accept-Language"};
    const char *v2[] = {"accept-language", "accept-encoding"};
    struct hdrs a = {.h = {"Accept-Encoding: gzip", "Accept-Language: fr"}};
    struct hdrs b = {.h = {"Accept-Language: fr", "Accept-Encoding: gzip"}};
    struct hdrs c = {.h = {"Accept-Encoding: gzip", "Accept-Language: de"}};
    struct hdrs d = {.h = {"Accept-Encoding: gzip"}};
    struct hdrs e = {.h = {"Accept-Encoding: gzip", "Accept-Language: "}};
    char ka[128], kb[128], kc[128], kd[128], ke[128], small[8];

    (void)state;
    assert_true(pf_cache_variant_key(v1, 1, hdr_get, &a, ka, sizeof(ka)));
    assert_true(pf_cache_variant_key(v2, 2, hdr_get, &b, kb, sizeof(kb)));
    assert_string_equal(ka, kb);
    assert_true(pf_cache_variant_key(v1, 1, hdr_get, &c, kc, sizeof(kc)));
    assert_string_not_equal(ka, kc);
    assert_true(pf_cache_variant_key(v1, 1, hdr_get, &d, kd, sizeof(kd)));
    assert_true(pf_cache_variant_key(v1, 1, hdr_get, &e, ke, sizeof(ke)));
    assert_string_not_equal(kd, ke); /* absent differs from empty */
    assert_false(pf_cache_variant_key(v1, 1, hdr_get, &a, small, sizeof(small)));
    assert_false(pf_cache_variant_key(v1, 1, hdr_get, &a, ka, strlen(kb)));
    assert_true(pf_cache_variant_key(v1, 1, hdr_get, &a, ka, strlen(kb) + 1));
}

/* ---- the primary key ---- */

struct key_case {
    const char *scheme, *host, *target;
    const char *ignore[3];
    const char *want; /* NULL: does not fit in 64 bytes */
};

static const struct key_case key_cases[] = {
    {"http", "example.com", "/a", {NULL}, "http://example.com/a"},
    {"http", "Example.COM", "/A/b", {NULL}, "http://example.com/A/b"},
    {"HTTP", "example.com:80", "/", {NULL}, "http://example.com/"},
    {"http", "example.com:080", "/", {NULL}, "http://example.com/"},
    {"http", "example.com:", "/", {NULL}, "http://example.com/"},
    {"http", "example.com:8080", "/", {NULL}, "http://example.com:8080/"},
    {"http", "example.com:443", "/", {NULL}, "http://example.com:443/"},
    {"https", "example.com:443", "/", {NULL}, "https://example.com/"},
    {"https", "example.com:80", "/", {NULL}, "https://example.com:80/"},
    {"http", "[::1]:80", "/", {NULL}, "http://[::1]/"},
    {"http", "[::1]", "/", {NULL}, "http://[::1]/"},
    {"http", "[::1]:81", "/", {NULL}, "http://[::1]:81/"},
    {"http", "Example.COM.", "/", {NULL}, "http://example.com/"},
    {"http", "example.com.:80", "/", {NULL}, "http://example.com/"},
    {"http", "example.com.:8080", "/", {NULL}, "http://example.com:8080/"},
    {"http", "example.com:08080", "/", {NULL}, "http://example.com:8080/"},
    {"http", ".", "/", {NULL}, "http://./"},
    {"http", "h", "/p?b=2&a=1", {NULL}, "http://h/p?b=2&a=1"},
    {"http", "h", "/p?utm_source=x&b=2&utm_medium=y&a=1", {"utm_*"}, "http://h/p?b=2&a=1"},
    {"http", "h", "/p?utm_source=x", {"utm_*"}, "http://h/p"},
    {"http", "h", "/p?utm_source=x&fbclid=1&z", {"utm_*", "fbclid"}, "http://h/p?z"},
    {"http", "h", "/p?a=1&&b", {"x"}, "http://h/p?a=1&&b"},
    {"http", "h", "/p?a=1&&b&", {NULL}, "http://h/p?a=1&&b&"}, /* no ignore list: kept whole */
    {"http", "h", "/p?&", {NULL}, "http://h/p?&"},
    {"HTTP", "H", "/P?A", {NULL}, "http://h/P?A"},
    {"http", "h", "/p?a=1&utm_x", {"utm_*"}, "http://h/p?a=1"},
    {"http", "h", "/p?utm_x&a=1&", {"utm_*"}, "http://h/p?a=1&"},
    {"http", "h", "/p?a=1&utm_x=2#f&utm_y", {"utm_*"}, "http://h/p?a=1"},
    {"http", "h", "/p?", {NULL}, "http://h/p?"},
    {"http", "h", "/p?", {"utm_*"}, "http://h/p?"},
    {"http", "h", "/p?UTM_x=1", {"utm_*"}, "http://h/p?UTM_x=1"},
    {"http", "h", "/p?x=utm_1", {"utm_*"}, "http://h/p?x=utm_1"},
    {"http", "h", "/p#frag", {NULL}, "http://h/p"},
    {"http", "h", "/p?a=1#frag", {NULL}, "http://h/p?a=1"},
    {"http", "h", "/p%2Fq?a=%20", {NULL}, "http://h/p%2Fq?a=%20"},
    {"http", "h", "/a-very-long-path-that-is-more-than-sixty-four-bytes-long-surely", {NULL}, NULL},
};

static void test_key(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(key_cases) / sizeof(key_cases[0]); i++) {
        const struct key_case *c = &key_cases[i];
        char out[64];
        unsigned n = 0;
        size_t len;

        while (n < 3 && c->ignore[n] != NULL)
            n++;
        len = pf_cache_key(c->scheme, c->host, c->target, c->ignore, n, out, sizeof(out));
        printf("# key case %zu: %s\n", i, c->target);
        if (c->want == NULL) {
            assert_int_equal(len, 0);
            continue;
        }
        assert_string_equal(out, c->want);
        assert_int_equal(len, strlen(c->want));
        if (strcmp(c->host, "h") != 0)
            continue;
        /* what the upstream is sent: the key's target */
        len = pf_cache_strip_query(c->target, c->ignore, n, out, sizeof(out));
        assert_string_equal(out, c->want + strlen("http://h"));
        assert_int_equal(len, strlen(out));
    }
}

/* A key that exactly fits, and one byte less. */
static void test_key_size(void **state)
{
    char out[32];
    size_t need = strlen("http://h/p?a=1") + 1;

    (void)state;
    assert_int_equal(pf_cache_key("http", "h", "/p?a=1", NULL, 0, out, need), need - 1);
    assert_int_equal(pf_cache_key("http", "h", "/p?a=1", NULL, 0, out, need - 1), 0);
    assert_int_equal(pf_cache_key("http", "h", "/p?a=1", NULL, 0, out, 0), 0);

    /* a long query is fine when the buffer is large enough */
    {
        static char target[9000];
        static char big[9100];
        const char *ignore[] = {"utm_*"};
        memset(target, 'x', sizeof(target) - 1);
        memcpy(target, "/p?utm_a=1&", 11);
        assert_int_equal(pf_cache_key("http", "h", target, ignore, 1, big, sizeof(big)),
                         strlen("http://h/p?") + sizeof(target) - 1 - 11);
        assert_int_equal(strncmp(big, "http://h/p?xxx", 14), 0);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_invalidation),  cmocka_unit_test(test_field_withheld),
        cmocka_unit_test(test_header_stored), cmocka_unit_test(test_304_field_merged),
        cmocka_unit_test(test_variant_key),   cmocka_unit_test(test_variant_key_matching),
        cmocka_unit_test(test_key),           cmocka_unit_test(test_key_size),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
