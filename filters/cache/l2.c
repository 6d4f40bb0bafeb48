/*
 * The L2 tier: Redis through hiredis 0.14's async API on one worker's loop.
 *
 * hiredis 0.14 has no command timeout and no reconnect, and frees a context
 * whose connect failed without calling the disconnect callback. So every get
 * has its own timer (a timed-out get misses; its late reply finds no pending
 * record and is dropped), and each server has a reconnect timer with
 * exponential backoff. The pointer to a context is cleared before it is
 * freed, so the callbacks run while hiredis frees it never use it again.
 */
#include <stdarg.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>
#include <event2/event_struct.h>
#include <hiredis/adapters/libevent.h>
#include <hiredis/async.h>
#include <hiredis/hiredis.h>

#include "filters/cache/l2.h"
#include "proxy/arena.h"
#include "proxy/filter.h"
#include "proxy/log.h"
#include "proxy/stats.h"

#define BACKOFF_MIN_MS  100
#define BACKOFF_MAX_MS  5000
#define CONNECT_MIN_MS  1000  /* a connect gets at least this, or timeout_ms if longer */
#define STUCK_TIMEOUTS  3     /* timeouts in a row without any reply: drop the connection */
#define MAX_OUTSTANDING 10000 /* commands awaiting a reply on one connection */
#define SCAN_COUNT      "100"
#define TABLE_MIN       64
#define DEFAULT_PORT    6379

struct server {
    struct pf_l2 *l2;
    char *host; /* NULL for a unix socket */
    char *path;
    int port;
    uint64_t seed;         /* rendezvous identity: a hash of the address */
    redisAsyncContext *ac; /* NULL while disconnected */
    bool connected;
    bool ever_connected;
    unsigned tmo_in_row;
    unsigned outstanding;
    uint64_t backoff_ms;
    struct event reconnect_ev;
    struct event connect_tmo_ev;
    struct event drop_ev;
};

struct get_rec {
    struct get_rec *next; /* hash chain */
    struct pf_l2 *l2;
    uint64_t h;
    pf_l2_get_fn cb;
    void *arg;
    struct server *srv;
    bool immediate; /* missed without a command: not a timeout */
    uint64_t start_us;
    struct event tmo;
};

struct pf_l2 {
    struct event_base *base;
    struct server *servers;
    unsigned n;
    unsigned db;
    char *password;
    char *prefix;
    uint64_t timeout_ms;
    uint64_t next_h;
    struct get_rec **table; /* pending gets by handle */
    size_t table_size, n_pending;
    bool freeing;
    struct pf_l2_stats st;
    char *sub_channel; /* a subscriber (pf_l2_subscriber_new): SUBSCRIBEd at each connect */
    pf_l2_msg_fn sub_cb;
    void *sub_arg;
};

static void server_connect(struct server *s);

/*
 * Process-wide totals of every client (pf_l2_totals): per-thread counter
 * cells (proxy/stats.h), written by the worker that owns a client, summed by
 * a scrape on the main thread while the clients come and go with reloads.
 */
enum { T_ERRORS, T_TIMEOUTS, T_RECONNECTS, T_COUNT, T_SUM_US, T_BUCKET0 };

const double pf_l2_bounds[PF_L2_BUCKETS] = {0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005,
                                            0.01,   0.025,   0.05,   0.1,   0.25,   1.0};

static struct pf_counter_set totals = PF_COUNTER_SET(T_BUCKET0 + PF_L2_BUCKETS);
static __thread _Atomic uint64_t *my_totals;

static void total_add(unsigned i, uint64_t n)
{
    if (my_totals == NULL)
        my_totals = pf_counter_cells(&totals);
    pf_counter_add(&my_totals[i], n);
}

/* One event of a client: its own stats field and the process-wide total t. */
static void count(uint64_t *field, unsigned t)
{
    (*field)++;
    total_add(t, 1);
}

/* A get that went to Redis took us microseconds (to its reply, or to its timeout). */
static void observe(uint64_t us)
{
    unsigned b = 0;

    while (b < PF_L2_BUCKETS && (double)us > pf_l2_bounds[b] * 1e6)
        b++;
    total_add(T_COUNT, 1);
    total_add(T_SUM_US, us);
    if (b < PF_L2_BUCKETS)
        total_add(T_BUCKET0 + b, 1);
}

