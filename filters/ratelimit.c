/*
 * filters/ratelimit.c: token-bucket rate limiting per key, shared by every
 * worker of the process.
 *
 * Each bucket is kept in its GCRA form (the "generic cell rate algorithm" of
 * ATM networks, equivalent to a token bucket): one 64-bit time, the instant
 * at which the bucket will be full again ("theoretical arrival time", tat).
 * A request is admitted when taking one token would not push tat more than
 * burst / rate into the future; taking it is one compare-and-swap on tat.
 * Times are in nanoseconds of pf_now_us(), so sub-microsecond emission
 * intervals (rates above 1e6/s) still add up correctly.
 *
 * Per-key buckets live in a table that is the filter's process state
 * (pstate, proxy/filter.h): shared by all workers, kept across a reload that
 * leaves the buckets' settings alone (rl_reuse_process). The table is
 * set-associative, as a CPU cache: a key's digest picks one set of
 * RL_WAYS slots, and the key lives in any slot of it. A request for a known
 * key takes no lock: it scans its set, and takes its token with one
 * compare-and-swap. Only a new key takes a lock (one of RL_LOCKS, by set),
 * to look again and claim a slot: an empty one, else the least recently used
 * bucket that has refilled (it carries no information), else the least
 * recently used one. Keys are 128-bit SipHash digests under a random
 * per-table secret (64 bits name the slot, the other 64 the set): a slot has
 * a fixed size whatever the header value, and clients cannot aim keys at one
 * set.
 */
#include "filters/ratelimit.h"

#include <arpa/inet.h>
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "proxy/arena.h"
#include "proxy/conf.h"
#include "proxy/filter.h"
#include "proxy/stats.h"
#include "proxy/syntax.h"

#define RL_WAYS          8                   /* slots per set: a key lives in one set */
#define RL_LOCKS         64                  /* miss-path locks, shared by sets */
#define RL_EMPTY         0                   /* slot key: never used */
#define RL_BUSY          2                   /* slot key: being refilled (keys are odd) */
#define RL_RATE_MAX      1e9                 /* requests_per_second upper bound */
#define RL_BURST_MAX     100000000u          /* burst upper bound */
#define RL_KEYS_MAX      10000000u           /* max_keys upper bound (about 500 MB of table) */
#define RL_TAU_MAX       (UINT64_C(1) << 62) /* burst / rate in ns: about 146 years */
#define RL_XFF_HEADERS   16                  /* X-Forwarded-For headers examined, last ones */
#define RL_ROUTES_MAX    256                 /* named route counters, the last one is "_other" */
#define RL_DEFAULT_RATE  100.0
#define RL_DEFAULT_BURST 200u
#define RL_DEFAULT_KEYS  100000u

enum rl_key_kind {
    RL_KEY_CLIENT_IP = 0, /* the client address, from X-Forwarded-For behind trusted proxies */
    RL_KEY_HEADER,        /* the value of one request header; absent = "" */
    RL_KEY_GLOBAL,        /* one bucket for every request */
};

struct rl_key {
    enum rl_key_kind kind; /* what a request is counted under */
    char *header;          /* RL_KEY_HEADER: the header name (pf_xstrdup'd) */
};

struct rl_cidr {
    uint8_t addr[16]; /* IPv6, IPv4 as ::ffff:a.b.c.d; host bits cleared */
    unsigned bits;    /* prefix length over the 128 bits */
};

struct rl_cidrs {
    struct rl_cidr *v; /* pf_xmalloc'd */
    unsigned n;        /* count */
};

/*
 * One key's bucket. Read and taken from without a lock; a slot changes key
 * only under its set's lock (the miss path).
 */
struct rl_slot {
    _Atomic uint64_t key;   /* atomic: digest | 1 (odd), RL_EMPTY or RL_BUSY */
    _Atomic uint64_t tat;   /* atomic: ns at which the bucket is full again; 0 = full */
    _Atomic uint64_t stamp; /* atomic: use order within the set, larger = more recent */
};

struct rl_table {
    struct rl_slot *slots;           /* n_sets * ways (pages touched as keys arrive) */
    uint64_t n_sets;                 /* >= 1 (constant) */
    unsigned ways;                   /* slots per set, <= RL_WAYS (constant) */
    pthread_mutex_t locks[RL_LOCKS]; /* a set's key changes, by set index */
    uint64_t secret[2];              /* SipHash key (constant) */
    _Atomic uint64_t global;         /* atomic: tat of the key: global bucket */
};

