/*
 * Unit tests of proxy/h1parse.c: the request and response head scans, fed
 * whole, one byte at a time and split at every offset (the answer must not
 * depend on how the bytes arrive), and the one-pass read of the whole head.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <http_parser.h>

#include "proxy/h1parse.h"

#define MAX_FIELDS 32

/* What a head came to: the scan's answer, then the parse's. */
struct result {
    int scan_rc;  /* PF_H1P_MORE, PF_H1P_DONE or 400 */
    size_t used;  /* bytes of the input the head took */
    int parse_rc; /* when the scan was done */
    struct pf_h1p_scan scan;
    struct pf_h1p_head h;
    struct pf_hdr v[MAX_FIELDS];
    char buf[4096];
};

/* Feed in[0..len) in pieces of the given size (0: cut once at split). */
static void run(struct result *r, const char *in, size_t len, size_t piece, size_t split)
{
    size_t off = 0;

    memset(r, 0, sizeof(*r));
    pf_h1p_scan_init(&r->scan);
    r->scan_rc = PF_H1P_MORE;
    while (off < len && r->scan_rc == PF_H1P_MORE) {
        size_t n = piece > 0 ? piece : (off < split ? split : len - off);
        size_t used = 0;

        if (n > len - off)
            n = len - off;
        r->scan_rc = pf_h1p_scan_request(&r->scan, in + off, n, &used);
        if (r->scan_rc == PF_H1P_MORE)
            assert_int_equal(used, n);
        else if (r->scan_rc == PF_H1P_DONE)
            assert_true(used <= n);
        off += used;
    }
    r->used = off;
    if (r->scan_rc != PF_H1P_DONE)
        return;
    assert_true(r->scan.lines <= MAX_FIELDS);
    memcpy(r->buf, in, r->used);
    r->buf[r->used] = '\0';
    r->h.v = r->v;
    r->parse_rc = pf_h1p_parse_request(&r->scan, r->buf, r->used, &r->h);
}

/* The same answer for any way of cutting the input. */
static void run_all_ways(struct result *r, const char *in, size_t len)
{
    static struct result other;

    run(r, in, len, 0, len);
    run(&other, in, len, 1, 0);
    assert_int_equal(other.scan_rc, r->scan_rc);
    assert_int_equal(other.parse_rc, r->parse_rc);
    if (r->scan_rc != 400)
        assert_int_equal(other.used, r->used);
    for (size_t split = 1; split < len; split++) {
        run(&other, in, len, 0, split);
        assert_int_equal(other.scan_rc, r->scan_rc);
        assert_int_equal(other.parse_rc, r->parse_rc);
        if (r->scan_rc == 400)
            continue; /* refused: how far it got depends on the cut */
        assert_int_equal(other.used, r->used);
        assert_int_equal(other.h.n, r->h.n);
        assert_int_equal(other.scan.url_len, r->scan.url_len);
    }
}

/* ---- the table ---- */

enum { OK = 0, BAD_SCAN, BAD_PARSE, MORE };

/* a literal and its length (some hold NULs) */
#define S(lit) lit, sizeof(lit) - 1