void pf_l2_totals(struct pf_l2_totals *out)
{
    out->errors = pf_counter_sum(&totals, T_ERRORS);
    out->timeouts = pf_counter_sum(&totals, T_TIMEOUTS);
    out->reconnects = pf_counter_sum(&totals, T_RECONNECTS);
    out->count = pf_counter_sum(&totals, T_COUNT);
    out->sum_us = pf_counter_sum(&totals, T_SUM_US);
    for (unsigned b = 0; b < PF_L2_BUCKETS; b++)
        out->buckets[b] = pf_counter_sum(&totals, T_BUCKET0 + b);
}

/* ---- hashing ---- */

static uint64_t fnv1a(uint64_t h, const char *s)
{
    for (; *s; s++) {
        h ^= (unsigned char)*s;
        h *= 0x100000001b3ULL;
    }
    return h;
}

#define FNV_BASIS 0xcbf29ce484222325ULL

/* splitmix64's finalizer: every input bit reaches every output bit. */
static uint64_t mix64(uint64_t x)
{
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ULL;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebULL;
    x ^= x >> 31;
    return x;
}

/* Rendezvous weight of a key's hash on the server of identity seed. */
static uint64_t weight(uint64_t hkey, uint64_t seed)
{
    return mix64(hkey ^ mix64(seed));
}

static uint64_t index_seed(unsigned i)
{
    return mix64((uint64_t)i + 0x9e3779b97f4a7c15ULL);
}

unsigned pf_l2_pick(const char *key, unsigned n)
{
    uint64_t hkey = fnv1a(FNV_BASIS, key), best_w = 0;
    unsigned best = 0;
    for (unsigned i = 0; i < n; i++) {
        uint64_t w = weight(hkey, index_seed(i));
        if (i == 0 || w > best_w) {
            best = i;
            best_w = w;
        }
    }
    return best;
}

unsigned pf_l2_pick_among(const char *key, const char *const *addresses, unsigned n)
{
    uint64_t hkey = fnv1a(FNV_BASIS, key), best_w = 0;
    unsigned best = 0;
    for (unsigned i = 0; i < n; i++) {
        uint64_t w = weight(hkey, fnv1a(FNV_BASIS, addresses[i]));
        if (i == 0 || w > best_w) {
            best = i;
            best_w = w;
        }
    }
    return best;
}

/* The server of the key part1 part2 (their concatenation, without the prefix): the same
 * choice as pf_l2_pick_among over the configured addresses. */
static struct server *server_of(struct pf_l2 *l2, const char *part1, const char *part2)
{
    uint64_t hkey = fnv1a(fnv1a(FNV_BASIS, part1), part2), best_w = 0;
    unsigned best = 0;
    for (unsigned i = 0; i < l2->n; i++) {
        uint64_t w = weight(hkey, l2->servers[i].seed);
        if (i == 0 || w > best_w) {
            best = i;
            best_w = w;
        }
    }
    return &l2->servers[best];
}

/* ---- pending gets by handle ---- */

static void table_grow(struct pf_l2 *l2)
{
    size_t size = l2->table_size ? l2->table_size * 2 : TABLE_MIN;
    struct get_rec **t = pf_xcalloc(size, sizeof(*t));
    for (size_t i = 0; i < l2->table_size; i++) {
        struct get_rec *r = l2->table[i], *next;
        for (; r; r = next) {
            next = r->next;
            r->next = t[r->h & (size - 1)];
            t[r->h & (size - 1)] = r;
        }
    }
    free(l2->table);
    l2->table = t;
    l2->table_size = size;
}

static void table_put(struct pf_l2 *l2, struct get_rec *r)
{
    if (l2->n_pending >= l2->table_size)
        table_grow(l2);
    r->next = l2->table[r->h & (l2->table_size - 1)];
    l2->table[r->h & (l2->table_size - 1)] = r;
    l2->n_pending++;
}

/* Unlink handle h's record and stop its timer; NULL when it is not pending. */
static struct get_rec *table_take(struct pf_l2 *l2, uint64_t h)
{
    if (!l2->table_size)
        return NULL;
    struct get_rec **pp = &l2->table[h & (l2->table_size - 1)];
    for (; *pp; pp = &(*pp)->next) {
        struct get_rec *r = *pp;
        if (r->h == h) {
            *pp = r->next;
            l2->n_pending--;
            event_del(&r->tmo);
            return r;
        }
    }
    return NULL;
}

