/*
 * Unit tests of filters/ratelimit.c against the fake transaction, with the
 * clock (fake_now_us) under the tests' control.
 */
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "tests/unit/fake_tx.h"

#include "filters/ratelimit.h"
#include "proxy/conf.h"

#define SEC 1000000 /* fake_now_us units */

struct result {
    enum pf_verdict v;  /* what on_request returned */
    int status;         /* status given to pf_tx_error, 0 if none */
    enum pf_error code; /* error code given to pf_tx_error */
    char retry[24];     /* Retry-After, "" when absent */
    char xerror[24];    /* X-Pilotfish-Error, "" when absent */
};

/* ---- helpers ---- */

/* Parse "ratelimit:" out of yaml; returns 0 or the conf_parse error, first message in msg. */
static int parse_yaml(const char *yaml, void **conf, char *msg, size_t msg_size)
{
    struct pf_err err;
    struct pf_conf_node *root = NULL;
    int rc;

    pf_err_init(&err, "test.yaml");
    assert_int_equal(pf_conf_node_parse(yaml, strlen(yaml), &root, &err), 0);
    assert_int_equal(err.n, 0);
    *conf = NULL;
    rc = pf_filter_ratelimit.conf_parse(pf_conf_get(root, "ratelimit"), conf, &err);
    if (msg != NULL)
        snprintf(msg, msg_size, "%s", err.n > 0 ? err.msgs[0] : "");
    if (rc == 0)
        assert_int_equal(err.n, 0);
    else
        assert_true(err.n > 0);
    pf_err_fini(&err);
    pf_conf_node_free(root);
    return rc;
}

/* A parsed conf with its process state, as a snapshot holds them. */
struct inst {
    void *conf;
    void *pstate;
};

#define PSTATE(i) (((struct inst *)(i))->pstate)

static void *inst_of(void *conf)
{
    struct inst *in = calloc(1, sizeof(*in));

    assert_non_null(in);
    in->conf = conf;
    assert_int_equal(pf_filter_ratelimit.init_process(conf, &in->pstate), 0);
    assert_non_null(in->pstate);
    return in;
}

static void *conf_new(const char *yaml)
{
    void *conf;
    char msg[256];

    if (parse_yaml(yaml, &conf, msg, sizeof(msg)) != 0)
        fail_msg("unexpected conf error: %s", msg);
    assert_non_null(conf);
    return inst_of(conf);
}

static void inst_free(void *p)
{
    struct inst *in = p;

    pf_filter_ratelimit.fini_process(in->pstate);
    pf_filter_ratelimit.conf_free(in->conf);
    free(in);
}

/*
 * One request from client (the TCP peer) on route, with up to two extra
 * request headers as name/value pairs (NULL to end).
 */
static struct result req_on(void *conf, const char *route, const char *client, const char *h1,
                            const char *v1, const char *h2, const char *v2)
{
    struct pf_tx tx;
    struct inst *in = conf;
    struct pf_slot slot = {.conf = in->conf, .wstate = NULL, .ctx = NULL, .pstate = in->pstate};
    struct result r;
    const char *h;

    memset(&r, 0, sizeof(r));
    fake_tx_init(&tx, "GET", "/");
    fake_tx_set_client(&tx, client);
    fake_tx_set_route(&tx, route);
    if (h1 != NULL)
        fake_tx_req_add(&tx, h1, v1);
    if (h2 != NULL)
        fake_tx_req_add(&tx, h2, v2);
    r.v = pf_filter_ratelimit.on_request(&tx, &slot);
    r.status = fake_tx_replied_status(&tx);
    r.code = tx.error;
    h = pf_tx_resp_header(&tx, "Retry-After");
    snprintf(r.retry, sizeof(r.retry), "%s", h != NULL ? h : "");
    h = pf_tx_resp_header(&tx, "X-Pilotfish-Error");
    snprintf(r.xerror, sizeof(r.xerror), "%s", h != NULL ? h : "");
    fake_tx_fini(&tx);
    return r;
}

static struct result req(void *conf, const char *client)
{
    return req_on(conf, "route-0", client, NULL, NULL, NULL, NULL);
}

static struct result req_h(void *conf, const char *client, const char *name, const char *value)
{
    return req_on(conf, "route-0", client, name, value, NULL, NULL);
}

/* Send n requests from client; return how many were admitted. */
static unsigned admitted(void *conf, const char *client, unsigned n)
{
    unsigned ok = 0;

    for (unsigned i = 0; i < n; i++)
        ok += req(conf, client).v == PF_NEXT;
    return ok;
}