struct rl_conf {
    double rate;             /* requests_per_second, > 0 */
    unsigned burst;          /* bucket size, >= 1 */
    struct rl_key key;       /* what requests are counted under */
    unsigned max_keys;       /* cap on the number of buckets */
    struct rl_cidrs trusted; /* proxies whose X-Forwarded-For is believed */
    uint64_t interval_ns;    /* 1 / rate: time to earn one token */
    uint64_t tau_ns;         /* burst * interval_ns: time to refill from empty */
};

/* ---- keyed digests (SipHash-2-4, 128-bit output) ---- */

#define ROTL(x, b) (uint64_t)(((x) << (b)) | ((x) >> (64 - (b))))

static void sip_rounds(uint64_t v[4], int n)
{
    while (n-- > 0) {
        v[0] += v[1];
        v[1] = ROTL(v[1], 13);
        v[1] ^= v[0];
        v[0] = ROTL(v[0], 32);
        v[2] += v[3];
        v[3] = ROTL(v[3], 16);
        v[3] ^= v[2];
        v[0] += v[3];
        v[3] = ROTL(v[3], 21);
        v[3] ^= v[0];
        v[2] += v[1];
        v[1] = ROTL(v[1], 17);
        v[1] ^= v[2];
        v[2] = ROTL(v[2], 32);
    }
}

/* SipHash-2-4-128 of p[0..len) under key k (the reference algorithm). */
static void siphash128(const uint64_t k[2], const void *p, size_t len, uint64_t out[2])
{
    const uint8_t *s = p;
    uint64_t v[4] = {
        UINT64_C(0x736f6d6570736575) ^ k[0],
        UINT64_C(0x646f72616e646f6d) ^ k[1] ^ 0xee,
        UINT64_C(0x6c7967656e657261) ^ k[0],
        UINT64_C(0x7465646279746573) ^ k[1],
    };
    uint64_t m;
    uint64_t b = (uint64_t)len << 56;

    for (; len >= 8; len -= 8, s += 8) {
        m = 0;
        for (int i = 0; i < 8; i++)
            m |= (uint64_t)s[i] << (8 * i);
        v[3] ^= m;
        sip_rounds(v, 2);
        v[0] ^= m;
    }
    for (size_t i = 0; i < len; i++)
        b |= (uint64_t)s[i] << (8 * i);
    v[3] ^= b;
    sip_rounds(v, 2);
    v[0] ^= b;
    v[2] ^= 0xee;
    sip_rounds(v, 4);
    out[0] = v[0] ^ v[1] ^ v[2] ^ v[3];
    v[1] ^= 0xdd;
    sip_rounds(v, 4);
    out[1] = v[0] ^ v[1] ^ v[2] ^ v[3];
}

/* Digest of one key of kind tag: the tag goes into the secret (domain separation). */
static void rl_digest(const struct rl_table *t, uint8_t tag, const void *p, size_t len,
                      uint64_t id[2])
{
    uint64_t k[2] = {t->secret[0] ^ tag, t->secret[1]};

    siphash128(k, p, len, id);
}

/* ---- addresses ---- */

/* Parse a bare IPv4 or IPv6 address of exactly len bytes into 16 bytes (IPv4 mapped). */
static bool rl_ip_parse(const char *s, size_t len, uint8_t ip[16])
{
    char buf[INET6_ADDRSTRLEN + 1];
    struct in_addr a4;

    if (len == 0 || len >= sizeof(buf))
        return false;
    memcpy(buf, s, len);
    buf[len] = '\0';
    if (inet_pton(AF_INET, buf, &a4) == 1) {
        memset(ip, 0, 10);
        ip[10] = 0xff;
        ip[11] = 0xff;
        memcpy(ip + 12, &a4, 4);
        return true;
    }
    return inet_pton(AF_INET6, buf, ip) == 1;
}

static bool rl_is_port(const char *s, size_t len)
{
    if (len == 0 || len > 5)
        return false;
    for (size_t i = 0; i < len; i++) {
        if (s[i] < '0' || s[i] > '9')
            return false;
    }
    return true;
}

/*
 * Parse one X-Forwarded-For element, already trimmed: "1.2.3.4", "::1", and
 * the forms with a port some proxies write, "1.2.3.4:80", "[::1]" and
 * "[::1]:80".
 */
