/*
 * Unit tests of proxy/upstream/pool.c and the retry rule of
 * proxy/upstream/upstream.c: LIFO reuse, max_idle, idle_timeout and
 * max_lifetime with an injected clock, the upconn state dump. Connections
 * are socketpair()s on a private event_base.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>

#include "proxy/tx.h"
#include "proxy/upstream/pool.h"
#include "proxy/upstream/upstream.h"
#include "up_fx.h"

#define UNUSED __attribute__((unused))
#define T0     1000000000ull /* the injected clock's start, us */

static struct pf_worker w;
static struct pf_config *cfg;
static const struct pf_upstream_conf *up;
static unsigned ep_id;
static int peers[8]; /* the other end of each connection made */
static unsigned n_peers;

static int setup(void **state UNUSED)
{
    pf_upstream_free_all();
    fx_worker_init(&w);
    cfg = fx_cfg_new(1, PF_BALANCE_ROUND_ROBIN);
    up = &cfg->upstreams[0];
    ep_id = up->endpoint_ids[0];
    pf_clock_fixed_us = T0;
    n_peers = 0;
    return 0;
}

static int teardown(void **state UNUSED)
{
    pf_upstream_sweep(&w, true);
    for (unsigned i = 0; i < n_peers; i++)
        close(peers[i]);
    fx_cfg_free(cfg);
    fx_worker_fini(&w);
    pf_clock_fixed_us = 0;
    assert_int_equal(pf_endpoint_count(), 0); /* every connection gave its reference back */
    pf_upstream_free_all();
    return 0;
}

/* A connected upstream connection to the endpoint, made at the injected time. */
static struct pf_upconn *conn_new(void)
{
    int sv[2];

    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    assert_true(n_peers < sizeof(peers) / sizeof(peers[0]));
    peers[n_peers++] = sv[1];
    return pf_upconn_new(&w, ep_id, sv[0], up);
}

static unsigned open_conns(void)
{
    return atomic_load(&pf_endpoint_get(ep_id)->open);
}

static void test_pool_reuses_the_most_recent_first(void **state UNUSED)
{
    struct pf_upconn *a = conn_new(), *b = conn_new();

    pf_pool_put(a, up);
    pf_pool_put(b, up);
    assert_int_equal(pf_pool_of(&w, ep_id)->n_idle, 2);
    assert_int_equal(a->state, PF_UC_IDLE);
    assert_true(a->reused);
    assert_ptr_equal(pf_pool_get(&w, ep_id), b);
    assert_ptr_equal(pf_pool_get(&w, ep_id), a);
    assert_null(pf_pool_get(&w, ep_id));
    assert_int_equal(pf_pool_of(&w, ep_id)->n_idle, 0);
    pf_upconn_close(a);
    pf_upconn_close(b);
    assert_int_equal(open_conns(), 0);
}

static void test_pool_keeps_at_most_max_idle(void **state UNUSED)
{
    struct pf_upconn *c[3];

    cfg->upstreams[0].pool.max_idle = 2;
    for (unsigned i = 0; i < 3; i++)
        c[i] = conn_new();
    for (unsigned i = 0; i < 3; i++)
        pf_pool_put(c[i], up);
    assert_int_equal(pf_pool_of(&w, ep_id)->n_idle, 2);
    assert_int_equal(open_conns(), 2); /* the third was closed */
}

static void test_pool_drops_connections_idle_too_long(void **state UNUSED)
{
    struct pf_upconn *a = conn_new();

    pf_pool_put(a, up);
    pf_clock_fixed_us = T0 + up->pool.idle_timeout_ms * 1000 - 1;
    assert_ptr_equal(pf_pool_get(&w, ep_id), a); /* just in time */
    pf_pool_put(a, up);
    pf_clock_fixed_us += up->pool.idle_timeout_ms * 1000;
    assert_null(pf_pool_get(&w, ep_id));
    assert_int_equal(open_conns(), 0);
}

static void test_sweep_closes_expired_idle_connections(void **state UNUSED)
{
    struct pf_upconn *a = conn_new(), *b;

    pf_pool_put(a, up);
    pf_clock_fixed_us = T0 + 1000;
    pf_pool_put(conn_new(), up);
    pf_upstream_sweep(&w, false);
    assert_int_equal(open_conns(), 2); /* nothing expired yet */
    pf_clock_fixed_us = T0 + up->pool.idle_timeout_ms * 1000;
    pf_upstream_sweep(&w, false);
    assert_int_equal(open_conns(), 1); /* the older one */
    assert_int_equal(pf_pool_of(&w, ep_id)->n_idle, 1);
    b = pf_pool_get(&w, ep_id);
    assert_non_null(b);
    assert_ptr_not_equal(b, a);
    pf_upconn_close(b);
}