static void assert_limited(struct result r)
{
    assert_int_equal(r.v, PF_REPLIED);
    assert_int_equal(r.status, 429);
}

static int reset_clock(void **state)
{
    (void)state;
    fake_now_us = 1000 * SEC;
    return 0;
}

/* ---- behaviour ---- */

static void test_ratelimit_has_spec_defaults_when_section_absent(void **state)
{
    void *conf = NULL;
    struct pf_err err;

    (void)state;
    pf_err_init(&err, "test.yaml");
    assert_int_equal(pf_filter_ratelimit.conf_parse(NULL, &conf, &err), 0);
    assert_int_equal(err.n, 0);
    pf_err_fini(&err);
    conf = inst_of(conf);
    /* burst 200, 100/s, keyed by client address */
    assert_int_equal(admitted(conf, "192.0.2.1", 200), 200);
    assert_limited(req(conf, "192.0.2.1"));
    assert_int_equal(req(conf, "192.0.2.2").v, PF_NEXT);
    fake_now_us += 10000; /* 10 ms = one token at 100/s */
    assert_int_equal(admitted(conf, "192.0.2.1", 2), 1);
    inst_free(conf);
}

static void test_ratelimit_replies_429_when_bucket_empty(void **state)
{
    void *conf = conf_new("ratelimit:\n  requests_per_second: 10\n  burst: 5\n");
    struct result r;

    (void)state;
    for (int i = 0; i < 5; i++) {
        r = req(conf, "192.0.2.1");
        assert_int_equal(r.v, PF_NEXT);
        assert_int_equal(r.status, 0);
        assert_string_equal(r.retry, "");
    }
    r = req(conf, "192.0.2.1");
    assert_int_equal(r.v, PF_REPLIED);
    assert_int_equal(r.status, 429);
    assert_int_equal(r.code, PF_ERR_RATE_LIMITED);
    assert_string_equal(r.xerror, "rate_limited");
    assert_string_equal(r.retry, "1");
    inst_free(conf);
}

static void test_ratelimit_passes_through_responses_untouched(void **state)
{
    (void)state;
    /* nothing to do after on_request: the core passes bodies through */
    assert_string_equal(pf_filter_ratelimit.name, "ratelimit");
    assert_null(pf_filter_ratelimit.on_response);
    assert_null(pf_filter_ratelimit.on_body);
    assert_null(pf_filter_ratelimit.on_done);
    assert_int_equal(pf_filter_ratelimit.ctx_size, 0);
}

static void test_ratelimit_refills_at_rate_when_clock_advances(void **state)
{
    void *conf = conf_new("ratelimit:\n  requests_per_second: 10\n  burst: 5\n");

    (void)state;
    assert_int_equal(admitted(conf, "192.0.2.1", 10), 5);
    fake_now_us += SEC / 10; /* one token */
    assert_int_equal(admitted(conf, "192.0.2.1", 3), 1);
    fake_now_us += SEC / 20; /* half a token */
    assert_int_equal(admitted(conf, "192.0.2.1", 1), 0);
    fake_now_us += SEC / 20; /* the other half */
    assert_int_equal(admitted(conf, "192.0.2.1", 1), 1);
    fake_now_us += 3 * SEC / 10; /* three tokens */
    assert_int_equal(admitted(conf, "192.0.2.1", 10), 3);
    fake_now_us += 60 * SEC; /* long idle: the bucket holds burst, no more */
    assert_int_equal(admitted(conf, "192.0.2.1", 10), 5);
    inst_free(conf);
}

static void test_ratelimit_retry_after_is_seconds_until_next_token(void **state)
{
    void *slow = conf_new("ratelimit:\n  requests_per_second: 0.5\n  burst: 1\n");
    void *slower = conf_new("ratelimit:\n  requests_per_second: 0.1\n  burst: 3\n");
    void *fast = conf_new("ratelimit:\n  requests_per_second: 1000\n  burst: 1\n");

    (void)state;
    assert_int_equal(admitted(slow, "192.0.2.1", 1), 1);
    assert_string_equal(req(slow, "192.0.2.1").retry, "2");
    fake_now_us += SEC / 2; /* 1.5 s left: rounded up */
    assert_string_equal(req(slow, "192.0.2.1").retry, "2");
    fake_now_us += 6 * SEC / 10; /* 0.9 s left */
    assert_string_equal(req(slow, "192.0.2.1").retry, "1");
    fake_now_us += SEC; /* refused requests did not push the next token back */
    assert_int_equal(admitted(slow, "192.0.2.1", 1), 1);

    assert_int_equal(admitted(slower, "192.0.2.1", 4), 3);
    assert_string_equal(req(slower, "192.0.2.1").retry, "10");

    assert_int_equal(admitted(fast, "192.0.2.1", 2), 1);
    assert_string_equal(req(fast, "192.0.2.1").retry, "1"); /* 1 ms away: at least 1 */
    inst_free(slow);
    inst_free(slower);
    inst_free(fast);
}

