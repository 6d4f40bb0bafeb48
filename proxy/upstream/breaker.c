/*
 * Per-endpoint circuit breakers (see breaker.h). The state lives in the
 * endpoint (struct pf_endpoint.br), so it is shared by all workers and
 * survives a reload for as long as the endpoint stays listed.
 *
 * The window is ten buckets of window/10 each; a bucket's counts and the
 * index of the tenth they belong to share one 64-bit word, so a call is
 * counted by one compare-and-swap and a bucket left over from an older tenth
 * is recognised and restarted, never mixed in. Latency counts per bucket
 * are plain atomic counters cleared by whoever restarts the bucket: a call
 * counted across that race lands in the wrong tenth, which only blurs a
 * percentile.
 */
#include "proxy/upstream/breaker.h"

#include <pthread.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>

#include "proxy/arena.h"
#include "proxy/defs.h"
#include "proxy/log.h"
#include "proxy/upstream/endpoint.h"
#include "proxy/upstream/health.h"

/* ---- the packed bucket word ---- */

#define IDX_BITS   19 /* a tenth's index modulo 2^19: far more than the ten compared */
#define CALL_BITS  15
#define FAIL_BITS  15 /* failures and slow calls are never more than calls: as wide */
#define SLOW_BITS  15
#define IDX_MASK   ((1ull << IDX_BITS) - 1)
#define CALL_SHIFT IDX_BITS
#define FAIL_SHIFT (CALL_SHIFT + CALL_BITS)
#define SLOW_SHIFT (FAIL_SHIFT + FAIL_BITS)

static uint64_t field(uint64_t w, unsigned shift, unsigned bits)
{
    return (w >> shift) & ((1ull << bits) - 1);
}

static bool full(uint64_t w, unsigned shift, unsigned bits)
{
    return field(w, shift, bits) == (1ull << bits) - 1;
}

/* ---- the packed reason ---- */

enum reason_kind {
    R_NONE = 0,
    R_CONSECUTIVE,   /* a: failures in a row */
    R_FAILURE_RATE,  /* a: percent, b: calls */
    R_SLOW_RATE,     /* a: percent, b: calls */
    R_OPEN_ELAPSED,  /* a: open_for in ms */
    R_TRIAL_FAILED,  /* a: the outcome or status that failed it */
    R_TRIALS_PASSED, /* a: trials */
    R_PROBE_PASSED,  /* an active health probe passed */
};

static uint64_t reason_pack(enum reason_kind k, uint64_t a, uint64_t b)
{
    return (uint64_t)k | (a & 0xffffff) << 8 | (b & 0xffffffff) << 32;
}

static void duration_text(char *buf, size_t size, uint64_t ms)
{
    if (ms % 60000 == 0 && ms > 0)
        snprintf(buf, size, "%llum", (unsigned long long)(ms / 60000));
    else if (ms % 1000 == 0)
        snprintf(buf, size, "%llus", (unsigned long long)(ms / 1000));
    else
        snprintf(buf, size, "%llums", (unsigned long long)ms);
}

static const char *const outcome_names[] = {"ok", "connect_failure", "reset", "timeout",
                                            "bad_response"};

/* The reason as operators read it: "failure_rate=63% over 40 requests in 10s". */
static void reason_text(uint64_t r, const struct pf_breaker_conf *c, char *buf, size_t size)
{
    unsigned a = (unsigned)(r >> 8 & 0xffffff), b = (unsigned)(r >> 32);
    char win[24], slow[24];

    duration_text(win, sizeof(win), c->window_ms);
    duration_text(slow, sizeof(slow), c->slow_call_ms);
    switch ((enum reason_kind)(r & 0xff)) {
    case R_CONSECUTIVE:
        snprintf(buf, size, "consecutive_failures=%u", a);
        break;
    case R_FAILURE_RATE:
        snprintf(buf, size, "failure_rate=%u%% over %u requests in %s", a, b, win);
        break;
    case R_SLOW_RATE:
        snprintf(buf, size, "slow_rate=%u%% over %u requests in %s (slower than %s)", a, b, win,
                 slow);
        break;
    case R_OPEN_ELAPSED:
        duration_text(win, sizeof(win), a);
        snprintf(buf, size, "open_for=%s elapsed", win);
        break;
    case R_TRIAL_FAILED:
        if (a >= 100)
            snprintf(buf, size, "half_open trial failed: status %u", a);
        else
            snprintf(buf, size, "half_open trial failed: %s",
                     a < PF_COUNTOF(outcome_names) ? outcome_names[a] : "error");
        break;
    case R_TRIALS_PASSED:
        snprintf(buf, size, "half_open trials passed: %u", a);
        break;
    case R_PROBE_PASSED:
        snprintf(buf, size, "%s", "health_check passed");
        break;
    default:
        snprintf(buf, size, "%s", "");
    }
}

