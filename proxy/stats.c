/*
 * The metrics registry and the /metrics exposition (see proxy/stats.h).
 *
 * A worker's series live in one append-only list (struct pf_stats.series);
 * the hot paths never search it: they go through handles that cache series
 * pointers, one per (route, upstream) and one per endpoint, each with a small
 * open-addressing table from (method, code) or code to the counter series.
 * Handles and tables are touched by the owner thread only; a scrape sees the
 * list alone, copied under the mutex, then sorts and sums across workers.
 */
#include "proxy/stats.h"

#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include <event2/buffer.h>

#include "filters/registry.h"
#include "proxy/arena.h"
#include "proxy/conf.h"
#include "proxy/core.h"
#include "proxy/errors.h"
#include "proxy/filter.h"
#include "proxy/pipe.h"
#include "proxy/server.h"
#include "proxy/slo.h"
#include "proxy/tx.h"
#include "proxy/upstream/breaker.h"
#include "proxy/upstream/health.h"
#include "proxy/upstream/upstream.h"

#define MAX_LABELS  4
#define MAX_BOUND_S 1e6 /* about 11.6 days: no request waits that long */

enum fam {
    FAM_HTTP_REQUESTS = 0,
    FAM_HTTP_DURATION,
    FAM_UP_REQUESTS,
    FAM_UP_DURATION,
    FAM_UP_RETRIES,
    FAM_UP_RETRIES_REFUSED,
    FAM_SLO_REQUESTS,
    FAM_SLO_GOOD,
    FAM_MAX,
};

struct fam_desc {
    const char *name;
    const char *help;
    bool hist;
    const char *labels[MAX_LABELS]; /* NULL-terminated when fewer */
};

static const struct fam_desc fams[FAM_MAX] = {
    [FAM_HTTP_REQUESTS] = {"pilotfish_http_requests_total",
                           "Client requests answered, by route, upstream, method and status code.",
                           false,
                           {"route", "upstream", "method", "code"}},
    [FAM_HTTP_DURATION] = {"pilotfish_http_request_duration_seconds",
                           "Time from the request head to the end of the response, by route.",
                           true,
                           {"route"}},
    [FAM_UP_REQUESTS] = {"pilotfish_upstream_requests_total",
                         "Attempts sent to upstream endpoints, by response status or error code.",
                         false,
                         {"upstream", "endpoint", "code"}},
    [FAM_UP_DURATION] = {"pilotfish_upstream_request_duration_seconds",
                         "Time from the first attempt upstream to its response head or failure.",
                         true,
                         {"upstream"}},
    [FAM_UP_RETRIES] = {"pilotfish_upstream_retries_total",
                        "Upstream attempts retried after a failure.",
                        false,
                        {"upstream"}},
    [FAM_UP_RETRIES_REFUSED] = {"pilotfish_upstream_retries_budget_exceeded_total",
                                "Retries the policy allowed but the retry budget refused.",
                                false,
                                {"upstream"}},
    [FAM_SLO_REQUESTS] = {"pilotfish_slo_latency_requests_total",
                          "Requests of routes with a latency SLO, by route.",
                          false,
                          {"route"}},
    [FAM_SLO_GOOD] = {"pilotfish_slo_latency_good_total",
                      "Requests of routes with a latency SLO answered within its threshold.",
                      false,
                      {"route"}},
};

static const double default_buckets[] = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                                         0.1,    0.25,  0.5,    1,     2.5,  5,     10};

static const char *const methods[] = {"GET",     "HEAD",    "POST",  "PUT",   "DELETE",
                                      "CONNECT", "OPTIONS", "TRACE", "PATCH", "OTHER"};
#define N_METHODS (sizeof(methods) / sizeof(methods[0]))

/* One label set of one family. Values: relaxed atomics, written by the owner only. */
struct series {
    enum fam fam;
    char *labels[MAX_LABELS]; /* pf_xstrdup'd; NULL past the family's labels */
    _Atomic uint64_t v[];     /* counter: v[0]; histogram: count, sum (us), one per bucket */
};

/* uint32 key -> series, open addressing; owner thread only. */
struct itab {
    uint32_t *keys;       /* key + 1; 0 = empty slot */
    struct series **vals; /* parallel to keys */
    unsigned cap;         /* 0 or a power of two */
    unsigned n;           /* used slots */
};