static void test_ratelimit_keys_by_client_address(void **state)
{
    void *conf = conf_new("ratelimit:\n  burst: 2\n");

    (void)state;
    assert_int_equal(admitted(conf, "192.0.2.1", 3), 2);
    assert_int_equal(admitted(conf, "192.0.2.2", 3), 2);
    assert_int_equal(admitted(conf, "2001:db8::1", 3), 2);
    /* one address, several spellings: one bucket */
    assert_int_equal(admitted(conf, "::ffff:192.0.2.1", 1), 0);
    assert_int_equal(admitted(conf, "2001:db8:0:0::1", 1), 0);
    /* unix-socket clients share one bucket */
    assert_int_equal(admitted(conf, "unix", 3), 2);
    inst_free(conf);
}

static void test_ratelimit_keys_by_header_separately(void **state)
{
    void *conf = conf_new("ratelimit:\n  burst: 2\n  key: header:X-Api-Key\n");

    (void)state;
    assert_int_equal(req_h(conf, "192.0.2.1", "X-Api-Key", "alice").v, PF_NEXT);
    assert_int_equal(req_h(conf, "192.0.2.2", "x-api-key", "alice").v, PF_NEXT);
    assert_limited(req_h(conf, "192.0.2.3", "X-API-KEY", "alice"));
    /* another value, same client address: its own bucket */
    assert_int_equal(req_h(conf, "192.0.2.1", "X-Api-Key", "bob").v, PF_NEXT);
    assert_int_equal(req_h(conf, "192.0.2.1", "X-Api-Key", "bob").v, PF_NEXT);
    assert_limited(req_h(conf, "192.0.2.1", "X-Api-Key", "bob"));
    /* absent and empty share the one "empty key" bucket */
    assert_int_equal(req_h(conf, "192.0.2.4", "Other", "x").v, PF_NEXT);
    assert_int_equal(req_h(conf, "192.0.2.5", "X-Api-Key", "").v, PF_NEXT);
    assert_limited(req(conf, "192.0.2.6"));
    inst_free(conf);
}

static void test_ratelimit_global_key_limits_all_clients_together(void **state)
{
    void *conf = conf_new("ratelimit:\n  requests_per_second: 2\n  burst: 3\n  key: global\n");

    (void)state;
    assert_int_equal(req(conf, "192.0.2.1").v, PF_NEXT);
    assert_int_equal(req(conf, "192.0.2.2").v, PF_NEXT);
    assert_int_equal(req(conf, "2001:db8::7").v, PF_NEXT);
    assert_limited(req(conf, "192.0.2.9"));
    assert_string_equal(req(conf, "192.0.2.9").retry, "1");
    fake_now_us += SEC / 2;
    assert_int_equal(admitted(conf, "192.0.2.3", 2), 1);
    assert_int_equal(pf_ratelimit_keys(PSTATE(conf)), 0); /* no per-key table in use */
    inst_free(conf);
}

/* ---- shared by workers ---- */

struct hammer {
    void *conf;               /* shared conf */
    struct pf_worker *worker; /* the fake worker this thread plays */
    const char *client;       /* peer address of every request */
    unsigned n;               /* requests to send */
    unsigned admitted;        /* result */
};

static void *hammer_main(void *arg)
{
    struct hammer *h = arg;
    struct inst *in = h->conf;
    struct pf_slot slot = {.conf = in->conf, .wstate = NULL, .ctx = NULL, .pstate = in->pstate};
    struct pf_tx tx;

    for (unsigned i = 0; i < h->n; i++) {
        fake_tx_init(&tx, "GET", "/");
        tx.w = h->worker;
        fake_tx_set_client(&tx, h->client);
        fake_tx_set_route(&tx, "route-threads");
        h->admitted += pf_filter_ratelimit.on_request(&tx, &slot) == PF_NEXT;
        fake_tx_fini(&tx);
    }
    return NULL;
}

