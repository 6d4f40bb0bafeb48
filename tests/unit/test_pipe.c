/*
 * The per-worker pipe pool of splice (proxy/pipe.c): an empty pipe given
 * back is handed out again (LIFO), the pool hands out at most max pipes, a
 * pipe with bytes left in it is closed rather than reused, at most
 * PF_PIPES_KEEP idle pipes are kept, and pf_pipes_free() closes the idle
 * ones (a worker thread's exit).
 */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <unistd.h>

#include <cmocka.h>

#include "proxy/pipe.h"

static bool fd_open(int fd)
{
    return fcntl(fd, F_GETFD) != -1 || errno != EBADF;
}

static void test_pipe_reuses_empty_pipes_lifo(void **state)
{
    struct pf_pipes *pp = pf_pipes_new(8, 0);
    struct pf_pipe *a, *b, *c;
    int a_rd, a_wr;

    (void)state;
    a = pf_pipes_get(pp);
    b = pf_pipes_get(pp);
    assert_non_null(a);
    assert_non_null(b);
    assert_true(a != b);
    assert_int_equal(pp->n_used, 2);
    a_rd = a->rd;
    a_wr = a->wr;
    pf_pipes_put(pp, b);
    pf_pipes_put(pp, a);
    assert_int_equal(pp->n_used, 0);
    assert_int_equal(pp->n_idle, 2);
    c = pf_pipes_get(pp); /* the last one given back */
    assert_ptr_equal(c, a);
    assert_int_equal(c->rd, a_rd);
    assert_int_equal(c->wr, a_wr);
    assert_int_equal(c->len, 0);
    pf_pipes_put(pp, c);
    pf_pipes_free(pp);
}

static void test_pipe_limit(void **state)
{
    struct pf_pipes *pp = pf_pipes_new(3, 0);
    struct pf_pipe *p[3];

    (void)state;
    for (int i = 0; i < 3; i++) {
        p[i] = pf_pipes_get(pp);
        assert_non_null(p[i]);
    }
    assert_null(pf_pipes_get(pp)); /* the limit: the body is copied instead */
    pf_pipes_put(pp, p[1]);
    p[1] = pf_pipes_get(pp);
    assert_non_null(p[1]);
    assert_null(pf_pipes_get(pp));
    for (int i = 0; i < 3; i++)
        pf_pipes_put(pp, p[i]);
    assert_int_equal(pp->n_used, 0);
    pf_pipes_free(pp);
}

static void test_pipe_with_bytes_left_is_closed(void **state)
{
    struct pf_pipes *pp = pf_pipes_new(8, 0);
    struct pf_pipe *p = pf_pipes_get(pp), *q;
    int rd, wr;

    (void)state;
    assert_non_null(p);
    assert_int_equal(write(p->wr, "abc", 3), 3);
    p->len = 3; /* an aborted body */
    rd = p->rd;
    wr = p->wr;
    pf_pipes_put(pp, p);
    assert_int_equal(pp->n_idle, 0);
    assert_int_equal(pp->n_used, 0);
    assert_false(fd_open(rd));
    assert_false(fd_open(wr));
    q = pf_pipes_get(pp); /* a new, empty one */
    assert_non_null(q);
    assert_int_equal(q->len, 0);
    {
        char c;

        assert_int_equal(read(q->rd, &c, 1), -1); /* nothing of the old bytes */
        assert_int_equal(errno, EAGAIN);
    }
    pf_pipes_put(pp, q);
    pf_pipes_free(pp);
}

static void test_pipe_idle_kept_bounded(void **state)
{
    struct pf_pipes *pp = pf_pipes_new(PF_PIPES_KEEP + 4, 0);
    struct pf_pipe *p[PF_PIPES_KEEP + 1];
    int last_rd;

    (void)state;
    for (int i = 0; i <= PF_PIPES_KEEP; i++) {
        p[i] = pf_pipes_get(pp);
        assert_non_null(p[i]);
    }
    last_rd = p[PF_PIPES_KEEP]->rd;
    for (int i = 0; i <= PF_PIPES_KEEP; i++)
        pf_pipes_put(pp, p[i]);
    assert_int_equal(pp->n_idle, PF_PIPES_KEEP);
    assert_false(fd_open(last_rd)); /* one too many: closed */
    pf_pipes_free(pp);
}

static void test_pipe_free_closes_idle(void **state)
{
    struct pf_pipes *pp = pf_pipes_new(4, 0);
    struct pf_pipe *a = pf_pipes_get(pp), *b = pf_pipes_get(pp);
    int fds[4] = {a->rd, a->wr, b->rd, b->wr};

    (void)state;
    pf_pipes_put(pp, a);
    pf_pipes_put(pp, b);
    for (int i = 0; i < 4; i++)
        assert_true(fd_open(fds[i]));
    pf_pipes_free(pp); /* the worker exits */
    for (int i = 0; i < 4; i++)
        assert_false(fd_open(fds[i]));
    pf_pipes_free(NULL);
}

static void test_pipe_size_asked(void **state)
{
    struct pf_pipes *pp = pf_pipes_new(2, PF_PIPE_SIZE);
    struct pf_pipe *p = pf_pipes_get(pp);

    (void)state;
    assert_non_null(p);
    assert_int_equal(p->cap, (size_t)fcntl(p->wr, F_GETPIPE_SZ));
    /* the kernel may hold a user to smaller pipes (pipe-user-pages-soft); never bigger */
    assert_true(p->cap <= PF_PIPE_SIZE || p->cap == 65536);
    assert_int_not_equal(fcntl(p->rd, F_GETFL) & O_NONBLOCK, 0);
    pf_pipes_put(pp, p);
    pf_pipes_free(pp);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_pipe_reuses_empty_pipes_lifo),
        cmocka_unit_test(test_pipe_limit),
        cmocka_unit_test(test_pipe_with_bytes_left_is_closed),
        cmocka_unit_test(test_pipe_idle_kept_bounded),
        cmocka_unit_test(test_pipe_free_closes_idle),
        cmocka_unit_test(test_pipe_size_asked),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
