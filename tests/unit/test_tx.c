/*
 * Unit tests of proxy/tx.c and what it uses: header lists (proxy/hdrs.c), the
 * worker generator (proxy/worker.c), and the
 * request identity (X-Request-Id, W3C traceparent) set up by pf_tx_start().
 *
 * The identity tests start a transaction built by hand, with no client
 * connection, on a route whose only filter records what the core set up and
 * answers the request itself: the core then ends the transaction without any
 * socket.
 */
#include <ctype.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <event2/buffer.h>

#include "proxy/arena.h"
#include "proxy/core.h"
#include "proxy/filter.h"
#include "proxy/tx.h"

/* ---- pf_hdrs_* ---- */

static void test_tx_hdrs_get_is_case_insensitive_and_returns_first(void **state)
{
    struct pf_arena *a = pf_arena_new(PF_ARENA_CHUNK);
    struct pf_hdrs h = {0};

    (void)state;
    assert_null(pf_hdrs_get(&h, "host"));
    pf_hdrs_add(a, &h, "Host", "example.com");
    pf_hdrs_add(a, &h, "Accept", "a");
    pf_hdrs_add(a, &h, "ACCEPT", "b");
    assert_string_equal(pf_hdrs_get(&h, "host"), "example.com");
    assert_string_equal(pf_hdrs_get(&h, "HOST"), "example.com");
    assert_string_equal(pf_hdrs_get(&h, "accept"), "a");
    assert_null(pf_hdrs_get(&h, "acc"));
    assert_null(pf_hdrs_get(&h, "accepts"));
    pf_arena_free(a);
}

static void test_tx_hdrs_add_copies_and_grows(void **state)
{
    struct pf_arena *a = pf_arena_new(PF_ARENA_CHUNK);
    struct pf_hdrs h = {0};
    char name[32];
    char value[32];

    (void)state;
    for (unsigned i = 0; i < 100; i++) {
        snprintf(name, sizeof(name), "X-%u", i);
        snprintf(value, sizeof(value), "v%u", i * 7);
        pf_hdrs_add(a, &h, name, value);
    }
    memset(name, 0, sizeof(name)); /* the list holds copies */
    memset(value, 0, sizeof(value));
    assert_int_equal(h.n, 100);
    assert_true(h.cap >= 100);
    for (unsigned i = 0; i < 100; i++) {
        snprintf(name, sizeof(name), "X-%u", i);
        snprintf(value, sizeof(value), "v%u", i * 7);
        assert_string_equal(h.v[i].name, name);
        assert_int_equal(h.v[i].name_len, strlen(name));
        assert_string_equal(h.v[i].value, value);
        assert_int_equal(h.v[i].value_len, strlen(value));
    }
    pf_arena_free(a);
}

static void test_tx_hdrs_add_appends_to_an_exported_list(void **state)
{
    struct pf_arena *a = pf_arena_new(PF_ARENA_CHUNK);
    struct pf_hdr fixed[2] = {
        {.name = "A", .value = "1", .name_len = 1, .value_len = 1},
        {.name = "B", .value = "2", .name_len = 1, .value_len = 1},
    };
    struct pf_hdrs h = {fixed, 2, 2}; /* full: the next add must move it */

    (void)state;
    pf_hdrs_add(a, &h, "C", "3");
    assert_int_equal(h.n, 3);
    assert_ptr_not_equal(h.v, fixed);
    assert_string_equal(pf_hdrs_get(&h, "a"), "1");
    assert_string_equal(pf_hdrs_get(&h, "b"), "2");
    assert_string_equal(pf_hdrs_get(&h, "c"), "3");
    pf_arena_free(a);
}

static void test_tx_hdrs_add_ref_keeps_the_strings_and_classifies(void **state)
{
    struct pf_arena *a = pf_arena_new(PF_ARENA_CHUNK);
    struct pf_hdrs h = {0};
    static const char name[] = "Content-Length", value[] = "12";

    (void)state;
    pf_hdrs_add_ref(a, &h, name, sizeof(name) - 1, value, sizeof(value) - 1);
    assert_int_equal(h.n, 1);
    assert_ptr_equal(h.v[0].name, name); /* not copied */
    assert_ptr_equal(h.v[0].value, value);
    assert_int_equal(h.v[0].name_len, 14);
    assert_int_equal(h.v[0].value_len, 2);
    assert_int_equal(h.v[0].id, PF_H_CONTENT_LENGTH);
    pf_arena_free(a);
}

