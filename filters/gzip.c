/*
 * filters/gzip.c: on-the-fly gzip compression (docs/filters/gzip.md).
 *
 * on_request remembers whether the client accepts gzip; on_response applies
 * the checks of nginx's ngx_http_gzip_header_filter and h2o's
 * on_setup_ostream and rewrites the headers; on_body streams deflate output
 * into the next stage. The deflate state lives in the transaction arena, so
 * nothing outlives the transaction even when the client goes away.
 */
#include "filters/gzip.h"

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <event2/buffer.h>
#define ZLIB_CONST /* next_in is const: input extents are only read */
#include <zlib.h>

#include "proxy/arena.h"
#include "proxy/conf.h"
#include "proxy/filter.h"
#include "proxy/log.h"
#include "proxy/stats.h"
#include "proxy/syntax.h"

#define GZIP_OUT_CHUNK 16384 /* output bytes per deflate() call (stack buffer) */
#define GZIP_PEEK_VECS 8     /* input extents deflated per evbuffer_peek() */
#define GZIP_MIN_WBITS 9     /* smallest window zlib accepts for a gzip stream */

struct gzip_ctx {
    z_stream z;         /* deflate state; its memory comes from the tx arena */
    bool accepts;       /* the client accepts gzip (set by on_request) */
    bool active;        /* deflate is initialised: on_body compresses */
    bool finished;      /* the gzip trailer has been written */
    uint64_t bytes_in;  /* body bytes fed to deflate */
    uint64_t bytes_out; /* gzip bytes produced */
};

static const char *const default_types[] = {
    "text/html",       "text/plain",       "text/css",
    "text/xml",        "application/json", "application/javascript",
    "application/xml", "image/svg+xml",    NULL,
};

/*
 * Byte counters in per-thread cells (pf_counter_set, proxy/stats.h): the
 * owner adds with a relaxed load and store, a scrape sums every thread's.
 */
enum { GZ_IN = 0, GZ_OUT, GZ_COUNTERS };
static struct pf_counter_set counters = PF_COUNTER_SET(GZ_COUNTERS);
static __thread _Atomic uint64_t *my_counters;

static void gzip_count(uint64_t in, uint64_t out)
{
    if (my_counters == NULL)
        my_counters = pf_counter_cells(&counters);
    pf_counter_add(&my_counters[GZ_IN], in);
    pf_counter_add(&my_counters[GZ_OUT], out);
}

void pf_gzip_stats(uint64_t *bytes_in, uint64_t *bytes_out)
{
    *bytes_in = pf_counter_sum(&counters, GZ_IN);
    *bytes_out = pf_counter_sum(&counters, GZ_OUT);
}

static void gzip_metrics(const void *conf, void *pstate, struct evbuffer *out)
{
    (void)conf;
    (void)pstate;
    pf_stats_put_one(out, "pilotfish_gzip_bytes_in_total", "counter",
                     "Response body bytes fed to gzip compression.",
                     pf_counter_sum(&counters, GZ_IN));
    pf_stats_put_one(out, "pilotfish_gzip_bytes_out_total", "counter",
                     "Compressed bytes produced by gzip compression.",
                     pf_counter_sum(&counters, GZ_OUT));
}

/* ---- configuration ---- */

static const struct pf_conf_key gzip_keys[] = {
    {"level", PF_CONF_INT, offsetof(struct pf_gzip_conf, level), 1, 9, NULL},
    {"min_length", PF_CONF_SIZE, offsetof(struct pf_gzip_conf, min_length), 0, 0, NULL},
    {"types", PF_CONF_STRLIST, offsetof(struct pf_gzip_conf, types), 0, 0, NULL},
    {"window", PF_CONF_INT, offsetof(struct pf_gzip_conf, window), GZIP_MIN_WBITS, 15, NULL},
    {"mem_level", PF_CONF_INT, offsetof(struct pf_gzip_conf, mem_level), 1, 9, NULL},
    {NULL, 0, 0, 0, 0, NULL},
};

