/*
 * Unit tests of the purge bus of filters/cache/purge.c: a purge published by
 * another process reaches every store registered in this one.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "filters/cache/cache-int.h"
#include "filters/cache/store.h"

#define N_STORES 20 /* more than the bus held at first */

static struct pf_cobj *mk(const char *key)
{
    struct pf_cache_meta m;
    struct pf_cobj_builder *b;

    memset(&m, 0, sizeof(m));
    m.status = 200;
    m.date = 1000;
    m.expires = -1;
    m.last_modified = -1;
    m.age = -1;
    m.cc.max_age = 60;
    b = pf_cobj_builder_new(key, "", 200, &m, 0);
    assert_true(pf_cobj_builder_body_bytes(b, (const unsigned char *)"body", 4));
    return pf_cobj_builder_finish(b, 1000);
}

static void test_cache_bus_purge_reaches_every_registered_store(void **state)
{
    /* "z" is no hex digit: never this process's own nonce */
    static const char msg[] = "PF1 zzzzzzzzzzzzzzzz k http://h/k";
    struct pf_cstore *st[N_STORES];
    struct pf_cobj *o;

    (void)state;
    for (unsigned i = 0; i < N_STORES; i++) {
        st[i] = pf_cstore_new(1 << 20, 1);
        assert_non_null(st[i]);
        pf_cache_bus_register(st[i]);
        o = mk("http://h/k");
        assert_int_equal(pf_cstore_put(st[i], o), 0);
        pf_cobj_unref(o);
    }
    pf_cache_bus_receive(NULL, msg, sizeof(msg) - 1);
    for (unsigned i = 0; i < N_STORES; i++) {
        o = pf_cstore_get(st[i], "http://h/k", "");
        assert_null(o);
        pf_cobj_unref(o);
        pf_cache_bus_unregister(st[i]);
        pf_cstore_free(st[i]);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cache_bus_purge_reaches_every_registered_store),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
