/*
 * Unit tests of proxy/http1.c.
 *
 * The head helpers (pf_head_*, pf_http_*) are tested through the .h. The
 * request engine (head scanner, framing checks, limits, pipelining) is
 * driven end to end without the network: a real struct pf_conn is accepted
 * on one end of an AF_UNIX socketpair, on a worker built by hand whose only
 * route runs a test filter that answers every request itself (so no upstream
 * is ever needed). The test writes request bytes on the other end, in pieces,
 * runs the event loop without blocking and reads what came back.
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

/* The `what` values of pf_head_append (private to http1.c; h1client.c uses 2 and 3 too). */
enum {
    HEAD_URL = 1,
    HEAD_FIELD = 2,
    HEAD_VALUE = 3,
};

#define BIG 65536

/* ---- pf_head_append / pf_head_export ---- */

struct head_fx {
    struct pf_head h;
    struct pf_arena *a;
    struct pf_hdrs out;
    const char *url;
};

static void head_put_pieces(struct pf_head *h, int what, const char *s, size_t piece)
{
    size_t n = strlen(s);

    for (size_t i = 0; i < n; i += piece) {
        size_t len = n - i < piece ? n - i : piece;

        assert_int_equal(pf_head_append(h, what, s + i, len, 1 << 20, 1000), 0);
    }
}

static void head_export(struct head_fx *f)
{
    memset(&f->out, 0, sizeof(f->out));
    f->url = NULL;
    pf_head_export(&f->h, f->a, &f->out, &f->url);
}

static void assert_hdr(const struct pf_hdrs *o, unsigned i, const char *name, const char *value)
{
    assert_true(i < o->n);
    assert_string_equal(o->v[i].name, name);
    assert_int_equal(o->v[i].name_len, strlen(name));
    assert_string_equal(o->v[i].value, value);
    assert_int_equal(o->v[i].value_len, strlen(value)); /* NUL right after the value */
}

static void test_http1_head_assembles_pieces_split_anywhere(void **state)
{
    struct head_fx f = {.a = pf_arena_new(8192)};

    (void)state;
    /* every piece of 1, then 3 bytes: the parser may cut anywhere */
    for (size_t piece = 1; piece <= 3; piece += 2) {
        pf_head_reset(&f.h);
        head_put_pieces(&f.h, HEAD_URL, "/a/b?c=1&d=%20", piece);
        head_put_pieces(&f.h, HEAD_FIELD, "Host", piece);
        head_put_pieces(&f.h, HEAD_VALUE, "example.com", piece);
        head_put_pieces(&f.h, HEAD_FIELD, "X-Trailing", piece);
        head_put_pieces(&f.h, HEAD_VALUE, "v \t  ", piece);
        head_put_pieces(&f.h, HEAD_FIELD, "Accept", piece);
        head_put_pieces(&f.h, HEAD_VALUE, "a b", piece);
        head_export(&f);
        assert_string_equal(f.url, "/a/b?c=1&d=%20");
        assert_int_equal(f.out.n, 3);
        assert_true(f.out.cap >= f.out.n);
        assert_hdr(&f.out, 0, "Host", "example.com");
        assert_hdr(&f.out, 1, "X-Trailing", "v"); /* trailing SP/HT trimmed */
        assert_hdr(&f.out, 2, "Accept", "a b");   /* inner space kept */
    }
    pf_head_free(&f.h);
    pf_arena_free(f.a);
}

static void test_http1_head_keeps_offsets_valid_while_growing(void **state)
{
    struct head_fx f = {.a = pf_arena_new(8192)};
    char name[32];
    char value[64];

    (void)state;
    head_put_pieces(&f.h, HEAD_URL, "/", 1);
    /* far past the first 1 KiB buffer and 16 entries */
    for (unsigned i = 0; i < 200; i++) {
        snprintf(name, sizeof(name), "X-Header-%u", i);
        snprintf(value, sizeof(value), "value-%u-%0*u", i, (int)(i % 40), 7u);
        head_put_pieces(&f.h, HEAD_FIELD, name, 1 + i % 5);
        head_put_pieces(&f.h, HEAD_VALUE, value, 1 + i % 7);
    }
    head_export(&f);
    assert_string_equal(f.url, "/");
    assert_int_equal(f.out.n, 200);
    for (unsigned i = 0; i < 200; i++) {
        snprintf(name, sizeof(name), "X-Header-%u", i);
        snprintf(value, sizeof(value), "value-%u-%0*u", i, (int)(i % 40), 7u);
        assert_hdr(&f.out, i, name, value);
    }
    pf_head_free(&f.h);
    pf_arena_free(f.a);
}