/* ---- connections ---- */

static void schedule_reconnect(struct server *s)
{
    struct timeval tv = {(time_t)(s->backoff_ms / 1000),
                         (suseconds_t)(s->backoff_ms % 1000) * 1000};
    event_del(&s->connect_tmo_ev);
    evtimer_add(&s->reconnect_ev, &tv);
    s->backoff_ms = s->backoff_ms * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : s->backoff_ms * 2;
}

/* Close the connection now: pending commands are called back with a NULL reply. */
static void server_drop(struct server *s)
{
    redisAsyncContext *ac = s->ac;
    if (!ac)
        return;
    s->ac = NULL;
    s->connected = false;
    s->tmo_in_row = 0;
    redisAsyncFree(ac);
    s->outstanding = 0;
    if (!s->l2->freeing)
        schedule_reconnect(s);
}

static void on_connect(const redisAsyncContext *ac, int status)
{
    struct server *s = ac->data;
    if (s->ac != ac)
        return;
    event_del(&s->connect_tmo_ev);
    if (status != REDIS_OK) {
        /* hiredis frees this context when we return, without a disconnect callback. */
        pf_debug("cache l2: connect to %s:%d failed: %s", s->host ? s->host : s->path, s->port,
                 ac->errstr);
        s->ac = NULL;
        s->outstanding = 0;
        schedule_reconnect(s);
        return;
    }
    s->connected = true;
    s->backoff_ms = BACKOFF_MIN_MS;
    if (s->ever_connected) {
        count(&s->l2->st.reconnects, T_RECONNECTS);
        pf_log(PF_LOG_INFO, "cache l2: reconnected to %s:%d", s->host ? s->host : s->path, s->port);
    }
    s->ever_connected = true;
}

static void on_disconnect(const redisAsyncContext *ac, int status)
{
    struct server *s = ac->data;
    (void)status;
    if (s->ac != ac) /* dropped by us: already handled */
        return;
    pf_log(PF_LOG_WARN, "cache l2: connection to %s:%d lost: %s", s->host ? s->host : s->path,
           s->port, ac->errstr);
    s->ac = NULL;
    s->connected = false;
    s->tmo_in_row = 0;
    s->outstanding = 0;
    if (!s->l2->freeing)
        schedule_reconnect(s);
}

static void reconnect_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    server_connect(arg);
}

static void drop_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    server_drop(arg);
}

static void connect_tmo_cb(evutil_socket_t fd, short what, void *arg)
{
    struct server *s = arg;
    (void)fd;
    (void)what;
    if (s->ac && !s->connected)
        server_drop(s);
}

/* Replies to AUTH and SELECT: a refusal makes the connection useless. */
static void setup_reply(redisAsyncContext *ac, void *r, void *priv)
{
    struct server *s = ac->data;
    redisReply *reply = r;
    (void)priv;
    if (s->ac == ac && s->outstanding)
        s->outstanding--;
    if (!reply || reply->type != REDIS_REPLY_ERROR || s->ac != ac ||
        evtimer_pending(&s->drop_ev, NULL))
        return;
    pf_log(PF_LOG_WARN, "cache l2: %s:%d refused AUTH or SELECT: %s", s->host ? s->host : s->path,
           s->port, reply->str);
    count(&s->l2->st.errors, T_ERRORS);
    s->backoff_ms = BACKOFF_MAX_MS;
    /* Not from inside hiredis's callback: drop from a zero-delay timer. */
    struct timeval zero = {0, 0};
    evtimer_add(&s->drop_ev, &zero);
}

/*
 * Replies on a subscriber's connection: the SUBSCRIBE's own, then one ["message", channel,
 * payload] per message published (hiredis keeps the callback for the channel). NULL when the
 * connection goes.
 */
