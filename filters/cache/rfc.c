/*
 * HTTP caching decisions (RFC 9111, 9110, 9213, 5861, 8246) as pure
 * functions. Every choice the RFCs leave open is made here, once, and
 * documented in docs/filters/cache.md ("What is cached, and for how long").
 */
#include "filters/cache/rfc.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "filters/cache/rfc-int.h"

#define DELTA_MAX INT64_C(2147483648) /* RFC 9111 §1.2.2: the cap of every delta-seconds */

/*
 * delta-seconds (RFC 9111 §1.2.2): one or more digits, nothing else.
 * Values past 2^31 become 2^31. Returns -1 when not a delta-seconds.
 */
static int64_t delta_seconds(const char *s, size_t n)
{
    int64_t v = 0;

    if (n == 0)
        return -1;
    for (size_t i = 0; i < n; i++) {
        if (!is_digit(s[i]))
            return -1;
        if (v < DELTA_MAX)
            v = v * 10 + (s[i] - '0');
    }
    return v > DELTA_MAX ? DELTA_MAX : v;
}

/* ---- Cache-Control (RFC 9111 §5.2) ---- */

/* One directive as split out of a field line. */
struct directive {
    const char *name;
    size_t nlen;
    bool has_value;
    bool bad;      /* the member did not follow the grammar (junk after it, open quote) */
    char val[128]; /* the value, unquoted; longer values are marked bad (a delta-seconds or */
    size_t vlen;   /* a list of field names fits) */
};

/* Read a quoted-string at *p (on the '"'); unescaped into d->val. False when unterminated. */
static bool read_quoted(const char **p, const char *e, struct directive *d)
{
    const char *q = *p + 1;

    while (q < e && *q != '"') {
        if (*q == '\\' && q + 1 < e)
            q++;
        if (d->vlen + 1 < sizeof(d->val))
            d->val[d->vlen] = *q;
        else
            d->bad = true;
        d->vlen++;
        q++;
    }
    if (q >= e)
        return false;
    *p = q + 1;
    if (d->vlen >= sizeof(d->val))
        d->vlen = sizeof(d->val) - 1;
    d->val[d->vlen] = '\0';
    return true;
}

/* Read a token value at *p into d->val. */
static void read_token(const char **p, const char *e, struct directive *d)
{
    const char *q = *p;

    while (q < e && is_tchar(*q))
        q++;
    d->vlen = (size_t)(q - *p);
    if (d->vlen >= sizeof(d->val)) {
        d->bad = true;
        d->vlen = sizeof(d->val) - 1;
    }
    memcpy(d->val, *p, d->vlen);
    d->val[d->vlen] = '\0';
    *p = q;
}

/*
 * Split the next member of a comma-separated directive list at *p into d.
 * Returns false at the end of the line. A member that breaks the grammar
 * (e.g. "max-age=1 x", "max-age =1", an open quote) is returned with
 * d->bad set, and parsing resumes after the next comma.
 */
static bool next_directive(const char **p, const char *e, struct directive *d)
{
    const char *q = *p;

    memset(d, 0, sizeof(*d));
    while (q < e && (is_ows(*q) || *q == ','))
        q++;
    if (q >= e)
        return false;
    d->name = q;
    while (q < e && is_tchar(*q))
        q++;
    d->nlen = (size_t)(q - d->name);
    if (d->nlen == 0)
        d->bad = true;
    if (q < e && *q == '=') {
        d->has_value = true;
        q++;
        if (q < e && *q == '"') {
            if (!read_quoted(&q, e, d))
                d->bad = true;
        } else {
            read_token(&q, e, d);
        }
    }
    while (q < e && is_ows(*q))
        q++;
    if (q < e && *q != ',') {
        d->bad = true;
        /*
         * Skip to the next comma, not honouring quotes: a stray quote in a
         * junk member must not hide the no-store or private after it.
         */
        while (q < e && *q != ',')
            q++;
    }
    *p = q;
    return true;
}

/* min() of two delta values where ABSENT means "not set". */
static int64_t most_restrictive_min(int64_t cur, int64_t v)
{
    return (cur == PF_CC_ABSENT || v < cur) ? v : cur;
}

/*
 * A delta-seconds directive. Duplicates keep the most restrictive value
 * (the smallest; the largest for min-fresh). A malformed max-age or
 * s-maxage sets cc->invalid (the response is then stale, a request
 * revalidates); other malformed deltas are ignored.
 */