/* Two workers hammer conf with the clock frozen: together they get exactly burst. */
static void two_workers_share(const char *yaml, const char *client0, const char *client1,
                              unsigned burst)
{
    void *conf = conf_new(yaml);
    struct pf_worker w[2] = {{.index = 0, .count = 2}, {.index = 1, .count = 2}};
    struct hammer h[2] = {
        {conf, &w[0], client0, 2000, 0},
        {conf, &w[1], client1, 2000, 0},
    };
    pthread_t t[2];
    uint64_t before = pf_ratelimit_rejected("route-threads");

    for (int i = 0; i < 2; i++)
        assert_int_equal(pthread_create(&t[i], NULL, hammer_main, &h[i]), 0);
    for (int i = 0; i < 2; i++)
        assert_int_equal(pthread_join(t[i], NULL), 0);
    assert_int_equal(h[0].admitted + h[1].admitted, burst);
    assert_int_equal(pf_ratelimit_rejected("route-threads") - before, 4000 - burst);
    inst_free(conf);
}

static void test_ratelimit_two_workers_share_one_limit_when_time_frozen(void **state)
{
    (void)state;
    two_workers_share("ratelimit:\n  requests_per_second: 1\n  burst: 150\n", "192.0.2.1",
                      "192.0.2.1", 150);
    two_workers_share("ratelimit:\n  requests_per_second: 1\n  burst: 150\n  key: global\n",
                      "192.0.2.1", "192.0.2.2", 150);
}

/* Distinct clients per thread, so both workers insert and evict in the same shards. */
static void *churn_main(void *arg)
{
    struct hammer *h = arg;
    struct inst *in = h->conf;
    struct pf_slot slot = {.conf = in->conf, .wstate = NULL, .ctx = NULL, .pstate = in->pstate};
    struct pf_tx tx;
    char ip[64];

    for (unsigned i = 0; i < h->n; i++) {
        snprintf(ip, sizeof(ip), "%s%x", h->client, i);
        fake_tx_init(&tx, "GET", "/");
        tx.w = h->worker;
        fake_tx_set_client(&tx, ip);
        h->admitted += pf_filter_ratelimit.on_request(&tx, &slot) == PF_NEXT;
        fake_tx_fini(&tx);
    }
    return NULL;
}

static void test_ratelimit_two_workers_evict_safely_when_table_full(void **state)
{
    void *conf = conf_new("ratelimit:\n  burst: 1\n  max_keys: 64\n");
    struct pf_worker w[2] = {{.index = 0, .count = 2}, {.index = 1, .count = 2}};
    struct hammer h[2] = {
        {conf, &w[0], "2001:db8:0:1::", 20000, 0},
        {conf, &w[1], "2001:db8:0:2::", 20000, 0},
    };
    pthread_t t[2];

    (void)state;
    for (int i = 0; i < 2; i++)
        assert_int_equal(pthread_create(&t[i], NULL, churn_main, &h[i]), 0);
    for (int i = 0; i < 2; i++)
        assert_int_equal(pthread_join(t[i], NULL), 0);
    /* every client was new, and so had a full bucket */
    assert_int_equal(h[0].admitted + h[1].admitted, 40000);
    assert_true(pf_ratelimit_keys(PSTATE(conf)) <= 64);
    inst_free(conf);
}

/* ---- the lock-free path (pf_ratelimit_take) ---- */

struct taker {
    struct inst *in;   /* shared */
    unsigned keys;     /* distinct keys, cycled */
    unsigned rounds;   /* passes over the keys */
    unsigned admitted; /* result */
};

static void *taker_main(void *arg)
{
    struct taker *t = arg;
    char key[16];

    for (unsigned r = 0; r < t->rounds; r++) {
        for (unsigned k = 0; k < t->keys; k++) {
            int len = snprintf(key, sizeof(key), "key-%u", k);

            t->admitted +=
                pf_ratelimit_take(t->in->conf, t->in->pstate, key, (size_t)len, fake_now_us);
        }
    }
    return NULL;
}

/* Two threads meet on every key, first as new keys (the locked miss path) then as hits. */
static void test_ratelimit_cas_buckets_are_exact_when_threads_share_keys(void **state)
{
    struct inst *in = conf_new("ratelimit:\n  requests_per_second: 1\n  burst: 7\n"
                               "  key: header:X-Key\n  max_keys: 4096\n");
    struct taker t[2] = {{in, 300, 20, 0}, {in, 300, 20, 0}};
    pthread_t tid[2];

    (void)state;
    for (int i = 0; i < 2; i++)
        assert_int_equal(pthread_create(&tid[i], NULL, taker_main, &t[i]), 0);
    for (int i = 0; i < 2; i++)
        assert_int_equal(pthread_join(tid[i], NULL), 0);
    /* the clock is frozen: each key gave exactly its burst, no more, no less */
    assert_int_equal(t[0].admitted + t[1].admitted, 300 * 7);
    assert_int_equal(pf_ratelimit_keys(in->pstate), 300);
    /* the same bytes through on_request (header key) find the same buckets */
    assert_limited(req_h(in, "192.0.2.1", "X-Key", "key-5"));
    fake_now_us += SEC;
    assert_int_equal(req_h(in, "192.0.2.1", "X-Key", "key-5").v, PF_NEXT);
    assert_limited(req_h(in, "192.0.2.1", "X-Key", "key-5"));
    inst_free(in);
}

