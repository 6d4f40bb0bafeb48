/*
 * Unit tests of filters/cache/rfc.c: the RFC 9111 decisions, table-driven,
 * with "now" injected. Header dates in the tables are written "@N": the
 * IMF-fixdate of NOW + N seconds.
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

/* ---- Cache-Control ---- */

enum {
    F_NO_STORE = 1 << 0,
    F_NO_CACHE = 1 << 1,
    F_PRIVATE = 1 << 2,
    F_PUBLIC = 1 << 3,
    F_MUST_REVAL = 1 << 4,
    F_PROXY_REVAL = 1 << 5,
    F_ONLY_IF_CACHED = 1 << 6,
    F_NO_TRANSFORM = 1 << 7,
    F_IMMUTABLE = 1 << 8,
    F_MUST_UNDERSTAND = 1 << 9,
    F_INVALID = 1 << 10,
};

struct cc_case {
    const char *lines[NLINE];
    int64_t max_age, s_maxage, max_stale, min_fresh, swr, sie;
    unsigned flags;
};

static const struct cc_case cc_cases[] = {
    {{""}, A, A, A, A, A, A, 0},
    {{"max-age=60"}, 60, A, A, A, A, A, 0},
    {{"MAX-AGE=60"}, 60, A, A, A, A, A, 0},
    {{"Max-Age=60, S-MaxAge=5"}, 60, 5, A, A, A, A, 0},
    {{"max-age=\"60\""}, 60, A, A, A, A, A, 0},
    {{"max-age=0"}, 0, A, A, A, A, A, 0},
    {{"max-age=060"}, 60, A, A, A, A, A, 0},
    /* conflicting duplicates: the most restrictive (smallest) wins, in any order */
    {{"max-age=60, max-age=30"}, 30, A, A, A, A, A, 0},
    {{"max-age=30, max-age=60"}, 30, A, A, A, A, A, 0},
    {{"max-age=60", "max-age=30"}, 30, A, A, A, A, A, 0},
    {{"s-maxage=9", "s-maxage=3, s-maxage=7"}, A, 3, A, A, A, A, 0},
    {{"min-fresh=5, min-fresh=10"}, A, A, A, 10, A, A, 0},
    {{"max-stale, max-stale=10"}, A, A, 10, A, A, A, 0},
    {{"max-stale=10, max-stale"}, A, A, 10, A, A, A, 0},
    {{"max-stale"}, A, A, ANY, A, A, A, 0},
    {{"stale-while-revalidate=30, stale-if-error=60"}, A, A, A, A, 30, 60, 0},
    {{"stale-while-revalidate=30", "stale-while-revalidate=20"}, A, A, A, A, 20, A, 0},
    /* malformed max-age / s-maxage: absent and invalid */
    {{"max-age=1x"}, A, A, A, A, A, A, F_INVALID},
    {{"max-age=-1"}, A, A, A, A, A, A, F_INVALID},
    {{"max-age=1.5"}, A, A, A, A, A, A, F_INVALID},
    {{"max-age"}, A, A, A, A, A, A, F_INVALID},
    {{"max-age="}, A, A, A, A, A, A, F_INVALID},
    {{"max-age =60"}, A, A, A, A, A, A, F_INVALID},
    {{"max-age= 60"}, A, A, A, A, A, A, F_INVALID},
    {{"max-age=60 junk"}, A, A, A, A, A, A, F_INVALID},
    {{"max-age=\"60"}, A, A, A, A, A, A, F_INVALID},
    {{"max-age=\"6\"0"}, A, A, A, A, A, A, F_INVALID},
    {{"max-age=\"\""}, A, A, A, A, A, A, F_INVALID},
    {{"max-age=60, max-age=x"}, 60, A, A, A, A, A, F_INVALID},
    {{"s-maxage=abc, max-age=5"}, 5, A, A, A, A, A, F_INVALID},
    /* other malformed deltas are ignored */
    {{"stale-while-revalidate=x, min-fresh=-1, max-stale=1y"}, A, A, A, A, A, A, 0},
    /* overflow: 2^31 (RFC 9111 §1.2.2) */
    {{"max-age=2147483648"}, CAP, A, A, A, A, A, 0},
    {{"max-age=2147483647"}, CAP - 1, A, A, A, A, A, 0},
    {{"max-age=99999999999999999999999"}, CAP, A, A, A, A, A, 0},
    /* unknown directives, empty members, quoted commas */
    {{"foo, bar=\"x, max-age=1\", max-age=5, baz=1"}, 5, A, A, A, A, A, 0},
    {{",,, ,max-age=5,,", ""}, 5, A, A, A, A, A, 0},
    {{"community=\"UCI\", max-age=7"}, 7, A, A, A, A, A, 0},
    {{"extension=a\\\"b, max-age=8"}, 8, A, A, A, A, A, 0},
    /* a stray or open quote does not hide what follows the next comma */
    {{"foo=a\"b, private, max-age=9"}, 9, A, A, A, A, A, F_PRIVATE},
    {{"foo=\"a, no-store"}, A, A, A, A, A, A, F_NO_STORE},
    /* directives that allow more are not taken from a junk member */
    {{"public junk, must-understand x, max-stale y"}, A, A, A, A, A, A, 0},
    {{"public junk, public"}, A, A, A, A, A, A, F_PUBLIC},
    {{"private junk, no-store \"x\""}, A, A, A, A, A, A, F_PRIVATE | F_NO_STORE},
    /* qualified forms */
    {{"private=\"Set-Cookie\", max-age=5"}, 5, A, A, A, A, A, F_PRIVATE},
    {{"no-cache=\"Set-Cookie, X-Foo\", max-age=5"}, 5, A, A, A, A, A, F_NO_CACHE},
    {{"no-cache=Set-Cookie"}, A, A, A, A, A, A, F_NO_CACHE},
    {{"PRIVATE"}, A, A, A, A, A, A, F_PRIVATE},
    {{"no-store=1"}, A, A, A, A, A, A, F_NO_STORE},
    {{"public, must-revalidate", "proxy-revalidate, only-if-cached"},
     A,
     A,
     A,
     A,
     A,
     A,
     F_PUBLIC | F_MUST_REVAL | F_PROXY_REVAL | F_ONLY_IF_CACHED},
    {{"no-transform, immutable, must-understand, no-store"},
     A,
     A,
     A,
     A,
     A,
     A,
     F_NO_TRANSFORM | F_IMMUTABLE | F_MUST_UNDERSTAND | F_NO_STORE},
};

