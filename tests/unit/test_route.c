/*
 * Unit tests of proxy/route.c: the path normalisation routes are matched
 * against (security-relevant: a path that normalises differently from what
 * an upstream reads can leave the route whose filters should apply), and
 * route selection with normalize_path and case_insensitive.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "proxy/arena.h"
#include "proxy/core.h"
#include "proxy/route.h"

#define N(a) (sizeof(a) / sizeof((a)[0]))

/* NULL out: refused (400) */
static const struct {
    const char *in;
    const char *out;
} norm_cases[] = {
    {"/", "/"},
    {"/a/b", "/a/b"},
    {"/a/b/", "/a/b/"},
    /* unreserved characters decoded, the rest kept with upper-case hex */
    {"/%61pi/a", "/api/a"},
    {"/%41%2d%2E%5f%7E", "/A-._~"},
    {"/a%20b%3f%3b", "/a%20b%3F%3B"},
    {"/a%c3%a9", "/a%C3%A9"},
    /* double encoding refused */
    {"/%2561pi/a", NULL},
    {"/a/%252e%252e/b", NULL},
    /* ... also when the digits after %25 are encoded themselves */
    {"/%25%36%31pi/a", NULL},
    {"/a/%25%32%65%25%32%65/b", NULL},
    {"/%25%32%35%36%31", NULL},
    {"/a%25%7e", "/a%25~"},
    {"/a%25", "/a%25"},
    {"/a%25zz", "/a%25zz"},
    /* NUL and overlong UTF-8 ("%C0%AE" is '.', "%C0%AF" '/' to a lenient decoder) */
    {"/a%00b", NULL},
    {"/a/%00", NULL},
    {"/public/%C0%AE%C0%AE/api", NULL},
    {"/public/..%c0%afapi", NULL},
    {"/a%C1%81", NULL},
    {"/a%E0%80%AE", NULL},
    {"/a%e0%9f%bf", NULL},
    {"/a%F0%80%80%AE", NULL},
    {"/a%F0%8F%BF%BF", NULL},
    {"/a%01%7f", "/a%01%7F"},
    {"/a%C2%A0", "/a%C2%A0"},
    {"/a%E0%A0%80", "/a%E0%A0%80"},
    {"/a%F0%90%80%80", "/a%F0%90%80%80"},
    {"/a%E0", "/a%E0"},
    {"/a%F0x", "/a%F0x"},
    /* dot segments, plain and encoded, and separators read as '/' */
    {"/public/../api/x", "/api/x"},
    {"/public/%2e%2e/api/x", "/api/x"},
    {"/public/%2E%2E/api/x", "/api/x"},
    {"/public/..%2fapi/x", "/api/x"},
    {"/public/..%5capi/x", "/api/x"},
    {"/public/..\\api/x", "/api/x"},
    {"/public/./../api/x", "/api/x"},
    {"/a/b/..", "/a/"},
    {"/a/b/.", "/a/b/"},
    {"/..", "/"},
    {"/../../a", "/a"},
    {"/a/./b", "/a/b"},
    {"/a/.b/..c", "/a/.b/..c"},
    /* empty segments */
    {"//a//b", "/a/b"},
    {"/public//../api/x", "/api/x"},
    {"/public/x//..//../api/x", "/api/x"},
    {"/a//", "/a/"},
    /* path parameters stay; "..;x" is a dot segment */
    {"/api;x/a", "/api;x/a"},
    {"/public/..;x/api/x", "/api/x"},
    {"/public/.;x/a", "/public/a"},
    {"/a;b=c;d/e", "/a;b=c;d/e"},
    /* a dot segment before an encoded ';' is one only where "%3B" is decoded first: refused */
    {"/api/..%3Bx/admin/secret", NULL},
    {"/api/..%3bx/admin", NULL},
    {"/api/.%3B/x", NULL},
    {"/api/%2e%2e%3b/x", NULL},
    {"/api/%2E%3Bx", NULL},
    {"/api%2f..%3Bx/y", NULL},
    {"/api\\..%3B", NULL},
    {"/..%3B", NULL},
    {"/a/..%3B%3B/b", NULL},
    /* ... while "%3B" elsewhere is kept */
    {"/a%3Bb/c", "/a%3Bb/c"},
    {"/a/...%3B/b", "/a/...%3B/b"},
    {"/a/.x%3B/b", "/a/.x%3B/b"},
    {"/a/%3B../b", "/a/%3B../b"},
    {"/a/x..%3b/b", "/a/x..%3B/b"},
    {"/a/..;x%3B/b", "/b"},
};

