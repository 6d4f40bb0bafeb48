/*
 * Unit tests for filters/cache/grow.c: a response stored while it streams
 * in, read by subscribers on their own worker. The worker here is a struct
 * with a mailbox and no loop: the test delivers its mail itself, so it sees
 * exactly which calls were queued.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <cmocka.h>
#include <event2/buffer.h>

#include "proxy/core.h"
#include "filters/cache/store.h"

static struct pf_worker w;

static int setup(void **state)
{
    (void)state;
    memset(&w, 0, sizeof(w));
    pthread_mutex_init(&w.mail_lock, NULL);
    w.mail_fd = eventfd(0, EFD_NONBLOCK);
    return w.mail_fd >= 0 ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    close(w.mail_fd);
    pthread_mutex_destroy(&w.mail_lock);
    return 0;
}

/* Run the calls queued for w; how many there were. */
static unsigned deliver(void)
{
    struct pf_mail *m;
    unsigned n = 0;

    pthread_mutex_lock(&w.mail_lock);
    m = w.mail_head;
    w.mail_head = w.mail_tail = NULL;
    pthread_mutex_unlock(&w.mail_lock);
    while (m != NULL) {
        struct pf_mail *next = m->next;

        m->fn(&w, m->arg);
        free(m);
        m = next;
        n++;
    }
    return n;
}

static struct pf_cgrow *mk(size_t max)
{
    static const struct pf_chdr h[] = {{"Content-Type", "text/plain"}};
    struct pf_cgrow_head head;

    memset(&head, 0, sizeof(head));
    head.status = 200;
    head.hdrs = h;
    head.n_hdrs = 1;
    head.variant = "";
    head.length = -1;
    return pf_cgrow_new(&head, max);
}

static bool append(struct pf_cgrow *g, const char *s)
{
    struct evbuffer *b = evbuffer_new();
    bool ok;

    evbuffer_add(b, s, strlen(s));
    ok = pf_cgrow_append(g, b);
    assert_int_equal(evbuffer_get_length(b), strlen(s)); /* left as it was */
    evbuffer_free(b);
    return ok;
}

struct reader {
    struct pf_cgrow_sub *sub;
    unsigned calls;
    char got[256];
    size_t len;
    enum pf_cgrow_state st;
};

static void on_call(struct pf_worker *wk, void *arg)
{
    struct reader *r = arg;
    struct evbuffer *b = evbuffer_new();
    size_t n;

    assert_ptr_equal(wk, &w);
    r->calls++;
    r->st = pf_cgrow_read(r->sub, b);
    n = evbuffer_get_length(b);
    evbuffer_remove(b, r->got + r->len, n);
    r->len += n;
    r->got[r->len] = '\0';
    evbuffer_free(b);
}

static void test_grow_reader_gets_every_byte_in_order_with_one_call_per_burst(void **state)
{
    struct pf_cgrow *g = mk(0);
    struct reader r = {0};

    (void)state;
    assert_string_equal(g->hdrs[0].name, "Content-Type"); /* the head is copied */
    assert_true(append(g, "ab"));
    r.sub = pf_cgrow_subscribe(g, &w, on_call, &r);
    assert_true(append(g, "cd"));
    assert_true(append(g, "ef"));
    assert_int_equal(deliver(), 1); /* the first call was still pending: no more queued */
    assert_string_equal(r.got, "abcdef");
    assert_int_equal(r.st, PF_CGROW_GROWING);
    assert_true(append(g, "g"));
    assert_true(append(g, ""));
    pf_cgrow_end(g, true);
    pf_cgrow_end(g, false); /* the first end counts */
    assert_int_equal(deliver(), 1);
    assert_string_equal(r.got, "abcdefg");
    assert_int_equal(r.st, PF_CGROW_COMPLETE);
    assert_int_equal(r.calls, 2);
    assert_false(append(g, "h")); /* ended */
    pf_cgrow_unsubscribe(r.sub);
    pf_cgrow_unref(g);
    assert_int_equal(deliver(), 0);
}

static void test_grow_past_the_max_is_dropped(void **state)
{
    struct pf_cgrow *g = mk(5);
    struct reader r = {0};

    (void)state;
    r.sub = pf_cgrow_subscribe(g, &w, on_call, &r);
    assert_true(append(g, "abc"));
    assert_true(append(g, "de")); /* exactly the max */
    deliver();
    assert_string_equal(r.got, "abcde");
    assert_false(append(g, "f"));
    deliver();
    assert_int_equal(r.st, PF_CGROW_DROPPED); /* not stored: not a failed fetch */
    pf_cgrow_end(g, true);                    /* too late: dropped stays */
    assert_int_equal(deliver(), 0);
    pf_cgrow_unsubscribe(r.sub);
    pf_cgrow_unref(g);
}

static void test_grow_unsubscribe_with_a_call_pending_never_calls(void **state)
{
    struct pf_cgrow *g = mk(0);
    struct reader r = {0};

    (void)state;
    r.sub = pf_cgrow_subscribe(g, &w, on_call, &r);
    pf_cgrow_unsubscribe(r.sub); /* the call is queued: it frees the subscription */
    pf_cgrow_unref(g);           /* the subscription still holds g */
    assert_int_equal(deliver(), 1);
    assert_int_equal(r.calls, 0);
}