/* The global key is one compare-and-swap on one word, shared the same way. */
static void test_ratelimit_cas_global_bucket_is_exact_when_threads_race(void **state)
{
    struct inst *in = conf_new("ratelimit:\n  requests_per_second: 1\n  burst: 999\n"
                               "  key: global\n");
    struct taker t[2] = {{in, 10, 500, 0}, {in, 10, 500, 0}};
    pthread_t tid[2];

    (void)state;
    for (int i = 0; i < 2; i++)
        assert_int_equal(pthread_create(&tid[i], NULL, taker_main, &t[i]), 0);
    for (int i = 0; i < 2; i++)
        assert_int_equal(pthread_join(tid[i], NULL), 0);
    assert_int_equal(t[0].admitted + t[1].admitted, 999);
    inst_free(in);
}

/* Odd caps: sets of 8 while max_keys allows, one smaller set below 8. */
static void test_ratelimit_cas_table_never_holds_more_than_max_keys(void **state)
{
    static const char *const yaml[] = {
        "ratelimit:\n  burst: 1\n  max_keys: 1\n",
        "ratelimit:\n  burst: 1\n  max_keys: 5\n",
        "ratelimit:\n  burst: 1\n  max_keys: 13\n",
        "ratelimit:\n  burst: 1\n  max_keys: 100\n",
    };
    static const size_t cap[] = {1, 5, 13, 100};
    char ip[32];

    (void)state;
    for (unsigned y = 0; y < 4; y++) {
        struct inst *in = conf_new(yaml[y]);

        for (unsigned i = 0; i < 500; i++) {
            snprintf(ip, sizeof(ip), "10.1.%u.%u", i >> 8, i & 0xff);
            assert_int_equal(req(in, ip).v, PF_NEXT); /* new keys start full */
            assert_true(pf_ratelimit_keys(in->pstate) <= cap[y]);
        }
        /* the most recent key is kept, and still empty */
        assert_limited(req(in, ip));
        inst_free(in);
    }
}

/* ---- bounded memory ---- */

static void test_ratelimit_table_stays_within_max_keys_when_flooded(void **state)
{
    void *conf = conf_new("ratelimit:\n  burst: 1\n  max_keys: 1000\n");
    char ip[64];

    (void)state;
    for (unsigned i = 0; i < 10000; i++) {
        snprintf(ip, sizeof(ip), "10.%u.%u.%u", i >> 16, (i >> 8) & 0xff, i & 0xff);
        assert_int_equal(req(conf, ip).v, PF_NEXT);
        assert_true(pf_ratelimit_keys(PSTATE(conf)) <= 1000);
        fake_now_us += 1;
    }
    assert_true(pf_ratelimit_keys(PSTATE(conf)) > 500); /* the cap is used, not wasted */
    /* the most recent key is still known (and still empty) */
    assert_limited(req(conf, ip));
    for (unsigned i = 0; i < 10000; i++) {
        snprintf(ip, sizeof(ip), "2001:db8::%x:%x", i >> 16, i & 0xffff);
        req(conf, ip);
    }
    assert_true(pf_ratelimit_keys(PSTATE(conf)) <= 1000);
    inst_free(conf);
}

static void test_ratelimit_evicts_refilled_bucket_before_drained_one(void **state)
{
    /* max_keys 8: one shard of 8, so the eviction order is observable */
    void *conf = conf_new("ratelimit:\n  requests_per_second: 1\n  burst: 10\n  max_keys: 8\n");
    char ip[32];

    (void)state;
    assert_int_equal(admitted(conf, "192.0.2.100", 11), 10); /* drained: full again in 10 s */
    for (int i = 1; i <= 7; i++) {
        snprintf(ip, sizeof(ip), "192.0.2.%d", i);
        assert_int_equal(admitted(conf, ip, 1), 1); /* full again in 1 s */
    }
    assert_int_equal(pf_ratelimit_keys(PSTATE(conf)), 8);
    fake_now_us += 2 * SEC;
    /* 192.0.2.100 is the least recently used, but the others have refilled */
    assert_int_equal(admitted(conf, "192.0.2.50", 1), 1);
    assert_int_equal(pf_ratelimit_keys(PSTATE(conf)), 8);
    assert_int_equal(admitted(conf, "192.0.2.100", 3), 2); /* remembered: 2 tokens earned */
    inst_free(conf);
}