static void sub_reply(redisAsyncContext *ac, void *r, void *priv)
{
    struct server *s = ac->data;
    redisReply *reply = r;
    const redisReply *kind;
    (void)priv;
    if (!reply || s->ac != ac || s->l2->freeing || reply->type != REDIS_REPLY_ARRAY ||
        reply->elements != 3)
        return;
    kind = reply->element[0];
    if (kind->type == REDIS_REPLY_STRING && !strcmp(kind->str, "message") &&
        reply->element[2]->type == REDIS_REPLY_STRING)
        s->l2->sub_cb(s->l2->sub_arg, reply->element[2]->str, (size_t)reply->element[2]->len);
    else if (s->outstanding) /* the subscription itself */
        s->outstanding--;
}

/* A command on s's connection; false when it cannot be sent now. */
static bool send_cmd(struct server *s, redisCallbackFn *fn, void *priv, const char *fmt, ...)
{
    va_list ap;
    int rc;
    if (!s->ac || s->outstanding >= MAX_OUTSTANDING)
        return false;
    va_start(ap, fmt);
    rc = redisvAsyncCommand(s->ac, fn, priv, fmt, ap);
    va_end(ap);
    if (rc != REDIS_OK)
        return false;
    s->outstanding++;
    return true;
}

static void server_connect(struct server *s)
{
    struct pf_l2 *l2 = s->l2;
    redisAsyncContext *ac =
        s->host ? redisAsyncConnect(s->host, s->port) : redisAsyncConnectUnix(s->path);
    if (!ac || ac->err) {
        pf_debug("cache l2: connect: %s", ac ? ac->errstr : "out of memory");
        if (ac)
            redisAsyncFree(ac);
        schedule_reconnect(s);
        return;
    }
    ac->data = s;
    if (redisLibeventAttach(ac, l2->base) != REDIS_OK) {
        redisAsyncFree(ac);
        schedule_reconnect(s);
        return;
    }
    redisAsyncSetConnectCallback(ac, on_connect);
    redisAsyncSetDisconnectCallback(ac, on_disconnect);
    s->ac = ac;
    s->connected = false;
    s->outstanding = 0;
    s->tmo_in_row = 0;
    /* Queued before any other command, so they are the first sent once connected. */
    if (l2->password[0])
        send_cmd(s, setup_reply, NULL, "AUTH %s", l2->password);
    if (l2->db)
        send_cmd(s, setup_reply, NULL, "SELECT %u", l2->db);
    if (l2->sub_channel != NULL)
        send_cmd(s, sub_reply, NULL, "SUBSCRIBE %s%s", l2->prefix, l2->sub_channel);
    uint64_t ms = l2->timeout_ms > CONNECT_MIN_MS ? l2->timeout_ms : CONNECT_MIN_MS;
    struct timeval tv = {(time_t)(ms / 1000), (suseconds_t)(ms % 1000) * 1000};
    evtimer_add(&s->connect_tmo_ev, &tv);
}

/* ---- construction ---- */

/* "host:port", "[v6]:port", "host" (port 6379) or "unix:/path". */
static int parse_addr(struct server *s, const char *a)
{
    if (!strncmp(a, "unix:", 5)) {
        if (!a[5])
            return -1;
        s->path = pf_xstrdup(a + 5);
        return 0;
    }
    const char *colon = strrchr(a, ':');
    const char *host = a, *host_end = colon ? colon : a + strlen(a);
    if (a[0] == '[') {
        const char *rb = strchr(a, ']');
        if (!rb || (rb[1] && rb[1] != ':'))
            return -1;
        host = a + 1;
        host_end = rb;
        colon = rb[1] ? rb + 1 : NULL;
    }
    s->port = DEFAULT_PORT;
    if (colon) {
        char *end;
        long p = strtol(colon + 1, &end, 10);
        if (*end || end == colon + 1 || p < 1 || p > 65535)
            return -1;
        s->port = (int)p;
    }
    if (host_end == host)
        return -1;
    s->host = pf_xstrndup(host, (size_t)(host_end - host));
    return 0;
}