const char *pf_circuit_name(enum pf_circuit s)
{
    switch (s) {
    case PF_CIRCUIT_OPEN:
        return "open";
    case PF_CIRCUIT_HALF_OPEN:
        return "half_open";
    default:
        return "closed";
    }
}

/* ---- the window ---- */

static uint64_t bucket_us(const struct pf_breaker_conf *c)
{
    uint64_t us = c->window_ms * 1000 / PF_BREAKER_BUCKETS;

    return us > 0 ? us : 1;
}

static unsigned lat_bucket(uint64_t dur_us)
{
    unsigned i = 0;

    for (uint64_t bound = 500; i < PF_BREAKER_LAT_BUCKETS - 1 && dur_us > bound; bound *= 2)
        i++;
    return i;
}

/*
 * Count one call in the tenth of now. A tenth whose call count is full takes
 * no more calls at all: counting only some fields would skew the rates.
 */
static void window_add(struct pf_breaker *b, const struct pf_breaker_conf *c, uint64_t now,
                       bool failed, bool slow, uint64_t dur_us)
{
    uint64_t idx = now / bucket_us(c);
    struct pf_breaker_bucket *k = &b->win[idx % PF_BREAKER_BUCKETS];
    uint64_t old = atomic_load_explicit(&k->word, memory_order_relaxed), w;
    bool restart;

    do {
        restart = (old & IDX_MASK) != (idx & IDX_MASK);
        w = restart ? (idx & IDX_MASK) : old;
        if (full(w, CALL_SHIFT, CALL_BITS))
            return; /* failures and slow calls are at most calls: none is full before it */
        w += 1ull << CALL_SHIFT;
        if (failed)
            w += 1ull << FAIL_SHIFT;
        if (slow)
            w += 1ull << SLOW_SHIFT;
    } while (!atomic_compare_exchange_weak_explicit(&k->word, &old, w, memory_order_relaxed,
                                                    memory_order_relaxed));
    if (restart) {
        for (unsigned i = 0; i < PF_BREAKER_LAT_BUCKETS; i++)
            atomic_store_explicit(&k->lat[i], 0, memory_order_relaxed);
    }
    atomic_fetch_add_explicit(&k->lat[lat_bucket(dur_us)], 1, memory_order_relaxed);
}

struct totals {
    unsigned calls, failures, slow;
    uint64_t lat[PF_BREAKER_LAT_BUCKETS];
};

/* The counts of the window that ends at now (the ten tenths up to now's). */
static void window_sum(const struct pf_breaker *b, const struct pf_breaker_conf *c, uint64_t now,
                       struct totals *t)
{
    uint64_t idx = now / bucket_us(c);

    memset(t, 0, sizeof(*t));
    for (unsigned i = 0; i < PF_BREAKER_BUCKETS; i++) {
        const struct pf_breaker_bucket *k = &b->win[i];
        uint64_t w = atomic_load_explicit(&k->word, memory_order_relaxed);
        uint64_t age = ((idx & IDX_MASK) - (w & IDX_MASK)) & IDX_MASK;

        if (w == 0 || age >= PF_BREAKER_BUCKETS)
            continue;
        t->calls += (unsigned)field(w, CALL_SHIFT, CALL_BITS);
        t->failures += (unsigned)field(w, FAIL_SHIFT, FAIL_BITS);
        t->slow += (unsigned)field(w, SLOW_SHIFT, SLOW_BITS);
        for (unsigned j = 0; j < PF_BREAKER_LAT_BUCKETS; j++)
            t->lat[j] += atomic_load_explicit(&k->lat[j], memory_order_relaxed);
    }
}

static void window_clear(struct pf_breaker *b)
{
    for (unsigned i = 0; i < PF_BREAKER_BUCKETS; i++)
        atomic_store_explicit(&b->win[i].word, 0, memory_order_relaxed);
    atomic_store_explicit(&b->consecutive, 0, memory_order_relaxed);
}

void pf_breaker_reset(struct pf_breaker *b)
{
    memset(b, 0, sizeof(*b)); /* all zero is closed, never changed */
}

/* ---- transitions ---- */

/* Openings are rare: one at a time, so that max_ejection holds across workers. */
static pthread_mutex_t open_lock = PTHREAD_MUTEX_INITIALIZER;

