/*
 * filters/cache/object.c: immutable, reference-counted cache objects. A
 * finished object is one allocation (struct, header table, tag table,
 * strings, body) so that its charged size is close to what malloc really
 * holds, and a hit can hand the body to an evbuffer by reference.
 */
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <event2/buffer.h>

#include "filters/cache/store.h"
#include "proxy/arena.h"
#include "proxy/hdrs.h"

/* What malloc keeps per allocation beyond the bytes asked for (header + rounding). */
#define PF_COBJ_ALLOC_OVERHEAD 16
#define PF_COBJ_MMAP_THRESHOLD (128 * 1024)

/* When rfc.c is linked, its rule decides which headers a 304 updates; else the fallback below. */
extern bool pf_cache_header_updated_by_304(const char *name) __attribute__((weak));

static atomic_long live_objects;

/*
 * The builder keeps every string in one growing buffer (offsets, not
 * pointers, so it can grow), with small inline first buffers: building a
 * typical object costs the builder, its body and the object, nothing per
 * header.
 */
#define INL_STR  512
#define INL_HDRS 16
#define INL_TAGS 4

struct pf_cobj_builder {
    int status;
    bool failed; /* went over max_body: finish returns NULL */
    struct pf_cache_meta meta;
    size_t max_body; /* 0 = no limit */
    char *str;       /* key \0 variant \0 (name \0 value \0)* (tag \0)* */
    size_t str_len, str_cap, var_off;
    size_t *hdr_off; /* two per header: name, value */
    unsigned n_hdrs, cap_hdrs;
    size_t head_len; /* of the serialised head block (pf_cobj_head) */
    size_t *tag_off;
    unsigned n_tags, cap_tags;
    unsigned char *body;
    size_t body_len, body_cap;
    char inl_str[INL_STR];
    size_t inl_hdr[2 * INL_HDRS];
    size_t inl_tag[INL_TAGS];
};

/* Append len bytes of s and a NUL to the string buffer; returns their offset. */
static size_t add_str(struct pf_cobj_builder *b, const char *s, size_t len)
{
    size_t off = b->str_len;

    if (b->str_len + len + 1 > b->str_cap) {
        size_t cap = b->str_cap * 2;

        while (cap < b->str_len + len + 1)
            cap *= 2;
        if (b->str == b->inl_str) {
            b->str = pf_xmalloc(cap);
            memcpy(b->str, b->inl_str, b->str_len);
        } else {
            b->str = pf_xrealloc(b->str, cap);
        }
        b->str_cap = cap;
    }
    memcpy(b->str + off, s, len);
    b->str[off + len] = '\0';
    b->str_len += len + 1;
    return off;
}

/* Make room for one more element in an array that starts inline. */
static size_t *grow_offs(size_t *a, const size_t *inl, unsigned *cap, size_t per)
{
    size_t *n;

    if (a != inl) {
        *cap *= 2;
        return pf_xrealloc(a, *cap * per * sizeof(size_t));
    }
    n = pf_xmalloc(*cap * 2 * per * sizeof(size_t));
    memcpy(n, inl, *cap * per * sizeof(size_t));
    *cap *= 2;
    return n;
}

struct pf_cobj_builder *pf_cobj_builder_new(const char *key, const char *variant, int status,
                                            const struct pf_cache_meta *meta, size_t max_body)
{
    struct pf_cobj_builder *b = pf_xmalloc(sizeof(*b));

    b->status = status;
    b->failed = false;
    if (meta)
        b->meta = *meta;
    else
        memset(&b->meta, 0, sizeof(b->meta));
    b->max_body = max_body;
    b->str = b->inl_str;
    b->str_len = 0;
    b->str_cap = INL_STR;
    b->hdr_off = b->inl_hdr;
    b->n_hdrs = 0;
    b->head_len = 0;
    b->cap_hdrs = INL_HDRS;
    b->tag_off = b->inl_tag;
    b->n_tags = 0;
    b->cap_tags = INL_TAGS;
    b->body = NULL;
    b->body_len = b->body_cap = 0;
    key = key ? key : "";
    variant = variant ? variant : "";
    add_str(b, key, strlen(key));
    b->var_off = add_str(b, variant, strlen(variant));
    return b;
}