static bool rl_xff_parse(const char *s, size_t len, uint8_t ip[16])
{
    const char *end = s + len;
    const char *c;

    if (len > 0 && s[0] == '[') {
        c = memchr(s, ']', len);
        if (c == NULL)
            return false;
        if (c + 1 != end && (c[1] != ':' || !rl_is_port(c + 2, (size_t)(end - c - 2))))
            return false;
        return rl_ip_parse(s + 1, (size_t)(c - s - 1), ip);
    }
    c = memchr(s, ':', len);
    if (c != NULL && memchr(c + 1, ':', (size_t)(end - c - 1)) == NULL) {
        if (!rl_is_port(c + 1, (size_t)(end - c - 1)))
            return false;
        len = (size_t)(c - s);
    }
    return rl_ip_parse(s, len, ip);
}

static bool rl_cidr_match(const struct rl_cidr *c, const uint8_t ip[16])
{
    unsigned full = c->bits / 8;
    unsigned rest = c->bits % 8;

    if (memcmp(c->addr, ip, full) != 0)
        return false;
    if (rest == 0)
        return true;
    return ((c->addr[full] ^ ip[full]) & (uint8_t)(0xff << (8 - rest))) == 0;
}

static bool rl_is_trusted(const struct rl_conf *c, const uint8_t ip[16])
{
    for (unsigned i = 0; i < c->trusted.n; i++) {
        if (rl_cidr_match(&c->trusted.v[i], ip))
            return true;
    }
    return false;
}

/* Parse "addr" or "addr/bits" (IPv4 or IPv6); host bits are cleared. */
static bool rl_cidr_parse(const char *s, struct rl_cidr *out)
{
    const char *slash = strchr(s, '/');
    size_t len = slash != NULL ? (size_t)(slash - s) : strlen(s);
    bool v4;
    char *end;
    unsigned long bits;

    if (!rl_ip_parse(s, len, out->addr))
        return false;
    v4 = memchr(s, ':', len) == NULL;
    out->bits = 128;
    if (slash != NULL) {
        if (slash[1] < '0' || slash[1] > '9')
            return false;
        errno = 0;
        bits = strtoul(slash + 1, &end, 10);
        if (errno != 0 || *end != '\0' || bits > (v4 ? 32u : 128u))
            return false;
        out->bits = (unsigned)bits + (v4 ? 96u : 0u);
    }
    for (unsigned i = out->bits; i < 128; i++)
        out->addr[i / 8] &= (uint8_t) ~(0x80u >> (i % 8));
    return true;
}

/* ---- which key a request is counted under ---- */

struct rl_xff {
    const char *v[RL_XFF_HEADERS]; /* the last X-Forwarded-For values, ring */
    unsigned n;                    /* values seen */
};

static int rl_xff_collect(void *arg, const char *name, const char *value)
{
    struct rl_xff *x = arg;

    if (strcasecmp(name, "X-Forwarded-For") == 0)
        x->v[x->n++ % RL_XFF_HEADERS] = value;
    return 0;
}

/*
 * Walk one X-Forwarded-For value right to left. Each address replaces ip;
 * returns true (stop) at the first one that is not a trusted proxy, and
 * also at a malformed element ("unknown", garbage): what lies left of it
 * was written by someone we cannot vouch for, so the request stays counted
 * under the last trusted hop. Empty elements are skipped.
 */
static bool rl_xff_walk(const struct rl_conf *c, const char *v, uint8_t ip[16])
{
    const char *p = v + strlen(v);
    const char *q;
    const char *a;
    const char *b;
    uint8_t addr[16];

    while (p > v) {
        for (q = p; q > v && q[-1] != ','; q--)
            ;
        for (a = q; a < p && (*a == ' ' || *a == '\t'); a++)
            ;
        for (b = p; b > a && (b[-1] == ' ' || b[-1] == '\t'); b--)
            ;
        if (b > a) {
            if (!rl_xff_parse(a, (size_t)(b - a), addr))
                return true;
            memcpy(ip, addr, 16);
            if (!rl_is_trusted(c, addr))
                return true;
        }
        p = q > v ? q - 1 : v;
    }
    return false;
}

/*
 * The client's address as 16 bytes: the TCP peer, or, when the peer is a
 * trusted proxy, the rightmost X-Forwarded-For address that is not itself
 * one. False when the peer is not an IP address (a unix socket).
 */
