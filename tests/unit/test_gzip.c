/*
 * Unit tests for filters/gzip.c: the compress-or-not decision, the header
 * rewrites and byte-exact streaming round trips (inflated back with zlib).
 */
#include <errno.h>
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
#include <zlib.h>

#include "filters/gzip.h"
#include "proxy/conf.h"
#include "tests/unit/fake_tx.h"

#define KIB 1024u
#define MIB (1024u * 1024u)

static const struct pf_filter_ops *const ops = &pf_filter_gzip;

struct fixture {
    struct pf_gzip_conf *conf;
    struct pf_tx tx;
    struct pf_slot slot;
    struct evbuffer *in;
    struct evbuffer *out;
};

/* ---- helpers ---- */

static struct pf_gzip_conf *default_conf(void)
{
    void *conf = NULL;
    struct pf_err err;

    pf_err_init(&err, "test.yaml");
    assert_int_equal(ops->conf_parse(NULL, &conf, &err), 0);
    assert_int_equal(err.n, 0);
    pf_err_fini(&err);
    return conf;
}

/* Parse the YAML text of `filters:` and hand its gzip map to conf_parse. */
static int conf_from_yaml(const char *yaml, struct pf_gzip_conf **conf, struct pf_err *err)
{
    struct pf_conf_node *root = NULL;
    void *c = NULL;
    int rc;

    assert_int_equal(pf_conf_node_parse(yaml, strlen(yaml), &root, err), 0);
    assert_int_equal(err->n, 0);
    rc = ops->conf_parse(pf_conf_get(root, "gzip"), &c, err);
    pf_conf_node_free(root);
    *conf = c;
    return rc;
}

static void fixture_init(struct fixture *f, struct pf_gzip_conf *conf, const char *method)
{
    memset(f, 0, sizeof(*f));
    f->conf = conf;
    fake_tx_init(&f->tx, method, "/");
    f->slot.conf = conf;
    f->slot.ctx = pf_arena_alloc(f->tx.arena, ops->ctx_size);
    f->in = evbuffer_new();
    f->out = evbuffer_new();
}

static void fixture_fini(struct fixture *f)
{
    ops->on_done(&f->tx, &f->slot);
    evbuffer_free(f->in);
    evbuffer_free(f->out);
    fake_tx_fini(&f->tx);
    ops->conf_free(f->conf);
}

static int setup(void **state)
{
    struct fixture *f = pf_xmalloc(sizeof(*f));

    fixture_init(f, default_conf(), "GET");
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture_fini(*state);
    free(*state);
    return 0;
}

/* on_request with this Accept-Encoding (NULL: none). */
static void request(struct fixture *f, const char *accept_encoding)
{
    if (accept_encoding != NULL)
        fake_tx_req_add(&f->tx, "Accept-Encoding", accept_encoding);
    assert_int_equal(ops->on_request(&f->tx, &f->slot), PF_NEXT);
}

/* A response with this status and Content-Type (NULL: none), then on_response. */
static void respond(struct fixture *f, int status, const char *type)
{
    f->tx.status = status;
    if (type != NULL)
        pf_tx_resp_header_add(&f->tx, "Content-Type", type);
    assert_int_equal(ops->on_response(&f->tx, &f->slot), PF_NEXT);
}

static const char *resp(struct fixture *f, const char *name)
{
    return pf_tx_resp_header(&f->tx, name);
}

static unsigned resp_count(struct fixture *f, const char *name)
{
    unsigned n = 0;

    for (unsigned i = 0; i < f->tx.resp.n; i++)
        n += strcasecmp(f->tx.resp.v[i].name, name) == 0;
    return n;
}

static bool compressing(struct fixture *f)
{
    const char *ce = resp(f, "Content-Encoding");

    return ce != NULL && strcmp(ce, "gzip") == 0;
}

static enum pf_verdict body(struct fixture *f, const void *data, size_t len, bool eos)
{
    struct pf_body b = {f->in, f->out, eos};

    if (len > 0)
        evbuffer_add(f->in, data, len);
    return ops->on_body(&f->tx, &f->slot, &b);
}

