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

/*
 * "%25" followed by two hex digits in the decoded path d[0..n): decoded once
 * more it would be another character. Checked after decoding, so that a
 * split form ("%25%36%31", which decodes to "%2561") is caught as well.
 */
static bool double_encoded(const char *d, size_t n)
{
    for (size_t i = 0; i + 4 < n; i++) {
        if (d[i] == '%' && d[i + 1] == '2' && d[i + 2] == '5' && hexval(d[i + 3]) >= 0 &&
            hexval(d[i + 4]) >= 0)
            return true;
    }
    return false;
}

/*
 * A segment "." or ".." directly followed by an encoded ';' in the decoded
 * path d[0..n) (where decode() left it as "%3B"): "/api/..%3Bx/admin" is a
 * path under /api/ here, but "/admin" to an upstream that decodes "%3B"
 * before it reads ";params" and resolves dot segments.
 */
static bool dot_before_encoded_semi(const char *d, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        size_t s = i + 1;

        if (d[i] != '/' || s >= n || d[s] != '.')
            continue;
        if (s + 1 < n && d[s + 1] == '.')
            s++;
        if (s + 3 < n && memcmp(d + s + 1, "%3B", 3) == 0)
            return true;
    }
    return false;
}

static unsigned char triplet_val(const char *p, size_t i)
{
    return (unsigned char)(hexval(p[i + 1]) * 16 + hexval(p[i + 2]));
}

/*
 * The escape at p[i] decodes to a byte that has no place in a path: NUL, or
 * the start of an overlong UTF-8 form (C0 and C1 always, E0 before 80-9F, F0
 * before 80-8F). "%C0%AE" is an overlong '.' and "%C0%AF" an overlong '/': a
 * lenient decoder upstream would see dot segments or slashes matching never saw.
 */
static bool bad_escape(const char *p, size_t i, size_t len, unsigned char v)
{
    unsigned char next = is_triplet(p, i + 3, len) ? triplet_val(p, i + 3) : 0;

    return v == 0 || v == 0xC0 || v == 0xC1 || (v == 0xE0 && next >= 0x80 && next <= 0x9F) ||
           (v == 0xF0 && next >= 0x80 && next <= 0x8F);
}

/*
 * Percent-decoding pass into d (never longer than the input); -1 on double
 * encoding, on the escapes bad_escape() refuses and on a dot segment followed
 * by "%3B".
 */