static void test_http1_head_empty_value_is_empty_string(void **state)
{
    struct head_fx f = {.a = pf_arena_new(8192)};

    (void)state;
    head_put_pieces(&f.h, HEAD_URL, "/", 1);
    head_put_pieces(&f.h, HEAD_FIELD, "X-Empty", 2);
    /* http-parser reports an empty value as a value callback of length 0 */
    assert_int_equal(pf_head_append(&f.h, HEAD_VALUE, "", 0, 4096, 10), 0);
    head_put_pieces(&f.h, HEAD_FIELD, "X-Spaces", 2);
    head_put_pieces(&f.h, HEAD_VALUE, "   ", 1);
    head_put_pieces(&f.h, HEAD_FIELD, "X-Next", 2);
    head_put_pieces(&f.h, HEAD_VALUE, "n", 1);
    head_export(&f);
    assert_int_equal(f.out.n, 3);
    assert_hdr(&f.out, 0, "X-Empty", "");
    assert_hdr(&f.out, 1, "X-Spaces", "");
    assert_hdr(&f.out, 2, "X-Next", "n");
    pf_head_free(&f.h);
    pf_arena_free(f.a);
}

static void test_http1_head_without_url_exports_headers(void **state)
{
    struct head_fx f = {.a = pf_arena_new(8192)};

    (void)state;
    /* a response head (upstream side): fields first, no url */
    head_put_pieces(&f.h, HEAD_FIELD, "Content-Length", 4);
    head_put_pieces(&f.h, HEAD_VALUE, "12", 1);
    memset(&f.out, 0, sizeof(f.out));
    pf_head_export(&f.h, f.a, &f.out, NULL);
    assert_int_equal(f.out.n, 1);
    assert_hdr(&f.out, 0, "Content-Length", "12");
    pf_head_free(&f.h);
    pf_arena_free(f.a);
}

static void test_http1_head_reset_forgets_previous_head(void **state)
{
    struct head_fx f = {.a = pf_arena_new(8192)};

    (void)state;
    head_put_pieces(&f.h, HEAD_URL, "/first", 3);
    head_put_pieces(&f.h, HEAD_FIELD, "A", 1);
    head_put_pieces(&f.h, HEAD_VALUE, "1", 1);
    pf_head_reset(&f.h);
    head_put_pieces(&f.h, HEAD_URL, "/second", 3);
    head_put_pieces(&f.h, HEAD_FIELD, "B", 1);
    head_put_pieces(&f.h, HEAD_VALUE, "2", 1);
    head_export(&f);
    assert_string_equal(f.url, "/second");
    assert_int_equal(f.out.n, 1);
    assert_hdr(&f.out, 0, "B", "2");
    pf_head_free(&f.h);
    pf_head_free(&f.h); /* free leaves it empty: freeing again is harmless */
    pf_arena_free(f.a);
}

static void test_http1_head_append_returns_minus_1_past_size_limit(void **state)
{
    struct pf_head h = {0};

    (void)state;
    assert_int_equal(pf_head_append(&h, HEAD_URL, "/0123456", 8, 16, 10), 0);
    assert_int_equal(pf_head_append(&h, HEAD_URL, "78", 2, 16, 10), 0); /* 10 bytes */
    /* the NUL closing the url counts: 11 + 5 = 16 fits, one more does not */
    assert_int_equal(pf_head_append(&h, HEAD_FIELD, "Abcde", 5, 16, 10), 0);
    assert_int_equal(pf_head_append(&h, HEAD_FIELD, "f", 1, 16, 10), -1);
    assert_int_equal(pf_head_append(&h, HEAD_VALUE, "v", 1, 16, 10), -1);
    /* the head is as before the refused pieces */
    assert_int_equal(h.len, 16);
    assert_int_equal(h.n, 1);
    assert_int_equal(h.ent[0].name_len, 5);
    pf_head_free(&h);
}