static void test_tx_hdrs_add_many_appends_the_entries_as_they_are(void **state)
{
    struct pf_arena *a = pf_arena_new(PF_ARENA_CHUNK);
    struct pf_hdrs h = {0};
    struct pf_hdr v[20];
    char names[20][8];

    (void)state;
    for (unsigned i = 0; i < 20; i++) {
        snprintf(names[i], sizeof(names[i]), "X-%u", i);
        v[i] = (struct pf_hdr){names[i], "v", (uint32_t)strlen(names[i]), 1, PF_H_OTHER};
    }
    v[3].id = PF_H_CONTENT_LENGTH; /* taken as given, not classified again */
    pf_hdrs_add(a, &h, "First", "1");
    pf_hdrs_add_many(a, &h, v, 0);
    assert_int_equal(h.n, 1);
    pf_hdrs_add_many(a, &h, v, 20); /* past the first 16 slots: the array grows once */
    assert_int_equal(h.n, 21);
    assert_true(h.cap >= 21);
    assert_string_equal(h.v[0].name, "First");
    for (unsigned i = 0; i < 20; i++) {
        assert_ptr_equal(h.v[1 + i].name, names[i]); /* not copied */
        assert_int_equal(h.v[1 + i].name_len, strlen(names[i]));
    }
    assert_int_equal(h.v[4].id, PF_H_CONTENT_LENGTH);
    pf_hdrs_add(a, &h, "Last", "2"); /* still usable */
    assert_string_equal(pf_hdrs_get(&h, "last"), "2");
    assert_string_equal(pf_hdrs_get(&h, "x-19"), "v");
    pf_arena_free(a);
}

/* A transaction built by hand, enough for the reply functions (no client, no worker loop). */
static struct pf_tx *bare_tx(void)
{
    struct pf_arena *a = pf_arena_new(PF_ARENA_CHUNK);
    struct pf_tx *tx = pf_arena_alloc(a, sizeof(*tx));

    tx->arena = a;
    return tx;
}

static void test_tx_reply_bare_adds_no_header_and_hands_the_body_buffer(void **state)
{
    struct pf_tx *tx = bare_tx();
    struct evbuffer *b = evbuffer_new(), *rb;
    static const char v[] = "text/plain";

    (void)state;
    evbuffer_add(b, "abc", 3);
    rb = pf_tx_reply_bare(tx, 203, b);
    assert_non_null(rb);
    assert_int_equal(evbuffer_get_length(b), 0); /* moved */
    evbuffer_add(rb, "de", 2);
    assert_int_equal(evbuffer_get_length(tx->reply), 5);
    assert_int_equal(tx->status, 203);
    assert_int_equal(tx->resp.n, 0);
    pf_tx_resp_header_add_ref(tx, "Content-Type", v);
    assert_ptr_equal(pf_tx_resp_header(tx, "content-type"), v);
    /* pf_tx_resp_raw covers the fields so far, until one is removed or replaced */
    pf_tx_resp_raw(tx, "Content-Type: text/plain\r\n", 26);
    assert_non_null(tx->resp_raw);
    assert_int_equal(tx->resp_raw_n, 1);
    assert_int_equal(tx->resp_raw_len, 26);
    pf_tx_resp_header_add(tx, "X-A", "1");
    assert_non_null(tx->resp_raw); /* an addition after it is written after it */
    pf_tx_resp_header_del(tx, "x-none");
    assert_null(tx->resp_raw);
    pf_tx_resp_raw(tx, "Content-Type: text/plain\r\nX-A: 1\r\n", 34);
    pf_tx_resp_header_set(tx, "X-A", "2");
    assert_null(tx->resp_raw);
    pf_tx_resp_raw(tx, "x", 1);
    pf_tx_reply_bare(tx, 200, NULL);
    assert_null(tx->resp_raw);
    /* pf_tx_reply: the same with Date and Content-Length */
    evbuffer_add(b, "hello", 5);
    pf_tx_reply(tx, 200, b);
    assert_int_equal(tx->resp.n, 2);
    assert_non_null(pf_tx_resp_header(tx, "date"));
    assert_string_equal(pf_tx_resp_header(tx, "content-length"), "5");
    assert_false(tx->reply_open);
    /* pf_tx_reply_stream: no field at all, not even Date (the filter adds the stored head) */
    pf_tx_reply_stream(tx, 200);
    assert_true(tx->reply_open);
    assert_int_equal(tx->resp.n, 0);
    assert_null(pf_tx_resp_header(tx, "date"));
    assert_null(pf_tx_resp_header(tx, "content-length"));
    pf_tx_reply_bare(tx, 200, NULL); /* another reply closes it */
    assert_false(tx->reply_open);
    evbuffer_free(b);
    pf_arena_free(tx->arena);
}