static void test_ratelimit_evicts_least_recently_used_when_none_refilled(void **state)
{
    void *conf = conf_new("ratelimit:\n  requests_per_second: 1\n  burst: 1\n  max_keys: 8\n");
    char ip[32];

    (void)state;
    for (int i = 1; i <= 8; i++) {
        snprintf(ip, sizeof(ip), "192.0.2.%d", i);
        assert_int_equal(admitted(conf, ip, 1), 1);
    }
    assert_int_equal(admitted(conf, "192.0.2.1", 1), 0); /* 192.0.2.1 now most recent */
    assert_int_equal(admitted(conf, "192.0.2.9", 1), 1); /* evicts 192.0.2.2 */
    assert_int_equal(pf_ratelimit_keys(PSTATE(conf)), 8);
    assert_int_equal(admitted(conf, "192.0.2.1", 1), 0);
    assert_int_equal(admitted(conf, "192.0.2.2", 1), 1); /* forgotten: starts full */
    inst_free(conf);
}

/* ---- X-Forwarded-For ---- */

static void test_ratelimit_ignores_xff_when_peer_untrusted(void **state)
{
    void *plain = conf_new("ratelimit:\n  burst: 1\n");
    void *trusting = conf_new("ratelimit:\n  burst: 1\n  trusted_proxies: [10.0.0.0/8]\n");

    (void)state;
    assert_int_equal(req_h(plain, "10.0.0.1", "X-Forwarded-For", "198.51.100.1").v, PF_NEXT);
    assert_limited(req_h(plain, "10.0.0.1", "X-Forwarded-For", "198.51.100.2"));
    /* a peer outside trusted_proxies cannot pick its key */
    assert_int_equal(req_h(trusting, "203.0.113.5", "X-Forwarded-For", "198.51.100.1").v, PF_NEXT);
    assert_limited(req_h(trusting, "203.0.113.5", "X-Forwarded-For", "198.51.100.2"));
    assert_int_equal(req_h(trusting, "10.0.0.1", "X-Forwarded-For", "203.0.113.6").v, PF_NEXT);
    inst_free(plain);
    inst_free(trusting);
}

static void test_ratelimit_uses_rightmost_untrusted_xff_when_peer_trusted(void **state)
{
    void *conf = conf_new("ratelimit:\n  burst: 1\n"
                          "  trusted_proxies: [10.0.0.0/8, \"fd00::/8\", 192.0.2.7]\n");

    (void)state;
    /* 6.6.6.6 was written by the client itself; 10.0.0.3 is our own proxy */
    assert_int_equal(
        req_h(conf, "10.0.0.2", "X-Forwarded-For", "6.6.6.6, 198.51.100.7, 10.0.0.3").v, PF_NEXT);
    assert_limited(req_h(conf, "10.9.9.9", "X-Forwarded-For", "198.51.100.7"));
    assert_limited(req_h(conf, "192.0.2.7", "X-Forwarded-For", "1.1.1.1,198.51.100.7"));
    assert_int_equal(req_h(conf, "10.0.0.2", "X-Forwarded-For", "198.51.100.7, 198.51.100.8").v,
                     PF_NEXT);
    /* several headers: the last one is the rightmost */
    assert_limited(req_on(conf, "route-0", "10.0.0.2", "X-Forwarded-For", "198.51.100.7",
                          "X-Forwarded-For", "10.1.1.1"));
    /* IPv6 and forms with a port */
    assert_int_equal(req_h(conf, "fd00::1", "X-Forwarded-For", "[2001:db8::5]:443").v, PF_NEXT);
    assert_limited(req_h(conf, "10.0.0.2", "X-Forwarded-For", "2001:db8::5, fd12::9"));
    assert_int_equal(req_h(conf, "10.0.0.2", "X-Forwarded-For", "203.0.113.9:5000").v, PF_NEXT);
    assert_limited(req_h(conf, "10.0.0.2", "X-Forwarded-For", "203.0.113.9"));
    /* a trusted peer without X-Forwarded-For is keyed by itself */
    assert_int_equal(req(conf, "10.0.0.200").v, PF_NEXT);
    assert_limited(req(conf, "10.0.0.200"));
    inst_free(conf);
}

