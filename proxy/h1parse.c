/*
 * Request heads: an incremental scan that finds the end of the head and
 * checks its lines, then one pass over the whole head that cuts, checks and
 * classifies the header fields (proxy/h1parse.h).
 */
#include "proxy/h1parse.h"

#include <http_parser.h>
#include <string.h>
#include <strings.h>

#include "proxy/hdrs.h"
#include "proxy/syntax.h"

/* where in a line */
enum {
    S_START = 0, /* at the start of a line */
    S_LINE,      /* inside a line */
    S_CR,        /* saw CR */
    S_LAST_CR,   /* saw the CR of the empty line that ends the head */
};

/* where in the request line */
enum {
    RL_METHOD = 0,
    RL_TARGET,
    RL_VERSION,
    RL_DONE,
};

/* byte classes */
enum {
    C_TCHAR = 1,  /* RFC 9110 tchar: in a field name */
    C_VALUE = 2,  /* in a field value: HT, visible ASCII, SP, obs-text */
    C_TARGET = 4, /* let through in a target by the scan (checked again later) */
    C_USCORE = 8, /* '_' in a field name */
};

#define VT (C_VALUE | C_TARGET)
#define TK (C_TCHAR | C_VALUE | C_TARGET)

static const uint8_t cls[256] = {
    ['\t'] = C_VALUE,     [' '] = C_VALUE,     ['!'] = TK,
    ['"'] = VT,           ['#' ... '\''] = TK, ['('] = VT,
    [')'] = VT,           ['*'] = TK,          ['+'] = TK,
    [','] = VT,           ['-'] = TK,          ['.'] = TK,
    ['/'] = VT,           ['0' ... '9'] = TK,  [':' ... '@'] = VT,
    ['A' ... 'Z'] = TK,   ['['] = VT,          ['\\'] = VT,
    [']'] = VT,           ['^'] = TK,          ['_'] = TK | C_USCORE,
    ['`'] = TK,           ['a' ... 'z'] = TK,  ['{'] = VT,
    ['|'] = TK,           ['}'] = VT,          ['~'] = TK,
    [0x80 ... 0xff] = VT,
};

static const char *const method_names[] = {
#define XX(num, name, string) [num] = #string,
    HTTP_METHOD_MAP(XX)
#undef XX
};

#define N_METHODS (sizeof(method_names) / sizeof(method_names[0]))

const char *pf_h1p_method_name(int method)
{
    if (method < 0 || (unsigned)method >= N_METHODS)
        return "<unknown>";
    return method_names[method];
}

/* The method of the name m[0..len), or -1: the methods http-parser knows, upper case. */
static int method_find(const char *m, size_t len)
{
    if (len == 3 && memcmp(m, "GET", 3) == 0)
        return HTTP_GET;
    for (unsigned i = 0; i < N_METHODS; i++) {
        if (strlen(method_names[i]) == len && memcmp(method_names[i], m, len) == 0)
            return (int)i;
    }
    return -1;
}

void pf_h1p_scan_init(struct pf_h1p_scan *s)
{
    memset(s, 0, sizeof(*s));
    s->method = -1;
}

/* A byte that may start a target: origin-form, asterisk-form, or a scheme. */
/*
 * The first byte from p not of class c, 4 bytes a round: a response's names
 * and values are most of its head. && stops at the first byte outside the
 * class, so nothing past it is read (a head ends in its line end).
 */
static inline char *skip_class(char *p, unsigned char c)
{
    const unsigned char *u = (const unsigned char *)p;

    while ((cls[u[0]] & c) && (cls[u[1]] & c) && (cls[u[2]] & c) && (cls[u[3]] & c))
        u += 4;
    while (cls[*u] & c)
        u++;
    return (char *)(uintptr_t)u;
}

static bool target_start(unsigned char ch)
{
    return ch == '/' || ch == '*' || ((ch | 0x20) >= 'a' && (ch | 0x20) <= 'z');
}