/* Text-like data: words from a small dictionary with some noise. */
static unsigned char *make_body(size_t len)
{
    static const char *const words[] = {"pilotfish ", "proxy ", "sidecar ", "gzip ",   "stream ",
                                        "deflate ",   "<div>",  "</div>\n", "{\"k\":", "42},"};
    unsigned char *p = pf_xmalloc(len + 1);
    uint32_t x = 12345;
    size_t i = 0;

    while (i < len) {
        x = x * 1103515245u + 12345u;
        if ((x >> 16) % 16 == 0) {
            p[i++] = (unsigned char)(x >> 8);
            continue;
        }
        for (const char *w = words[(x >> 16) % 10]; *w != '\0' && i < len; w++)
            p[i++] = (unsigned char)*w;
    }
    return p;
}

/* Inflate a whole gzip stream; fails the test unless it is exactly one stream. */
static unsigned char *gunzip(struct evbuffer *buf, size_t *len)
{
    size_t in_len = evbuffer_get_length(buf);
    unsigned char *in = evbuffer_pullup(buf, -1);
    size_t cap = 4096;
    unsigned char *out = pf_xmalloc(cap);
    z_stream z;
    int rc = Z_OK;

    memset(&z, 0, sizeof(z));
    assert_int_equal(inflateInit2(&z, 16 + MAX_WBITS), Z_OK);
    z.next_in = in;
    z.avail_in = (uInt)in_len;
    *len = 0;
    while (rc != Z_STREAM_END) {
        if (*len == cap) {
            cap *= 2;
            out = pf_xrealloc(out, cap);
        }
        z.next_out = out + *len;
        z.avail_out = (uInt)(cap - *len);
        rc = inflate(&z, Z_NO_FLUSH);
        assert_true(rc == Z_OK || rc == Z_STREAM_END);
        *len = cap - z.avail_out;
    }
    assert_int_equal(z.avail_in, 0); /* nothing after the trailer */
    inflateEnd(&z);
    return out;
}

/*
 * Compress len bytes fed chunk bytes at a time (each call's input is built
 * from 4 KiB evbuffer_add()s, so it spans many extents), then check the
 * output inflates to the input. eos_alone: the last call carries no data.
 */
static void round_trip_conf(struct pf_gzip_conf *conf, size_t len, size_t chunk, bool eos_alone,
                            bool with_length)
{
    struct fixture f;
    unsigned char *data = make_body(len);
    unsigned char *back;
    size_t back_len;
    uint64_t in0, out0, in1, out1;
    size_t off = 0;
    char cl[32];

    fixture_init(&f, conf, "GET");
    request(&f, "gzip");
    if (with_length) {
        snprintf(cl, sizeof(cl), "%zu", len);
        pf_tx_resp_header_add(&f.tx, "Content-Length", cl);
    }
    respond(&f, 200, "text/html");
    assert_true(compressing(&f));
    pf_gzip_stats(&in0, &out0);
    do {
        size_t n = len - off < chunk ? len - off : chunk;

        for (size_t k = 0; k < n; k += 4 * KIB)
            evbuffer_add(f.in, data + off + k, n - k < 4 * KIB ? n - k : 4 * KIB);
        off += n;
        assert_int_equal(body(&f, NULL, 0, off == len && !eos_alone), PF_NEXT);
        assert_int_equal(evbuffer_get_length(f.in), 0); /* all of in consumed */
    } while (off < len);
    if (eos_alone)
        assert_int_equal(body(&f, NULL, 0, true), PF_NEXT);
    pf_gzip_stats(&in1, &out1);
    assert_true(in1 - in0 >= len);
    assert_true(out1 - out0 >= evbuffer_get_length(f.out));

    back = gunzip(f.out, &back_len);
    assert_int_equal(back_len, len);
    assert_memory_equal(back, data, len);
    free(back);
    free(data);
    fixture_fini(&f);
}

static void round_trip(size_t len, size_t chunk, bool eos_alone)
{
    round_trip_conf(default_conf(), len, chunk, eos_alone, false);
}