static void test_ratelimit_stops_at_malformed_xff_entry(void **state)
{
    void *conf = conf_new("ratelimit:\n  burst: 1\n  trusted_proxies: 10.0.0.0/8\n");

    (void)state;
    /* what lies left of "unknown" is unverifiable: count under the last trusted hop */
    assert_int_equal(req_h(conf, "10.0.0.2", "X-Forwarded-For", "1.2.3.4, unknown, 10.0.0.3").v,
                     PF_NEXT);
    assert_limited(req_h(conf, "10.0.0.2", "X-Forwarded-For", "5.6.7.8, unknown, 10.0.0.3"));
    assert_limited(req_h(conf, "10.0.0.2", "X-Forwarded-For", "9.9.9.9,1.2.3.400,10.0.0.3"));
    /* empty elements are only skipped */
    assert_int_equal(req_h(conf, "10.0.0.2", "X-Forwarded-For", "198.51.100.1, ,").v, PF_NEXT);
    assert_limited(req_h(conf, "10.0.0.2", "X-Forwarded-For", "198.51.100.1"));
    /* every hop trusted: the leftmost */
    assert_int_equal(req_h(conf, "10.0.0.2", "X-Forwarded-For", "10.5.5.5, 10.0.0.3").v, PF_NEXT);
    assert_limited(req(conf, "10.5.5.5"));
    inst_free(conf);
}

/* ---- counters ---- */

struct seen {
    const char *route; /* looked for */
    uint64_t count;    /* its count, when listed */
    unsigned hits;     /* times listed */
};

static void count_cb(void *arg, const char *route, uint64_t rejected)
{
    struct seen *s = arg;

    if (strcmp(route, s->route) == 0) {
        s->count = rejected;
        s->hits++;
    }
}

static void test_ratelimit_counts_rejections_per_route(void **state)
{
    void *conf = conf_new("ratelimit:\n  burst: 1\n");
    struct seen s = {"route-count-b", 0, 0};

    (void)state;
    assert_int_equal(pf_ratelimit_rejected("route-count-a"), 0);
    assert_int_equal(req_on(conf, "route-count-a", "192.0.2.1", NULL, NULL, NULL, NULL).v, PF_NEXT);
    assert_int_equal(pf_ratelimit_rejected("route-count-a"), 0);
    for (int i = 0; i < 3; i++)
        assert_limited(req_on(conf, "route-count-a", "192.0.2.1", NULL, NULL, NULL, NULL));
    assert_limited(req_on(conf, "route-count-b", "192.0.2.1", NULL, NULL, NULL, NULL));
    assert_int_equal(pf_ratelimit_rejected("route-count-a"), 3);
    assert_int_equal(pf_ratelimit_rejected("route-count-b"), 1);
    pf_ratelimit_rejected_each(count_cb, &s);
    assert_int_equal(s.hits, 1);
    assert_int_equal(s.count, 1);
    inst_free(conf);
    /* per process: a new conf (a reload) keeps counting */
    conf = conf_new("ratelimit:\n  burst: 1\n");
    assert_int_equal(admitted(conf, "192.0.2.1", 1), 1); /* new conf, new buckets */
    assert_limited(req_on(conf, "route-count-a", "192.0.2.1", NULL, NULL, NULL, NULL));
    assert_int_equal(pf_ratelimit_rejected("route-count-a"), 4);
    inst_free(conf);
}

/* ---- configuration errors ---- */

/* yaml must fail; its first error must contain want (e.g. the line:col). */
static void assert_conf_error(const char *yaml, const char *want)
{
    void *conf = (void *)1;
    char msg[256];

    assert_int_equal(parse_yaml(yaml, &conf, msg, sizeof(msg)), -EINVAL);
    if (strstr(msg, want) == NULL)
        fail_msg("error \"%s\" does not contain \"%s\"", msg, want);
}

static void test_ratelimit_conf_rejects_bad_key_kind(void **state)
{
    (void)state;
    assert_conf_error("ratelimit:\n  key: cookie:sid\n", "test.yaml:2:8: ratelimit.key");
    assert_conf_error("ratelimit:\n  key: \"header:\"\n", "test.yaml:2:8: ratelimit.key");
    assert_conf_error("ratelimit:\n  key: \"header:X Y\"\n", "test.yaml:2:8: ratelimit.key");
    assert_conf_error("ratelimit:\n  key: [global]\n", "test.yaml:2:8: ratelimit.key");
}