static void test_cc_parse(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(cc_cases) / sizeof(cc_cases[0]); i++) {
        const struct cc_case *c = &cc_cases[i];
        struct pf_cc cc;
        unsigned n = 0;
        unsigned f;

        while (n < NLINE && c->lines[n] != NULL)
            n++;
        pf_cc_parse(&cc, c->lines, n);
        f = (cc.no_store ? F_NO_STORE : 0) | (cc.no_cache ? F_NO_CACHE : 0) |
            (cc.private_ ? F_PRIVATE : 0) | (cc.public_ ? F_PUBLIC : 0) |
            (cc.must_revalidate ? F_MUST_REVAL : 0) | (cc.proxy_revalidate ? F_PROXY_REVAL : 0) |
            (cc.only_if_cached ? F_ONLY_IF_CACHED : 0) | (cc.no_transform ? F_NO_TRANSFORM : 0) |
            (cc.immutable ? F_IMMUTABLE : 0) | (cc.must_understand ? F_MUST_UNDERSTAND : 0) |
            (cc.invalid ? F_INVALID : 0);
        printf("# cc case %zu: %s\n", i, c->lines[0]);
        assert_int_equal(cc.max_age, c->max_age);
        assert_int_equal(cc.s_maxage, c->s_maxage);
        assert_int_equal(cc.max_stale, c->max_stale);
        assert_int_equal(cc.min_fresh, c->min_fresh);
        assert_int_equal(cc.swr, c->swr);
        assert_int_equal(cc.sie, c->sie);
        assert_int_equal(f, c->flags);
    }
}

/* ---- HTTP-date ---- */

#define T1994 INT64_C(784111777) /* Sun, 06 Nov 1994 08:49:37 GMT */

struct date_case {
    const char *s;
    int64_t now; /* -1: pf_http_date */
    int64_t want;
};

static const struct date_case date_cases[] = {
    {"Sun, 06 Nov 1994 08:49:37 GMT", -1, T1994},
    {"Sunday, 06-Nov-94 08:49:37 GMT", -1, T1994},
    {"Sun Nov  6 08:49:37 1994", -1, T1994},
    {"Wed Nov 16 08:49:37 1994", -1, T1994 + 10 * 86400},
    {"  Sun, 06 Nov 1994 08:49:37 GMT\t", -1, T1994},
    {"Thu, 01 Jan 1970 00:00:00 GMT", -1, 0},
    {"Wed, 31 Dec 1969 23:59:59 GMT", -1, 0},
    {"Tue, 29 Feb 2000 00:00:00 GMT", -1, 951782400},
    {"Fri, 01 Jan 2100 00:00:00 GMT", -1, INT64_C(4102444800)},
    {"Tue, 19 Jan 2038 03:14:08 GMT", -1, CAP},
    {"Sun, 06 Nov 1994 23:59:60 GMT", -1, T1994 - 8 * 3600 - 49 * 60 - 37 + 86400},
    /* the weekday is not checked against the date */
    {"Mon, 06 Nov 1994 08:49:37 GMT", -1, T1994},
    /* invalid */
    {"", -1, -1},
    {"0", -1, -1},
    {"-1", -1, -1},
    {"now", -1, -1},
    {"1700000000", -1, -1},
    {"sun, 06 Nov 1994 08:49:37 GMT", -1, -1},
    {"Sun, 06 nov 1994 08:49:37 GMT", -1, -1},
    {"Sun, 06 Nov 1994 08:49:37 gmt", -1, -1},
    {"Sun, 06 Nov 1994 08:49:37 UTC", -1, -1},
    {"Sun, 06 Nov 1994 08:49:37 +0000", -1, -1},
    {"Sun, 6 Nov 1994 08:49:37 GMT", -1, -1},
    {"Sun, 06 Nov 94 08:49:37 GMT", -1, -1},
    {"Sun, 06 Nov 1994 08:49:37 GMT x", -1, -1},
    {"Sun, 06 Nov 1994 8:49:37 GMT", -1, -1},
    {"Sun, 31 Nov 1994 08:49:37 GMT", -1, -1},
    {"Thu, 29 Feb 2001 00:00:00 GMT", -1, -1},
    {"Mon, 29 Feb 1900 00:00:00 GMT", -1, -1},
    {"Sun, 00 Nov 1994 08:49:37 GMT", -1, -1},
    {"Sun, 06 Nov 1994 24:00:00 GMT", -1, -1},
    {"Sun, 06 Nov 1994 08:60:00 GMT", -1, -1},
    {"Sun, 06 Nov 1994 08:49:61 GMT", -1, -1},
    {"Sun, 06 Foo 1994 08:49:37 GMT", -1, -1},
    {"Sun  06 Nov 1994 08:49:37 GMT", -1, -1},
    {"Sun,06 Nov 1994 08:49:37 GMT ", -1, -1},
    {"Sund, 06-Nov-94 08:49:37 GMT", -1, -1},
    {"Sunday, 06-Nov-1994 08:49:37 GMT", -1, -1},
    {"Sunday, 06 Nov 94 08:49:37 GMT", -1, -1},
    {"Sun Nov 6 08:49:37 1994", -1, -1},
    {"Sun Nov  6 08:49:37 94", -1, -1},
    {"Sun Nov  6 08:49:37 1994 GMT", -1, -1},
    /* RFC 850 two-digit years: without now, 00-50 are 20xx and 51-99 19xx */
    {"Friday, 01-Jan-50 00:00:00 GMT", -1, INT64_C(2524608000)},
    {"Monday, 01-Jan-51 00:00:00 GMT", -1, 0},
    {"Thursday, 01-Jan-70 00:00:00 GMT", -1, 0},
    {"Wednesday, 01-Jan-86 00:00:00 GMT", -1, INT64_C(504921600)},
    {"Saturday, 01-Jan-00 00:00:00 GMT", -1, INT64_C(946684800)},
    /* with now in 2023: up to 50 years ahead stays ahead, more goes back a century */
    {"Saturday, 01-Jan-22 00:00:00 GMT", NOW, INT64_C(1640995200)},
    {"Friday, 01-Jan-73 00:00:00 GMT", NOW, INT64_C(3250454400)},
    {"Monday, 01-Jan-74 00:00:00 GMT", NOW, INT64_C(126230400)},
    {"Wednesday, 01-Jan-86 00:00:00 GMT", NOW, INT64_C(504921600)},
    {"Sunday, 06-Nov-94 08:49:37 GMT", NOW, T1994},
};