static uint64_t mix64(uint64_t x)
{
    x ^= x >> 30;
    x *= 0xBF58476D1CE4E5B9ull;
    x ^= x >> 27;
    x *= 0x94D049BB133111EBull;
    return x ^ (x >> 31);
}

/*
 * How long the opens-th opening in a row lasts: open_for doubled each time
 * up to max_open_for, less up to 10 % of jitter (so endpoints that tripped
 * together do not come back together), drawn from the endpoint and the time.
 */
static uint64_t open_duration_us(const struct pf_breaker_conf *c, const struct pf_endpoint *ep,
                                 unsigned opens, uint64_t now)
{
    uint64_t d = c->open_for_ms * 1000, max = c->max_open_for_ms * 1000;

    for (unsigned i = 1; i < opens && d < max; i++)
        d *= 2;
    if (d > max)
        d = max;
    return d - d / 1000 * (mix64(now ^ ep->gen << 32 ^ opens) % 101);
}

static void put_field(struct evbuffer *b, const char *key, const char *val)
{
    evbuffer_add_printf(b, ",\"%s\":\"", key);
    pf_json_escape(b, val, strlen(val));
    evbuffer_add(b, "\"", 1);
}

/*
 * One JSON line for a state change: the endpoint, the old and new state, why
 * and, when it opens, in how long it is tried again.
 */
static void log_change(const struct pf_endpoint *ep, const struct pf_breaker_conf *c,
                       enum pf_circuit from, enum pf_circuit to, uint64_t reason, uint64_t now)
{
    char text[160];
    uint64_t retry = atomic_load_explicit(&ep->br.retry_us, memory_order_relaxed);
    struct evbuffer *b = evbuffer_new();

    if (b == NULL)
        return;
    reason_text(reason, c, text, sizeof(text));
    put_field(b, "msg",
              from == to ? "circuit breaker kept closed by max_ejection" : "circuit breaker");
    put_field(b, "upstream", ep->upstream);
    put_field(b, "endpoint", ep->addr.text);
    put_field(b, "from", pf_circuit_name(from));
    put_field(b, "to", pf_circuit_name(to));
    put_field(b, "reason", text);
    if (to == PF_CIRCUIT_OPEN)
        evbuffer_add_printf(b, ",\"retry_in_ms\":%llu",
                            (unsigned long long)(retry > now ? (retry - now) / 1000 : 0));
    pf_log_fields(to == PF_CIRCUIT_CLOSED && from != to ? PF_LOG_INFO : PF_LOG_WARN,
                  (const char *)evbuffer_pullup(b, -1), evbuffer_get_length(b));
    evbuffer_free(b);
}

/*
 * Endpoints of up other than ep that are out of service: not closed, or kept
 * out by the health checks (so that the last endpoint serving is not opened).
 */
static unsigned others_ejected(const struct pf_upstream_conf *up, const struct pf_endpoint *ep)
{
    unsigned n = 0;

    for (unsigned i = 0; i < up->n_endpoints && up->endpoint_ids != NULL; i++) {
        const struct pf_endpoint *o = pf_endpoint_get(up->endpoint_ids[i]);

        if (o != ep &&
            (atomic_load_explicit(&o->br.state, memory_order_acquire) != PF_CIRCUIT_CLOSED ||
             !pf_health_serving(&up->health, o)))
            n++;
    }
    return n;
}

/* Open ep (state from, under open_lock) for its next duration. */
static void open_locked(struct pf_endpoint *ep, const struct pf_breaker_conf *c,
                        enum pf_circuit from, uint64_t reason, uint64_t now)
{
    struct pf_breaker *b = &ep->br;
    uint64_t since = atomic_load_explicit(&b->since_us, memory_order_relaxed);
    uint64_t closed_for = now > since ? now - since : 0; /* another thread's later since_us */
    uint64_t clean = (c->window_ms > c->open_for_ms ? c->window_ms : c->open_for_ms) * 1000;
    unsigned opens;

    /* a close that held for a window (and at least open_for) was clean: back to open_for */
    if (from == PF_CIRCUIT_CLOSED && closed_for >= clean)
        atomic_store_explicit(&b->opens, 0, memory_order_relaxed);
    opens = atomic_fetch_add_explicit(&b->opens, 1, memory_order_relaxed) + 1;
    window_clear(b);
    /* a new epoch first: an admit racing with this opening sees it and gives its permit back */
    atomic_fetch_add(&b->opened_total, 1);
    atomic_store(&b->trials, 0);
    atomic_store(&b->trial_ok, 0);
    atomic_store_explicit(&b->capped, 0, memory_order_relaxed);
    atomic_store_explicit(&b->reason, reason, memory_order_relaxed);
    atomic_store_explicit(&b->since_us, now, memory_order_relaxed);
    atomic_store_explicit(&b->retry_us, now + open_duration_us(c, ep, opens, now),
                          memory_order_relaxed);
    atomic_store_explicit(&b->state, PF_CIRCUIT_OPEN, memory_order_release);
    log_change(ep, c, from, PF_CIRCUIT_OPEN, reason, now);
}