/* ---- round trips ---- */

static void test_gzip_round_trip_empty_body(void **state)
{
    (void)state;
    round_trip(0, 1, false);
    round_trip(0, 1, true);
}

static void test_gzip_round_trip_small_bodies_in_1_byte_chunks(void **state)
{
    (void)state;
    round_trip(1, 1, false);
    round_trip(1, 1, true);
    round_trip(999, 1, false);
    round_trip(1000, 1, true);
}

static void test_gzip_round_trip_64k_in_odd_and_1_byte_chunks(void **state)
{
    (void)state;
    round_trip(64 * KIB, 1, true);
    round_trip(64 * KIB, 777, false);
    round_trip(64 * KIB, 4 * KIB, true);
    round_trip(64 * KIB, 64 * KIB, false);
}

static void test_gzip_round_trip_10m_in_odd_and_large_chunks(void **state)
{
    (void)state;
    round_trip(10 * MIB, 777, true);
    round_trip(10 * MIB, 1 * MIB, false);
    round_trip(10 * MIB, 10 * MIB, true);
}

static void test_gzip_round_trip_with_content_length_shrinks_window(void **state)
{
    (void)state;
    /* Known lengths get a smaller window and memLevel; the stream stays valid. */
    round_trip_conf(default_conf(), 1000, 777, false, true);
    round_trip_conf(default_conf(), 5000, 1, true, true);
    round_trip_conf(default_conf(), 300 * KIB, 4 * KIB, false, true);
}

static void test_gzip_small_known_length_uses_less_memory(void **state)
{
    struct fixture small;
    struct fixture unknown;
    size_t base;

    (void)state;
    fixture_init(&small, default_conf(), "GET");
    request(&small, "gzip");
    pf_tx_resp_header_add(&small.tx, "Content-Length", "1000");
    base = pf_arena_used(small.tx.arena);
    respond(&small, 200, "text/html");
    assert_true(pf_arena_used(small.tx.arena) - base < 32 * KIB);

    fixture_init(&unknown, default_conf(), "GET");
    request(&unknown, "gzip");
    base = pf_arena_used(unknown.tx.arena);
    respond(&unknown, 200, "text/html");
    assert_true(pf_arena_used(unknown.tx.arena) - base > 200 * KIB);
    fixture_fini(&small);
    fixture_fini(&unknown);
}

static void test_gzip_round_trip_with_other_levels_and_windows(void **state)
{
    struct pf_gzip_conf *conf;
    struct pf_err err;

    (void)state;
    pf_err_init(&err, "test.yaml");
    assert_int_equal(conf_from_yaml("gzip: {level: 1, window: 9, mem_level: 1}", &conf, &err), 0);
    round_trip_conf(conf, 200 * KIB, 777, true, false);
    assert_int_equal(conf_from_yaml("gzip: {level: 9}", &conf, &err), 0);
    round_trip_conf(conf, 200 * KIB, 4 * KIB, false, false);
    pf_err_fini(&err);
}

static void test_gzip_streams_without_buffering_the_body(void **state)
{
    struct fixture *f = *state;
    unsigned char *data = make_body(1 * MIB);
    unsigned char *back;
    size_t back_len;

    request(f, "gzip");
    respond(f, 200, "text/plain");
    for (size_t off = 0; off < 1 * MIB; off += 16 * KIB) {
        assert_int_equal(body(f, data + off, 16 * KIB, false), PF_NEXT);
        assert_int_equal(evbuffer_get_length(f->in), 0);
    }
    /* Output flows before the end of the body, not all at eos. */
    assert_true(evbuffer_get_length(f->out) > 64 * KIB);
    assert_int_equal(body(f, NULL, 0, true), PF_NEXT);
    back = gunzip(f->out, &back_len);
    assert_int_equal(back_len, 1 * MIB);
    assert_memory_equal(back, data, back_len);
    free(back);
    free(data);
}