static void test_tx_hdrs_del_removes_every_match_and_keeps_order(void **state)
{
    struct pf_arena *a = pf_arena_new(PF_ARENA_CHUNK);
    struct pf_hdrs h = {0};

    (void)state;
    pf_hdrs_add(a, &h, "Set-Cookie", "a=1");
    pf_hdrs_add(a, &h, "Vary", "Accept");
    pf_hdrs_add(a, &h, "set-cookie", "b=2");
    pf_hdrs_add(a, &h, "ETag", "\"x\"");
    pf_hdrs_add(a, &h, "SET-COOKIE", "c=3");
    pf_hdrs_del(&h, "Set-Cookie");
    assert_int_equal(h.n, 2);
    assert_string_equal(h.v[0].name, "Vary");
    assert_string_equal(h.v[1].name, "ETag");
    assert_null(pf_hdrs_get(&h, "set-cookie"));
    pf_hdrs_del(&h, "absent");
    assert_int_equal(h.n, 2);
    pf_hdrs_del(&h, "vary");
    pf_hdrs_del(&h, "etag");
    assert_int_equal(h.n, 0);
    pf_hdrs_add(a, &h, "After", "ok"); /* still usable */
    assert_string_equal(pf_hdrs_get(&h, "after"), "ok");
    pf_arena_free(a);
}

static void test_tx_hdr_classify_knows_the_core_headers(void **state)
{
    static const struct {
        const char *name;
        enum pf_hdr_id id;
    } cases[] = {
        {"Connection", PF_H_CONNECTION},
        {"keep-alive", PF_H_KEEP_ALIVE},
        {"Proxy-Connection", PF_H_PROXY_CONNECTION},
        {"TE", PF_H_TE},
        {"Trailer", PF_H_TRAILER},
        {"TRANSFER-ENCODING", PF_H_TRANSFER_ENCODING},
        {"Upgrade", PF_H_UPGRADE},
        {"Expect", PF_H_EXPECT},
        {"content-length", PF_H_CONTENT_LENGTH},
        {"Host", PF_H_HOST},
        {"X-Forwarded-For", PF_H_X_FORWARDED_FOR},
        {"X-Forwarded-Proto", PF_H_X_FORWARDED_PROTO},
        {"X-Forwarded-Host", PF_H_X_FORWARDED_HOST},
        {"X-Request-ID", PF_H_X_REQUEST_ID},
        {"Traceparent", PF_H_TRACEPARENT},
        {"Date", PF_H_DATE},
        {"dATE", PF_H_DATE},
        {"Dat", PF_H_OTHER},
        {"Hosts", PF_H_OTHER},
        {"Content-Lengt", PF_H_OTHER},
        {"Content-Length ", PF_H_OTHER},
        {"T", PF_H_OTHER},
        {"", PF_H_OTHER},
        {"Transfer-Encodings", PF_H_OTHER},
        {"Accept", PF_H_OTHER},
        {"hOsT", PF_H_HOST},
        {"x_request-id", PF_H_OTHER},    /* '_' is not '-' */
        {"content\rlength", PF_H_OTHER}, /* nor is CR ('-' | 0x20 folding would say so) */
        {"content-lengtH", PF_H_CONTENT_LENGTH},
        {"content-l3ngth", PF_H_OTHER},
        {"X-Forwarded-FoX", PF_H_OTHER}, /* the last, overlapping word counts */
        {"X-Forwarded_For", PF_H_OTHER}, /* and its bytes before it */
        {"x-forwardeD-FOR", PF_H_X_FORWARDED_FOR},
        {"Proxy-ConnectioN", PF_H_PROXY_CONNECTION},
        {"Proxy-Connectiom", PF_H_OTHER},
        {"Trailex", PF_H_OTHER},
        {"tE", PF_H_TE},
        {"t-", PF_H_OTHER},
    };

    (void)state;
    for (unsigned i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        if (pf_hdr_classify(cases[i].name, strlen(cases[i].name)) != cases[i].id)
            fail_msg("%s: %d, want %d", cases[i].name,
                     (int)pf_hdr_classify(cases[i].name, strlen(cases[i].name)), (int)cases[i].id);
    }
    /* only len bytes count */
    assert_int_equal(pf_hdr_classify("hostname", 4), PF_H_HOST);
}