static void gzip_conf_free(void *p)
{
    struct pf_gzip_conf *conf = p;

    if (conf == NULL)
        return;
    pf_conf_fields_free(gzip_keys, conf);
    free(conf);
}

/* "*", "type/subtype" or "type/" followed by "*", without parameters. */
static bool media_range_ok(const char *t)
{
    const char *slash = strchr(t, '/');

    const char *star = strchr(t, '*');

    if (strcmp(t, "*") == 0)
        return true;
    if (slash == NULL || slash == t || slash[1] == '\0' || strchr(slash + 1, '/') != NULL)
        return false;
    if (star != NULL && (star != slash + 1 || star[1] != '\0'))
        return false;
    return strpbrk(t, " \t;,\"") == NULL;
}

/* Lower-case the listed types and report the malformed ones at their node. */
static int check_types(struct pf_gzip_conf *conf, const struct pf_conf_node *n, struct pf_err *err)
{
    int rc = 0;

    for (unsigned i = 0; i < conf->types.n; i++) {
        char *t = conf->types.v[i];
        const struct pf_conf_node *at = n;

        for (char *p = t; *p != '\0'; p++)
            *p = (char)tolower((unsigned char)*p);
        if (media_range_ok(t))
            continue;
        if (n != NULL && n->type == PF_NODE_SEQ && i < n->n_items)
            at = n->items[i];
        pf_err_at(err, at, "gzip.types: \"%s\" is not a media type such as text/html", t);
        rc = -EINVAL;
    }
    return rc;
}

static int gzip_conf_parse(const struct pf_conf_node *n, void **out, struct pf_err *err)
{
    struct pf_gzip_conf *conf = pf_xcalloc(1, sizeof(*conf));
    unsigned n_types = 0;
    int rc;

    while (default_types[n_types] != NULL)
        n_types++;
    conf->level = 6;
    conf->min_length = 1000;
    conf->types.v = pf_xcalloc(n_types, sizeof(*conf->types.v));
    for (conf->types.n = 0; conf->types.n < n_types; conf->types.n++)
        conf->types.v[conf->types.n] = pf_xstrdup(default_types[conf->types.n]);
    conf->window = 15;
    conf->mem_level = 8;
    rc = pf_conf_fill(n, gzip_keys, conf, err);
    if (rc == 0)
        rc = check_types(conf, pf_conf_get(n, "types"), err);
    if (rc != 0) {
        gzip_conf_free(conf);
        return rc;
    }
    *out = conf;
    return 0;
}

/* ---- header lists (RFC 9110 §5.6.1) ---- */

static bool is_ows(char c)
{
    return c == ' ' || c == '\t';
}

/* Length of the token at the start of s[0..len): up to OWS, ';' or '='. */
static size_t token_len(const char *s, size_t len)
{
    size_t i = 0;

    while (i < len && !is_ows(s[i]) && s[i] != ';' && s[i] != '=')
        i++;
    return i;
}

static bool token_is(const char *s, size_t len, const char *token)
{
    return len == strlen(token) && strncasecmp(s, token, len) == 0;
}

/* ---- Accept-Encoding ---- */

/*
 * A qvalue ("0", "0.5", "1.000") in thousandths, or 0 when malformed: like
 * nginx, a weight that cannot be read does not count as acceptance.
 */
static int qvalue_parse(const char *s, size_t len)
{
    int q;
    int scale = 100;

    if (len == 0 || (s[0] != '0' && s[0] != '1'))
        return 0;
    q = s[0] == '1' ? 1000 : 0;
    if (len == 1)
        return q;
    if (s[1] != '.' || len > 5)
        return 0;
    for (size_t i = 2; i < len; i++, scale /= 10) {
        if (s[i] < '0' || s[i] > '9')
            return 0;
        q += (s[i] - '0') * scale;
    }
    return q > 1000 ? 0 : q;
}