static void test_gzip_abort_mid_body_releases_everything(void **state)
{
    struct fixture *f = *state;
    unsigned char *data = make_body(100 * KIB);

    request(f, "gzip");
    respond(f, 200, "text/plain");
    assert_int_equal(body(f, data, 100 * KIB, false), PF_NEXT);
    free(data);
    /* teardown runs on_done without eos; ASan reports any leak. */
}

static void test_gzip_on_done_twice_is_harmless(void **state)
{
    struct fixture *f = *state;

    request(f, "gzip");
    respond(f, 200, "text/plain");
    assert_int_equal(body(f, "abc", 3, false), PF_NEXT);
    ops->on_done(&f->tx, &f->slot);
}

static void test_gzip_fails_on_data_after_eos(void **state)
{
    struct fixture *f = *state;

    request(f, "gzip");
    respond(f, 200, "text/plain");
    assert_int_equal(body(f, "abc", 3, true), PF_NEXT);
    assert_int_equal(body(f, NULL, 0, true), PF_NEXT);
    assert_int_equal(body(f, "x", 1, true), PF_FAILED);
}

/* ---- the decision ---- */

/* Pass-through: headers untouched and the body moved as is. */
static void assert_passes_through(struct fixture *f)
{
    assert_false(compressing(f));
    assert_int_equal(body(f, "hello", 5, false), PF_NEXT);
    assert_int_equal(body(f, " world", 6, true), PF_NEXT);
    assert_int_equal(evbuffer_get_length(f->in), 0);
    assert_int_equal(evbuffer_get_length(f->out), 11);
    assert_memory_equal(evbuffer_pullup(f->out, -1), "hello world", 11);
}

struct ae_case {
    const char *value;
    bool gzip;
};

static void test_gzip_parses_accept_encoding_with_qvalues(void **state)
{
    static const struct ae_case cases[] = {
        {"gzip", true},
        {"GZIP", true},
        {"x-gzip", true},
        {"gzip, deflate, br", true},
        {"br;q=1.0, gzip;q=0.8, *;q=0.1", true},
        {" br ,  gzip ; q = 0.5 ", true},
        {"gzip;q=1", true},
        {"gzip;q=0.001", true},
        {"gzip;Q=0.5", true},
        {"gzip;level=1;q=0.3", true},
        {"*", true},
        {"*;q=0.5", true},
        {"deflate, *", true},
        {"gzip;q=0", false},
        {"gzip; q=0.000", false},
        {"gzip;q=0, *", false},
        {"*, gzip;q=0", false},
        {"x-gzip;q=0", false},
        {"*;q=0", false},
        {"identity", false},
        {"identity, deflate", false},
        {"", false},
        {"br", false},
        {"gzipx", false},
        {"gzip;q=1.5", false},
        {"gzip;q=abc", false},
        {"gzip;q=0.0001", false},
    };

    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct fixture f;

        fixture_init(&f, default_conf(), "GET");
        request(&f, cases[i].value);
        respond(&f, 200, "text/html");
        if (compressing(&f) != cases[i].gzip)
            fail_msg("Accept-Encoding: \"%s\": expected %s", cases[i].value,
                     cases[i].gzip ? "gzip" : "identity");
        fixture_fini(&f);
    }
}

static void test_gzip_reads_every_accept_encoding_header(void **state)
{
    struct fixture *f = *state;

    fake_tx_req_add(&f->tx, "Accept-Encoding", "br");
    fake_tx_req_add(&f->tx, "accept-encoding", "gzip");
    request(f, NULL);
    respond(f, 200, "text/html");
    assert_true(compressing(f));
}

/*
 * One response each: the request's method and Accept-Encoding, the response's
 * status, Content-Type and other headers, then whether on_response chose gzip
 * and the headers it left. A header in want with a NULL value must be absent;
 * one with a value must be there exactly once. A response not compressed must
 * pass its body through untouched.
 */
struct hdr {
    const char *name;
    const char *value;
};

struct decision_case {
    const char *what;
    const char *method; /* NULL: GET */
    const char *accept; /* Accept-Encoding; NULL: none */
    int status;
    const char *type;   /* Content-Type; NULL: none */
    struct hdr resp[3]; /* more response headers, before on_response */
    bool gzip;
    struct hdr want[4];
};