static const struct {
    const char *what;
    const char *in;
    size_t len;
    int expect;
    unsigned fields; /* when OK */
} heads[] = {
    {"simple", S("GET / HTTP/1.1\r\nHost: a\r\n\r\n"), OK, 1},
    {"no fields", S("GET / HTTP/1.0\r\n\r\n"), OK, 0},
    {"empty lines first", S("\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n"), OK, 1},
    {"spaces between words", S("GET   /x   HTTP/1.1\r\nHost: a\r\n\r\n"), OK, 1},
    {"empty value", S("GET / HTTP/1.1\r\nHost: a\r\nX:\r\n\r\n"), OK, 2},
    {"obs-text value", S("GET / HTTP/1.1\r\nHost: a\r\nX: \xe2\x82\xac\r\n\r\n"), OK, 2},
    {"tab in value", S("GET / HTTP/1.1\r\nHost: a\r\nX: a\tb\r\n\r\n"), OK, 2},
    {"all methods' letters", S("M-SEARCH * HTTP/1.1\r\nHost: a\r\n\r\n"), OK, 1},
    {"absolute form", S("GET http://a/b?c HTTP/1.1\r\n\r\n"), OK, 0},
    {"unfinished", S("GET / HTTP/1.1\r\nHost: a\r\n"), MORE, 0},
    {"unfinished line", S("GET / HTTP/1.1\r\nHo"), MORE, 0},
    {"bare lf", S("GET / HTTP/1.1\nHost: a\n\n"), BAD_SCAN, 0},
    {"bare lf after fields", S("GET / HTTP/1.1\r\nHost: a\r\n\n"), BAD_SCAN, 0},
    {"bare lf in value", S("GET / HTTP/1.1\r\nHost: a\nb\r\n\r\n"), BAD_SCAN, 0},
    {"bare cr", S("GET / HTTP/1.1\r\nX: a\rb\r\n\r\n"), BAD_SCAN, 0},
    {"bare cr in request line", S("GET /\r HTTP/1.1\r\n\r\n"), BAD_SCAN, 0},
    {"cr cr lf", S("GET / HTTP/1.1\r\nX: a\r\r\n\r\n"), BAD_SCAN, 0},
    {"lf before request line", S("\nGET / HTTP/1.1\r\n\r\n"), BAD_SCAN, 0},
    {"obs-fold", S("GET / HTTP/1.1\r\nX: a\r\n b\r\n\r\n"), BAD_SCAN, 0},
    {"obs-fold with tab", S("GET / HTTP/1.1\r\nX: a\r\n\tb\r\n\r\n"), BAD_SCAN, 0},
    {"space before first field", S("GET / HTTP/1.1\r\n Host: a\r\n\r\n"), BAD_SCAN, 0},
    {"lower-case method", S("get / HTTP/1.1\r\n\r\n"), BAD_SCAN, 0},
    {"unknown method", S("FOO / HTTP/1.1\r\n\r\n"), BAD_SCAN, 0},
    {"method too long", S("UNSUBSCRIBEX / HTTP/1.1\r\n\r\n"), BAD_SCAN, 0},
    {"space before method", S(" GET / HTTP/1.1\r\n\r\n"), BAD_SCAN, 0},
    {"tab between words", S("GET\t/ HTTP/1.1\r\n\r\n"), BAD_SCAN, 0},
    {"no target", S("GET  HTTP/1.1\r\n\r\n"), BAD_SCAN, 0},
    {"target starting oddly", S("GET ?a HTTP/1.1\r\n\r\n"), BAD_SCAN, 0},
    {"nul in target", S("GET /a\0b HTTP/1.1\r\n\r\n"), BAD_SCAN, 0},
    {"del in target", S("GET /a\x7f HTTP/1.1\r\n\r\n"), BAD_SCAN, 0},
    {"three words after method", S("GET /a b HTTP/1.1\r\n\r\n"), BAD_SCAN, 0},
    {"version twice", S("GET / HTTP/1.1 HTTP/1.1\r\n\r\n"), BAD_SCAN, 0},
    {"space after version", S("GET / HTTP/1.1 \r\n\r\n"), BAD_SCAN, 0},
    {"http/1.2", S("GET / HTTP/1.2\r\n\r\n"), BAD_SCAN, 0},
    {"http/2.0", S("GET / HTTP/2.0\r\n\r\n"), BAD_SCAN, 0},
    {"http/1.10", S("GET / HTTP/1.10\r\n\r\n"), BAD_SCAN, 0},
    {"htxp", S("GET / HTXP/1.1\r\n\r\n"), BAD_SCAN, 0},
    {"lower-case version", S("GET / http/1.1\r\n\r\n"), BAD_SCAN, 0},
    {"http/0.9", S("GET /\r\n\r\n"), BAD_SCAN, 0},
    {"garbage", S("HELLO\r\n\r\n"), BAD_SCAN, 0},
    {"space before colon", S("GET / HTTP/1.1\r\nX : v\r\n\r\n"), BAD_PARSE, 0},
    {"tab before colon", S("GET / HTTP/1.1\r\nX\t: v\r\n\r\n"), BAD_PARSE, 0},
    {"empty name", S("GET / HTTP/1.1\r\n: v\r\n\r\n"), BAD_PARSE, 0},
    {"no colon", S("GET / HTTP/1.1\r\nX\r\n\r\n"), BAD_PARSE, 0},
    {"separator in name", S("GET / HTTP/1.1\r\nX(y): v\r\n\r\n"), BAD_PARSE, 0},
    {"nul in name", S("GET / HTTP/1.1\r\nX\0: v\r\n\r\n"), BAD_PARSE, 0},
    {"nul in value", S("GET / HTTP/1.1\r\nX: a\0b\r\n\r\n"), BAD_PARSE, 0},
    {"nul as the value", S("GET / HTTP/1.1\r\nX: \0\r\n\r\n"), BAD_PARSE, 0},
    {"ctl in value", S("GET / HTTP/1.1\r\nX: a\x01\r\n\r\n"), BAD_PARSE, 0},
    {"del in value", S("GET / HTTP/1.1\r\nX: \x7f\r\n\r\n"), BAD_PARSE, 0},
};