static void test_http1_head_append_returns_minus_2_past_header_count(void **state)
{
    struct pf_head h = {0};

    (void)state;
    assert_int_equal(pf_head_append(&h, HEAD_URL, "/", 1, 4096, 2), 0);
    assert_int_equal(pf_head_append(&h, HEAD_FIELD, "A", 1, 4096, 2), 0);
    assert_int_equal(pf_head_append(&h, HEAD_VALUE, "1", 1, 4096, 2), 0);
    assert_int_equal(pf_head_append(&h, HEAD_FIELD, "B", 1, 4096, 2), 0);
    /* more pieces of the second header's name are not a new header */
    assert_int_equal(pf_head_append(&h, HEAD_FIELD, "b", 1, 4096, 2), 0);
    assert_int_equal(pf_head_append(&h, HEAD_VALUE, "2", 1, 4096, 2), 0);
    assert_int_equal(pf_head_append(&h, HEAD_FIELD, "C", 1, 4096, 2), -2);
    assert_int_equal(h.n, 2);
    pf_head_free(&h);
}

/* ---- token lists and reasons ---- */

static void test_http1_list_has_finds_tokens(void **state)
{
    (void)state;
    assert_true(pf_http_list_has("close", "close"));
    assert_true(pf_http_list_has("Keep-Alive, Upgrade", "upgrade"));
    assert_true(pf_http_list_has("keep-alive,upgrade", "UPGRADE"));
    assert_true(pf_http_list_has("  a ,\tb\t, c  ", "b"));
    assert_true(pf_http_list_has("  a ,\tb\t, c  ", "c"));
    assert_true(pf_http_list_has("a,,b", "b"));
    assert_true(pf_http_list_has("gzip;q=1.0, br", "gzip"));
    assert_true(pf_http_list_has("gzip;q=1.0, br;q=0.5", "br"));
    assert_true(pf_http_list_has("gzip ; q=0.2", "gzip"));
    assert_true(pf_http_list_has("deflate, gzip, chunked", "chunked"));
}

static void test_http1_list_has_rejects_non_tokens(void **state)
{
    (void)state;
    assert_false(pf_http_list_has("", "close"));
    assert_false(pf_http_list_has(",", "close"));
    assert_false(pf_http_list_has(" , ,", "close"));
    assert_false(pf_http_list_has("closed", "close"));
    assert_false(pf_http_list_has("xclose", "close"));
    assert_false(pf_http_list_has("clo", "close"));
    assert_false(pf_http_list_has("gzip;q=1.0, br", "q=1.0"));
    assert_false(pf_http_list_has("br;gzip", "gzip")); /* a parameter, not a token */
    assert_false(pf_http_list_has("keep alive", "keep"));
    /* RFC 9110 §5.6.1: a comma inside a quoted string does not split */
    assert_false(pf_http_list_has("x=\"a, close, b\"", "close"));
    assert_false(pf_http_list_has("x=\"a\\\", close, \"", "close"));
    assert_true(pf_http_list_has("x=\"a, b\", close", "close"));
}

static void test_http1_reason_phrases(void **state)
{
    (void)state;
    assert_string_equal(pf_http_reason(100), "Continue");
    assert_string_equal(pf_http_reason(200), "OK");
    assert_string_equal(pf_http_reason(204), "No Content");
    assert_string_equal(pf_http_reason(304), "Not Modified");
    assert_string_equal(pf_http_reason(400), "Bad Request");
    assert_string_equal(pf_http_reason(404), "Not Found");
    assert_string_equal(pf_http_reason(408), "Request Timeout");
    assert_string_equal(pf_http_reason(413), "Content Too Large");
    assert_string_equal(pf_http_reason(414), "URI Too Long");
    assert_string_equal(pf_http_reason(417), "Expectation Failed");
    assert_string_equal(pf_http_reason(429), "Too Many Requests");
    assert_string_equal(pf_http_reason(431), "Request Header Fields Too Large");
    assert_string_equal(pf_http_reason(500), "Internal Server Error");
    assert_string_equal(pf_http_reason(502), "Bad Gateway");
    assert_string_equal(pf_http_reason(503), "Service Unavailable");
    assert_string_equal(pf_http_reason(504), "Gateway Timeout");
    assert_string_equal(pf_http_reason(299), "Unknown");
    assert_string_equal(pf_http_reason(0), "Unknown");
}

