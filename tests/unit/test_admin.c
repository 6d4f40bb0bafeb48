/*
 * Unit tests of proxy/admin.c: the token comparison.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "proxy/admin.h"

static void test_admin_token_equal(void **state)
{
    static const struct {
        const char *given;
        bool equal;
    } cases[] = {
        {"s3cr3t", true},  {"s3cr3", false},  {"s3cr3tx", false}, {"", false},
        {"S3cr3t", false}, {"s3cr3u", false}, {"x3cr3t", false},
    };

    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        assert_int_equal(pf_admin_token_equal(cases[i].given, strlen(cases[i].given), "s3cr3t"),
                         cases[i].equal);
    /* the length given counts, not a NUL inside it */
    assert_false(pf_admin_token_equal("s3cr3t\0", 7, "s3cr3t"));
    assert_true(pf_admin_token_equal("s3cr3tXYZ", 6, "s3cr3t"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_admin_token_equal),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
