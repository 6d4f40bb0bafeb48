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

/* ---- the engine over a socketpair ---- */

/* Answers every request: 200 with "<method> <path> host=<Host> x=[X-Test] e=[X-Empty]". */
static enum pf_verdict echo_on_request(struct pf_tx *tx, struct pf_slot *s)
{
    struct evbuffer *b = evbuffer_new();
    const char *host = pf_tx_req_header(tx, "host");
    const char *x = pf_tx_req_header(tx, "x-test");
    const char *e = pf_tx_req_header(tx, "x-empty");

    (void)s;
    evbuffer_add_printf(b, "%s %s host=%s x=[%s] e=%s%s%s\n", pf_tx_method(tx), pf_tx_path(tx),
                        host ? host : "-", x ? x : "-", e ? "[" : "", e ? e : "-", e ? "]" : "");
    pf_tx_reply(tx, 200, b);
    evbuffer_free(b);
    return PF_REPLIED;
}

static const struct pf_filter_ops echo_ops = {
    .name = "echo",
    .on_request = echo_on_request,
};

struct conn_fx {
    struct event_base *base;
    struct pf_worker w;
    struct pf_server srv;
    struct pf_wconf wc;
    void *wstates[1];
    struct pf_config cfg;
    struct pf_upstream_conf up;
    struct pf_route route;
    struct pf_filter_inst inst;
    unsigned order[1];
    int peer;     /* the client's end */
    char in[BIG]; /* what the client received */
    size_t in_len;
    bool eof; /* the server closed the connection */
};

static struct conn_fx cx;

static int conn_setup(void **state)
{
    (void)state;
    memset(&cx, 0, sizeof(cx));
    cx.base = event_base_new();
    assert_non_null(cx.base);
    cx.cfg.limits.max_header_size = 2048;
    cx.cfg.limits.max_headers = 20;
    cx.cfg.limits.max_uri_size = 512;
    cx.cfg.limits.max_body_size = 0;
    cx.cfg.limits.header_timeout_ms = 10000;
    cx.cfg.limits.idle_timeout_ms = 60000;
    cx.up.name = "app";
    cx.cfg.upstreams = &cx.up;
    cx.cfg.n_upstreams = 1;
    cx.inst.ops = &echo_ops;
    cx.cfg.filters = &cx.inst;
    cx.cfg.n_filters = 1;
    cx.order[0] = 0;
    cx.route.name = "echo";
    cx.route.prefix = "/";
    cx.route.prefix_len = 1;
    cx.route.filters = cx.order;
    cx.route.n_filters = 1;
    cx.cfg.routes = &cx.route;
    cx.cfg.n_routes = 1;
    cx.wc.cfg = &cx.cfg;
    cx.wc.wstates = cx.wstates;
    cx.wc.refs = 1; /* the worker's */
    cx.w.base = cx.base;
    cx.w.srv = &cx.srv;
    cx.w.wc = &cx.wc;
    cx.w.count = 1;
    cx.w.rng[0] = 0x9e3779b97f4a7c15u;
    cx.w.rng[1] = 0x1234567;
    cx.w.alog = evbuffer_new();
    pf_stream_loop_init(&cx.w.sloop, cx.base);
    TAILQ_INIT(&cx.w.conns);
    atomic_store(&cx.srv.live_conns, 1000);
    cx.peer = -1;
    return 0;
}

static void pump(void);

/* Close the client's end (the server has closed its side already). */
static void conn_drop(void)
{
    close(cx.peer);
    cx.peer = -1;
    pump();
}

static int conn_teardown(void **state)
{
    (void)state;
    if (cx.peer >= 0)
        conn_drop();
    /* a failed test may leave one behind; closing it is bounded (busy > 0 leaks it) */
    for (unsigned i = 0; i < 4 && !TAILQ_EMPTY(&cx.w.conns); i++)
        pf_conn_close(TAILQ_FIRST(&cx.w.conns));
    assert_int_equal(cx.w.n_conns, 0);
    assert_int_equal(cx.wc.refs, 1); /* every transaction was released */
    evbuffer_free(cx.w.alog);
    pf_stream_loop_fini(&cx.w.sloop);
    event_base_free(cx.base);
    return 0;
}

/* Open a connection: the server end goes to pf_conn_accept. */
static void conn_open(bool is_admin)
{
    int sv[2];
    struct sockaddr_un sa = {.sun_family = AF_UNIX};

    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    assert_int_not_equal(fcntl(sv[0], F_SETFL, O_NONBLOCK), -1);
    cx.peer = sv[0];
    cx.in_len = 0;
    cx.eof = false;
    pf_conn_accept(&cx.w, sv[1], (struct sockaddr *)&sa, is_admin);
    assert_int_equal(cx.w.n_conns, 1);
}

