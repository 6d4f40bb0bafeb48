/*
 * HTTP/1.1 request heads (proxy/h1parse.c), in two steps:
 *
 *   pf_h1p_scan_request()  is fed the bytes as they arrive, in any pieces,
 *                          and finds where the head ends; it checks the
 *                          request line (method, target bytes, version) and
 *                          the line structure (CRLF only, no obs-fold) as it
 *                          goes, so a bad head is refused before it is whole;
 *   pf_h1p_parse_request() then reads the whole head once, in place: the
 *                          header fields are cut, checked, trimmed and
 *                          classified (pf_hdr_classify), and what the framing
 *                          rules need (Content-Length, Transfer-Encoding,
 *                          Host, Connection, Expect) is noted in that pass.
 *
 * Errors are HTTP status codes (400). Pure functions, any thread.
 */
#ifndef PF_H1PARSE_H
#define PF_H1PARSE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "proxy/hdrs-t.h"
#include "proxy/head-t.h"

enum {
    PF_H1P_MORE = 0, /* the head goes on: feed more bytes */
    PF_H1P_DONE = 1, /* the head ended (at its final LF) */
};

/* The longest method name http-parser knows ("UNSUBSCRIBE"). */
#define PF_H1P_METHOD_MAX 11

/* Where the scan of a request head is; zeroed (pf_h1p_scan_init) for each head. */
struct pf_h1p_scan {
    uint32_t url_len; /* bytes of the request target so far */
    uint32_t lines;   /* header lines started */
    int method;       /* enum http_method, once the method has ended */
    uint8_t state;    /* where in a line */
    uint8_t rl;       /* where in the request line */
    uint8_t mlen;     /* bytes of the method so far */
    uint8_t vlen;     /* bytes of the version so far */
    uint8_t minor;    /* HTTP/1.minor, once the request line has ended */
    char m[PF_H1P_METHOD_MAX];
    char ver[8];
};

void pf_h1p_scan_init(struct pf_h1p_scan *s);

/*
 * Scan n more bytes of a request head. *used is how many of them belong to
 * the head (all of them unless it ended). Returns PF_H1P_MORE, PF_H1P_DONE,
 * or 400 on a bare CR or LF, obs-fold, whitespace before the first header,
 * an unknown method or a bad byte in it, a control byte in the target, a
 * version other than HTTP/1.0 or HTTP/1.1.
 */
int pf_h1p_scan_request(struct pf_h1p_scan *s, const char *data, size_t n, size_t *used);

/* What pf_h1p_parse_request() found. */
struct pf_h1p_head {
    struct pf_hdr *v; /* in: room for at least scan->lines headers */
    unsigned n;
    char *url; /* NUL-terminated, url_len bytes */
    uint32_t url_len;
    const char *host; /* the first Host value, NULL if none */
    uint32_t host_len;
    const char *expect;  /* the first Expect value, NULL if none */
    uint64_t length;     /* the Content-Length, when there is exactly one and it is valid */
    unsigned n_cl;       /* Content-Length fields (never wraps: a count is a framing rule) */
    unsigned n_te;       /* Transfer-Encoding fields */
    unsigned n_host;     /* Host fields */
    bool cl_bad;         /* the (first) Content-Length is not 1 to 18 digits */
    bool te_chunked;     /* every Transfer-Encoding value is exactly "chunked" */
    bool conn_close;     /* a Connection field lists "close" */
    bool conn_keepalive; /* a Connection field lists "keep-alive" */
    bool underscore;     /* a field name has '_' */
};

/*
 * Read the complete head buf[0..len) that scan found (it ends with the empty
 * line), in place: names, values and the target are NUL-terminated inside
 * buf, values without surrounding whitespace. Returns 0, or 400 for a field
 * name that is not a token (empty, whitespace before the colon), a line
 * without a colon, a control byte or DEL in a value.
 */
int pf_h1p_parse_request(const struct pf_h1p_scan *scan, char *buf, size_t len,
                         struct pf_h1p_head *h);

/* ---- response heads (from an upstream) ---- */

/* Where the scan of a response head is; zeroed (pf_h1p_rscan_init) for each head. */
struct pf_h1p_rscan {
    uint32_t lines; /* lines started, the status line included */
    uint8_t state;  /* where in a line */
    bool started;   /* the status line has begun (empty lines before it are skipped) */
};

void pf_h1p_rscan_init(struct pf_h1p_rscan *s);

/*
 * Scan n more bytes of a response head: lines end with CRLF or a bare LF (as
 * http-parser accepted), a CR is only ever followed by LF. *used as for
 * pf_h1p_scan_request(). Returns PF_H1P_MORE, PF_H1P_DONE or 502.
 */
int pf_h1p_scan_response(struct pf_h1p_rscan *s, const char *data, size_t n, size_t *used);

/* What pf_h1p_parse_response() found. */
struct pf_h1p_resp {
    struct pf_head_ent *f; /* in: room for at least rscan->lines fields; offsets into buf */
    unsigned n;
    int status;
    uint8_t major, minor;
    uint64_t length;     /* the Content-Length, if has_length */
    bool has_length;     /* exactly one valid Content-Length */
    bool chunked;        /* Transfer-Encoding whose last coding is chunked */
    bool has_te;         /* a Transfer-Encoding field */
    bool conn_close;     /* a Connection field lists "close" */
    bool conn_keepalive; /* a Connection field lists "keep-alive" */
};

/*
 * Read the complete response head buf[0..len) in place, as for requests;
 * obs-fold joins the lines (the fold's line break removed, its whitespace
 * kept), whitespace between a field name and its colon is removed (RFC 9112
 * §5.1). Returns 0, or 502: a status line other than "HTTP/d.d SP ddd", a
 * name that is not a token, a control byte in a value, a Content-Length that
 * is not 1 to 18 digits or comes twice, Content-Length with
 * Transfer-Encoding.
 */
int pf_h1p_parse_response(char *buf, size_t len, struct pf_h1p_resp *r);

/* The method's name ("GET"), for an enum http_method. */
const char *pf_h1p_method_name(int method);

#endif /* PF_H1PARSE_H */