static void test_route_normalize_table(void **state)
{
    (void)state;
    for (unsigned i = 0; i < N(norm_cases); i++) {
        const char *in = norm_cases[i].in;
        char out[256];
        ssize_t n = pf_route_normalize(in, strlen(in), out);

        if (norm_cases[i].out == NULL) {
            if (n >= 0)
                fail_msg("'%s': expected refusal, got '%s'", in, out);
            continue;
        }
        if (n < 0)
            fail_msg("'%s': refused, expected '%s'", in, norm_cases[i].out);
        if ((size_t)n != strlen(out) || strcmp(out, norm_cases[i].out) != 0)
            fail_msg("'%s': got '%s', expected '%s'", in, out, norm_cases[i].out);
    }
}

static void test_route_normalize_long_path(void **state)
{
    char in[3000], out[3002];
    size_t len;

    (void)state;
    /* longer than the stack buffer: "/a/..%2f" * 300 + "/x" is "/x" */
    in[0] = '\0';
    for (unsigned i = 0; i < 300; i++)
        strcat(in, "/a/..%2f");
    strcat(in, "x");
    len = strlen(in);
    assert_int_equal(pf_route_normalize(in, len, out), 2);
    assert_string_equal(out, "/x");
}

static void test_route_strip_params_table(void **state)
{
    static const struct {
        const char *in;
        const char *out;
    } cases[] = {
        {"/api;x/a", "/api/a"},
        {"/a;b=c;d/e;f", "/a/e"},
        {"/;x/a", "/a"},
        {"/a/b", "/a/b"},
        {"/a;/b;", "/a/b"},
        /* segments that were only params are empty: "//api" would miss "/api/" */
        {"/;x/;y/a", "/a"},
        {"/a/;x", "/a/"},
        {"/;", "/"},
    };

    (void)state;
    for (unsigned i = 0; i < N(cases); i++) {
        char buf[64];
        size_t n;

        strcpy(buf, cases[i].in);
        n = pf_route_strip_params(buf, strlen(buf));
        assert_string_equal(buf, cases[i].out);
        assert_int_equal(n, strlen(cases[i].out));
    }
}

/* ---- route selection ---- */

struct sel_fx {
    struct pf_config cfg;
    struct pf_route routes[3];
    struct pf_tx tx;
};

static struct sel_fx fx;

static int sel_setup(void **state)
{
    (void)state;
    memset(&fx, 0, sizeof(fx));
    fx.routes[0].name = "api";
    fx.routes[0].prefix = "/api/";
    fx.routes[1].name = "admin";
    fx.routes[1].prefix = "/admin/";
    fx.routes[1].case_insensitive = true;
    fx.routes[1].normalize = PF_NORMALIZE_MATCH_ONLY;
    fx.routes[2].name = "root";
    fx.routes[2].prefix = "/";
    for (unsigned i = 0; i < 3; i++)
        fx.routes[i].prefix_len = strlen(fx.routes[i].prefix);
    fx.cfg.routes = fx.routes;
    fx.cfg.n_routes = 3;
    fx.tx.cfg = &fx.cfg;
    fx.tx.method = "GET";
    fx.tx.arena = pf_arena_new(4096);
    return 0;
}

static int sel_teardown(void **state)
{
    (void)state;
    pf_arena_free(fx.tx.arena);
    return 0;
}

/* Select for target: the route's name ("-" for none, NULL for a 400) and the forwarded url. */
static const char *sel(const char *target, const char **url)
{
    fx.tx.url = target;
    fx.tx.route = NULL;
    if (pf_route_select(&fx.tx) != 0)
        return NULL;
    *url = fx.tx.url;
    return fx.tx.route != NULL ? fx.tx.route->name : "-";
}