static void apply_delta(struct pf_cc *cc, const struct directive *d, int64_t *field, bool freshness)
{
    int64_t v = (d->has_value && !d->bad) ? delta_seconds(d->val, d->vlen) : -1;

    if (v < 0) {
        if (freshness)
            cc->invalid = true;
        return;
    }
    if (field == &cc->min_fresh)
        *field = (*field == PF_CC_ABSENT || v > *field) ? v : *field;
    else
        *field = most_restrictive_min(*field, v);
}

/* A well-formed field-name list after no-cache= or private= (a malformed one is unqualified). */
static bool qualified(const struct directive *d)
{
    return d->has_value && !d->bad && d->vlen > 0;
}

static void apply_directive(struct pf_cc *cc, const struct directive *d)
{
    const char *n = d->name;
    size_t l = d->nlen;

    if (eq_ci(n, l, "max-age"))
        apply_delta(cc, d, &cc->max_age, true);
    else if (eq_ci(n, l, "s-maxage"))
        apply_delta(cc, d, &cc->s_maxage, true);
    else if (eq_ci(n, l, "min-fresh"))
        apply_delta(cc, d, &cc->min_fresh, false);
    else if (eq_ci(n, l, "stale-while-revalidate"))
        apply_delta(cc, d, &cc->swr, false);
    else if (eq_ci(n, l, "stale-if-error"))
        apply_delta(cc, d, &cc->sie, false);
    else if (eq_ci(n, l, "max-stale")) {
        if (!d->has_value && !d->bad)
            cc->max_stale = most_restrictive_min(cc->max_stale, PF_CC_ANY);
        else
            apply_delta(cc, d, &cc->max_stale, false);
    } else if (eq_ci(n, l, "no-store"))
        cc->no_store = true; /* whatever follows it: when in doubt, do not store */
    else if (eq_ci(n, l, "no-cache") && qualified(d))
        cc->no_cache_fields = true; /* the listed fields are not stored (RFC 9111 §5.2.2.4) */
    else if (eq_ci(n, l, "no-cache"))
        cc->no_cache = true;
    else if (eq_ci(n, l, "private") && qualified(d))
        cc->private_fields = true; /* the listed fields are not stored (RFC 9111 §5.2.2.7) */
    else if (eq_ci(n, l, "private"))
        cc->private_ = true;
    else if (eq_ci(n, l, "public"))
        cc->public_ = !d->bad || cc->public_; /* it allows more: not on junk */
    else if (eq_ci(n, l, "must-revalidate"))
        cc->must_revalidate = true;
    else if (eq_ci(n, l, "proxy-revalidate"))
        cc->proxy_revalidate = true;
    else if (eq_ci(n, l, "only-if-cached"))
        cc->only_if_cached = true;
    else if (eq_ci(n, l, "no-transform"))
        cc->no_transform = true;
    else if (eq_ci(n, l, "immutable"))
        cc->immutable = true;
    else if (eq_ci(n, l, "must-understand"))
        cc->must_understand = !d->bad || cc->must_understand; /* it overrides no-store */
    /* unknown directives are ignored (RFC 9111 §5.2.3) */
}

static void cc_reset(struct pf_cc *cc)
{
    memset(cc, 0, sizeof(*cc));
    cc->max_age = PF_CC_ABSENT;
    cc->s_maxage = PF_CC_ABSENT;
    cc->max_stale = PF_CC_ABSENT;
    cc->min_fresh = PF_CC_ABSENT;
    cc->swr = PF_CC_ABSENT;
    cc->sie = PF_CC_ABSENT;
}

/* Parse lines into cc without resetting it; returns how many well-formed directives it saw. */
static unsigned cc_parse_into(struct pf_cc *cc, const char *const *lines, unsigned n)
{
    unsigned seen = 0;

    for (unsigned i = 0; i < n; i++) {
        const char *p;
        const char *e;
        struct directive d;

        if (lines[i] == NULL)
            continue;
        p = lines[i];
        e = p + strlen(p);
        while (next_directive(&p, e, &d)) {
            seen += !d.bad;
            if (d.nlen > 0)
                apply_directive(cc, &d);
        }
    }
    return seen;
}

