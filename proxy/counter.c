/*
 * Per-thread counter cells (see pf_counter_set in proxy/stats.h) and the
 * exposition helpers that modules' metrics hooks use. Nothing here depends on
 * the rest of the core, so filters and their unit tests link it alone.
 */
#include <stdlib.h>

#include <event2/buffer.h>

#include "proxy/arena.h"
#include "proxy/stats.h"

struct pf_counter_cells {
    struct pf_counter_cells *next; /* immutable once linked */
    _Atomic uint64_t v[];          /* set->n counters; written by the owner thread only */
};

_Atomic uint64_t *pf_counter_cells(struct pf_counter_set *set)
{
    struct pf_counter_cells *c = pf_xcalloc(1, sizeof(*c) + set->n * sizeof(c->v[0]));

    c->next = atomic_load(&set->threads);
    while (!atomic_compare_exchange_weak(&set->threads, &c->next, c))
        ;
    return c->v;
}

uint64_t pf_counter_sum(struct pf_counter_set *set, unsigned i)
{
    uint64_t sum = 0;

    for (struct pf_counter_cells *c = atomic_load(&set->threads); c != NULL; c = c->next)
        sum += pf_counter_get(&c->v[i]);
    return sum;
}

/* ---- exposition helpers (here so that filters need nothing else of stats.c) ---- */

void pf_stats_label_escape(struct evbuffer *out, const char *s)
{
    const char *run = s;

    for (; *s != '\0'; s++) {
        const char *esc = *s == '\\' ? "\\\\" : *s == '"' ? "\\\"" : *s == '\n' ? "\\n" : NULL;

        if (esc == NULL)
            continue;
        evbuffer_add(out, run, (size_t)(s - run));
        evbuffer_add(out, esc, 2);
        run = s + 1;
    }
    evbuffer_add(out, run, (size_t)(s - run));
}

void pf_stats_put_head(struct evbuffer *out, const char *name, const char *type, const char *help)
{
    evbuffer_add_printf(out, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

void pf_stats_put_sample(struct evbuffer *out, const char *name, const char *key, const char *val,
                         uint64_t v)
{
    evbuffer_add_printf(out, "%s", name);
    if (key != NULL) {
        evbuffer_add_printf(out, "{%s=\"", key);
        pf_stats_label_escape(out, val);
        evbuffer_add(out, "\"}", 2);
    }
    evbuffer_add_printf(out, " %llu\n", (unsigned long long)v);
}

void pf_stats_put_one(struct evbuffer *out, const char *name, const char *type, const char *help,
                      uint64_t v)
{
    pf_stats_put_head(out, name, type, help);
    pf_stats_put_sample(out, name, NULL, NULL, v);
}
