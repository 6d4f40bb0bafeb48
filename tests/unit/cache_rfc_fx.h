/*
 * The fixtures of the rfc.c unit tests (test_cache_rfc.c, test_cache_rfc_fields.c): fake header
 * sets with "@N" dates (the IMF-fixdate of NOW + N seconds), a response's meta, a Cache-Control.
 */
#ifndef PF_TEST_CACHE_RFC_FX_H
#define PF_TEST_CACHE_RFC_FX_H

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "filters/cache/rfc.h"

#define NOW   INT64_C(1700000000) /* 2023-11-14 22:13:20 GMT */
#define A     PF_CC_ABSENT
#define ANY   PF_CC_ANY
#define CAP   INT64_C(2147483648)
#define NHDR  12
#define NLINE 4

/* ---- fake header sets ---- */

/* "Name: value" lines; values "@N" become the HTTP-date of NOW + N. */
struct hdrs {
    const char *h[NHDR];
    char buf[NHDR][64];
};

static inline unsigned hdr_get(void *arg, const char *name, const char **lines, unsigned max)
{
    struct hdrs *hs = arg;
    unsigned n = 0;
    size_t l = strlen(name);

    for (unsigned i = 0; i < NHDR && hs->h[i] != NULL && n < max; i++) {
        const char *v = hs->h[i];
        if (strncasecmp(v, name, l) != 0 || v[l] != ':')
            continue;
        v += l + 1;
        while (*v == ' ')
            v++;
        if (v[0] == '@') {
            pf_http_date_fmt(NOW + strtoll(v + 1, NULL, 10), hs->buf[i]);
            v = hs->buf[i];
        }
        lines[n++] = v;
    }
    return n;
}

/* A response head of status with headers h, asked for at NOW - 1 and received at NOW. */
static inline void meta_of(struct pf_cache_meta *m, int status, const char *const *h,
                           const char *targeted)
{
    struct hdrs hs = {0};

    for (unsigned i = 0; i < NHDR && h[i] != NULL; i++)
        hs.h[i] = h[i];
    pf_cache_meta_from_headers(m, status, hdr_get, &hs, targeted, NOW - 1, NOW);
}

static inline void cc_of(struct pf_cc *cc, const char *line)
{
    const char *lines[1] = {line};

    pf_cc_parse(cc, lines, line != NULL ? 1 : 0);
}

#endif /* PF_TEST_CACHE_RFC_FX_H */