struct pf_stats_route {
    struct pf_stats *st;         /* the owner's */
    char *route;                 /* label value (copied) */
    char *upstream;              /* label value (copied) */
    struct series *duration;     /* pilotfish_http_request_duration_seconds{route} */
    struct itab codes;           /* method * 1000 + code -> requests series */
    struct series *slo_total;    /* pilotfish_slo_latency_requests_total{route}, made on use */
    struct series *slo_good;     /* pilotfish_slo_latency_good_total{route} */
    struct pf_stats_route *next; /* st->routes */
};

struct ep_stats {
    uint64_t gen;            /* generation of the endpoint these series are for */
    struct series *duration; /* pilotfish_upstream_request_duration_seconds{upstream} */
    struct series *retries;  /* pilotfish_upstream_retries_total{upstream} */
    struct series *refused;  /* pilotfish_upstream_retries_budget_exceeded_total{upstream} */
    char *upstream;          /* label value (copied) */
    char *endpoint;          /* label value (copied) */
    struct itab codes;       /* status, or 1000 + enum pf_error -> requests series */
};

struct pf_stats {
    pthread_mutex_t lock;                      /* guards the series array against a scrape's copy */
    struct series **series;                    /* guarded by lock (the owner reads it freely) */
    unsigned n_series;                         /* guarded by lock */
    unsigned cap_series;                       /* owner only */
    unsigned n_bounds;                         /* histogram buckets, without +Inf */
    uint64_t bound_ns[PF_METRICS_MAX_BUCKETS]; /* the bounds in ns, compared with us * 1000 */
    char le[PF_METRICS_MAX_BUCKETS][32];       /* the bounds as "le" label values */
    struct pf_stats_route *routes;             /* owner only */
    struct pf_stats_route *unrouted;           /* owner only: route "" */
    struct ep_stats **eps;                     /* owner only, by endpoint id */
    unsigned n_eps;                            /* slots in eps */
};

#define add        pf_counter_add /* one writer: a load and a store (proxy/stats.h) */
#define get        pf_counter_get
#define put_head   pf_stats_put_head
#define put_sample pf_stats_put_sample

/* ---- configuration ---- */

static int bucket_value(const struct pf_conf_node *n, double *v)
{
    char *end;
    uint64_t ms;

    if (n->type != PF_NODE_SCALAR || n->value[0] == '\0')
        return -EINVAL;
    errno = 0;
    *v = strtod(n->value, &end);
    if (*end == '\0' && errno == 0)
        return 0;
    if (pf_parse_duration_ms(n->value, &ms) == 0) {
        *v = (double)ms / 1000.0;
        return 0;
    }
    return -EINVAL;
}

static int parse_buckets(const struct pf_conf_node *n, void *field, struct pf_err *err)
{
    struct pf_metrics_conf *mc = field;
    double v;

    if (n->type != PF_NODE_SEQ || n->n_items == 0) {
        pf_err_at(err, n, "metrics.buckets: expected a non-empty list of upper bounds in seconds");
        return -EINVAL;
    }
    if (n->n_items > PF_METRICS_MAX_BUCKETS) {
        pf_err_at(err, n, "metrics.buckets: at most %d buckets", PF_METRICS_MAX_BUCKETS);
        return -EINVAL;
    }
    for (unsigned i = 0; i < n->n_items; i++) {
        const struct pf_conf_node *it = n->items[i];

        if (bucket_value(it, &v) != 0 || !isfinite(v) || v <= 0 || v > MAX_BOUND_S) {
            pf_err_at(err, it,
                      "metrics.buckets: expected a number of seconds above 0 and at most "
                      "1000000, or a duration");
            return -EINVAL;
        }
        if (i > 0 && v <= mc->buckets[i - 1]) {
            pf_err_at(err, it, "metrics.buckets: must be strictly increasing (%g after %g)", v,
                      mc->buckets[i - 1]);
            return -EINVAL;
        }
        mc->buckets[i] = v;
    }
    mc->n_buckets = n->n_items;
    return 0;
}

static const struct pf_conf_key metrics_keys[] = {
    {"buckets", PF_CONF_CUSTOM, 0, 0, 0, parse_buckets},
    {NULL, 0, 0, 0, 0, NULL},
};

int pf_stats_conf_parse(const struct pf_conf_node *n, void *field, struct pf_err *err)
{
    return pf_conf_fill_section(n, "metrics", metrics_keys, field, err);
}

static const double *conf_buckets(const struct pf_metrics_conf *mc, unsigned *n)
{
    if (mc == NULL || mc->n_buckets == 0) {
        *n = sizeof(default_buckets) / sizeof(default_buckets[0]);
        return default_buckets;
    }
    *n = mc->n_buckets;
    return mc->buckets;
}