/* One row per case reads better than one field per line. */
/* clang-format off */
static const struct decision_case decisions[] = {
    /* when it compresses, and what it changes */
    {"all conditions hold", NULL, "gzip, deflate", 200, "text/html",
     {{"Content-Length", "5000"}, {"Accept-Ranges", "bytes"}}, true,
     {{"Content-Encoding", "gzip"}, {"Content-Length", NULL}, {"Accept-Ranges", NULL},
      {"Vary", "Accept-Encoding"}}},
    {"status 201", NULL, "gzip", 201, "application/json", {{0}}, true, {{0}}},
    {"status 203", NULL, "gzip", 203, "application/json", {{0}}, true, {{0}}},
    {"status 301", NULL, "gzip", 301, "application/json", {{0}}, true, {{0}}},
    {"status 403", NULL, "gzip", 403, "application/json", {{0}}, true, {{0}}},
    {"status 404", NULL, "gzip", 404, "application/json", {{0}}, true, {{0}}},
    {"status 410", NULL, "gzip", 410, "application/json", {{0}}, true, {{0}}},
    {"status 500", NULL, "gzip", 500, "application/json", {{0}}, true, {{0}}},
    {"status 503", NULL, "gzip", 503, "application/json", {{0}}, true, {{0}}},
    {"type with parameters", NULL, "gzip", 200, "text/html; charset=utf-8", {{0}}, true, {{0}}},
    {"type in another case", NULL, "gzip", 200, "Text/HTML", {{0}}, true, {{0}}},
    {"type with spaces", NULL, "gzip", 200, " application/json;charset=UTF-8", {{0}}, true,
     {{0}}},
    {"type image/svg+xml", NULL, "gzip", 200, "image/svg+xml", {{0}}, true, {{0}}},
    {"Content-Length equal to min_length", NULL, "gzip", 200, "text/html",
     {{"Content-Length", "1000"}}, true, {{"Content-Length", NULL}}},
    {"length unknown", NULL, "gzip", 200, "text/html", {{0}}, true, {{0}}},
    {"Content-Encoding: identity", NULL, "gzip", 200, "text/html",
     {{"Content-Encoding", "identity"}}, true, {{"Content-Encoding", "gzip"}}},
    {"no-transform inside quotes", NULL, "gzip", 200, "text/html",
     {{"Cache-Control", "private=\"a, no-transform\""}}, true, {{0}}},
    /* when it does not: Vary only when a client that accepts gzip would get it */
    {"Accept-Encoding q=0", NULL, "gzip;q=0, identity", 200, "text/html", {{0}}, false,
     {{"Vary", "Accept-Encoding"}}},
    {"no Accept-Encoding", NULL, NULL, 200, "text/html",
     {{"Content-Length", "5000"}, {"ETag", "\"abc\""}}, false,
     {{"Content-Length", "5000"}, {"ETag", "\"abc\""}, {"Vary", "Accept-Encoding"}}},
    {"HEAD", "HEAD", "gzip", 200, "text/html", {{"Content-Length", "5000"}}, false,
     {{"Content-Length", "5000"}, {"Vary", "Accept-Encoding"}}},
    {"type not listed", NULL, "gzip", 200, "image/png", {{0}}, false, {{"Vary", NULL}}},
    {"no Content-Type", NULL, "gzip", 200, NULL, {{0}}, false, {{"Vary", NULL}}},
    {"prefix of a listed type", NULL, "gzip", 200, "text/htmlx", {{0}}, false, {{"Vary", NULL}}},
    {"Content-Length below min_length", NULL, "gzip", 200, "text/html",
     {{"Content-Length", "999"}}, false, {{"Content-Length", "999"}, {"Vary", NULL}}},
    {"Content-Encoding present", NULL, "gzip", 200, "text/html", {{"Content-Encoding", "br"}},
     false, {{"Content-Encoding", "br"}, {"Vary", NULL}}},
    {"Cache-Control no-transform", NULL, "gzip", 200, "text/html",
     {{"Cache-Control", "public, No-Transform, max-age=60"}}, false, {{"Vary", NULL}}},
    {"status 206", NULL, "gzip", 206, "text/html", {{0}}, false, {{"Vary", NULL}}},
    {"status 204", NULL, "gzip", 204, "text/html", {{0}}, false, {{"Vary", NULL}}},
    /* a 304 gets what its 200 would have: Vary, and the weak ETag for a gzip client */
    {"status 304", NULL, "gzip", 304, "text/html", {{"ETag", "\"abc\""}}, false,
     {{"Vary", "Accept-Encoding"}, {"ETag", "W/\"abc\""}, {"Content-Encoding", NULL}}},
    {"status 304 without gzip", NULL, NULL, 304, "text/html", {{"ETag", "\"abc\""}}, false,
     {{"Vary", "Accept-Encoding"}, {"ETag", "\"abc\""}}},
    {"status 304 of a type not listed", NULL, "gzip", 304, "image/png", {{"ETag", "\"abc\""}},
     false, {{"Vary", NULL}, {"ETag", "\"abc\""}}},
    {"status 100", NULL, "gzip", 100, "text/html", {{0}}, false, {{"Vary", NULL}}},
    {"status 101", NULL, "gzip", 101, "text/html", {{0}}, false, {{"Vary", NULL}}},
    /* header rewrites */
    {"Vary merged", NULL, "gzip", 200, "text/html", {{"Vary", "Cookie"}}, true,
     {{"Vary", "Cookie, Accept-Encoding"}}},
    {"several Vary merged", NULL, "gzip", 200, "text/html",
     {{"Vary", "Cookie"}, {"vary", " Origin, "}}, true,
     {{"Vary", "Cookie, Origin, Accept-Encoding"}}},
    {"Vary accept-encoding not repeated", NULL, "gzip", 200, "text/html",
     {{"Vary", "Origin, accept-encoding"}}, true, {{"Vary", "Origin, accept-encoding"}}},
    {"Vary * kept", NULL, "gzip", 200, "text/html", {{"Vary", "*"}}, true, {{"Vary", "*"}}},
    {"strong ETag weakened", NULL, "gzip", 200, "text/html", {{"ETag", "\"v1-abc\""}}, true,
     {{"ETag", "W/\"v1-abc\""}}},
    {"weak ETag kept", NULL, "gzip", 200, "text/html", {{"ETag", "W/\"v1\""}}, true,
     {{"ETag", "W/\"v1\""}}},
    {"malformed ETag dropped", NULL, "gzip", 200, "text/html", {{"ETag", "v1"}}, true,
     {{"ETag", NULL}}},
};
/* clang-format on */

