/*
 * Unit tests of proxy/snapshot.c and proxy/upstream/endpoint.c: what a snapshot holds
 * outside itself. Snapshots are built by hand (upstreams and filter
 * instances only), so a fake filter can count its process-state hooks.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <event2/buffer.h>
#include <pthread.h>

#include "proxy/arena.h"
#include "proxy/conf.h"
#include "proxy/filter.h"
#include "filters/registry.h"
#include "proxy/snapshot.h"
#include "proxy/stats.h"
#include "proxy/upstream/upstream.h"

#define UNUSED __attribute__((unused))

/* ---- a filter that counts its process-state hooks ---- */

struct fake_conf {
    int setting; /* reuse_process compares it */
};

static int n_init, n_fini, init_rc;

static int fake_init(const void *conf, void **pstate)
{
    (void)conf;
    if (init_rc != 0)
        return init_rc;
    n_init++;
    *pstate = pf_xcalloc(1, 16);
    return 0;
}

static bool fake_reuse(const void *old_conf, const void *new_conf)
{
    return ((const struct fake_conf *)old_conf)->setting ==
           ((const struct fake_conf *)new_conf)->setting;
}

static void fake_fini(void *pstate)
{
    n_fini++;
    free(pstate);
}

static const struct pf_filter_ops fake_ops = {
    .name = "fake",
    .init_process = fake_init,
    .reuse_process = fake_reuse,
    .fini_process = fake_fini,
};

static const struct pf_filter_ops plain_ops = {.name = "plain"};

/* ---- hand-built snapshots ---- */

/* A snapshot of one upstream "app" with n endpoints "127.0.<base + i>:80" (text only). */
static struct pf_config *snap_new(unsigned base, unsigned n, struct fake_conf *fc)
{
    struct pf_config *cfg = pf_xcalloc(1, sizeof(*cfg));
    struct pf_upstream_conf *up;
    char text[32];

    cfg->path = pf_xstrdup("test.yaml");
    cfg->n_upstreams = 1;
    cfg->upstreams = up = pf_xcalloc(1, sizeof(*up));
    up->name = pf_xstrdup("app");
    up->n_endpoints = n;
    up->endpoints = pf_xcalloc(n > 0 ? n : 1, sizeof(*up->endpoints));
    for (unsigned i = 0; i < n; i++) {
        snprintf(text, sizeof(text), "127.0.%u.%u:80", (base + i) >> 8, (base + i) & 0xff);
        up->endpoints[i].text = pf_xstrdup(text);
    }
    cfg->n_filters = 2;
    cfg->filters = pf_xcalloc(2, sizeof(*cfg->filters));
    cfg->filters[0].ops = &plain_ops;
    cfg->filters[1].ops = &fake_ops;
    cfg->filters[1].conf = fc;
    return cfg;
}

static void snap_free(struct pf_config *cfg)
{
    if (cfg->release != NULL)
        cfg->release(cfg);
    for (unsigned i = 0; i < cfg->upstreams[0].n_endpoints; i++)
        free(cfg->upstreams[0].endpoints[i].text);
    free(cfg->upstreams[0].endpoints);
    free(cfg->upstreams[0].endpoint_ids);
    free(cfg->upstreams[0].name);
    free(cfg->upstreams);
    free(cfg->filters);
    free(cfg->path);
    free(cfg);
}

static int snap_bind(struct pf_config *cfg, const struct pf_config *prev, char *msg, size_t size)
{
    struct pf_err err;
    int rc;

    pf_err_init(&err, "test.yaml");
    rc = pf_snapshot_bind(cfg, prev, &err);
    snprintf(msg, size, "%s", err.n > 0 ? err.msgs[0] : "");
    assert_true(rc == 0 ? err.n == 0 : err.n > 0);
    pf_err_fini(&err);
    return rc;
}

static int reset(void **state UNUSED)
{
    n_init = n_fini = init_rc = 0;
    pf_upstream_free_all();
    return 0;
}

/* ---- process state ---- */