static ssize_t decode(const char *p, size_t len, char *d)
{
    size_t n = 0;

    for (size_t i = 0; i < len; i++) {
        unsigned char v;

        if (!is_triplet(p, i, len)) {
            d[n++] = p[i] == '\\' ? '/' : p[i];
            continue;
        }
        v = triplet_val(p, i);
        if (bad_escape(p, i, len, v))
            return -1;
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
    /* "%2561": decoded twice, "a"; "..%3B": ".." or not, depending on the decoder */
    if (double_encoded(d, n) || dot_before_encoded_semi(d, n))
        return -1;
    return (ssize_t)n;
}

/* Length of the segment's name: up to its ";params". */
static size_t seg_name_len(const char *s, size_t len)
{
    const char *semi = memchr(s, ';', len);

    return semi != NULL ? (size_t)(semi - s) : len;
}

/*
 * Dot-segment removal (RFC 3986 §5.2.4) over d[0..n), which starts with '/'.
 * *odd is set when a dot segment or a segment of only ";params" was seen.
 */
static size_t remove_dots(const char *d, size_t n, char *out, bool *odd)
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
        *odd = *odd || dot || dotdot || (name == 0 && end > start);
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

/*
 * pf_route_normalize(); *mixed is set when ";params" met dot segments or
 * params-only segments, where upstreams disagree on the path (see
 * pf_route_select).
 */
static ssize_t normalize(const char *path, size_t len, char *out, bool *mixed)
{
    char stack[512];
    char *d = len <= sizeof(stack) ? stack : pf_xmalloc(len);
    ssize_t n = decode(path, len, d);
    ssize_t r = -1;
    bool odd = false;

    if (n > 0 && d[0] == '/') {
        r = (ssize_t)remove_dots(d, (size_t)n, out, &odd);
        *mixed = odd && memchr(d, ';', (size_t)n) != NULL;
    }
    if (d != stack)
        free(d);
    return r;
}

ssize_t pf_route_normalize(const char *path, size_t len, char *out)
{
    bool mixed = false;

    return normalize(path, len, out, &mixed);
}

size_t pf_route_strip_params(char *s, size_t len)
{
    size_t j = 0;
    bool param = false;

    for (size_t i = 0; i < len; i++) {
        if (s[i] == '/') {
            param = false;
            if (j > 0 && s[j - 1] == '/')
                continue; /* "/;x/api": a segment that was only params is empty */
        } else if (s[i] == ';') {
            param = true;
        }
        if (!param)
            s[j++] = s[i];
    }
    s[j] = '\0';
    return j;
}

/* Length of the host name of h: without the port, and without a trailing '.' (an FQDN). */
static size_t host_name_len(const char *h)
{
    size_t n;

    if (h[0] == '[')
        return strcspn(h, "]") + 1;
    n = strcspn(h, ":");
    return n > 1 && h[n - 1] == '.' ? n - 1 : n;
}

static bool host_matches(const char *want, const char *host)
{
    size_t n;

    if (want == NULL)
        return true;
    if (host == NULL)
        return false;
    n = host_name_len(host);
    return host_name_len(want) == n && strncasecmp(want, host, n) == 0;
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

/* Bytes of a path: 1 pf_route_normalize() may act on, 2 '/' (when doubled), 3 its end. */
static const uint8_t path_class[256] = {
    ['.'] = 1, ['%'] = 1, ['\\'] = 1, [';'] = 1, ['/'] = 2, ['?'] = 3, ['\0'] = 3,
};

/*
 * The length of url's path (up to '?' or the end) and whether there is
 * nothing for pf_route_normalize() to change in it: one pass instead of a
 * search for each byte of interest (paths are short).
 */
static size_t path_scan(const char *url, bool *plain)
{
    const unsigned char *u = (const unsigned char *)url;
    bool p = true;
    size_t i;

    for (i = 0;; i++) {
        uint8_t k = path_class[u[i]];

        if (k == 0)
            continue;
        if (k == 3)
            break;
        if (k == 1 || u[i + 1] == '/') /* u[i + 1] is at worst the NUL */
            p = false;
    }
    *plain = p;
    return i;
}

int pf_route_select(struct pf_tx *tx)
{
    const char *url = tx->url;
    bool plain;
    size_t len = path_scan(url, &plain);
    char *fwd, *match;
    ssize_t n;
    size_t mlen;
    bool mixed = false;

    if (strcmp(url, "*") == 0) {
        tx->route = route_find(tx, "/", 1); /* OPTIONS *: the server as a whole */
        return 0;
    }
    if (plain) {
        tx->route = route_find(tx, url, len);
        return 0;
    }
    fwd = pf_arena_alloc_raw(tx->arena, len + 2);
    n = normalize(url, len, fwd, &mixed);
    if (n < 0)
        return -1;
    match = pf_arena_strndup(tx->arena, fwd, (size_t)n);
    mlen = pf_route_strip_params(match, (size_t)n);
    tx->route = route_find(tx, match, mlen);
    if (tx->route != NULL && tx->route->normalize == PF_NORMALIZE_MATCH_ONLY && mixed) {
        /*
         * Forwarded as received, ";params" with dot segments or params-only
         * segments read differently upstream ("/api/..;x/y" is "/y" here, a
         * path under /api/ where ';' is plain; "/x/;a/../y" is "/x/y" here,
         * "/y" where params go before dots are resolved): refused. Forwarding
         * the normalised path has no such ambiguity.
         */
        tx->route = NULL;
        return -1;
    }
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
