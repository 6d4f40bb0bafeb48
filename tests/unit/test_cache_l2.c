/*
 * Unit tests for filters/cache/l2.c: rendezvous hashing, then the client
 * against real redis-server processes (started here on free loopback ports,
 * stopped by PID) and against fake servers (a socket that never answers, or
 * answers late or with garbage). Every wait runs the event loop until the
 * awaited callback, bounded by a generous deadline; nothing asserts on time.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <time.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/wait.h>

#include <cmocka.h>
#include <event2/event.h>
#include <hiredis/hiredis.h>

#include "filters/cache/l2.h"

#define WAIT_S 20 /* generous bound of every wait */

/* ---- hashing ---- */

static void test_pick_spread(void **state)
{
    unsigned count[4] = {0};
    const char *addrs[4] = {"10.0.0.1:6379", "10.0.0.2:6379", "10.0.0.3:6379", "unix:/r.sock"};
    unsigned among[4] = {0};
    char key[64];
    (void)state;
    for (int i = 0; i < 40000; i++) {
        snprintf(key, sizeof(key), "GET|https|example.com/item/%d", i);
        unsigned p = pf_l2_pick(key, 4);
        assert_true(p < 4);
        assert_int_equal(p, pf_l2_pick(key, 4)); /* stable */
        count[p]++;
        among[pf_l2_pick_among(key, addrs, 4)]++;
    }
    for (int i = 0; i < 4; i++) {
        assert_in_range(count[i], 9000, 11000);
        assert_in_range(among[i], 9000, 11000);
    }
    assert_int_equal(pf_l2_pick("x", 1), 0);
}

static void test_pick_remove_last(void **state)
{
    unsigned moved = 0, on_last = 0;
    char key[64];
    (void)state;
    for (int i = 0; i < 20000; i++) {
        snprintf(key, sizeof(key), "/k/%d", i);
        unsigned before = pf_l2_pick(key, 5), after = pf_l2_pick(key, 4);
        if (before == 4)
            on_last++;
        else
            assert_int_equal(before, after); /* only the removed server's keys move */
        moved += before != after;
    }
    assert_int_equal(moved, on_last);
    assert_in_range(on_last, 3400, 4600);
}

static void test_pick_remove_middle(void **state)
{
    const char *five[5] = {"a:1", "b:1", "c:1", "d:1", "e:1"};
    const char *four[4] = {"a:1", "c:1", "d:1", "e:1"}; /* b removed */
    unsigned moved = 0, on_b = 0, to[4] = {0};
    char key[64];
    (void)state;
    for (int i = 0; i < 20000; i++) {
        snprintf(key, sizeof(key), "/k/%d", i);
        const char *before = five[pf_l2_pick_among(key, five, 5)];
        unsigned a = pf_l2_pick_among(key, four, 4);
        if (!strcmp(before, "b:1")) {
            on_b++;
            to[a]++;
        } else {
            assert_string_equal(before, four[a]);
        }
        moved += strcmp(before, four[a]) != 0;
    }
    assert_int_equal(moved, on_b);
    for (int i = 0; i < 4; i++) /* b's keys spread over the others */
        assert_in_range(to[i], on_b / 8, on_b / 2);
}

/* ---- processes and sockets ---- */

static int free_port(void)
{
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(sa);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&sa, &len), 0);
    close(fd);
    return ntohs(sa.sin_port);
}

/* A listening socket nobody accepts from: connects succeed, nothing answers. */
static int listen_silent(int *port)
{
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(sa);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    assert_int_equal(listen(fd, 16), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&sa, &len), 0);
    *port = ntohs(sa.sin_port);
    return fd;
}

static redisContext *redis_sync(int port)
{
    struct timeval tv = {1, 0};
    redisContext *c = redisConnectWithTimeout("127.0.0.1", port, tv);
    if (c && c->err) {
        redisFree(c);
        return NULL;
    }
    return c;
}