static void test_tx_hop_by_hop_ids_are_the_spec_list(void **state)
{
    (void)state;
    assert_true(PF_H_IS_HOP(PF_H_CONNECTION));
    assert_true(PF_H_IS_HOP(PF_H_KEEP_ALIVE));
    assert_true(PF_H_IS_HOP(PF_H_PROXY_CONNECTION));
    assert_true(PF_H_IS_HOP(PF_H_TE));
    assert_true(PF_H_IS_HOP(PF_H_TRAILER));
    assert_true(PF_H_IS_HOP(PF_H_TRANSFER_ENCODING));
    assert_true(PF_H_IS_HOP(PF_H_UPGRADE));
    assert_false(PF_H_IS_HOP(PF_H_OTHER));
    assert_false(PF_H_IS_HOP(PF_H_EXPECT));
    assert_false(PF_H_IS_HOP(PF_H_CONTENT_LENGTH));
    assert_false(PF_H_IS_HOP(PF_H_HOST));
    assert_false(PF_H_IS_HOP(PF_H_TRACEPARENT));
}

static void test_tx_hdrs_add_classifies_and_get_id_finds_first(void **state)
{
    struct pf_arena *a = pf_arena_new(PF_ARENA_CHUNK);
    struct pf_hdrs h = {0};

    (void)state;
    assert_null(pf_hdrs_get_id(&h, PF_H_HOST));
    pf_hdrs_add(a, &h, "X-Other", "o");
    pf_hdrs_add(a, &h, "HOST", "first");
    pf_hdrs_add(a, &h, "host", "second");
    assert_int_equal(h.v[0].id, PF_H_OTHER);
    assert_int_equal(h.v[1].id, PF_H_HOST);
    assert_int_equal(h.v[2].id, PF_H_HOST);
    assert_string_equal(pf_hdrs_get_id(&h, PF_H_HOST), "first");
    assert_null(pf_hdrs_get_id(&h, PF_H_CONTENT_LENGTH));
    pf_hdrs_del(&h, "Host");
    assert_null(pf_hdrs_get_id(&h, PF_H_HOST));
    assert_int_equal(h.n, 1);
    assert_int_equal(h.v[0].id, PF_H_OTHER); /* ids move with their headers */
    pf_arena_free(a);
}

static void test_tx_worker_rand_varies(void **state)
{
    struct pf_worker a, b;
    uint64_t first;
    bool differ = false;

    (void)state;
    memset(&a, 0, sizeof(a));
    a.rng[0] = 1;
    a.rng[1] = 2;
    b = a;
    first = pf_worker_rand(&a);
    assert_int_equal(pf_worker_rand(&b), first); /* a function of the state only */
    for (unsigned i = 0; i < 16; i++)
        differ |= pf_worker_rand(&a) != first;
    assert_true(differ);
}

/* ---- request identity through pf_tx_start ---- */

/* What the core had set up when the route's filter ran. */
static struct {
    char traceparent[64];
    char trace_id[40];
    char request_id[256];
    unsigned calls;
    bool leave_ids; /* the spy does not ask for the ids (pf_tx_ids) */
} seen;

static enum pf_verdict spy_on_request(struct pf_tx *tx, struct pf_slot *s)
{
    (void)s;
    seen.calls++;
    if (!seen.leave_ids)
        pf_tx_ids(tx);
    snprintf(seen.traceparent, sizeof(seen.traceparent), "%s", tx->traceparent);
    snprintf(seen.trace_id, sizeof(seen.trace_id), "%s", tx->trace_id);
    snprintf(seen.request_id, sizeof(seen.request_id), "%s",
             tx->request_id != NULL ? tx->request_id : "(null)");
    pf_tx_reply(tx, 204, NULL);
    return PF_REPLIED;
}

static const struct pf_filter_ops spy_ops = {
    .name = "spy",
    .on_request = spy_on_request,
};

static struct {
    struct pf_config cfg;
    struct pf_upstream_conf up;
    struct pf_route route;
    struct pf_filter_inst inst;
    unsigned order[1];
    void *wstates[1];
    struct pf_wconf wc;
    struct pf_worker w;
} fx;