/*
 * A closed ep tripped: open it, unless that would eject more than
 * max_ejection of up's endpoints (counted with ep): then it stays in
 * service, says so once, and its failures go on being counted.
 */
static void trip(const struct pf_upstream_conf *up, struct pf_endpoint *ep, uint64_t reason,
                 uint64_t now)
{
    const struct pf_breaker_conf *c = &up->breaker;
    unsigned n = up->n_endpoints, allowed = (unsigned)(c->max_ejection * n + 1e-9);

    pthread_mutex_lock(&open_lock);
    if (atomic_load_explicit(&ep->br.state, memory_order_acquire) != PF_CIRCUIT_CLOSED) {
        pthread_mutex_unlock(&open_lock);
        return;
    }
    if (others_ejected(up, ep) + 1 > allowed) {
        pthread_mutex_unlock(&open_lock);
        if (atomic_exchange_explicit(&ep->br.capped, 1, memory_order_relaxed) == 0)
            log_change(ep, c, PF_CIRCUIT_CLOSED, PF_CIRCUIT_CLOSED, reason, now);
        return;
    }
    open_locked(ep, c, PF_CIRCUIT_CLOSED, reason, now);
    pthread_mutex_unlock(&open_lock);
}

/* The trip reason of a closed breaker after a call, or 0 when none. */
static uint64_t trip_reason(struct pf_breaker *b, const struct pf_breaker_conf *c, unsigned consec,
                            uint64_t now)
{
    struct totals t;

    if (c->consecutive_failures > 0 && consec >= c->consecutive_failures)
        return reason_pack(R_CONSECUTIVE, consec, 0);
    if (c->failure_rate <= 0 && (c->slow_call_ms == 0 || c->slow_rate <= 0))
        return 0;
    window_sum(b, c, now, &t);
    if (t.calls == 0 || t.calls < c->min_requests)
        return 0;
    if (c->failure_rate > 0 && t.failures >= c->failure_rate * t.calls - 1e-9)
        return reason_pack(R_FAILURE_RATE, (t.failures * 100 + t.calls / 2) / t.calls, t.calls);
    if (c->slow_call_ms > 0 && c->slow_rate > 0 && t.slow >= c->slow_rate * t.calls - 1e-9)
        return reason_pack(R_SLOW_RATE, (t.slow * 100 + t.calls / 2) / t.calls, t.calls);
    return 0;
}

/* One less in *n, unless an opening has reset it to 0 meanwhile. */
static void dec_positive(atomic_uint *n)
{
    unsigned v = atomic_load(n);

    while (v > 0 && !atomic_compare_exchange_weak(n, &v, v - 1))
        ;
}

/* Is ticket a permit of ep's current half-open epoch? */
static bool holds_permit(const struct pf_breaker *b, uint64_t ticket)
{
    return ticket != 0 && atomic_load(&b->opened_total) == ticket;
}

static void half_open_report(struct pf_endpoint *ep, const struct pf_breaker_conf *c,
                             uint64_t ticket, bool failed, unsigned what, uint64_t now)
{
    struct pf_breaker *b = &ep->br;
    unsigned expect = PF_CIRCUIT_HALF_OPEN, ok;
    uint64_t reason;

    if (!holds_permit(b, ticket))
        return; /* admitted before the circuit opened (or in an older epoch): not a trial */
    if (failed) {
        pthread_mutex_lock(&open_lock);
        if (atomic_load_explicit(&b->state, memory_order_acquire) == PF_CIRCUIT_HALF_OPEN &&
            holds_permit(b, ticket))
            open_locked(ep, c, PF_CIRCUIT_HALF_OPEN, reason_pack(R_TRIAL_FAILED, what, 0), now);
        pthread_mutex_unlock(&open_lock);
        return;
    }
    ok = atomic_fetch_add(&b->trial_ok, 1) + 1;
    if (!holds_permit(b, ticket)) {
        dec_positive(&b->trial_ok); /* it opened again meanwhile: not this epoch's */
        return;
    }
    if (ok < c->half_open_requests)
        return;
    reason = reason_pack(R_TRIALS_PASSED, c->half_open_requests, 0);
    /* the state first: only the thread that closes it writes why and when */
    if (!atomic_compare_exchange_strong_explicit(&b->state, &expect, PF_CIRCUIT_CLOSED,
                                                 memory_order_acq_rel, memory_order_acquire))
        return;
    window_clear(b);
    atomic_store_explicit(&b->reason, reason, memory_order_relaxed);
    atomic_store_explicit(&b->since_us, now, memory_order_relaxed);
    log_change(ep, c, PF_CIRCUIT_HALF_OPEN, PF_CIRCUIT_CLOSED, reason, now);
}