static void test_http1_date_is_imf_fixdate(void **state)
{
    const char *d = pf_http_date();

    (void)state;
    /* "Thu, 01 Jan 2026 00:00:00 GMT" */
    assert_int_equal(strlen(d), 29);
    assert_int_equal(d[3], ',');
    assert_string_equal(d + 25, " GMT");
    assert_int_equal(d[19], ':');
}

#include "http1_fx.h"

static void test_http1_answers_a_simple_request(void **state)
{
    struct resp r;

    (void)state;
    conn_open(false);
    send_str("GET /hello?x=1 HTTP/1.1\r\nHost: example.com\r\nX-Test: t1\r\n\r\n");
    r = one_response(200, false);
    assert_int_equal(r.minor, 1);
    assert_string_equal(r.body, "GET /hello?x=1 host=example.com x=[t1] e=-\n");
    assert_non_null(strstr(r.head, "\r\nContent-Length: 43\r\n"));
    assert_null(strstr(r.head, "Connection:")); /* HTTP/1.1 keep-alive is the default */
    assert_int_equal(cx.w.n_conns, 1);
    assert_int_equal(cx.w.requests, 1);
}

static void test_http1_parses_request_split_in_pieces(void **state)
{
    struct resp r;

    (void)state;
    conn_open(false);
    send_pieces("G", "ET /sp", "lit/pa", "th HTTP/1", ".1\r", "\nHo", "st: ex", "ample.com\r\n",
                "X-Te", "st:", " a", "b c  \r\n", "X-Empty:\r\n", "\r", "\n", NULL);
    r = one_response(200, false);
    assert_string_equal(r.body, "GET /split/path host=example.com x=[ab c] e=[]\n");
}

static void test_http1_parses_request_byte_by_byte(void **state)
{
    const char *req = "GET /bytes HTTP/1.1\r\nHost: h\r\nX-Test: one\r\n\r\n";
    char c[2] = {0};
    struct resp r;

    (void)state;
    conn_open(false);
    for (size_t i = 0; req[i] != '\0'; i++) {
        c[0] = req[i];
        send_str(c);
        if (req[i + 1] != '\0')
            assert_int_equal(cx.in_len, 0); /* nothing before the head ends */
    }
    r = one_response(200, false);
    assert_string_equal(r.body, "GET /bytes host=h x=[one] e=-\n");
}

static void test_http1_answers_pipelined_requests_in_order(void **state)
{
    struct resp r[8];

    (void)state;
    conn_open(false);
    send_str("GET /1 HTTP/1.1\r\nHost: a\r\n\r\n"
             "HEAD /2 HTTP/1.1\r\nHost: b\r\n\r\n"
             "GET /3 HTTP/1.1\r\nHost: c\r\nX-Test: 3\r\n\r\n"
             "GET /4 HTTP/1.1\r\nHost: d\r\n\r\nGET /5 HTTP/1.1\r\nHo");
    send_str("st: e\r\n\r\n");
    assert_int_equal(responses_ex(r, 8, 1u << 1), 5);
    assert_string_equal(r[0].body, "GET /1 host=a x=[-] e=-\n");
    assert_string_equal(r[1].body, ""); /* HEAD: no body, Content-Length kept */
    assert_non_null(strstr(r[1].head, "\r\nContent-Length: 25\r\n"));
    assert_string_equal(r[2].body, "GET /3 host=c x=[3] e=-\n");
    assert_string_equal(r[3].body, "GET /4 host=d x=[-] e=-\n");
    assert_string_equal(r[4].body, "GET /5 host=e x=[-] e=-\n");
    for (unsigned i = 0; i < 5; i++)
        assert_int_equal(r[i].status, 200);
    assert_false(cx.eof);
    assert_int_equal(cx.w.requests, 5);
}