static bool rl_client_ip(const struct rl_conf *c, const struct pf_tx *tx, uint8_t ip[16])
{
    const char *peer = pf_tx_client_addr(tx);
    struct rl_xff x = {.n = 0};
    unsigned first;

    if (peer == NULL || !rl_ip_parse(peer, strlen(peer), ip))
        return false;
    if (c->trusted.n == 0 || !rl_is_trusted(c, ip))
        return true;
    pf_tx_req_header_each(tx, rl_xff_collect, &x);
    first = x.n > RL_XFF_HEADERS ? x.n - RL_XFF_HEADERS : 0;
    for (unsigned i = x.n; i > first; i--) {
        if (rl_xff_walk(c, x.v[(i - 1) % RL_XFF_HEADERS], ip))
            break;
    }
    return true;
}

static void rl_key_of(const struct rl_conf *c, const struct rl_table *t, const struct pf_tx *tx,
                      uint64_t id[2])
{
    const char *v;
    uint8_t ip[16];

    if (c->key.kind == RL_KEY_HEADER) {
        v = pf_tx_req_header(tx, c->key.header);
        if (v == NULL)
            v = ""; /* absent and empty share the "empty key" bucket */
        rl_digest(t, 'h', v, strlen(v), id);
    } else if (rl_client_ip(c, tx, ip)) {
        rl_digest(t, 'i', ip, sizeof(ip), id);
    } else {
        v = pf_tx_client_addr(tx);
        if (v == NULL)
            v = "";
        rl_digest(t, 's', v, strlen(v), id);
    }
}

/* ---- buckets ---- */

/*
 * Take one token from the bucket whose full-again time is *tat. Admitted:
 * *tat moves one interval later and true is returned. Refused: *tat is
 * unchanged (a refused request costs nothing) and *wait_ns says when the
 * next token arrives.
 */
static bool rl_take(const struct rl_conf *c, uint64_t *tat, uint64_t now, uint64_t *wait_ns)
{
    uint64_t next = (*tat > now ? *tat : now) + c->interval_ns;

    if (next - now > c->tau_ns) {
        *wait_ns = next - now - c->tau_ns;
        return false;
    }
    *tat = next;
    return true;
}

/*
 * Take a token from the bucket whose tat is *p: one compare-and-swap
 * (retried on a race). When admitted, *was and *now_tat say what changed.
 */
static bool rl_cas_take(const struct rl_conf *c, _Atomic uint64_t *p, uint64_t now,
                        uint64_t *wait_ns, uint64_t *was, uint64_t *now_tat)
{
    uint64_t old = atomic_load_explicit(p, memory_order_relaxed);
    uint64_t tat;

    do {
        tat = old;
        if (!rl_take(c, &tat, now, wait_ns))
            return false;
    } while (!atomic_compare_exchange_weak_explicit(p, &old, tat, memory_order_seq_cst,
                                                    memory_order_relaxed));
    *was = old;
    *now_tat = tat;
    return true;
}

static bool rl_take_at(const struct rl_conf *c, _Atomic uint64_t *p, uint64_t now,
                       uint64_t *wait_ns)
{
    uint64_t was, tat;

    return rl_cas_take(c, p, now, wait_ns, &was, &tat);
}

static uint64_t rl_set_index(const struct rl_table *t, const uint64_t id[2])
{
    return (uint64_t)(((unsigned __int128)id[1] * t->n_sets) >> 64);
}

/* The slot of key in set (or -1), and in *top the largest stamp of the set. */
static int rl_find(const struct rl_table *t, struct rl_slot *set, uint64_t key, uint64_t *top)
{
    int found = -1;

    *top = 0;
    for (unsigned i = 0; i < t->ways; i++) {
        uint64_t st = atomic_load_explicit(&set[i].stamp, memory_order_relaxed);

        if (st > *top)
            *top = st;
        if (found < 0 && atomic_load_explicit(&set[i].key, memory_order_acquire) == key)
            found = (int)i;
    }
    return found;
}

/*
 * The slot a new key takes in a full set (lock held). An idle bucket that
 * has refilled (tat <= now) says nothing a fresh one would not, so the least
 * recently used of those goes first; otherwise the least recently used
 * bucket goes, and that key starts full again.
 */