void pf_breaker_report(const struct pf_upstream_conf *up, struct pf_endpoint *ep, uint64_t ticket,
                       enum pf_outcome o, int status, uint64_t dur_us, uint64_t now)
{
    const struct pf_breaker_conf *c = &up->breaker;
    struct pf_breaker *b = &ep->br;
    bool failed = o != PF_OUTCOME_OK || pf_breaker_status_fails(c, status);
    bool slow = c->slow_call_ms > 0 && dur_us > c->slow_call_ms * 1000;
    unsigned consec = 0;
    uint64_t reason;

    switch (atomic_load_explicit(&b->state, memory_order_acquire)) {
    case PF_CIRCUIT_HALF_OPEN:
        half_open_report(ep, c, ticket, failed, o != PF_OUTCOME_OK ? (unsigned)o : (unsigned)status,
                         now);
        return;
    case PF_CIRCUIT_OPEN:
        return; /* a call that started before the opening: it says nothing new */
    default:
        break;
    }
    window_add(b, c, now, failed, slow, dur_us);
    if (failed) {
        consec = atomic_fetch_add_explicit(&b->consecutive, 1, memory_order_relaxed) + 1;
    } else {
        atomic_store_explicit(&b->consecutive, 0, memory_order_relaxed);
        atomic_store_explicit(&b->capped, 0, memory_order_relaxed);
        if (!slow)
            return; /* a good call cannot trip */
    }
    reason = trip_reason(b, c, consec, now);
    if (reason != 0)
        trip(up, ep, reason, now);
}

void pf_breaker_release(struct pf_endpoint *ep, uint64_t ticket)
{
    struct pf_breaker *b = &ep->br;

    if (atomic_load_explicit(&b->state, memory_order_acquire) != PF_CIRCUIT_HALF_OPEN ||
        !holds_permit(b, ticket))
        return;
    dec_positive(&b->trials);
}

bool pf_breaker_usable(const struct pf_endpoint *ep, uint64_t now)
{
    const struct pf_breaker *b = &ep->br;

    return atomic_load_explicit(&b->state, memory_order_acquire) != PF_CIRCUIT_OPEN ||
           now >= atomic_load_explicit(&b->retry_us, memory_order_relaxed);
}

void pf_breaker_probe_passed(struct pf_endpoint *ep, const struct pf_breaker_conf *c, uint64_t now)
{
    struct pf_breaker *b = &ep->br;
    uint64_t reason = reason_pack(R_PROBE_PASSED, 0, 0);
    unsigned s;

    pthread_mutex_lock(&open_lock); /* against an opening in between */
    s = atomic_load_explicit(&b->state, memory_order_acquire);
    if (s != PF_CIRCUIT_CLOSED) {
        window_clear(b);
        atomic_store_explicit(&b->reason, reason, memory_order_relaxed);
        atomic_store_explicit(&b->since_us, now, memory_order_relaxed);
        atomic_store_explicit(&b->state, PF_CIRCUIT_CLOSED, memory_order_release);
        log_change(ep, c, (enum pf_circuit)s, PF_CIRCUIT_CLOSED, reason, now);
    }
    pthread_mutex_unlock(&open_lock);
}

/* Open for long enough: turn ep half-open (one thread wins); false when it closed meanwhile. */
static bool to_half_open(struct pf_endpoint *ep, const struct pf_breaker_conf *c, unsigned s,
                         uint64_t now)
{
    struct pf_breaker *b = &ep->br;
    uint64_t since = atomic_load_explicit(&b->since_us, memory_order_relaxed);
    uint64_t reason = reason_pack(R_OPEN_ELAPSED, (now > since ? now - since : 0) / 1000, 0);

    if (atomic_compare_exchange_strong_explicit(&b->state, &s, PF_CIRCUIT_HALF_OPEN,
                                                memory_order_acq_rel, memory_order_acquire)) {
        atomic_store_explicit(&b->reason, reason, memory_order_relaxed);
        atomic_store_explicit(&b->since_us, now, memory_order_relaxed);
        log_change(ep, c, PF_CIRCUIT_OPEN, PF_CIRCUIT_HALF_OPEN, reason, now);
        return true;
    }
    return s == PF_CIRCUIT_HALF_OPEN;
}

