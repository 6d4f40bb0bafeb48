/*
 * Unit tests for proxy/sbuf.h: a head built on the stack reaches the
 * evbuffer byte for byte, whether a header fits the buffer's room or not.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "proxy/sbuf.h"

#define BIG 5000 /* a value longer than the builder's buffer */

static char want[3 * BIG];
static size_t want_len;

static void want_put(const char *s, size_t n)
{
    memcpy(want + want_len, s, n);
    want_len += n;
}

static void assert_out(struct evbuffer *out)
{
    assert_int_equal(evbuffer_get_length(out), want_len);
    assert_memory_equal(evbuffer_pullup(out, -1), want, want_len);
}

/* A header after `fill` bytes: fits, straddles the end, or is bigger than the buffer. */
static void test_sbuf_header_any_room(void **state)
{
    static const size_t fills[] = {0, 4000, 4090, 4096 - 14, 4096 - 13, 4096};
    static const size_t vlens[] = {0, 1, 5, 90, BIG};
    static char filler[4096], value[BIG];

    (void)state;
    memset(filler, 'f', sizeof(filler));
    for (size_t i = 0; i < sizeof(value); i++)
        value[i] = (char)('a' + i % 26);
    for (size_t fi = 0; fi < sizeof(fills) / sizeof(fills[0]); fi++) {
        for (size_t vi = 0; vi < sizeof(vlens) / sizeof(vlens[0]); vi++) {
            struct evbuffer *out = evbuffer_new();
            struct pf_sbuf b;

            assert_non_null(out);
            want_len = 0;
            pf_sb_init(&b, out);
            pf_sb_put(&b, filler, fills[fi]);
            want_put(filler, fills[fi]);
            pf_sb_header(&b, "X-Name", 6, value, vlens[vi]);
            want_put("X-Name: ", 8);
            want_put(value, vlens[vi]);
            want_put("\r\n", 2);
            pf_sb_put(&b, "\r\n", 2);
            want_put("\r\n", 2);
            pf_sb_flush(&b);
            assert_int_equal(b.total, want_len);
            assert_out(out);
            evbuffer_free(out);
        }
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sbuf_header_any_room),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