static unsigned rl_victim(const struct rl_table *t, struct rl_slot *set, uint64_t now)
{
    unsigned lru = 0, refilled = t->ways;

    for (unsigned i = 0; i < t->ways; i++) {
        uint64_t st = atomic_load_explicit(&set[i].stamp, memory_order_relaxed);

        if (atomic_load_explicit(&set[i].key, memory_order_relaxed) == RL_EMPTY)
            return i;
        if (st < atomic_load_explicit(&set[lru].stamp, memory_order_relaxed))
            lru = i;
        if (atomic_load_explicit(&set[i].tat, memory_order_relaxed) <= now &&
            (refilled == t->ways ||
             st < atomic_load_explicit(&set[refilled].stamp, memory_order_relaxed)))
            refilled = i;
    }
    return refilled < t->ways ? refilled : lru;
}

/*
 * The miss path: under the set's lock, look again (another worker may have
 * just added the key), else give the key a slot with a full bucket. The key
 * is published last (release), so a lock-free reader that matches it sees
 * tat = 0. A reader still holding the evicted key may take one token from
 * the new key's bucket in that instant: the only imprecision, and only while
 * the table is full, and undone at once by rl_take_key.
 */
static bool rl_insert_take(const struct rl_conf *c, struct rl_table *t, uint64_t set_i,
                           uint64_t key, uint64_t now, uint64_t *wait_ns)
{
    struct rl_slot *set = &t->slots[set_i * t->ways];
    pthread_mutex_t *lock = &t->locks[set_i % RL_LOCKS];
    uint64_t top;
    bool ok;
    int i;

    pthread_mutex_lock(lock);
    i = rl_find(t, set, key, &top);
    if (i < 0) {
        i = (int)rl_victim(t, set, now);
        /* seq_cst: a hitter whose compare-and-swap saw tat = 0 then sees the key change */
        atomic_store(&set[i].key, RL_BUSY);
        atomic_store(&set[i].tat, 0);
        atomic_store(&set[i].key, key);
    }
    atomic_store_explicit(&set[i].stamp, top + 1, memory_order_relaxed);
    /* under the lock: no other new key can take the slot before this token is taken */
    ok = rl_take_at(c, &set[i].tat, now, wait_ns);
    pthread_mutex_unlock(lock);
    return ok;
}

/*
 * The hit path takes no lock: find the key among its set's slots, mark it
 * most recently used (a plain store, skipped when it already is), and take a
 * token with one compare-and-swap on its tat. If the slot was given to
 * another key meanwhile (the table is full and a new key evicted this one),
 * the token is put back when nobody took one after it, and the request goes
 * the miss path like any forgotten key.
 */
static bool rl_take_key(const struct rl_conf *c, struct rl_table *t, const uint64_t id[2],
                        uint64_t now, uint64_t *wait_ns)
{
    uint64_t key = id[0] | 1;
    uint64_t set_i = rl_set_index(t, id);
    struct rl_slot *set = &t->slots[set_i * t->ways];
    uint64_t top;
    int i = rl_find(t, set, key, &top);
    struct rl_slot *sl;
    uint64_t was, tat;
    bool ok;

    if (i < 0)
        return rl_insert_take(c, t, set_i, key, now, wait_ns);
    sl = &set[i];
    if (atomic_load_explicit(&sl->stamp, memory_order_relaxed) != top)
        atomic_store_explicit(&sl->stamp, top + 1, memory_order_relaxed);
    ok = rl_cas_take(c, &sl->tat, now, wait_ns, &was, &tat);
    if (atomic_load_explicit(&sl->key, memory_order_seq_cst) == key)
        return ok;
    if (ok)
        atomic_compare_exchange_strong(&sl->tat, &tat, was);
    return rl_insert_take(c, t, set_i, key, now, wait_ns);
}

/* ---- the shared table ---- */

static void rl_secret(uint64_t secret[2])
{
    struct timespec ts;

    if (getrandom(secret, 2 * sizeof(*secret), GRND_NONBLOCK) == (ssize_t)(2 * sizeof(*secret)))
        return;
    /* No entropy yet (early boot): still unpredictable enough to spread shards. */
    clock_gettime(CLOCK_REALTIME, &ts);
    secret[0] = (uint64_t)ts.tv_nsec * UINT64_C(0x9e3779b97f4a7c15) ^ (uint64_t)getpid();
    secret[1] = (uint64_t)ts.tv_sec ^ (uint64_t)(uintptr_t)secret;
}

/*
 * Sets of RL_WAYS slots, max_keys / RL_WAYS of them (one set of max_keys
 * slots when fewer), so the table never holds more than max_keys buckets.
 * The slots are calloc'd: their pages cost memory only once keys use them.
 */