void pf_cc_parse(struct pf_cc *cc, const char *const *lines, unsigned n)
{
    cc_reset(cc);
    cc_parse_into(cc, lines, n);
    /* outside a stored response (a request) the qualified forms mean what the plain ones do */
    cc->no_cache |= cc->no_cache_fields;
    cc->private_ |= cc->private_fields;
}

/* ---- what a response says of itself ---- */

/* The first line of a header, or NULL. */
static const char *first_line(pf_cache_hdr_fn get, void *arg, const char *name)
{
    const char *lines[MAX_LINES];

    return get(arg, name, lines, MAX_LINES) > 0 ? lines[0] : NULL;
}

/*
 * Expires: -1 when absent, 0 when any line is not an HTTP-date or the
 * lines disagree (RFC 9111 §5.3: an invalid Expires means already expired).
 */
static int64_t expires_of(pf_cache_hdr_fn get, void *arg, int64_t now)
{
    const char *lines[MAX_LINES];
    unsigned n = get(arg, "Expires", lines, MAX_LINES);
    int64_t t = -1;

    for (unsigned i = 0; i < n; i++) {
        int64_t v = pf_http_date_at(lines[i], now);
        if (v <= 0 || (t > 0 && v != t))
            return 0;
        t = v;
    }
    return t;
}

/*
 * Age (RFC 9111 §5.1): the first member of the first line; anything but a
 * non-negative integer is ignored (-1); large values are capped at 2^31.
 */
static int64_t age_of(const char *line)
{
    const char *s = line;
    const char *e;

    if (s == NULL)
        return -1;
    e = strchr(s, ',');
    if (e == NULL)
        e = s + strlen(s);
    trim(&s, &e);
    return delta_seconds(s, (size_t)(e - s));
}

static void etag_of(struct pf_cache_meta *m, const char *line)
{
    const char *s = line;
    const char *e;
    size_t n;

    if (s == NULL)
        return;
    e = s + strlen(s);
    trim(&s, &e);
    n = (size_t)(e - s);
    /* an ETag too long to keep whole is dropped: a cut one could match another */
    if (n == 0 || n >= sizeof(m->etag))
        return;
    memcpy(m->etag, s, n);
    m->etag[n] = '\0';
    m->has_etag = true;
    m->weak_etag = n >= 2 && s[0] == 'W' && s[1] == '/';
}

static bool vary_has_star(const char *const *lines, unsigned n)
{
    for (unsigned i = 0; i < n; i++) {
        const char *p = lines[i];
        const char *s;
        const char *e;
        while (next_member(&p, &s, &e))
            if (e - s == 1 && *s == '*')
                return true;
    }
    return false;
}

/*
 * The effective Cache-Control (RFC 9213 §2.2): the first of the targeted
 * field, CDN-Cache-Control and Cache-Control that has a non-empty value.
 * Returns true when a targeted field decided (Expires is then ignored).
 */
static bool effective_cc(struct pf_cc *cc, pf_cache_hdr_fn get, void *arg, const char *targeted)
{
    const char *names[2] = {targeted, "CDN-Cache-Control"};
    const char *lines[MAX_LINES];
    unsigned n;

    for (unsigned i = 0; i < 2; i++) {
        if (names[i] == NULL || names[i][0] == '\0')
            continue;
        n = get(arg, names[i], lines, MAX_LINES);
        cc_reset(cc);
        if (n > 0 && cc_parse_into(cc, lines, n) > 0)
            return true;
    }
    n = get(arg, "Cache-Control", lines, MAX_LINES);
    cc_reset(cc);
    cc_parse_into(cc, lines, n);
    return false;
}

/* Does the list of field names in v (a no-cache= or private= value) name field? */
static bool names_field(const char *v, const char *field)
{
    const char *s, *e;

    while (next_member(&v, &s, &e)) {
        if ((size_t)(e - s) == strlen(field) && strncasecmp(s, field, (size_t)(e - s)) == 0)
            return true;
    }
    return false;
}