/* Start redis-server on port and wait until it answers PING. */
static pid_t redis_start(int port, const char *password)
{
    char p[16];
    snprintf(p, sizeof(p), "%d", port);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        char *argv[] = {"redis-server",
                        "--port",
                        p,
                        "--bind",
                        "127.0.0.1",
                        "--save",
                        "",
                        "--appendonly",
                        "no",
                        "--requirepass",
                        (char *)password,
                        NULL};
        if (!password[0])
            argv[9] = NULL;
        if (!freopen("/dev/null", "w", stdout))
            _exit(127);
        execvp("redis-server", argv);
        _exit(127);
    }
    for (int i = 0; i < WAIT_S * 100; i++) {
        redisContext *c = redis_sync(port);
        if (c) {
            redisFree(c);
            return pid;
        }
        assert_int_equal(waitpid(pid, NULL, WNOHANG), 0); /* still running */
        usleep(10000);
    }
    fail_msg("redis-server on port %d did not start", port);
    return -1;
}

static void redis_stop(pid_t pid)
{
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
}

/* ---- the event loop ---- */

static void tick_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    (void)arg;
}

/* Run base until *done (or until the deadline passes: the caller's assert then fails). */
static void run_until(struct event_base *base, const int *done, int want)
{
    struct timeval tick = {0, 10000};
    struct event *ev = event_new(base, -1, EV_PERSIST, tick_cb, NULL);
    time_t end = time(NULL) + WAIT_S;
    event_add(ev, &tick);
    while (*done < want && time(NULL) < end)
        event_base_loop(base, EVLOOP_ONCE);
    event_free(ev);
}

/* Run base for about ms (only for waits that must see nothing happen). */
static void run_for(struct event_base *base, int ms)
{
    struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
    event_base_loopexit(base, &tv);
    event_base_dispatch(base);
}

struct res {
    int calls;
    bool hit;
    size_t len;
    char data[256];
};

static void get_cb(void *arg, const void *data, size_t len)
{
    struct res *r = arg;
    r->calls++;
    r->hit = data != NULL;
    r->len = len;
    if (data && len < sizeof(r->data))
        memcpy(r->data, data, len);
}

/* A get run to its callback: true on a hit. */
static bool get_wait(struct pf_l2 *l2, struct event_base *base, const char *key, struct res *r)
{
    memset(r, 0, sizeof(*r));
    pf_l2_get(l2, key, get_cb, r);
    assert_int_equal(r->calls, 0); /* never called from inside pf_l2_get */
    run_until(base, &r->calls, 1);
    assert_int_equal(r->calls, 1);
    return r->hit;
}

/* Poll key until it misses (purges run asynchronously); bounded. */
static void wait_gone(struct pf_l2 *l2, struct event_base *base, const char *key)
{
    struct res r;
    for (int i = 0; i < 200 && get_wait(l2, base, key, &r); i++)
        run_for(base, 20);
    assert_false(r.hit);
}

static struct pf_l2 *l2_at(struct event_base *base, const char *const *addrs, unsigned n,
                           uint64_t timeout_ms)
{
    struct pf_l2_conf conf = {.addresses = addrs,
                              .n_addresses = n,
                              .password = "",
                              .timeout_ms = timeout_ms,
                              .key_prefix = "pft:"};
    struct pf_l2 *l2 = pf_l2_new(base, &conf);
    assert_non_null(l2);
    return l2;
}

/* ---- against redis-server ---- */

struct fx {
    struct event_base *base;
    int port;
    pid_t pid;
    char addr[32];
    const char *addrs[1];
};

static int fx_setup(void **state)
{
    struct fx *f = calloc(1, sizeof(*f));
    f->base = event_base_new();
    f->port = free_port();
    f->pid = redis_start(f->port, "");
    snprintf(f->addr, sizeof(f->addr), "127.0.0.1:%d", f->port);
    f->addrs[0] = f->addr;
    *state = f;
    return 0;
}

static int fx_teardown(void **state)
{
    struct fx *f = *state;
    if (f->pid > 0)
        redis_stop(f->pid);
    event_base_free(f->base);
    free(f);
    return 0;
}