bool pf_stats_conf_same(const struct pf_metrics_conf *a, const struct pf_metrics_conf *b)
{
    unsigned na, nb;
    const double *va = conf_buckets(a, &na), *vb = conf_buckets(b, &nb);

    return na == nb && memcmp(va, vb, na * sizeof(*va)) == 0;
}

/* ---- lifetime ---- */

/*
 * The shortest text that reads back as v, written as Go's
 * strconv.FormatFloat(v, 'g', -1, 64) does (so "le" values look like those of
 * the Prometheus client libraries): "0.0005", "10", "1e-05", "1e+06".
 */
static void format_bound(char *buf, size_t size, double v)
{
    int digits = 1, exp;

    while (digits < 17) {
        snprintf(buf, size, "%.*e", digits - 1, v);
        if (strtod(buf, NULL) == v)
            break;
        digits++;
    }
    snprintf(buf, size, "%.*e", digits - 1, v);
    exp = atoi(strchr(buf, 'e') + 1);
    if (exp < -4 || exp >= 6)
        return; /* keep the exponent form */
    snprintf(buf, size, "%.*f", digits - 1 - exp > 0 ? digits - 1 - exp : 0, v);
}

struct pf_stats *pf_stats_new(const struct pf_metrics_conf *mc)
{
    struct pf_stats *st = pf_xcalloc(1, sizeof(*st));
    const double *b = conf_buckets(mc, &st->n_bounds);

    pthread_mutex_init(&st->lock, NULL);
    for (unsigned i = 0; i < st->n_bounds; i++) {
        st->bound_ns[i] = (uint64_t)llround(b[i] * 1e9);
        format_bound(st->le[i], sizeof(st->le[i]), b[i]);
    }
    return st;
}

static void itab_free(struct itab *t)
{
    free(t->keys);
    free(t->vals);
}

void pf_stats_free(struct pf_stats *st)
{
    struct pf_stats_route *r, *next;

    if (st == NULL)
        return;
    for (unsigned i = 0; i < st->n_series; i++) {
        for (unsigned k = 0; k < MAX_LABELS; k++)
            free(st->series[i]->labels[k]);
        free(st->series[i]);
    }
    free(st->series);
    for (r = st->routes; r != NULL; r = next) {
        next = r->next;
        itab_free(&r->codes);
        free(r->route);
        free(r->upstream);
        free(r);
    }
    for (unsigned i = 0; i < st->n_eps; i++) {
        if (st->eps[i] == NULL)
            continue;
        itab_free(&st->eps[i]->codes);
        free(st->eps[i]->upstream);
        free(st->eps[i]->endpoint);
        free(st->eps[i]);
    }
    free(st->eps);
    pthread_mutex_destroy(&st->lock);
    free(st);
}

struct pf_stats *pf_stats_of(struct pf_worker *w)
{
    return w->stats;
}

/* ---- series ---- */

static bool series_is(const struct series *s, enum fam f, const char *const *labels)
{
    if (s->fam != f)
        return false;
    for (unsigned k = 0; k < MAX_LABELS && fams[f].labels[k] != NULL; k++) {
        if (strcmp(s->labels[k], labels[k]) != 0)
            return false;
    }
    return true;
}

/* The series of family f with these label values, created (at 0) when new. Owner only. */
static struct series *series_get(struct pf_stats *st, enum fam f, const char *const *labels)
{
    unsigned n_vals = fams[f].hist ? 2 + st->n_bounds : 1;
    struct series *s;

    for (unsigned i = 0; i < st->n_series; i++) {
        if (series_is(st->series[i], f, labels))
            return st->series[i];
    }
    s = pf_xcalloc(1, sizeof(*s) + n_vals * sizeof(s->v[0]));
    s->fam = f;
    for (unsigned k = 0; k < MAX_LABELS && fams[f].labels[k] != NULL; k++)
        s->labels[k] = pf_xstrdup(labels[k]);
    pthread_mutex_lock(&st->lock);
    if (st->n_series == st->cap_series) {
        st->cap_series = st->cap_series ? st->cap_series * 2 : 64;
        st->series = pf_xrealloc(st->series, st->cap_series * sizeof(*st->series));
    }
    st->series[st->n_series++] = s;
    pthread_mutex_unlock(&st->lock);
    return s;
}

static void observe(const struct pf_stats *st, struct series *s, uint64_t us)
{
    uint64_t ns = us * 1000;

    for (unsigned i = 0; i < st->n_bounds; i++) {
        if (ns <= st->bound_ns[i]) {
            add(&s->v[2 + i], 1);
            break;
        }
    }
    add(&s->v[1], us);
    add(&s->v[0], 1);
}

