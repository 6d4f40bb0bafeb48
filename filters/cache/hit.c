/*
 * filters/cache/hit.c: answering a request from a stored object (a hit): the
 * stored head borrowed from the object (its fields as prepared header-list
 * entries, its pre-serialised block), Age, Content-Length, Content-Range for
 * a Range, the client's own conditional answered 304, and the Cache-Status;
 * the body appended by reference.
 */
#include "filters/cache/cache-int.h"

#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "proxy/arena.h"
#include "proxy/filter.h"
#include "proxy/hdrs-t.h"
#include "filters/cache/store.h"

/* The Cache-Status of a hit, "pilotfish; hit; ttl=%lld%s" of ttl and extra, without printf. */
static void hit_status(struct pf_tx *tx, const struct cache_ctx *x, long long ttl,
                       const char *extra)
{
    static const char head[] = "pilotfish; hit; ttl=";
    char *buf = pf_arena_alloc_raw(pf_tx_arena(tx), STATUS_MAX); /* the field's value */
    size_t n = sizeof(head) - 1, el = strlen(extra);
    struct pf_hdr f = {.name = "Cache-Status", .name_len = 12, .value = buf, .id = PF_H_OTHER};

    memcpy(buf, head, n);
    n += fmt_ll(buf + n, ttl);
    if (el >= STATUS_MAX - n)
        el = STATUS_MAX - n - 1; /* cut as vsnprintf would (extra is a short literal) */
    memcpy(buf + n, extra, el);
    n += el;
    buf[n] = '\0';
    if (x->collapsed || x->debug_key) {
        pf_cache_status_line(tx, x, buf, (int)n);
        return;
    }
    f.value_len = (uint32_t)n;
    pf_tx_resp_fields_ref(tx, &f, 1);
}

/*
 * put_stored_head for an object with a block (pf_cobj_wire): its fields at once, the block for the
 * connection to write, then Age and Content-Length (len; the stored one when len is the body's).
 */
static void put_wire(struct pf_tx *tx, const struct pf_cobj_wire *w, int status, size_t len,
                     size_t body_len, int64_t age)
{
    char *num = pf_arena_alloc_raw(pf_tx_arena(tx), 48);
    struct pf_hdr f[2] = {
        {.name = "Age", .name_len = 3, .value = num, .id = PF_H_OTHER},
        {.name = "Content-Length", .name_len = 14, .value = w->body_len, .id = PF_H_CONTENT_LENGTH},
    };

    pf_tx_resp_fields_ref(tx, w->fields, w->n);
    pf_tx_resp_raw(tx, w->raw, w->len);
    f[0].value_len = (uint32_t)fmt_ll(num, (long long)age);
    f[1].value_len = w->body_len_len;
    if (len != body_len) {
        f[1].value = num + 24;
        f[1].value_len = (uint32_t)pf_fmt_u64(num + 24, len);
    }
    pf_tx_resp_fields_ref(tx, f, status != 304 && status != 204 ? 2 : 1);
}

/*
 * The stored head of o, Age and Content-Length (len), added to the response's (empty) head; the
 * stored fields are not copied: the transaction holds a reference on o until it ends.
 */
void pf_cache_put_stored_head(struct pf_tx *tx, struct pf_cobj *o, int status, size_t len,
                              int64_t now)
{
    char num[32];
    bool fixed = false; /* o has an Age or Content-Length (never stored, but L2 data is as read) */
    void (*put)(struct pf_tx *, const char *, const char *);
    struct pf_cobj_wire w;

    pf_arena_defer(pf_tx_arena(tx), pf_cache_unref_cb, pf_cobj_ref(o));
    /* a block means every field is stored as is, none of them an Age or a Content-Length */
    if (pf_cobj_wire(o, pf_cache_header_stored, &w)) {
        put_wire(tx, &w, status, len, o->body_len, pf_cache_age(&o->meta, now));
        return;
    }
    for (unsigned i = 0; i < o->n_hdrs; i++) {
        const char *name = o->hdrs[i].name;

        pf_tx_resp_header_add_ref(tx, name, o->hdrs[i].value);
        if (((name[0] | 0x20) == 'a' || (name[0] | 0x20) == 'c') &&
            (strcasecmp(name, "age") == 0 || strcasecmp(name, "content-length") == 0))
            fixed = true;
    }
    /* no delete scans unless o has one of the two */
    put = fixed ? pf_tx_resp_header_set : pf_cache_add_value;
    fmt_ll(num, (long long)pf_cache_age(&o->meta, now));
    put(tx, "Age", num);
    if (status != 304 && status != 204) {
        pf_fmt_u64(num, len);
        put(tx, "Content-Length", num);
    }
}

/* The range a GET for a stored 200 asks for; If-Range must name the stored strong ETag. */
static enum pf_cache_range range_of(struct pf_tx *tx, const struct pf_cobj *o, size_t *from,
                                    size_t *n)
{
    const char *r = pf_tx_req_header(tx, "range");
    const char *ir;

    if (r == NULL || o->status != 200 || pf_tx_is_head(tx))
        return PF_RANGE_NONE;
    ir = pf_tx_req_header(tx, "if-range");
    if (ir != NULL && (!o->meta.has_etag || o->meta.weak_etag || strcmp(ir, o->meta.etag) != 0))
        return PF_RANGE_NONE;
    return pf_cache_parse_range(r, o->body_len, from, n);
}

/* Does the client's own conditional match o (answered 304)? */
bool pf_cache_client_not_modified(const struct cache_ctx *x, const struct pf_cobj *o)
{
    if (x->client_inm == NULL && x->client_ims == NULL)
        return false;
    return (o->status == 200) && pf_cache_not_modified(x->client_inm, x->client_ims, &o->meta);
}

/* Answer tx from o (a hit), the whole body or one range of it: PF_REPLIED. */
enum pf_verdict pf_cache_serve(const struct pf_cache_conf *c, struct pf_tx *tx, struct cache_ctx *x,
                               struct pf_cobj *o, enum pf_cache_result r, const char *extra)
{
    int64_t now = now_s();
    int status = pf_cache_client_not_modified(x, o) ? 304 : o->status;
    size_t from = 0, n = o->body_len;
    enum pf_cache_range rg = status == 200 ? range_of(tx, o, &from, &n) : PF_RANGE_NONE;
    bool body = status != 304 && rg != PF_RANGE_UNSATISFIABLE && !pf_tx_is_head(tx) && n > 0;
    char cr[80];

    status = rg == PF_RANGE_OK ? 206 : rg == PF_RANGE_UNSATISFIABLE ? 416 : status;
    /* every field comes from o; the body is appended by reference, straight into the reply */
    if (body && pf_cobj_body_to(o, pf_tx_reply_bare(tx, status, NULL), from, n) != 0)
        return PF_FAILED;
    if (!body)
        pf_tx_reply_bare(tx, status, NULL);
    pf_cache_put_stored_head(tx, o, status, rg == PF_RANGE_UNSATISFIABLE ? 0 : n, now);
    if (rg != PF_RANGE_NONE) {
        if (rg == PF_RANGE_OK)
            snprintf(cr, sizeof(cr), "bytes %zu-%zu/%zu", from, from + n - 1, o->body_len);
        else
            snprintf(cr, sizeof(cr), "bytes */%zu", o->body_len);
        pf_tx_resp_header_set(tx, "Content-Range", cr);
    }
    hit_status(tx, x, pf_cache_ttl_of(c, o, now), extra);
    pf_cache_count(r, body ? n : 0);
    return PF_REPLIED;
}