static void test_http_date(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(date_cases) / sizeof(date_cases[0]); i++) {
        const struct date_case *c = &date_cases[i];
        int64_t t = c->now < 0 ? pf_http_date_parse(c->s) : pf_http_date_at(c->s, c->now);

        printf("# date case %zu: %s\n", i, c->s);
        assert_int_equal(t, c->want);
    }
    assert_int_equal(pf_http_date_parse(NULL), -1);
}

static void test_http_date_fmt(void **state)
{
    char out[30];

    (void)state;
    assert_string_equal(pf_http_date_fmt(T1994, out), "Sun, 06 Nov 1994 08:49:37 GMT");
    assert_string_equal(pf_http_date_fmt(0, out), "Thu, 01 Jan 1970 00:00:00 GMT");
    assert_string_equal(pf_http_date_fmt(951782400, out), "Tue, 29 Feb 2000 00:00:00 GMT");
    assert_string_equal(pf_http_date_fmt(INT64_C(4102444800), out),
                        "Fri, 01 Jan 2100 00:00:00 GMT");
    assert_string_equal(pf_http_date_fmt(NOW, out), "Tue, 14 Nov 2023 22:13:20 GMT");
    /* round trip over 60 years in uneven steps (bounded by count) */
    for (int64_t i = 0, t = 12345; i < 2000; i++, t += 987654 + i) {
        pf_http_date_fmt(t, out);
        assert_int_equal(strlen(out), 29);
        assert_int_equal(pf_http_date_parse(out), t);
    }
}

/* ---- what a response says of itself ---- */

struct age_case {
    const char *h[NLINE];
    int64_t want;
};

static const struct age_case age_hdr_cases[] = {
    {{NULL}, -1},
    {{"Age: 60"}, 60},
    {{"Age:  7 "}, 7},
    {{"Age: 0"}, 0},
    {{"Age: abc"}, -1},
    {{"Age: -5"}, -1},
    {{"Age: 1.5"}, -1},
    {{"Age: 1e3"}, -1},
    {{"Age: +5"}, -1},
    {{"Age: "}, -1},
    {{"Age: 2147483647"}, CAP - 1},
    {{"Age: 2147483648"}, CAP},
    {{"Age: 2147483649"}, CAP},
    {{"Age: 99999999999999999999999999"}, CAP},
    {{"Age: 10, 20"}, 10},
    {{"Age: 5", "Age: 9"}, 5},
    {{"Age: x, 20"}, -1},
};

static void test_meta_age_header(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(age_hdr_cases) / sizeof(age_hdr_cases[0]); i++) {
        const char *h[NLINE + 1] = {0};
        struct pf_cache_meta m;

        memcpy(h, age_hdr_cases[i].h, sizeof(age_hdr_cases[i].h));
        meta_of(&m, 200, h, NULL);
        printf("# age case %zu\n", i);
        assert_int_equal(m.age, age_hdr_cases[i].want);
    }
}

static void test_meta_fields(void **state)
{
    struct pf_cache_meta m;

    (void)state;
    meta_of(&m, 203, (const char *[]){"Date: @-5", "Last-Modified: @-100", "ETag: \"a1\"", NULL},
            NULL);
    assert_int_equal(m.status, 203);
    assert_int_equal(m.date, NOW - 5);
    assert_int_equal(m.last_modified, NOW - 100);
    assert_int_equal(m.expires, -1);
    assert_int_equal(m.request_time, NOW - 1);
    assert_int_equal(m.response_time, NOW);
    assert_true(m.has_etag);
    assert_false(m.weak_etag);
    assert_string_equal(m.etag, "\"a1\"");
    assert_false(m.vary_star);
    assert_int_equal(m.cc.max_age, A);

    meta_of(&m, 200, (const char *[]){"ETag:  W/\"x\" ", "Date: junk", "Vary: Accept, *", NULL},
            NULL);
    assert_true(m.weak_etag);
    assert_string_equal(m.etag, "W/\"x\"");
    assert_int_equal(m.date, -1);
    assert_int_equal(m.last_modified, -1);
    assert_true(m.vary_star);

    meta_of(&m, 200, (const char *[]){"Vary: Accept", "Vary: , * ", NULL}, NULL);
    assert_true(m.vary_star);
    meta_of(&m, 200, (const char *[]){"Vary: Accept-*, **", NULL}, NULL);
    assert_false(m.vary_star);
    meta_of(&m, 200, (const char *[]){"ETag: ", NULL}, NULL);
    assert_false(m.has_etag);
}

struct expires_case {
    const char *h[NLINE];
    int64_t want;
};

static const struct expires_case expires_cases[] = {
    {{NULL}, -1},
    {{"Expires: @100"}, NOW + 100},
    {{"Expires: @-100"}, NOW - 100},
    {{"Expires: 0"}, 0},
    {{"Expires: -1"}, 0},
    {{"Expires: "}, 0},
    {{"Expires: tomorrow"}, 0},
    {{"Expires: Thu, 01 Jan 1970 00:00:00 GMT"}, 0},
    {{"Expires: @100", "Expires: @100"}, NOW + 100},
    {{"Expires: @100", "Expires: @200"}, 0},
    {{"Expires: @100", "Expires: junk"}, 0},
    {{"Expires: Monday, 01-Jan-74 00:00:00 GMT"}, INT64_C(126230400)},
    {{"Expires: Tuesday, 01-Jan-30 00:00:00 GMT"}, INT64_C(1893456000)},
};

static void test_meta_expires(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(expires_cases) / sizeof(expires_cases[0]); i++) {
        const char *h[NLINE + 1] = {0};
        struct pf_cache_meta m;

        memcpy(h, expires_cases[i].h, sizeof(expires_cases[i].h));
        meta_of(&m, 200, h, NULL);
        printf("# expires case %zu\n", i);
        assert_int_equal(m.expires, expires_cases[i].want);
    }
}