static void test_set_get(void **state)
{
    struct fx *f = *state;
    struct pf_l2 *l2 = l2_at(f->base, f->addrs, 1, 10000);
    struct pf_l2_stats st;
    struct res r;
    static const char val[] = "head\0body\r\n";
    pf_l2_set(l2, "GET|http|a/1", val, sizeof(val), 60, NULL, 0);
    assert_true(get_wait(l2, f->base, "GET|http|a/1", &r));
    assert_int_equal(r.len, sizeof(val));
    assert_memory_equal(r.data, val, sizeof(val));
    assert_false(get_wait(l2, f->base, "GET|http|absent", &r));
    pf_l2_del(l2, "GET|http|a/1");
    assert_false(get_wait(l2, f->base, "GET|http|a/1", &r));
    pf_l2_stats(l2, &st);
    assert_int_equal(st.hits, 1);
    assert_int_equal(st.misses, 2);
    assert_int_equal(st.errors, 0);
    /* the key carries the prefix and the TTL */
    redisContext *c = redis_sync(f->port);
    pf_l2_set(l2, "k2", "v", 1, 60, NULL, 0);
    assert_false(get_wait(l2, f->base, "absent", &r)); /* the set is done once this returns */
    redisReply *rep = redisCommand(c, "TTL pft:k2");
    assert_int_equal(rep->type, REDIS_REPLY_INTEGER);
    assert_in_range(rep->integer, 1, 60);
    freeReplyObject(rep);
    redisFree(c);
    pf_l2_free(l2);
}

/* A pf_l2_then_fn: counts its calls, notes whether it had the client, and may send a DEL. */
struct then_rec {
    int calls;
    bool had_l2;
    const char *del; /* deleted from the follow-up, when not NULL */
};

static void then_cb(void *arg, struct pf_l2 *l2)
{
    struct then_rec *t = arg;

    t->calls++;
    t->had_l2 = l2 != NULL;
    if (l2 != NULL && t->del != NULL)
        pf_l2_del(l2, t->del);
}

static void test_set_then(void **state)
{
    struct fx *f = *state;
    struct pf_l2 *l2 = l2_at(f->base, f->addrs, 1, 10000);
    struct then_rec t = {0, false, NULL}, t0 = {0, true, NULL}, tdel = {0, false, "st2"};
    struct res r;

    /* once the SET's reply is in (never from inside the call), with the client */
    pf_l2_set_then(l2, "st1", "v", 1, 60, NULL, 0, then_cb, &t);
    assert_int_equal(t.calls, 0);
    run_until(f->base, &t.calls, 1);
    assert_int_equal(t.calls, 1);
    assert_true(t.had_l2);
    assert_true(get_wait(l2, f->base, "st1", &r));
    /* nothing sent (TTL 0): at once, without the client */
    pf_l2_set_then(l2, "st0", "v", 1, 0, NULL, 0, then_cb, &t0);
    assert_int_equal(t0.calls, 1);
    assert_false(t0.had_l2);
    /* a command sent from the follow-up runs after the SET: the key is gone */
    pf_l2_set_then(l2, "st2", "v", 1, 60, NULL, 0, then_cb, &tdel);
    run_until(f->base, &tdel.calls, 1);
    assert_false(get_wait(l2, f->base, "st2", &r));
    /* a follow-up pending when the client is freed: called once, without the client */
    t.calls = 0;
    pf_l2_set_then(l2, "st3", "v", 1, 60, NULL, 0, then_cb, &t);
    pf_l2_free(l2);
    assert_int_equal(t.calls, 1);
    assert_false(t.had_l2);
}

static void test_cancel(void **state)
{
    struct fx *f = *state;
    struct pf_l2 *l2 = l2_at(f->base, f->addrs, 1, 10000);
    struct res r1 = {0}, r2;
    pf_l2_set(l2, "c", "x", 1, 60, NULL, 0);
    uint64_t h = pf_l2_get(l2, "c", get_cb, &r1);
    assert_true(h != 0);
    pf_l2_cancel(l2, h);
    /* replies come in order: once this one is in, the cancelled one was read too */
    assert_true(get_wait(l2, f->base, "c", &r2));
    assert_int_equal(r1.calls, 0);
    pf_l2_cancel(l2, h);      /* already cancelled: no-op */
    pf_l2_cancel(l2, h + 99); /* unknown: no-op */
    pf_l2_free(l2);
}