/* Pass-through without asserting: NULL, or what went wrong. */
static const char *pass_through_problem(struct fixture *f)
{
    if (body(f, "hello", 5, false) != PF_NEXT || body(f, " world", 6, true) != PF_NEXT)
        return "on_body did not return PF_NEXT";
    if (evbuffer_get_length(f->in) != 0)
        return "input left in the buffer";
    if (evbuffer_get_length(f->out) != 11 ||
        memcmp(evbuffer_pullup(f->out, -1), "hello world", 11) != 0)
        return "body changed";
    return NULL;
}

static void check_decision(const struct decision_case *c)
{
    struct fixture f;
    const char *problem;

    fixture_init(&f, default_conf(), c->method != NULL ? c->method : "GET");
    request(&f, c->accept);
    for (size_t i = 0; i < 3 && c->resp[i].name != NULL; i++)
        pf_tx_resp_header_add(&f.tx, c->resp[i].name, c->resp[i].value);
    respond(&f, c->status, c->type);
    if (compressing(&f) != c->gzip)
        fail_msg("%s: expected %s", c->what, c->gzip ? "gzip" : "no compression");
    for (size_t i = 0; i < 4 && c->want[i].name != NULL; i++) {
        const struct hdr *w = &c->want[i];
        const char *got = resp(&f, w->name);

        if (w->value == NULL && got != NULL)
            fail_msg("%s: %s: \"%s\", expected none", c->what, w->name, got);
        if (w->value != NULL && (got == NULL || strcmp(got, w->value) != 0))
            fail_msg("%s: %s: \"%s\", expected \"%s\"", c->what, w->name,
                     got != NULL ? got : "(none)", w->value);
        if (w->value != NULL && resp_count(&f, w->name) != 1)
            fail_msg("%s: %u %s headers, expected one", c->what, resp_count(&f, w->name), w->name);
    }
    if (!c->gzip && (problem = pass_through_problem(&f)) != NULL)
        fail_msg("%s: not passed through: %s", c->what, problem);
    fixture_fini(&f);
}