/* A half-open trial permit of epoch (opened_total); false when none is left. */
static bool take_permit(struct pf_breaker *b, const struct pf_breaker_conf *c, uint64_t epoch,
                        uint64_t now)
{
    unsigned t = atomic_load(&b->trials);
    uint64_t last;

    while (t < c->half_open_requests) {
        if (atomic_compare_exchange_weak(&b->trials, &t, t + 1)) {
            if (atomic_load(&b->opened_total) != epoch) {
                /* it opened again in between and reset trials: this one is not its to take */
                dec_positive(&b->trials);
                return false;
            }
            atomic_store_explicit(&b->trial_us, now, memory_order_relaxed);
            return true;
        }
    }
    /* a trial that never reported (its client went away): give its permit again, once */
    last = atomic_load_explicit(&b->trial_us, memory_order_relaxed);
    return now > last && now - last >= c->open_for_ms * 1000 &&
           atomic_compare_exchange_strong_explicit(&b->trial_us, &last, now, memory_order_relaxed,
                                                   memory_order_relaxed);
}

bool pf_breaker_would_admit(const struct pf_endpoint *ep, const struct pf_breaker_conf *c,
                            uint64_t now)
{
    const struct pf_breaker *b = &ep->br;
    unsigned s = atomic_load_explicit(&b->state, memory_order_acquire);
    uint64_t last;

    if (s == PF_CIRCUIT_CLOSED)
        return true;
    if (s == PF_CIRCUIT_OPEN)
        return now >= atomic_load_explicit(&b->retry_us, memory_order_relaxed);
    last = atomic_load_explicit(&b->trial_us, memory_order_relaxed);
    return atomic_load(&b->trials) < c->half_open_requests ||
           (now > last && now - last >= c->open_for_ms * 1000);
}

bool pf_breaker_admit(struct pf_endpoint *ep, const struct pf_breaker_conf *c, uint64_t now,
                      uint64_t *ticket)
{
    struct pf_breaker *b = &ep->br;
    uint64_t epoch = atomic_load(&b->opened_total);
    unsigned s = atomic_load_explicit(&b->state, memory_order_acquire);

    if (s == PF_CIRCUIT_OPEN && now < atomic_load_explicit(&b->retry_us, memory_order_relaxed))
        return false;
    if (s == PF_CIRCUIT_CLOSED || (s == PF_CIRCUIT_OPEN && !to_half_open(ep, c, s, now))) {
        *ticket = 0; /* closed (maybe meanwhile: a probe passed) */
        return true;
    }
    if (!take_permit(b, c, epoch, now))
        return false;
    *ticket = epoch;
    return true;
}

uint64_t pf_breaker_retry_after(const struct pf_upstream_conf *up, uint64_t now)
{
    uint64_t best = UINT64_MAX;

    for (unsigned i = 0; i < up->n_endpoints && up->endpoint_ids != NULL; i++) {
        const struct pf_breaker *b = &pf_endpoint_get(up->endpoint_ids[i])->br;
        uint64_t at = atomic_load_explicit(&b->retry_us, memory_order_relaxed);

        if (atomic_load_explicit(&b->state, memory_order_acquire) != PF_CIRCUIT_OPEN)
            at = now; /* half-open, its trials out: soon */
        if (at < best)
            best = at;
    }
    if (best == UINT64_MAX || best <= now)
        return 1;
    return (best - now + 999999) / 1000000;
}

bool pf_breaker_overflow(const struct pf_upstream_conf *up, bool new_conn)
{
    const struct pf_breaker_conf *c = &up->breaker;
    unsigned active = 0, open = 0, pending = 0;

    for (unsigned i = 0; i < up->n_endpoints && up->endpoint_ids != NULL; i++) {
        const struct pf_endpoint *ep = pf_endpoint_get(up->endpoint_ids[i]);

        active += atomic_load_explicit(&ep->active, memory_order_relaxed);
        if (!new_conn)
            continue; /* the connection counts matter only for a new connection */
        open += atomic_load_explicit(&ep->open, memory_order_relaxed);
        pending += atomic_load_explicit(&ep->br.pending, memory_order_relaxed);
    }
    if (active >= c->max_requests)
        return true;
    return new_conn && (open >= c->max_connections || pending >= c->max_pending);
}