static void test_free_pending(void **state)
{
    struct fx *f = *state;
    struct pf_l2 *l2 = l2_at(f->base, f->addrs, 1, 10000);
    struct res r[3] = {{0}}, sync;
    assert_false(get_wait(l2, f->base, "warm", &sync)); /* connected now */
    for (int i = 0; i < 3; i++)
        pf_l2_get(l2, "p", get_cb, &r[i]);
    pf_l2_purge_prefix(l2, "zz"); /* a SCAN walk in flight too */
    pf_l2_free(l2);
    run_for(f->base, 50);
    for (int i = 0; i < 3; i++)
        assert_int_equal(r[i].calls, 0);
    /* freed while still connecting */
    l2 = l2_at(f->base, f->addrs, 1, 10000);
    pf_l2_get(l2, "p", get_cb, &r[0]);
    pf_l2_free(l2);
    run_for(f->base, 50);
    assert_int_equal(r[0].calls, 0);
}

static void test_purge_tag(void **state)
{
    struct fx *f = *state;
    struct pf_l2 *l2 = l2_at(f->base, f->addrs, 1, 10000);
    const char *t1[] = {"t1"}, *t12[] = {"t1", "t2"}, *t2[] = {"t2"};
    struct res r;
    pf_l2_set(l2, "a", "1", 1, 600, t1, 1);
    pf_l2_set(l2, "b", "2", 1, 60, t12, 2);
    pf_l2_set(l2, "c", "3", 1, 60, t2, 1);
    pf_l2_set(l2, "d", "4", 1, 60, NULL, 0);
    assert_true(get_wait(l2, f->base, "a", &r));
    /* the tag set lives as long as its longest-lived member, whatever the order */
    redisContext *c = redis_sync(f->port);
    redisReply *rep = redisCommand(c, "TTL pft:tag:t1");
    assert_in_range(rep->integer, 61, 600);
    freeReplyObject(rep);
    pf_l2_purge_tag(l2, "t1");
    wait_gone(l2, f->base, "a");
    wait_gone(l2, f->base, "b");
    assert_true(get_wait(l2, f->base, "c", &r));
    assert_true(get_wait(l2, f->base, "d", &r));
    rep = redisCommand(c, "EXISTS pft:tag:t1");
    assert_int_equal(rep->integer, 0);
    freeReplyObject(rep);
    redisFree(c);
    pf_l2_free(l2);
}

static void test_purge_prefix(void **state)
{
    struct fx *f = *state;
    struct pf_l2 *l2 = l2_at(f->base, f->addrs, 1, 10000);
    char key[32];
    struct res r;
    for (int i = 0; i < 250; i++) { /* more than one SCAN batch */
        snprintf(key, sizeof(key), "p/%d", i);
        pf_l2_set(l2, key, "v", 1, 60, NULL, 0);
    }
    pf_l2_set(l2, "q/1", "v", 1, 60, NULL, 0);
    pf_l2_set(l2, "x*1", "v", 1, 60, NULL, 0);
    pf_l2_set(l2, "xa1", "v", 1, 60, NULL, 0);
    assert_true(get_wait(l2, f->base, "xa1", &r));
    pf_l2_purge_prefix(l2, "p/");
    pf_l2_purge_prefix(l2, "x*"); /* a literal '*', not a glob */
    for (int i = 0; i < 250; i++) {
        snprintf(key, sizeof(key), "p/%d", i);
        wait_gone(l2, f->base, key);
    }
    wait_gone(l2, f->base, "x*1");
    assert_true(get_wait(l2, f->base, "q/1", &r));
    assert_true(get_wait(l2, f->base, "xa1", &r));
    pf_l2_free(l2);
}

/* A message received by the subscriber, and how many keys of the job were left in Redis then. */
struct bus {
    int calls;
    char msg[64];
    long long left;
    int port;
};

static void bus_cb(void *arg, const char *msg, size_t len)
{
    struct bus *b = arg;
    redisContext *c = redis_sync(b->port);
    redisReply *rep =
        c ? redisCommand(c, "EVAL %s 0", "return #redis.call('KEYS', 'pft:j*')") : NULL;
    b->left = rep != NULL && rep->type == REDIS_REPLY_INTEGER ? rep->integer : -1;
    if (rep)
        freeReplyObject(rep);
    if (c)
        redisFree(c);
    snprintf(b->msg, sizeof(b->msg), "%.*s", (int)len, msg);
    b->calls++;
}