/* A client, or a subscriber of channel (not NULL): it connects at once. */
static struct pf_l2 *l2_make(struct event_base *base, const struct pf_l2_conf *conf,
                             const char *channel, pf_l2_msg_fn cb, void *arg)
{
    struct pf_l2 *l2;
    if (!conf->n_addresses)
        return NULL;
    l2 = pf_xcalloc(1, sizeof(*l2));
    l2->sub_channel = channel ? pf_xstrdup(channel) : NULL;
    l2->sub_cb = cb;
    l2->sub_arg = arg;
    l2->base = base;
    l2->n = conf->n_addresses;
    l2->db = conf->db;
    l2->password = pf_xstrdup(conf->password ? conf->password : "");
    l2->prefix = pf_xstrdup(conf->key_prefix ? conf->key_prefix : "");
    l2->timeout_ms = conf->timeout_ms;
    l2->servers = pf_xcalloc(l2->n, sizeof(*l2->servers));
    for (unsigned i = 0; i < l2->n; i++) {
        struct server *s = &l2->servers[i];
        s->l2 = l2;
        s->seed = fnv1a(FNV_BASIS, conf->addresses[i]);
        s->backoff_ms = BACKOFF_MIN_MS;
        evtimer_assign(&s->reconnect_ev, base, reconnect_cb, s);
        evtimer_assign(&s->connect_tmo_ev, base, connect_tmo_cb, s);
        evtimer_assign(&s->drop_ev, base, drop_cb, s);
    }
    for (unsigned i = 0; i < l2->n; i++) {
        if (parse_addr(&l2->servers[i], conf->addresses[i]) < 0) {
            pf_log(PF_LOG_ERR, "cache l2: bad address '%s'", conf->addresses[i]);
            pf_l2_free(l2);
            return NULL;
        }
    }
    table_grow(l2);
    for (unsigned i = 0; i < l2->n; i++)
        server_connect(&l2->servers[i]);
    return l2;
}

struct pf_l2 *pf_l2_new(struct event_base *base, const struct pf_l2_conf *conf)
{
    return l2_make(base, conf, NULL, NULL, NULL);
}

struct pf_l2 *pf_l2_subscriber_new(struct event_base *base, const struct pf_l2_conf *conf,
                                   const char *channel, pf_l2_msg_fn cb, void *arg)
{
    struct pf_l2_conf one = *conf;
    const char *addr;

    if (!conf->n_addresses)
        return NULL;
    addr = conf->addresses[pf_l2_pick_among(channel, conf->addresses, conf->n_addresses)];
    one.addresses = &addr;
    one.n_addresses = 1;
    return l2_make(base, &one, channel, cb, arg);
}

void pf_l2_free(struct pf_l2 *l2)
{
    if (!l2)
        return;
    l2->freeing = true;
    for (size_t i = 0; i < l2->table_size; i++) {
        struct get_rec *r = l2->table[i], *next;
        for (; r; r = next) {
            next = r->next;
            event_del(&r->tmo);
            free(r);
        }
        l2->table[i] = NULL;
    }
    l2->n_pending = 0;
    for (unsigned i = 0; i < l2->n; i++) {
        struct server *s = &l2->servers[i];
        event_del(&s->reconnect_ev);
        event_del(&s->connect_tmo_ev);
        event_del(&s->drop_ev);
        server_drop(s);
        free(s->host);
        free(s->path);
    }
    free(l2->servers);
    free(l2->table);
    free(l2->password);
    free(l2->prefix);
    free(l2->sub_channel);
    free(l2);
}

/* ---- gets ---- */

static void finish_get(struct get_rec *r, const void *data, size_t len)
{
    struct pf_l2 *l2 = r->l2;
    uint64_t now = pf_now_us();

    if (!r->immediate)
        observe(now > r->start_us ? now - r->start_us : 0);
    if (data)
        l2->st.hits++;
    else
        l2->st.misses++;
    r->cb(r->arg, data, len);
    free(r);
}

static void get_reply(redisAsyncContext *ac, void *rep, void *priv)
{
    struct server *s = ac->data;
    struct pf_l2 *l2 = s->l2;
    redisReply *reply = rep;
    if (s->ac == ac) {
        if (s->outstanding)
            s->outstanding--;
        if (reply)
            s->tmo_in_row = 0;
    }
    struct get_rec *r = table_take(l2, (uint64_t)(uintptr_t)priv);
    if (!r) /* cancelled, timed out, or the client is being freed */
        return;
    if (reply && reply->type == REDIS_REPLY_STRING) {
        finish_get(r, reply->str ? reply->str : "", (size_t)reply->len);
        return;
    }
    if (!reply || reply->type != REDIS_REPLY_NIL)
        count(&l2->st.errors, T_ERRORS); /* connection lost, an error or garbage */
    finish_get(r, NULL, 0);
}