/* RFC 9213: the targeted field, then CDN-Cache-Control, then Cache-Control */
static void test_meta_targeted(void **state)
{
    struct pf_cache_meta m;
    const char *all[] = {"Cache-Control: max-age=10", "CDN-Cache-Control: max-age=20",
                         "Pilotfish-Cache-Control: max-age=30", "Expires: @1000", NULL};

    (void)state;
    meta_of(&m, 200, all, "Pilotfish-Cache-Control");
    assert_int_equal(m.cc.max_age, 30);
    assert_int_equal(m.expires, -1); /* ignored when a targeted field decides */
    meta_of(&m, 200, all, NULL);
    assert_int_equal(m.cc.max_age, 20);
    assert_int_equal(m.expires, -1);
    meta_of(&m, 200, all, "");
    assert_int_equal(m.cc.max_age, 20);
    meta_of(&m, 200, all, "X-Other");
    assert_int_equal(m.cc.max_age, 20);
    meta_of(&m, 200, (const char *[]){"Cache-Control: max-age=10", "Expires: @1000", NULL},
            "Pilotfish-Cache-Control");
    assert_int_equal(m.cc.max_age, 10);
    assert_int_equal(m.expires, NOW + 1000);
    /* an empty targeted field does not count; one with only no-store does */
    meta_of(&m, 200,
            (const char *[]){"Cache-Control: max-age=10", "CDN-Cache-Control:  , ",
                             "pilotfish-cache-control: no-store", NULL},
            "Pilotfish-Cache-Control");
    assert_true(m.cc.no_store);
    assert_int_equal(m.cc.max_age, A);
    meta_of(&m, 200, (const char *[]){"Cache-Control: max-age=10", "CDN-Cache-Control: ", NULL},
            NULL);
    assert_int_equal(m.cc.max_age, 10);
    /* a targeted field with nothing well-formed in it is ignored */
    meta_of(&m, 200,
            (const char *[]){"Cache-Control: max-age=10", "CDN-Cache-Control: \"x, =, a b", NULL},
            NULL);
    assert_int_equal(m.cc.max_age, 10);
    /* the targeted field's directives replace Cache-Control's, not add to them */
    meta_of(
        &m, 200,
        (const char *[]){"Cache-Control: private, no-store", "CDN-Cache-Control: max-age=5", NULL},
        NULL);
    assert_false(m.cc.private_);
    assert_false(m.cc.no_store);
    assert_int_equal(m.cc.max_age, 5);
}

/* ---- freshness lifetime ---- */

static const struct pf_cache_policy pol_none = {0, false, 0, 0};
static const struct pf_cache_policy pol_heur = {0, true, 86400, 0};
static const struct pf_cache_policy pol_heur_cap = {0, true, 50, 0};
static const struct pf_cache_policy pol_ttl = {7, false, 0, 0};
static const struct pf_cache_policy pol_heur_ttl = {7, true, 86400, 0};
static const struct pf_cache_policy pol_sie = {0, false, 0, 30};

struct life_case {
    int status;
    const char *h[NHDR];
    const struct pf_cache_policy *p;
    int64_t want;
};

static const struct life_case life_cases[] = {
    {200, {NULL}, &pol_none, 0},
    {200, {"Cache-Control: max-age=60"}, &pol_none, 60},
    {200, {"Cache-Control: max-age=60", "Expires: @-100", "Date: @0"}, &pol_none, 60},
    {200, {"Cache-Control: max-age=60", "Expires: junk"}, &pol_none, 60},
    {200, {"Cache-Control: s-maxage=10, max-age=60", "Expires: @1000"}, &pol_none, 10},
    {200, {"Cache-Control: s-maxage=0, max-age=60"}, &pol_none, 0},
    {200, {"Expires: @100", "Date: @0"}, &pol_none, 100},
    {200, {"Expires: @100", "Date: @-50"}, &pol_none, 150},
    {200, {"Expires: @100"}, &pol_none, 100}, /* no Date: from when it was received */
    {200, {"Expires: @-100", "Date: @0"}, &pol_none, 0},
    {200, {"Expires: 0", "Date: @0", "Last-Modified: @-1000"}, &pol_heur_ttl, 0},
    {200, {"Expires: junk", "Date: @0"}, &pol_ttl, 0},
    {200, {"Cache-Control: max-age=1x", "Expires: @1000"}, &pol_ttl, 0},
    {200, {"Cache-Control: max-age=5, max-age=1x"}, &pol_none, 0},
    {200, {"Cache-Control: s-maxage=8, max-age=1x"}, &pol_none, 8},
    {200, {"Cache-Control: max-age=\"60\""}, &pol_none, 60},
    /* heuristic: 10 % of Date - Last-Modified, capped */
    {200, {"Date: @0", "Last-Modified: @-1000"}, &pol_heur, 100},
    {200, {"Last-Modified: @-1000"}, &pol_heur, 100},
    {200, {"Date: @-10", "Last-Modified: @-1010"}, &pol_heur, 100},
    {200, {"Date: @0", "Last-Modified: @-1000"}, &pol_heur_cap, 50},
    {200, {"Date: @0", "Last-Modified: @-1000"}, &pol_none, 0},
    {200, {"Date: @0", "Last-Modified: @-1000"}, &pol_ttl, 7},
    {200, {"Date: @0", "Last-Modified: @-1000"}, &pol_heur_ttl, 100},
    {200, {"Date: @0", "Last-Modified: @1000"}, &pol_heur_ttl, 7},
    {200, {"Date: @0", "Last-Modified: @-5"}, &pol_heur_ttl, 7},
    {404, {"Date: @0", "Last-Modified: @-1000"}, &pol_heur, 100},
    {410, {"Date: @0", "Last-Modified: @-1000"}, &pol_heur, 100},
    {302, {"Date: @0", "Last-Modified: @-1000"}, &pol_heur, 0},
    {302, {"Date: @0", "Last-Modified: @-1000", "Cache-Control: public"}, &pol_heur, 100},
    {200, {"Date: @0", "Last-Modified: @-1000", "Cache-Control: no-cache"}, &pol_heur_ttl, 0},
    {200, {"Date: @0", "Last-Modified: @-1000", "Cache-Control: max-age=3"}, &pol_heur, 3},
    {200, {"Date: @0", "Last-Modified: junk"}, &pol_heur, 0},
    {200, {"Cache-Control: public"}, &pol_ttl, 7},
    {200, {"Cache-Control: max-age=0"}, &pol_ttl, 0},
};

static void test_lifetime(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(life_cases) / sizeof(life_cases[0]); i++) {
        const struct life_case *c = &life_cases[i];
        struct pf_cache_meta m;

        meta_of(&m, c->status, c->h, NULL);
        printf("# lifetime case %zu\n", i);
        assert_int_equal(pf_cache_lifetime(&m, c->p), c->want);
    }
}

/* ---- current age (RFC 9111 §4.2.3) ---- */

struct cur_age_case {
    int64_t date, age, request_time, response_time, now, want;
};

