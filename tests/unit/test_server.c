/*
 * Unit tests of proxy/server.c: the CPU count behind `workers: auto`.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "proxy/server.h"

static char root[64];

static void put(const char *file, const char *text)
{
    char path[256];
    FILE *f;

    snprintf(path, sizeof(path), "%s/%s", root, file);
    f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

static int setup(void **state)
{
    char cpu[128];

    (void)state;
    strcpy(root, "/tmp/pf-cgroup-XXXXXX");
    assert_non_null(mkdtemp(root));
    snprintf(cpu, sizeof(cpu), "%s/cpu", root);
    assert_int_equal(mkdir(cpu, 0700), 0);
    return 0;
}

static int teardown(void **state)
{
    char cmd[128];

    (void)state;
    snprintf(cmd, sizeof(cmd), "rm -rf %s", root);
    assert_int_equal(system(cmd), 0);
    return 0;
}

static void test_server_cgroup_v2_quota_rounds_up(void **state)
{
    (void)state;
    put("cpu.max", "50000 100000\n");
    assert_int_equal(pf_server_cgroup_cpus(root), 1); /* 500m: one worker */
    put("cpu.max", "150000 100000\n");
    assert_int_equal(pf_server_cgroup_cpus(root), 2);
    put("cpu.max", "200000 100000\n");
    assert_int_equal(pf_server_cgroup_cpus(root), 2);
}

static void test_server_cgroup_v2_max_is_unlimited(void **state)
{
    (void)state;
    put("cpu.max", "max 100000\n");
    assert_int_equal(pf_server_cgroup_cpus(root), 0);
}

static void test_server_cgroup_v1_quota(void **state)
{
    (void)state;
    put("cpu/cpu.cfs_quota_us", "250000\n");
    put("cpu/cpu.cfs_period_us", "100000\n");
    assert_int_equal(pf_server_cgroup_cpus(root), 3);
    put("cpu/cpu.cfs_quota_us", "-1\n");
    assert_int_equal(pf_server_cgroup_cpus(root), 0);
}

static void test_server_cgroup_missing_files_mean_unlimited(void **state)
{
    (void)state;
    assert_int_equal(pf_server_cgroup_cpus(root), 0);
    assert_int_equal(pf_server_cgroup_cpus("/nonexistent"), 0);
}

static void test_server_auto_workers_is_at_least_one(void **state)
{
    (void)state;
    assert_true(pf_server_auto_workers() >= 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_server_cgroup_v2_quota_rounds_up, setup, teardown),
        cmocka_unit_test_setup_teardown(test_server_cgroup_v2_max_is_unlimited, setup, teardown),
        cmocka_unit_test_setup_teardown(test_server_cgroup_v1_quota, setup, teardown),
        cmocka_unit_test_setup_teardown(test_server_cgroup_missing_files_mean_unlimited, setup,
                                        teardown),
        cmocka_unit_test(test_server_auto_workers_is_at_least_one),
    };

    return cmocka_run_group_tests_name("server", tests, NULL, NULL);
}