/* One byte of the request line (not CR or LF). */
static int scan_rl_byte(struct pf_h1p_scan *s, unsigned char ch)
{
    switch (s->rl) {
    case RL_METHOD:
        if (ch == ' ') {
            s->method = method_find(s->m, s->mlen);
            if (s->method < 0)
                return 400;
            s->rl = RL_TARGET;
        } else if (s->mlen == sizeof(s->m) || !((ch >= 'A' && ch <= 'Z') || ch == '-')) {
            return 400;
        } else {
            s->m[s->mlen++] = (char)ch;
        }
        return 0;
    case RL_TARGET:
        if (ch == ' ') {
            /* more than one SP between the words is tolerated, as it always was */
            if (s->url_len > 0)
                s->rl = RL_VERSION;
            return 0;
        }
        if (!(cls[ch] & C_TARGET) || (s->url_len == 0 && !target_start(ch)))
            return 400;
        s->url_len++;
        return 0;
    default:
        if (ch == ' ' && s->vlen == 0)
            return 0;
        if (s->vlen == sizeof(s->ver))
            return 400;
        s->ver[s->vlen++] = (char)ch;
        return 0;
    }
}

/* CR at the end of the request line: the version is exactly HTTP/1.0 or HTTP/1.1. */
static int scan_rl_end(struct pf_h1p_scan *s)
{
    if (s->rl != RL_VERSION || s->vlen != 8 || memcmp(s->ver, "HTTP/1.", 7) != 0 ||
        (s->ver[7] != '0' && s->ver[7] != '1'))
        return 400;
    s->minor = (uint8_t)(s->ver[7] - '0');
    return 0;
}

/*
 * The whole request line p[0..len) (without its CRLF) at once, the common
 * case: the same checks as scan_rl_byte() and scan_rl_end() byte by byte.
 */
static int scan_rl_whole(struct pf_h1p_scan *s, const unsigned char *p, size_t len)
{
    size_t i = 0, t;

    for (; i < len && p[i] != ' '; i++) {
        if (i == sizeof(s->m) || !((p[i] >= 'A' && p[i] <= 'Z') || p[i] == '-'))
            return 400;
        s->m[i] = (char)p[i];
    }
    s->mlen = (uint8_t)i;
    if (i == len || (s->method = method_find(s->m, i)) < 0)
        return 400;
    while (i < len && p[i] == ' ')
        i++;
    if (i == len || !target_start(p[i]))
        return 400;
    /* 4 bytes a round while all four are target bytes, then one by one */
    for (t = i;
         i + 4 <= len && (cls[p[i]] & cls[p[i + 1]] & cls[p[i + 2]] & cls[p[i + 3]] & C_TARGET);
         i += 4)
        ;
    for (; i < len && (cls[p[i]] & C_TARGET); i++)
        ;
    s->url_len = (uint32_t)(i - t);
    if (i == len || p[i] != ' ')
        return 400;
    while (i < len && p[i] == ' ')
        i++;
    if (len - i != sizeof(s->ver))
        return 400;
    memcpy(s->ver, p + i, sizeof(s->ver));
    s->vlen = sizeof(s->ver);
    s->rl = RL_VERSION;
    return scan_rl_end(s);
}

/* The request line, with the empty lines before it; stops after its LF. */
static int scan_request_line(struct pf_h1p_scan *s, const unsigned char *p, size_t n, size_t *at)
{
    size_t i = *at;

    while (s->state == S_START && n - i >= 2 && p[i] == '\r' && p[i + 1] == '\n')
        i += 2; /* an empty line before the request line is ignored (RFC 9112 §2.2) */
    if (s->state == S_START && s->rl == RL_METHOD && s->mlen == 0 && i < n) {
        const unsigned char *cr = memchr(p + i, '\r', n - i);

        if (cr != NULL && cr + 1 < p + n && cr[1] == '\n' && cr > p + i) {
            if (scan_rl_whole(s, p + i, (size_t)(cr - (p + i))) != 0)
                return 400;
            s->rl = RL_DONE;
            *at = (size_t)(cr + 2 - p);
            return 0;
        }
    }
    for (; i < n; i++) {
        unsigned char ch = p[i];
        bool empty = s->rl == RL_METHOD && s->mlen == 0; /* an empty line so far */
        int rc;

        if (s->state == S_CR) {
            if (ch != '\n')
                return 400;
            s->state = S_START;
            if (!empty) {
                s->rl = RL_DONE;
                *at = i + 1;
                return 0;
            }
            continue; /* an empty line before the request line is ignored (RFC 9112 §2.2) */
        }
        if (ch == '\n')
            return 400;
        if (ch == '\r') {
            if (!empty && scan_rl_end(s) != 0)
                return 400;
            s->state = S_CR;
            continue;
        }
        rc = scan_rl_byte(s, ch);
        if (rc != 0)
            return rc;
        s->state = S_LINE;
    }
    *at = n;
    return 0;
}

