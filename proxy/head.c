/*
 * Message heads: assembling names and values that http-parser delivers in
 * pieces, and the small HTTP helpers both sides of the engine share.
 */
#include "proxy/http1.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "proxy/arena.h"
#include "proxy/hdrs.h"
#include "proxy/tx.h"

/* ---- message heads ---- */

void pf_head_reset(struct pf_head *h)
{
    h->len = 0;
    h->url_len = 0;
    h->n = 0;
    h->last = 0;
    h->parsed = false;
}

/*
 * Per-thread (so per-worker) LIFO stacks of head buffers of the first size:
 * a head gives its buffers back once exported into the transaction's arena,
 * so an idle keep-alive connection holds none, and the next head takes the
 * most recently used (cache-hot) one without a malloc.
 */
#define HEAD_BUF_FIRST 1024u
#define HEAD_ENT_FIRST 16u

static __thread struct {
    void *buf[PF_HEAD_POOL_MAX];
    void *ent[PF_HEAD_POOL_MAX];
    unsigned n_buf;
    unsigned n_ent;
} head_pool;

void pf_head_free(struct pf_head *h)
{
    free(h->buf);
    free(h->ent);
    memset(h, 0, sizeof(*h));
}

void pf_head_release(struct pf_head *h)
{
    if (h->buf != NULL && h->cap == HEAD_BUF_FIRST && head_pool.n_buf < PF_HEAD_POOL_MAX) {
        head_pool.buf[head_pool.n_buf++] = h->buf;
        PF_POOL_POISON(h->buf, HEAD_BUF_FIRST);
        h->buf = NULL;
    }
    if (h->ent != NULL && h->cap_ent == HEAD_ENT_FIRST && head_pool.n_ent < PF_HEAD_POOL_MAX) {
        head_pool.ent[head_pool.n_ent++] = h->ent;
        PF_POOL_POISON(h->ent, HEAD_ENT_FIRST * sizeof(*h->ent));
        h->ent = NULL;
    }
    pf_head_free(h);
}

unsigned pf_head_pool_count(void)
{
    return head_pool.n_buf + head_pool.n_ent;
}

void pf_head_pool_drain(void)
{
    while (head_pool.n_buf > 0) {
        void *p = head_pool.buf[--head_pool.n_buf];

        PF_POOL_UNPOISON(p, HEAD_BUF_FIRST);
        free(p);
    }
    while (head_pool.n_ent > 0) {
        void *p = head_pool.ent[--head_pool.n_ent];

        PF_POOL_UNPOISON(p, HEAD_ENT_FIRST * sizeof(struct pf_head_ent));
        free(p);
    }
}

static void head_put(struct pf_head *h, const char *at, size_t len)
{
    if (h->len + len + 1 > h->cap) {
        uint32_t cap = h->cap ? h->cap : HEAD_BUF_FIRST;

        while (cap < h->len + len + 1)
            cap *= 2;
        if (h->cap == 0 && cap == HEAD_BUF_FIRST && head_pool.n_buf > 0) {
            h->buf = head_pool.buf[--head_pool.n_buf];
            PF_POOL_UNPOISON(h->buf, HEAD_BUF_FIRST);
        } else {
            h->buf = pf_xrealloc(h->buf, cap);
        }
        h->cap = cap;
    }
    memcpy(h->buf + h->len, at, len);
    h->len += len;
}

int pf_head_put_raw(struct pf_head *h, const char *at, size_t len, uint32_t limit)
{
    if (h->len + len > limit)
        return -1;
    head_put(h, at, len);
    return 0;
}

/* Room for n entries (the first size from this thread's pool). */
static void head_reserve(struct pf_head *h, unsigned n)
{
    if (n <= h->cap_ent)
        return;
    if (h->cap_ent == 0 && n <= HEAD_ENT_FIRST && head_pool.n_ent > 0) {
        h->ent = head_pool.ent[--head_pool.n_ent];
        PF_POOL_UNPOISON(h->ent, HEAD_ENT_FIRST * sizeof(*h->ent));
        h->cap_ent = HEAD_ENT_FIRST;
        return;
    }
    if (h->cap_ent == 0)
        h->cap_ent = HEAD_ENT_FIRST;
    while (h->cap_ent < n)
        h->cap_ent *= 2;
    h->ent = pf_xrealloc(h->ent, h->cap_ent * sizeof(*h->ent));
}