/* ---- small tables ---- */

static struct series *itab_get(const struct itab *t, uint32_t key)
{
    unsigned mask = t->cap - 1;

    if (t->cap == 0)
        return NULL;
    for (unsigned i = (key * 2654435761u) & mask; t->keys[i] != 0; i = (i + 1) & mask) {
        if (t->keys[i] == key + 1)
            return t->vals[i];
    }
    return NULL;
}

static void itab_insert(struct itab *t, uint32_t key, struct series *s)
{
    unsigned mask = t->cap - 1, i = (key * 2654435761u) & mask;

    while (t->keys[i] != 0)
        i = (i + 1) & mask;
    t->keys[i] = key + 1;
    t->vals[i] = s;
    t->n++;
}

static void itab_put(struct itab *t, uint32_t key, struct series *s)
{
    if ((t->n + 1) * 2 > t->cap) {
        struct itab old = *t;

        t->cap = old.cap ? old.cap * 2 : 16;
        t->keys = pf_xcalloc(t->cap, sizeof(*t->keys));
        t->vals = pf_xcalloc(t->cap, sizeof(*t->vals));
        t->n = 0;
        for (unsigned i = 0; i < old.cap; i++) {
            if (old.keys[i] != 0)
                itab_insert(t, old.keys[i] - 1, old.vals[i]);
        }
        itab_free(&old);
    }
    itab_insert(t, key, s);
}

/* ---- client requests ---- */

struct pf_stats_route *pf_stats_route_get(struct pf_stats *st, const char *route,
                                          const char *upstream)
{
    struct pf_stats_route *r;
    const char *labels[MAX_LABELS] = {route};

    for (r = st->routes; r != NULL; r = r->next) {
        if (strcmp(r->route, route) == 0 && strcmp(r->upstream, upstream) == 0)
            return r;
    }
    r = pf_xcalloc(1, sizeof(*r));
    r->st = st;
    r->route = pf_xstrdup(route);
    r->upstream = pf_xstrdup(upstream);
    r->duration = series_get(st, FAM_HTTP_DURATION, labels);
    r->next = st->routes;
    st->routes = r;
    return r;
}

static unsigned method_index(const char *m)
{
    for (unsigned i = 0; i < N_METHODS - 1; i++) {
        if (strcmp(m, methods[i]) == 0)
            return i;
    }
    return N_METHODS - 1;
}

void pf_stats_route_count(struct pf_stats_route *r, const char *method, int status, uint64_t us)
{
    unsigned code = status >= 100 && status <= 999 ? (unsigned)status : 0;
    unsigned m = method_index(method);
    uint32_t key = m * 1000 + code;
    struct series *s = itab_get(&r->codes, key);

    if (s == NULL) {
        char num[8];
        const char *labels[MAX_LABELS] = {r->route, r->upstream, methods[m], num};

        snprintf(num, sizeof(num), "%u", code);
        s = series_get(r->st, FAM_HTTP_REQUESTS, labels);
        itab_put(&r->codes, key, s);
    }
    add(&s->v[0], 1);
    observe(r->st, r->duration, us);
}

void pf_stats_slo_count(struct pf_stats_route *r, const struct pf_tx *tx, uint64_t us)
{
    uint64_t limit_ms = tx->route != NULL ? tx->route->slo.latency_ms : 0;

    if (limit_ms == 0)
        return;
    if (r->slo_total == NULL) {
        const char *labels[MAX_LABELS] = {r->route};

        r->slo_total = series_get(r->st, FAM_SLO_REQUESTS, labels);
        r->slo_good = series_get(r->st, FAM_SLO_GOOD, labels);
    }
    add(&r->slo_total->v[0], 1);
    if (us <= limit_ms * 1000)
        add(&r->slo_good->v[0], 1);
}

void pf_stats_count_unrouted(struct pf_tx *tx)
{
    struct pf_stats *st = tx->w->stats;

    if (st == NULL)
        return;
    if (st->unrouted == NULL)
        st->unrouted = pf_stats_route_get(st, "", "");
    pf_stats_route_count(st->unrouted, tx->method != NULL ? tx->method : "-",
                         tx->status > 0 ? tx->status : 499, pf_clock_read_us() - tx->t_start);
}

/* ---- upstream attempts ---- */

