/*
 * Unit tests of a filter's worker_init failing (proxy/server.c): the start
 * fails, and a reload fails and keeps the running snapshot.
 *
 * This file defines the filter registry itself (pf_filter_find and
 * pf_filter_default_chain), so the linker takes them from here instead of
 * filters/registry.c: the only filters are the two test-only ones below.
 * The server is started for real (threads, a Unix socket in a temporary
 * directory, no admin API, no access log) and drained at the end.
 */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <event2/buffer.h>

#include "filters/registry.h"
#include "proxy/arena.h"
#include "proxy/conf.h"
#include "proxy/filter.h"
#include "proxy/server.h"

/* ---- test-only filters: "good" always starts; "flaky" fails on worker fail_on ---- */

static int fail_on = -1;  /* worker index whose worker_init fails; -1: none */
static _Atomic int inits; /* wstates created and not yet finished (workers finish some) */
static _Atomic int init_calls;
static _Atomic int starts;          /* worker_start calls */
static _Atomic int calls_made;      /* pf_worker_call from worker_init (main thread) */
static _Atomic int calls_ran;       /* ... that ran */
static _Atomic int calls_on_worker; /* ... that ran on the worker they were made for */
static pthread_t main_thread;

/* pf_worker_call target: runs on w's own thread (its base has no lock). */
static void note_call(struct pf_worker *w, void *arg)
{
    (void)arg;
    if (!pthread_equal(pthread_self(), main_thread) && pf_worker_index(w) < 2)
        calls_on_worker++;
    calls_ran++;
}

static int counting_init(const void *conf, struct pf_worker *w, void **wstate)
{
    (void)conf;
    calls_made++;
    pf_worker_call(w, note_call, NULL);
    init_calls++;
    inits++;
    *wstate = pf_xmalloc(1);
    return 0;
}

static int flaky_init(const void *conf, struct pf_worker *w, void **wstate)
{
    if (fail_on >= 0 && pf_worker_index(w) == (unsigned)fail_on) {
        init_calls++;
        return -1; /* leaves nothing behind, per the contract */
    }
    return counting_init(conf, w, wstate);
}

static void counting_start(void *wstate)
{
    assert_non_null(wstate);
    starts++;
}

static void counting_fini(void *wstate)
{
    inits--;
    free(wstate);
}

static const struct pf_filter_ops good_ops = {
    .name = "good",
    .worker_init = counting_init,
    .worker_start = counting_start,
    .worker_fini = counting_fini,
};

static const struct pf_filter_ops flaky_ops = {
    .name = "flaky",
    .worker_init = flaky_init,
    .worker_fini = counting_fini,
};

const char *const pf_filter_default_chain[] = {"good", NULL};

const struct pf_filter_ops *pf_filter_find(const char *name)
{
    if (strcmp(name, good_ops.name) == 0)
        return &good_ops;
    if (strcmp(name, flaky_ops.name) == 0)
        return &flaky_ops;
    return NULL;
}

const struct pf_filter_ops *pf_filter_at(unsigned i)
{
    return i == 0 ? &good_ops : i == 1 ? &flaky_ops : NULL;
}

/* ---- fixture ---- */

static char dir[64];
static char conf_path[128];

static int setup(void **state)
{
    FILE *f;

    (void)state;
    snprintf(dir, sizeof(dir), "/tmp/pf-winit-XXXXXX");
    assert_non_null(mkdtemp(dir));
    snprintf(conf_path, sizeof(conf_path), "%s/pilotfish.yaml", dir);
    f = fopen(conf_path, "w");
    assert_non_null(f);
    fprintf(f,
            "listen: [\"unix:%s/sock\"]\n"
            "workers: 2\n"
            "admin: { listen: off }\n"
            "access_log: off\n"
            "drain_delay: 0s\n"
            "drain_timeout: 1s\n"
            "upstreams:\n"
            "  app:\n"
            "    endpoints: [\"127.0.0.1:1\"]\n"
            "routes:\n"
            "  - match: { prefix: \"/\" }\n"
            "    upstream: app\n"
            "    filters: [good, flaky]\n",
            dir);
    fclose(f);
    fail_on = -1;
    inits = 0;
    starts = 0;
    init_calls = 0;
    calls_made = calls_ran = calls_on_worker = 0;
    main_thread = pthread_self();
    return 0;
}