static void test_h1parse_table_any_cut(void **state)
{
    static struct result r;

    (void)state;
    for (unsigned i = 0; i < sizeof(heads) / sizeof(heads[0]); i++) {
        size_t len = heads[i].len;

        print_message("case: %s\n", heads[i].what);
        run_all_ways(&r, heads[i].in, len);
        switch (heads[i].expect) {
        case OK:
            assert_int_equal(r.scan_rc, PF_H1P_DONE);
            assert_int_equal(r.used, len);
            assert_int_equal(r.parse_rc, 0);
            assert_int_equal(r.h.n, heads[i].fields);
            break;
        case MORE:
            assert_int_equal(r.scan_rc, PF_H1P_MORE);
            break;
        case BAD_SCAN:
            assert_int_equal(r.scan_rc, 400);
            break;
        default:
            assert_int_equal(r.scan_rc, PF_H1P_DONE);
            assert_int_equal(r.parse_rc, 400);
        }
    }
}

/* ---- what the parse finds ---- */

static void parse_ok(struct result *r, const char *in)
{
    run_all_ways(r, in, strlen(in));
    assert_int_equal(r->scan_rc, PF_H1P_DONE);
    assert_int_equal(r->parse_rc, 0);
}

static void assert_field(const struct result *r, unsigned i, const char *name, const char *value,
                         enum pf_hdr_id id)
{
    assert_true(i < r->h.n);
    assert_string_equal(r->h.v[i].name, name);
    assert_int_equal(r->h.v[i].name_len, strlen(name));
    assert_string_equal(r->h.v[i].value, value);
    assert_int_equal(r->h.v[i].value_len, strlen(value));
    assert_int_equal(r->h.v[i].id, id);
}

static void test_h1parse_cuts_trims_and_classifies_fields(void **state)
{
    static struct result r;

    (void)state;
    parse_ok(&r, "POST /p?q=1 HTTP/1.1\r\nHost: example.com\r\nx-a:\t one two \t\r\n"
                 "Content-Length: 12\r\nEMPTY:\r\nX-Forwarded-For: 1.2.3.4\r\n\r\n");
    assert_int_equal(r.scan.method, HTTP_POST);
    assert_int_equal(r.scan.minor, 1);
    assert_string_equal(r.h.url, "/p?q=1");
    assert_int_equal(r.h.url_len, 6);
    assert_int_equal(r.h.n, 5);
    assert_field(&r, 0, "Host", "example.com", PF_H_HOST);
    assert_field(&r, 1, "x-a", "one two", PF_H_OTHER);
    assert_field(&r, 2, "Content-Length", "12", PF_H_CONTENT_LENGTH);
    assert_field(&r, 3, "EMPTY", "", PF_H_OTHER);
    assert_field(&r, 4, "X-Forwarded-For", "1.2.3.4", PF_H_X_FORWARDED_FOR);
    assert_string_equal(r.h.host, "example.com");
    assert_int_equal(r.h.host_len, 11);
    assert_int_equal(r.h.n_cl, 1);
    assert_int_equal(r.h.length, 12);
    assert_false(r.h.cl_bad);
    assert_int_equal(r.h.n_te, 0);
    assert_false(r.h.underscore);
}

