/*
 * Unit tests of proxy/notify.c (sd_notify's protocol) against a unix datagram
 * socket the test binds, by path and in the abstract namespace; and of the
 * probes listener's path filter (proxy/probes.c).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cmocka.h>

#include "proxy/notify.h"
#include "proxy/probes.h"

/* A datagram socket bound to name (a path, or '@' + an abstract name). */
static int bind_dgram(const char *name)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    size_t len = strlen(name);
    int fd = socket(AF_UNIX, SOCK_DGRAM, 0);

    assert_true(fd >= 0);
    memcpy(sa.sun_path, name, len);
    if (name[0] == '@')
        sa.sun_path[0] = '\0';
    assert_int_equal(bind(fd, (struct sockaddr *)&sa, offsetof(struct sockaddr_un, sun_path) + len),
                     0);
    return fd;
}

static void expect(int fd, const char *prefix)
{
    char buf[256];
    ssize_t n = recv(fd, buf, sizeof(buf) - 1, MSG_DONTWAIT);

    assert_true(n > 0);
    buf[n] = '\0';
    if (strncmp(buf, prefix, strlen(prefix)) != 0)
        fail_msg("got '%s', want '%s...'", buf, prefix);
}

static void test_notify_path(void **state)
{
    char path[64];
    int fd;

    (void)state;
    snprintf(path, sizeof(path), "/tmp/pf-notify-%d.sock", (int)getpid());
    unlink(path);
    fd = bind_dgram(path);
    setenv("NOTIFY_SOCKET", path, 1);
    assert_int_equal(pf_notify("READY=1"), 0);
    expect(fd, "READY=1");
    assert_int_equal(pf_notify_reloading(), 0);
    expect(fd, "RELOADING=1\nMONOTONIC_USEC=");
    assert_int_equal(pf_notify("STOPPING=1"), 0);
    expect(fd, "STOPPING=1");
    close(fd);
    unlink(path);
    /* nobody listening any more: an error, not a crash */
    assert_true(pf_notify("READY=1") < 0);
    unsetenv("NOTIFY_SOCKET");
}

static void test_notify_abstract(void **state)
{
    char name[64];
    int fd;

    (void)state;
    snprintf(name, sizeof(name), "@pf-notify-test-%d", (int)getpid());
    fd = bind_dgram(name);
    setenv("NOTIFY_SOCKET", name, 1);
    assert_int_equal(pf_notify("READY=1"), 0);
    expect(fd, "READY=1");
    close(fd);
    unsetenv("NOTIFY_SOCKET");
}

static void test_notify_off_and_bad(void **state)
{
    (void)state;
    unsetenv("NOTIFY_SOCKET");
    assert_int_equal(pf_notify("READY=1"), 0); /* not under systemd: nothing to do */
    setenv("NOTIFY_SOCKET", "relative/path", 1);
    assert_true(pf_notify("READY=1") < 0);
    unsetenv("NOTIFY_SOCKET");
}

static void test_probes_paths(void **state)
{
    (void)state;
    assert_true(pf_probes_path_ok("/live"));
    assert_true(pf_probes_path_ok("/ready?verbose=1"));
    assert_true(pf_probes_path_ok("/health"));
    assert_true(pf_probes_path_ok("/metrics"));
    assert_false(pf_probes_path_ok("/config"));
    assert_false(pf_probes_path_ok("/reload"));
    assert_false(pf_probes_path_ok("/live/"));
    assert_false(pf_probes_path_ok("/livex"));
    assert_false(pf_probes_path_ok("/"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_notify_path),
        cmocka_unit_test(test_notify_abstract),
        cmocka_unit_test(test_notify_off_and_bad),
        cmocka_unit_test(test_probes_paths),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