static int id_setup(void **state)
{
    (void)state;
    memset(&fx, 0, sizeof(fx));
    memset(&seen, 0, sizeof(seen));
    fx.up.name = "app";
    fx.inst.ops = &spy_ops;
    fx.route.name = "r";
    fx.route.prefix = "/";
    fx.route.prefix_len = 1;
    fx.route.filters = fx.order;
    fx.route.n_filters = 1;
    fx.cfg.upstreams = &fx.up;
    fx.cfg.n_upstreams = 1;
    fx.cfg.routes = &fx.route;
    fx.cfg.n_routes = 1;
    fx.cfg.filters = &fx.inst;
    fx.cfg.n_filters = 1;
    fx.wc.cfg = &fx.cfg;
    fx.wc.wstates = fx.wstates;
    fx.wc.refs = 1;
    fx.w.wc = &fx.wc;
    fx.w.rng[0] = 0x0123456789abcdefu;
    fx.w.rng[1] = 0xfedcba9876543210u;
    return 0;
}

/* Start a GET / with the given request headers (name, value pairs, NULL-ended). */
static void start_request(const char *name, ...)
{
    struct pf_arena *a = pf_arena_new(PF_ARENA_CHUNK);
    struct pf_tx *tx = pf_arena_alloc(a, sizeof(*tx));
    va_list ap;

    tx->arena = a;
    tx->w = &fx.w;
    tx->wc = &fx.wc;
    fx.wc.refs++;
    tx->cfg = &fx.cfg;
    tx->method = "GET";
    tx->method_id = HTTP_GET;
    tx->url = "/";
    tx->http_major = 1;
    tx->http_minor = 1;
    tx->client_keepalive = true;
    tx->req_done = true;
    va_start(ap, name);
    for (const char *n = name; n != NULL; n = va_arg(ap, const char *))
        pf_hdrs_add(a, &tx->req, n, va_arg(ap, const char *));
    va_end(ap);
    pf_tx_start(tx);
    /* no client: the reply went nowhere and the transaction ended */
    assert_int_equal(seen.calls, 1);
    assert_int_equal(fx.wc.refs, 1);
    assert_int_equal(fx.w.requests, 1);
}

static bool is_lower_hex(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (!isxdigit((unsigned char)s[i]) || isupper((unsigned char)s[i]))
            return false;
    }
    return true;
}

/* A well-formed version-00 traceparent with non-zero trace and parent ids. */
static void assert_traceparent_format(const char *tp)
{
    assert_int_equal(strlen(tp), 55);
    assert_memory_equal(tp, "00-", 3);
    assert_true(is_lower_hex(tp + 3, 32));
    assert_memory_not_equal(tp + 3, "00000000000000000000000000000000", 32);
    assert_int_equal(tp[35], '-');
    assert_true(is_lower_hex(tp + 36, 16));
    assert_memory_not_equal(tp + 36, "0000000000000000", 16);
    assert_int_equal(tp[52], '-');
    assert_true(is_lower_hex(tp + 53, 2));
    assert_memory_equal(tp + 3, seen.trace_id, 32);
    assert_int_equal(strlen(seen.trace_id), 32);
}

#define IN_TRACE  "4bf92f3577b34da6a3ce929d0e0e4736"
#define IN_PARENT "00f067aa0ba902b7"

static void test_tx_traceparent_is_continued_with_a_new_span(void **state)
{
    (void)state;
    start_request("traceparent", "00-" IN_TRACE "-" IN_PARENT "-01", NULL);
    assert_traceparent_format(seen.traceparent);
    assert_string_equal(seen.trace_id, IN_TRACE);
    assert_memory_not_equal(seen.traceparent + 36, IN_PARENT, 16);
    assert_string_equal(seen.traceparent + 53, "01");
}

static void test_tx_traceparent_keeps_incoming_flags(void **state)
{
    (void)state;
    start_request("traceparent", "00-" IN_TRACE "-" IN_PARENT "-00", NULL);
    assert_string_equal(seen.trace_id, IN_TRACE);
    assert_string_equal(seen.traceparent + 53, "00");
}

static void test_tx_traceparent_of_a_future_version_is_continued(void **state)
{
    (void)state;
    start_request("traceparent", "cc-" IN_TRACE "-" IN_PARENT "-01-what-the-future-adds", NULL);
    assert_traceparent_format(seen.traceparent); /* we speak version 00 */
    assert_string_equal(seen.trace_id, IN_TRACE);
}

static void test_tx_traceparent_is_started_when_absent(void **state)
{
    (void)state;
    start_request(NULL);
    assert_traceparent_format(seen.traceparent);
    assert_string_equal(seen.traceparent + 53, "01");
}