static void trim_ows(const char **s, const char **e)
{
    while (*s < *e && is_ows(**s))
        (*s)++;
    while (*e > *s && is_ows((*e)[-1]))
        (*e)--;
}

/* The weight in the parameters [p, end) of an element, ";x=y;q=0.5" (1000 when none). */
static int element_weight(const char *p, const char *end)
{
    while ((p = memchr(p, ';', (size_t)(end - p))) != NULL) {
        const char *seg = p + 1;
        const char *seg_end = memchr(seg, ';', (size_t)(end - seg));

        if (seg_end == NULL)
            seg_end = end;
        p = seg_end;
        trim_ows(&seg, &seg_end);
        if (seg == seg_end || (*seg != 'q' && *seg != 'Q'))
            continue;
        seg++;
        trim_ows(&seg, &seg_end);
        if (seg == seg_end || *seg != '=')
            continue;
        seg++;
        trim_ows(&seg, &seg_end);
        return qvalue_parse(seg, (size_t)(seg_end - seg));
    }
    return 1000;
}

struct accept_scan {
    int gzip; /* highest weight given to gzip or x-gzip; -1 when not listed */
    int star; /* weight given to "*"; -1 when not listed */
};

static int accept_scan_cb(void *arg, const char *name, const char *value)
{
    struct accept_scan *a = arg;
    const char *elem;
    size_t len;

    if (strcasecmp(name, "Accept-Encoding") != 0)
        return 0;
    while (pf_http_list_next(&value, &elem, &len)) {
        size_t tlen = token_len(elem, len);
        int q;

        if (!token_is(elem, tlen, "gzip") && !token_is(elem, tlen, "x-gzip") &&
            !token_is(elem, tlen, "*"))
            continue;
        q = element_weight(elem + tlen, elem + len);
        if (elem[0] == '*')
            a->star = q > a->star ? q : a->star;
        else
            a->gzip = q > a->gzip ? q : a->gzip;
    }
    return 0;
}

/*
 * RFC 9110 §12.5.3: an explicit gzip (or x-gzip) weight decides; otherwise
 * "*" does; a coding not listed at all is not acceptable (identity aside).
 */
static bool client_accepts_gzip(const struct pf_tx *tx)
{
    struct accept_scan a = {-1, -1};

    pf_tx_req_header_each(tx, accept_scan_cb, &a);
    if (a.gzip >= 0)
        return a.gzip > 0;
    return a.star > 0;
}

/* ---- response checks ---- */

/* Content-Length, or -1 when absent or unreadable (then unknown). */
static int64_t resp_content_length(const struct pf_tx *tx)
{
    const char *cl = pf_tx_resp_header(tx, "Content-Length");
    char *end;
    unsigned long long v;

    if (cl == NULL)
        return -1;
    while (is_ows(*cl))
        cl++;
    if (*cl < '0' || *cl > '9')
        return -1;
    errno = 0;
    v = strtoull(cl, &end, 10);
    while (is_ows(*end))
        end++;
    if (errno != 0 || *end != '\0' || v > INT64_MAX)
        return -1;
    return (int64_t)v;
}

static bool type_listed(const struct pf_gzip_conf *conf, const char *ct)
{
    size_t len;

    while (is_ows(*ct))
        ct++;
    len = token_len(ct, strlen(ct));
    for (unsigned i = 0; i < conf->types.n; i++) {
        const char *t = conf->types.v[i];
        size_t tlen = strlen(t);

        if (strcmp(t, "*") == 0)
            return true;
        if (tlen >= 2 && t[tlen - 1] == '*' && t[tlen - 2] == '/') {
            if (len > tlen - 1 && strncasecmp(ct, t, tlen - 1) == 0)
                return true;
        } else if (len == tlen && strncasecmp(ct, t, len) == 0) {
            return true;
        }
    }
    return false;
}

struct resp_scan {
    bool coded;        /* a Content-Encoding other than identity */
    bool no_transform; /* Cache-Control: no-transform */
};