int pf_h1p_scan_request(struct pf_h1p_scan *s, const char *data, size_t n, size_t *used)
{
    const unsigned char *p = (const unsigned char *)data;
    size_t i = 0;

    if (s->rl != RL_DONE) {
        int rc = scan_request_line(s, p, n, &i);

        if (rc != 0)
            return rc;
    }
    for (; i < n; i++) {
        unsigned char ch;

        if (s->state == S_LINE) {
            /* inside a header line: jump to its CR (no LF may come before it) */
            const unsigned char *cr = memchr(p + i, '\r', n - i);
            size_t end = cr != NULL ? (size_t)(cr - p) : n;

            if (memchr(p + i, '\n', end - i) != NULL)
                return 400;
            i = end;
            if (i == n)
                break;
        }
        ch = p[i];
        if (s->state >= S_CR) {
            if (ch != '\n')
                return 400;
            if (s->state == S_LAST_CR) {
                *used = i + 1;
                return PF_H1P_DONE;
            }
            s->state = S_START;
        } else if (ch == '\r') {
            s->state = s->state == S_START ? S_LAST_CR : S_CR;
        } else if (ch == '\n' || (s->state == S_START && (ch == ' ' || ch == '\t'))) {
            return 400; /* bare LF; obs-fold, or whitespace before the first field */
        } else {
            s->lines++;
            s->state = S_LINE;
        }
    }
    *used = n;
    return PF_H1P_MORE;
}

/* The digits of a Content-Length: 1 to 18 (more could overflow 64 bits); false otherwise. */
static bool length_value(const char *v, uint32_t len, uint64_t *out)
{
    uint64_t n = 0;

    if (len == 0 || len > 18)
        return false;
    for (uint32_t i = 0; i < len; i++) {
        if (v[i] < '0' || v[i] > '9')
            return false;
        n = n * 10 + (uint64_t)(v[i] - '0');
    }
    *out = n;
    return true;
}

/* Note what the framing rules need of a field the core acts on. */
static void note_field(struct pf_h1p_head *h, const struct pf_hdr *d)
{
    switch (d->id) {
    case PF_H_CONTENT_LENGTH:
        if (h->n_cl++ == 0)
            h->cl_bad = !length_value(d->value, d->value_len, &h->length);
        break;
    case PF_H_TRANSFER_ENCODING:
        if (h->n_te++ == 0)
            h->te_chunked = true;
        if (d->value_len != 7 || strcasecmp(d->value, "chunked") != 0)
            h->te_chunked = false;
        break;
    case PF_H_HOST:
        if (h->n_host++ == 0) {
            h->host = d->value;
            h->host_len = d->value_len;
        }
        break;
    case PF_H_CONNECTION:
        h->conn_close |= pf_http_list_has(d->value, "close");
        h->conn_keepalive |= pf_http_list_has(d->value, "keep-alive");
        break;
    case PF_H_EXPECT:
        if (h->expect == NULL)
            h->expect = d->value;
        break;
    default:
        break;
    }
}