/* Each of these is invalid: a new trace is started. */
static void assert_restarted(const char *incoming)
{
    id_setup(NULL);
    start_request("traceparent", incoming, NULL);
    assert_traceparent_format(seen.traceparent);
    assert_string_not_equal(seen.trace_id, IN_TRACE);
    assert_string_equal(seen.traceparent + 53, "01");
}

static void test_tx_traceparent_is_restarted_when_invalid(void **state)
{
    (void)state;
    assert_restarted("");
    assert_restarted("garbage");
    assert_restarted("00-" IN_TRACE "-" IN_PARENT "-0");        /* short */
    assert_restarted("00-" IN_TRACE "-" IN_PARENT "-01-extra"); /* 00 has no suffix */
    assert_restarted("ff-" IN_TRACE "-" IN_PARENT "-01");       /* forbidden version */
    assert_restarted("00-4BF92F3577B34DA6A3CE929D0E0E4736-" IN_PARENT "-01"); /* upper */
    assert_restarted("00-00000000000000000000000000000000-" IN_PARENT "-01"); /* zero id */
    assert_restarted("00-" IN_TRACE "-0000000000000000-01");                  /* zero parent */
    assert_restarted("00-" IN_TRACE "-00f067aa0ba902bz-01");                  /* parent not hex */
    assert_restarted("00_" IN_TRACE "-" IN_PARENT "-01");                     /* separator */
    assert_restarted("00-" IN_TRACE "-" IN_PARENT "-0g");                     /* flags */
    assert_restarted("0x-" IN_TRACE "-" IN_PARENT "-01");                     /* version */
    assert_restarted("cc-" IN_TRACE "-" IN_PARENT "-01x"); /* future, bad suffix */
}

/* A request answered by a filter makes no ids until something asks (a cache hit needs none). */
static void test_tx_ids_are_made_only_when_needed(void **state)
{
    (void)state;
    seen.leave_ids = true;
    start_request("X-Request-Id", "abc-123", NULL);
    assert_string_equal(seen.request_id, "(null)");
    assert_string_equal(seen.traceparent, "");
    assert_string_equal(seen.trace_id, "");
}

static void test_tx_request_id_is_kept_when_given(void **state)
{
    (void)state;
    start_request("X-Request-Id", "abc-123", NULL);
    assert_string_equal(seen.request_id, "abc-123");
}

static void test_tx_request_id_is_generated_when_absent(void **state)
{
    char first[64];

    (void)state;
    start_request(NULL);
    assert_int_equal(strlen(seen.request_id), 32);
    assert_true(is_lower_hex(seen.request_id, 32));
    snprintf(first, sizeof(first), "%s", seen.request_id);
    /* the next request of the worker gets another one */
    seen.calls = 0;
    fx.w.requests = 0;
    start_request(NULL);
    assert_string_not_equal(seen.request_id, first);
}

/* Our id is the worker's next two random numbers in lower-case hex, in order. */
static void test_tx_request_id_is_the_next_random_numbers_in_hex(void **state)
{
    struct pf_worker copy;
    char want[40];
    uint64_t hi, lo;

    (void)state;
    fx.w.rng[0] = 0xa0b1c2d3e4f50617u;
    fx.w.rng[1] = 0x8899aabbccddeeffu;
    for (unsigned i = 0; i < 16; i++) { /* 512 digits: every value, every position */
        seen.calls = 0;
        fx.w.requests = 0;
        copy = fx.w;
        hi = pf_worker_rand(&copy);
        lo = pf_worker_rand(&copy);
        snprintf(want, sizeof(want), "%016llx%016llx", (unsigned long long)hi,
                 (unsigned long long)lo);
        start_request(NULL);
        assert_string_equal(seen.request_id, want);
    }
}

static void test_tx_request_id_is_generated_when_empty_or_too_long(void **state)
{
    char long_id[202];

    (void)state;
    start_request("X-Request-Id", "", NULL);
    assert_int_equal(strlen(seen.request_id), 32);

    memset(long_id, 'a', sizeof(long_id) - 1);
    long_id[sizeof(long_id) - 1] = '\0'; /* 201 bytes */
    id_setup(NULL);
    start_request("X-Request-Id", long_id, NULL);
    assert_int_equal(strlen(seen.request_id), 32);

    long_id[200] = '\0'; /* 200 bytes: kept */
    id_setup(NULL);
    start_request("X-Request-Id", long_id, NULL);
    assert_string_equal(seen.request_id, long_id);
}

