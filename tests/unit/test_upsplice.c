/*
 * The request side of proxy/upstream/upsplice.c, on socket pairs: the pump
 * moves a Content-Length body client -> pipe -> upstream and reads no byte
 * past it (a pipelined request stays in the client socket), writes nothing
 * upstream while the upstream stream's buffered output (the head) is there,
 * keeps body_left as the bytes not yet written upstream, and gives the pipe
 * back (the client stream reads again) once the body has all gone.
 */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>
#include <event2/buffer.h>

#include "proxy/pipe.h"
#include "proxy/stream.h"
#include "proxy/upstream/upsplice.h"
#include "tests/unit/up_fx.h"

struct fx {
    struct pf_worker w;
    struct pf_conn c;
    struct pf_upconn uc;
    struct pf_tx tx;
    int client; /* the test's end of the client connection */
    int origin; /* the test's end of the upstream connection */
};

static int setup(void **state)
{
    struct fx *f = pf_xcalloc(1, sizeof(*f));
    int a[2], b[2];

    if (socketpair(AF_UNIX, SOCK_STREAM, 0, a) != 0 || socketpair(AF_UNIX, SOCK_STREAM, 0, b) != 0)
        return -1;
    fx_worker_init(&f->w);
    f->client = a[0];
    f->origin = b[0];
    f->c.w = &f->w;
    f->c.s = pf_stream_new(&f->w.sloop, a[1]);
    f->c.state = PF_CONN_READING_BODY;
    f->c.body_mode = PF_BODY_LENGTH;
    f->uc.w = &f->w;
    f->uc.s = pf_stream_new(&f->w.sloop, b[1]);
    f->tx.w = &f->w;
    f->tx.conn = &f->c;
    f->tx.uc = &f->uc;
    f->w.pipes = pf_pipes_new(PF_PIPES_MAX, 0);
    f->uc.req_pipe = pf_pipes_get(f->w.pipes);
    f->c.s->raw = true; /* as pf_upsplice_req_begin leaves them */
    *state = f;
    return f->uc.req_pipe == NULL ? -1 : 0;
}

static int teardown(void **state)
{
    struct fx *f = *state;

    pf_upsplice_req_end(&f->tx);
    pf_stream_free(f->c.s);
    pf_stream_free(f->uc.s);
    pf_pipes_free(f->w.pipes);
    fx_worker_fini(&f->w);
    close(f->client);
    close(f->origin);
    free(f);
    return 0;
}

/* Read exactly n bytes from fd (blocking socket pair end). */
static void read_all(int fd, char *buf, size_t n)
{
    size_t got = 0;

    while (got < n) {
        ssize_t r = read(fd, buf + got, n - got);

        assert_true(r > 0);
        got += (size_t)r;
    }
}

static void test_upsplice_req_stops_at_content_length(void **state)
{
    struct fx *f = *state;
    static const char body[] = "0123456789abcdefghij";
    static const char next[] = "GET /next HTTP/1.1\r\n";
    char buf[64];

    assert_int_equal(write(f->client, body, 20), 20);
    assert_int_equal(write(f->client, next, sizeof(next) - 1), (ssize_t)sizeof(next) - 1);
    f->c.body_left = 20;
    assert_false(pf_upsplice_req_pump(&f->tx));
    assert_int_equal(f->c.body_left, 0);
    assert_int_equal(f->tx.body_in, 20);
    assert_null(f->uc.req_pipe); /* given back */
    assert_false(f->c.s->raw);   /* the client stream reads again */
    read_all(f->origin, buf, 20);
    assert_memory_equal(buf, body, 20);
    /* the pipelined request is still in the client socket, whole */
    assert_int_equal(recv(f->c.s->fd, buf, sizeof(buf), MSG_DONTWAIT), sizeof(next) - 1);
    assert_memory_equal(buf, next, sizeof(next) - 1);
}

static void test_upsplice_req_buffered_output_first(void **state)
{
    struct fx *f = *state;
    char buf[32];

    evbuffer_add(f->uc.s->out, "HEAD", 4);
    assert_int_equal(write(f->client, "body", 4), 4);
    f->c.body_left = 8;
    /* the body is read into the pipe, not written: the head is still queued */
    assert_true(pf_upsplice_req_pump(&f->tx));
    assert_int_equal(f->c.body_left, 8);
    assert_int_equal(f->tx.body_in, 4);
    assert_int_equal(recv(f->origin, buf, sizeof(buf), MSG_DONTWAIT), -1);
    assert_int_equal(errno, EAGAIN);
    pf_stream_flush(f->uc.s); /* the head leaves */
    /* the rest of the body has not come: the pipe drains, the pump waits for the client */
    assert_false(pf_upsplice_req_pump(&f->tx));
    assert_int_equal(f->c.body_left, 4);
    assert_non_null(f->uc.req_pipe);
    read_all(f->origin, buf, 8);
    assert_memory_equal(buf, "HEADbody", 8);
    assert_int_equal(write(f->client, "tail", 4), 4);
    assert_false(pf_upsplice_req_pump(&f->tx));
    assert_int_equal(f->c.body_left, 0);
    assert_null(f->uc.req_pipe);
    read_all(f->origin, buf, 4);
    assert_memory_equal(buf, "tail", 4);
}

static void test_upsplice_req_full_upstream_waits(void **state)
{
    struct fx *f = *state;
    static char chunk[65536];
    size_t sent = 0, got = 0;
    int sz = 4096;
    bool blocked = false;

    memset(chunk, 'x', sizeof(chunk));
    setsockopt(f->uc.s->fd, SOL_SOCKET, SO_SNDBUF, &sz, sizeof(sz));
    fcntl(f->client, F_SETFL, O_NONBLOCK);
    f->c.body_left = 4 << 20;
    /* the origin reads nothing: the pump must end up waiting for it */
    for (int i = 0; i < 200 && !blocked; i++) {
        ssize_t w = write(f->client, chunk, sizeof(chunk));

        if (w > 0)
            sent += (size_t)w;
        blocked = pf_upsplice_req_pump(&f->tx);
    }
    assert_true(blocked);
    assert_true(f->uc.req_pipe->len > 0);
    assert_int_equal(f->c.body_left + f->tx.body_in - f->uc.req_pipe->len, 4 << 20);
    /* what left the pipe is what the origin can read, no more */
    while (got < sent) {
        char buf[65536];
        ssize_t r = recv(f->origin, buf, sizeof(buf), MSG_DONTWAIT);

        if (r <= 0)
            break;
        got += (size_t)r;
    }
    assert_int_equal(got, f->tx.body_in - f->uc.req_pipe->len);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_upsplice_req_stops_at_content_length, setup, teardown),
        cmocka_unit_test_setup_teardown(test_upsplice_req_buffered_output_first, setup, teardown),
        cmocka_unit_test_setup_teardown(test_upsplice_req_full_upstream_waits, setup, teardown),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
