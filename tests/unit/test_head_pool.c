/*
 * The per-thread pool of message head buffers (proxy/head.c): a head gives
 * its first-size buffers back when released after export, the next head on
 * the same thread takes them (LIFO), the pool is bounded, grown buffers are
 * freed rather than pooled, and pf_head_pool_drain() empties it (a worker
 * thread's exit; a thread that skipped it would show as a leak under ASan).
 */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "proxy/arena.h"
#include "proxy/http1.h"

enum { HEAD_URL = 1, HEAD_FIELD = 2, HEAD_VALUE = 3 };

static void put(struct pf_head *h, int what, const char *s)
{
    assert_int_equal(pf_head_append(h, what, s, strlen(s), 1 << 20, 1000), 0);
}

/* a small head: one buffer and one entry array, both of the first size */
static void small_head(struct pf_head *h)
{
    pf_head_reset(h);
    put(h, HEAD_URL, "/x");
    put(h, HEAD_FIELD, "Host");
    put(h, HEAD_VALUE, "a");
    pf_head_close(h);
}

static void test_head_pool_reuses_lifo(void **state)
{
    struct pf_head h = {0};
    void *buf, *ent;

    (void)state;
    small_head(&h);
    buf = h.buf;
    ent = h.ent;
    pf_head_release(&h);
    assert_null(h.buf);
    assert_null(h.ent);
    assert_int_equal(h.cap, 0);
    assert_int_equal(pf_head_pool_count(), 2);
    small_head(&h);
    assert_ptr_equal(h.buf, buf); /* the same, still warm, buffers */
    assert_ptr_equal(h.ent, ent);
    assert_int_equal(pf_head_pool_count(), 0);
    assert_string_equal(h.buf, "/x");
    pf_head_release(&h);
    pf_head_pool_drain();
    assert_int_equal(pf_head_pool_count(), 0);
}

static void test_head_pool_is_bounded(void **state)
{
    struct pf_head h[PF_HEAD_POOL_MAX + 3];

    (void)state;
    memset(h, 0, sizeof(h));
    for (unsigned i = 0; i < PF_HEAD_POOL_MAX + 3; i++)
        small_head(&h[i]);
    for (unsigned i = 0; i < PF_HEAD_POOL_MAX + 3; i++)
        pf_head_release(&h[i]); /* the extra ones are freed */
    assert_int_equal(pf_head_pool_count(), 2 * PF_HEAD_POOL_MAX);
    pf_head_pool_drain();
    assert_int_equal(pf_head_pool_count(), 0);
}

static void test_head_pool_frees_grown_buffers(void **state)
{
    struct pf_head h = {0};
    char big[3000];

    (void)state;
    memset(big, 'v', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    pf_head_reset(&h);
    put(&h, HEAD_URL, "/");
    for (int i = 0; i < 20; i++) { /* more entries than the first array */
        put(&h, HEAD_FIELD, "X-A");
        put(&h, HEAD_VALUE, i == 0 ? big : "b");
    }
    pf_head_close(&h);
    assert_true(h.cap > 1024);
    assert_true(h.cap_ent > 16);
    pf_head_release(&h);
    assert_int_equal(pf_head_pool_count(), 0);
}

static void test_head_pool_export_survives_release(void **state)
{
    struct pf_head h = {0};
    struct pf_arena *a = pf_arena_new(8192);
    struct pf_hdrs out = {0};
    const char *url = NULL;

    (void)state;
    small_head(&h);
    pf_head_export(&h, a, &out, &url);
    pf_head_release(&h);
    small_head(&h); /* reuses and overwrites the released buffers */
    put(&h, HEAD_FIELD, "Other");
    assert_string_equal(url, "/x");
    assert_int_equal(out.n, 1);
    assert_string_equal(out.v[0].name, "Host");
    assert_string_equal(out.v[0].value, "a");
    pf_head_free(&h);
    pf_arena_free(a);
    pf_head_pool_drain();
}

/* Each thread has its own pool: a release on one is not seen by another. */
static void *other_thread(void *arg)
{
    unsigned *seen = arg;

    *seen = pf_head_pool_count();
    return NULL;
}

static void test_head_pool_is_per_thread(void **state)
{
    struct pf_head h = {0};
    pthread_t t;
    unsigned seen = 99;

    (void)state;
    small_head(&h);
    pf_head_release(&h);
    assert_int_equal(pf_head_pool_count(), 2);
    assert_int_equal(pthread_create(&t, NULL, other_thread, &seen), 0);
    assert_int_equal(pthread_join(t, NULL), 0);
    assert_int_equal(seen, 0);
    pf_head_pool_drain();
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_head_pool_reuses_lifo),
        cmocka_unit_test(test_head_pool_is_bounded),
        cmocka_unit_test(test_head_pool_frees_grown_buffers),
        cmocka_unit_test(test_head_pool_export_survives_release),
        cmocka_unit_test(test_head_pool_is_per_thread),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