/* ---- background transactions (pf_tx_background) ---- */

/*
 * A route [mark, bg]: mark changes the request (once per transaction it sees),
 * bg starts a background copy from its own slot when it sees a client's
 * request, and answers every request itself, recording what the background
 * one looked like.
 */
static struct {
    unsigned mark_calls, bg_calls, bg_done;
    bool started;
    bool is_bg;
    char method[8], url[32], marked[16], accept[16];
} bgseen;

static enum pf_verdict mark_on_request(struct pf_tx *tx, struct pf_slot *s)
{
    (void)s;
    bgseen.mark_calls++;
    pf_tx_req_header_set(tx, "X-Mark", "set");
    return PF_NEXT;
}

static enum pf_verdict bg_on_request(struct pf_tx *tx, struct pf_slot *s)
{
    const char *v;

    bgseen.bg_calls++;
    if (!pf_tx_is_background(tx)) {
        bgseen.started = pf_tx_background(tx, s);
    } else {
        bgseen.is_bg = true;
        snprintf(bgseen.method, sizeof(bgseen.method), "%s", pf_tx_method(tx));
        snprintf(bgseen.url, sizeof(bgseen.url), "%s", pf_tx_path(tx));
        v = pf_tx_req_header(tx, "x-mark");
        snprintf(bgseen.marked, sizeof(bgseen.marked), "%s", v != NULL ? v : "");
        v = pf_tx_req_header(tx, "accept");
        snprintf(bgseen.accept, sizeof(bgseen.accept), "%s", v != NULL ? v : "");
    }
    pf_tx_reply(tx, 204, NULL);
    return PF_REPLIED;
}

static void bg_on_done(struct pf_tx *tx, struct pf_slot *s)
{
    (void)s;
    if (pf_tx_is_background(tx))
        bgseen.bg_done++;
}

static const struct pf_filter_ops mark_ops = {.name = "mark", .on_request = mark_on_request};
static const struct pf_filter_ops bg_ops = {
    .name = "bg", .on_request = bg_on_request, .on_done = bg_on_done};

static struct {
    struct pf_config cfg;
    struct pf_upstream_conf up;
    struct pf_route route;
    struct pf_filter_inst inst[2];
    unsigned order[2];
    void *wstates[2];
    struct pf_wconf wc;
    struct pf_worker w;
} bx;

static int bg_setup(void **state)
{
    (void)state;
    memset(&bx, 0, sizeof(bx));
    memset(&bgseen, 0, sizeof(bgseen));
    bx.up.name = "app";
    bx.inst[0].ops = &mark_ops;
    bx.inst[1].ops = &bg_ops;
    bx.order[0] = 0;
    bx.order[1] = 1;
    bx.route.name = "r";
    bx.route.prefix = "/";
    bx.route.prefix_len = 1;
    bx.route.filters = bx.order;
    bx.route.n_filters = 2;
    bx.cfg.upstreams = &bx.up;
    bx.cfg.n_upstreams = 1;
    bx.cfg.routes = &bx.route;
    bx.cfg.n_routes = 1;
    bx.cfg.filters = bx.inst;
    bx.cfg.n_filters = 2;
    bx.wc.cfg = &bx.cfg;
    bx.wc.wstates = bx.wstates;
    bx.wc.refs = 1;
    bx.w.wc = &bx.wc;
    bx.w.rng[0] = 1;
    bx.w.rng[1] = 2;
    bx.w.base = event_base_new();
    TAILQ_INIT(&bx.w.bg_txs);
    return bx.w.base != NULL ? 0 : -1;
}

static int bg_teardown(void **state)
{
    (void)state;
    event_base_free(bx.w.base);
    return 0;
}

/* A HEAD /p?q from a client, with an Accept header; the client is gone once it is answered. */
static void bg_client_request(void)
{
    struct pf_arena *a = pf_arena_new(PF_ARENA_CHUNK);
    struct pf_tx *tx = pf_arena_alloc(a, sizeof(*tx));

    tx->arena = a;
    tx->w = &bx.w;
    tx->wc = &bx.wc;
    bx.wc.refs++;
    tx->cfg = &bx.cfg;
    tx->method = "HEAD";
    tx->method_id = HTTP_HEAD;
    tx->url = "/p?q";
    tx->http_major = 1;
    tx->http_minor = 1;
    tx->client_keepalive = true;
    tx->req_done = true;
    pf_hdrs_add(a, &tx->req, "Accept", "text/x");
    pf_tx_start(tx);
}