static const struct cur_age_case cur_age_cases[] = {
    /* date, Age, request, response, now: current age */
    {-1, -1, NOW, NOW, NOW, 0},
    {-1, -1, NOW, NOW, NOW + 10, 10},
    {NOW - 5, -1, NOW, NOW, NOW, 5},        /* apparent age */
    {NOW - 5, -1, NOW, NOW, NOW + 10, 15},  /* + resident time */
    {NOW + 30, -1, NOW, NOW, NOW + 10, 10}, /* a Date ahead of us: apparent age 0 */
    {-1, 100, NOW - 2, NOW, NOW, 102},      /* corrected age: Age + response delay */
    {NOW - 50, 100, NOW - 2, NOW, NOW + 1, 103},
    {NOW - 500, 100, NOW - 2, NOW, NOW + 1, 501}, /* apparent age larger */
    {-1, 100, NOW + 5, NOW, NOW, 100},            /* a negative delay counts as 0 */
    {-1, 0, NOW, NOW, NOW - 10, 0},               /* now before arrival: no resident time */
    {-1, CAP, NOW, NOW, NOW + 1000, CAP},         /* 2^31 stays 2^31 */
    {0, -1, NOW, NOW, NOW + 500000000, CAP},      /* Date at the epoch: capped */
};

static void test_current_age(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(cur_age_cases) / sizeof(cur_age_cases[0]); i++) {
        const struct cur_age_case *c = &cur_age_cases[i];
        struct pf_cache_meta m;

        memset(&m, 0, sizeof(m));
        m.date = c->date;
        m.age = c->age;
        m.request_time = c->request_time;
        m.response_time = c->response_time;
        printf("# current age case %zu\n", i);
        assert_int_equal(pf_cache_age(&m, c->now), c->want);
    }
}

/* From headers: Age 2147483648 plus the delay stays at 2^31 and is stale. */
static void test_age_overflow_is_stale(void **state)
{
    struct pf_cache_meta m;

    (void)state;
    meta_of(&m, 200, (const char *[]){"Cache-Control: max-age=3600", "Age: 2147483648", NULL},
            NULL);
    assert_int_equal(pf_cache_age(&m, NOW + 5), CAP);
    assert_int_equal(pf_cache_usable(&m, NULL, &pol_none, NOW), PF_CACHE_USE_REVALIDATE);
    meta_of(&m, 200, (const char *[]){"Cache-Control: max-age=3600", "Age: 3599", NULL}, NULL);
    /* 3599 + 1 s of delay: exactly at the lifetime, which is no longer fresh */
    assert_int_equal(pf_cache_age(&m, NOW), 3600);
    assert_int_equal(pf_cache_usable(&m, NULL, &pol_none, NOW), PF_CACHE_USE_REVALIDATE);
    meta_of(&m, 200, (const char *[]){"Cache-Control: max-age=3600", "Age: junk", NULL}, NULL);
    assert_int_equal(pf_cache_usable(&m, NULL, &pol_none, NOW), PF_CACHE_USE_FRESH);
}

/* ---- storable (RFC 9111 §3) ---- */

struct store_case {
    const char *method;
    bool auth;
    const char *req_cc;
    int status;
    const char *h[NHDR];
    const struct pf_cache_policy *p;
    const char *why; /* NULL: storable */
};

static const struct store_case store_cases[] = {
    {"GET", false, NULL, 200, {"Cache-Control: max-age=60"}, &pol_none, NULL},
    {"HEAD", false, NULL, 200, {"Cache-Control: max-age=60"}, &pol_none, NULL},
    {"POST", false, NULL, 200, {"Cache-Control: max-age=60"}, &pol_none, "method"},
    {"get", false, NULL, 200, {"Cache-Control: max-age=60"}, &pol_none, "method"},
    {"PUT", false, NULL, 200, {"Cache-Control: max-age=60"}, &pol_none, "method"},
    {NULL, false, NULL, 200, {"Cache-Control: max-age=60"}, &pol_none, "method"},
    /* statuses */
    {"GET", false, NULL, 203, {"Cache-Control: max-age=60"}, &pol_none, NULL},
    {"GET", false, NULL, 204, {"Cache-Control: max-age=60"}, &pol_none, NULL},
    {"GET", false, NULL, 300, {"Cache-Control: max-age=60"}, &pol_none, NULL},
    {"GET", false, NULL, 301, {"Cache-Control: max-age=60"}, &pol_none, NULL},
    {"GET", false, NULL, 308, {"Cache-Control: max-age=60"}, &pol_none, NULL},
    {"GET", false, NULL, 404, {"Cache-Control: max-age=60"}, &pol_none, NULL},
    {"GET", false, NULL, 410, {"Cache-Control: max-age=60"}, &pol_none, NULL},
    {"GET", false, NULL, 206, {"Cache-Control: max-age=60"}, &pol_none, "status"},
    {"GET", false, NULL, 100, {"Cache-Control: max-age=60"}, &pol_none, "status"},
    {"GET", false, NULL, 103, {"Cache-Control: max-age=60"}, &pol_none, "status"},
    {"GET", false, NULL, 302, {"Cache-Control: max-age=60"}, &pol_none, "status"},
    {"GET", false, NULL, 304, {"Cache-Control: max-age=60"}, &pol_none, "status"},
    {"GET", false, NULL, 500, {"Cache-Control: max-age=60"}, &pol_none, "status"},
    {"GET", false, NULL, 503, {"Cache-Control: max-age=60"}, &pol_none, "status"},
    /* no-store, either side; must-understand lets a known status through */
    {"GET", false, NULL, 200, {"Cache-Control: max-age=60, no-store"}, &pol_none, "no-store"},
    {"GET",
     false,
     NULL,
     200,
     {"Cache-Control: max-age=60", "Cache-Control: No-Store"},
     &pol_none,
     "no-store"},
    {"GET", false, "no-store", 200, {"Cache-Control: max-age=60"}, &pol_none, "no-store"},
    {"GET",
     false,
     NULL,
     200,
     {"Cache-Control: max-age=60, no-store, must-understand"},
     &pol_none,
     NULL},
    {"GET",
     false,
     NULL,
     206,
     {"Cache-Control: max-age=60, no-store, must-understand"},
     &pol_none,
     "status"},
    /* private, in any form */
    {"GET", false, NULL, 200, {"Cache-Control: max-age=60, private"}, &pol_none, "private"},
    {"GET",
     false,
     NULL,
     200,
     {"Cache-Control: max-age=60, private=\"Set-Cookie\""},
     &pol_none,
     NULL}, /* stored without Set-Cookie (pf_cache_field_withheld) */
    {"GET", false, NULL, 200, {"Cache-Control: private, public, max-age=60"}, &pol_none, "private"},
    /* Authorization (RFC 9111 §3.5) */
    {"GET", true, NULL, 200, {"Cache-Control: max-age=60"}, &pol_none, "authorization"},
    {"GET", true, NULL, 200, {"Expires: @100"}, &pol_none, "authorization"},
    {"GET", true, NULL, 200, {"Cache-Control: max-age=60, public"}, &pol_none, NULL},
    {"GET", true, NULL, 200, {"Cache-Control: s-maxage=60"}, &pol_none, NULL},
    {"GET", true, NULL, 200, {"Cache-Control: max-age=60, must-revalidate"}, &pol_none, NULL},
    {"GET",
     true,
     NULL,
     200,
     {"Cache-Control: max-age=60, proxy-revalidate"},
     &pol_none,
     "authorization"},
    {"GET",
     true,
     NULL,
     200,
     {"Cache-Control: s-maxage=1x, max-age=60"},
     &pol_none,
     "authorization"},
    /* Vary: * */
    {"GET", false, NULL, 200, {"Cache-Control: max-age=60", "Vary: *"}, &pol_none, "vary"},
    {"GET", false, NULL, 200, {"Cache-Control: max-age=60", "Vary: Accept"}, &pol_none, NULL},
    /* something to keep it for */
    {"GET", false, NULL, 200, {NULL}, &pol_none, "no-freshness"},
    {"GET", false, NULL, 200, {NULL}, &pol_ttl, NULL},
    {"GET", false, NULL, 200, {"Last-Modified: @-1000", "Date: @0"}, &pol_heur, NULL},
    {"GET", false, NULL, 200, {"Cache-Control: max-age=0"}, &pol_none, "no-freshness"},
    {"GET", false, NULL, 200, {"Cache-Control: max-age=0", "ETag: \"v\""}, &pol_none, NULL},
    {"GET", false, NULL, 200, {"Expires: @-10", "Date: @0"}, &pol_ttl, "no-freshness"},
    {"GET", false, NULL, 200, {"Expires: junk"}, &pol_ttl, "no-freshness"},
    {"GET", false, NULL, 200, {"Cache-Control: max-age=1x"}, &pol_ttl, "no-freshness"},
    {"GET",
     false,
     NULL,
     200,
     {"Cache-Control: max-age=0, stale-while-revalidate=30"},
     &pol_none,
     NULL},
    {"GET", false, NULL, 200, {"Cache-Control: max-age=0"}, &pol_sie, NULL},
    {"GET", false, NULL, 200, {"Cache-Control: no-cache"}, &pol_ttl, "no-freshness"},
    {"GET", false, NULL, 200, {"Cache-Control: no-cache, max-age=60"}, &pol_none, "no-freshness"},
    {"GET", false, NULL, 200, {"Cache-Control: no-cache", "ETag: \"v\""}, &pol_none, NULL},
    {"GET", false, NULL, 200, {"Cache-Control: no-cache", "Last-Modified: @-10"}, &pol_none, NULL},
    /* a request's no-cache or max-age=0 does not stop storing */
    {"GET", false, "no-cache, max-age=0", 200, {"Cache-Control: max-age=60"}, &pol_none, NULL},
};