static struct ep_stats *ep_get(struct pf_stats *st, unsigned id, const char *upstream,
                               const char *endpoint)
{
    struct ep_stats *e;
    const char *labels[MAX_LABELS] = {upstream};
    uint64_t gen = pf_endpoint_gen(id);

    if (id >= st->n_eps) {
        unsigned n = id + 16;

        st->eps = pf_xrealloc(st->eps, n * sizeof(*st->eps));
        memset(st->eps + st->n_eps, 0, (n - st->n_eps) * sizeof(*st->eps));
        st->n_eps = n;
    }
    if (st->eps[id] != NULL && st->eps[id]->gen == gen)
        return st->eps[id];
    /*
     * The id is new here or names another endpoint now: first drop every stale
     * entry, so that no series of a gone endpoint with the same labels is shared.
     */
    pf_stats_prune_endpoints(st);
    e = pf_xcalloc(1, sizeof(*e));
    e->gen = gen;
    e->upstream = pf_xstrdup(upstream);
    e->endpoint = pf_xstrdup(endpoint);
    e->duration = series_get(st, FAM_UP_DURATION, labels);
    e->retries = series_get(st, FAM_UP_RETRIES, labels);
    e->refused = series_get(st, FAM_UP_RETRIES_REFUSED, labels);
    st->eps[id] = e;
    return e;
}

/* Remove series s from st's list and free it (owner thread, no scrape reads it meanwhile). */
static void series_remove(struct pf_stats *st, struct series *s)
{
    pthread_mutex_lock(&st->lock);
    for (unsigned i = 0; i < st->n_series; i++) {
        if (st->series[i] == s) {
            st->series[i] = st->series[--st->n_series];
            break;
        }
    }
    pthread_mutex_unlock(&st->lock);
    for (unsigned k = 0; k < MAX_LABELS; k++)
        free(s->labels[k]);
    free(s);
}

/* Forget the endpoint series cached at id: its requests series go (duration and
 * retries are per upstream and stay). */
static void ep_stats_drop(struct pf_stats *st, unsigned id)
{
    struct ep_stats *e = st->eps[id];

    for (unsigned i = 0; i < e->codes.cap; i++) {
        if (e->codes.keys[i] != 0)
            series_remove(st, e->codes.vals[i]);
    }
    itab_free(&e->codes);
    free(e->upstream);
    free(e->endpoint);
    free(e);
    st->eps[id] = NULL;
}

void pf_stats_prune_endpoints(struct pf_stats *st)
{
    for (unsigned id = 0; id < st->n_eps; id++) {
        if (st->eps[id] != NULL && st->eps[id]->gen != pf_endpoint_gen(id))
            ep_stats_drop(st, id);
    }
}

/* The table key of an error code: above every status. */
#define ERROR_KEY(e) (1000u + (uint32_t)(e))

void pf_stats_upstream_count(struct pf_stats *st, unsigned ep_id, const char *upstream,
                             const char *endpoint, int status, enum pf_error error, uint64_t us)
{
    struct ep_stats *e = ep_get(st, ep_id, upstream, endpoint);
    bool is_status = status >= 100 && status <= 999;
    uint32_t key = is_status ? (uint32_t)status : ERROR_KEY(error);
    struct series *s = itab_get(&e->codes, key);

    if (s == NULL) {
        char num[8];
        const char *labels[MAX_LABELS] = {e->upstream, e->endpoint, num};

        if (is_status)
            snprintf(num, sizeof(num), "%d", status);
        else
            labels[2] = pf_error_name(error);
        s = series_get(st, FAM_UP_REQUESTS, labels);
        itab_put(&e->codes, key, s);
    }
    add(&s->v[0], 1);
    observe(st, e->duration, us);
}

void pf_stats_upstream_retry(struct pf_stats *st, unsigned ep_id, const char *upstream,
                             const char *endpoint)
{
    add(&ep_get(st, ep_id, upstream, endpoint)->retries->v[0], 1);
}

void pf_stats_upstream_report(struct pf_tx *tx, int outcome)
{
    const struct pf_endpoint *ep = pf_endpoint_get(tx->endpoint_id);
    int status = 0;

    if (tx->w->stats == NULL)
        return;
    if (outcome == PF_OUTCOME_OK && tx->uc != NULL)
        status = (int)tx->uc->status;
    pf_stats_upstream_count(tx->w->stats, ep->id, ep->upstream, ep->addr.text, status,
                            pf_error_of_outcome(outcome), pf_now_us() - tx->t_up_start);
}

void pf_stats_upstream_retried(struct pf_tx *tx)
{
    const struct pf_endpoint *ep = pf_endpoint_get(tx->endpoint_id);

    if (tx->w->stats != NULL)
        pf_stats_upstream_retry(tx->w->stats, ep->id, ep->upstream, ep->addr.text);
}