void pf_cobj_builder_header(struct pf_cobj_builder *b, const char *name, const char *value)
{
    size_t n, nl = strlen(name), vl;

    if (b->n_hdrs == b->cap_hdrs)
        b->hdr_off = grow_offs(b->hdr_off, b->inl_hdr, &b->cap_hdrs, 2);
    value = value ? value : "";
    vl = strlen(value);
    n = add_str(b, name, nl);
    b->hdr_off[2 * b->n_hdrs] = n;
    b->hdr_off[2 * b->n_hdrs + 1] = add_str(b, value, vl);
    b->head_len += nl + vl + 4; /* "name: value\r\n" */
    b->n_hdrs++;
}

static void builder_tag(struct pf_cobj_builder *b, const char *tag, size_t len)
{
    if (b->n_tags == b->cap_tags)
        b->tag_off = grow_offs(b->tag_off, b->inl_tag, &b->cap_tags, 1);
    b->tag_off[b->n_tags++] = add_str(b, tag, len);
}

void pf_cobj_builder_tags(struct pf_cobj_builder *b, const char *v)
{
    while (v && *v) {
        size_t n;

        v += strspn(v, " \t");
        n = strcspn(v, " \t");
        if (n > 0)
            builder_tag(b, v, n);
        v += n;
    }
}

static bool body_room(struct pf_cobj_builder *b, size_t len)
{
    size_t need;

    if (b->failed)
        return false;
    if (b->max_body && (len > b->max_body || b->body_len > b->max_body - len)) {
        /* Abandon, never truncate: drop what we have so far. */
        b->failed = true;
        free(b->body);
        b->body = NULL;
        b->body_len = b->body_cap = 0;
        return false;
    }
    need = b->body_len + len;
    if (need > b->body_cap) {
        size_t cap = b->body_cap ? b->body_cap : 4096;

        while (cap < need)
            cap *= 2;
        if (b->max_body && cap > b->max_body)
            cap = b->max_body;
        b->body = pf_xrealloc(b->body, cap);
        b->body_cap = cap;
    }
    return true;
}

bool pf_cobj_builder_body(struct pf_cobj_builder *b, struct evbuffer *buf)
{
    size_t len = evbuffer_get_length(buf);

    if (!body_room(b, len))
        return false;
    if (len > 0 && evbuffer_copyout(buf, b->body + b->body_len, len) != (ev_ssize_t)len)
        return false;
    b->body_len += len;
    return true;
}

bool pf_cobj_builder_body_bytes(struct pf_cobj_builder *b, const void *data, size_t len)
{
    if (!body_room(b, len))
        return false;
    if (len > 0)
        memcpy(b->body + b->body_len, data, len);
    b->body_len += len;
    return true;
}

void pf_cobj_builder_abandon(struct pf_cobj_builder *b)
{
    if (!b)
        return;
    if (b->str != b->inl_str)
        free(b->str);
    if (b->hdr_off != b->inl_hdr)
        free(b->hdr_off);
    if (b->tag_off != b->inl_tag)
        free(b->tag_off);
    free(b->body);
    free(b);
}

/*
 * What malloc really holds for an allocation of n bytes: small ones are
 * rounded to 16 bytes with a header, large ones (the store fixes glibc's mmap
 * threshold at 128 KiB) take whole pages.
 */
static size_t charge_of(size_t n)
{
    if (n >= PF_COBJ_MMAP_THRESHOLD)
        return (n + PF_COBJ_ALLOC_OVERHEAD + 4095) & ~(size_t)4095;
    return ((n + 15) & ~(size_t)15) + PF_COBJ_ALLOC_OVERHEAD;
}

struct head_block {
    size_t len;
    struct pf_hdr *fields; /* o's fields as header-list entries (their strings in o) */
    unsigned n;
    unsigned body_len_len;
    char body_len[24]; /* o->body_len in decimal */
    char data[];
};

/* Where a head block's entries start (after len bytes of text, aligned). */
static size_t fields_at(size_t len)
{
    return (sizeof(struct head_block) + len + _Alignof(struct pf_hdr) - 1) &
           ~(_Alignof(struct pf_hdr) - 1);
}

/* The bytes of the head block of len bytes of text and n fields. */
static size_t head_block_size(size_t len, unsigned n)
{
    return fields_at(len) + n * sizeof(struct pf_hdr);
}

struct pf_cobj *pf_cobj_builder_finish(struct pf_cobj_builder *b, int64_t now)
{
    struct pf_cobj *o = NULL;
    size_t tables, total;
    const char **tags;
    char *str;
    unsigned i;