static void test_h1parse_notes_framing_fields(void **state)
{
    static struct result r;

    (void)state;
    parse_ok(&r, "GET / HTTP/1.1\r\nContent-Length: 3\r\ncontent-length: 4\r\n\r\n");
    assert_int_equal(r.h.n_cl, 2);
    assert_int_equal(r.h.length, 3); /* the first; two are refused anyway */
    parse_ok(&r, "GET / HTTP/1.1\r\nContent-Length: +3\r\n\r\n");
    assert_true(r.h.cl_bad);
    parse_ok(&r, "GET / HTTP/1.1\r\nContent-Length: 3, 3\r\n\r\n");
    assert_true(r.h.cl_bad);
    parse_ok(&r, "GET / HTTP/1.1\r\nContent-Length:\r\n\r\n");
    assert_true(r.h.cl_bad);
    parse_ok(&r, "GET / HTTP/1.1\r\nContent-Length: 1234567890123456789\r\n\r\n");
    assert_true(r.h.cl_bad); /* 19 digits could overflow */
    parse_ok(&r, "GET / HTTP/1.1\r\nContent-Length: 123456789012345678\r\n\r\n");
    assert_false(r.h.cl_bad);
    assert_int_equal(r.h.length, 123456789012345678ULL);
    parse_ok(&r, "GET / HTTP/1.1\r\nTransfer-Encoding: CHUNKED \r\n\r\n");
    assert_int_equal(r.h.n_te, 1);
    assert_true(r.h.te_chunked);
    parse_ok(&r, "GET / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n");
    assert_false(r.h.te_chunked);
    parse_ok(&r, "GET / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: x\r\n\r\n");
    assert_int_equal(r.h.n_te, 2);
    assert_false(r.h.te_chunked);
    parse_ok(&r, "GET / HTTP/1.0\r\nConnection: Keep-Alive\r\nHost: a\r\nHost: b\r\n\r\n");
    assert_true(r.h.conn_keepalive);
    assert_false(r.h.conn_close);
    assert_int_equal(r.h.n_host, 2);
    assert_string_equal(r.h.host, "a");
    assert_int_equal(r.scan.minor, 0);
    parse_ok(&r, "GET / HTTP/1.1\r\nConnection: foo, close\r\nExpect: 100-continue\r\n\r\n");
    assert_true(r.h.conn_close);
    assert_string_equal(r.h.expect, "100-continue");
    parse_ok(&r, "GET / HTTP/1.1\r\nConnection: closed\r\nContent_Length: 5\r\n\r\n");
    assert_false(r.h.conn_close);
    assert_true(r.h.underscore);
    assert_int_equal(r.h.n_cl, 0); /* not Content-Length: conn_underscores decides */
}

static void test_h1parse_stops_at_the_end_of_the_head(void **state)
{
    static const char in[] = "GET /a HTTP/1.1\r\nHost: a\r\n\r\nGET /b HTTP/1.1\r\n\r\n";
    static struct result r;
    size_t first = strlen("GET /a HTTP/1.1\r\nHost: a\r\n\r\n");

    (void)state;
    run_all_ways(&r, in, sizeof(in) - 1);
    assert_int_equal(r.scan_rc, PF_H1P_DONE);
    assert_int_equal(r.used, first);
    assert_string_equal(r.h.url, "/a");
}

/* 256 Content-Length fields are 256, not none: a count that wrapped would let a body through. */
static void test_h1parse_counts_many_framing_fields_exactly(void **state)
{
    static char in[16384];
    static struct pf_hdr v[520]; /* 513 fields */
    struct pf_h1p_scan scan;
    struct pf_h1p_head h = {.v = v};
    size_t n = (size_t)snprintf(in, sizeof(in), "POST / HTTP/1.1\r\nHost: a\r\n");
    size_t used;

    (void)state;
    for (int i = 0; i < 256; i++) {
        n += (size_t)snprintf(in + n, sizeof(in) - n, "Content-Length: 5\r\n");
        n += (size_t)snprintf(in + n, sizeof(in) - n, "Transfer-Encoding: chunked\r\n");
    }
    n += (size_t)snprintf(in + n, sizeof(in) - n, "\r\n");
    pf_h1p_scan_init(&scan);
    assert_int_equal(pf_h1p_scan_request(&scan, in, n, &used), PF_H1P_DONE);
    assert_int_equal(scan.lines, 513);
    assert_int_equal(pf_h1p_parse_request(&scan, in, used, &h), 0);
    assert_int_equal(h.n_cl, 256);
    assert_int_equal(h.n_te, 256);
}

/* url_len and lines grow as the bytes come, so limits are applied before the head is whole. */
static void test_h1parse_counts_target_and_lines_as_they_come(void **state)
{
    struct pf_h1p_scan s;
    size_t used;

    (void)state;
    pf_h1p_scan_init(&s);
    assert_int_equal(pf_h1p_scan_request(&s, "GET /abc", 8, &used), PF_H1P_MORE);
    assert_int_equal(s.url_len, 4);
    assert_int_equal(pf_h1p_scan_request(&s, "def HTTP/1.1\r\nA: 1\r\nB", 22, &used), PF_H1P_MORE);
    assert_int_equal(s.url_len, 7);
    assert_int_equal(s.lines, 2);
    assert_int_equal(s.method, HTTP_GET);
}