void pf_stats_upstream_retry_refused(struct pf_tx *tx)
{
    const struct pf_endpoint *ep = pf_endpoint_get(tx->endpoint_id);

    if (tx->w->stats != NULL)
        add(&ep_get(tx->w->stats, ep->id, ep->upstream, ep->addr.text)->refused->v[0], 1);
}

/* ---- exposition: helpers ---- */

/* name{k1="v1",...[,le="le"]} (no braces without labels). */
static void put_name(struct evbuffer *out, const char *name, const char *suffix,
                     const char *const *keys, const char *const *vals, const char *le)
{
    bool any = false;

    evbuffer_add_printf(out, "%s%s", name, suffix);
    for (unsigned k = 0; k < MAX_LABELS && keys[k] != NULL; k++) {
        evbuffer_add_printf(out, "%s%s=\"", any ? "," : "{", keys[k]);
        pf_stats_label_escape(out, vals[k]);
        evbuffer_add(out, "\"", 1);
        any = true;
    }
    if (le != NULL) {
        evbuffer_add_printf(out, "%sle=\"%s\"", any ? "," : "{", le);
        any = true;
    }
    if (any)
        evbuffer_add(out, "}", 1);
}

static void put_u64(struct evbuffer *out, uint64_t v)
{
    evbuffer_add_printf(out, " %llu\n", (unsigned long long)v);
}

/* ---- exposition: the registry ---- */

static int series_cmp(const void *a, const void *b)
{
    const struct series *x = *(const struct series *const *)a;
    const struct series *y = *(const struct series *const *)b;

    if (x->fam != y->fam)
        return x->fam < y->fam ? -1 : 1;
    for (unsigned k = 0; k < MAX_LABELS && fams[x->fam].labels[k] != NULL; k++) {
        int c = strcmp(x->labels[k], y->labels[k]);

        if (c != 0)
            return c;
    }
    return 0;
}

static void put_hist(struct evbuffer *out, const struct pf_stats *st, const struct series *s,
                     const uint64_t *acc)
{
    const struct fam_desc *f = &fams[s->fam];
    const char *const *vals = (const char *const *)s->labels;
    uint64_t cum = 0, count = acc[0];

    for (unsigned i = 0; i < st->n_bounds; i++) {
        cum += acc[2 + i];
        put_name(out, f->name, "_bucket", f->labels, vals, st->le[i]);
        put_u64(out, cum);
    }
    /* a racy read may see a bucket before its count: keep the histogram monotonic */
    if (count < cum)
        count = cum;
    put_name(out, f->name, "_bucket", f->labels, vals, "+Inf");
    put_u64(out, count);
    put_name(out, f->name, "_sum", f->labels, vals, NULL);
    evbuffer_add_printf(out, " %llu.%06llu\n", (unsigned long long)(acc[1] / 1000000),
                        (unsigned long long)(acc[1] % 1000000));
    put_name(out, f->name, "_count", f->labels, vals, NULL);
    put_u64(out, count);
}

/*
 * Copy every series pointer of the n stats, taking each lock and keeping it
 * until render_series is done: an owner may free a pruned series only under
 * its lock, so none of the copied pointers goes away while they are read.
 */
static struct series **collect(struct pf_stats *const *st, unsigned n, unsigned *total)
{
    struct series **all = NULL;
    unsigned len = 0;

    for (unsigned i = 0; i < n; i++) {
        pthread_mutex_lock(&st[i]->lock);
        all = pf_xrealloc(all, (len + st[i]->n_series + 1) * sizeof(*all));
        if (st[i]->n_series > 0)
            memcpy(all + len, st[i]->series, st[i]->n_series * sizeof(*all));
        len += st[i]->n_series;
    }
    *total = len;
    return all;
}

void pf_stats_render_series(struct pf_stats *const *st, unsigned n, struct evbuffer *out)
{
    unsigned total = 0, i = 0;
    struct series **all = collect(st, n, &total);
    uint64_t acc[2 + PF_METRICS_MAX_BUCKETS];

    if (total > 0)
        qsort(all, total, sizeof(*all), series_cmp);
    for (unsigned f = 0; f < FAM_MAX; f++) {
        const struct fam_desc *d = &fams[f];
        unsigned n_vals = d->hist && n > 0 ? 2 + st[0]->n_bounds : 1;

        put_head(out, d->name, d->hist ? "histogram" : "counter", d->help);
        while (i < total && all[i]->fam == f) {
            const struct series *first = all[i];

            memset(acc, 0, sizeof(acc));
            for (; i < total && series_cmp(&all[i], &first) == 0; i++) {
                for (unsigned k = 0; k < n_vals; k++)
                    acc[k] += get(&all[i]->v[k]);
            }
            if (d->hist) {
                put_hist(out, st[0], first, acc);
            } else {
                put_name(out, d->name, "", d->labels, (const char *const *)first->labels, NULL);
                put_u64(out, acc[0]);
            }
        }
    }
    free(all);
    for (unsigned k = 0; k < n; k++)
        pthread_mutex_unlock(&st[k]->lock);
}