static int teardown(void **state)
{
    char p[160];

    (void)state;
    snprintf(p, sizeof(p), "%s/sock", dir);
    unlink(p);
    unlink(conf_path);
    rmdir(dir);
    return 0;
}

static struct pf_config *load(void)
{
    struct pf_err err;
    struct pf_config *cfg;

    pf_err_init(&err, conf_path);
    cfg = pf_conf_load(conf_path, &err);
    for (unsigned i = 0; i < err.n; i++)
        fprintf(stderr, "%s\n", err.msgs[i]);
    pf_err_fini(&err);
    assert_non_null(cfg);
    return cfg;
}

/* ---- tests ---- */

#define FAILURE "\"result\":\"failure\""
#define WHY     "filter flaky: worker_init failed on worker 0"

static void test_worker_init_failure_fails_the_start(void **state)
{
    struct pf_server s;

    (void)state;
    memset(&s, 0, sizeof(s));
    fail_on = 1;
    assert_int_equal(pf_server_start(&s, load()), -1);
    /* worker 0 got both wstates, worker 1 "good" and then "flaky" failed */
    assert_int_equal(init_calls, 4);
    assert_int_equal(inits, 0); /* what was built was finished again */
    pf_server_free(&s);
    assert_int_equal(inits, 0);
}

static void test_worker_init_failure_fails_the_reload_and_keeps_the_snapshot(void **state)
{
    struct pf_server s;
    struct evbuffer *result = pf_evbuffer_new();
    struct pf_config *running;
    size_t n;
    char *text;

    (void)state;
    memset(&s, 0, sizeof(s));
    assert_int_equal(pf_server_start(&s, load()), 0);
    assert_int_equal(inits, 4);  /* 2 workers x 2 filters; the admin loop has none */
    assert_int_equal(starts, 2); /* "good" started on each worker */
    running = s.cfg;

    fail_on = 0;
    init_calls = 0;
    assert_int_equal(pf_server_reload(&s, result), -1);
    assert_int_equal(init_calls, 2); /* worker 0: "good", then "flaky" failed */
    assert_int_equal(inits, 4);      /* the new wstates were finished, the old kept */
    assert_int_equal(starts, 2);     /* a dropped snapshot is never started */
    assert_ptr_equal(s.cfg, running);
    assert_int_equal(s.reloads_failed, 1);
    assert_int_equal(s.reloads_ok, 0);
    n = evbuffer_get_length(result);
    text = (char *)evbuffer_pullup(result, -1);
    assert_non_null(memmem(text, n, FAILURE, strlen(FAILURE)));
    assert_non_null(memmem(text, n, WHY, strlen(WHY)));
    evbuffer_drain(result, n);

    fail_on = -1;
    assert_int_equal(pf_server_reload(&s, result), 0);
    assert_int_equal(s.reloads_ok, 1);
    assert_ptr_not_equal(s.cfg, running);

    /* every pf_worker_call reached its worker's thread (bounded wait: 10 s) */
    for (int i = 0; i < 1000 && calls_ran < calls_made; i++)
        usleep(10 * 1000);
    assert_int_equal(calls_made, 4 + 1 + 4); /* start, failed reload, reload */
    assert_int_equal(calls_ran, calls_made);
    assert_int_equal(calls_on_worker, calls_made);

    pf_server_drain(&s, true);
    assert_int_equal(pf_server_run(&s), 0);
    pf_server_free(&s);
    assert_int_equal(inits, 0); /* every wstate of both snapshots was finished */
    evbuffer_free(result);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_worker_init_failure_fails_the_start, setup, teardown),
        cmocka_unit_test_setup_teardown(
            test_worker_init_failure_fails_the_reload_and_keeps_the_snapshot, setup, teardown),
    };

    return cmocka_run_group_tests_name("worker_init", tests, NULL, NULL);
}