static void test_tx_background_runs_from_the_calling_filter_without_a_client(void **state)
{
    (void)state;
    bg_client_request();
    assert_true(bgseen.started);
    /* the client's transaction ended; the background one holds the snapshot until it runs */
    assert_int_equal(bx.w.requests, 1);
    assert_int_equal(bx.wc.refs, 2);
    assert_false(bgseen.is_bg);
    assert_int_equal(event_base_loop(bx.w.base, 0), 1); /* 1: ran until no event was left */
    assert_true(bgseen.is_bg);
    assert_string_equal(bgseen.method, "GET");
    assert_string_equal(bgseen.url, "/p?q");
    assert_string_equal(bgseen.marked, "set"); /* as the filters before it left the request */
    assert_string_equal(bgseen.accept, "text/x");
    assert_int_equal(bgseen.mark_calls, 1); /* the filter before the caller did not run again */
    assert_int_equal(bgseen.bg_calls, 2);
    assert_int_equal(bgseen.bg_done, 1);
    assert_int_equal(bx.w.requests, 2);
    assert_int_equal(bx.wc.refs, 1);
    assert_true(TAILQ_EMPTY(&bx.w.bg_txs));
}

static void test_tx_background_is_aborted_when_the_worker_stops(void **state)
{
    (void)state;
    bg_client_request();
    assert_true(bgseen.started);
    assert_false(TAILQ_EMPTY(&bx.w.bg_txs));
    pf_tx_abort_background(&bx.w);
    assert_true(TAILQ_EMPTY(&bx.w.bg_txs));
    assert_int_equal(bx.wc.refs, 1);
    assert_int_equal(bx.w.requests, 2);
    /* its start event went with it */
    assert_int_equal(event_base_loop(bx.w.base, 0), 1);
    assert_false(bgseen.is_bg);
}

static void test_tx_background_is_refused_while_draining(void **state)
{
    (void)state;
    bx.w.draining = true;
    bg_client_request();
    assert_false(bgseen.started);
    assert_true(TAILQ_EMPTY(&bx.w.bg_txs));
    assert_int_equal(bx.wc.refs, 1);
}

int main(void)
{
#define I(f) cmocka_unit_test_setup_teardown(f, id_setup, NULL)
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_tx_hdrs_get_is_case_insensitive_and_returns_first),
        cmocka_unit_test(test_tx_hdrs_add_copies_and_grows),
        cmocka_unit_test(test_tx_hdrs_add_appends_to_an_exported_list),
        cmocka_unit_test(test_tx_hdrs_del_removes_every_match_and_keeps_order),
        cmocka_unit_test(test_tx_hdrs_add_ref_keeps_the_strings_and_classifies),
        cmocka_unit_test(test_tx_hdrs_add_many_appends_the_entries_as_they_are),
        cmocka_unit_test(test_tx_reply_bare_adds_no_header_and_hands_the_body_buffer),
        cmocka_unit_test(test_tx_hdr_classify_knows_the_core_headers),
        cmocka_unit_test(test_tx_hop_by_hop_ids_are_the_spec_list),
        cmocka_unit_test(test_tx_hdrs_add_classifies_and_get_id_finds_first),
        cmocka_unit_test(test_tx_worker_rand_varies),
        I(test_tx_traceparent_is_continued_with_a_new_span),
        I(test_tx_traceparent_keeps_incoming_flags),
        I(test_tx_traceparent_of_a_future_version_is_continued),
        I(test_tx_traceparent_is_started_when_absent),
        I(test_tx_traceparent_is_restarted_when_invalid),
        I(test_tx_ids_are_made_only_when_needed),
        I(test_tx_request_id_is_kept_when_given),
        I(test_tx_request_id_is_generated_when_absent),
        I(test_tx_request_id_is_the_next_random_numbers_in_hex),
        I(test_tx_request_id_is_generated_when_empty_or_too_long),
#define B(f) cmocka_unit_test_setup_teardown(f, bg_setup, bg_teardown)
        B(test_tx_background_runs_from_the_calling_filter_without_a_client),
        B(test_tx_background_is_aborted_when_the_worker_stops),
        B(test_tx_background_is_refused_while_draining),
    };
#undef B
#undef I

    return cmocka_run_group_tests_name("tx", tests, NULL, NULL);
}