static void wait_subscribed(struct event_base *base, int port, const char *channel)
{
    redisContext *c = redis_sync(port);
    long long n = 0;
    for (int i = 0; i < 500 && n == 0; i++) {
        run_for(base, 10);
        redisReply *rep = redisCommand(c, "PUBSUB NUMSUB %s", channel);
        n = rep->type == REDIS_REPLY_ARRAY && rep->elements == 2 ? rep->element[1]->integer : 0;
        freeReplyObject(rep);
    }
    redisFree(c);
    assert_int_equal(n, 1);
}

/* A job's message is published once Redis has run every delete of the job, never before. */
static void test_job_publishes_after_its_deletes(void **state)
{
    struct fx *f = *state;
    struct pf_l2 *l2 = l2_at(f->base, f->addrs, 1, 10000);
    struct pf_l2_conf conf = {.addresses = f->addrs,
                              .n_addresses = 1,
                              .password = "",
                              .timeout_ms = 10000,
                              .key_prefix = "pft:"};
    struct bus b = {.port = f->port};
    struct pf_l2 *sub = pf_l2_subscriber_new(f->base, &conf, "bus", bus_cb, &b);
    const char *tag[] = {"jt"};
    char key[32];
    struct res r;
    struct pf_l2_job *j;

    assert_non_null(sub);
    wait_subscribed(f->base, f->port, "pft:bus");
    for (int i = 0; i < 300; i++) { /* several SCAN batches */
        snprintf(key, sizeof(key), "jp/%d", i);
        pf_l2_set(l2, key, "v", 1, 60, NULL, 0);
    }
    pf_l2_set(l2, "jtagged", "v", 1, 60, tag, 1);
    pf_l2_set(l2, "jone", "v", 1, 60, NULL, 0);
    assert_true(get_wait(l2, f->base, "jone", &r));
    j = pf_l2_job_new(l2);
    pf_l2_job_purge_prefix(j, "jp/");
    pf_l2_job_purge_tag(j, "jt");
    pf_l2_job_del(j, "jone");
    pf_l2_job_publish(j, "bus", "purged", 6);
    run_until(f->base, &b.calls, 1);
    assert_int_equal(b.calls, 1);
    assert_string_equal(b.msg, "purged");
    assert_int_equal(b.left, 0);
    /* a job with nothing to delete ends too (and frees itself) */
    j = pf_l2_job_new(l2);
    pf_l2_job_del(j, "jx");
    pf_l2_job_publish(j, "bus", "second", 6);
    run_until(f->base, &b.calls, 2);
    assert_string_equal(b.msg, "second");
    pf_l2_free(sub);
    pf_l2_free(l2);
}

static void test_kill_restart(void **state)
{
    struct fx *f = *state;
    struct pf_l2 *l2 = l2_at(f->base, f->addrs, 1, 500);
    struct pf_l2_stats st;
    struct res r;
    pf_l2_set(l2, "k", "v", 1, 60, NULL, 0);
    assert_true(get_wait(l2, f->base, "k", &r));
    redis_stop(f->pid);
    f->pid = -1;
    assert_false(get_wait(l2, f->base, "k", &r));
    assert_false(get_wait(l2, f->base, "k", &r)); /* disconnected: an immediate miss */
    f->pid = redis_start(f->port, "");
    bool hit = false;
    for (int i = 0; i < 500 && !hit; i++) { /* backoff is at most 5 s */
        pf_l2_set(l2, "k", "v2", 2, 60, NULL, 0);
        hit = get_wait(l2, f->base, "k", &r);
        if (!hit)
            run_for(f->base, 50);
    }
    assert_true(hit);
    assert_memory_equal(r.data, "v2", 2);
    pf_l2_stats(l2, &st);
    assert_true(st.reconnects >= 1);
    pf_l2_free(l2);
}