    if (b->failed)
        goto out;
    tables = sizeof(*o) + b->n_hdrs * sizeof(struct pf_chdr) + b->n_tags * sizeof(char *);
    total = tables + b->str_len + b->body_len;
    o = pf_xmalloc(total);
    memset(o, 0, sizeof(*o));
    o->hdrs = (struct pf_chdr *)(o + 1);
    tags = (const char **)(o->hdrs + b->n_hdrs);
    str = (char *)o + tables;
    memcpy(str, b->str, b->str_len);
    o->key = str;
    o->variant = str + b->var_off;
    for (i = 0; i < b->n_hdrs; i++) {
        o->hdrs[i].name = str + b->hdr_off[2 * i];
        o->hdrs[i].value = str + b->hdr_off[2 * i + 1];
    }
    for (i = 0; i < b->n_tags; i++)
        tags[i] = str + b->tag_off[i];
    o->body = (const unsigned char *)str + b->str_len;
    if (b->body_len)
        memcpy((unsigned char *)o->body, b->body, b->body_len);
    o->body_len = b->body_len;
    o->n_hdrs = b->n_hdrs;
    o->tags = tags;
    o->n_tags = b->n_tags;
    o->status = b->status;
    o->meta = b->meta;
    /* and the head block the first hit makes (pf_cobj_head): charged from the start, so that
     * objects do not outgrow memory as they are served */
    o->size = charge_of(total) + charge_of(head_block_size(b->head_len, b->n_hdrs));
    o->stored_at = now;
    atomic_init(&o->refs, 1);
    atomic_fetch_add(&live_objects, 1);
out:
    pf_cobj_builder_abandon(b);
    return o;
}

struct pf_cobj *pf_cobj_ref(struct pf_cobj *o)
{
    if (o)
        atomic_fetch_add_explicit(&o->refs, 1, memory_order_relaxed);
    return o;
}

static struct head_block not_plain; /* pf_cobj_head's answer for "no block" */

void pf_cobj_unref(struct pf_cobj *o)
{
    struct head_block *h;

    if (!o)
        return;
    if (atomic_fetch_sub_explicit(&o->refs, 1, memory_order_acq_rel) == 1) {
        atomic_fetch_sub(&live_objects, 1);
        h = atomic_load_explicit(&o->head, memory_order_relaxed);
        if (h != &not_plain)
            free(h);
        free(o);
    }
}

static struct head_block *head_make(const struct pf_cobj *o,
                                    bool (*plain)(const char *, const char *))
{
    struct head_block *h;
    size_t len = 0, n = 0;

    for (unsigned i = 0; i < o->n_hdrs; i++) {
        if (!plain(o->hdrs[i].name, NULL))
            return &not_plain;
        len += strlen(o->hdrs[i].name) + strlen(o->hdrs[i].value) + 4;
    }
    /* the entries follow the text, aligned */
    h = pf_xmalloc(head_block_size(len, o->n_hdrs));
    h->fields = (struct pf_hdr *)((char *)h + fields_at(len));
    for (unsigned i = 0; i < o->n_hdrs; i++) {
        size_t nl = strlen(o->hdrs[i].name), vl = strlen(o->hdrs[i].value);

        memcpy(h->data + n, o->hdrs[i].name, nl);
        memcpy(h->data + n + nl, ": ", 2);
        memcpy(h->data + n + nl + 2, o->hdrs[i].value, vl);
        memcpy(h->data + n + nl + 2 + vl, "\r\n", 2);
        n += nl + vl + 4;
        h->fields[i] = (struct pf_hdr){.name = o->hdrs[i].name,
                                       .value = o->hdrs[i].value,
                                       .name_len = (uint32_t)nl,
                                       .value_len = (uint32_t)vl,
                                       .id = pf_hdr_classify(o->hdrs[i].name, nl)};
    }
    h->len = len;
    h->n = o->n_hdrs;
    h->body_len_len = (unsigned)snprintf(h->body_len, sizeof(h->body_len), "%zu", o->body_len);
    return h;
}

bool pf_cobj_wire(struct pf_cobj *o, bool (*plain)(const char *name, const char *conn),
                  struct pf_cobj_wire *w)
{
    struct head_block *h = atomic_load_explicit(&o->head, memory_order_acquire);
    void *none = NULL;

    if (h == NULL) {
        h = head_make(o, plain);
        /* another thread may have made it meanwhile: keep the first, drop ours */
        if (!atomic_compare_exchange_strong_explicit(&o->head, &none, h, memory_order_acq_rel,
                                                     memory_order_acquire)) {
            if (h != &not_plain)
                free(h);
            h = none;
        }
    }
    if (h == &not_plain)
        return false;
    w->raw = h->data;
    w->len = h->len;
    w->fields = h->fields;
    w->n = h->n;
    w->body_len = h->body_len;
    w->body_len_len = h->body_len_len;
    return true;
}