static void get_tmo_cb(evutil_socket_t fd, short what, void *arg)
{
    struct get_rec *r = arg;
    struct pf_l2 *l2 = r->l2;
    (void)fd;
    (void)what;
    r = table_take(l2, r->h);
    if (!r)
        return;
    if (!r->immediate) {
        struct server *s = r->srv;
        count(&l2->st.timeouts, T_TIMEOUTS);
        if (++s->tmo_in_row >= STUCK_TIMEOUTS && s->ac) {
            /* A server that answers nothing: its queue only grows. Reconnect. */
            pf_log(PF_LOG_WARN, "cache l2: %s:%d does not answer; reconnecting",
                   s->host ? s->host : s->path, s->port);
            struct timeval zero = {0, 0};
            evtimer_add(&s->drop_ev, &zero);
        }
    }
    finish_get(r, NULL, 0);
}

uint64_t pf_l2_get(struct pf_l2 *l2, const char *key, pf_l2_get_fn cb, void *arg)
{
    struct get_rec *r = pf_xcalloc(1, sizeof(*r));
    struct timeval tv = {0, 0};
    r->l2 = l2;
    r->h = ++l2->next_h;
    r->cb = cb;
    r->arg = arg;
    r->srv = server_of(l2, key, "");
    r->start_us = pf_now_us();
    evtimer_assign(&r->tmo, l2->base, get_tmo_cb, r);
    table_put(l2, r);
    if (send_cmd(r->srv, get_reply, (void *)(uintptr_t)r->h, "GET %s%s", l2->prefix, key)) {
        tv.tv_sec = (time_t)(l2->timeout_ms / 1000);
        tv.tv_usec = (suseconds_t)(l2->timeout_ms % 1000) * 1000;
    } else {
        r->immediate = true; /* called back from the loop, never from inside pf_l2_get */
    }
    evtimer_add(&r->tmo, &tv);
    return r->h;
}

void pf_l2_cancel(struct pf_l2 *l2, uint64_t h)
{
    free(table_take(l2, h));
}

/* ---- writes and purges ---- */

static void write_reply(redisAsyncContext *ac, void *rep, void *priv)
{
    struct server *s = ac->data;
    redisReply *reply = rep;
    (void)priv;
    if (s->ac == ac) {
        if (s->outstanding)
            s->outstanding--;
        if (reply)
            s->tmo_in_row = 0;
    }
    if (reply && reply->type == REDIS_REPLY_ERROR)
        count(&s->l2->st.errors, T_ERRORS);
}

/* A SET's follow-up (pf_l2_set_then): called once, with its reply or its loss. */
struct then {
    pf_l2_then_fn fn;
    void *arg;
};

static void set_reply(redisAsyncContext *ac, void *rep, void *priv)
{
    struct server *s = ac->data;
    struct then *t = priv;

    write_reply(ac, rep, NULL);
    t->fn(t->arg, s->l2->freeing ? NULL : s->l2);
    free(t);
}

void pf_l2_set(struct pf_l2 *l2, const char *key, const void *data, size_t len, uint64_t ttl_s,
               const char *const *tags, unsigned n_tags)
{
    pf_l2_set_then(l2, key, data, len, ttl_s, tags, n_tags, NULL, NULL);
}

void pf_l2_set_then(struct pf_l2 *l2, const char *key, const void *data, size_t len, uint64_t ttl_s,
                    const char *const *tags, unsigned n_tags, pf_l2_then_fn fn, void *arg)
{
    unsigned long long ttl = ttl_s;
    struct then *t = NULL;

    if (!ttl) { /* nothing to keep (and EX 0 is refused) */
        if (fn)
            fn(arg, NULL);
        return;
    }
    if (fn) {
        t = pf_xmalloc(sizeof(*t));
        t->fn = fn;
        t->arg = arg;
    }
    if (!send_cmd(server_of(l2, key, ""), t ? set_reply : write_reply, t, "SET %s%s %b EX %llu",
                  l2->prefix, key, data, len, ttl) &&
        t) {
        free(t);
        fn(arg, NULL); /* not sent: nothing to follow up */
    }
    for (unsigned i = 0; i < n_tags; i++) {
        struct server *s = server_of(l2, "tag:", tags[i]);
        /* The set lives as long as its longest-lived member: NX sets a first TTL, GT extends. */
        send_cmd(s, write_reply, NULL, "SADD %stag:%s %s", l2->prefix, tags[i], key);
        send_cmd(s, write_reply, NULL, "EXPIRE %stag:%s %llu NX", l2->prefix, tags[i], ttl);
        send_cmd(s, write_reply, NULL, "EXPIRE %stag:%s %llu GT", l2->prefix, tags[i], ttl);
    }
}

