/*
 * Unit tests of proxy/upstream/h1client.c: the response head reader (1xx
 * dropped, framing of the body, reuse) and the body de-framer, on an upstream
 * connection over a socketpair; the Transfer-Encoding check.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>
#include <event2/buffer.h>

#include "proxy/http1.h"
#include "proxy/upstream/h1client.h"
#include "proxy/upstream/pool.h"
#include "up_fx.h"

#define UNUSED __attribute__((unused))

static struct pf_worker w;
static struct pf_config *cfg;
static struct pf_upconn *uc;
static int peer;

static int setup(void **state UNUSED)
{
    int sv[2];

    pf_upstream_free_all();
    fx_worker_init(&w);
    cfg = fx_cfg_new(1, PF_BALANCE_ROUND_ROBIN);
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    peer = sv[1];
    uc = pf_upconn_new(&w, cfg->upstreams[0].endpoint_ids[0], sv[0], &cfg->upstreams[0]);
    uc->state = PF_UC_WAITING_HEAD;
    pf_h1c_reset(uc);
    return 0;
}

static int teardown(void **state UNUSED)
{
    pf_upconn_close(uc);
    close(peer);
    fx_cfg_free(cfg);
    fx_worker_fini(&w);
    pf_upstream_free_all();
    return 0;
}

/* Feed s to the parser; returns the bytes it used. */
static size_t parse(const char *s)
{
    return pf_h1c_parse(uc, s, strlen(s));
}

static void test_head_with_length_leaves_the_body_to_the_deframer(void **state UNUSED)
{
    const char *resp = "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello";
    struct evbuffer *in = evbuffer_new();
    size_t n = parse(resp);

    assert_true(uc->head_ready);
    assert_int_equal(uc->status, 200);
    assert_int_equal(uc->body_mode, PF_BODY_LENGTH);
    assert_true(uc->resp_keepalive);
    assert_int_equal(n, strlen(resp) - 5); /* the whole head, nothing of the body */
    evbuffer_add(in, resp + n, strlen(resp) - n - 2);
    assert_int_equal(pf_h1c_deframe(uc, in), 0); /* "hel": more to come */
    assert_int_equal(evbuffer_get_length(uc->body), 3);
    evbuffer_add(in, "lo", 2);
    assert_int_equal(pf_h1c_deframe(uc, in), 1);
    assert_int_equal(uc->state, PF_UC_DONE);
    assert_int_equal(evbuffer_get_length(uc->body), 5);
    evbuffer_free(in);
}

static void test_interim_response_is_dropped(void **state UNUSED)
{
    parse("HTTP/1.1 100 Continue\r\n\r\n");
    assert_false(uc->head_ready);
    assert_int_equal(uc->state, PF_UC_WAITING_HEAD);
    parse("HTTP/1.1 204 No Content\r\n\r\n");
    assert_true(uc->head_ready);
    assert_int_equal(uc->status, 204);
    assert_int_equal(uc->body_mode, PF_BODY_NONE); /* never a body */
}

static void test_upgrade_and_bad_status_are_errors(void **state UNUSED)
{
    parse("HTTP/1.1 101 Switching Protocols\r\n\r\n");
    assert_true(uc->resp_bad);
    pf_h1c_reset(uc);
    parse("HTTP/1.1 600 Nope\r\n\r\n");
    assert_true(uc->resp_bad);
    pf_h1c_reset(uc);
    parse("HTTP/1.1 099 Nope\r\n\r\n");
    assert_true(uc->resp_bad);
    pf_h1c_reset(uc);
    parse("HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\n");
    assert_true(uc->resp_bad);
    assert_false(uc->head_ready);
}

static void test_chunked_body_is_decoded_and_bad_framing_refused(void **state UNUSED)
{
    const char *head = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n";
    struct evbuffer *in = evbuffer_new();

    assert_int_equal(parse(head), strlen(head));
    assert_int_equal(uc->body_mode, PF_BODY_CHUNKED);
    evbuffer_add_printf(in, "3\r\nabc\r\n0\r\n\r\n");
    assert_int_equal(pf_h1c_deframe(uc, in), 1);
    assert_int_equal(evbuffer_get_length(uc->body), 3);
    /* the next response: a chunk size that is not hex */
    pf_h1c_reset(uc);
    uc->state = PF_UC_WAITING_HEAD;
    parse(head);
    evbuffer_add_printf(in, "zz\r\n");
    assert_int_equal(pf_h1c_deframe(uc, in), -1);
    evbuffer_free(in);
}

/* How the body is framed and whether the connection may serve the next request. */
static void test_framing_and_reuse_of_final_heads(void **state UNUSED)
{
    static const struct {
        const char *head;
        int body_mode;
        bool keepalive;
    } cases[] = {
        {"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", PF_BODY_NONE, true},
        {"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: close\r\n\r\n", PF_BODY_LENGTH,
         false},
        {"HTTP/1.1 200 OK\r\n\r\n", PF_BODY_CLOSE, false},
        {"HTTP/1.0 200 OK\r\nContent-Length: 3\r\n\r\n", PF_BODY_LENGTH, false},
        {"HTTP/1.0 200 OK\r\nContent-Length: 3\r\nConnection: keep-alive\r\n\r\n", PF_BODY_LENGTH,
         true},
        {"HTTP/1.1 304 Not Modified\r\nContent-Length: 3\r\n\r\n", PF_BODY_NONE, true},
        {"HTTP/1.1 200 OK\nTransfer-Encoding: chunked\n\n", PF_BODY_CHUNKED, true},
        {"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n", PF_BODY_CLOSE, false},
    };

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        print_message("case: %s\n", cases[i].head);
        pf_h1c_reset(uc);
        uc->state = PF_UC_WAITING_HEAD;
        assert_int_equal(parse(cases[i].head), strlen(cases[i].head));
        assert_false(uc->resp_bad);
        assert_true(uc->head_ready);
        assert_int_equal(uc->body_mode, cases[i].body_mode);
        assert_true(uc->resp_keepalive == cases[i].keepalive);
    }
}

static void test_transfer_encoding_other_than_chunked_once_is_bad(void **state UNUSED)
{
    static const struct {
        const char *value;
        bool ok;
    } cases[] = {
        {"chunked", true},        {"Chunked", true},           {"gzip", false},
        {"gzip, chunked", false}, {"chunked, chunked", false},
    };
    struct pf_hdr one;
    struct pf_hdrs h = {.v = &one, .n = 1, .cap = 1};

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        one = (struct pf_hdr){.name = "Transfer-Encoding",
                              .value = cases[i].value,
                              .name_len = 17,
                              .value_len = (uint32_t)strlen(cases[i].value),
                              .id = PF_H_TRANSFER_ENCODING};
        assert_true(pf_h1c_resp_te_ok(&h) == cases[i].ok);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_head_with_length_leaves_the_body_to_the_deframer,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_interim_response_is_dropped, setup, teardown),
        cmocka_unit_test_setup_teardown(test_upgrade_and_bad_status_are_errors, setup, teardown),
        cmocka_unit_test_setup_teardown(test_chunked_body_is_decoded_and_bad_framing_refused, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_framing_and_reuse_of_final_heads, setup, teardown),
        cmocka_unit_test_setup_teardown(test_transfer_encoding_other_than_chunked_once_is_bad,
                                        setup, teardown),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