static struct rl_table *rl_table_new(unsigned max_keys)
{
    struct rl_table *t = pf_xcalloc(1, sizeof(*t));

    t->ways = RL_WAYS;
    t->n_sets = max_keys / RL_WAYS;
    if (t->n_sets == 0) {
        t->n_sets = 1;
        t->ways = max_keys;
    }
    t->slots = pf_xcalloc(t->n_sets * t->ways, sizeof(*t->slots));
    for (unsigned i = 0; i < RL_LOCKS; i++)
        pthread_mutex_init(&t->locks[i], NULL);
    rl_secret(t->secret);
    atomic_init(&t->global, 0);
    return t;
}

static void rl_table_free(struct rl_table *t)
{
    if (t == NULL)
        return;
    for (unsigned i = 0; i < RL_LOCKS; i++)
        pthread_mutex_destroy(&t->locks[i]);
    free(t->slots);
    free(t);
}

size_t pf_ratelimit_keys(const void *pstate)
{
    const struct rl_table *t = pstate;
    size_t n = 0;

    for (uint64_t i = 0; i < t->n_sets * t->ways; i++)
        n += atomic_load_explicit(&t->slots[i].key, memory_order_relaxed) & 1;
    return n;
}

/* ---- process state: the table outlives a snapshot whose buckets stay the same ---- */

static int rl_init_process(const void *conf, void **pstate)
{
    const struct rl_conf *c = conf;

    *pstate = rl_table_new(c->max_keys);
    return 0;
}

/*
 * A bucket is defined by rate and burst (its refill and size), by the key
 * (what it is counted under) and max_keys (the table's shape). Only
 * trusted_proxies may change without starting afresh: a bucket still
 * belongs to the same client address.
 */
static bool rl_reuse_process(const void *old_conf, const void *new_conf)
{
    const struct rl_conf *a = old_conf;
    const struct rl_conf *b = new_conf;

    return a->rate == b->rate && a->burst == b->burst && a->max_keys == b->max_keys &&
           a->key.kind == b->key.kind &&
           (a->key.kind != RL_KEY_HEADER || strcasecmp(a->key.header, b->key.header) == 0);
}

static void rl_fini_process(void *pstate)
{
    rl_table_free(pstate);
}

/* ---- rejection counters, per process and route ---- */

/*
 * Route names are appended under lock and published by storing n with
 * release order; readers scan [0, n) without locking. Names are never freed:
 * the table lives as long as the process, across reloads, as a Prometheus
 * counter should. The counts are per-thread cells (pf_counter_set), one per
 * name slot: a rejection is a relaxed load and store on the worker's own
 * cache line, never a shared read-modify-write.
 */
static struct {
    pthread_mutex_t lock;      /* serialises appends */
    _Atomic unsigned n;        /* atomic: published slots */
    char *name[RL_ROUTES_MAX]; /* pf_xstrdup'd, set before publication */
} rl_routes = {.lock = PTHREAD_MUTEX_INITIALIZER};

static struct pf_counter_set rl_rejected = PF_COUNTER_SET(RL_ROUTES_MAX);
static __thread _Atomic uint64_t *rl_my_rejected;

static int rl_route_find(const char *route, unsigned n)
{
    for (unsigned i = 0; i < n; i++) {
        if (strcmp(rl_routes.name[i], route) == 0)
            return (int)i;
    }
    return -1;
}

static void rl_count_rejected(const char *route)
{
    unsigned n = atomic_load_explicit(&rl_routes.n, memory_order_acquire);
    int i = rl_route_find(route, n);

    if (i < 0) {
        pthread_mutex_lock(&rl_routes.lock);
        n = atomic_load_explicit(&rl_routes.n, memory_order_relaxed);
        i = rl_route_find(route, n);
        if (i < 0 && n < RL_ROUTES_MAX) {
            rl_routes.name[n] = pf_xstrdup(n == RL_ROUTES_MAX - 1 ? "_other" : route);
            atomic_store_explicit(&rl_routes.n, n + 1, memory_order_release);
        }
        pthread_mutex_unlock(&rl_routes.lock);
        if (i < 0)
            i = n < RL_ROUTES_MAX ? (int)n : RL_ROUTES_MAX - 1;
    }
    if (rl_my_rejected == NULL)
        rl_my_rejected = pf_counter_cells(&rl_rejected);
    pf_counter_add(&rl_my_rejected[i], 1);
}