static void test_snapshot_pstate_is_handed_over_when_settings_allow(void **state UNUSED)
{
    struct fake_conf same_a = {1}, same_b = {1}, other = {2};
    struct pf_config *a = snap_new(0, 1, &same_a);
    struct pf_config *b = snap_new(0, 1, &same_b);
    struct pf_config *c = snap_new(0, 1, &other);
    char msg[256];

    assert_int_equal(snap_bind(a, NULL, msg, sizeof(msg)), 0);
    assert_int_equal(n_init, 1);
    assert_non_null(a->filters[1].pstate);
    assert_null(a->filters[0].pstate); /* no init_process: no state */
    /* a reload with the same settings shares the running state */
    assert_int_equal(snap_bind(b, a, msg, sizeof(msg)), 0);
    assert_int_equal(n_init, 1);
    assert_ptr_equal(b->filters[1].pstate, a->filters[1].pstate);
    snap_free(a); /* the old snapshot's last transaction ended */
    assert_int_equal(n_fini, 0);
    /* changed settings: a new state; the old one goes with its last snapshot */
    assert_int_equal(snap_bind(c, b, msg, sizeof(msg)), 0);
    assert_int_equal(n_init, 2);
    assert_ptr_not_equal(c->filters[1].pstate, b->filters[1].pstate);
    snap_free(b);
    assert_int_equal(n_fini, 1);
    snap_free(c);
    assert_int_equal(n_fini, 2);
    assert_int_equal(pf_endpoint_count(), 0);
}

static void test_snapshot_failed_init_process_takes_nothing(void **state UNUSED)
{
    struct fake_conf fc = {1};
    struct pf_config *cfg = snap_new(0, 3, &fc);
    char msg[256];

    init_rc = -ENOMEM;
    assert_int_equal(snap_bind(cfg, NULL, msg, sizeof(msg)), -1);
    assert_non_null(strstr(msg, "filters.fake: cannot set up its state"));
    assert_int_equal(pf_endpoint_count(), 0); /* the endpoints it bound were dropped */
    assert_null(cfg->release);
    snap_free(cfg);
    assert_int_equal(n_fini, 0);
}

/* ---- endpoints ---- */

static void test_endpoint_kept_across_snapshots_and_freed_after_the_last(void **state UNUSED)
{
    struct fake_conf fc = {1};
    struct pf_config *a = snap_new(0, 2, &fc); /* .0 .1 */
    struct pf_config *b = snap_new(1, 2, &fc); /* .1 .2 */
    char msg[256];
    unsigned kept;
    uint64_t gen;

    assert_int_equal(snap_bind(a, NULL, msg, sizeof(msg)), 0);
    assert_int_equal(snap_bind(b, a, msg, sizeof(msg)), 0);
    assert_int_equal(pf_endpoint_count(), 3);
    /* the address both list is one endpoint: same id, state kept */
    kept = a->upstreams[0].endpoint_ids[1];
    assert_int_equal(b->upstreams[0].endpoint_ids[0], kept);
    gen = pf_endpoint_gen(kept);
    snap_free(a);
    assert_int_equal(pf_endpoint_count(), 2);
    assert_int_equal(pf_endpoint_gen(kept), gen);
    assert_int_equal(atomic_load(&pf_endpoint_get(kept)->snaps), 1);
    snap_free(b);
    assert_int_equal(pf_endpoint_count(), 0);
    assert_int_equal(pf_endpoint_gen(kept), 0);
}

static void test_endpoint_open_connection_keeps_it_until_closed(void **state UNUSED)
{
    struct fake_conf fc = {1};
    struct pf_config *a = snap_new(0, 1, &fc);
    struct pf_config *b = snap_new(50, 1, &fc);
    struct pf_endpoint *ep;
    char msg[256];
    unsigned id;

    assert_int_equal(snap_bind(a, NULL, msg, sizeof(msg)), 0);
    id = a->upstreams[0].endpoint_ids[0];
    ep = pf_endpoint_get(id);
    pf_endpoint_ref(ep); /* as up_connect does */
    snap_free(a);
    assert_int_equal(pf_endpoint_count(), 1); /* no snapshot lists it, a connection uses it */
    assert_int_equal(atomic_load(&ep->snaps), 0);
    /* a new endpoint cannot take its id meanwhile */
    assert_int_equal(snap_bind(b, NULL, msg, sizeof(msg)), 0);
    assert_int_not_equal(b->upstreams[0].endpoint_ids[0], id);
    pf_endpoint_unref(ep); /* as up_free does */
    assert_int_equal(pf_endpoint_count(), 1);
    assert_null(pf_endpoint_get(id));
    snap_free(b);
}