bool pf_cache_field_withheld(pf_cache_hdr_fn get, void *arg, const char *targeted,
                             const char *field)
{
    const char *names[3] = {targeted, "CDN-Cache-Control", "Cache-Control"};
    const char *lines[MAX_LINES];
    struct pf_cc cc;
    struct directive d;
    unsigned n = 0;

    for (unsigned i = 0; i < 3 && n == 0; i++) {
        if (names[i] == NULL || names[i][0] == '\0')
            continue;
        n = get(arg, names[i], lines, MAX_LINES);
        cc_reset(&cc);
        if (i < 2 && n > 0 && cc_parse_into(&cc, lines, n) == 0)
            n = 0; /* as effective_cc: a targeted field without a valid directive is not used */
    }
    for (unsigned i = 0; i < n; i++) {
        const char *p = lines[i], *e = p + strlen(p);

        while (next_directive(&p, e, &d)) {
            if ((eq_ci(d.name, d.nlen, "no-cache") || eq_ci(d.name, d.nlen, "private")) &&
                qualified(&d) && names_field(d.val, field))
                return true;
        }
    }
    return false;
}

void pf_cache_meta_from_headers(struct pf_cache_meta *m, int status, pf_cache_hdr_fn get, void *arg,
                                const char *targeted, int64_t request_time, int64_t response_time)
{
    const char *lines[MAX_LINES];
    unsigned n;

    memset(m, 0, sizeof(*m));
    m->status = status;
    m->request_time = request_time;
    m->response_time = response_time;
    m->date = pf_http_date_at(first_line(get, arg, "Date"), response_time);
    m->last_modified = pf_http_date_at(first_line(get, arg, "Last-Modified"), response_time);
    m->age = age_of(first_line(get, arg, "Age"));
    if (effective_cc(&m->cc, get, arg, targeted))
        m->expires = -1;
    else
        m->expires = expires_of(get, arg, response_time);
    etag_of(m, first_line(get, arg, "ETag"));
    n = get(arg, "Vary", lines, MAX_LINES);
    m->vary_star = vary_has_star(lines, n);
}

/* ---- freshness and age (RFC 9111 §4.2) ---- */

/* RFC 9110 §15.1 heuristically cacheable status codes */
static bool heuristic_status(int status)
{
    static const int codes[] = {200, 203, 204, 206, 300, 301, 308, 404, 405, 410, 414, 501};

    for (size_t i = 0; i < sizeof(codes) / sizeof(codes[0]); i++)
        if (codes[i] == status)
            return true;
    return false;
}

/* The explicit lifetime, or -1 when the response gives none. */
static int64_t explicit_lifetime(const struct pf_cache_meta *m)
{
    const struct pf_cc *cc = &m->cc;
    int64_t base;

    /* a shared cache goes by a valid s-maxage, whatever else is malformed */
    if (cc->s_maxage != PF_CC_ABSENT)
        return cc->s_maxage;
    if (cc->invalid)
        return 0; /* malformed max-age or s-maxage: stale (RFC 9111 §4.2.1) */
    if (cc->max_age != PF_CC_ABSENT)
        return cc->max_age;
    if (m->expires == 0)
        return 0;
    if (m->expires > 0) {
        base = m->date >= 0 ? m->date : m->response_time;
        return m->expires > base ? m->expires - base : 0;
    }
    return -1;
}

int64_t pf_cache_lifetime(const struct pf_cache_meta *m, const struct pf_cache_policy *p)
{
    int64_t t = explicit_lifetime(m);
    int64_t base;

    if (t >= 0)
        return t;
    if (m->cc.no_cache)
        return 0;
    if (p->heuristic && m->last_modified >= 0 && (heuristic_status(m->status) || m->cc.public_)) {
        base = m->date >= 0 ? m->date : m->response_time;
        t = base > m->last_modified ? (base - m->last_modified) / 10 : 0;
        if (p->heuristic_max > 0 && t > p->heuristic_max)
            t = p->heuristic_max;
        if (t > 0)
            return t;
    }
    return p->default_ttl > 0 ? p->default_ttl : 0;
}

int64_t pf_cache_age(const struct pf_cache_meta *m, int64_t now)
{
    int64_t apparent = 0;
    int64_t delay = m->response_time - m->request_time;
    int64_t corrected;
    int64_t resident = now - m->response_time;
    int64_t age;

    if (m->date >= 0 && m->response_time > m->date)
        apparent = m->response_time - m->date;
    if (delay < 0)
        delay = 0;
    corrected = (m->age >= 0 ? m->age : 0) + delay;
    age = apparent > corrected ? apparent : corrected;
    if (resident > 0)
        age += resident;
    return age > DELTA_MAX ? DELTA_MAX : age;
}

/* ---- storing (RFC 9111 §3) ---- */