/* An unknown method is refused as soon as it ends, before any target byte. */
static void test_h1parse_refuses_a_method_at_once(void **state)
{
    struct pf_h1p_scan s;
    size_t used;

    (void)state;
    pf_h1p_scan_init(&s);
    assert_int_equal(pf_h1p_scan_request(&s, "GETX ", 5, &used), 400);
    pf_h1p_scan_init(&s);
    assert_int_equal(pf_h1p_scan_request(&s, "G@", 2, &used), 400);
}

/* Every method http-parser knows reads back as its enum and its name. */
static void test_h1parse_knows_every_method(void **state)
{
    static struct result r;
    char in[64];

    (void)state;
    for (int m = 0; m <= HTTP_SOURCE; m++) {
        snprintf(in, sizeof(in), "%s / HTTP/1.1\r\n\r\n", http_method_str((enum http_method)m));
        parse_ok(&r, in);
        assert_int_equal(r.scan.method, m);
        assert_string_equal(pf_h1p_method_name(m), http_method_str((enum http_method)m));
    }
}

/* Only HT, SP, visible ASCII and obs-text in a value; tchar only in a name. */
static void test_h1parse_each_byte_in_name_and_value(void **state)
{
    static const char tchars[] = "!#$%&'*+-.^_`|~";
    static struct result r;

    (void)state;
    for (unsigned b = 0; b < 256; b++) {
        char in[64];
        int n = snprintf(in, sizeof(in), "GET / HTTP/1.1\r\nX: a%cb\r\n\r\n", 'Z');
        bool value_ok = b == '\t' || (b >= 0x20 && b != 0x7f);
        bool name_ok = (b >= '0' && b <= '9') || ((b | 0x20) >= 'a' && (b | 0x20) <= 'z') ||
                       (b != 0 && strchr(tchars, (int)b) != NULL) ||
                       b == ':'; /* "X:: v": the value is ": v" */

        if (b == '\r' || b == '\n')
            continue; /* line structure: the table's cases */
        in[20] = (char)b;
        run(&r, in, (size_t)n, 0, (size_t)n);
        assert_int_equal(r.scan_rc, PF_H1P_DONE);
        assert_int_equal(r.parse_rc, value_ok ? 0 : 400);
        n = snprintf(in, sizeof(in), "GET / HTTP/1.1\r\nXZ: v\r\n\r\n");
        in[17] = (char)b;
        run(&r, in, (size_t)n, 0, (size_t)n);
        assert_int_equal(r.scan_rc, PF_H1P_DONE);
        assert_int_equal(r.parse_rc, name_ok ? 0 : 400);
    }
}

/* ---- response heads ---- */

struct rresult {
    int scan_rc;
    size_t used;
    int parse_rc;
    struct pf_h1p_rscan scan;
    struct pf_h1p_resp r;
    struct pf_head_ent f[MAX_FIELDS];
    char buf[4096];
};

/* As run(), for a response head. */
static void rrun(struct rresult *x, const char *in, size_t len, size_t piece, size_t split)
{
    size_t off = 0;

    memset(x, 0, sizeof(*x));
    pf_h1p_rscan_init(&x->scan);
    x->scan_rc = PF_H1P_MORE;
    while (off < len && x->scan_rc == PF_H1P_MORE) {
        size_t n = piece > 0 ? piece : (off < split ? split : len - off);
        size_t used = 0;

        if (n > len - off)
            n = len - off;
        x->scan_rc = pf_h1p_scan_response(&x->scan, in + off, n, &used);
        if (x->scan_rc == PF_H1P_MORE)
            assert_int_equal(used, n);
        off += used;
    }
    x->used = off;
    if (x->scan_rc != PF_H1P_DONE)
        return;
    assert_true(x->scan.lines <= MAX_FIELDS);
    memcpy(x->buf, in, x->used);
    x->buf[x->used] = '\0';
    x->r.f = x->f;
    x->parse_rc = pf_h1p_parse_response(x->buf, x->used, &x->r);
}