static int resp_scan_cb(void *arg, const char *name, const char *value)
{
    struct resp_scan *r = arg;
    const char *elem;
    size_t len;

    if (strcasecmp(name, "Cache-Control") == 0 && pf_http_list_has(value, "no-transform")) {
        r->no_transform = true;
    } else if (strcasecmp(name, "Content-Encoding") == 0) {
        while (pf_http_list_next(&value, &elem, &len)) {
            if (!token_is(elem, len, "identity"))
                r->coded = true;
        }
    }
    return 0;
}

/*
 * Would this response be compressed for a client that accepts gzip? The
 * answer depends only on the response, so it also decides Vary.
 */
static bool response_compressible(const struct pf_tx *tx, const struct pf_gzip_conf *conf,
                                  int64_t cl)
{
    int status = pf_tx_status(tx);
    const char *ct = pf_tx_resp_header(tx, "Content-Type");
    struct resp_scan r = {false, false};

    /* a 304 is looked at as the 200 it stands for: it gets the Vary and ETag that one would */
    if (status < 200 || status == 204 || status == 206)
        return false;
    if (ct == NULL || !type_listed(conf, ct))
        return false;
    if (cl >= 0 && (uint64_t)cl < conf->min_length)
        return false;
    pf_tx_resp_header_each(tx, resp_scan_cb, &r);
    return !r.coded && !r.no_transform;
}

/* ---- header rewriting ---- */

struct vary_scan {
    bool covered; /* "*" or Accept-Encoding is already listed */
    unsigned n;   /* non-empty Vary headers */
    size_t len;   /* their total length */
    char *buf;    /* second pass: the joined value being built */
    size_t used;  /* bytes of buf in use */
};

static int vary_scan_cb(void *arg, const char *name, const char *value)
{
    struct vary_scan *v = arg;
    size_t len;

    if (strcasecmp(name, "Vary") != 0)
        return 0;
    while (is_ows(*value) || *value == ',')
        value++;
    len = strlen(value);
    while (len > 0 && (is_ows(value[len - 1]) || value[len - 1] == ','))
        len--;
    if (len == 0)
        return 0;
    if (v->buf == NULL) {
        v->covered = v->covered || pf_http_list_has(value, "*") ||
                     pf_http_list_has(value, "accept-encoding");
        v->n++;
        v->len += len;
        return 0;
    }
    memcpy(v->buf + v->used, value, len);
    memcpy(v->buf + v->used + len, ", ", 2);
    v->used += len + 2;
    return 0;
}

/* Add Accept-Encoding to Vary, merging several Vary headers into one. */
static void vary_add_accept_encoding(struct pf_tx *tx)
{
    static const char ae[] = "Accept-Encoding";
    struct vary_scan v = {false, 0, 0, NULL, 0};

    pf_tx_resp_header_each(tx, vary_scan_cb, &v);
    if (v.covered)
        return;
    if (v.n == 0) {
        pf_tx_resp_header_add(tx, "Vary", ae);
        return;
    }
    v.buf = pf_arena_alloc(pf_tx_arena(tx), v.len + 2 * v.n + sizeof(ae));
    pf_tx_resp_header_each(tx, vary_scan_cb, &v);
    memcpy(v.buf + v.used, ae, sizeof(ae));
    pf_tx_resp_header_set(tx, "Vary", v.buf);
}

/*
 * The compressed body is not byte-for-byte the origin's, so a strong ETag
 * becomes weak (as ngx_http_weak_etag does); a malformed one is dropped.
 */
static void etag_weaken(struct pf_tx *tx)
{
    const char *etag = pf_tx_resp_header(tx, "ETag");
    char *weak;
    size_t len;

    if (etag == NULL)
        return;
    while (is_ows(*etag))
        etag++;
    if (strncmp(etag, "W/\"", 3) == 0)
        return;
    if (etag[0] != '"') {
        pf_tx_resp_header_del(tx, "ETag");
        return;
    }
    len = strlen(etag);
    weak = pf_arena_alloc(pf_tx_arena(tx), len + 3);
    memcpy(weak, "W/", 2);
    memcpy(weak + 2, etag, len + 1);
    pf_tx_resp_header_set(tx, "ETag", weak);
}

