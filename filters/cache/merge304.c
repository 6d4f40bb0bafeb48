/*
 * filters/cache/merge304.c: a 304 from revalidation merged into the stored
 * response it validated (RFC 9111 §3.2, §4.3.4): the 304's fields replace the
 * stored ones of their names, except those never updated and those the
 * merged response's Cache-Control withholds (a qualified no-cache="..." or
 * private="...", §5.2.2.4, §5.2.2.7), which are not stored from a 304 either.
 */
#include "filters/cache/cache-int.h"

#include <strings.h>

struct lines {
    const char *name;
    const char **v;
    unsigned n, max;
};

static int collect_line(void *arg, const char *name, const char *value)
{
    struct lines *l = arg;

    if (strcasecmp(name, l->name) == 0 && l->n < l->max)
        l->v[l->n++] = value;
    return 0;
}

struct merged {
    struct pf_tx *tx;
    const struct pf_cobj *o;
};

/* A header's lines of the 304 when it has them, else the stored ones (RFC 9111 §3.2). */
static unsigned merged_get(void *arg, const char *name, const char **lines, unsigned max)
{
    struct merged *m = arg;
    struct lines l = {name, lines, 0, max};
    unsigned n;

    pf_tx_resp_header_each(m->tx, collect_line, &l);
    n = l.n;
    /* the 304's Age describes the refreshed response: the one field not stored that counts */
    if (n > 0 && (strcasecmp(name, "age") == 0 || pf_cache_header_updated_by_304(name)))
        return n;
    n = 0;
    for (unsigned i = 0; i < m->o->n_hdrs && n < max; i++) {
        if (strcasecmp(m->o->hdrs[i].name, name) == 0)
            lines[n++] = m->o->hdrs[i].value;
    }
    return n;
}

/* The 304's fields merged into the stored response (pf_cache_304_field_merged), at most max. */
struct chdrs {
    struct merged *mg;
    const char *targeted, *conn;
    struct pf_chdr *v;
    unsigned n, max;
};

static int collect_chdr(void *arg, const char *name, const char *value)
{
    struct chdrs *h = arg;

    if (h->n < h->max && pf_cache_304_field_merged(merged_get, h->mg, h->targeted, h->conn, name)) {
        h->v[h->n].name = name;
        h->v[h->n].value = value;
        h->n++;
    }
    return 0;
}

/* A stored field stays unless the merged Cache-Control now withholds it (a pf_cobj_keep_fn). */
static bool stored_kept(void *arg, const char *name)
{
    struct chdrs *h = arg;

    return !pf_cache_field_withheld(merged_get, h->mg, h->targeted, name);
}

struct pf_cobj *pf_cache_merge_304(const struct pf_cache_conf *c, struct pf_tx *tx,
                                   const struct cache_ctx *x, int64_t now)
{
    struct merged mg = {tx, x->stale};
    const char *targeted = c->targeted_header[0] != '\0' ? c->targeted_header : NULL;
    struct chdrs h = {&mg, targeted, pf_tx_resp_header(tx, "connection"), NULL, 0, 128};
    struct pf_cache_meta m;

    h.v = pf_arena_alloc(pf_tx_arena(tx), h.max * sizeof(*h.v));
    pf_tx_resp_header_each(tx, collect_chdr, &h);
    pf_cache_meta_from_headers(&m, x->stale->status, merged_get, &mg, targeted, x->req_time, now);
    return pf_cobj_updated_if(x->stale, h.v, h.n, &m, now,
                              m.cc.no_cache_fields || m.cc.private_fields ? stored_kept : NULL, &h);
}