static void rrun_all_ways(struct rresult *x, const char *in, size_t len)
{
    static struct rresult other;

    rrun(x, in, len, 0, len);
    for (size_t split = 0; split <= len; split++) {
        rrun(&other, in, len, split == 0 ? 1 : 0, split);
        assert_int_equal(other.scan_rc, x->scan_rc);
        assert_int_equal(other.parse_rc, x->parse_rc);
        if (x->scan_rc == 502)
            continue;
        assert_int_equal(other.used, x->used);
        assert_int_equal(other.r.n, x->r.n);
        assert_int_equal(other.r.status, x->r.status);
    }
}

static const struct {
    const char *what;
    const char *in;
    size_t len;
    int expect;
    int status;
    unsigned fields;
} resps[] = {
    {"simple", S("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n"), OK, 200, 1},
    {"no reason", S("HTTP/1.1 204\r\n\r\n"), OK, 204, 0},
    {"bare lf", S("HTTP/1.1 200 OK\nA: 1\nB: 2\n\n"), OK, 200, 2},
    {"crlf then lf", S("HTTP/1.1 200 OK\r\nA: 1\r\n\n"), OK, 200, 1},
    {"empty lines first", S("\r\n\nHTTP/1.1 200 OK\r\n\r\n"), OK, 200, 0},
    {"obs-fold", S("HTTP/1.1 200 OK\r\nA: 1\r\n 2\r\nB: 3\r\n\r\n"), OK, 200, 2},
    {"space before colon", S("HTTP/1.1 200 OK\r\nA : 1\r\n\r\n"), OK, 200, 1},
    {"http/1.0", S("HTTP/1.0 200 OK\r\n\r\n"), OK, 200, 0},
    {"any status digits", S("HTTP/1.1 999 X\r\n\r\n"), OK, 999, 0},
    {"unfinished", S("HTTP/1.1 200 OK\r\nA: 1\r\n"), MORE, 0, 0},
    {"bare cr at line start", S("HTTP/1.1 200 OK\r\n\rA: 1\r\n\r\n"), BAD_SCAN, 0, 0},
    {"bare cr in value", S("HTTP/1.1 200 OK\r\nA: 1\r2\r\n\r\n"), BAD_PARSE, 0, 0},
    {"bare cr in reason", S("HTTP/1.1 200 O\rK\r\n\r\n"), BAD_PARSE, 0, 0},
    {"four status digits", S("HTTP/1.1 2000 OK\r\n\r\n"), BAD_PARSE, 0, 0},
    {"no status", S("HTTP/1.1 OK\r\n\r\n"), BAD_PARSE, 0, 0},
    {"not http", S("HXYZ/1.1 200 OK\r\n\r\n"), BAD_PARSE, 0, 0},
    {"lower-case http", S("http/1.1 200 OK\r\n\r\n"), BAD_PARSE, 0, 0},
    {"fold after status line", S("HTTP/1.1 200 OK\r\n A: 1\r\n\r\n"), BAD_PARSE, 0, 0},
    {"space in name", S("HTTP/1.1 200 OK\r\nA B: 1\r\n\r\n"), BAD_PARSE, 0, 0},
    {"no colon", S("HTTP/1.1 200 OK\r\nA\r\n\r\n"), BAD_PARSE, 0, 0},
    {"nul as the value", S("HTTP/1.1 200 OK\r\nA: \0\r\n\r\n"), BAD_PARSE, 0, 0},
    {"del in value", S("HTTP/1.1 200 OK\r\nA: a\x7f\r\n\r\n"), BAD_PARSE, 0, 0},
    {"two lengths", S("HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\n"),
     BAD_PARSE, 0, 0},
    {"length list", S("HTTP/1.1 200 OK\r\nContent-Length: 1, 1\r\n\r\n"), BAD_PARSE, 0, 0},
    {"empty length", S("HTTP/1.1 200 OK\r\nContent-Length:\r\n\r\n"), BAD_PARSE, 0, 0},
    {"length and chunked",
     S("HTTP/1.1 200 OK\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n"), BAD_PARSE, 0,
     0},
};