/* One header line at p (known to end with CRLF); returns what follows it, or NULL. */
static char *parse_field(char *p, struct pf_h1p_head *h)
{
    struct pf_hdr *d = &h->v[h->n];
    char *name = p, *value, *end;
    unsigned acc = 0, c;

    while ((c = cls[(unsigned char)*p]) & C_TCHAR) {
        acc |= c;
        p++;
    }
    if (*p != ':' || p == name)
        return NULL;
    d->name = name;
    d->name_len = (uint32_t)(p - name);
    *p++ = '\0';
    while (*p == ' ' || *p == '\t')
        p++;
    value = p;
    while (cls[(unsigned char)*p] & C_VALUE)
        p++;
    if (*p != '\r')
        return NULL;
    end = p;
    while (end > value && (end[-1] == ' ' || end[-1] == '\t'))
        end--;
    *end = '\0';
    d->value = value;
    d->value_len = (uint32_t)(end - value);
    d->id = pf_hdr_classify(name, d->name_len);
    if (acc & C_USCORE)
        h->underscore = true;
    if (d->id != PF_H_OTHER)
        note_field(h, d);
    h->n++;
    return p + 2;
}

int pf_h1p_parse_request(const struct pf_h1p_scan *scan, char *buf, size_t len,
                         struct pf_h1p_head *h)
{
    char *p = buf;

    (void)len; /* the scan saw the empty line at its end: every line ends with CRLF */
    h->n = 0;
    h->host = NULL;
    h->host_len = 0;
    h->expect = NULL;
    h->length = 0;
    h->n_cl = h->n_te = h->n_host = 0;
    h->cl_bad = h->te_chunked = h->conn_close = h->conn_keepalive = h->underscore = false;
    while (*p == '\r')
        p += 2; /* empty lines before the request line */
    p += scan->mlen;
    while (*p == ' ')
        p++;
    h->url = p;
    h->url_len = scan->url_len;
    p += scan->url_len;
    *p++ = '\0'; /* was SP */
    while (*p == ' ')
        p++;
    p += sizeof(scan->ver) + 2; /* the version, CRLF */
    while (*p != '\r') {
        p = parse_field(p, h);
        if (p == NULL)
            return 400;
    }
    return 0;
}

/* ---- response heads ---- */

void pf_h1p_rscan_init(struct pf_h1p_rscan *s)
{
    memset(s, 0, sizeof(*s));
}

int pf_h1p_scan_response(struct pf_h1p_rscan *s, const char *data, size_t n, size_t *used)
{
    const unsigned char *p = (const unsigned char *)data;

    for (size_t i = 0; i < n; i++) {
        unsigned char ch;

        if (s->state == S_LINE) {
            /* inside a line: jump to its LF (a stray CR is the parse's to refuse) */
            const unsigned char *lf = memchr(p + i, '\n', n - i);

            if (lf == NULL)
                break;
            i = (size_t)(lf - p);
            s->state = S_START;
            continue;
        }
        ch = p[i];
        if (s->state == S_CR && ch != '\n')
            return 502;
        if (ch == '\n') {
            if (s->started) {
                *used = i + 1;
                return PF_H1P_DONE;
            }
            s->state = S_START; /* an empty line before the status line */
        } else if (ch == '\r') {
            s->state = S_CR;
        } else {
            if (!s->started || (ch != ' ' && ch != '\t'))
                s->lines++; /* not an obs-fold */
            s->started = true;
            s->state = S_LINE;
        }
    }
    *used = n;
    return PF_H1P_MORE;
}

/* After the end of the line at p (CRLF or LF), or NULL (anything else, a bare CR). */
static char *line_next(char *p)
{
    if (*p == '\n')
        return p + 1;
    return p[0] == '\r' && p[1] == '\n' ? p + 2 : NULL;
}