static void test_storable(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(store_cases) / sizeof(store_cases[0]); i++) {
        const struct store_case *c = &store_cases[i];
        struct pf_cache_meta m;
        struct pf_cc req;
        const char *why = "unset";
        bool ok;

        meta_of(&m, c->status, c->h, NULL);
        cc_of(&req, c->req_cc);
        ok = pf_cache_storable(c->method, c->auth, c->req_cc != NULL ? &req : NULL, &m, c->p, &why);
        printf("# storable case %zu: want %s, got %s\n", i, c->why ? c->why : "yes",
               why ? why : "yes");
        assert_int_equal(ok, c->why == NULL);
        if (c->why == NULL)
            assert_null(why);
        else
            assert_string_equal(why, c->why);
    }
}

/* ---- using a stored response ---- */

enum {
    FRESH = PF_CACHE_USE_FRESH,
    OK = PF_CACHE_USE_STALE_OK,
    SWR = PF_CACHE_USE_STALE_SWR,
    REVAL = PF_CACHE_USE_REVALIDATE
};

struct use_case {
    const char *h[NHDR];
    const char *req_cc;
    int64_t at; /* now = NOW + at; the response arrived at NOW with no delay or Date */
    const struct pf_cache_policy *p;
    int want;
};

static const struct use_case use_cases[] = {
    {{"Cache-Control: max-age=60"}, NULL, 0, &pol_none, FRESH},
    {{"Cache-Control: max-age=60"}, NULL, 59, &pol_none, FRESH},
    {{"Cache-Control: max-age=60"}, NULL, 60, &pol_none, REVAL},
    {{"Cache-Control: max-age=60"}, NULL, 1000, &pol_none, REVAL},
    {{"Cache-Control: max-age=60", "Age: 50"}, NULL, 9, &pol_none, FRESH},
    {{"Cache-Control: max-age=60", "Age: 50"}, NULL, 10, &pol_none, REVAL},
    {{"Cache-Control: max-age=60", "Date: @-30"}, NULL, 29, &pol_none, FRESH},
    {{"Cache-Control: max-age=60", "Date: @-30"}, NULL, 30, &pol_none, REVAL},
    {{"Expires: @-1", "Date: @0"}, NULL, 0, &pol_ttl, REVAL},
    {{"Expires: junk"}, NULL, 0, &pol_ttl, REVAL},
    {{"Cache-Control: max-age=1x"}, NULL, 0, &pol_ttl, REVAL},
    {{NULL}, NULL, 6, &pol_ttl, FRESH},
    {{NULL}, NULL, 7, &pol_ttl, REVAL},
    /* response no-cache: always revalidate */
    {{"Cache-Control: max-age=60, no-cache"}, NULL, 0, &pol_none, REVAL},
    /* qualified: the listed fields are not stored, the rest is used as it is */
    {{"Cache-Control: max-age=60, no-cache=\"Set-Cookie\""}, NULL, 0, &pol_none, FRESH},
    {{"Cache-Control: max-age=60, no-cache=\"Set-Cookie\", no-cache"}, NULL, 0, &pol_none, REVAL},
    {{"Cache-Control: max-age=60, no-cache=\"Set-Cookie, X-Foo, X-Bar, X-Baz, X-Qux, X-Quux\""},
     NULL,
     0,
     &pol_none,
     FRESH},
    /* request directives */
    {{"Cache-Control: max-age=60"}, "no-cache", 0, &pol_none, REVAL},
    {{"Cache-Control: max-age=60"}, "max-age=10", 10, &pol_none, FRESH},
    {{"Cache-Control: max-age=60"}, "max-age=10", 11, &pol_none, REVAL},
    {{"Cache-Control: max-age=60"}, "max-age=0", 0, &pol_none, FRESH},
    {{"Cache-Control: max-age=60"}, "max-age=0", 1, &pol_none, REVAL},
    {{"Cache-Control: max-age=60"}, "max-age=x", 0, &pol_none, REVAL},
    {{"Cache-Control: max-age=60"}, "min-fresh=20", 40, &pol_none, FRESH},
    {{"Cache-Control: max-age=60"}, "min-fresh=20", 41, &pol_none, REVAL},
    {{"Cache-Control: max-age=60"}, "max-stale=10", 70, &pol_none, OK},
    {{"Cache-Control: max-age=60"}, "max-stale=10", 71, &pol_none, REVAL},
    {{"Cache-Control: max-age=60"}, "max-stale", 100000, &pol_none, OK},
    {{"Cache-Control: max-age=60"}, "max-stale, max-age=100", 101, &pol_none, REVAL},
    {{"Cache-Control: max-age=60"}, "max-stale=10, min-fresh=5", 70, &pol_none, REVAL},
    {{"Cache-Control: max-age=60"}, "only-if-cached", 10, &pol_none, FRESH},
    /* stale forbidden by the response */
    {{"Cache-Control: max-age=60, must-revalidate"}, "max-stale", 61, &pol_none, REVAL},
    {{"Cache-Control: max-age=60, proxy-revalidate"}, "max-stale", 61, &pol_none, REVAL},
    {{"Cache-Control: s-maxage=60"}, "max-stale", 61, &pol_none, REVAL},
    {{"Cache-Control: s-maxage=60, stale-while-revalidate=100"}, NULL, 61, &pol_none, REVAL},
    {{"Cache-Control: max-age=60, must-revalidate"}, NULL, 59, &pol_none, FRESH},
    /* stale-while-revalidate */
    {{"Cache-Control: max-age=60, stale-while-revalidate=30"}, NULL, 59, &pol_none, FRESH},
    {{"Cache-Control: max-age=60, stale-while-revalidate=30"}, NULL, 60, &pol_none, SWR},
    {{"Cache-Control: max-age=60, stale-while-revalidate=30"}, NULL, 90, &pol_none, SWR},
    {{"Cache-Control: max-age=60, stale-while-revalidate=30"}, NULL, 91, &pol_none, REVAL},
    {{"Cache-Control: max-age=60, stale-while-revalidate=30"}, "no-cache", 70, &pol_none, REVAL},
    {{"Cache-Control: max-age=60, stale-while-revalidate=30"}, "max-age=65", 70, &pol_none, REVAL},
    {{"Cache-Control: max-age=60, stale-while-revalidate=30, must-revalidate"},
     NULL,
     70,
     &pol_none,
     REVAL},
    {{"Cache-Control: max-age=60, stale-while-revalidate=30, no-cache"},
     NULL,
     70,
     &pol_none,
     REVAL},
    {{"Cache-Control: max-age=60, stale-while-revalidate=30"}, "max-stale=5", 62, &pol_none, OK},
    /* immutable changes nothing for this cache */
    {{"Cache-Control: max-age=60, immutable"}, "no-cache", 0, &pol_none, REVAL},
};