static void test_h1parse_response_table_any_cut(void **state)
{
    static struct rresult x;

    (void)state;
    for (unsigned i = 0; i < sizeof(resps) / sizeof(resps[0]); i++) {
        print_message("case: %s\n", resps[i].what);
        rrun_all_ways(&x, resps[i].in, resps[i].len);
        switch (resps[i].expect) {
        case OK:
            assert_int_equal(x.scan_rc, PF_H1P_DONE);
            assert_int_equal(x.used, resps[i].len);
            assert_int_equal(x.parse_rc, 0);
            assert_int_equal(x.r.status, resps[i].status);
            assert_int_equal(x.r.n, resps[i].fields);
            break;
        case MORE:
            assert_int_equal(x.scan_rc, PF_H1P_MORE);
            break;
        case BAD_SCAN:
            assert_int_equal(x.scan_rc, 502);
            break;
        default:
            assert_int_equal(x.scan_rc, PF_H1P_DONE);
            assert_int_equal(x.parse_rc, 502);
        }
    }
}

static void assert_rfield(const struct rresult *x, unsigned i, const char *name, const char *value,
                          enum pf_hdr_id id)
{
    assert_true(i < x->r.n);
    assert_string_equal(x->buf + x->f[i].name_off, name);
    assert_int_equal(x->f[i].name_len, strlen(name));
    assert_string_equal(x->buf + x->f[i].value_off, value);
    assert_int_equal(x->f[i].value_len, strlen(value));
    assert_int_equal(x->f[i].id, id);
}

/* Every byte at every place of a 9-byte name and value: the scans stop at it, wherever it is. */
static void test_h1parse_response_each_byte_at_each_place(void **state)
{
    static const char tchars[] = "!#$%&'*+-.^_`|~";
    static struct rresult x;

    (void)state;
    for (unsigned b = 0; b < 256; b++) {
        bool tchar = (b >= '0' && b <= '9') || ((b | 0x20) >= 'a' && (b | 0x20) <= 'z') ||
                     (b != 0 && strchr(tchars, (int)b) != NULL);
        bool value_ok = b == '\t' || (b >= 0x20 && b != 0x7f);

        if (b == '\r' || b == '\n')
            continue; /* line structure: the table's cases */
        for (unsigned k = 0; k < 9; k++) {
            char in[64];
            int n = snprintf(in, sizeof(in), "HTTP/1.1 200 OK\r\nABCDEFGHI: v\r\n\r\n");

            in[17 + k] = (char)b;
            rrun(&x, in, (size_t)n, 0, (size_t)n);
            if (x.scan_rc != PF_H1P_DONE) {
                assert_true(k == 0 && (b == ' ' || b == '\t')); /* a fold: the scan refuses */
                continue;
            }
            /* ':' ends the name early; whitespace may only come right before the colon */
            assert_int_equal(
                x.parse_rc,
                tchar || (b == ':' && k > 0) || (k == 8 && (b == ' ' || b == '\t')) ? 0 : 502);
            if (tchar)
                assert_int_equal(x.f[0].name_len, 9);
            n = snprintf(in, sizeof(in), "HTTP/1.1 200 OK\r\nV: abcdefghi\r\n\r\n");
            in[20 + k] = (char)b;
            rrun(&x, in, (size_t)n, 0, (size_t)n);
            assert_int_equal(x.scan_rc, PF_H1P_DONE);
            assert_int_equal(x.parse_rc, value_ok ? 0 : 502);
            if (value_ok && b != ' ' && b != '\t')
                assert_int_equal(x.f[0].value_len, 9);
        }
    }
}

static void test_h1parse_response_fields_and_framing(void **state)
{
    static const char in[] = "HTTP/1.0 404 Not Found\r\nX-A : one \r\n\t two\r\n"
                             "connection: keep-alive\r\ncontent-length: 12 \r\nX-B:\r\n\r\n";
    static struct rresult x;

    (void)state;
    rrun_all_ways(&x, in, sizeof(in) - 1);
    assert_int_equal(x.parse_rc, 0);
    assert_int_equal(x.r.major, 1);
    assert_int_equal(x.r.minor, 0);
    assert_int_equal(x.r.status, 404);
    assert_int_equal(x.r.n, 4);
    assert_rfield(&x, 0, "X-A", "one \t two", PF_H_OTHER); /* the fold's line break removed */
    assert_rfield(&x, 1, "connection", "keep-alive", PF_H_CONNECTION);
    assert_rfield(&x, 2, "content-length", "12", PF_H_CONTENT_LENGTH);
    assert_rfield(&x, 3, "X-B", "", PF_H_OTHER);
    assert_true(x.r.has_length);
    assert_int_equal(x.r.length, 12);
    assert_true(x.r.conn_keepalive);
    assert_false(x.r.conn_close);
    assert_false(x.r.has_te);
}