static void test_auth_select(void **state)
{
    struct event_base *base = event_base_new();
    int port = free_port();
    pid_t pid = redis_start(port, "sekret");
    char addr[32];
    const char *addrs[1] = {addr};
    struct pf_l2_conf conf = {
        .addresses = addrs, .n_addresses = 1, .db = 3, .timeout_ms = 10000, .key_prefix = ""};
    struct res r;
    struct pf_l2_stats st;
    (void)state;
    snprintf(addr, sizeof(addr), "127.0.0.1:%d", port);
    conf.password = "sekret";
    struct pf_l2 *l2 = pf_l2_new(base, &conf);
    pf_l2_set(l2, "k", "v", 1, 60, NULL, 0);
    assert_true(get_wait(l2, base, "k", &r));
    pf_l2_free(l2);
    redisContext *c = redis_sync(port);
    redisReply *rep = redisCommand(c, "AUTH sekret");
    freeReplyObject(rep);
    rep = redisCommand(c, "SELECT 3");
    freeReplyObject(rep);
    rep = redisCommand(c, "EXISTS k");
    assert_int_equal(rep->integer, 1); /* in db 3 */
    freeReplyObject(rep);
    redisFree(c);
    conf.password = "wrong"; /* refused: gets miss and count errors */
    l2 = pf_l2_new(base, &conf);
    assert_false(get_wait(l2, base, "k", &r));
    pf_l2_stats(l2, &st);
    assert_true(st.errors >= 1);
    pf_l2_free(l2);
    redis_stop(pid);
    event_base_free(base);
}

static void test_two_servers(void **state)
{
    struct event_base *base = event_base_new();
    int ports[2] = {free_port(), 0};
    pid_t pids[2];
    char a0[32], a1[32], key[32];
    const char *addrs[2] = {a0, a1};
    unsigned on[2] = {0};
    struct res r;
    (void)state;
    pids[0] = redis_start(ports[0], "");
    ports[1] = free_port();
    pids[1] = redis_start(ports[1], "");
    snprintf(a0, sizeof(a0), "127.0.0.1:%d", ports[0]);
    snprintf(a1, sizeof(a1), "127.0.0.1:%d", ports[1]);
    struct pf_l2 *l2 = l2_at(base, addrs, 2, 10000);
    for (int i = 0; i < 40; i++) {
        snprintf(key, sizeof(key), "k%d", i);
        pf_l2_set(l2, key, key, strlen(key), 60, NULL, 0);
    }
    redisContext *c[2] = {redis_sync(ports[0]), redis_sync(ports[1])};
    for (int i = 0; i < 40; i++) {
        snprintf(key, sizeof(key), "k%d", i);
        assert_true(get_wait(l2, base, key, &r));
        assert_memory_equal(r.data, key, strlen(key));
        unsigned s = pf_l2_pick_among(key, addrs, 2);
        on[s]++;
        for (unsigned j = 0; j < 2; j++) {
            redisReply *rep = redisCommand(c[j], "EXISTS pft:%s", key);
            assert_int_equal(rep->integer, j == s); /* on its own server only */
            freeReplyObject(rep);
        }
    }
    assert_in_range(on[0], 5, 35);
    pf_l2_free(l2);
    for (int j = 0; j < 2; j++) {
        redisFree(c[j]);
        redis_stop(pids[j]);
    }
    event_base_free(base);
}

static void test_unix_socket(void **state)
{
    struct event_base *base = event_base_new();
    char path[64], addr[80];
    const char *addrs[1] = {addr};
    struct res r;
    (void)state;
    snprintf(path, sizeof(path), "/tmp/pf-l2-test-%d.sock", (int)getpid());
    snprintf(addr, sizeof(addr), "unix:%s", path);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        if (!freopen("/dev/null", "w", stdout))
            _exit(127);
        execlp("redis-server", "redis-server", "--port", "0", "--unixsocket", path, "--save", "",
               "--appendonly", "no", (char *)NULL);
        _exit(127);
    }
    redisContext *c = NULL;
    for (int i = 0; i < WAIT_S * 100 && !c; i++) {
        c = redisConnectUnix(path);
        if (c && c->err) {
            redisFree(c);
            c = NULL;
            usleep(10000);
        }
    }
    assert_non_null(c);
    redisFree(c);
    struct pf_l2 *l2 = l2_at(base, addrs, 1, 10000);
    pf_l2_set(l2, "u", "unix", 4, 60, NULL, 0);
    assert_true(get_wait(l2, base, "u", &r));
    assert_memory_equal(r.data, "unix", 4);
    pf_l2_free(l2);
    redis_stop(pid);
    unlink(path);
    event_base_free(base);
}