static void test_route_select_table(void **state)
{
    static const struct {
        const char *target;
        const char *route; /* NULL: refused */
        const char *url;   /* what the upstream gets */
    } cases[] = {
        {"/api/a", "api", "/api/a"},
        {"/api/a?x=%2e%2e/", "api", "/api/a?x=%2e%2e/"}, /* the query is not touched */
        {"/%61pi/a", "api", "/api/a"},
        {"/api;x/a", "api", "/api;x/a"},
        {"/API/a", "root", "/API/a"}, /* case-sensitive by default */
        {"/%2561pi/a", NULL, NULL},
        {"/%25%36%31pi/a", NULL, NULL}, /* forwarded, it would be "/%2561pi/a" */
        {"/;x/api/a", "api", "/;x/api/a"},
        {"/;/api/a", "api", "/;/api/a"},
        {"/x/;y/../api/a", "root", "/x/api/a"}, /* ".." removes ";y": what is forwarded */
        {"/x/../api/a?q", "api", "/api/a?q"},
        {"/ADMIN/x", "admin", "/ADMIN/x"},
        {"/Admin/./x/../y?z", "admin", "/Admin/./x/../y?z"}, /* match_only: as received */
        {"/api/a%00", NULL, NULL},
        {"/api/%C0%AE%C0%AE/a", NULL, NULL},
        {"/api/a?x=%00", "api", "/api/a?x=%00"}, /* the query is not the path */
        /*
         * match_only: ";params" with dot segments or params-only segments
         * read differently upstream, so they are refused...
         */
        {"/x/..;y/admin/z", NULL, NULL},      /* "/x/..;y/admin/z" where ';' is plain */
        {"/admin/;a/../z", NULL, NULL},       /* "/z" where params go first */
        {"/admin;%2f../admin/x", NULL, NULL}, /* "/admin/admin/x" where params go first */
        {"/admin/x/.;p/y", NULL, NULL},
        {"/;x/admin/y", NULL, NULL},
        {"/admin/x/;", NULL, NULL},
        {"/admin;v=1/x", "admin", "/admin;v=1/x"}, /* ... params alone are not */
        {"/admin/./x", "admin", "/admin/./x"},     /* ... nor dots alone */
        /* ... while forward sends the path that was matched */
        {"/api/..;x/y", "root", "/y"},
        {"/x/;a/../admin/z", "root", "/x/admin/z"},
        {"/api;%2f../x", "root", "/x"},
        {"/x/..;y/api/z", "api", "/api/z"},
        /* a dot segment before an encoded ';' is refused in both modes */
        {"/api/..%3Bx/admin/secret", NULL, NULL},
        {"/admin/..%3bx/api/a", NULL, NULL},
        {"/api/%2e%3B/a", NULL, NULL},
        {"/api/a%3Bb/c", "api", "/api/a%3Bb/c"}, /* unchanged: forwarded as received */
        {"/admin/a%3bb/c", "admin", "/admin/a%3bb/c"},
        {"/api", "root", "/api"},
        {"*", "root", "*"},
        /* what makes a path worth normalising, first, last, or only in the query */
        {"//api/a", "api", "/api/a"},
        {"/api//a", "api", "/api/a"},
        {"/api/a//?q//", "api", "/api/a/?q//"},
        {"/api/a?q//.;%", "api", "/api/a?q//.;%"},
        {"/api/a/?/", "api", "/api/a/?/"},
        {"/api/a/.", "api", "/api/a/"},
        {"/api/b/..", "api", "/api/"},
    };

    (void)state;
    for (unsigned i = 0; i < N(cases); i++) {
        const char *url = NULL;
        const char *r = sel(cases[i].target, &url);

        if (cases[i].route == NULL) {
            if (r != NULL)
                fail_msg("'%s': expected refusal, got route %s", cases[i].target, r);
            continue;
        }
        if (r == NULL || strcmp(r, cases[i].route) != 0 || strcmp(url, cases[i].url) != 0)
            fail_msg("'%s': got route %s url '%s', expected %s '%s'", cases[i].target,
                     r ? r : "(refused)", url ? url : "", cases[i].route, cases[i].url);
    }
}

/* match.host: the port and a trailing '.' (an FQDN) are not part of the name */
static void test_route_select_host(void **state)
{
    static const struct {
        const char *host;
        const char *route;
    } cases[] = {
        {"admin.example", "admin"},  {"admin.example.", "admin"}, {"ADMIN.Example.:8080", "admin"},
        {"admin.example..", "root"}, {"admin.exampl", "root"},    {"other", "root"},
    };
    const char *url;

    (void)state;
    fx.routes[1].host = "admin.example";
    for (unsigned i = 0; i < N(cases); i++) {
        const char *r;

        fx.tx.host = cases[i].host;
        r = sel("/admin/x", &url);
        if (r == NULL || strcmp(r, cases[i].route) != 0)
            fail_msg("host '%s': got route %s, expected %s", cases[i].host, r ? r : "(refused)",
                     cases[i].route);
    }
    fx.routes[2].host = "other.";
    fx.tx.host = "other";
    assert_string_equal(sel("/x", &url), "root"); /* written with the dot in the config */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_route_normalize_table),
        cmocka_unit_test(test_route_normalize_long_path),
        cmocka_unit_test(test_route_strip_params_table),
        cmocka_unit_test_setup_teardown(test_route_select_table, sel_setup, sel_teardown),
        cmocka_unit_test_setup_teardown(test_route_select_host, sel_setup, sel_teardown),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