/* The statuses the cache stores: SPEC's list plus 308 (the permanent twin of 301). */
static bool storable_status(int status)
{
    static const int codes[] = {200, 203, 204, 300, 301, 308, 404, 410};

    for (size_t i = 0; i < sizeof(codes) / sizeof(codes[0]); i++)
        if (codes[i] == status)
            return true;
    return false;
}

/* Is there any use in keeping it: fresh for a while, a validator, or a stale window. */
static bool worth_storing(const struct pf_cache_meta *m, const struct pf_cache_policy *p)
{
    bool validator = m->has_etag || m->last_modified >= 0;
    bool windows = !m->cc.no_cache && (m->cc.swr > 0 || m->cc.sie > 0 || p->stale_if_error > 0);

    if (m->cc.no_cache)
        return validator;
    return pf_cache_lifetime(m, p) > 0 || validator || windows;
}

bool pf_cache_storable(const char *method, bool req_has_authorization, const struct pf_cc *req_cc,
                       const struct pf_cache_meta *m, const struct pf_cache_policy *p,
                       const char **why)
{
    const struct pf_cc *cc = &m->cc;
    const char *no = NULL;

    if (method == NULL || (strcmp(method, "GET") != 0 && strcmp(method, "HEAD") != 0))
        no = "method";
    else if (!storable_status(m->status))
        no = "status";
    else if (req_cc != NULL && req_cc->no_store)
        no = "no-store";
    /* must-understand: the cache knows every status it stores, so no-store gives way */
    else if (cc->no_store && !cc->must_understand)
        no = "no-store";
    else if (cc->private_)
        no = "private";
    else if (req_has_authorization && !cc->public_ && cc->s_maxage == PF_CC_ABSENT &&
             !cc->must_revalidate)
        no = "authorization";
    else if (m->vary_star)
        no = "vary";
    else if (!worth_storing(m, p))
        no = "no-freshness";
    if (why != NULL)
        *why = no;
    return no == NULL;
}

/* ---- using a stored response (RFC 9111 §4.2.4, §5.2.1) ---- */

/* Does the response forbid serving it stale (RFC 9111 §5.2.2.2, .8, .10)? */
static bool stale_forbidden(const struct pf_cc *cc)
{
    return cc->must_revalidate || cc->proxy_revalidate || cc->s_maxage != PF_CC_ABSENT ||
           cc->no_cache;
}

enum pf_cache_use pf_cache_usable(const struct pf_cache_meta *m, const struct pf_cc *req_cc,
                                  const struct pf_cache_policy *p, int64_t now)
{
    int64_t age = pf_cache_age(m, now);
    int64_t left = pf_cache_lifetime(m, p) - age; /* > 0 while fresh */

    if (m->cc.no_cache)
        return PF_CACHE_USE_REVALIDATE;
    if (req_cc != NULL) {
        if (req_cc->no_cache || req_cc->invalid)
            return PF_CACHE_USE_REVALIDATE;
        if (req_cc->max_age != PF_CC_ABSENT && age > req_cc->max_age)
            return PF_CACHE_USE_REVALIDATE;
        if (req_cc->min_fresh != PF_CC_ABSENT && left < req_cc->min_fresh)
            return PF_CACHE_USE_REVALIDATE;
    }
    if (left > 0)
        return PF_CACHE_USE_FRESH;
    if (stale_forbidden(&m->cc))
        return PF_CACHE_USE_REVALIDATE;
    if (req_cc != NULL && req_cc->max_stale != PF_CC_ABSENT &&
        (req_cc->max_stale == PF_CC_ANY || -left <= req_cc->max_stale))
        return PF_CACHE_USE_STALE_OK;
    if (m->cc.swr != PF_CC_ABSENT && -left <= m->cc.swr)
        return PF_CACHE_USE_STALE_SWR;
    return PF_CACHE_USE_REVALIDATE;
}

bool pf_cache_stale_on_error(const struct pf_cache_meta *m, const struct pf_cache_policy *p,
                             int64_t now)
{
    int64_t stale = pf_cache_age(m, now) - pf_cache_lifetime(m, p); /* < 0 while fresh */
    int64_t window = p->stale_if_error > 0 ? p->stale_if_error : 0;

    if (m->cc.no_cache)
        return false; /* never used without validation, fresh or not */
    if (stale < 0)
        return true; /* still fresh: must-revalidate and the others do not apply yet */
    if (stale_forbidden(&m->cc))
        return false;
    if (m->cc.sie != PF_CC_ABSENT && m->cc.sie > window)
        window = m->cc.sie;
    return window > 0 && stale <= window;
}