uint64_t pf_ratelimit_rejected(const char *route)
{
    unsigned n = atomic_load_explicit(&rl_routes.n, memory_order_acquire);
    int i = rl_route_find(route, n);

    return i < 0 ? 0 : pf_counter_sum(&rl_rejected, (unsigned)i);
}

void pf_ratelimit_rejected_each(pf_ratelimit_count_fn fn, void *arg)
{
    unsigned n = atomic_load_explicit(&rl_routes.n, memory_order_acquire);

    for (unsigned i = 0; i < n; i++)
        fn(arg, rl_routes.name[i], pf_counter_sum(&rl_rejected, i));
}

static void rl_metrics_line(void *arg, const char *route, uint64_t rejected)
{
    pf_stats_put_sample(arg, "pilotfish_ratelimit_rejected_total", "route", route, rejected);
}

static void rl_metrics(const void *conf, void *pstate, struct evbuffer *out)
{
    (void)conf;
    (void)pstate;
    pf_stats_put_head(out, "pilotfish_ratelimit_rejected_total", "counter",
                      "Requests answered 429 by the rate limiter, by route.");
    pf_ratelimit_rejected_each(rl_metrics_line, out);
}

/* ---- configuration ---- */

static int rl_parse_rate(const struct pf_conf_node *n, void *field, struct pf_err *err)
{
    double *rate = field;
    char *end;
    double v;

    if (n->type != PF_NODE_SCALAR) {
        pf_err_at(err, n, "ratelimit.requests_per_second: expected a number");
        return -EINVAL;
    }
    errno = 0;
    v = strtod(n->value, &end);
    if (end == n->value || *end != '\0' || errno != 0 || !isfinite(v) || v <= 0 ||
        v > RL_RATE_MAX) {
        pf_err_at(err, n,
                  "ratelimit.requests_per_second: expected a number > 0 and <= 1e9, got \"%s\"",
                  n->value);
        return -EINVAL;
    }
    *rate = v;
    return 0;
}

static int rl_parse_key(const struct pf_conf_node *n, void *field, struct pf_err *err)
{
    struct rl_key *key = field;
    const char *name;

    if (n->type != PF_NODE_SCALAR)
        goto bad;
    if (strcmp(n->value, "client_ip") == 0) {
        key->kind = RL_KEY_CLIENT_IP;
        return 0;
    }
    if (strcmp(n->value, "global") == 0) {
        key->kind = RL_KEY_GLOBAL;
        return 0;
    }
    if (strncmp(n->value, "header:", 7) != 0)
        goto bad;
    name = n->value + 7;
    for (const char *p = name; *p != '\0'; p++) {
        if (!pf_http_is_tchar((unsigned char)*p))
            goto bad;
    }
    if (*name == '\0')
        goto bad;
    key->kind = RL_KEY_HEADER;
    free(key->header);
    key->header = pf_xstrdup(name);
    return 0;
bad:
    pf_err_at(err, n, "ratelimit.key: expected client_ip, global or header:NAME, got \"%s\"",
              n->type == PF_NODE_SCALAR ? n->value : "(not a scalar)");
    return -EINVAL;
}

/* trusted_proxies: one CIDR or a sequence of them; every bad item is reported. */
static int rl_parse_cidrs(const struct pf_conf_node *n, void *field, struct pf_err *err)
{
    struct rl_cidrs *out = field;
    const struct pf_conf_node *const *items = (const struct pf_conf_node *const *)n->items;
    unsigned count = n->n_items;
    struct rl_cidr *v;
    int rc = 0;

    if (n->type == PF_NODE_MAP) {
        pf_err_at(err, n, "ratelimit.trusted_proxies: expected a list of CIDRs");
        return -EINVAL;
    }
    if (pf_conf_is_null(n)) {
        count = 0;
    } else if (n->type == PF_NODE_SCALAR) {
        items = &n;
        count = 1;
    }
    v = pf_xcalloc(count > 0 ? count : 1, sizeof(*v));
    for (unsigned i = 0; i < count; i++) {
        if (items[i]->type != PF_NODE_SCALAR || !rl_cidr_parse(items[i]->value, &v[i])) {
            pf_err_at(
                err, items[i],
                "ratelimit.trusted_proxies: \"%s\" is not an address or CIDR (10.0.0.0/8, fd00::/8)",
                items[i]->type == PF_NODE_SCALAR ? items[i]->value : "(not a scalar)");
            rc = -EINVAL;
        }
    }
    if (rc != 0) {
        free(v);
        return rc;
    }
    free(out->v);
    out->v = v;
    out->n = count;
    return 0;
}