/* Run the loop until nothing more happens; collect what the client got. */
static void pump(void)
{
    unsigned quiet = 0;

    while (quiet < 5) {
        ssize_t n;
        bool got = false;

        event_base_loop(cx.base, EVLOOP_NONBLOCK);
        while (cx.peer >= 0 && !cx.eof && cx.in_len < sizeof(cx.in) - 1) {
            n = recv(cx.peer, cx.in + cx.in_len, sizeof(cx.in) - 1 - cx.in_len, 0);
            if (n > 0) {
                cx.in_len += (size_t)n;
                got = true;
            } else if (n == 0 || (errno != EAGAIN && errno != EWOULDBLOCK)) {
                cx.eof = true;
                got = true;
            } else {
                break;
            }
        }
        cx.in[cx.in_len] = '\0';
        quiet = got ? 0 : quiet + 1;
    }
}

static void send_bytes(const char *s, size_t n)
{
    assert_int_equal(send(cx.peer, s, n, MSG_NOSIGNAL), (ssize_t)n);
    pump();
}

static void send_str(const char *s)
{
    send_bytes(s, strlen(s));
}

/* A NULL-terminated list of pieces, each written and pumped on its own. */
static void send_pieces(const char *first, ...)
{
    va_list ap;

    va_start(ap, first);
    for (const char *s = first; s != NULL; s = va_arg(ap, const char *))
        send_str(s);
    va_end(ap);
}

struct resp {
    int minor;
    int status;
    char head[2048];
    char body[2048];
};

/*
 * Parse the responses the client got (each has a Content-Length); bit i of
 * no_body marks response i as one to a HEAD request. Returns how many.
 */
static unsigned responses_ex(struct resp *r, unsigned max, unsigned no_body)
{
    const char *p = cx.in;
    const char *end = cx.in + cx.in_len;
    unsigned n = 0;

    while (p < end && n < max) {
        const char *eoh = strstr(p, "\r\n\r\n");
        const char *cl;
        size_t hl, bl = 0;

        assert_non_null(eoh);
        hl = (size_t)(eoh - p) + 2;
        assert_true(hl < sizeof(r[n].head));
        memcpy(r[n].head, p, hl);
        r[n].head[hl] = '\0';
        assert_int_equal(sscanf(r[n].head, "HTTP/1.%d %d ", &r[n].minor, &r[n].status), 2);
        cl = strcasestr(r[n].head, "\r\nContent-Length: ");
        if (cl != NULL)
            bl = strtoul(cl + 18, NULL, 10);
        p = eoh + 4;
        if (no_body & (1u << n))
            bl = 0;
        assert_true((size_t)(end - p) >= bl && bl < sizeof(r[n].body));
        memcpy(r[n].body, p, bl);
        r[n].body[bl] = '\0';
        p += bl;
        n++;
    }
    return n;
}

static unsigned responses(struct resp *r, unsigned max)
{
    return responses_ex(r, max, 0);
}

/*
 * The client stops sending. A server that shut its side while the client
 * might still be sending (lingering close) closes on this end of input.
 */
static void client_done(void)
{
    shutdown(cx.peer, SHUT_WR);
    pump();
}

/* Exactly one response came, with status; the connection closed if closed. */
static struct resp one_response(int status, bool closed)
{
    struct resp r[4];

    assert_int_equal(responses(r, 4), 1);
    assert_int_equal(r[0].status, status);
    assert_int_equal(cx.eof, closed);
    if (closed) {
        assert_non_null(strstr(r[0].head, "\r\nConnection: close\r\n"));
        client_done();
        assert_int_equal(cx.w.n_conns, 0);
    }
    return r[0];
}

static void assert_error_response(int status, const char *code)
{
    struct resp r = one_response(status, true);
    char want[128];

    snprintf(want, sizeof(want), "\r\nX-Pilotfish-Error: %s\r\n", code);
    assert_non_null(strstr(r.head, want));
    snprintf(want, sizeof(want), "{\"error\":\"%s\",\"status\":%d,", code, status);
    assert_non_null(strstr(r.body, want));
}

/* One request from a fresh connection, expected to be refused with 400. */
static void assert_bad_request(const char *req)
{
    conn_open(false);
    send_str(req);
    assert_error_response(400, "bad_request");
    assert_int_equal(cx.w.errors[PF_ERR_BAD_REQUEST], 1);
}

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
        C(test_http1_rejects_bad_requests),
        C(test_http1_accepts_chunked_transfer_encoding),
        C(test_http1_rejects_nul_in_header_value),
        C(test_http1_ignores_empty_line_before_request_line),
        C(test_http1_rejects_bare_lf_split_across_reads),
        C(test_http1_stops_at_bad_request_in_pipeline),
        C(test_http1_rejects_connect_with_405),
        C(test_http1_rejects_unknown_expectation_with_417),
        C(test_http1_expect_continue_answered_before_body_is_read),
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
        cmocka_unit_test(test_http1_conn_dump_names_state_and_flags),
        C(test_http1_conn_reads_the_next_head_after_a_response),
        C(test_http1_conn_lingers_after_answering_before_the_body),
    };
#undef C

    if (getenv("TEST_FILTER") != NULL)
        cmocka_set_test_filter(getenv("TEST_FILTER"));
    return cmocka_run_group_tests_name("http1", tests, NULL, NULL);
}
