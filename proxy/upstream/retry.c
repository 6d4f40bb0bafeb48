/*
 * Retry policy: settings, conditions, backoff and the per-upstream budget.
 * The budget's counter of retries in flight is an atomic per upstream,
 * touched twice per retry; its base, the requests in flight, is the
 * endpoints' own count, read when a retry is considered (nothing per
 * request); the min_per_second window is one 64-bit word changed by
 * compare-and-swap.
 */
#include "proxy/upstream/retry.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>

#include "proxy/arena.h"
#include "proxy/defs.h"

void pf_retry_conf_defaults(struct pf_retry_conf *rc)
{
    *rc = (struct pf_retry_conf){
        .attempts = 1,
        .on = PF_RETRY_ON_CONNECT_FAILURE | PF_RETRY_ON_RESET,
        .per_try_timeout_ms = 0,
        .budget = 0.2,
        .min_per_second = 10,
        .backoff_ms = 25,
        .max_buffered_body = 64 * 1024,
    };
    rc->statuses[(502 - 400) / 64] |= (uint64_t)1 << ((502 - 400) % 64);
    rc->statuses[(503 - 400) / 64] |= (uint64_t)1 << ((503 - 400) % 64);
}

static void set_status(struct pf_retry_conf *rc, unsigned s)
{
    rc->statuses[(s - 400) / 64] |= (uint64_t)1 << ((s - 400) % 64);
}

static bool has_status(const struct pf_retry_conf *rc, int s)
{
    if (s < 400 || s > 599)
        return false;
    return (rc->statuses[(s - 400) / 64] >> ((s - 400) % 64)) & 1;
}

/* One item of `on`: a condition, "5xx", "4xx" or a status 400..599. */
static bool on_item(struct pf_retry_conf *rc, const char *v)
{
    char *end;
    long s;

    if (strcmp(v, "connect_failure") == 0) {
        rc->on |= PF_RETRY_ON_CONNECT_FAILURE;
    } else if (strcmp(v, "reset") == 0) {
        rc->on |= PF_RETRY_ON_RESET;
    } else if (strcmp(v, "timeout") == 0) {
        rc->on |= PF_RETRY_ON_TIMEOUT;
    } else if (strcmp(v, "5xx") == 0 || strcmp(v, "4xx") == 0) {
        for (unsigned st = v[0] == '5' ? 500 : 400, e = st + 100; st < e; st++)
            set_status(rc, st);
    } else {
        s = strtol(v, &end, 10);
        if (*v == '\0' || *end != '\0' || s < 400 || s > 599)
            return false;
        set_status(rc, (unsigned)s);
    }
    return true;
}

static int parse_on(const struct pf_conf_node *n, void *field, struct pf_err *err)
{
    struct pf_retry_conf *rc = field;
    const struct pf_conf_node *const *items;
    unsigned count = pf_conf_node_items((const struct pf_conf_node *const *)&n, &items);

    rc->on = 0;
    memset(rc->statuses, 0, sizeof(rc->statuses));
    for (unsigned i = 0; i < count; i++) {
        const struct pf_conf_node *it = items[i];

        if (it->type != PF_NODE_SCALAR || !on_item(rc, it->value)) {
            pf_err_at(err, it,
                      "retries.on: each item must be connect_failure, reset, timeout, 5xx, 4xx "
                      "or a status 400-599");
            return -EINVAL;
        }
    }
    return 0;
}

static const struct pf_conf_key retry_keys[] = {
    {"attempts", PF_CONF_UINT, offsetof(struct pf_retry_conf, attempts), 0, 10, NULL},
    {"on", PF_CONF_CUSTOM, 0, 0, 0, parse_on},
    {"per_try_timeout", PF_CONF_DURATION, offsetof(struct pf_retry_conf, per_try_timeout_ms), 0,
     86400000, NULL},
    {"budget", PF_CONF_PERCENT, offsetof(struct pf_retry_conf, budget), 0, 0, NULL},
    {"min_per_second", PF_CONF_UINT, offsetof(struct pf_retry_conf, min_per_second), 0, 1000000,
     NULL},
    {"backoff", PF_CONF_DURATION, offsetof(struct pf_retry_conf, backoff_ms), 0, 60000, NULL},
    {"max_buffered_body", PF_CONF_SIZE, offsetof(struct pf_retry_conf, max_buffered_body), 0,
     16 << 20, NULL},
    {NULL, 0, 0, 0, 0, NULL},
};

void pf_retry_conf_parse(const struct pf_conf_node *n, const char *section,
                         struct pf_retry_conf *rc, struct pf_err *err)
{
    pf_conf_fill_section(n, section, retry_keys, rc, err);
}