static const struct pf_conf_key rl_keys[] = {
    {"requests_per_second", PF_CONF_CUSTOM, offsetof(struct rl_conf, rate), 0, 0, rl_parse_rate},
    {"burst", PF_CONF_UINT, offsetof(struct rl_conf, burst), 1, RL_BURST_MAX, NULL},
    {"key", PF_CONF_CUSTOM, offsetof(struct rl_conf, key), 0, 0, rl_parse_key},
    {"max_keys", PF_CONF_UINT, offsetof(struct rl_conf, max_keys), 1, RL_KEYS_MAX, NULL},
    {"trusted_proxies", PF_CONF_CUSTOM, offsetof(struct rl_conf, trusted), 0, 0, rl_parse_cidrs},
    {NULL, PF_CONF_INT, 0, 0, 0, NULL},
};

static void rl_conf_free(void *conf)
{
    struct rl_conf *c = conf;

    if (c == NULL)
        return;
    free(c->key.header);
    free(c->trusted.v);
    free(c);
}

static int rl_conf_parse(const struct pf_conf_node *n, void **conf, struct pf_err *err)
{
    struct rl_conf *c = pf_xcalloc(1, sizeof(*c));
    const struct pf_conf_node *at;
    double interval;

    c->rate = RL_DEFAULT_RATE;
    c->burst = RL_DEFAULT_BURST;
    c->key.kind = RL_KEY_CLIENT_IP;
    c->max_keys = RL_DEFAULT_KEYS;
    if (pf_conf_fill(n, rl_keys, c, err) != 0)
        goto out_free;
    interval = round(1e9 / c->rate);
    if (interval > (double)RL_TAU_MAX / c->burst) {
        at = pf_conf_get(n, "requests_per_second");
        pf_err_at(
            err, at != NULL ? at : n,
            "ratelimit.requests_per_second: burst / requests_per_second must be under 146 years");
        goto out_free;
    }
    c->interval_ns = interval < 1 ? 1 : (uint64_t)interval;
    c->tau_ns = c->interval_ns * c->burst;
    *conf = c;
    return 0;
out_free:
    rl_conf_free(c);
    return -EINVAL;
}

bool pf_ratelimit_take(const void *conf, void *pstate, const void *key, size_t len, uint64_t now_us)
{
    const struct rl_conf *c = conf;
    struct rl_table *t = pstate;
    uint64_t id[2];
    uint64_t wait_ns;

    if (c->key.kind == RL_KEY_GLOBAL)
        return rl_take_at(c, &t->global, now_us * 1000, &wait_ns);
    rl_digest(t, 'h', key, len, id);
    return rl_take_key(c, t, id, now_us * 1000, &wait_ns);
}

/* ---- the filter ---- */

static enum pf_verdict rl_on_request(struct pf_tx *tx, struct pf_slot *s)
{
    const struct rl_conf *c = s->conf;
    struct rl_table *t = s->pstate;
    uint64_t now = pf_now_us() * 1000;
    uint64_t wait_ns;
    uint64_t secs;
    uint64_t id[2];
    const char *route;
    bool ok;
    char retry[24];

    if (c->key.kind == RL_KEY_GLOBAL) {
        ok = rl_take_at(c, &t->global, now, &wait_ns);
    } else {
        rl_key_of(c, t, tx, id);
        ok = rl_take_key(c, t, id, now, &wait_ns);
    }
    if (ok)
        return PF_NEXT;
    pf_tx_error(tx, 429, PF_ERR_RATE_LIMITED);
    secs = (wait_ns + 999999999) / 1000000000; /* ceil: a token is there by then */
    snprintf(retry, sizeof(retry), "%llu", (unsigned long long)(secs > 0 ? secs : 1));
    pf_tx_resp_header_set(tx, "Retry-After", retry);
    route = pf_tx_route_name(tx);
    rl_count_rejected(route != NULL ? route : "");
    return PF_REPLIED;
}

const struct pf_filter_ops pf_filter_ratelimit = {
    .name = "ratelimit",
    .ctx_size = 0,
    .conf_parse = rl_conf_parse,
    .conf_free = rl_conf_free,
    .on_request = rl_on_request,
    .init_process = rl_init_process,
    .reuse_process = rl_reuse_process,
    .fini_process = rl_fini_process,
    .metrics = rl_metrics,
};