static void test_pool_refuses_connections_past_max_lifetime(void **state UNUSED)
{
    struct pf_upconn *a = conn_new();

    pf_clock_fixed_us = T0 + up->pool.max_lifetime_ms * 1000;
    pf_pool_put(a, up);
    assert_int_equal(open_conns(), 0);
    /* and one that reaches it while idle is not handed out */
    cfg->upstreams[0].pool.max_lifetime_ms = 10;
    a = conn_new();
    pf_pool_put(a, up);
    pf_clock_fixed_us += 10 * 1000;
    assert_null(pf_pool_get(&w, ep_id));
    assert_int_equal(open_conns(), 0);
}

static void test_idle_connection_that_speaks_is_dropped(void **state UNUSED)
{
    struct pf_upconn *a = conn_new();

    pf_pool_put(a, up);
    assert_int_equal(write(peers[0], "x", 1), 1);
    for (unsigned i = 0; i < 10 && open_conns() > 0; i++)
        event_base_loop(w.base, EVLOOP_ONCE);
    assert_int_equal(open_conns(), 0);
    assert_int_equal(pf_pool_of(&w, ep_id)->n_idle, 0);
}

static void test_upconn_dump_names_state_and_flags(void **state UNUSED)
{
    struct pf_upconn *a = conn_new();
    char buf[256], tiny[12];

    assert_string_equal(pf_upconn_dump(a, buf, sizeof(buf)),
                        "upconn state=connecting endpoint=0(127.0.0.0:80) tx=no busy=0 flags=- "
                        "body=none left=0");
    a->state = PF_UC_READING_BODY;
    a->req_sent = true;
    a->got_bytes = true;
    a->body_mode = PF_BODY_LENGTH;
    a->body_left = 42;
    assert_string_equal(pf_upconn_dump(a, buf, sizeof(buf)),
                        "upconn state=reading_body endpoint=0(127.0.0.0:80) tx=no busy=0 "
                        "flags=got_bytes,req_sent body=length left=42");
    pf_upconn_dump(a, tiny, sizeof(tiny)); /* cut, still a string */
    assert_string_equal(tiny, "upconn stat");
    assert_string_equal(pf_upconn_state_name(PF_UC_WAITING_HEAD), "waiting_head");
    assert_string_equal(pf_upconn_state_name((enum pf_upconn_state)99), "?");
    a->state = PF_UC_SENDING;
    pf_upconn_close(a);
}

/* A reused connection reset before any byte, an idempotent request: once. */
static void test_retry_rule(void **state UNUSED)
{
    struct pf_upconn *a = conn_new();
    struct pf_tx tx;

    memset(&tx, 0, sizeof(tx));
    tx.method_id = HTTP_GET;
    tx.attempts = 1;
    a->reused = true;
    assert_true(pf_upstream_should_retry(&tx, a, PF_OUTCOME_RESET));
    assert_false(pf_upstream_should_retry(&tx, a, PF_OUTCOME_TIMEOUT));
    assert_false(pf_upstream_should_retry(&tx, a, PF_OUTCOME_CONNECT_FAILED));
    tx.stale_retried = true; /* the retry itself failed */
    assert_false(pf_upstream_should_retry(&tx, a, PF_OUTCOME_RESET));
    tx.stale_retried = false;
    a->got_bytes = true; /* the upstream had started answering */
    assert_false(pf_upstream_should_retry(&tx, a, PF_OUTCOME_RESET));
    a->got_bytes = false;
    a->reused = false; /* a fresh connection: the upstream really refused it */
    assert_false(pf_upstream_should_retry(&tx, a, PF_OUTCOME_RESET));
    a->reused = true;
    tx.method_id = HTTP_POST; /* not idempotent */
    assert_false(pf_upstream_should_retry(&tx, a, PF_OUTCOME_RESET));
    tx.method_id = HTTP_PUT;
    tx.req_has_body = true; /* the body cannot be sent again */
    assert_false(pf_upstream_should_retry(&tx, a, PF_OUTCOME_RESET));
    tx.req_keep = (struct evbuffer *)&tx; /* ... unless it was kept (any non-NULL) */
    tx.method_id = HTTP_POST;
    assert_true(pf_upstream_should_retry(&tx, a, PF_OUTCOME_RESET));
    tx.req_keep = NULL;
    tx.method_id = HTTP_PUT;
    tx.req_has_body = false;
    assert_true(pf_upstream_should_retry(&tx, a, PF_OUTCOME_RESET));
    pf_upconn_close(a);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_pool_reuses_the_most_recent_first, setup, teardown),
        cmocka_unit_test_setup_teardown(test_pool_keeps_at_most_max_idle, setup, teardown),
        cmocka_unit_test_setup_teardown(test_pool_drops_connections_idle_too_long, setup, teardown),
        cmocka_unit_test_setup_teardown(test_sweep_closes_expired_idle_connections, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_pool_refuses_connections_past_max_lifetime, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_idle_connection_that_speaks_is_dropped, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_upconn_dump_names_state_and_flags, setup, teardown),
        cmocka_unit_test_setup_teardown(test_retry_rule, setup, teardown),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