static void test_gzip_decides_and_rewrites_headers(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(decisions) / sizeof(decisions[0]); i++)
        check_decision(&decisions[i]);
}

static void test_gzip_skips_when_request_filter_never_ran(void **state)
{
    struct fixture *f = *state;

    /* ctx zeroed, on_request not called: nothing is known of the client. */
    respond(f, 200, "text/html");
    assert_passes_through(f);
}

/* ---- configuration ---- */

static void test_gzip_conf_defaults(void **state)
{
    static const char *const types[] = {"text/html",        "text/plain",
                                        "text/css",         "text/xml",
                                        "application/json", "application/javascript",
                                        "application/xml",  "image/svg+xml"};
    struct pf_gzip_conf *conf = default_conf();

    (void)state;
    assert_int_equal(conf->level, 6);
    assert_int_equal(conf->min_length, 1000);
    assert_int_equal(conf->window, 15);
    assert_int_equal(conf->mem_level, 8);
    assert_int_equal(conf->types.n, 8);
    for (unsigned i = 0; i < 8; i++)
        assert_string_equal(conf->types.v[i], types[i]);
    ops->conf_free(conf);
    ops->conf_free(NULL);
}

static void test_gzip_conf_null_map_gives_defaults(void **state)
{
    struct pf_gzip_conf *conf;
    struct pf_err err;

    (void)state;
    pf_err_init(&err, "test.yaml");
    assert_int_equal(conf_from_yaml("gzip:\n", &conf, &err), 0);
    assert_int_equal(conf->level, 6);
    assert_int_equal(conf->types.n, 8);
    ops->conf_free(conf);
    pf_err_fini(&err);
}

static void test_gzip_conf_reads_every_key(void **state)
{
    struct pf_gzip_conf *conf;
    struct pf_err err;

    (void)state;
    pf_err_init(&err, "test.yaml");
    assert_int_equal(conf_from_yaml("gzip:\n"
                                    "  level: 9\n"
                                    "  min_length: 2KiB\n"
                                    "  types: [Text/HTML, application/*]\n"
                                    "  window: 12\n"
                                    "  mem_level: 3\n",
                                    &conf, &err),
                     0);
    assert_int_equal(err.n, 0);
    assert_int_equal(conf->level, 9);
    assert_int_equal(conf->min_length, 2048);
    assert_int_equal(conf->window, 12);
    assert_int_equal(conf->mem_level, 3);
    assert_int_equal(conf->types.n, 2);
    assert_string_equal(conf->types.v[0], "text/html");
    assert_string_equal(conf->types.v[1], "application/*");
    ops->conf_free(conf);
    pf_err_fini(&err);
}

static void expect_conf_error(const char *yaml, const char *needle)
{
    struct pf_gzip_conf *conf = NULL;
    struct pf_err err;

    pf_err_init(&err, "test.yaml");
    assert_int_equal(conf_from_yaml(yaml, &conf, &err), -EINVAL);
    assert_null(conf);
    assert_int_equal(err.n, 1);
    if (strstr(err.msgs[0], needle) == NULL)
        fail_msg("\"%s\" does not contain \"%s\"", err.msgs[0], needle);
    pf_err_fini(&err);
}