static void test_h1parse_response_transfer_encoding(void **state)
{
    static const struct {
        const char *te;
        bool chunked;
    } cases[] = {
        {"chunked", true},        {"Chunked ", true}, {"gzip, chunked", true},
        {"chunked, gzip", false}, {"gzip", false},    {"", false},
    };
    static struct rresult x;
    char in[128];

    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        int n = snprintf(in, sizeof(in), "HTTP/1.1 200 OK\r\nTransfer-Encoding: %s\r\n\r\n",
                         cases[i].te);

        rrun(&x, in, (size_t)n, 0, (size_t)n);
        assert_int_equal(x.parse_rc, 0);
        assert_true(x.r.has_te);
        assert_true(x.r.chunked == cases[i].chunked);
    }
}

/* ---- mutated heads ---- */

static const char *const mutate_seeds[] = {
    "GET /a?b=c HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nX: y\r\n\r\n",
    "\r\nPOST http://h/x HTTP/1.0\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
    "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX: one\r\n two\r\n\r\n",
    "HTTP/1.0 404 Not Found\nTransfer-Encoding: gzip, chunked\nA : b\n\n",
};

static const char mutate_bytes[] = {'\r', '\n', ' ', '\t', ':', '\0', 0x7f, (char)0x80, 'A', '_'};

/* A small deterministic generator: the same cases on every run. */
static uint32_t lcg(uint32_t *x)
{
    *x = *x * 1103515245u + 12345u;
    return *x >> 8;
}

/* Overwrite, insert or delete a few bytes of the seed into out; returns its length. */
static size_t mutate(uint32_t *x, const char *seed, char *out, size_t cap)
{
    size_t n = strlen(seed);

    memcpy(out, seed, n);
    for (uint32_t k = lcg(x) % 4 + 1; k > 0; k--) {
        size_t at = lcg(x) % (n + 1);
        char b = mutate_bytes[lcg(x) % sizeof(mutate_bytes)];

        switch (lcg(x) % 3) {
        case 0:
            if (at < n)
                out[at] = b;
            break;
        case 1:
            if (n < cap) {
                memmove(out + at + 1, out + at, n - at);
                out[at] = b;
                n++;
            }
            break;
        default:
            if (at < n) {
                memmove(out + at, out + at + 1, n - at - 1);
                n--;
            }
        }
    }
    return n;
}

/* Mutated heads: never a crash (the sanitizer build checks memory), and the same answer whole or
 * byte by byte. */
static void test_h1parse_mutated_heads_same_answer_any_cut(void **state)
{
    static struct result a, b;
    static struct rresult ra, rb;
    char in[256];
    uint32_t x = 20261203;

    (void)state;
    for (int i = 0; i < 3000; i++) {
        unsigned which = lcg(&x) % 4;
        size_t n = mutate(&x, mutate_seeds[which], in, sizeof(in));

        if (which < 2) {
            run(&a, in, n, 0, n);
            run(&b, in, n, 1, 0);
            assert_int_equal(a.scan_rc, b.scan_rc);
            assert_int_equal(a.parse_rc, b.parse_rc);
        } else {
            rrun(&ra, in, n, 0, n);
            rrun(&rb, in, n, 1, 0);
            assert_int_equal(ra.scan_rc, rb.scan_rc);
            assert_int_equal(ra.parse_rc, rb.parse_rc);
        }
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_h1parse_table_any_cut),
        cmocka_unit_test(test_h1parse_cuts_trims_and_classifies_fields),
        cmocka_unit_test(test_h1parse_notes_framing_fields),
        cmocka_unit_test(test_h1parse_stops_at_the_end_of_the_head),
        cmocka_unit_test(test_h1parse_counts_many_framing_fields_exactly),
        cmocka_unit_test(test_h1parse_counts_target_and_lines_as_they_come),
        cmocka_unit_test(test_h1parse_refuses_a_method_at_once),
        cmocka_unit_test(test_h1parse_knows_every_method),
        cmocka_unit_test(test_h1parse_each_byte_in_name_and_value),
        cmocka_unit_test(test_h1parse_response_table_any_cut),
        cmocka_unit_test(test_h1parse_response_each_byte_at_each_place),
        cmocka_unit_test(test_h1parse_response_fields_and_framing),
        cmocka_unit_test(test_h1parse_response_transfer_encoding),
        cmocka_unit_test(test_h1parse_mutated_heads_same_answer_any_cut),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
