/*
 * Cache keys (RFC 9111 §2, §4.1): the primary key of a request (scheme, host
 * normalised, path, query less the ignored parameters) and the variant key
 * of the request headers a stored response's Vary names.
 */
#include "filters/cache/rfc.h"

#include <fnmatch.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "filters/cache/rfc-int.h"

#define MAX_VARY     32 /* distinct names in Vary */
#define VARY_NAME_SZ 64 /* longest Vary member name kept */

/* ---- Vary and the variant key (RFC 9111 §4.1) ---- */

/* An output buffer that remembers when something did not fit. */
struct out {
    char *p;
    size_t size;
    size_t len;
    bool over;
};

static void put(struct out *o, const char *s, size_t n)
{
    if (o->over || o->len + n >= o->size) {
        o->over = true;
        return;
    }
    memcpy(o->p + o->len, s, n);
    o->len += n;
    o->p[o->len] = '\0';
}

/* put() of s[0..n) lower-cased, in one step */
static void put_lower(struct out *o, const char *s, size_t n)
{
    if (o->over || o->len + n >= o->size) {
        o->over = true;
        return;
    }
    for (size_t i = 0; i < n; i++)
        o->p[o->len + i] = lower(s[i]);
    o->len += n;
    o->p[o->len] = '\0';
}

static int cmp_name(const void *a, const void *b)
{
    return strcmp((const char *)a, (const char *)b);
}

/* The lower-cased, sorted, distinct names of the Vary lines; -1 for "*" or a name we cannot key. */
static int vary_names(const char *const *lines, unsigned n, char names[][VARY_NAME_SZ])
{
    int count = 0;

    for (unsigned i = 0; i < n; i++) {
        const char *p = lines[i];
        const char *s;
        const char *e;
        while (next_member(&p, &s, &e)) {
            size_t l = (size_t)(e - s);
            if (l >= VARY_NAME_SZ || count == MAX_VARY)
                return -1;
            for (size_t k = 0; k < l; k++) {
                if (!is_tchar(s[k]) || (l == 1 && s[k] == '*'))
                    return -1;
                names[count][k] = lower(s[k]);
            }
            names[count][l] = '\0';
            count++;
        }
    }
    qsort(names, (size_t)count, VARY_NAME_SZ, cmp_name);
    int w = 0;
    for (int r = 0; r < count; r++)
        if (w == 0 || strcmp(names[w - 1], names[r]) != 0)
            memmove(names[w++], names[r], VARY_NAME_SZ);
    return w;
}

/* "name=v1, v2\n" (members trimmed, empty ones dropped), or "name\n" when the request lacks it. */
static void put_variant(struct out *o, const char *name, pf_cache_hdr_fn get, void *arg)
{
    const char *lines[MAX_LINES];
    unsigned n = get(arg, name, lines, MAX_LINES);
    bool first = true;

    put(o, name, strlen(name));
    if (n > 0)
        put(o, "=", 1);
    for (unsigned i = 0; i < n; i++) {
        const char *p = lines[i];
        const char *s;
        const char *e;
        while (next_member(&p, &s, &e)) {
            if (!first)
                put(o, ", ", 2);
            put(o, s, (size_t)(e - s));
            first = false;
        }
    }
    put(o, "\n", 1);
}

bool pf_cache_variant_key(const char *const *vary_lines, unsigned n_vary, pf_cache_hdr_fn req_get,
                          void *req_arg, char *out, size_t size)
{
    char names[MAX_VARY][VARY_NAME_SZ];
    struct out o = {out, size, 0, size == 0};
    int n = vary_names(vary_lines, n_vary, names);

    if (size > 0)
        out[0] = '\0';
    if (n < 0)
        return false;
    for (int i = 0; i < n; i++)
        put_variant(&o, names[i], req_get, req_arg);
    return !o.over;
}

/* ---- the primary key ---- */

/*
 * host lower-cased, without the scheme's default port (leading zeros of the port ignored) and
 * without the trailing dot of a fully qualified name ("x." and "x" are one host, RFC 3986 §3.2.2)
 */
