/*
 * The request engine of proxy/http1.c over a socketpair, for test_http1.c and
 * test_http1_framing.c: a real struct pf_conn on a worker built by hand whose only
 * route runs a filter that answers every request itself (no upstream).
 */
#ifndef PF_TEST_HTTP1_FX_H
#define PF_TEST_HTTP1_FX_H

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

#ifndef BIG
#define BIG 65536
#endif

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

static inline int conn_setup(void **state)
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

static inline void pump(void);

/* Close the client's end (the server has closed its side already). */
static inline void conn_drop(void)
{
    close(cx.peer);
    cx.peer = -1;
    pump();
}

static inline int conn_teardown(void **state)
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
static inline void conn_open(bool is_admin)
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
static inline void pump(void)
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

static inline void send_bytes(const char *s, size_t n)
{
    assert_int_equal(send(cx.peer, s, n, MSG_NOSIGNAL), (ssize_t)n);
    pump();
}

static inline void send_str(const char *s)
{
    send_bytes(s, strlen(s));
}

/* A NULL-terminated list of pieces, each written and pumped on its own. */
static inline void send_pieces(const char *first, ...)
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
static inline unsigned responses_ex(struct resp *r, unsigned max, unsigned no_body)
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

static inline unsigned responses(struct resp *r, unsigned max)
{
    return responses_ex(r, max, 0);
}

/*
 * The client stops sending. A server that shut its side while the client
 * might still be sending (lingering close) closes on this end of input.
 */
static inline void client_done(void)
{
    shutdown(cx.peer, SHUT_WR);
    pump();
}

/* Exactly one response came, with status; the connection closed if closed. */
static inline struct resp one_response(int status, bool closed)
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

static inline void assert_error_response(int status, const char *code)
{
    struct resp r = one_response(status, true);
    char want[128];

    snprintf(want, sizeof(want), "\r\nX-Pilotfish-Error: %s\r\n", code);
    assert_non_null(strstr(r.head, want));
    snprintf(want, sizeof(want), "{\"error\":\"%s\",\"status\":%d,", code, status);
    assert_non_null(strstr(r.body, want));
}

/* One request from a fresh connection, expected to be refused with 400. */
static inline void assert_bad_request(const char *req)
{
    conn_open(false);
    send_str(req);
    assert_error_response(400, "bad_request");
    assert_int_equal(cx.w.errors[PF_ERR_BAD_REQUEST], 1);
}

#endif /* PF_TEST_HTTP1_FX_H */
