/*
 * Unit tests for proxy/arena.c: the per-transaction bump allocator.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "proxy/arena.h"

/* Let malloc(SIZE_MAX) return NULL under sanitizers so the OOM path can be tested. */
#if defined(__SANITIZE_ADDRESS__)
const char *__asan_default_options(void);
const char *__asan_default_options(void)
{
    return "allocator_may_return_null=1";
}
#endif /* __SANITIZE_ADDRESS__ */
#if defined(__SANITIZE_THREAD__)
const char *__tsan_default_options(void);
const char *__tsan_default_options(void)
{
    return "allocator_may_return_null=1";
}
#endif /* __SANITIZE_THREAD__ */

#define CHUNK 8192

static bool all_zero(const unsigned char *p, size_t n)
{
    size_t i;

    for (i = 0; i < n; i++) {
        if (p[i] != 0)
            return false;
    }
    return true;
}

static void test_arena_allocations_are_16_byte_aligned(void **state)
{
    struct pf_arena *a = pf_arena_new(CHUNK);
    size_t sizes[] = {1, 3, 7, 16, 17, 33, 100, 1, 5000, 9, 20000, 2};
    size_t i;
    int round;

    (void)state;
    for (round = 0; round < 20; round++) {
        for (i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
            void *p = pf_arena_alloc(a, sizes[i]);

            assert_non_null(p);
            assert_int_equal((uintptr_t)p % 16, 0);
        }
    }
    pf_arena_free(a);
}

static void test_arena_allocations_are_zeroed(void **state)
{
    struct pf_arena *a = pf_arena_new(CHUNK);
    unsigned char *p;
    int i;

    (void)state;
    /* Dirty memory, free it, then check a fresh arena in the same heap is zeroed. */
    for (i = 0; i < 200; i++) {
        p = pf_arena_alloc(a, 100);
        assert_true(all_zero(p, 100));
        memset(p, 0xa5, 100);
    }
    p = pf_arena_alloc(a, 50000);
    assert_true(all_zero(p, 50000));
    memset(p, 0xa5, 50000);
    pf_arena_free(a);

    a = pf_arena_new(CHUNK);
    for (i = 0; i < 200; i++) {
        p = pf_arena_alloc(a, 100);
        assert_true(all_zero(p, 100));
    }
    pf_arena_free(a);
}

static void test_arena_grows_across_chunks(void **state)
{
    struct pf_arena *a = pf_arena_new(1024);
    unsigned char *blocks[300];
    int i;

    (void)state;
    /* 300 x 64 bytes is far more than one 1 KiB chunk. */
    for (i = 0; i < 300; i++) {
        blocks[i] = pf_arena_alloc(a, 64);
        memset(blocks[i], i & 0xff, 64);
    }
    for (i = 0; i < 300; i++) {
        assert_int_equal(blocks[i][0], i & 0xff);
        assert_int_equal(blocks[i][63], i & 0xff);
    }
    pf_arena_free(a);
}

static void test_arena_large_allocation_gets_its_own_chunk(void **state)
{
    struct pf_arena *a = pf_arena_new(4096);
    unsigned char *small1;
    unsigned char *big;
    unsigned char *small2;

    (void)state;
    small1 = pf_arena_alloc(a, 32);
    big = pf_arena_alloc(a, 1 << 20);
    assert_non_null(big);
    memset(big, 0x5a, 1 << 20);
    small2 = pf_arena_alloc(a, 32);
    /* The small allocation keeps using the first chunk, right after small1. */
    assert_ptr_equal(small2, small1 + 32);
    assert_true(all_zero(small2, 32));
    assert_int_equal(big[(1 << 20) - 1], 0x5a);
    pf_arena_free(a);
}

static void test_arena_strndup_copies_and_terminates(void **state)
{
    struct pf_arena *a = pf_arena_new(CHUNK);
    const char *src = "Host: example.com\r\n";
    char *s;

    (void)state;
    s = pf_arena_strndup(a, src, 4);
    assert_string_equal(s, "Host");
    assert_int_equal((uintptr_t)s % 16, 0);
    s = pf_arena_strndup(a, "abc", 10);
    assert_string_equal(s, "abc");
    s = pf_arena_strndup(a, src, 0);
    assert_string_equal(s, "");
    pf_arena_free(a);
}

static char order[16];
static size_t norder;

static void record(void *arg)
{
    order[norder++] = *(const char *)arg;
}

static void test_arena_defers_run_once_in_reverse_order(void **state)
{
    struct pf_arena *a = pf_arena_new(512);
    static const char tags[] = "abcde";
    int i;

    (void)state;
    norder = 0;
    memset(order, 0, sizeof(order));
    for (i = 0; i < 5; i++) {
        pf_arena_defer(a, record, (void *)&tags[i]);
        /* Interleave allocations so the records land in several chunks. */
        pf_arena_alloc(a, 200);
    }
    assert_int_equal(norder, 0);
    pf_arena_free(a);
    assert_int_equal(norder, 5);
    assert_memory_equal(order, "edcba", 5);
}

static struct pf_arena *nested_arena;

static void nested_defer(void *arg)
{
    (void)arg;
    pf_arena_defer(nested_arena, record, (void *)"z");
}

static void test_arena_defer_registered_by_a_destructor_still_runs(void **state)
{
    (void)state;
    norder = 0;
    nested_arena = pf_arena_new(CHUNK);
    pf_arena_defer(nested_arena, record, (void *)"a");
    pf_arena_defer(nested_arena, nested_defer, NULL);
    pf_arena_free(nested_arena);
    assert_int_equal(norder, 2);
    assert_memory_equal(order, "za", 2);
}