static void test_ratelimit_conf_rejects_bad_cidr(void **state)
{
    (void)state;
    assert_conf_error("ratelimit:\n  trusted_proxies: [10.0.0.0/8, 10.0.0.0/33]\n",
                      "test.yaml:2:33: ratelimit.trusted_proxies: \"10.0.0.0/33\"");
    assert_conf_error("ratelimit:\n  trusted_proxies:\n    - proxy.local\n",
                      "test.yaml:3:7: ratelimit.trusted_proxies: \"proxy.local\"");
    assert_conf_error("ratelimit:\n  trusted_proxies: \"fd00::/129\"\n", "test.yaml:2:20");
    assert_conf_error("ratelimit:\n  trusted_proxies: 10.0.0.0/\n", "test.yaml:2:20");
    assert_conf_error("ratelimit:\n  trusted_proxies: {a: 1}\n", "test.yaml:2:20");
}

static void test_ratelimit_conf_rejects_bad_numbers(void **state)
{
    (void)state;
    assert_conf_error("ratelimit:\n  requests_per_second: -5\n",
                      "test.yaml:2:24: ratelimit.requests_per_second");
    assert_conf_error("ratelimit:\n  requests_per_second: 0\n", "test.yaml:2:24");
    assert_conf_error("ratelimit:\n  requests_per_second: fast\n", "test.yaml:2:24");
    assert_conf_error("ratelimit:\n  requests_per_second: .nan\n", "test.yaml:2:24");
    assert_conf_error("ratelimit:\n  burst: 0\n", "test.yaml:2:10: ratelimit.burst");
    assert_conf_error("ratelimit:\n  max_keys: 0\n", "test.yaml:2:13: ratelimit.max_keys");
    assert_conf_error("ratelimit:\n  requests_per_second: 1e-12\n  burst: 1000\n",
                      "test.yaml:2:24");
}

static void test_ratelimit_conf_rejects_unknown_key(void **state)
{
    (void)state;
    assert_conf_error("ratelimit:\n  rate: 5\n", "test.yaml:2:3: unknown key 'rate' in ratelimit");
    assert_conf_error("ratelimit: 5\n", "test.yaml:1:12");
}

static void test_ratelimit_conf_accepts_every_setting(void **state)
{
    void *conf = conf_new("ratelimit:\n"
                          "  requests_per_second: 2.5\n"
                          "  burst: 4\n"
                          "  key: header:Authorization\n"
                          "  max_keys: 64\n"
                          "  trusted_proxies: [\"::1\", 127.0.0.1/32, 0.0.0.0/0, \"::/0\"]\n");

    (void)state;
    assert_int_equal(req_h(conf, "192.0.2.1", "Authorization", "Bearer x").v, PF_NEXT);
    inst_free(conf);
    /* an empty section means the defaults */
    conf = conf_new("ratelimit:\n");
    assert_int_equal(admitted(conf, "192.0.2.1", 201), 200);
    inst_free(conf);
    pf_filter_ratelimit.conf_free(NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
#define T(fn) cmocka_unit_test_setup(fn, reset_clock)
        T(test_ratelimit_has_spec_defaults_when_section_absent),
        T(test_ratelimit_replies_429_when_bucket_empty),
        T(test_ratelimit_passes_through_responses_untouched),
        T(test_ratelimit_refills_at_rate_when_clock_advances),
        T(test_ratelimit_retry_after_is_seconds_until_next_token),
        T(test_ratelimit_keys_by_client_address),
        T(test_ratelimit_keys_by_header_separately),
        T(test_ratelimit_global_key_limits_all_clients_together),
        T(test_ratelimit_two_workers_share_one_limit_when_time_frozen),
        T(test_ratelimit_two_workers_evict_safely_when_table_full),
        T(test_ratelimit_cas_buckets_are_exact_when_threads_share_keys),
        T(test_ratelimit_cas_global_bucket_is_exact_when_threads_race),
        T(test_ratelimit_cas_table_never_holds_more_than_max_keys),
        T(test_ratelimit_table_stays_within_max_keys_when_flooded),
        T(test_ratelimit_evicts_refilled_bucket_before_drained_one),
        T(test_ratelimit_evicts_least_recently_used_when_none_refilled),
        T(test_ratelimit_ignores_xff_when_peer_untrusted),
        T(test_ratelimit_uses_rightmost_untrusted_xff_when_peer_trusted),
        T(test_ratelimit_stops_at_malformed_xff_entry),
        T(test_ratelimit_counts_rejections_per_route),
        T(test_ratelimit_conf_rejects_bad_key_kind),
        T(test_ratelimit_conf_rejects_bad_cidr),
        T(test_ratelimit_conf_rejects_bad_numbers),
        T(test_ratelimit_conf_rejects_unknown_key),
        T(test_ratelimit_conf_accepts_every_setting),
#undef T
    };

    return cmocka_run_group_tests_name("ratelimit", tests, NULL, NULL);
}