static void test_grow_two_readers_and_a_late_one(void **state)
{
    struct pf_cgrow *g = mk(0);
    struct reader a = {0}, b = {0}, c = {0};

    (void)state;
    a.sub = pf_cgrow_subscribe(g, &w, on_call, &a);
    b.sub = pf_cgrow_subscribe(g, &w, on_call, &b);
    assert_true(append(g, "xy"));
    assert_int_equal(deliver(), 2);
    assert_true(append(g, "z"));
    pf_cgrow_end(g, false);
    c.sub = pf_cgrow_subscribe(g, &w, on_call, &c); /* after the end: reads all there is */
    deliver();
    assert_string_equal(a.got, "xyz");
    assert_string_equal(b.got, "xyz");
    assert_string_equal(c.got, "xyz");
    assert_int_equal(c.st, PF_CGROW_ABANDONED);
    pf_cgrow_unsubscribe(a.sub);
    pf_cgrow_unsubscribe(b.sub);
    pf_cgrow_unsubscribe(c.sub);
    pf_cgrow_unref(g);
}

/* Reads into out, for the reference tests. */
struct holder {
    struct pf_cgrow_sub *sub;
    struct evbuffer *out;
};

static void on_call_keep(struct pf_worker *wk, void *arg)
{
    struct holder *h = arg;

    (void)wk;
    pf_cgrow_read(h->sub, h->out);
}

static void test_grow_readers_share_the_chunks_by_reference(void **state)
{
    struct pf_cgrow *g = mk(0);
    struct holder a = {NULL, evbuffer_new()}, b = {NULL, evbuffer_new()};
    char big[4096], got[4096];
    struct evbuffer_iovec va, vb;

    (void)state;
    for (size_t i = 0; i < sizeof(big); i++)
        big[i] = (char)('a' + i % 26);
    assert_true(append(g, "tiny")); /* small pieces are copied */
    big[sizeof(big) - 1] = '\0';
    assert_true(append(g, big));
    a.sub = pf_cgrow_subscribe(g, &w, on_call_keep, &a);
    b.sub = pf_cgrow_subscribe(g, &w, on_call_keep, &b);
    assert_int_equal(deliver(), 2);
    pf_cgrow_end(g, true);
    deliver();
    pf_cgrow_unsubscribe(a.sub);
    pf_cgrow_unsubscribe(b.sub);
    pf_cgrow_unref(g); /* the readers' outputs still hold the chunks */
    assert_int_equal(evbuffer_get_length(a.out), 4 + sizeof(big) - 1);
    evbuffer_drain(a.out, 4);
    evbuffer_drain(b.out, 4);
    assert_int_equal(evbuffer_peek(a.out, -1, NULL, &va, 1), 1);
    assert_int_equal(evbuffer_peek(b.out, -1, NULL, &vb, 1), 1);
    assert_ptr_equal(va.iov_base, vb.iov_base); /* one copy for both readers */
    evbuffer_free(b.out);
    assert_int_equal(evbuffer_remove(a.out, got, sizeof(got)), (int)sizeof(big) - 1);
    assert_memory_equal(got, big, sizeof(big) - 1);
    evbuffer_free(a.out); /* the last reference: g goes (a leak or a double free fails ASan) */
}

struct watcher {
    unsigned calls;
    unsigned readers;
    struct pf_cgrow *g;
};

static void on_watch(struct pf_worker *wk, void *arg)
{
    struct watcher *wt = arg;

    assert_ptr_equal(wk, &w);
    wt->calls++;
    wt->readers = pf_cgrow_readers(wt->g);
}

static void test_grow_watch_tells_the_writer_a_reader_came(void **state)
{
    struct pf_cgrow *g = mk(0);
    struct watcher wt = {0, 0, g};
    struct reader a = {0}, b = {0}, c = {0};

    (void)state;
    pf_cgrow_watch(g, &w, on_watch, &wt);
    assert_int_equal(pf_cgrow_readers(g), 0);
    a.sub = pf_cgrow_subscribe(g, &w, on_call, &a);
    b.sub = pf_cgrow_subscribe(g, &w, on_call, &b);
    assert_int_equal(deliver(), 3); /* two readers' first calls, one watch call */
    assert_int_equal(wt.calls, 1);
    assert_int_equal(wt.readers, 2);
    pf_cgrow_unsubscribe(a.sub);
    pf_cgrow_unsubscribe(b.sub);
    assert_int_equal(pf_cgrow_readers(g), 0);
    c.sub = pf_cgrow_subscribe(g, &w, on_call, &c);
    pf_cgrow_watch(g, &w, NULL, NULL); /* withdrawn: the call on its way does nothing */
    pf_cgrow_unsubscribe(c.sub);
    pf_cgrow_unref(g); /* the pending calls hold g */
    assert_int_equal(deliver(), 2);
    assert_int_equal(wt.calls, 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(
            test_grow_reader_gets_every_byte_in_order_with_one_call_per_burst, setup, teardown),
        cmocka_unit_test_setup_teardown(test_grow_past_the_max_is_dropped, setup, teardown),
        cmocka_unit_test_setup_teardown(test_grow_unsubscribe_with_a_call_pending_never_calls,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_grow_two_readers_and_a_late_one, setup, teardown),
        cmocka_unit_test_setup_teardown(test_grow_readers_share_the_chunks_by_reference, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_grow_watch_tells_the_writer_a_reader_came, setup,
                                        teardown),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