/* ---- deflate ---- */

/* zlib's memory comes from the arena and goes with it: zfree does nothing. */
static voidpf gzip_zalloc(voidpf opaque, uInt items, uInt size)
{
    return pf_arena_alloc(opaque, (size_t)items * size);
}

static void gzip_zfree(voidpf opaque, voidpf address)
{
    (void)opaque;
    (void)address;
}

static int deflate_start(struct pf_tx *tx, const struct pf_gzip_conf *conf, struct gzip_ctx *c,
                         int64_t cl)
{
    int wbits = (int)conf->window;
    int mem_level = (int)conf->mem_level;
    int rc;

    /*
     * A window larger than the body buys nothing; with defaults zlib takes
     * about 256 KiB per stream. Shrink both as ngx_http_gzip_filter_memory
     * does when the length is known.
     */
    if (cl > 0) {
        while (wbits > GZIP_MIN_WBITS && cl < (1 << (wbits - 1)) - 262) {
            wbits--;
            mem_level--;
        }
        if (mem_level < 1)
            mem_level = 1;
    }
    c->z.zalloc = gzip_zalloc;
    c->z.zfree = gzip_zfree;
    c->z.opaque = pf_tx_arena(tx);
    rc = deflateInit2(&c->z, (int)conf->level, Z_DEFLATED, wbits + 16, mem_level,
                      Z_DEFAULT_STRATEGY);
    if (rc != Z_OK) {
        pf_debug("gzip: deflateInit2 failed (%d)", rc);
        return -ENOMEM;
    }
    c->active = true;
    return 0;
}

/*
 * Run deflate over the stream's pending input with flush and append what it
 * produces to out. Output goes through a stack buffer rather than space
 * reserved in out: most Z_NO_FLUSH calls produce nothing, and reserving would
 * leave an empty 16 KiB chain behind each time. Returns 0 or -1.
 */
static int deflate_pump(struct gzip_ctx *c, struct evbuffer *out, int flush)
{
    unsigned char buf[GZIP_OUT_CHUNK];

    for (;;) {
        size_t produced;
        int rc;

        c->z.next_out = buf;
        c->z.avail_out = sizeof(buf);
        rc = deflate(&c->z, flush);
        produced = sizeof(buf) - c->z.avail_out;
        if (produced > 0 && evbuffer_add(out, buf, produced) != 0)
            return -1;
        c->bytes_out += produced;
        if (rc == Z_STREAM_END) {
            c->finished = true;
            return 0;
        }
        if (rc == Z_STREAM_ERROR)
            return -1;
        /* Room left over means deflate took all input and has nothing pending. */
        if (c->z.avail_out != 0)
            return flush == Z_FINISH ? -1 : 0;
    }
}

/* Deflate p[0..len) (Z_NO_FLUSH), in pieces zlib's uInt counters can hold. */
static int deflate_bytes(struct gzip_ctx *c, const unsigned char *p, size_t len,
                         struct evbuffer *out)
{
    while (len > 0) {
        uInt chunk = len < UINT_MAX ? (uInt)len : UINT_MAX;

        c->z.next_in = p;
        c->z.avail_in = chunk;
        if (deflate_pump(c, out, Z_NO_FLUSH) != 0)
            return -1;
        c->bytes_in += chunk;
        p += chunk;
        len -= chunk;
    }
    return 0;
}