/* "HTTP/d.d SP ddd [SP reason]" and its line end; returns what follows, or NULL. */
static char *parse_status_line(char *p, struct pf_h1p_resp *r)
{
    int digits = 0;

    if (memcmp(p, "HTTP/", 5) != 0 || p[5] < '0' || p[5] > '9' || p[6] != '.' || p[7] < '0' ||
        p[7] > '9' || p[8] != ' ')
        return NULL;
    r->major = (uint8_t)(p[5] - '0');
    r->minor = (uint8_t)(p[7] - '0');
    p += 9;
    while (*p == ' ')
        p++;
    for (r->status = 0; *p >= '0' && *p <= '9' && digits < 3; p++, digits++)
        r->status = r->status * 10 + (*p - '0');
    if (digits == 0)
        return NULL;
    if (*p == ' ') {
        while (*p != '\r' && *p != '\n')
            p++; /* the reason phrase: not passed on */
    }
    return line_next(p);
}

/* Note what the response framing needs of f; false when it breaks the rules. */
static bool note_rfield(struct pf_h1p_resp *r, const struct pf_head_ent *f, const char *v)
{
    const char *elem, *last = NULL;
    size_t len, last_len = 0;

    switch (f->id) {
    case PF_H_CONTENT_LENGTH:
        if (r->has_length || !length_value(v, f->value_len, &r->length))
            return false;
        r->has_length = true;
        break;
    case PF_H_TRANSFER_ENCODING:
        r->has_te = true;
        while (pf_http_list_next(&v, &elem, &len)) {
            last = elem;
            last_len = len;
        }
        r->chunked = last != NULL && last_len == 7 && strncasecmp(last, "chunked", 7) == 0;
        break;
    case PF_H_CONNECTION:
        r->conn_close |= pf_http_list_has(v, "close");
        r->conn_keepalive |= pf_http_list_has(v, "keep-alive");
        break;
    default:
        break;
    }
    return true;
}

/*
 * The value at p up to its line end, obs-folds joined in place (*end, the
 * end of the head, moves back). Returns what follows its line, or NULL.
 */
static char *parse_rvalue(char *p, char **end, char **vend)
{
    for (;;) {
        char *next;

        p = skip_class(p, C_VALUE);
        next = line_next(p);
        if (next == NULL)
            return NULL;
        if (*next != ' ' && *next != '\t') {
            *vend = p;
            return next;
        }
        /* obs-fold: the line break goes, the whitespace after it stays */
        memmove(p, next, (size_t)(*end - next));
        *end -= next - p;
    }
}

/* One field line at p; returns what follows it, or NULL. */
static char *parse_rfield(char *buf, char *p, char **end, struct pf_h1p_resp *r)
{
    struct pf_head_ent *f = &r->f[r->n];
    char *name = p, *value, *vend, *next;

    p = skip_class(p, C_TCHAR);
    f->name_off = (uint32_t)(name - buf);
    f->name_len = (uint32_t)(p - name);
    while (*p == ' ' || *p == '\t')
        p++; /* removed before the colon (RFC 9112 §5.1) */
    if (*p != ':' || f->name_len == 0)
        return NULL;
    p++;
    while (*p == ' ' || *p == '\t')
        p++;
    value = p;
    next = parse_rvalue(p, end, &vend);
    if (next == NULL)
        return NULL;
    while (vend > value && (vend[-1] == ' ' || vend[-1] == '\t'))
        vend--;
    *vend = '\0';
    name[f->name_len] = '\0';
    f->value_off = (uint32_t)(value - buf);
    f->value_len = (uint32_t)(vend - value);
    f->id = (uint8_t)pf_hdr_classify(name, f->name_len);
    if (f->id != PF_H_OTHER && !note_rfield(r, f, value))
        return NULL;
    r->n++;
    return next;
}

int pf_h1p_parse_response(char *buf, size_t len, struct pf_h1p_resp *r)
{
    char *p = buf, *end = buf + len;

    r->n = 0;
    r->status = 0;
    r->length = 0;
    r->has_length = r->chunked = r->has_te = r->conn_close = r->conn_keepalive = false;
    while (*p == '\r' || *p == '\n')
        p++; /* empty lines before the status line */
    p = parse_status_line(p, r);
    if (p == NULL)
        return 502;
    while (*p != '\r' && *p != '\n') {
        p = parse_rfield(buf, p, &end, r);
        if (p == NULL)
            return 502;
    }
    if (r->has_te && r->has_length)
        return 502;
    return 0;
}