const char *pf_cobj_head(struct pf_cobj *o, bool (*plain)(const char *name, const char *conn),
                         size_t *len)
{
    struct pf_cobj_wire w;

    if (!pf_cobj_wire(o, plain, &w))
        return NULL;
    *len = w.len;
    return w.raw;
}

long pf_cobj_live(void)
{
    return atomic_load(&live_objects);
}

const char *pf_cobj_header(const struct pf_cobj *o, const char *name)
{
    unsigned i;

    for (i = 0; i < o->n_hdrs; i++) {
        if (strcasecmp(o->hdrs[i].name, name) == 0)
            return o->hdrs[i].value;
    }
    return NULL;
}

/*
 * The fields a 304 never replaces (RFC 9111 §3.2): framing, hop-by-hop, Age,
 * and those the stored body depends on. The same list as rfc.c's, for when
 * only the store is linked (its unit test).
 */
static bool updated_by_304(const char *name)
{
    static const char *const keep[] = {"content-length",
                                       "transfer-encoding",
                                       "connection",
                                       "keep-alive",
                                       "te",
                                       "trailer",
                                       "upgrade",
                                       "proxy-connection",
                                       "age",
                                       "content-encoding",
                                       "content-range",
                                       "proxy-authenticate",
                                       "proxy-authorization",
                                       "proxy-authentication-info"};
    size_t i;

    if (pf_cache_header_updated_by_304)
        return pf_cache_header_updated_by_304(name);
    for (i = 0; i < sizeof(keep) / sizeof(keep[0]); i++) {
        if (strcasecmp(name, keep[i]) == 0)
            return false;
    }
    return true;
}

static bool in_304(const struct pf_chdr *h, unsigned n, const char *name)
{
    unsigned i;

    for (i = 0; i < n; i++) {
        if (strcasecmp(h[i].name, name) == 0 && updated_by_304(name))
            return true;
    }
    return false;
}

/* Emit the 304's lines named name (once, at the first stored line of that name). */
static void add_304_lines(struct pf_cobj_builder *b, const struct pf_chdr *h, unsigned n,
                          const char *name)
{
    unsigned i;

    for (i = 0; i < n; i++) {
        if (strcasecmp(h[i].name, name) == 0)
            pf_cobj_builder_header(b, h[i].name, h[i].value);
    }
}

struct pf_cobj *pf_cobj_updated(const struct pf_cobj *o, const struct pf_chdr *hdrs304, unsigned n,
                                const struct pf_cache_meta *meta, int64_t now)
{
    return pf_cobj_updated_if(o, hdrs304, n, meta, now, NULL, NULL);
}

struct pf_cobj *pf_cobj_updated_if(const struct pf_cobj *o, const struct pf_chdr *hdrs304,
                                   unsigned n, const struct pf_cache_meta *meta, int64_t now,
                                   pf_cobj_keep_fn keep, void *arg)
{
    struct pf_cobj_builder *b = pf_cobj_builder_new(o->key, o->variant, o->status, meta, 0);
    unsigned i, j;

    for (i = 0; i < o->n_hdrs; i++) {
        const char *name = o->hdrs[i].name;
        bool first = true;

        if (keep != NULL && !in_304(hdrs304, n, name) && !keep(arg, name))
            continue;
        if (!in_304(hdrs304, n, name)) {
            pf_cobj_builder_header(b, name, o->hdrs[i].value);
            continue;
        }
        for (j = 0; j < i; j++) {
            if (strcasecmp(o->hdrs[j].name, name) == 0)
                first = false;
        }
        if (first)
            add_304_lines(b, hdrs304, n, name);
    }
    for (i = 0; i < n; i++) {
        bool seen = false;

        if (!updated_by_304(hdrs304[i].name) || pf_cobj_header(o, hdrs304[i].name))
            continue;
        for (j = 0; j < i; j++) {
            if (strcasecmp(hdrs304[j].name, hdrs304[i].name) == 0)
                seen = true;
        }
        if (!seen)
            add_304_lines(b, hdrs304, n, hdrs304[i].name);
    }
    for (i = 0; i < o->n_tags; i++)
        builder_tag(b, o->tags[i], strlen(o->tags[i]));
    pf_cobj_builder_body_bytes(b, o->body, o->body_len);
    return pf_cobj_builder_finish(b, now);
}