/* ---- exposition: the rest of the process ---- */

static void render_endpoints(const struct pf_config *cfg, struct evbuffer *out)
{
    static const char *const keys[MAX_LABELS] = {"upstream", "endpoint"};
    static const char *const names[2] = {"pilotfish_upstream_connections_active",
                                         "pilotfish_upstream_connections_idle"};
    static const char *const helps[2] = {
        "Upstream connections carrying a request, all workers.",
        "Upstream keep-alive connections open and waiting in a pool, all workers."};

    put_head(
        out, "pilotfish_upstream_endpoints", "gauge",
        "Endpoints pilotfish keeps: listed by a configuration in use or with connections open.");
    put_sample(out, "pilotfish_upstream_endpoints", NULL, NULL, pf_endpoint_count());
    for (unsigned which = 0; which < 2; which++) {
        put_head(out, names[which], "gauge", helps[which]);
        for (unsigned u = 0; u < cfg->n_upstreams; u++) {
            const struct pf_upstream_conf *up = &cfg->upstreams[u];

            for (unsigned e = 0; e < up->n_endpoints && up->endpoint_ids != NULL; e++) {
                struct pf_endpoint *ep = pf_endpoint_get(up->endpoint_ids[e]);
                unsigned active = atomic_load_explicit(&ep->active, memory_order_relaxed);
                unsigned open = atomic_load_explicit(&ep->open, memory_order_relaxed);
                const char *vals[MAX_LABELS] = {up->name, ep->addr.text};

                put_name(out, names[which], "", keys, vals, NULL);
                put_u64(out, which == 0 ? active : open > active ? open - active : 0);
            }
        }
    }
}

static void render_errors(const struct pf_server *s, struct evbuffer *out)
{
    put_head(out, "pilotfish_errors_total", "counter",
             "Errors pilotfish answered or cut itself, by error code.");
    for (unsigned e = 0; e < PF_ERR_MAX; e++) {
        uint64_t sum = 0;

        if (!pf_error_has_series(e))
            continue;
        /* per-worker counters (the admin API's own errors are left out) */
        for (unsigned i = 0; i < s->n_workers; i++)
            sum += pf_counter_get(&s->workers[i].errors[e]);
        put_sample(out, "pilotfish_errors_total", "error", pf_error_name(e), sum);
    }
}

/* Every registered filter's families, with the running snapshot's conf and pstate. */
static void render_filters(const struct pf_config *cfg, struct evbuffer *out)
{
    const struct pf_filter_ops *ops;

    for (unsigned i = 0; (ops = pf_filter_at(i)) != NULL; i++) {
        const struct pf_filter_inst *f = NULL;

        if (ops->metrics == NULL)
            continue;
        for (unsigned k = 0; k < cfg->n_filters && f == NULL; k++) {
            if (cfg->filters[k].ops == ops)
                f = &cfg->filters[k];
        }
        ops->metrics(f != NULL ? f->conf : NULL, f != NULL ? f->pstate : NULL, out);
    }
}

static void render_server(struct pf_server *s, struct evbuffer *out)
{
    const char *vals[MAX_LABELS] = {PF_VERSION};
    const char *keys[MAX_LABELS] = {"version"};

    put_head(out, "pilotfish_build_info", "gauge", "Always 1; the version is in the label.");
    put_name(out, "pilotfish_build_info", "", keys, vals, NULL);
    put_u64(out, 1);
    put_head(out, "pilotfish_http_connections_active", "gauge",
             "Client connections open, all workers.");
    put_sample(out, "pilotfish_http_connections_active", NULL, NULL,
               atomic_load_explicit(&s->live_conns, memory_order_relaxed));
    put_head(out, "pilotfish_config_reloads_total", "counter",
             "Configuration reloads (SIGHUP or POST /reload), by result.");
    put_sample(out, "pilotfish_config_reloads_total", "result", "success", s->reloads_ok);
    put_sample(out, "pilotfish_config_reloads_total", "result", "failure", s->reloads_failed);
    put_head(out, "pilotfish_config_last_reload_success_timestamp_seconds", "gauge",
             "Unix time of the last successful configuration load (the start counts).");
    put_sample(out, "pilotfish_config_last_reload_success_timestamp_seconds", NULL, NULL,
               s->last_reload_ok_s);
}