/* ---- settings ---- */

static const struct pf_conf_key breaker_keys[] = {
    {"consecutive_failures", PF_CONF_UINT, offsetof(struct pf_breaker_conf, consecutive_failures),
     0, 1000000, NULL},
    {"failure_rate", PF_CONF_PERCENT, offsetof(struct pf_breaker_conf, failure_rate), 0, 0, NULL},
    {"min_requests", PF_CONF_UINT, offsetof(struct pf_breaker_conf, min_requests), 1, 1000000,
     NULL},
    {"window", PF_CONF_DURATION, offsetof(struct pf_breaker_conf, window_ms), 10, 3600000, NULL},
    {"slow_call_duration", PF_CONF_DURATION, offsetof(struct pf_breaker_conf, slow_call_ms), 0,
     3600000, NULL},
    {"slow_rate", PF_CONF_PERCENT, offsetof(struct pf_breaker_conf, slow_rate), 0, 0, NULL},
    {"failure_statuses", PF_CONF_STRING, offsetof(struct pf_breaker_conf, failure_statuses), 0, 0,
     NULL},
    {"open_for", PF_CONF_DURATION, offsetof(struct pf_breaker_conf, open_for_ms), 1, 86400000,
     NULL},
    {"max_open_for", PF_CONF_DURATION, offsetof(struct pf_breaker_conf, max_open_for_ms), 1,
     86400000, NULL},
    {"half_open_requests", PF_CONF_UINT, offsetof(struct pf_breaker_conf, half_open_requests), 1,
     1000, NULL},
    {"max_connections", PF_CONF_UINT, offsetof(struct pf_breaker_conf, max_connections), 1,
     10000000, NULL},
    {"max_pending", PF_CONF_UINT, offsetof(struct pf_breaker_conf, max_pending), 1, 10000000, NULL},
    {"max_requests", PF_CONF_UINT, offsetof(struct pf_breaker_conf, max_requests), 1, 10000000,
     NULL},
    {"max_retries", PF_CONF_UINT, offsetof(struct pf_breaker_conf, max_retries), 0, 10000000, NULL},
    {"max_ejection", PF_CONF_PERCENT, offsetof(struct pf_breaker_conf, max_ejection), 0, 0, NULL},
    {NULL, 0, 0, 0, 0, NULL},
};

void pf_breaker_conf_defaults(struct pf_breaker_conf *c)
{
    memset(c, 0, sizeof(*c));
    c->consecutive_failures = 5;
    c->failure_rate = 0.5;
    c->min_requests = 20;
    c->window_ms = 10000;
    c->slow_rate = 1.0;
    c->open_for_ms = 30000;
    c->max_open_for_ms = 300000;
    c->half_open_requests = 1;
    c->max_connections = 1024;
    c->max_pending = 1024;
    c->max_requests = 1024;
    c->max_retries = 3;
    c->max_ejection = 0.5;
    for (unsigned s = 500; s <= 599; s++)
        c->status_bits[(s - 100) / 64] |= 1ull << ((s - 100) % 64);
}

bool pf_breaker_status_fails(const struct pf_breaker_conf *c, int status)
{
    if (status < 100 || status >= 100 + 64 * PF_BREAKER_STATUS_WORDS)
        return false;
    return (c->status_bits[(status - 100) / 64] >> ((status - 100) % 64) & 1) != 0;
}

/* One "500-599" or "503" of failure_statuses; false when it is not one. */
static bool status_item(const char *s, size_t len, unsigned *lo, unsigned *hi)
{
    char buf[16];
    char *end;

    if (len == 0 || len >= sizeof(buf))
        return false;
    memcpy(buf, s, len);
    buf[len] = '\0';
    *lo = (unsigned)strtoul(buf, &end, 10);
    *hi = *lo;
    if (*end == '-')
        *hi = (unsigned)strtoul(end + 1, &end, 10);
    return *end == '\0' && end != buf && *lo >= 100 && *hi <= 599 && *lo <= *hi;
}

/* failure_statuses: ranges and statuses separated by commas or spaces ("500-599", "502, 503"). */
static bool parse_statuses(struct pf_breaker_conf *c, const char *s)
{
    memset(c->status_bits, 0, sizeof(c->status_bits));
    while (*s != '\0') {
        size_t len = strcspn(s, ", ");
        unsigned lo, hi;

        if (len > 0) {
            if (!status_item(s, len, &lo, &hi))
                return false;
            for (unsigned st = lo; st <= hi; st++)
                c->status_bits[(st - 100) / 64] |= 1ull << ((st - 100) % 64);
        }
        s += len;
        s += strspn(s, ", ");
    }
    return true;
}