static void put_host(struct out *o, const char *scheme, const char *host)
{
    size_t n = strlen(host), name_len = n;
    const char *colon = strrchr(host, ':');
    const char *bracket = strrchr(host, ']');
    const char *port = NULL;

    if (colon != NULL && (bracket == NULL || colon > bracket)) {
        name_len = (size_t)(colon - host);
        port = colon + 1;
        while (*port == '0' && port[1] != '\0')
            port++;
        if ((strcasecmp(scheme, "http") == 0 && strcmp(port, "80") == 0) ||
            (strcasecmp(scheme, "https") == 0 && strcmp(port, "443") == 0) || port[0] == '\0')
            port = NULL;
    }
    if (name_len > 1 && host[name_len - 1] == '.')
        name_len--;
    put_lower(o, host, name_len);
    if (port != NULL) {
        put(o, ":", 1);
        put(o, port, strlen(port));
    }
}

static bool ignored(const char *s, const char *e, const char *const *globs, unsigned n)
{
    char name[256];
    const char *eq = memchr(s, '=', (size_t)(e - s));
    size_t l = (size_t)((eq != NULL ? eq : e) - s);

    if (n == 0 || l >= sizeof(name))
        return false;
    memcpy(name, s, l);
    name[l] = '\0';
    for (unsigned i = 0; i < n; i++)
        if (globs[i] != NULL && fnmatch(globs[i], name, 0) == 0)
            return true;
    return false;
}

/* The query [q, end): its parameters in their order, without the ignored ones. */
static void put_query(struct out *o, const char *q, const char *end, const char *const *globs,
                      unsigned n)
{
    bool any = false;
    bool dropped = false;
    size_t mark = o->len;

    put(o, "?", 1);
    if (n == 0) { /* nothing to drop: the query as it is, parameter by parameter the same bytes */
        put(o, q, (size_t)(end - q));
        return;
    }
    for (;;) {
        const char *e = memchr(q, '&', (size_t)(end - q));
        if (e == NULL)
            e = end;
        if (ignored(q, e, globs, n)) {
            dropped = true;
        } else {
            if (any)
                put(o, "&", 1);
            put(o, q, (size_t)(e - q));
            any = true;
        }
        if (e == end)
            break;
        q = e + 1;
    }
    if (!any && dropped && !o->over) {
        o->len = mark; /* every parameter was ignored: no query at all */
        o->p[mark] = '\0';
    }
}

size_t pf_cache_key(const char *scheme, const char *host, const char *target,
                    const char *const *ignore_query, unsigned n_ignore, char *out, size_t size)
{
    struct out o = {out, size, 0, size == 0};
    const char *q;
    const char *hash;
    size_t plen;

    if (size > 0)
        out[0] = '\0';
    scheme = scheme != NULL ? scheme : "http";
    put_lower(&o, scheme, strlen(scheme));
    put(&o, "://", 3);
    put_host(&o, scheme, host != NULL ? host : "");
    target = target != NULL ? target : "/";
    hash = strchr(target, '#');
    q = strchr(target, '?');
    if (q != NULL && hash != NULL && hash < q)
        q = NULL;
    plen = (size_t)((q != NULL ? q : hash != NULL ? hash : target + strlen(target)) - target);
    put(&o, target, plen);
    if (q != NULL)
        put_query(&o, q + 1, hash != NULL ? hash : q + strlen(q), ignore_query, n_ignore);
    return o.over ? 0 : o.len;
}

size_t pf_cache_strip_query(const char *target, const char *const *ignore_query, unsigned n_ignore,
                            char *out, size_t size)
{
    struct out o = {out, size, 0, size == 0};
    const char *q = strchr(target, '?');
    const char *hash = strchr(target, '#');

    if (size > 0)
        out[0] = '\0';
    if (q != NULL && hash != NULL && hash < q)
        q = NULL;
    put(&o, target,
        (size_t)((q != NULL      ? q
                  : hash != NULL ? hash
                                 : target + strlen(target)) -
                 target));
    if (q != NULL)
        put_query(&o, q + 1, hash != NULL ? hash : q + strlen(q), ignore_query, n_ignore);
    return o.over ? 0 : o.len;
}