/* ---- conditional requests (RFC 9110 §13.1.1, §13.1.3, §13.2.2) ---- */

/* Weak comparison (RFC 9110 §8.8.3.2) of the opaque tag [s, e) with the stored ETag. */
static bool etag_weak_match(const char *s, const char *e, const char *stored)
{
    if (stored[0] == 'W' && stored[1] == '/')
        stored += 2;
    return strlen(stored) == (size_t)(e - s) && memcmp(s, stored, (size_t)(e - s)) == 0;
}

/*
 * If-None-Match: "*" or a list of entity-tags, read tag by tag (an opaque
 * tag may hold a comma). A malformed list matches nothing after the fault.
 */
static bool inm_matches(const char *inm, const struct pf_cache_meta *m)
{
    const char *p = inm;

    for (;;) {
        const char *s;
        while (is_ows(*p) || *p == ',')
            p++;
        if (*p == '\0')
            return false;
        if (*p == '*')
            return true;
        if (p[0] == 'W' && p[1] == '/')
            p += 2;
        if (*p != '"')
            return false;
        s = p;
        p = strchr(p + 1, '"');
        if (p == NULL)
            return false;
        p++;
        if (m->has_etag && etag_weak_match(s, p, m->etag))
            return true;
        while (is_ows(*p))
            p++;
        if (*p != ',' && *p != '\0')
            return false;
    }
}

bool pf_cache_not_modified(const char *if_none_match, const char *if_modified_since,
                           const struct pf_cache_meta *m)
{
    int64_t ims;
    int64_t lm = m->last_modified >= 0 ? m->last_modified : m->date;

    if (if_none_match != NULL)
        return inm_matches(if_none_match, m);
    /* an RFC 850 two-digit year is read relative to when the response arrived */
    ims = pf_http_date_at(if_modified_since, m->response_time);
    if (ims < 0 || lm < 0)
        return false;
    return lm <= ims;
}

/* ---- invalidation (RFC 9111 §4.4) ---- */

bool pf_cache_method_safe(const char *method)
{
    static const char *const safe[] = {"GET", "HEAD", "OPTIONS", "TRACE"};

    for (size_t i = 0; method != NULL && i < sizeof(safe) / sizeof(safe[0]); i++)
        if (strcmp(method, safe[i]) == 0) /* methods are case-sensitive */
            return true;
    return false;
}

bool pf_cache_invalidates(const char *method, int status)
{
    return !pf_cache_method_safe(method) && status >= 200 && status < 400;
}

/* ---- stored headers (RFC 9111 §3.1, §3.2) ---- */

static bool in_list(const char *name, const char *const *list, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (strcasecmp(name, list[i]) == 0)
            return true;
    return false;
}

bool pf_cache_header_stored(const char *name, const char *conn_value)
{
    static const char *const never[] = {
        "Connection",
        "Keep-Alive",
        "Proxy-Connection",
        "TE",
        "Trailer",
        "Transfer-Encoding",
        "Upgrade",
        "Proxy-Authenticate",
        "Proxy-Authentication-Info",
        "Proxy-Authorization",
        "Content-Length",
        "Age",
    };
    const char *p = conn_value;
    const char *s;
    const char *e;

    if (in_list(name, never, sizeof(never) / sizeof(never[0])))
        return false;
    while (next_member(&p, &s, &e))
        if (eq_ci(s, (size_t)(e - s), name))
            return false;
    return true;
}

bool pf_cache_header_updated_by_304(const char *name)
{
    /* the stored body depends on these; Content-Range is processed, not stored */
    static const char *const kept[] = {"Content-Encoding", "Content-Range"};

    if (!pf_cache_header_stored(name, NULL))
        return false;
    return !in_list(name, kept, sizeof(kept) / sizeof(kept[0]));
}

bool pf_cache_304_field_merged(pf_cache_hdr_fn merged, void *arg, const char *targeted,
                               const char *conn_value, const char *name)
{
    return pf_cache_header_updated_by_304(name) && pf_cache_header_stored(name, conn_value) &&
           strcasecmp(name, "cache-status") != 0 &&
           !pf_cache_field_withheld(merged, arg, targeted, name);
}
