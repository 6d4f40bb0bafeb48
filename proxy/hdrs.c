/*
 * Header lists: classification of the names the core acts on, lookups,
 * arena-backed additions and removal.
 */
#include "proxy/hdrs.h"

#include <stdbool.h>
#include <stdint.h>
#include <string.h>
#include <strings.h>

#include "proxy/arena.h"

/*
 * Does the word of a name match the word of lower ignoring case? A byte of
 * lower with 0x40 set is a lower-case letter: the name's byte may differ in
 * the 0x20 bit only; any other byte (digit, '-') must be equal.
 */
static inline bool word_is(uint64_t name, uint64_t lower)
{
    return (name | ((lower & 0x4040404040404040ull) >> 1)) == lower;
}

/*
 * name equals lower (lower-case letters, digits, '-') ignoring case, compared
 * 8 or 4 bytes at a time (the last word overlapping the one before): a few
 * names a request, and with a constant len the compiler keeps only the words.
 */
static inline bool name_is(const char *name, const char *lower, size_t len)
{
    uint64_t n = 0, l = 0;
    uint32_t n4, l4;

    if (len >= 8) {
        for (size_t i = 0;; i = i + 16 <= len ? i + 8 : len - 8) {
            memcpy(&n, name + i, 8);
            memcpy(&l, lower + i, 8);
            if (!word_is(n, l))
                return false;
            if (i + 8 == len)
                return true;
        }
    }
    if (len >= 4) {
        memcpy(&n4, name, 4);
        memcpy(&l4, lower, 4);
        if (!word_is(n4, l4))
            return false;
        memcpy(&n4, name + len - 4, 4);
        memcpy(&l4, lower + len - 4, 4);
        return word_is(n4, l4);
    }
    memcpy(&n, name, len);
    memcpy(&l, lower, len);
    return word_is(n, l);
}

enum pf_hdr_id pf_hdr_classify(const char *name, size_t len)
{
    /* by length first: most names are rejected without a comparison */
    switch (len) {
    case 2:
        return name_is(name, "te", 2) ? PF_H_TE : PF_H_OTHER;
    case 4:
        if (name_is(name, "host", 4))
            return PF_H_HOST;
        return name_is(name, "date", 4) ? PF_H_DATE : PF_H_OTHER;
    case 6:
        return name_is(name, "expect", 6) ? PF_H_EXPECT : PF_H_OTHER;
    case 7:
        if (name_is(name, "trailer", 7))
            return PF_H_TRAILER;
        return name_is(name, "upgrade", 7) ? PF_H_UPGRADE : PF_H_OTHER;
    case 10:
        if (name_is(name, "connection", 10))
            return PF_H_CONNECTION;
        return name_is(name, "keep-alive", 10) ? PF_H_KEEP_ALIVE : PF_H_OTHER;
    case 11:
        return name_is(name, "traceparent", 11) ? PF_H_TRACEPARENT : PF_H_OTHER;
    case 12:
        return name_is(name, "x-request-id", 12) ? PF_H_X_REQUEST_ID : PF_H_OTHER;
    case 14:
        return name_is(name, "content-length", 14) ? PF_H_CONTENT_LENGTH : PF_H_OTHER;
    case 15:
        return name_is(name, "x-forwarded-for", 15) ? PF_H_X_FORWARDED_FOR : PF_H_OTHER;
    case 16:
        if (name_is(name, "proxy-connection", 16))
            return PF_H_PROXY_CONNECTION;
        return name_is(name, "x-forwarded-host", 16) ? PF_H_X_FORWARDED_HOST : PF_H_OTHER;
    case 17:
        if (name_is(name, "transfer-encoding", 17))
            return PF_H_TRANSFER_ENCODING;
        return name_is(name, "x-forwarded-proto", 17) ? PF_H_X_FORWARDED_PROTO : PF_H_OTHER;
    default:
        return PF_H_OTHER;
    }
}

const char *pf_hdrs_get_id(const struct pf_hdrs *h, enum pf_hdr_id id)
{
    for (unsigned i = 0; i < h->n; i++) {
        if (h->v[i].id == id)
            return h->v[i].value;
    }
    return NULL;
}

const char *pf_hdrs_get(const struct pf_hdrs *h, const char *name)
{
    size_t len = strlen(name);

    for (unsigned i = 0; i < h->n; i++) {
        /* the length first: most names are ruled out without a comparison */
        if (h->v[i].name_len == len && strncasecmp(h->v[i].name, name, len) == 0)
            return h->v[i].value;
    }
    return NULL;
}

void pf_hdrs_add(struct pf_arena *a, struct pf_hdrs *h, const char *name, const char *value)
{
    size_t nl = strlen(name), vl = strlen(value);

    pf_hdrs_add_ref(a, h, pf_arena_strndup(a, name, nl), nl, pf_arena_strndup(a, value, vl), vl);
}

/* Room for `more` entries after the n there are (not zeroed: every entry is written whole). */
static void reserve(struct pf_arena *a, struct pf_hdrs *h, unsigned more)
{
    unsigned cap = h->cap ? h->cap : 16;
    struct pf_hdr *v;

    if (h->n + more <= h->cap)
        return;
    while (cap < h->n + more)
        cap *= 2;
    v = pf_arena_alloc_raw(a, cap * sizeof(*v));
    if (h->n > 0)
        memcpy(v, h->v, h->n * sizeof(*v));
    h->v = v;
    h->cap = cap;
}

void pf_hdrs_add_many(struct pf_arena *a, struct pf_hdrs *h, const struct pf_hdr *v, unsigned n)
{
    if (n == 0)
        return;
    reserve(a, h, n);
    memcpy(h->v + h->n, v, n * sizeof(*v));
    h->n += n;
}

void pf_hdrs_add_ref(struct pf_arena *a, struct pf_hdrs *h, const char *name, size_t nl,
                     const char *value, size_t vl)
{
    if (h->n == h->cap)
        reserve(a, h, 1);
    h->v[h->n].name = name;
    h->v[h->n].name_len = (uint32_t)nl;
    h->v[h->n].value = value;
    h->v[h->n].value_len = (uint32_t)vl;
    h->v[h->n].id = pf_hdr_classify(name, nl);
    h->n++;
}

void pf_hdrs_del(struct pf_hdrs *h, const char *name)
{
    unsigned j = 0;

    for (unsigned i = 0; i < h->n; i++) {
        if (strcasecmp(h->v[i].name, name) != 0)
            h->v[j++] = h->v[i];
    }
    h->n = j;
}