void pf_retry_conf_json(const struct pf_retry_conf *rc, struct evbuffer *out)
{
    static const char *const names[] = {"connect_failure", "reset", "timeout"};
    char pt[24], bo[24];
    bool first = true;

    evbuffer_add_printf(out, ",\"retries\":{\"attempts\":%u,\"on\":[", rc->attempts);
    for (unsigned i = 0; i < PF_COUNTOF(names); i++) {
        if (rc->on & (1u << i)) {
            evbuffer_add_printf(out, "%s\"%s\"", first ? "" : ",", names[i]);
            first = false;
        }
    }
    for (int s = 400; s <= 599; s++) {
        if (has_status(rc, s)) {
            evbuffer_add_printf(out, "%s%d", first ? "" : ",", s);
            first = false;
        }
    }
    pf_conf_format_duration(rc->per_try_timeout_ms, pt, sizeof(pt));
    pf_conf_format_duration(rc->backoff_ms, bo, sizeof(bo));
    evbuffer_add_printf(out,
                        "],\"per_try_timeout\":\"%s\",\"budget\":\"%g%%\",\"min_per_second\":%u,"
                        "\"backoff\":\"%s\",\"max_buffered_body\":%llu}",
                        pt, rc->budget * 100, rc->min_per_second, bo,
                        (unsigned long long)rc->max_buffered_body);
}

bool pf_retry_on_outcome(const struct pf_retry_conf *rc, enum pf_outcome o, int status)
{
    switch (o) {
    case PF_OUTCOME_OK:
        return has_status(rc, status);
    case PF_OUTCOME_CONNECT_FAILED:
        return (rc->on & PF_RETRY_ON_CONNECT_FAILURE) != 0;
    case PF_OUTCOME_RESET:
        return (rc->on & PF_RETRY_ON_RESET) != 0;
    case PF_OUTCOME_TIMEOUT:
        return (rc->on & PF_RETRY_ON_TIMEOUT) != 0;
    default:
        return false; /* a malformed answer is not retried */
    }
}

uint64_t pf_retry_backoff_us(const struct pf_retry_conf *rc, unsigned n, uint64_t r)
{
    uint64_t base = rc->backoff_ms * 1000;
    uint64_t cap = base * PF_RETRY_BACKOFF_CAP;
    uint64_t d = base;

    if (base == 0)
        return 0;
    for (unsigned i = 1; i < n && d < cap; i++)
        d *= 2;
    if (d > cap)
        d = cap;
    return d / 2 + r % (d - d / 2 + 1);
}

/* Take one of this second's min_per_second places. */
static bool take_per_second(struct pf_retry_state *st, unsigned min, uint64_t now_us)
{
    uint64_t sec = now_us / 1000000;
    uint64_t cur = atomic_load_explicit(&st->sec, memory_order_relaxed);

    if (min == 0)
        return false;
    for (;;) {
        uint64_t next;

        if ((cur >> 32) != (sec & 0xffffffffu))
            next = (sec << 32) | 1;
        else if ((cur & 0xffffffffu) < min)
            next = cur + 1;
        else
            return false;
        if (atomic_compare_exchange_weak_explicit(&st->sec, &cur, next, memory_order_relaxed,
                                                  memory_order_relaxed))
            return true;
    }
}

bool pf_retry_budget_take(struct pf_retry_state *st, const struct pf_retry_conf *rc,
                          unsigned max_in_flight, unsigned active, uint64_t now_us)
{
    unsigned in = atomic_fetch_add_explicit(&st->in_flight, 1, memory_order_relaxed) + 1;

    if (in > max_in_flight) {
        /* the cap in the same step as the take: workers cannot pass it together */
        atomic_fetch_sub_explicit(&st->in_flight, 1, memory_order_relaxed);
        return false;
    }
    if ((double)in <= rc->budget * (double)active)
        return true;
    if (take_per_second(st, rc->min_per_second, now_us))
        return true;
    atomic_fetch_sub_explicit(&st->in_flight, 1, memory_order_relaxed);
    return false;
}

void pf_retry_budget_put(struct pf_retry_state *st)
{
    atomic_fetch_sub_explicit(&st->in_flight, 1, memory_order_relaxed);
}

unsigned pf_retry_in_flight(const struct pf_upstream_conf *up)
{
    if (up->rstate == NULL)
        return 0;
    return atomic_load_explicit(&up->rstate->in_flight, memory_order_relaxed);
}

static struct pf_retry_state *state_of(const struct pf_config *cfg, const char *name)
{
    for (unsigned i = 0; cfg != NULL && i < cfg->n_upstreams; i++) {
        if (cfg->upstreams[i].rstate != NULL && strcmp(cfg->upstreams[i].name, name) == 0)
            return cfg->upstreams[i].rstate;
    }
    return NULL;
}

void pf_retry_bind(struct pf_config *cfg, const struct pf_config *prev)
{
    for (unsigned i = 0; i < cfg->n_upstreams; i++) {
        struct pf_upstream_conf *u = &cfg->upstreams[i];
        struct pf_retry_state *st = state_of(prev, u->name);

        if (u->rstate != NULL)
            continue;
        if (st != NULL) {
            atomic_fetch_add(&st->refs, 1);
        } else {
            st = pf_xcalloc(1, sizeof(*st));
            atomic_init(&st->refs, 1);
            st->name = pf_xstrdup(u->name);
        }
        u->rstate = st;
    }
}

void pf_retry_unbind(struct pf_config *cfg)
{
    for (unsigned i = 0; i < cfg->n_upstreams; i++) {
        struct pf_retry_state *st = cfg->upstreams[i].rstate;

        cfg->upstreams[i].rstate = NULL;
        if (st != NULL && atomic_fetch_sub(&st->refs, 1) == 1) {
            free(st->name);
            free(st);
        }
    }
}
