/*
 * Unit tests of proxy/server.c: the CPU count behind `workers: auto`.
 */
#include <sched.h>
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

/*
 * The affinity mask is an input we can set: pin this thread to the first k
 * CPUs it may use, for every k, and the count must be k, capped by the
 * machine's own cgroup quota (read with the function tested above).
 */
static void test_server_auto_workers_follows_affinity_and_quota(void **state)
{
    cpu_set_t orig, set;
    unsigned quota = pf_server_cgroup_cpus("/sys/fs/cgroup");
    int k, cpu, taken;

    (void)state;
    assert_int_equal(sched_getaffinity(0, sizeof(orig), &orig), 0);
    for (k = 1; k <= CPU_COUNT(&orig); k++) {
        unsigned want = quota > 0 && quota < (unsigned)k ? quota : (unsigned)k;

        CPU_ZERO(&set);
        for (cpu = 0, taken = 0; cpu < CPU_SETSIZE && taken < k; cpu++) {
            if (CPU_ISSET(cpu, &orig)) {
                CPU_SET(cpu, &set);
                taken++;
            }
        }
        assert_int_equal(sched_setaffinity(0, sizeof(set), &set), 0);
        assert_int_equal(pf_server_auto_workers(), want);
    }
    assert_int_equal(sched_setaffinity(0, sizeof(orig), &orig), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_server_cgroup_v2_quota_rounds_up, setup, teardown),
        cmocka_unit_test_setup_teardown(test_server_cgroup_v2_max_is_unlimited, setup, teardown),
        cmocka_unit_test_setup_teardown(test_server_cgroup_v1_quota, setup, teardown),
        cmocka_unit_test_setup_teardown(test_server_cgroup_missing_files_mean_unlimited, setup,
                                        teardown),
        cmocka_unit_test(test_server_auto_workers_follows_affinity_and_quota),
    };

    return cmocka_run_group_tests_name("server", tests, NULL, NULL);
}
