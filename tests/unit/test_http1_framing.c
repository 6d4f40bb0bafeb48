/*
 * Unit tests of proxy/http1.c: framing and syntax violations, request bodies,
 * Host and request-target checks, driven through the engine over a socketpair
 * (http1_fx.h). The rest of the engine is tested in test_http1.c.
 */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cmocka.h>
#include <event2/buffer.h>
#include <event2/event.h>

#include "proxy/arena.h"
#include "proxy/core.h"
#include "proxy/filter.h"
#include "proxy/http1.h"
#include "proxy/server.h"

#include "http1_fx.h"

/*
 * Request bodies: the admin API reads a request's body before it answers (a
 * route's filters never see it), so admin connections show where the engine
 * thinks each body ends: the next pipelined request must be answered.
 */
static void assert_admin_404s(unsigned n, bool closed)
{
    struct resp r[8];

    assert_int_equal(responses(r, 8), n);
    for (unsigned i = 0; i < n; i++) {
        assert_int_equal(r[i].status, 404);
        assert_non_null(strstr(r[i].head, "\r\nX-Pilotfish-Error: not_found\r\n"));
    }
    assert_int_equal(cx.eof, closed);
}

/* ---- framing violations ---- */

static const struct {
    const char *what;
    const char *req;
} bad_requests[] = {
    {"content length with transfer encoding", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n"
                                              "Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n"},
    {"transfer encoding with content length",
     "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n"
     "Content-Length: 5\r\n\r\n0\r\n\r\n"},
    {"two content lengths", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n"
                            "Content-Length: 3\r\n\r\nabc"},
    {"content length list", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3, 3\r\n\r\nabc"},
    {"signed content length", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +3\r\n\r\nabc"},
    {"transfer encoding other than chunked",
     "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"},
    {"transfer encoding identity",
     "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: identity\r\n\r\n"},
    {"two transfer encodings", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n"
                               "Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n"},
    {"space before colon", "GET / HTTP/1.1\r\nHost: a\r\nX-Test : v\r\n\r\n"},
    {"space before colon in content length",
     "POST / HTTP/1.1\r\nHost: a\r\nContent-Length : 5\r\n\r\n"
     "GET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n"},
    {"space before colon in transfer encoding",
     "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding : chunked\r\n\r\n"
     "0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n"},
    {"tab before colon", "GET / HTTP/1.1\r\nHost: a\r\nX-Test\t: v\r\n\r\n"},
    {"whitespace before first header", "GET / HTTP/1.1\r\n Host: a\r\n\r\n"},
    {"obs fold", "GET / HTTP/1.1\r\nHost: a\r\nX-Test: one\r\n two\r\n\r\n"},
    {"obs fold with tab", "GET / HTTP/1.1\r\nHost: a\r\nX-Test: one\r\n\ttwo\r\n\r\n"},
    {"bare lf", "GET / HTTP/1.1\nHost: a\n\n"},
    {"bare lf after headers", "GET / HTTP/1.1\r\nHost: a\r\n\n"},
    {"bare cr", "GET / HTTP/1.1\r\nHost: a\r\nX-Test: a\rb\r\n\r\n"},
    {"missing host in http11", "GET / HTTP/1.1\r\nX-Test: a\r\n\r\n"},
    {"two hosts", "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"},
    {"garbage request line", "HELLO\r\n\r\n"},
};

/* Framing and syntax violations: each refused with 400 on a fresh connection. */
static void test_http1_rejects_bad_requests(void **state)
{
    (void)state;
    for (unsigned i = 0; i < sizeof(bad_requests) / sizeof(bad_requests[0]); i++) {
        print_message("case: %s\n", bad_requests[i].what);
        cx.w.errors[PF_ERR_BAD_REQUEST] = 0;
        assert_bad_request(bad_requests[i].req);
        conn_drop();
    }
}

static void test_http1_accepts_chunked_transfer_encoding(void **state)
{
    struct resp r;

    (void)state;
    conn_open(false);
    send_str("POST /up HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: Chunked\r\n\r\n");
    /* answered before the body was read: the connection cannot be reused */
    r = one_response(200, true);
    assert_string_equal(r.body, "POST /up host=a x=[-] e=-\n");
}

static void test_http1_rejects_nul_in_header_value(void **state)
{
    static const char req[] = "GET / HTTP/1.1\r\nHost: a\r\nX-Test: a\0b\r\n\r\n";

    (void)state;
    conn_open(false);
    send_bytes(req, sizeof(req) - 1);
    assert_error_response(400, "bad_request");
}

static void test_http1_ignores_empty_line_before_request_line(void **state)
{
    struct resp r;

    (void)state;
    conn_open(false);
    send_str("\r\nGET /after-crlf HTTP/1.1\r\nHost: a\r\n\r\n");
    r = one_response(200, false);
    assert_string_equal(r.body, "GET /after-crlf host=a x=[-] e=-\n");
}

static void test_http1_rejects_bare_lf_split_across_reads(void **state)
{
    (void)state;
    conn_open(false);
    send_pieces("GET / HTTP/1.1\r\nHost: a\r", "\r\n\r\n", NULL);
    assert_error_response(400, "bad_request");
}

static void test_http1_stops_at_bad_request_in_pipeline(void **state)
{
    struct resp r[4];

    (void)state;
    conn_open(false);
    send_str("GET /ok HTTP/1.1\r\nHost: a\r\n\r\n"
             "GET /bad HTTP/1.1\r\nHost: a\r\nX-Test: a\r\n b\r\n\r\n"
             "GET /never HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_int_equal(responses(r, 4), 2);
    assert_int_equal(r[0].status, 200);
    assert_int_equal(r[1].status, 400);
    assert_true(cx.eof);
    /* "GET /never" is unread: the server lingers until the client is done */
    assert_int_equal(cx.w.n_conns, 1);
    client_done();
    assert_int_equal(cx.w.n_conns, 0);
}

static void test_http1_rejects_connect_with_405(void **state)
{
    (void)state;
    conn_open(false);
    send_str("CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n");
    one_response(405, true);
}

static void test_http1_rejects_unknown_expectation_with_417(void **state)
{
    (void)state;
    conn_open(false);
    send_str("POST / HTTP/1.1\r\nHost: a\r\nExpect: 200-ok\r\nContent-Length: 1\r\n\r\nx");
    one_response(417, true);
}

static void test_http1_expect_continue_answered_before_body_is_read(void **state)
{
    struct resp r;

    (void)state;
    conn_open(false);
    send_str("POST /e HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\n");
    /* the filter answered without the body: no 100, a final answer, then close */
    assert_null(strstr(cx.in, "100 Continue"));
    r = one_response(200, true);
    assert_string_equal(r.body, "POST /e host=a x=[-] e=-\n");
}

static void test_http1_content_length_body_ends_where_it_says(void **state)
{
    (void)state;
    conn_open(true);
    /* the body looks like a request: it must not be parsed as one */
    send_str("POST /a HTTP/1.1\r\nHost: a\r\nContent-Length: 35\r\n\r\n"
             "GET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n"
             "GET /b HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_admin_404s(2, false);
    assert_int_equal(cx.w.requests, 2);
}

static void test_http1_content_length_body_in_pieces(void **state)
{
    (void)state;
    conn_open(true);
    send_pieces("POST /a HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\n01", "234", "5678", NULL);
    assert_int_equal(cx.in_len, 0); /* one byte still to come */
    send_str("9GET /b HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_admin_404s(2, false);
}

static void test_http1_chunked_body_ends_after_last_chunk_and_trailers(void **state)
{
    (void)state;
    conn_open(true);
    send_pieces("POST /a HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhe", "llo\r",
                "\nA;ext=1\r\n0123456789\r\n0\r\nX-Trailer: v\r\n",
                "\r\nGET /b HTTP/1.1\r\nHost: a\r\n\r\n", NULL);
    assert_admin_404s(2, false);
}

static void test_http1_chunked_body_byte_by_byte(void **state)
{
    const char *body = "3\r\nabc\r\n10\r\n0123456789abcdef\r\n0\r\n\r\n";
    char c[2] = {0};

    (void)state;
    conn_open(true);
    send_str("POST /a HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n");
    for (size_t i = 0; body[i] != '\0'; i++) {
        c[0] = body[i];
        send_str(c);
    }
    send_str("GET /b HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_admin_404s(2, false);
}

static void assert_bad_chunked(const char *body)
{
    char req[512];

    snprintf(req, sizeof(req),
             "POST /a HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n%s", body);
    conn_open(true);
    send_str(req);
    assert_error_response(400, "bad_request");
    conn_drop();
}

static void test_http1_rejects_bad_chunked_framing(void **state)
{
    (void)state;
    assert_bad_chunked("5\r\nhelloX0\r\n\r\n");                /* no CRLF after data */
    assert_bad_chunked("5\r\nhello\n0\r\n\r\n");               /* bare LF after data */
    assert_bad_chunked("z\r\nhello\r\n0\r\n\r\n");             /* size not hex */
    assert_bad_chunked("\r\nhello\r\n0\r\n\r\n");              /* no size */
    assert_bad_chunked("-5\r\nhello\r\n0\r\n\r\n");            /* signed */
    assert_bad_chunked("10000000000000000\r\nx\r\n0\r\n\r\n"); /* 2^64: overflow */
    assert_bad_chunked("5 \r\nhello\r\n0\r\n\r\n");            /* space, no extension */
    assert_bad_chunked("5\nhello\r\n0\r\n\r\n");               /* bare LF after size */
}

static void test_http1_chunk_size_accepts_whitespace_before_extension(void **state)
{
    static const char *const ok[] = {"5 ;ext\r\n", "5\t;ext=1\r\n", "5 \t ;ext\r\n"};

    (void)state;
    for (unsigned i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
        char req[256];

        /* BWS before ';' (RFC 9112 §7.1.1), then the pipelined request still parses */
        snprintf(req, sizeof(req),
                 "POST /a HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
                 "%shello\r\n0 ;last\r\n\r\nGET /b HTTP/1.1\r\nHost: a\r\n\r\n",
                 ok[i]);
        conn_open(true);
        send_str(req);
        assert_admin_404s(2, false);
        conn_drop();
    }
}

static void test_http1_chunk_size_whitespace_without_extension_is_refused(void **state)
{
    (void)state;
    assert_bad_chunked("5 5\r\nhello\r\n0\r\n\r\n");   /* whitespace inside the size */
    assert_bad_chunked("5 x;a\r\nhello\r\n0\r\n\r\n"); /* not ';' after whitespace */
    assert_bad_chunked("5\t\r\nhello\r\n0\r\n\r\n");   /* tab, no extension */
    assert_bad_chunked(" 5\r\nhello\r\n0\r\n\r\n");    /* whitespace before the size */
}

static void test_http1_http10_transfer_encoding_closes_after_response(void **state)
{
    (void)state;
    conn_open(true);
    /* RFC 9112 §6.1: served, then closed, whatever Connection says */
    send_str("POST /a HTTP/1.0\r\nConnection: keep-alive\r\nTransfer-Encoding: chunked\r\n\r\n"
             "5\r\nhello\r\n0\r\n\r\nGET /b HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_admin_404s(1, true);
    assert_int_equal(cx.w.requests, 1);
}

static void test_http1_replies_413_when_chunked_body_over_limit(void **state)
{
    (void)state;
    cx.cfg.limits.max_body_size = 8;
    conn_open(true);
    send_str("POST /a HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
             "5\r\nhello\r\n5\r\nworld\r\n0\r\n\r\n");
    assert_error_response(413, "body_too_large");
}

static void test_http1_rejects_invalid_host(void **state)
{
    static const char *const bad[] = {
        "a b",  "a/b@c",  "\xff",   "user@host", "user:pw@host", "host:80x",   "host:123456",
        "[::1", "[::1]x", "[g::1]", "a%zz",      "a\\b",         "host:80:81", ":80",
    };

    (void)state;
    for (unsigned i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        char req[256];

        snprintf(req, sizeof(req), "GET / HTTP/1.1\r\nHost: %s\r\n\r\n", bad[i]);
        cx.w.errors[PF_ERR_BAD_REQUEST] = 0;
        assert_bad_request(req);
        conn_drop();
    }
    /* the authority of an absolute-form target, likewise */
    cx.w.errors[PF_ERR_BAD_REQUEST] = 0;
    assert_bad_request("GET http://a b/x HTTP/1.1\r\nHost: a\r\n\r\n");
    conn_drop();
    cx.w.errors[PF_ERR_BAD_REQUEST] = 0;
    assert_bad_request("GET http://:80/x HTTP/1.1\r\nHost: a\r\n\r\n");
    conn_drop();
    /* a percent-escape in a host: matched as written, an upstream may decode it */
    cx.w.errors[PF_ERR_BAD_REQUEST] = 0;
    assert_bad_request("GET / HTTP/1.1\r\nHost: b%2Eexample\r\n\r\n");
    conn_drop();
    cx.w.errors[PF_ERR_BAD_REQUEST] = 0;
    assert_bad_request("GET http://b%2Eexample/x HTTP/1.1\r\nHost: a\r\n\r\n");
}

static void test_http1_host_syntax(void **state)
{
    static const struct {
        const char *host;
        bool ok;
    } cases[] = {
        {"", true},
        {"example.com", true},
        {"Example.COM:8080", true},
        {"127.0.0.1", true},
        {"127.0.0.1:", true},
        {"[::1]:80", true},
        {"[v1.x:y]", true},
        {"a%41b", false},
        {"a-b_c~d!$&'()*+,;=", true},
        {"b%2Eexample", false},
        {"a b", false},
        {"a/b", false},
        {"u@h", false},
        {"\x80", false},
        {"h:8o", false},
        {"[::1", false},
        {"[]", false},
        {"h:123456", false},
        {"a%4", false},
        {":80", false},
        {":", false},
    };

    (void)state;
    for (unsigned i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        if (pf_http_host_valid(cases[i].host, strlen(cases[i].host)) != cases[i].ok)
            fail_msg("host '%s': expected %s", cases[i].host, cases[i].ok ? "valid" : "invalid");
    }
}

/* Every byte value in a request-target: visible ASCII but '#'; '%' only as an escape. */
static void test_http1_target_valid_each_byte(void **state)
{
    (void)state;
    for (unsigned b = 0; b < 256; b++) {
        char t[5] = {'/', (char)b, 'x', 0, 0};
        bool want = b > 0x20 && b < 0x7f && b != '#' && b != '%';

        if (pf_http_target_valid(t, 3) != want)
            fail_msg("byte 0x%02x: expected %s", b, want ? "valid" : "invalid");
    }
    for (unsigned b = 0; b < 256; b++) {
        bool want = b > 0x20 && b < 0x7f && b != '#' && b != '%';

        for (unsigned k = 1; k < 10; k++) { /* every place of a 10-byte target (4-byte rounds) */
            char t[11] = "/ghijklmno";      /* no hex digits: a '%' is no escape */

            t[k] = (char)b;
            if (pf_http_target_valid(t, 10) != want)
                fail_msg("byte 0x%02x at %u: expected %s", b, k, want ? "valid" : "invalid");
        }
    }
    for (unsigned k = 1; k < 8; k++) { /* an escape at every place, and one cut short */
        char t[11] = "/ghijklmno";

        memcpy(t + k, "%41", 3);
        assert_true(pf_http_target_valid(t, 10));
        assert_false(pf_http_target_valid(t, k + 2));
    }
    assert_true(pf_http_target_valid("/%41%2f", 7));
    assert_false(pf_http_target_valid("/%4", 3));
    assert_false(pf_http_target_valid("/%g1", 4));
}

static void test_http1_rejects_invalid_target_bytes(void **state)
{
    static const char *const bad[] = {
        "/a\tb",  "/a\fb", "/a\xff", "/a\x01", "/a\x7f", "/a#frag",
        "/a?x#f", "/a%",   "/a%zz",  "/a%4",   "a/b",    "*",
    };

    (void)state;
    for (unsigned i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        char req[256];

        snprintf(req, sizeof(req), "GET %s HTTP/1.1\r\nHost: a\r\n\r\n", bad[i]);
        cx.w.errors[PF_ERR_BAD_REQUEST] = 0;
        assert_bad_request(req);
        conn_drop();
    }
}

static void test_http1_accepts_valid_targets(void **state)
{
    static const char *const ok[] = {"/a%20b?q=%7Cx", "/a|b{c}\"d\"", "/~u/!$&'()*+,;=:@"};
    struct resp r;
    char req[256], want[256];

    (void)state;
    for (unsigned i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
        snprintf(req, sizeof(req), "GET %s HTTP/1.1\r\nHost: a\r\n\r\n", ok[i]);
        conn_open(false);
        send_str(req);
        r = one_response(200, false);
        snprintf(want, sizeof(want), "GET %s host=a x=[-] e=-\n", ok[i]);
        assert_string_equal(r.body, want);
        conn_drop();
    }
    conn_open(false);
    send_str("OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n");
    r = one_response(200, false);
}

/* RFC 9112 §3.2.4: OPTIONS to an authority without path or query is "OPTIONS *" */
static void test_http1_absolute_form_without_path(void **state)
{
    static const struct {
        const char *line;
        const char *want;
    } cases[] = {
        {"OPTIONS http://a HTTP/1.1", "OPTIONS * host=x x=[-] e=-\n"},
        {"OPTIONS http://a:8080 HTTP/1.1", "OPTIONS * host=x x=[-] e=-\n"},
        {"OPTIONS http://a?q HTTP/1.1", "OPTIONS /?q host=x x=[-] e=-\n"},
        {"OPTIONS http://a/ HTTP/1.1", "OPTIONS / host=x x=[-] e=-\n"},
        {"GET http://a HTTP/1.1", "GET / host=x x=[-] e=-\n"},
    };
    struct resp r;
    char req[256];

    (void)state;
    for (unsigned i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        snprintf(req, sizeof(req), "%s\r\nHost: x\r\n\r\n", cases[i].line);
        conn_open(false);
        send_str(req);
        r = one_response(200, false);
        assert_string_equal(r.body, cases[i].want);
        conn_drop();
    }
}

static void test_http1_underscore_names_rejected_when_told(void **state)
{
    (void)state;
    cx.cfg.underscores = PF_UNDERSCORES_REJECT;
    assert_bad_request("POST / HTTP/1.1\r\nHost: a\r\nContent_Length: 5\r\n\r\nhello");
}

static void test_http1_rejects_bad_http_version(void **state)
{
    (void)state;
    assert_bad_request("GET / HTXP/1.1\r\nHost: a\r\n\r\n");
    conn_drop();
    cx.w.errors[PF_ERR_BAD_REQUEST] = 0;
    assert_bad_request("GET / HTTP/1.2\r\nHost: a\r\n\r\n");
    conn_drop();
    cx.w.errors[PF_ERR_BAD_REQUEST] = 0;
    assert_bad_request("GET / HTTP/2.0\r\nHost: a\r\n\r\n");
}

int main(void)
{
#define C(f) cmocka_unit_test_setup_teardown(f, conn_setup, conn_teardown)
    const struct CMUnitTest tests[] = {
        C(test_http1_rejects_bad_requests),
        C(test_http1_accepts_chunked_transfer_encoding),
        C(test_http1_rejects_nul_in_header_value),
        C(test_http1_ignores_empty_line_before_request_line),
        C(test_http1_rejects_bare_lf_split_across_reads),
        C(test_http1_stops_at_bad_request_in_pipeline),
        C(test_http1_rejects_connect_with_405),
        C(test_http1_rejects_unknown_expectation_with_417),
        C(test_http1_expect_continue_answered_before_body_is_read),
        C(test_http1_content_length_body_ends_where_it_says),
        C(test_http1_content_length_body_in_pieces),
        C(test_http1_chunked_body_ends_after_last_chunk_and_trailers),
        C(test_http1_chunked_body_byte_by_byte),
        C(test_http1_rejects_bad_chunked_framing),
        C(test_http1_chunk_size_accepts_whitespace_before_extension),
        C(test_http1_chunk_size_whitespace_without_extension_is_refused),
        C(test_http1_http10_transfer_encoding_closes_after_response),
        C(test_http1_replies_413_when_chunked_body_over_limit),
        C(test_http1_rejects_invalid_host),
        cmocka_unit_test(test_http1_host_syntax),
        cmocka_unit_test(test_http1_target_valid_each_byte),
        C(test_http1_rejects_invalid_target_bytes),
        C(test_http1_accepts_valid_targets),
        C(test_http1_absolute_form_without_path),
        C(test_http1_underscore_names_rejected_when_told),
        C(test_http1_rejects_bad_http_version),
    };
#undef C

    if (getenv("TEST_FILTER") != NULL)
        cmocka_set_test_filter(getenv("TEST_FILTER"));
    return cmocka_run_group_tests_name("http1_framing", tests, NULL, NULL);
}