static void test_gzip_conf_rejects_bad_level(void **state)
{
    (void)state;
    expect_conf_error("gzip:\n  level: 0\n", "test.yaml:2:10: gzip.level");
    expect_conf_error("gzip:\n  level: 10\n", "gzip.level");
    expect_conf_error("gzip:\n  level: fast\n", "gzip.level");
}

static void test_gzip_conf_rejects_bad_window_and_mem_level(void **state)
{
    (void)state;
    expect_conf_error("gzip: {window: 8}", "gzip.window");
    expect_conf_error("gzip: {window: 16}", "gzip.window");
    expect_conf_error("gzip: {mem_level: 0}", "gzip.mem_level");
}

static void test_gzip_conf_rejects_bad_types(void **state)
{
    (void)state;
    expect_conf_error("gzip:\n  types: [text/html, html]\n", "test.yaml:2:22: gzip.types");
    expect_conf_error("gzip: {types: [\"text/html; charset=utf-8\"]}", "gzip.types");
    expect_conf_error("gzip: {types: {a: b}}", "gzip.types");
    expect_conf_error("gzip: {types: [\"application/*+json\"]}", "gzip.types");
    expect_conf_error("gzip: {types: [\"*/html\"]}", "gzip.types");
}

static void test_gzip_conf_rejects_unknown_key(void **state)
{
    (void)state;
    expect_conf_error("gzip: {levle: 3}", "levle");
}

static void test_gzip_conf_scalar_type_and_wildcards(void **state)
{
    struct pf_gzip_conf *conf;
    struct pf_err err;
    struct fixture f;

    (void)state;
    pf_err_init(&err, "test.yaml");
    assert_int_equal(conf_from_yaml("gzip: {types: text/*}", &conf, &err), 0);
    fixture_init(&f, conf, "GET");
    request(&f, "gzip");
    respond(&f, 200, "text/x-anything");
    assert_true(compressing(&f));
    fixture_fini(&f);

    assert_int_equal(conf_from_yaml("gzip: {types: \"*\", min_length: 0}", &conf, &err), 0);
    fixture_init(&f, conf, "GET");
    request(&f, "gzip");
    pf_tx_resp_header_add(&f.tx, "Content-Length", "0");
    respond(&f, 200, "application/octet-stream");
    assert_true(compressing(&f));
    fixture_fini(&f);

    assert_int_equal(conf_from_yaml("gzip: {types: []}", &conf, &err), 0);
    fixture_init(&f, conf, "GET");
    request(&f, "gzip");
    respond(&f, 200, "text/html");
    assert_false(compressing(&f));
    fixture_fini(&f);
    pf_err_fini(&err);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)
        T(test_gzip_round_trip_empty_body),
        T(test_gzip_round_trip_small_bodies_in_1_byte_chunks),
        T(test_gzip_round_trip_64k_in_odd_and_1_byte_chunks),
        T(test_gzip_round_trip_10m_in_odd_and_large_chunks),
        T(test_gzip_round_trip_with_content_length_shrinks_window),
        T(test_gzip_small_known_length_uses_less_memory),
        T(test_gzip_round_trip_with_other_levels_and_windows),
        T(test_gzip_streams_without_buffering_the_body),
        T(test_gzip_abort_mid_body_releases_everything),
        T(test_gzip_on_done_twice_is_harmless),
        T(test_gzip_fails_on_data_after_eos),
        T(test_gzip_parses_accept_encoding_with_qvalues),
        T(test_gzip_reads_every_accept_encoding_header),
        T(test_gzip_decides_and_rewrites_headers),
        T(test_gzip_skips_when_request_filter_never_ran),
        T(test_gzip_conf_defaults),
        T(test_gzip_conf_null_map_gives_defaults),
        T(test_gzip_conf_reads_every_key),
        T(test_gzip_conf_rejects_bad_level),
        T(test_gzip_conf_rejects_bad_window_and_mem_level),
        T(test_gzip_conf_rejects_bad_types),
        T(test_gzip_conf_rejects_unknown_key),
        T(test_gzip_conf_scalar_type_and_wildcards),
#undef T
    };

    return cmocka_run_group_tests_name("gzip", tests, NULL, NULL);
}