static void test_bad_address(void **state)
{
    const char *bad[] = {"127.0.0.1:notaport", "127.0.0.1:0", "unix:", ":6379", "[::1"};
    struct event_base *base = event_base_new();
    (void)state;
    for (unsigned i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        struct pf_l2_conf conf = {.addresses = &bad[i], .n_addresses = 1, .timeout_ms = 50};
        assert_null(pf_l2_new(base, &conf));
    }
    struct pf_l2_conf none = {.n_addresses = 0};
    assert_null(pf_l2_new(base, &none));
    pf_l2_free(NULL);
    event_base_free(base);
}

/* ---- against fake servers ---- */

static void test_nothing_listening(void **state)
{
    struct event_base *base = event_base_new();
    char addr[32];
    const char *addrs[1] = {addr};
    struct res r;
    struct pf_l2_stats st;
    (void)state;
    snprintf(addr, sizeof(addr), "127.0.0.1:%d", free_port());
    struct pf_l2 *l2 = l2_at(base, addrs, 1, 100);
    assert_false(get_wait(l2, base, "k", &r));
    assert_false(get_wait(l2, base, "k", &r));
    pf_l2_set(l2, "k", "v", 1, 60, NULL, 0); /* dropped, no crash */
    pf_l2_purge_tag(l2, "t");
    pf_l2_purge_prefix(l2, "p");
    pf_l2_stats(l2, &st);
    assert_int_equal(st.misses, 2);
    assert_int_equal(st.hits, 0);
    pf_l2_free(l2);
    event_base_free(base);
}

/* A scripted server on an accepted socket: counts commands, answers from the n-th on. */
struct fake {
    int fd;
    int cmds;
    int answer_from;
    const char *answer;
    struct event *ev;
};

static void fake_read(evutil_socket_t fd, short what, void *arg)
{
    struct fake *fk = arg;
    char buf[4096];
    (void)what;
    ssize_t n = read(fd, buf, sizeof(buf));
    for (ssize_t i = 0; i + 1 < n; i++) {
        if (buf[i] == '*' && buf[i + 1] == '2' && ++fk->cmds >= fk->answer_from && fk->answer)
            assert_true(write(fd, fk->answer, strlen(fk->answer)) > 0);
    }
}

static void test_silent_then_late(void **state)
{
    struct event_base *base = event_base_new();
    int port, lfd = listen_silent(&port);
    char addr[32];
    const char *addrs[1] = {addr};
    struct res r1, r2;
    struct pf_l2_stats st;
    struct pf_l2_totals t0, t1;
    (void)state;
    snprintf(addr, sizeof(addr), "127.0.0.1:%d", port);
    pf_l2_totals(&t0);
    struct pf_l2 *l2 = l2_at(base, addrs, 1, 1000);
    assert_false(get_wait(l2, base, "k", &r1)); /* nobody answers: a miss at timeout_ms */
    pf_l2_stats(l2, &st);
    assert_int_equal(st.timeouts, 1);
    /* the process-wide totals count it too, and time it up to the timeout */
    pf_l2_totals(&t1);
    assert_int_equal(t1.timeouts - t0.timeouts, 1);
    assert_int_equal(t1.count - t0.count, 1);
    assert_true(t1.sum_us - t0.sum_us >= 900000);
    /* now answer that get late, and the next one on time */
    struct fake fk = {.answer_from = 2, .answer = "$3\r\nxyz\r\n"};
    fk.fd = accept(lfd, NULL, NULL);
    assert_true(fk.fd >= 0);
    assert_int_equal(write(fk.fd, "$3\r\nabc\r\n", 9), 9);
    fk.ev = event_new(base, fk.fd, EV_READ | EV_PERSIST, fake_read, &fk);
    event_add(fk.ev, NULL);
    assert_true(get_wait(l2, base, "k", &r2));
    assert_memory_equal(r2.data, "xyz", 3); /* the late "abc" was dropped */
    assert_int_equal(r1.calls, 1);
    pf_l2_free(l2);
    event_free(fk.ev);
    close(fk.fd);
    close(lfd);
    event_base_free(base);
}

