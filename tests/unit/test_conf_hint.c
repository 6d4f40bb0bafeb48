/*
 * Unit tests of proxy/conf_hint.c: the edit distance and "did you mean".
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "proxy/conf.h"

static void test_distance(void **state)
{
    (void)state;
    assert_int_equal(pf_conf_distance("listen", "listen"), 0);
    assert_int_equal(pf_conf_distance("listne", "listen"), 1); /* a swap of neighbours */
    assert_int_equal(pf_conf_distance("lisen", "listen"), 1);
    assert_int_equal(pf_conf_distance("listenn", "listen"), 1);
    assert_int_equal(pf_conf_distance("lusten", "listen"), 1);
    assert_int_equal(pf_conf_distance("", "abc"), 3);
    assert_int_equal(pf_conf_distance("kitten", "sitting"), 3);
}

static void test_hint(void **state)
{
    static const struct pf_conf_key keys[] = {
        {"listen", PF_CONF_STRING, 0, 0, 0, NULL},
        {"drain_timeout", PF_CONF_STRING, 0, 0, 0, NULL},
        {"drain_delay", PF_CONF_STRING, 0, 0, 0, NULL},
        {NULL, 0, 0, 0, 0, NULL},
    };
    char out[96];

    (void)state;
    pf_conf_hint("listne", keys, out, sizeof(out));
    assert_string_equal(out, " (did you mean 'listen'?)");
    pf_conf_hint("drain_timout", keys, out, sizeof(out));
    assert_string_equal(out, " (did you mean 'drain_timeout'?)");
    pf_conf_hint("drain_dealy", keys, out, sizeof(out));
    assert_string_equal(out, " (did you mean 'drain_delay'?)");
    /* nothing close: no hint */
    pf_conf_hint("zzz", keys, out, sizeof(out));
    assert_string_equal(out, "");
    pf_conf_hint("lsten", keys, out, sizeof(out));
    assert_string_equal(out, " (did you mean 'listen'?)");
    pf_conf_hint("zz", keys, out, sizeof(out)); /* one letter of two is not a typo */
    assert_string_equal(out, "");
    pf_conf_hint("upstreams", keys, out, sizeof(out));
    assert_string_equal(out, "");
}

static void test_hint_in_errors(void **state)
{
    struct pf_err err;
    struct pf_config *cfg;

    (void)state;
    pf_err_init(&err, "t.yaml");
    cfg =
        pf_conf_load_string("listen: \":8080\"\nadmin: {lisen: \"127.0.0.1:1\"}\n"
                            "upstreams: {a: {endpoints: [\"127.0.0.1:1\"], conect_timeout: 1s}}\n",
                            "t.yaml", &err);
    assert_null(cfg);
    assert_int_equal(err.n, 2);
    assert_non_null(strstr(err.msgs[0], "unknown key 'lisen' in admin (did you mean 'listen'?)"));
    assert_non_null(strstr(err.msgs[1], "(did you mean 'connect_timeout'?)"));
    pf_err_fini(&err);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_distance),
        cmocka_unit_test(test_hint),
        cmocka_unit_test(test_hint_in_errors),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