void pf_breaker_conf_parse(const struct pf_conf_node *n, const char *section,
                           struct pf_breaker_conf *c, struct pf_err *err)
{
    if (n == NULL)
        return;
    if (pf_conf_fill_section(n, section, breaker_keys, c, err) != 0)
        return;
    if (c->failure_statuses != NULL && !parse_statuses(c, c->failure_statuses))
        pf_err_at(err, pf_conf_get(n, "failure_statuses"),
                  "%s.failure_statuses: expected statuses and ranges within 100-599, as in "
                  "\"500-599\" or \"502, 503\"",
                  section);
    if (c->max_open_for_ms < c->open_for_ms)
        pf_err_at(err, n, "%s: max_open_for must be at least open_for", section);
}

void pf_breaker_conf_json(const struct pf_breaker_conf *c, struct evbuffer *out)
{
    char win[24], slow[24], open[24], max[24];

    pf_conf_format_duration(c->window_ms, win, sizeof(win));
    pf_conf_format_duration(c->slow_call_ms, slow, sizeof(slow));
    pf_conf_format_duration(c->open_for_ms, open, sizeof(open));
    pf_conf_format_duration(c->max_open_for_ms, max, sizeof(max));
    evbuffer_add_printf(
        out,
        ",\"circuit_breaker\":{\"consecutive_failures\":%u,\"failure_rate\":\"%g%%\","
        "\"min_requests\":%u,\"window\":\"%s\",\"slow_call_duration\":\"%s\","
        "\"slow_rate\":\"%g%%\",\"failure_statuses\":",
        c->consecutive_failures, c->failure_rate * 100, c->min_requests, win, slow,
        c->slow_rate * 100);
    evbuffer_add(out, "\"", 1);
    pf_json_escape(out, c->failure_statuses != NULL ? c->failure_statuses : "500-599",
                   strlen(c->failure_statuses != NULL ? c->failure_statuses : "500-599"));
    evbuffer_add_printf(out,
                        "\",\"open_for\":\"%s\",\"max_open_for\":\"%s\",\"half_open_requests\":%u,"
                        "\"max_connections\":%u,\"max_pending\":%u,\"max_requests\":%u,"
                        "\"max_retries\":%u,\"max_ejection\":\"%g%%\"}",
                        open, max, c->half_open_requests, c->max_connections, c->max_pending,
                        c->max_requests, c->max_retries, c->max_ejection * 100);
}

void pf_breaker_conf_free(struct pf_breaker_conf *c)
{
    pf_conf_fields_free(breaker_keys, c);
}

/* ---- what operators see ---- */

/* The upper bound of the latency bucket where the share p of t's calls is reached. */
static uint64_t percentile_us(const struct totals *t, double p)
{
    uint64_t n = 0, want, bound = 500;

    for (unsigned i = 0; i < PF_BREAKER_LAT_BUCKETS; i++)
        n += t->lat[i];
    if (n == 0)
        return 0;
    want = (uint64_t)(p * (double)n + 0.999999);
    for (unsigned i = 0; i < PF_BREAKER_LAT_BUCKETS; i++, bound *= 2) {
        if (want <= t->lat[i])
            return bound;
        want -= t->lat[i];
    }
    return bound / 2;
}

void pf_breaker_view(const struct pf_endpoint *ep, const struct pf_breaker_conf *c, uint64_t now,
                     struct pf_breaker_view *v)
{
    const struct pf_breaker *b = &ep->br;
    struct totals t;

    memset(v, 0, sizeof(*v));
    v->state = (enum pf_circuit)atomic_load_explicit(&b->state, memory_order_acquire);
    reason_text(atomic_load_explicit(&b->reason, memory_order_relaxed), c, v->reason,
                sizeof(v->reason));
    v->since_us = atomic_load_explicit(&b->since_us, memory_order_relaxed);
    v->retry_us = atomic_load_explicit(&b->retry_us, memory_order_relaxed);
    v->consecutive = atomic_load_explicit(&b->consecutive, memory_order_relaxed);
    v->opened_total = atomic_load_explicit(&b->opened_total, memory_order_relaxed);
    window_sum(b, c, now, &t);
    v->calls = t.calls;
    v->failures = t.failures;
    v->slow = t.slow;
    v->p50_us = percentile_us(&t, 0.50);
    v->p90_us = percentile_us(&t, 0.90);
    v->p99_us = percentile_us(&t, 0.99);
}
