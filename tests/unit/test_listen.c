/*
 * Unit tests of proxy/listen.c: the backlog capping and the connection cap
 * the open files limit allows.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "proxy/listen.h"

static unsigned backlog_with(const char *somaxconn, unsigned want, bool *capped)
{
    char path[] = "/tmp/pf-test-somaxconn-XXXXXX";
    int fd = mkstemp(path);
    unsigned b;

    assert_true(fd >= 0);
    assert_int_equal(write(fd, somaxconn, strlen(somaxconn)), (ssize_t)strlen(somaxconn));
    close(fd);
    b = pf_listen_backlog(want, path, capped);
    unlink(path);
    return b;
}

static void test_listen_backlog_capped_by_somaxconn(void **state)
{
    bool capped = true;

    (void)state;
    assert_int_equal(backlog_with("128\n", 1024, &capped), 128);
    assert_true(capped);
    assert_int_equal(backlog_with("4096\n", 1024, &capped), 1024);
    assert_false(capped);
    assert_int_equal(backlog_with("1024\n", 1024, &capped), 1024);
    assert_false(capped);
    assert_int_equal(backlog_with("garbage\n", 1024, &capped), 1024);
    assert_false(capped);
    /* unreadable: the setting as it is */
    assert_int_equal(pf_listen_backlog(512, "/nonexistent/somaxconn", &capped), 512);
    assert_false(capped);
}

static void test_listen_fd_cap_leaves_room_for_upstreams(void **state)
{
    (void)state;
    /* a client and its upstream connection both fit in what the reserve leaves */
    assert_int_equal(pf_listen_fd_cap(64, 30), 17);
    assert_true(2 * pf_listen_fd_cap(64, 30) + 30 <= 64);
    assert_int_equal(pf_listen_fd_cap(1048576, 40), (1048576 - 40) / 2);
    /* nothing left: one connection still, not zero (nothing would ever be accepted) */
    assert_int_equal(pf_listen_fd_cap(20, 30), 1);
    assert_int_equal(pf_listen_fd_cap(32, 30), 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_listen_backlog_capped_by_somaxconn),
        cmocka_unit_test(test_listen_fd_cap_leaves_room_for_upstreams),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