static void body_cleanup(const void *data, size_t len, void *arg)
{
    (void)data;
    (void)len;
    pf_cobj_unref(arg);
}

int pf_cobj_body_to(struct pf_cobj *o, struct evbuffer *out, size_t from, size_t len)
{
    if (from > o->body_len || len > o->body_len - from)
        return -1;
    if (len == 0)
        return 0;
    pf_cobj_ref(o);
    if (evbuffer_add_reference(out, o->body + from, len, body_cleanup, o) != 0) {
        pf_cobj_unref(o);
        return -1;
    }
    return 0;
}

/*
 * Wire format v1 (integers little-endian):
 *   u8 version | u32 status | i64 stored_at | u32 meta size + meta bytes |
 *   str key | str variant | u32 n_hdrs + (str name, str value)* |
 *   u32 n_tags + str* | u64 body length + body | u64 FNV-1a of all before
 * where str = u32 length + bytes (no NUL). The checksum catches any single
 * changed byte; the reader still checks every length against what is left.
 */
struct wbuf {
    unsigned char *p;
    size_t len, cap;
};

static void w_bytes(struct wbuf *w, const void *data, size_t n)
{
    if (w->len + n > w->cap) {
        while (w->len + n > w->cap)
            w->cap = w->cap ? w->cap * 2 : 256;
        w->p = pf_xrealloc(w->p, w->cap);
    }
    if (n)
        memcpy(w->p + w->len, data, n);
    w->len += n;
}

static void w_u(struct wbuf *w, uint64_t v, unsigned bytes)
{
    unsigned char b[8];
    unsigned i;

    for (i = 0; i < bytes; i++)
        b[i] = (unsigned char)(v >> (8 * i));
    w_bytes(w, b, bytes);
}

static void w_str(struct wbuf *w, const char *s)
{
    size_t n = strlen(s);

    w_u(w, n, 4);
    w_bytes(w, s, n);
}

static uint64_t fnv1a(const unsigned char *p, size_t n)
{
    uint64_t h = 1469598103934665603ULL;
    size_t i;

    for (i = 0; i < n; i++) {
        h ^= p[i];
        h *= 1099511628211ULL;
    }
    return h;
}

void pf_cobj_serialize(const struct pf_cobj *o, struct evbuffer *out)
{
    struct wbuf w = {0};
    unsigned i;

    w_u(&w, PF_COBJ_WIRE_VERSION, 1);
    w_u(&w, (uint32_t)o->status, 4);
    w_u(&w, (uint64_t)o->stored_at, 8);
    w_u(&w, sizeof(o->meta), 4);
    w_bytes(&w, &o->meta, sizeof(o->meta));
    w_str(&w, o->key);
    w_str(&w, o->variant);
    w_u(&w, o->n_hdrs, 4);
    for (i = 0; i < o->n_hdrs; i++) {
        w_str(&w, o->hdrs[i].name);
        w_str(&w, o->hdrs[i].value);
    }
    w_u(&w, o->n_tags, 4);
    for (i = 0; i < o->n_tags; i++)
        w_str(&w, o->tags[i]);
    w_u(&w, o->body_len, 8);
    w_bytes(&w, o->body, o->body_len);
    w_u(&w, fnv1a(w.p, w.len), 8);
    evbuffer_add(out, w.p, w.len);
    free(w.p);
}

struct rbuf {
    const unsigned char *p;
    size_t left;
    bool bad;
};

static uint64_t r_u(struct rbuf *r, unsigned bytes)
{
    uint64_t v = 0;
    unsigned i;

    if (r->bad || r->left < bytes) {
        r->bad = true;
        return 0;
    }
    for (i = 0; i < bytes; i++)
        v |= (uint64_t)r->p[i] << (8 * i);
    r->p += bytes;
    r->left -= bytes;
    return v;
}

/* A string of the wire as a fresh NUL-terminated copy, or NULL (bad: embedded NUL, too long). */
static char *r_str(struct rbuf *r)
{
    uint64_t n = r_u(r, 4);
    char *s;

    if (r->bad || n > r->left || memchr(r->p, '\0', n)) {
        r->bad = true;
        return NULL;
    }
    s = pf_xmalloc(n + 1);
    memcpy(s, r->p, n);
    s[n] = '\0';
    r->p += n;
    r->left -= n;
    return s;
}