/* Boot time in seconds since the epoch, from /proc/stat (0 when unknown). */
static unsigned long long boot_time(void)
{
    FILE *f = fopen("/proc/stat", "r");
    char line[256];
    unsigned long long btime = 0;

    if (f == NULL)
        return 0;
    while (fgets(line, sizeof(line), f) != NULL) {
        if (sscanf(line, "btime %llu", &btime) == 1)
            break;
    }
    fclose(f);
    return btime;
}

static unsigned open_fds(void)
{
    DIR *d = opendir("/proc/self/fd");
    struct dirent *e;
    unsigned n = 0;

    if (d == NULL)
        return 0;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] != '.')
            n++;
    }
    closedir(d);
    return n > 0 ? n - 1 : 0; /* not the directory's own descriptor */
}

struct proc_stat {
    unsigned long utime;          /* clock ticks */
    unsigned long stime;          /* clock ticks */
    unsigned long long starttime; /* clock ticks after boot */
    unsigned long vsize;          /* bytes */
    long rss;                     /* pages */
};

static int read_proc_stat(struct proc_stat *ps)
{
    FILE *f = fopen("/proc/self/stat", "r");
    char buf[1024];
    size_t len;
    const char *p;

    if (f == NULL)
        return -1;
    len = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[len] = '\0';
    p = strrchr(buf, ')'); /* the command name may hold spaces and parentheses */
    if (p == NULL || sscanf(p + 2,
                            "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu %*d %*d %*d %*d "
                            "%*d %*d %llu %lu %ld",
                            &ps->utime, &ps->stime, &ps->starttime, &ps->vsize, &ps->rss) != 5)
        return -1;
    return 0;
}

static void render_process(struct evbuffer *out)
{
    struct proc_stat ps;
    struct rlimit rl;
    double tck = (double)sysconf(_SC_CLK_TCK);
    unsigned long long btime = boot_time();

    if (read_proc_stat(&ps) == 0) {
        put_head(out, "process_cpu_seconds_total", "counter",
                 "User and system CPU time spent, in seconds.");
        evbuffer_add_printf(out, "process_cpu_seconds_total %.2f\n",
                            (double)(ps.utime + ps.stime) / tck);
        put_head(out, "process_resident_memory_bytes", "gauge", "Resident memory size in bytes.");
        put_sample(out, "process_resident_memory_bytes", NULL, NULL,
                   (uint64_t)ps.rss * (uint64_t)sysconf(_SC_PAGESIZE));
        put_head(out, "process_virtual_memory_bytes", "gauge", "Virtual memory size in bytes.");
        put_sample(out, "process_virtual_memory_bytes", NULL, NULL, ps.vsize);
        if (btime > 0) {
            put_head(out, "process_start_time_seconds", "gauge",
                     "Start time of the process since the Unix epoch, in seconds.");
            evbuffer_add_printf(out, "process_start_time_seconds %.2f\n",
                                (double)btime + (double)ps.starttime / tck);
        }
    }
    put_head(out, "process_open_fds", "gauge", "Open file descriptors.");
    put_sample(out, "process_open_fds", NULL, NULL, open_fds());
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY) {
        put_head(out, "process_max_fds", "gauge", "Limit on open file descriptors.");
        put_sample(out, "process_max_fds", NULL, NULL, rl.rlim_cur);
    }
}

void pf_stats_render(struct pf_server *s, struct evbuffer *out)
{
    struct pf_stats **all = pf_xcalloc(s->n_workers + 1, sizeof(*all));
    unsigned n = 0;

    for (unsigned i = 0; i < s->n_workers; i++) {
        if (s->workers[i].stats != NULL)
            all[n++] = s->workers[i].stats;
    }
    if (s->admin.stats != NULL)
        all[n++] = s->admin.stats;
    render_server(s, out);
    if (n > 0)
        pf_stats_render_series(all, n, out);
    render_endpoints(s->cfg, out);
    pf_breaker_render_metrics(s->cfg, out);
    pf_health_render(s->cfg, out);
    render_errors(s, out);
    pf_slo_render(s, out);
    render_filters(s->cfg, out);
    pf_splice_render(out);
    render_process(out);
    free(all);
}
