/*
 * Unit tests for proxy/bufpool.c: the per-thread pools of libevent's buffer
 * memory and of empty evbuffers.
 */
#include <malloc.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include <event2/buffer.h>

#include "proxy/bufpool.h"

/* A freed block is reused LIFO by the next request of its class, and only then. */
static void test_bufpool_reuses_blocks_lifo(void **state)
{
    void *a, *b, *c;

    (void)state;
    pf_bufpool_start();
    a = pf_bufpool_malloc(4096);
    b = pf_bufpool_malloc(4096);
    assert_non_null(a);
    assert_non_null(b);
    memset(a, 1, 4096);
    pf_bufpool_free(a);
    pf_bufpool_free(b);
    assert_int_equal(pf_bufpool_count(), 2);
    assert_true(pf_bufpool_bytes() >= 2 * 4096);
    /* another class does not take them */
    c = pf_bufpool_malloc(16384);
    assert_ptr_not_equal(c, a);
    assert_ptr_not_equal(c, b);
    assert_int_equal(pf_bufpool_count(), 2);
    pf_bufpool_free(c);
    assert_int_equal(pf_bufpool_count(), 3);
    /* a smaller request of the class (libevent rounds up, others may not) is served */
    assert_ptr_equal(pf_bufpool_malloc(3000), b);
    assert_ptr_equal(pf_bufpool_malloc(4096), a);
    assert_true(malloc_usable_size(a) >= 4096);
    memset(a, 2, 4096); /* the whole block is usable again (ASan would report otherwise) */
    pf_bufpool_free(a);
    pf_bufpool_free(b);
    pf_bufpool_stop(); /* frees them all: a leak here fails under ASan */
    assert_int_equal(pf_bufpool_count(), 0);
    assert_int_equal(pf_bufpool_bytes(), 0);
}

/* Small and huge blocks are never cached; nothing is cached before start or after stop. */
static void test_bufpool_bounds_and_off(void **state)
{
    void *p;

    (void)state;
    p = pf_bufpool_malloc(8192);
    pf_bufpool_free(p); /* off: freed */
    assert_int_equal(pf_bufpool_count(), 0);
    pf_bufpool_start();
    pf_bufpool_free(pf_bufpool_malloc(100));
    pf_bufpool_free(pf_bufpool_malloc(PF_BUFPOOL_MAX * 4));
    assert_int_equal(pf_bufpool_count(), 0);
    pf_bufpool_free(NULL);
    /* a block that realloc moved or grew is still a plain malloc block */
    p = pf_bufpool_realloc(pf_bufpool_malloc(2048), 65536);
    assert_non_null(p);
    pf_bufpool_free(p);
    assert_int_equal(pf_bufpool_count(), 1);
    pf_bufpool_stop();
    assert_int_equal(pf_bufpool_count(), 0);
    p = pf_bufpool_malloc(8192);
    pf_bufpool_free(p);
    assert_int_equal(pf_bufpool_count(), 0);
}

/* The cache holds at most PF_BUFPOOL_BYTES: the rest is freed at once. */
static void test_bufpool_byte_limit(void **state)
{
    enum { N = PF_BUFPOOL_BYTES / PF_BUFPOOL_MAX + 4 };
    void *p[N];

    (void)state;
    pf_bufpool_start();
    for (unsigned i = 0; i < N; i++)
        p[i] = pf_bufpool_malloc(PF_BUFPOOL_MAX);
    for (unsigned i = 0; i < N; i++)
        pf_bufpool_free(p[i]);
    assert_true(pf_bufpool_bytes() <= PF_BUFPOOL_BYTES);
    assert_true(pf_bufpool_count() < N);
    assert_true(pf_bufpool_count() >= N - 8);
    pf_bufpool_stop();
    assert_int_equal(pf_bufpool_bytes(), 0);
}

/* Empty evbuffers come back emptied, LIFO, up to PF_BUFPOOL_EVB_MAX. */
static void test_bufpool_evbuffers(void **state)
{
    struct evbuffer *a, *b;
    struct evbuffer *many[PF_BUFPOOL_EVB_MAX + 3];

    (void)state;
    pf_bufpool_start();
    a = pf_bufpool_evbuffer();
    b = pf_bufpool_evbuffer();
    evbuffer_add(a, "left over", 9);
    pf_bufpool_evbuffer_put(a);
    pf_bufpool_evbuffer_put(b);
    pf_bufpool_evbuffer_put(NULL);
    assert_int_equal(pf_bufpool_evbuffer_count(), 2);
    assert_ptr_equal(pf_bufpool_evbuffer(), b);
    assert_ptr_equal(pf_bufpool_evbuffer(), a);
    assert_int_equal(evbuffer_get_length(a), 0);
    pf_bufpool_evbuffer_put(a);
    pf_bufpool_evbuffer_put(b);
    for (unsigned i = 0; i < PF_BUFPOOL_EVB_MAX + 3; i++)
        many[i] = pf_bufpool_evbuffer();
    assert_int_equal(pf_bufpool_evbuffer_count(), 0);
    for (unsigned i = 0; i < PF_BUFPOOL_EVB_MAX + 3; i++)
        pf_bufpool_evbuffer_put(many[i]);
    assert_int_equal(pf_bufpool_evbuffer_count(), PF_BUFPOOL_EVB_MAX);
    pf_bufpool_stop(); /* frees them */
    assert_int_equal(pf_bufpool_evbuffer_count(), 0);
    a = pf_bufpool_evbuffer();
    pf_bufpool_evbuffer_put(a); /* off: freed */
    assert_int_equal(pf_bufpool_evbuffer_count(), 0);
}

/* A worker thread's pool is its own, and it is released when the thread leaves (worker_main). */
static void *worker(void *arg)
{
    unsigned *kept = arg;
    void *p[4];

    pf_bufpool_start();
    for (unsigned i = 0; i < 4; i++)
        p[i] = pf_bufpool_malloc(32768);
    for (unsigned i = 0; i < 4; i++)
        pf_bufpool_free(p[i]);
    pf_bufpool_evbuffer_put(pf_bufpool_evbuffer());
    kept[0] = pf_bufpool_count();
    kept[1] = pf_bufpool_evbuffer_count();
    pf_bufpool_stop(); /* what worker_main does as the loop ends: a leak fails under ASan */
    kept[2] = pf_bufpool_count() + pf_bufpool_evbuffer_count();
    return NULL;
}

static void test_bufpool_per_thread_released_at_exit(void **state)
{
    pthread_t t;
    unsigned kept[3] = {0, 0, 99};

    (void)state;
    pf_bufpool_start();
    assert_int_equal(pthread_create(&t, NULL, worker, kept), 0);
    assert_int_equal(pthread_join(t, NULL), 0);
    assert_int_equal(kept[0], 4);
    assert_int_equal(kept[1], 1);
    assert_int_equal(kept[2], 0);
    assert_int_equal(pf_bufpool_count(), 0); /* this thread's pool saw none of it */
    pf_bufpool_stop();
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bufpool_reuses_blocks_lifo),
        cmocka_unit_test(test_bufpool_bounds_and_off),
        cmocka_unit_test(test_bufpool_byte_limit),
        cmocka_unit_test(test_bufpool_evbuffers),
        cmocka_unit_test(test_bufpool_per_thread_released_at_exit),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