static void test_endpoint_ids_are_reused_with_a_new_generation(void **state UNUSED)
{
    struct fake_conf fc = {1};
    struct pf_config *cfg;
    char msg[256];
    uint64_t gen = 0;

    /* 100 rounds of 100 new addresses: ids stay below 100, every round new generations */
    for (unsigned round = 0; round < 100; round++) {
        cfg = snap_new(round * 100, 100, &fc);
        assert_int_equal(snap_bind(cfg, NULL, msg, sizeof(msg)), 0);
        assert_true(pf_endpoint_gen(cfg->upstreams[0].endpoint_ids[0]) > gen);
        gen = pf_endpoint_gen(cfg->upstreams[0].endpoint_ids[0]);
        for (unsigned i = 0; i < 100; i++)
            assert_true(cfg->upstreams[0].endpoint_ids[i] < 100);
        snap_free(cfg);
    }
    assert_int_equal(pf_endpoint_count(), 0);
    assert_true(pf_endpoint_id_limit() <= 100);
}

static void test_endpoint_bind_past_the_cap_names_the_address_and_takes_nothing(void **state UNUSED)
{
    struct fake_conf fc = {1};
    struct pf_config *small = snap_new(60000, 10, &fc);
    struct pf_config *big = snap_new(0, PF_MAX_ENDPOINTS, &fc);
    struct pf_config *fits = snap_new(0, PF_MAX_ENDPOINTS - 10, &fc);
    char msg[256];

    assert_int_equal(snap_bind(small, NULL, msg, sizeof(msg)), 0);
    assert_int_equal(snap_bind(big, small, msg, sizeof(msg)), -1);
    assert_non_null(
        strstr(msg, "upstream app: endpoint 127.0.15.246:80: too many endpoints in use"));
    assert_int_equal(pf_endpoint_count(), 10);
    snap_free(big);
    /* the slots the failed bind took are free again */
    assert_int_equal(snap_bind(fits, small, msg, sizeof(msg)), 0);
    assert_int_equal(pf_endpoint_count(), PF_MAX_ENDPOINTS);
    snap_free(fits);
    snap_free(small);
    assert_int_equal(pf_endpoint_count(), 0);
}

/* ---- counters and the metrics hook ---- */

static struct pf_counter_set test_set = PF_COUNTER_SET(3);
static __thread _Atomic uint64_t *test_cells;

static void *count_main(void *arg)
{
    (void)arg;
    for (unsigned i = 0; i < 100000; i++) {
        if (test_cells == NULL)
            test_cells = pf_counter_cells(&test_set);
        pf_counter_add(&test_cells[1], 2);
    }
    return NULL;
}

static void test_counter_set_sums_every_thread(void **state UNUSED)
{
    pthread_t t[3];

    for (int i = 0; i < 3; i++)
        assert_int_equal(pthread_create(&t[i], NULL, count_main, NULL), 0);
    for (int i = 0; i < 3; i++)
        assert_int_equal(pthread_join(t[i], NULL), 0);
    assert_int_equal(pf_counter_sum(&test_set, 1), 600000);
    assert_int_equal(pf_counter_sum(&test_set, 0), 0);
    assert_int_equal(pf_counter_sum(&test_set, 2), 0);
}

static void test_filters_render_their_families_through_the_hook(void **state UNUSED)
{
    struct evbuffer *out = evbuffer_new();
    const struct pf_filter_ops *ops;
    char *text;
    size_t len;

    assert_non_null(out);
    for (unsigned i = 0; (ops = pf_filter_at(i)) != NULL; i++) {
        if (ops->metrics != NULL)
            ops->metrics(NULL, NULL, out); /* a snapshot that does not use the filter */
    }
    len = evbuffer_get_length(out);
    text = pf_xmalloc(len + 1);
    evbuffer_remove(out, text, len);
    text[len] = '\0';
    assert_non_null(strstr(text, "# TYPE pilotfish_gzip_bytes_in_total counter\n"
                                 "pilotfish_gzip_bytes_in_total 0\n"));
    assert_non_null(strstr(text, "# TYPE pilotfish_gzip_bytes_out_total counter\n"));
    assert_non_null(strstr(text, "# TYPE pilotfish_ratelimit_rejected_total counter\n"));
    free(text);
    evbuffer_free(out);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
#define T(fn) cmocka_unit_test_setup(fn, reset)
        T(test_snapshot_pstate_is_handed_over_when_settings_allow),
        T(test_snapshot_failed_init_process_takes_nothing),
        T(test_endpoint_kept_across_snapshots_and_freed_after_the_last),
        T(test_endpoint_open_connection_keeps_it_until_closed),
        T(test_endpoint_ids_are_reused_with_a_new_generation),
        T(test_endpoint_bind_past_the_cap_names_the_address_and_takes_nothing),
        T(test_counter_set_sums_every_thread),
        T(test_filters_render_their_families_through_the_hook),
#undef T
    };

    return cmocka_run_group_tests_name("snapshot", tests, NULL, NULL);
}
