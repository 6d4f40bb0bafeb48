/*
 * Routing. See proxy/route.h; the rules are in docs/configuration.md (routes).
 */
#include "proxy/route.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "proxy/arena.h"
#include "proxy/conf.h"
#include "proxy/hdrs.h"
#include "proxy/tx-t.h"

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    c = (char)(c | 0x20);
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1;
}

static char upper(char c)
{
    return c >= 'a' && c <= 'z' ? (char)(c - 'a' + 'A') : c;
}

/* unreserved (RFC 3986 §2.3) */
static bool is_unreserved(unsigned char c)
{
    return (c >= '0' && c <= '9') || ((c | 0x20) >= 'a' && (c | 0x20) <= 'z') || c == '-' ||
           c == '.' || c == '_' || c == '~';
}

static bool is_triplet(const char *p, size_t i, size_t len)
{
    return p[i] == '%' && i + 2 < len && hexval(p[i + 1]) >= 0 && hexval(p[i + 2]) >= 0;
}

/* Percent-decoding pass into d (never longer than the input); -1 on double encoding. */
static ssize_t decode(const char *p, size_t len, char *d)
{
    size_t n = 0;

    for (size_t i = 0; i < len; i++) {
        unsigned char v;

        if (!is_triplet(p, i, len)) {
            d[n++] = p[i] == '\\' ? '/' : p[i];
            continue;
        }
        v = (unsigned char)(hexval(p[i + 1]) * 16 + hexval(p[i + 2]));
        if (v == '%' && i + 4 < len && hexval(p[i + 3]) >= 0 && hexval(p[i + 4]) >= 0)
            return -1; /* "%2561": decoded twice, it would be "a" */
        if (is_unreserved(v)) {
            d[n++] = (char)v;
        } else if (v == '/' || v == '\\') {
            d[n++] = '/';
        } else {
            d[n++] = '%';
            d[n++] = upper(p[i + 1]);
            d[n++] = upper(p[i + 2]);
        }
        i += 2;
    }
    return (ssize_t)n;
}

/* Length of the segment's name: up to its ";params". */
static size_t seg_name_len(const char *s, size_t len)
{
    const char *semi = memchr(s, ';', len);

    return semi != NULL ? (size_t)(semi - s) : len;
}

/* Dot-segment removal (RFC 3986 §5.2.4) over d[0..n), which starts with '/'. */
static size_t remove_dots(const char *d, size_t n, char *out)
{
    char *o = out;

    for (size_t i = 0; i < n;) {
        size_t start = i + 1, end = start, name;
        bool dot, dotdot;

        while (end < n && d[end] != '/')
            end++;
        if (end == start && end < n) {
            i = end; /* "//": an empty segment is nothing ("..": must remove a real one) */
            continue;
        }
        name = seg_name_len(d + start, end - start);
        dot = name == 1 && d[start] == '.';
        dotdot = name == 2 && d[start] == '.' && d[start + 1] == '.';
        if (dotdot) {
            while (o > out && *--o != '/')
                ;
        } else if (!dot) {
            *o++ = '/';
            memcpy(o, d + start, end - start);
            o += end - start;
        }
        i = end;
        if ((dot || dotdot) && i == n)
            *o++ = '/'; /* "/a/b/.." is "/a/" */
    }
    if (o == out)
        *o++ = '/';
    *o = '\0';
    return (size_t)(o - out);
}

ssize_t pf_route_normalize(const char *path, size_t len, char *out)
{
    char stack[512];
    char *d = len <= sizeof(stack) ? stack : pf_xmalloc(len);
    ssize_t n = decode(path, len, d);
    ssize_t r = -1;

    if (n > 0 && d[0] == '/')
        r = (ssize_t)remove_dots(d, (size_t)n, out);
    if (d != stack)
        free(d);
    return r;
}

size_t pf_route_strip_params(char *s, size_t len)
{
    size_t j = 0;
    bool param = false;

    for (size_t i = 0; i < len; i++) {
        if (s[i] == '/')
            param = false;
        else if (s[i] == ';')
            param = true;
        if (!param)
            s[j++] = s[i];
    }
    s[j] = '\0';
    return j;
}

static bool host_matches(const char *want, const char *host)
{
    size_t n;

    if (want == NULL)
        return true;
    if (host == NULL)
        return false;
    n = strcspn(host, ":");
    if (host[0] == '[')
        n = strcspn(host, "]") + 1;
    return strlen(want) == n && strncasecmp(want, host, n) == 0;
}

static const struct pf_route *route_find(const struct pf_tx *tx, const char *path, size_t len)
{
    const struct pf_config *cfg = tx->cfg;

    for (unsigned i = 0; i < cfg->n_routes; i++) {
        const struct pf_route *r = &cfg->routes[i];
        bool method_ok = r->methods.n == 0;

        if (len < r->prefix_len)
            continue;
        if (r->case_insensitive ? strncasecmp(path, r->prefix, r->prefix_len) != 0
                                : memcmp(path, r->prefix, r->prefix_len) != 0)
            continue;
        if (!host_matches(r->host, tx->host))
            continue;
        for (unsigned m = 0; m < r->methods.n && !method_ok; m++)
            method_ok = strcmp(r->methods.v[m], tx->method) == 0;
        if (method_ok)
            return r;
    }
    return NULL;
}

/* Nothing for pf_route_normalize() to change in url[0..len)? */
static bool path_is_plain(const char *url, size_t len)
{
    return memchr(url, '.', len) == NULL && memchr(url, '%', len) == NULL &&
           memchr(url, '\\', len) == NULL && memchr(url, ';', len) == NULL &&
           memmem(url, len, "//", 2) == NULL;
}

int pf_route_select(struct pf_tx *tx)
{
    const char *url = tx->url;
    size_t len = strcspn(url, "?");
    char *fwd, *match;
    ssize_t n;
    size_t mlen;

    if (strcmp(url, "*") == 0) {
        tx->route = route_find(tx, "/", 1); /* OPTIONS *: the server as a whole */
        return 0;
    }
    if (path_is_plain(url, len)) {
        tx->route = route_find(tx, url, len);
        return 0;
    }
    fwd = pf_arena_alloc_raw(tx->arena, len + 2);
    n = pf_route_normalize(url, len, fwd);
    if (n < 0)
        return -1;
    match = pf_arena_strndup(tx->arena, fwd, (size_t)n);
    mlen = pf_route_strip_params(match, (size_t)n);
    tx->route = route_find(tx, match, mlen);
    if (tx->route != NULL && tx->route->normalize == PF_NORMALIZE_FORWARD &&
        ((size_t)n != len || memcmp(fwd, url, len) != 0)) {
        /* the upstream gets the path the route matched (with its ;params) */
        size_t qlen = strlen(url + len);
        char *u = pf_arena_alloc_raw(tx->arena, (size_t)n + qlen + 1);

        memcpy(u, fwd, (size_t)n);
        memcpy(u + n, url + len, qlen + 1);
        tx->url = u;
    }
    return 0;
}