/*
 * A job: deletes whose purge message is PUBLISHed only once Redis has run
 * them all (pending counts the steps in flight, plus one until
 * pf_l2_job_publish), so that no other process, told to drop its memory
 * copy, can refill it from Redis in between. hiredis calls every callback
 * once, with NULL when the connection goes, so each step ends exactly once.
 */
struct pf_l2_job {
    struct pf_l2 *l2;
    unsigned pending;
    char *channel;
    char *msg;
    size_t len;
    pf_l2_then_fn then; /* pf_l2_job_then */
    void *then_arg;
};

struct pf_l2_job *pf_l2_job_new(struct pf_l2 *l2)
{
    struct pf_l2_job *j = pf_xcalloc(1, sizeof(*j));
    j->l2 = l2;
    j->pending = 1;
    return j;
}

static void job_done(struct pf_l2_job *j)
{
    if (!j || --j->pending > 0)
        return;
    if (j->then)
        j->then(j->then_arg, j->l2->freeing ? NULL : j->l2);
    if (j->msg && !j->l2->freeing)
        pf_l2_publish(j->l2, j->channel, j->msg, j->len);
    free(j->channel);
    free(j->msg);
    free(j);
}

void pf_l2_job_then(struct pf_l2_job *j, pf_l2_then_fn fn, void *arg)
{
    j->then = fn;
    j->then_arg = arg;
}

void pf_l2_job_publish(struct pf_l2_job *j, const char *channel, const void *msg, size_t len)
{
    j->channel = pf_xstrdup(channel);
    j->msg = pf_xmalloc(len ? len : 1);
    memcpy(j->msg, msg, len);
    j->len = len;
    job_done(j);
}

/* A step's reply (or its loss) ends it. */
static void job_reply(redisAsyncContext *ac, void *rep, void *priv)
{
    write_reply(ac, rep, NULL);
    job_done(priv);
}

/* DEL of key (without the prefix, len bytes), a step of j when j is not NULL. */
static void del_key(struct server *s, const char *prefix, const char *key, size_t len,
                    struct pf_l2_job *j)
{
    if (j)
        j->pending++;
    if (!send_cmd(s, j ? job_reply : write_reply, j, "DEL %s%b", prefix, key, len))
        job_done(j);
}

void pf_l2_job_del(struct pf_l2_job *j, const char *key)
{
    del_key(server_of(j->l2, key, ""), j->l2->prefix, key, strlen(key), j);
}

void pf_l2_del(struct pf_l2 *l2, const char *key)
{
    del_key(server_of(l2, key, ""), l2->prefix, key, strlen(key), NULL);
}

void pf_l2_publish(struct pf_l2 *l2, const char *channel, const void *msg, size_t len)
{
    send_cmd(server_of(l2, channel, ""), write_reply, NULL, "PUBLISH %s%s %b", l2->prefix, channel,
             msg, len);
}

/* SMEMBERS of a tag's set (priv: the job, or NULL): delete each member on its own server. */
static void members_reply(redisAsyncContext *ac, void *rep, void *priv)
{
    struct server *s = ac->data;
    struct pf_l2 *l2 = s->l2;
    redisReply *reply = rep;
    write_reply(ac, rep, NULL);
    if (reply && !l2->freeing && s->ac == ac && reply->type != REDIS_REPLY_ARRAY &&
        reply->type != REDIS_REPLY_ERROR)
        count(&l2->st.errors, T_ERRORS);
    for (size_t i = 0; reply && !l2->freeing && s->ac == ac && reply->type == REDIS_REPLY_ARRAY &&
                       i < reply->elements;
         i++) {
        const redisReply *m = reply->element[i];
        if (m->type == REDIS_REPLY_STRING && !memchr(m->str, 0, m->len))
            del_key(server_of(l2, m->str, ""), l2->prefix, m->str, (size_t)m->len, priv);
    }
    job_done(priv);
}