static void test_http1_http10_request_gets_http10_response_and_close(void **state)
{
    struct resp r;

    (void)state;
    conn_open(false);
    send_str("GET /old HTTP/1.0\r\n\r\n"); /* no Host needed in HTTP/1.0 */
    r = one_response(200, true);
    assert_int_equal(r.minor, 0);
    assert_string_equal(r.body, "GET /old host=- x=[-] e=-\n");
}

static void test_http1_http10_keep_alive_is_honoured(void **state)
{
    struct resp r[4];

    (void)state;
    conn_open(false);
    send_str("GET /a HTTP/1.0\r\nConnection: keep-alive\r\n\r\nGET /b HTTP/1.0\r\n\r\n");
    assert_int_equal(responses(r, 4), 2);
    assert_non_null(strstr(r[0].head, "\r\nConnection: keep-alive\r\n"));
    assert_non_null(strstr(r[1].head, "\r\nConnection: close\r\n"));
    assert_true(cx.eof);
}

static void test_http1_connection_close_closes_after_response(void **state)
{
    struct resp r[4];

    (void)state;
    conn_open(false);
    send_str("GET /a HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"
             "GET /b HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_int_equal(responses(r, 4), 1); /* /b is not answered */
    assert_string_equal(r[0].body, "GET /a host=a x=[-] e=-\n");
    assert_true(cx.eof);
}

/* ---- limits ---- */

static void test_http1_replies_414_when_uri_too_long(void **state)
{
    char req[1024];
    char uri[600];

    (void)state;
    memset(uri, 'u', sizeof(uri) - 1);
    uri[0] = '/';
    uri[sizeof(uri) - 1] = '\0';
    snprintf(req, sizeof(req), "GET %s HTTP/1.1\r\nHost: a\r\n\r\n", uri);
    conn_open(false);
    send_str(req);
    assert_error_response(414, "uri_too_long");
    assert_int_equal(cx.w.errors[PF_ERR_URI_TOO_LONG], 1);
}

static void test_http1_accepts_uri_at_the_limit(void **state)
{
    char req[1024];
    char uri[513];
    struct resp r;

    (void)state;
    memset(uri, 'u', sizeof(uri) - 1);
    uri[0] = '/';
    uri[sizeof(uri) - 1] = '\0';
    snprintf(req, sizeof(req), "GET %s HTTP/1.1\r\nHost: a\r\n\r\n", uri);
    conn_open(false);
    send_str(req);
    r = one_response(200, false);
    assert_int_equal(strlen(r.body), strlen("GET  host=a x=[-] e=-\n") + 512);
}

static void test_http1_replies_431_when_head_too_large(void **state)
{
    char req[4096];
    char v[2100];

    (void)state;
    memset(v, 'v', sizeof(v) - 1);
    v[sizeof(v) - 1] = '\0';
    snprintf(req, sizeof(req), "GET / HTTP/1.1\r\nHost: a\r\nX-Test: %s\r\n\r\n", v);
    conn_open(false);
    send_str(req);
    assert_error_response(431, "headers_too_large");
    assert_int_equal(cx.w.errors[PF_ERR_HEADERS_TOO_LARGE], 1);
}

static void test_http1_replies_431_when_head_too_large_in_pieces(void **state)
{
    char v[200];

    (void)state;
    memset(v, 'v', sizeof(v) - 1);
    v[sizeof(v) - 1] = '\0';
    conn_open(false);
    send_str("GET / HTTP/1.1\r\nHost: a\r\n");
    /* 11 lines of ~210 bytes: past 2 KiB before the head ends */
    for (unsigned i = 0; i < 11 && !cx.eof; i++) {
        char line[256];

        snprintf(line, sizeof(line), "X-H%u: %s\r\n", i, v);
        send_str(line);
    }
    assert_error_response(431, "headers_too_large");
}

static void test_http1_replies_431_when_too_many_headers(void **state)
{
    char req[2048];
    size_t n;

    (void)state;
    n = (size_t)snprintf(req, sizeof(req), "GET / HTTP/1.1\r\nHost: a\r\n");
    for (unsigned i = 0; i < 20; i++) /* 21 with Host, limit 20 */
        n += (size_t)snprintf(req + n, sizeof(req) - n, "X-%u: v\r\n", i);
    snprintf(req + n, sizeof(req) - n, "\r\n");
    conn_open(false);
    send_str(req);
    assert_error_response(431, "headers_too_large");
}

static void test_http1_accepts_max_headers(void **state)
{
    char req[2048];
    size_t n;

    (void)state;
    n = (size_t)snprintf(req, sizeof(req), "GET / HTTP/1.1\r\nHost: a\r\n");
    for (unsigned i = 0; i < 19; i++) /* 20 with Host */
        n += (size_t)snprintf(req + n, sizeof(req) - n, "X-%u: v\r\n", i);
    snprintf(req + n, sizeof(req) - n, "\r\n");
    conn_open(false);
    send_str(req);
    one_response(200, false);
}

static void test_http1_replies_413_when_body_over_limit(void **state)
{
    (void)state;
    cx.cfg.limits.max_body_size = 10;
    conn_open(false);
    send_str("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 11\r\n\r\n");
    assert_error_response(413, "body_too_large");
}

static void test_http1_replies_408_when_head_is_slow(void **state)
{
    (void)state;
    cx.cfg.limits.header_timeout_ms = 20;
    conn_open(false);
    send_str("GET / HTTP/1.1\r\nHo");
    assert_int_equal(cx.in_len, 0);
    usleep(40 * 1000);
    pump();
    assert_error_response(408, "request_timeout");
}

static void test_http1_idle_connection_closes_silently_after_header_timeout(void **state)
{
    (void)state;
    cx.cfg.limits.header_timeout_ms = 20;
    conn_open(false);
    pump();
    usleep(40 * 1000);
    pump();
    assert_true(cx.eof);
    assert_int_equal(cx.in_len, 0);
    assert_int_equal(cx.w.n_conns, 0);
}

/* ---- admin connections ---- */

static void test_http1_admin_connection_answers_locally(void **state)
{
    (void)state;
    /* GET /health needs pf_server_get(), NULL without a server: use a path that 404s */
    conn_open(true);
    send_str("GET /nope HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_int_equal(cx.w.requests, 1);
    {
        struct resp r[2];

        assert_int_equal(responses(r, 2), 1);
        assert_int_equal(r[0].status, 404);
        assert_non_null(strstr(r[0].head, "\r\nX-Pilotfish-Error: not_found\r\n"));
    }
    assert_false(cx.eof);
}

static void test_http1_admin_rejects_bad_framing_too(void **state)
{
    (void)state;
    conn_open(true);
    send_str("GET /nope HTTP/1.1\r\nHost: a\r\nX-A: b\r\n c\r\n\r\n");
    assert_error_response(400, "bad_request");
}

/* ---- connection states and their dump ---- */

static void test_http1_conn_dump_names_state_and_flags(void **state)
{
    struct pf_conn c;
    char buf[PF_CONN_DUMP_SIZE];
    char small[16];
    size_t n;

    (void)state;
    memset(&c, 0, sizeof(c));
    c.state = PF_CONN_BODY_PAUSED;
    c.closing = true;
    c.read_blocked = true;
    c.busy = 2;
    c.body_mode = PF_BODY_CHUNKED;
    c.body_left = 7;
    c.head_bytes = 40;
    n = pf_conn_dump(&c, buf, sizeof(buf));
    assert_int_equal(n, strlen(buf));
    assert_string_equal(buf, "state=BODY_PAUSED flags=closing,read_blocked, busy=2 tx=no "
                             "body=chunked left=7 head=40 in=0 out=0");
    /* cut to the buffer, still NUL-terminated */
    assert_int_equal(pf_conn_dump(&c, small, sizeof(small)), sizeof(small) - 1);
    assert_string_equal(small, "state=BODY_PAUS");
    for (unsigned st = PF_CONN_READING_HEAD; st <= PF_CONN_DEAD; st++)
        assert_string_not_equal(pf_conn_state_name(st), "?");
    assert_string_equal(pf_conn_state_name(PF_CONN_DEAD + 1), "?");
}

static void test_http1_conn_reads_the_next_head_after_a_response(void **state)
{
    struct pf_conn *c;
    char buf[PF_CONN_DUMP_SIZE];

    (void)state;
    conn_open(false);
    c = TAILQ_FIRST(&cx.w.conns);
    assert_int_equal(c->state, PF_CONN_READING_HEAD);
    send_str("GET / HTTP/1.1\r\nHost: a\r\n\r\n");
    one_response(200, false);
    assert_int_equal(c->state, PF_CONN_READING_HEAD);
    assert_false(c->closing);
    send_str("GET / HT");
    assert_int_equal(c->state, PF_CONN_READING_HEAD);
    pf_conn_dump(c, buf, sizeof(buf));
    assert_non_null(strstr(buf, "state=READING_HEAD flags= busy=0 tx=no body=none left=0 head=8 "));
}

static void test_http1_conn_lingers_after_answering_before_the_body(void **state)
{
    struct pf_conn *c;
    char buf[PF_CONN_DUMP_SIZE];

    (void)state;
    conn_open(false);
    c = TAILQ_FIRST(&cx.w.conns);
    /* the filter answers on the head: the rest of the body is not waited for */
    send_str("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\nabc");
    assert_int_equal(c->state, PF_CONN_LINGERING);
    assert_true(c->closing);
    pf_conn_dump(c, buf, sizeof(buf));
    assert_non_null(strstr(buf, "state=LINGERING flags=closing,linger,"));
    send_str("defg"); /* discarded */
    one_response(200, true);
}

int main(void)
{
#define C(f) cmocka_unit_test_setup_teardown(f, conn_setup, conn_teardown)
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_http1_head_assembles_pieces_split_anywhere),
        cmocka_unit_test(test_http1_head_keeps_offsets_valid_while_growing),
        cmocka_unit_test(test_http1_head_empty_value_is_empty_string),
        cmocka_unit_test(test_http1_head_without_url_exports_headers),
        cmocka_unit_test(test_http1_head_reset_forgets_previous_head),
        cmocka_unit_test(test_http1_head_append_returns_minus_1_past_size_limit),
        cmocka_unit_test(test_http1_head_append_returns_minus_2_past_header_count),
        cmocka_unit_test(test_http1_list_has_finds_tokens),
        cmocka_unit_test(test_http1_list_has_rejects_non_tokens),
        cmocka_unit_test(test_http1_reason_phrases),
        cmocka_unit_test(test_http1_date_is_imf_fixdate),
        C(test_http1_answers_a_simple_request),
        C(test_http1_parses_request_split_in_pieces),
        C(test_http1_parses_request_byte_by_byte),
        C(test_http1_answers_pipelined_requests_in_order),
        C(test_http1_http10_request_gets_http10_response_and_close),
        C(test_http1_http10_keep_alive_is_honoured),
        C(test_http1_connection_close_closes_after_response),
        C(test_http1_replies_414_when_uri_too_long),
        C(test_http1_accepts_uri_at_the_limit),
        C(test_http1_replies_431_when_head_too_large),
        C(test_http1_replies_431_when_head_too_large_in_pieces),
        C(test_http1_replies_431_when_too_many_headers),
        C(test_http1_accepts_max_headers),
        C(test_http1_replies_413_when_body_over_limit),
        C(test_http1_replies_408_when_head_is_slow),
        C(test_http1_idle_connection_closes_silently_after_header_timeout),
        C(test_http1_admin_connection_answers_locally),
        C(test_http1_admin_rejects_bad_framing_too),
        cmocka_unit_test(test_http1_conn_dump_names_state_and_flags),
        C(test_http1_conn_reads_the_next_head_after_a_response),
        C(test_http1_conn_lingers_after_answering_before_the_body),
    };
#undef C

    if (getenv("TEST_FILTER") != NULL)
        cmocka_set_test_filter(getenv("TEST_FILTER"));
    return cmocka_run_group_tests_name("http1", tests, NULL, NULL);
}