/* Every bool of the meta must be 0 or 1 and the ETag NUL-terminated, or reading it is undefined. */
static bool meta_valid(const struct pf_cache_meta *m)
{
    static const size_t bools[] = {
        offsetof(struct pf_cache_meta, cc.no_store),
        offsetof(struct pf_cache_meta, cc.no_cache),
        offsetof(struct pf_cache_meta, cc.no_cache_fields),
        offsetof(struct pf_cache_meta, cc.private_),
        offsetof(struct pf_cache_meta, cc.private_fields),
        offsetof(struct pf_cache_meta, cc.public_),
        offsetof(struct pf_cache_meta, cc.must_revalidate),
        offsetof(struct pf_cache_meta, cc.proxy_revalidate),
        offsetof(struct pf_cache_meta, cc.only_if_cached),
        offsetof(struct pf_cache_meta, cc.no_transform),
        offsetof(struct pf_cache_meta, cc.immutable),
        offsetof(struct pf_cache_meta, cc.must_understand),
        offsetof(struct pf_cache_meta, cc.invalid),
        offsetof(struct pf_cache_meta, has_etag),
        offsetof(struct pf_cache_meta, weak_etag),
        offsetof(struct pf_cache_meta, vary_star),
    };
    const unsigned char *raw = (const unsigned char *)m;
    size_t i;

    for (i = 0; i < sizeof(bools) / sizeof(bools[0]); i++) {
        if (raw[bools[i]] > 1)
            return false;
    }
    return memchr(m->etag, '\0', sizeof(m->etag)) != NULL;
}

static bool r_head(struct rbuf *r, struct pf_cache_meta *meta, int *status, int64_t *stored_at)
{
    uint64_t st;

    if (r_u(r, 1) != PF_COBJ_WIRE_VERSION)
        return false;
    st = r_u(r, 4);
    *stored_at = (int64_t)r_u(r, 8);
    if (r_u(r, 4) != sizeof(*meta) || r->left < sizeof(*meta))
        return false;
    memcpy(meta, r->p, sizeof(*meta));
    r->p += sizeof(*meta);
    r->left -= sizeof(*meta);
    if (r->bad || st < 100 || st > 999 || !meta_valid(meta))
        return false;
    *status = (int)st;
    return true;
}

/* Headers, tags and body into b; false on anything malformed. */
static bool r_rest(struct rbuf *r, struct pf_cobj_builder *b, size_t max_body)
{
    uint64_t n, i, blen;

    n = r_u(r, 4);
    if (r->bad || n > r->left / 8)
        return false;
    for (i = 0; i < n; i++) {
        char *name = r_str(r), *value = r_str(r);
        bool ok = name && value && *name;

        if (ok)
            pf_cobj_builder_header(b, name, value);
        free(name);
        free(value);
        if (!ok)
            return false;
    }
    n = r_u(r, 4);
    if (r->bad || n > r->left / 4)
        return false;
    for (i = 0; i < n; i++) {
        char *tag = r_str(r);
        bool ok = tag && *tag && !strpbrk(tag, " \t");

        if (ok)
            builder_tag(b, tag, strlen(tag));
        free(tag);
        if (!ok)
            return false;
    }
    blen = r_u(r, 8);
    if (r->bad || blen != r->left || (max_body && blen > max_body))
        return false;
    return pf_cobj_builder_body_bytes(b, r->p, (size_t)blen);
}

struct pf_cobj *pf_cobj_deserialize(const void *data, size_t len, size_t max_body)
{
    struct rbuf r = {.p = data, .left = len};
    struct pf_cobj_builder *b;
    struct pf_cache_meta meta;
    char *key = NULL, *variant = NULL;
    int64_t stored_at = 0;
    int status = 0;
    uint64_t sum;

    if (!data || len < 1 + 8)
        return NULL;
    r.left -= 8;
    sum = (uint64_t)r.p[r.left];
    for (unsigned i = 1; i < 8; i++)
        sum |= (uint64_t)r.p[r.left + i] << (8 * i);
    if (sum != fnv1a(r.p, r.left) || !r_head(&r, &meta, &status, &stored_at))
        return NULL;
    key = r_str(&r);
    variant = r_str(&r);
    if (!key || !variant || !*key) {
        free(key);
        free(variant);
        return NULL;
    }
    b = pf_cobj_builder_new(key, variant, status, &meta, max_body);
    free(key);
    free(variant);
    if (!r_rest(&r, b, max_body)) {
        pf_cobj_builder_abandon(b);
        return NULL;
    }
    return pf_cobj_builder_finish(b, stored_at);
}