/* Deflate and drain all of in, extent by extent: the input is never pulled up. */
static int deflate_buffer(struct gzip_ctx *c, struct evbuffer *in, struct evbuffer *out)
{
    struct evbuffer_iovec vec[GZIP_PEEK_VECS];

    while (evbuffer_get_length(in) > 0) {
        int n = evbuffer_peek(in, -1, NULL, vec, GZIP_PEEK_VECS);
        size_t used = 0;

        for (int i = 0; i < n && i < GZIP_PEEK_VECS; i++) {
            if (deflate_bytes(c, vec[i].iov_base, vec[i].iov_len, out) != 0)
                return -1;
            used += vec[i].iov_len;
        }
        evbuffer_drain(in, used);
    }
    return 0;
}

/* ---- callbacks ---- */

static enum pf_verdict gzip_on_request(struct pf_tx *tx, struct pf_slot *s)
{
    struct gzip_ctx *c = s->ctx;

    c->accepts = client_accepts_gzip(tx);
    return PF_NEXT;
}

static enum pf_verdict gzip_on_response(struct pf_tx *tx, struct pf_slot *s)
{
    const struct pf_gzip_conf *conf = s->conf;
    struct gzip_ctx *c = s->ctx;
    int64_t cl = resp_content_length(tx);

    s->skip_body = true; /* unless it compresses, the body passes untouched */
    if (!response_compressible(tx, conf, cl))
        return PF_NEXT;
    /* The representation varies with Accept-Encoding whoever asked this time. */
    vary_add_accept_encoding(tx);
    if (!c->accepts || pf_tx_is_head(tx))
        return PF_NEXT;
    if (pf_tx_status(tx) == 304) { /* RFC 9110 §15.4.5: the 200's ETag, no body to compress */
        etag_weaken(tx);
        return PF_NEXT;
    }
    s->skip_body = false;
    if (deflate_start(tx, conf, c, cl) != 0)
        return PF_FAILED;
    pf_tx_resp_header_set(tx, "Content-Encoding", "gzip");
    pf_tx_resp_header_del(tx, "Content-Length");
    /* Ranges of the origin's bytes do not apply to the gzip stream. */
    pf_tx_resp_header_del(tx, "Accept-Ranges");
    etag_weaken(tx);
    return PF_NEXT;
}

static enum pf_verdict gzip_on_body(struct pf_tx *tx, struct pf_slot *s, struct pf_body *b)
{
    struct gzip_ctx *c = s->ctx;
    uint64_t in0 = c->bytes_in;
    uint64_t out0 = c->bytes_out;
    int rc = 0;

    (void)tx;
    if (!c->active) {
        evbuffer_add_buffer(b->out, b->in);
        return PF_NEXT;
    }
    if (c->finished) {
        if (evbuffer_get_length(b->in) == 0)
            return PF_NEXT;
        pf_debug("gzip: body data after the end of the stream");
        evbuffer_drain(b->in, evbuffer_get_length(b->in));
        return PF_FAILED;
    }
    rc = deflate_buffer(c, b->in, b->out);
    if (rc == 0 && b->eos)
        rc = deflate_pump(c, b->out, Z_FINISH);
    gzip_count(c->bytes_in - in0, c->bytes_out - out0);
    if (rc != 0) {
        /* proxy/chain.c logs the failure once, with the filter's name. */
        pf_debug("gzip: deflate failed: %s", c->z.msg != NULL ? c->z.msg : "?");
        return PF_FAILED;
    }
    return PF_NEXT;
}

static void gzip_on_done(struct pf_tx *tx, struct pf_slot *s)
{
    struct gzip_ctx *c = s->ctx;

    (void)tx;
    if (!c->active)
        return;
    /* Frees nothing (the arena owns the memory) but leaves the stream dead. */
    deflateEnd(&c->z);
    c->active = false;
}

const struct pf_filter_ops pf_filter_gzip = {
    .name = "gzip",
    .ctx_size = sizeof(struct gzip_ctx),
    .conf_parse = gzip_conf_parse,
    .conf_free = gzip_conf_free,
    .on_request = gzip_on_request,
    .on_response = gzip_on_response,
    .on_body = gzip_on_body,
    .on_done = gzip_on_done,
    .metrics = gzip_metrics,
};