static void test_garbage(void **state)
{
    struct event_base *base = event_base_new();
    int port, lfd = listen_silent(&port);
    char addr[32];
    const char *addrs[1] = {addr};
    struct res r;
    struct pf_l2_stats st;
    struct pf_l2_totals t0, t1;
    (void)state;
    snprintf(addr, sizeof(addr), "127.0.0.1:%d", port);
    pf_l2_totals(&t0);
    struct pf_l2 *l2 = l2_at(base, addrs, 1, 10000);
    struct fake fk = {.answer_from = 1, .answer = ":1\r\n"}; /* an integer to a GET */
    memset(&r, 0, sizeof(r));
    pf_l2_get(l2, "k", get_cb, &r);
    fk.fd = accept(lfd, NULL, NULL);
    assert_true(fk.fd >= 0);
    fk.ev = event_new(base, fk.fd, EV_READ | EV_PERSIST, fake_read, &fk);
    event_add(fk.ev, NULL);
    run_until(base, &r.calls, 1);
    assert_int_equal(r.calls, 1);
    assert_false(r.hit);
    pf_l2_stats(l2, &st);
    assert_int_equal(st.errors, 1);
    assert_int_equal(st.timeouts, 0);
    pf_l2_totals(&t1);
    assert_int_equal(t1.errors - t0.errors, 1);
    assert_int_equal(t1.timeouts - t0.timeouts, 0);
    assert_int_equal(t1.count - t0.count, 1);
    /* answered at once by the fake: in a bucket, not past the last bound */
    uint64_t in_buckets = 0;
    for (unsigned b = 0; b < PF_L2_BUCKETS; b++)
        in_buckets += t1.buckets[b] - t0.buckets[b];
    assert_int_equal(in_buckets, 1);
    pf_l2_free(l2);
    event_free(fk.ev);
    close(fk.fd);
    close(lfd);
    event_base_free(base);
}

struct acc {
    int n;
    int fds[8];
};

/* Accept and keep open (closing would itself make the client reconnect). */
static void accept_cb(evutil_socket_t fd, short what, void *arg)
{
    struct acc *a = arg;
    int c = accept(fd, NULL, NULL);
    (void)what;
    if (c >= 0 && a->n < 8)
        a->fds[a->n++] = c;
    else if (c >= 0)
        close(c);
}

/* Timeouts in a row without a reply: the connection is dropped and made anew. */
static void test_stuck_reconnects(void **state)
{
    struct event_base *base = event_base_new();
    int port, lfd = listen_silent(&port);
    struct acc acc = {0};
    char addr[32];
    const char *addrs[1] = {addr};
    struct res r;
    (void)state;
    snprintf(addr, sizeof(addr), "127.0.0.1:%d", port);
    struct pf_l2 *l2 = l2_at(base, addrs, 1, 50);
    for (int i = 0; i < 3; i++)
        assert_false(get_wait(l2, base, "k", &r));
    struct event *ev = event_new(base, lfd, EV_READ | EV_PERSIST, accept_cb, &acc);
    event_add(ev, NULL);
    run_until(base, &acc.n, 2); /* the first connection, then a new one */
    assert_int_equal(acc.n, 2);
    pf_l2_free(l2);
    event_free(ev);
    for (int i = 0; i < acc.n; i++)
        close(acc.fds[i]);
    close(lfd);
    event_base_free(base);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_pick_spread),
        cmocka_unit_test(test_pick_remove_last),
        cmocka_unit_test(test_pick_remove_middle),
        cmocka_unit_test(test_nothing_listening),
        cmocka_unit_test(test_silent_then_late),
        cmocka_unit_test(test_garbage),
        cmocka_unit_test(test_stuck_reconnects),
        cmocka_unit_test_setup_teardown(test_set_get, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_set_then, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_cancel, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_free_pending, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_purge_tag, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_purge_prefix, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_job_publishes_after_its_deletes, fx_setup,
                                        fx_teardown),
        cmocka_unit_test_setup_teardown(test_kill_restart, fx_setup, fx_teardown),
        cmocka_unit_test(test_auth_select),
        cmocka_unit_test(test_two_servers),
        cmocka_unit_test(test_unix_socket),
        cmocka_unit_test(test_bad_address),
    };
    signal(SIGPIPE, SIG_IGN);
    return cmocka_run_group_tests(tests, NULL, NULL);
}