static void test_arena_used_counts_bytes_handed_out(void **state)
{
    struct pf_arena *a = pf_arena_new(CHUNK);

    (void)state;
    assert_int_equal(pf_arena_used(a), 0);
    pf_arena_alloc(a, 10);
    assert_int_equal(pf_arena_used(a), 10);
    pf_arena_alloc(a, 100);
    assert_int_equal(pf_arena_used(a), 110);
    pf_arena_alloc(a, 100000);
    assert_int_equal(pf_arena_used(a), 100110);
    pf_arena_strndup(a, "abc", 3);
    assert_int_equal(pf_arena_used(a), 100114);
    pf_arena_free(a);
}

static void test_arena_free_null_is_a_no_op(void **state)
{
    (void)state;
    pf_arena_free(NULL);
}

static void test_arena_tiny_chunk_size_still_works(void **state)
{
    struct pf_arena *a = pf_arena_new(1);
    void *p;
    int i;

    (void)state;
    for (i = 0; i < 100; i++) {
        p = pf_arena_alloc(a, (size_t)i * 7);
        assert_non_null(p);
        assert_int_equal((uintptr_t)p % 16, 0);
    }
    pf_arena_free(a);
}

static void test_arena_xstrdup_copies(void **state)
{
    char *s = pf_xstrdup("pilotfish");
    char *t = pf_xstrndup("pilotfish", 5);
    char *u = pf_xcalloc(4, 8);

    (void)state;
    assert_string_equal(s, "pilotfish");
    assert_string_equal(t, "pilot");
    assert_true(all_zero((unsigned char *)u, 32));
    u = pf_xrealloc(u, 4096);
    free(s);
    free(t);
    free(u);
}

static void test_arena_xmalloc_exits_1_when_out_of_memory(void **state)
{
    pid_t pid;
    int status;

    (void)state;
    pid = fork();
    assert_true(pid != -1);
    if (pid == 0) {
        /* Silence the fatal log line in the child. */
        if (freopen("/dev/null", "w", stderr) == NULL)
            _exit(2);
        pf_xmalloc(SIZE_MAX - 4096);
        _exit(0);
    }
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 1);
}

/* ---- the per-thread pool of first chunks ---- */

static unsigned defer_runs;

static void count_defer(void *arg)
{
    (void)arg;
    defer_runs++;
}

static void test_arena_pool_reuses_first_chunks_lifo(void **state)
{
    struct pf_arena *a, *b, *c;

    (void)state;
    pf_arena_pool_start();
    a = pf_arena_new(4096);
    b = pf_arena_new(4096);
    defer_runs = 0;
    pf_arena_defer(a, count_defer, NULL);
    memset(pf_arena_alloc(a, 100), 0xab, 100);
    pf_arena_free(a);
    assert_int_equal(defer_runs, 1); /* destructors still run */
    pf_arena_free(b);
    assert_int_equal(pf_arena_pool_count(), 2);
    c = pf_arena_new(4096);
    assert_ptr_equal(c, b); /* the last one freed comes back first */
    assert_int_equal(pf_arena_used(c), 0);
    {
        unsigned char *p = pf_arena_alloc(c, 100);

        for (int i = 0; i < 100; i++) /* zeroed as always, whatever was there */
            assert_int_equal(p[i], 0);
    }
    /* another size is not served from the pool */
    b = pf_arena_new(8192);
    assert_ptr_not_equal(b, a);
    pf_arena_free(b);
    pf_arena_free(c);
    pf_arena_pool_stop();
    assert_int_equal(pf_arena_pool_count(), 0);
}

static void test_arena_pool_is_bounded_and_off_by_default(void **state)
{
    struct pf_arena *v[PF_ARENA_POOL_MAX + 4];

    (void)state;
    pf_arena_free(pf_arena_new(1024)); /* not started on this thread: freed */
    assert_int_equal(pf_arena_pool_count(), 0);
    pf_arena_pool_start();
    for (unsigned i = 0; i < PF_ARENA_POOL_MAX + 4; i++)
        v[i] = pf_arena_new(1024);
    for (unsigned i = 0; i < PF_ARENA_POOL_MAX + 4; i++)
        pf_arena_free(v[i]);
    assert_int_equal(pf_arena_pool_count(), PF_ARENA_POOL_MAX);
    pf_arena_pool_stop(); /* frees them all (a leak here fails under ASan) */
    assert_int_equal(pf_arena_pool_count(), 0);
    pf_arena_free(pf_arena_new(1024)); /* stopped: freed again */
    assert_int_equal(pf_arena_pool_count(), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_arena_allocations_are_16_byte_aligned),
        cmocka_unit_test(test_arena_allocations_are_zeroed),
        cmocka_unit_test(test_arena_grows_across_chunks),
        cmocka_unit_test(test_arena_large_allocation_gets_its_own_chunk),
        cmocka_unit_test(test_arena_strndup_copies_and_terminates),
        cmocka_unit_test(test_arena_defers_run_once_in_reverse_order),
        cmocka_unit_test(test_arena_defer_registered_by_a_destructor_still_runs),
        cmocka_unit_test(test_arena_used_counts_bytes_handed_out),
        cmocka_unit_test(test_arena_free_null_is_a_no_op),
        cmocka_unit_test(test_arena_tiny_chunk_size_still_works),
        cmocka_unit_test(test_arena_xstrdup_copies),
        cmocka_unit_test(test_arena_xmalloc_exits_1_when_out_of_memory),
        cmocka_unit_test(test_arena_pool_reuses_first_chunks_lifo),
        cmocka_unit_test(test_arena_pool_is_bounded_and_off_by_default),
    };

    return cmocka_run_group_tests_name("arena", tests, NULL, NULL);
}