struct pf_head_ent *pf_head_ents(struct pf_head *h, unsigned n)
{
    head_reserve(h, n);
    return h->ent;
}

void pf_head_close(struct pf_head *h)
{
    head_put(h, "", 1);
}

int pf_head_append(struct pf_head *h, int what, const char *at, size_t len, uint32_t limit,
                   unsigned max_headers)
{
    if (h->len + len > limit)
        return -1;
    if (what != h->last) {
        if (h->last != 0)
            pf_head_close(h);
        if (what == PF_HEAD_FIELD) {
            if (h->n >= max_headers)
                return -2;
            head_reserve(h, h->n + 1);
            h->ent[h->n].name_off = h->len;
            h->ent[h->n].name_len = 0;
            h->ent[h->n].value_off = 0;
            h->ent[h->n].value_len = 0;
            h->n++;
        } else if (what == PF_HEAD_VALUE) {
            h->ent[h->n - 1].value_off = h->len;
        }
        h->last = what;
    }
    head_put(h, at, len);
    if (what == PF_HEAD_URL)
        h->url_len += len;
    else if (what == PF_HEAD_FIELD)
        h->ent[h->n - 1].name_len += len;
    else
        h->ent[h->n - 1].value_len += len;
    return 0;
}

void pf_head_export(const struct pf_head *h, struct pf_arena *a, struct pf_hdrs *out,
                    const char **url)
{
    char *copy = pf_arena_alloc_raw(a, h->len + 1);
    static const char empty[] = "";

    if (h->len > 0)
        memcpy(copy, h->buf, h->len);
    copy[h->len] = '\0';
    if (url != NULL)
        *url = copy;
    out->cap = h->n + 8;
    out->v = pf_arena_alloc_raw(a, out->cap * sizeof(*out->v));
    out->n = h->n;
    for (unsigned i = 0; i < h->n; i++) {
        const struct pf_head_ent *e = &h->ent[i];
        struct pf_hdr *d = &out->v[i];

        d->name = copy + e->name_off;
        d->name_len = e->name_len;
        /* a header with an empty value has no value callback */
        d->value = e->value_off ? copy + e->value_off : empty;
        d->value_len = e->value_len;
        if (h->parsed) {
            d->id = e->id; /* classified, values trimmed: in the parse's one pass */
            continue;
        }
        d->id = pf_hdr_classify(d->name, d->name_len);
        /* http-parser leaves trailing whitespace in values: trim it */
        while (d->value_len > 0 &&
               (d->value[d->value_len - 1] == ' ' || d->value[d->value_len - 1] == '\t'))
            ((char *)d->value)[--d->value_len] = '\0';
    }
}

const char *pf_http_reason(int status)
{
    switch (status) {
    case 100:
        return "Continue";
    case 101:
        return "Switching Protocols";
    case 103:
        return "Early Hints";
    case 200:
        return "OK";
    case 201:
        return "Created";
    case 202:
        return "Accepted";
    case 203:
        return "Non-Authoritative Information";
    case 204:
        return "No Content";
    case 206:
        return "Partial Content";
    case 301:
        return "Moved Permanently";
    case 302:
        return "Found";
    case 303:
        return "See Other";
    case 304:
        return "Not Modified";
    case 307:
        return "Temporary Redirect";
    case 308:
        return "Permanent Redirect";
    case 400:
        return "Bad Request";
    case 401:
        return "Unauthorized";
    case 403:
        return "Forbidden";
    case 404:
        return "Not Found";
    case 405:
        return "Method Not Allowed";
    case 408:
        return "Request Timeout";
    case 409:
        return "Conflict";
    case 410:
        return "Gone";
    case 413:
        return "Content Too Large";
    case 414:
        return "URI Too Long";
    case 417:
        return "Expectation Failed";
    case 429:
        return "Too Many Requests";
    case 431:
        return "Request Header Fields Too Large";
    case 500:
        return "Internal Server Error";
    case 501:
        return "Not Implemented";
    case 502:
        return "Bad Gateway";
    case 503:
        return "Service Unavailable";
    case 504:
        return "Gateway Timeout";
    default:
        return "Unknown";
    }
}

const char *pf_http_date(void)
{
    static __thread time_t last;
    static __thread char buf[40];
    time_t now = time(NULL);

    if (now != last) {
        struct tm tm;

        gmtime_r(&now, &tm);
        strftime(buf, sizeof(buf), "%a, %d %b %Y %H:%M:%S GMT", &tm);
        last = now;
    }
    return buf;
}