static void test_usable(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(use_cases) / sizeof(use_cases[0]); i++) {
        const struct use_case *c = &use_cases[i];
        struct pf_cache_meta m;
        struct pf_cc req;
        struct hdrs hs = {0};

        for (unsigned k = 0; k < NHDR && c->h[k] != NULL; k++)
            hs.h[k] = c->h[k];
        pf_cache_meta_from_headers(&m, 200, hdr_get, &hs, NULL, NOW, NOW);
        cc_of(&req, c->req_cc);
        printf("# usable case %zu\n", i);
        assert_int_equal(pf_cache_usable(&m, c->req_cc != NULL ? &req : NULL, c->p, NOW + c->at),
                         c->want);
    }
}

struct sie_case {
    const char *h[NHDR];
    int64_t at;
    const struct pf_cache_policy *p;
    bool want;
};

static const struct sie_case sie_cases[] = {
    {{"Cache-Control: max-age=60"}, 10, &pol_none, true}, /* fresh anyway */
    {{"Cache-Control: max-age=60"}, 60, &pol_none, false},
    {{"Cache-Control: max-age=60"}, 60, &pol_sie, true},
    {{"Cache-Control: max-age=60"}, 90, &pol_sie, true},
    {{"Cache-Control: max-age=60"}, 91, &pol_sie, false},
    {{"Cache-Control: max-age=60, stale-if-error=100"}, 160, &pol_none, true},
    {{"Cache-Control: max-age=60, stale-if-error=100"}, 161, &pol_none, false},
    {{"Cache-Control: max-age=60, stale-if-error=100"}, 160, &pol_sie, true},
    {{"Cache-Control: max-age=60, stale-if-error=10"}, 85, &pol_sie, true},
    {{"Cache-Control: max-age=60, stale-if-error=0"}, 60, &pol_none, false},
    {{"Cache-Control: max-age=60, stale-if-error=100, must-revalidate"}, 70, &pol_sie, false},
    {{"Cache-Control: max-age=60, stale-if-error=100, proxy-revalidate"}, 70, &pol_sie, false},
    {{"Cache-Control: s-maxage=60, stale-if-error=100"}, 70, &pol_sie, false},
    {{"Cache-Control: max-age=60, stale-if-error=100, no-cache"}, 70, &pol_sie, false},
    {{"Cache-Control: max-age=60, no-cache"}, 10, &pol_sie, false},
    {{"Cache-Control: max-age=60, must-revalidate"}, 10, &pol_sie, true},
};

static void test_stale_on_error(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(sie_cases) / sizeof(sie_cases[0]); i++) {
        const struct sie_case *c = &sie_cases[i];
        struct pf_cache_meta m;
        struct hdrs hs = {0};

        for (unsigned k = 0; k < NHDR && c->h[k] != NULL; k++)
            hs.h[k] = c->h[k];
        pf_cache_meta_from_headers(&m, 200, hdr_get, &hs, NULL, NOW, NOW);
        printf("# stale-if-error case %zu\n", i);
        assert_int_equal(pf_cache_stale_on_error(&m, c->p, NOW + c->at), c->want);
    }
}