static void purge_tag(struct pf_l2 *l2, const char *tag, struct pf_l2_job *j)
{
    struct server *s = server_of(l2, "tag:", tag);
    if (j)
        j->pending++;
    /* The set is read, then deleted: both run in order on one connection. */
    if (send_cmd(s, members_reply, j, "SMEMBERS %stag:%s", l2->prefix, tag))
        send_cmd(s, write_reply, NULL, "DEL %stag:%s", l2->prefix, tag);
    else
        job_done(j);
}

void pf_l2_job_purge_tag(struct pf_l2_job *j, const char *tag)
{
    purge_tag(j->l2, tag, j);
}

void pf_l2_purge_tag(struct pf_l2 *l2, const char *tag)
{
    purge_tag(l2, tag, NULL);
}

/* A SCAN walk over one server: its pattern, and its job (or NULL). */
struct walk {
    char *pattern;
    struct pf_l2_job *job;
};

/* The walk is over (or lost): a PING after its last DELs ends its job step when they ran. */
static void walk_end(struct server *s, struct walk *w, bool ping)
{
    if (!ping || !w->job || !send_cmd(s, job_reply, w->job, "PING"))
        job_done(w->job);
    free(w->pattern);
    free(w);
}

/* One SCAN walk over one server; w is owned by the walk. */
static void scan_reply(redisAsyncContext *ac, void *rep, void *priv)
{
    struct server *s = ac->data;
    struct walk *w = priv;
    redisReply *reply = rep;
    write_reply(ac, rep, NULL);
    bool ok = reply && reply->type == REDIS_REPLY_ARRAY && reply->elements == 2 &&
              reply->element[0]->type == REDIS_REPLY_STRING &&
              reply->element[1]->type == REDIS_REPLY_ARRAY;
    if (!ok || s->l2->freeing || s->ac != ac) {
        if (reply && !ok && reply->type != REDIS_REPLY_ERROR)
            count(&s->l2->st.errors, T_ERRORS); /* garbage */
        walk_end(s, w, false);
        return;
    }
    const redisReply *keys = reply->element[1];
    for (size_t i = 0; i < keys->elements; i++) {
        const redisReply *k = keys->element[i];
        if (k->type == REDIS_REPLY_STRING)
            send_cmd(s, write_reply, NULL, "DEL %b", k->str, (size_t)k->len);
    }
    const char *cursor = reply->element[0]->str;
    if (!strcmp(cursor, "0"))
        walk_end(s, w, true);
    else if (!send_cmd(s, scan_reply, w, "SCAN %s MATCH %s COUNT " SCAN_COUNT, cursor, w->pattern))
        walk_end(s, w, false);
}

/* prefix + a glob-escaped copy of p + "*". */
static char *scan_pattern(const char *prefix, const char *p)
{
    size_t lp = strlen(prefix), n = strlen(p);
    char *out = pf_xmalloc(2 * (lp + n) + 2), *o = out;
    const char *parts[2] = {prefix, p};
    for (int i = 0; i < 2; i++) {
        for (const char *c = parts[i]; *c; c++) {
            if (strchr("*?[]\\", *c))
                *o++ = '\\';
            *o++ = *c;
        }
    }
    *o++ = '*';
    *o = 0;
    return out;
}

static void purge_prefix(struct pf_l2 *l2, const char *prefix, struct pf_l2_job *j)
{
    for (unsigned i = 0; i < l2->n; i++) {
        struct walk *w = pf_xmalloc(sizeof(*w));
        w->pattern = scan_pattern(l2->prefix, prefix);
        w->job = j;
        if (j)
            j->pending++;
        if (!send_cmd(&l2->servers[i], scan_reply, w, "SCAN 0 MATCH %s COUNT " SCAN_COUNT,
                      w->pattern))
            walk_end(&l2->servers[i], w, false);
    }
}

void pf_l2_job_purge_prefix(struct pf_l2_job *j, const char *prefix)
{
    purge_prefix(j->l2, prefix, j);
}

void pf_l2_purge_prefix(struct pf_l2 *l2, const char *prefix)
{
    purge_prefix(l2, prefix, NULL);
}

void pf_l2_stats(const struct pf_l2 *l2, struct pf_l2_stats *out)
{
    *out = l2->st;
}