/* ---- conditional requests ---- */

struct cond_case {
    const char *h[NHDR]; /* the stored response */
    const char *inm;
    const char *ims;
    bool want;
};

static const struct cond_case cond_cases[] = {
    {{"ETag: \"a\""}, "\"a\"", NULL, true},
    {{"ETag: \"a\""}, "\"b\"", NULL, false},
    {{"ETag: \"a\""}, "W/\"a\"", NULL, true},
    {{"ETag: W/\"a\""}, "\"a\"", NULL, true},
    {{"ETag: W/\"a\""}, "W/\"a\"", NULL, true},
    {{"ETag: \"a\""}, "\"b\", \"a\"", NULL, true},
    {{"ETag: \"a\""}, " \"b\" ,, W/\"a\" ", NULL, true},
    {{"ETag: \"a\""}, "\"A\"", NULL, false},
    {{"ETag: \"a\""}, "a", NULL, false},
    {{"ETag: \"a\""}, "\"a", NULL, false},
    {{"ETag: \"a\""}, "*", NULL, true},
    {{NULL}, "*", NULL, true},
    {{NULL}, "\"a\"", NULL, false},
    {{"ETag: \"a\""}, "", NULL, false},
    {{"ETag: \"a,b\""}, "\"x\", \"a,b\"", NULL, true},
    {{"ETag: \"a\""}, "\"a,b\"", NULL, false},
    {{"ETag: \"b\""}, "\"a,b\"", NULL, false},
    {{"ETag: \"b\""}, "\"a\" junk, \"b\"", NULL, false},
    {{"ETag: W/\"a\""}, "w/\"a\"", NULL, false},
    /* If-None-Match wins over If-Modified-Since, both ways */
    {{"ETag: \"a\"", "Last-Modified: @-100"}, "\"b\"", "@0", false},
    {{"ETag: \"a\"", "Last-Modified: @-100"}, "\"a\"", "@-1000", true},
    /* If-Modified-Since against Last-Modified, else Date */
    {{"Last-Modified: @-100"}, NULL, "@-100", true},
    {{"Last-Modified: @-100"}, NULL, "@-50", true},
    {{"Last-Modified: @-100"}, NULL, "@-101", false},
    {{"Last-Modified: @-100", "Date: @-500"}, NULL, "@-200", false},
    {{"Date: @-100"}, NULL, "@-50", true},
    {{"Date: @-100"}, NULL, "@-150", false},
    {{NULL}, NULL, "@0", false},
    {{"Last-Modified: @-100"}, NULL, "yesterday", false},
    {{"Last-Modified: @-100"}, NULL, "", false},
    {{"Last-Modified: @-100"}, NULL, NULL, false},
    {{"Last-Modified: Sun, 06 Nov 1994 08:49:37 GMT"},
     NULL,
     "Sunday, 06-Nov-94 08:49:37 GMT",
     true},
    {{"Last-Modified: Sun, 06 Nov 1994 08:49:37 GMT"}, NULL, "Sun Nov  6 08:49:37 1994", true},
    /* a two-digit year within 50 years of the response is not a century back */
    {{"Last-Modified: Wed, 01 Jan 2070 00:00:00 GMT"},
     NULL,
     "Wednesday, 01-Jan-70 00:00:00 GMT",
     true},
};

static void test_not_modified(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(cond_cases) / sizeof(cond_cases[0]); i++) {
        const struct cond_case *c = &cond_cases[i];
        struct pf_cache_meta m;
        char ims[64];
        const char *imsp = c->ims;

        meta_of(&m, 200, c->h, NULL);
        if (imsp != NULL && imsp[0] == '@')
            imsp = pf_http_date_fmt(NOW + strtoll(imsp + 1, NULL, 10), ims);
        printf("# conditional case %zu\n", i);
        assert_int_equal(pf_cache_not_modified(c->inm, imsp, &m), c->want);
    }
}

/* ---- robustness: arbitrary field values, bounded by count ---- */

/* A deterministic generator (no clock, no global state): the same strings every run. */
static uint32_t lcg(uint32_t *s)
{
    *s = *s * 1103515245u + 12345u;
    return *s >> 8;
}

static void test_arbitrary_values(void **state)
{
    static const char alphabet[] = "max-age=s-maxagepublicprivate\"\\,;= \t0123456789*W/GMT:-";
    uint32_t seed = 7;

    (void)state;
    for (int i = 0; i < 20000; i++) {
        char s[48];
        size_t n = lcg(&seed) % (sizeof(s) - 1);
        struct pf_cc cc;
        struct pf_cache_meta m;
        struct hdrs hs = {0};
        char out[64];
        const char *line = s;

        for (size_t k = 0; k < n; k++)
            s[k] = alphabet[lcg(&seed) % (sizeof(alphabet) - 1)];
        s[n] = '\0';
        cc_of(&cc, s);
        assert_true(cc.max_age == A || (cc.max_age >= 0 && cc.max_age <= CAP));
        assert_true(cc.s_maxage == A || (cc.s_maxage >= 0 && cc.s_maxage <= CAP));
        assert_true(pf_http_date_parse(s) >= -1);
        meta_of(&m, 200, (const char *[]){"ETag: \"a\"", NULL}, NULL);
        (void)pf_cache_not_modified(s, NULL, &m);
        (void)pf_cache_not_modified(NULL, s, &m);
        (void)pf_cache_header_stored("X", s);
        (void)pf_cache_variant_key(&line, 1, hdr_get, &hs, out, sizeof(out));
        (void)pf_cache_key("http", s, s[0] == '/' ? s : "/", (const char *[]){s}, 1, out,
                           sizeof(out));
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cc_parse),         cmocka_unit_test(test_http_date),
        cmocka_unit_test(test_http_date_fmt),    cmocka_unit_test(test_meta_age_header),
        cmocka_unit_test(test_meta_fields),      cmocka_unit_test(test_meta_expires),
        cmocka_unit_test(test_meta_targeted),    cmocka_unit_test(test_lifetime),
        cmocka_unit_test(test_current_age),      cmocka_unit_test(test_age_overflow_is_stale),
        cmocka_unit_test(test_storable),         cmocka_unit_test(test_usable),
        cmocka_unit_test(test_stale_on_error),   cmocka_unit_test(test_not_modified),
        cmocka_unit_test(test_arbitrary_values),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
