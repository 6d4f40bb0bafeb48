/*
 * pf-origin: the scriptable HTTP/1.1 origin of the end-to-end tests, the
 * benchmarks and `make run`.
 *
 *   pf-origin [--listen ADDR]...     ADDR: host:port, [v6]:port or unix:/path
 *                                    (default 127.0.0.1:3000)
 *
 * Single-threaded, keep-alive and pipelining, no per-request logging. What a
 * response looks like is chosen by the request's query string, on any path:
 *
 *   status=N        status code (default 200)
 *   size=N          body of N bytes, byte i = 'a' + i % 26
 *                   (default body: "hello from pf-origin\n")
 *   body=TEXT       this body instead
 *   type=T          Content-Type (default text/plain; empty = none)
 *   header=N:V      extra response header line, verbatim; repeatable
 *   chunked=1       Transfer-Encoding: chunked (close-delimited to HTTP/1.0)
 *   close=1         close-delimited body: no Content-Length, close after
 *   chunk=N         write the body in pieces of N bytes (one chunk each)
 *   chunk_delay=MS  wait this long between pieces
 *   delay=MS        wait this long before the response head
 *   interim=N       first N "100 Continue" interim responses, one every
 *                   interim_delay=MS (default 1000)
 *   drip=MS         instead of the response: "HTTP/1.1 200 OK", a
 *                   Content-Length of 5, Connection: close and "hello",
 *                   written one byte every MS
 *   reset=1         no answer: close with RST (SO_LINGER 0)
 *   reset_body=N    close with RST once N bytes of the request body have arrived
 *   hang=1          never answer
 *   partial=N       head with Content-Length max(size, N + 1), N bytes, RST
 *   bad=1           a garbage, non-HTTP answer, then close
 *   lf=1            response head lines end in a bare LF
 *   expect=ignore   no "100 Continue" for "Expect: 100-continue"
 *   echo=1          same as path /echo
 *   etag=V          ETag: "V"; a request whose If-None-Match lists "V" (or
 *                   W/"V", or *) gets 304 Not Modified without a body
 *
 * Values are URL-decoded ('+' is a space). Special paths:
 *
 *   /echo (or any path whose last segment is "echo")
 *       200 application/json {"method", "path", "query", "url",
 *       "http_version", "peer", "headers": [[name, value], ...],
 *       "body_length", "body_fnv1a64" (hex FNV-1a 64 of the body), "body"
 *       (only when at most 64 KiB and valid UTF-8)}
 *   /echo?raw=1
 *       streams the request body back, byte-exact and as it arrives
 *       (chunked; close-delimited to HTTP/1.0)
 *   /__stats
 *       {"connections": accepted, "active": open now, "requests": answered}
 *   /__reset_stats
 *       zeroes "connections" and "requests", then answers as /__stats
 *
 * Connections whose first request is for /__stats or /__reset_stats, and
 * those requests, are not counted, so a test that reads the counters on a
 * fresh connection sees only the traffic it caused.
 *
 * Every response carries X-Origin-Seq: a number that grows by one per
 * response, so a test can tell whether a response came from the origin.
 *
 * PF_ORIGIN_SELFTEST=leak (or =ubsan) in the environment makes pf-origin lose
 * a small allocation (or overflow an int) first thing, even before it reads
 * its arguments: a sanitizer build then reports it, which the e2e harness's
 * self-test must notice.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <event2/util.h>
#include <http_parser.h>

#define OUT_HIGH       (256 * 1024)  /* stop producing body above this much queued output */
#define IN_HIGH        (1024 * 1024) /* stop reading above this much unparsed input */
#define PIECE_MAX      65536         /* largest single reference into pattern[] */
#define ECHO_BODY_MAX  (64 * 1024)   /* /echo returns the body as text up to this */
#define HEAD_MAX       (1024 * 1024) /* request line + headers */
#define MAX_XHEADERS   32
#define MAX_LISTENERS  16
#define PARTIAL_RST_MS 20 /* let the peer read partial=N bytes before the RST */
#define DEFAULT_BODY   "hello from pf-origin\n"

enum framing {
    FR_LENGTH = 0, /* Content-Length */
    FR_CHUNKED,    /* Transfer-Encoding: chunked */
    FR_CLOSE,      /* ends when the connection closes */
    FR_NONE,       /* no body follows (HEAD, 1xx, 204, 304) */
};

enum action {
    ACT_ANSWER = 0,
    ACT_RESET,
    ACT_HANG,
    ACT_PARTIAL,
    ACT_BAD,
};

enum phase {
    PH_IDLE = 0,  /* no response in progress */
    PH_DELAY,     /* timer runs until the head is due */
    PH_BODY,      /* writing the body; resumed by the write callback */
    PH_PAUSE,     /* timer runs between two pieces (chunk_delay) */
    PH_HANG,      /* never answers */
    PH_PARTIAL,   /* partial body queued; waiting for it to be flushed */
    PH_PARTIAL_2, /* flushed; timer runs until the RST */
    PH_INTERIM,   /* timer runs until the next interim response or the head */
    PH_DRIP,      /* timer runs until the next byte of the dripped response */
};

enum kind {
    K_PLAIN = 0,
    K_ECHO,
    K_STATS,
    K_RESET_STATS,
};

struct plan {                       /* what the query string asks for */
    int status;                     /* status code */
    int64_t size;                   /* pattern body size; -1 = none */
    bool chunked;                   /* chunked=1 */
    bool close;                     /* close=1 */
    bool lf;                        /* lf=1 */
    bool raw;                       /* raw=1 (echo) */
    bool echo;                      /* echo=1 */
    bool no_expect;                 /* expect=ignore */
    size_t chunk;                   /* write piece size; 0 = PIECE_MAX */
    int delay_ms;                   /* before the head */
    int interim;                    /* 100 Continue responses before the head */
    int interim_ms;                 /* between them */
    int drip_ms;                    /* between the bytes of a dripped response */
    int chunk_delay_ms;             /* between pieces */
    enum action action;             /* reset, hang, partial, bad */
    size_t partial;                 /* partial=N */
    uint64_t reset_body;            /* reset_body=N; 0 = never */
    const char *type;               /* Content-Type; NULL = default */
    const char *body;               /* body=; NULL = none */
    const char *xhdr[MAX_XHEADERS]; /* header= lines */
    int nxhdr;                      /* entries in xhdr */
    const char *etag;               /* etag=; NULL = none */
    char etag_line[160];            /* "ETag: \"V\"", one of xhdr */
};

struct strbuf {
    char *p;    /* malloc'd */
    size_t len; /* bytes used */
    size_t cap; /* bytes allocated */
};

struct hdr_ref {      /* one request header, as offsets into conn.hdrs */
    size_t name;      /* offset of the name */
    size_t name_len;  /* its length */
    size_t value;     /* offset of the value */
    size_t value_len; /* its length */
};

struct conn {
    struct conn *prev;           /* in g.conns */
    struct conn *next;           /* in g.conns */
    struct bufferevent *bev;     /* the socket */
    struct event *timer;         /* delay, chunk_delay, partial RST */
    http_parser parser;          /* HTTP_REQUEST */
    char peer[INET6_ADDRSTRLEN]; /* client address, "unix" for unix sockets */
    uint64_t generation;         /* g.generation when it was counted */
    bool counted;                /* counted in g.active */
    unsigned nreq;               /* requests started on this connection */
    /* the request being parsed */
    struct strbuf url;     /* request target */
    struct strbuf hdrs;    /* header names and values, back to back */
    struct strbuf query;   /* decoded query string, NUL-separated */
    struct hdr_ref *h;     /* headers */
    int nh;                /* headers used */
    int caph;              /* headers allocated */
    bool in_value;         /* the last header callback was a value */
    size_t path_off;       /* path within url */
    size_t path_len;       /* its length */
    enum kind kind;        /* what the path asks for */
    bool head;             /* HEAD request */
    bool keep_alive;       /* the request allows keep-alive */
    uint64_t body_len;     /* request body bytes */
    uint64_t body_hash;    /* FNV-1a 64 of the request body */
    struct evbuffer *body; /* first ECHO_BODY_MAX body bytes (echo) */
    int err_status;        /* status to answer a parse error with */
    /* the response */
    struct plan plan;     /* from the query string */
    enum phase phase;     /* where the response is */
    int interims_sent;    /* interim= responses sent for this request */
    size_t drip_off;      /* bytes of the dripped response written */
    enum framing framing; /* how the body being written is framed */
    bool ka;              /* keep the connection after this response */
    bool raw_started;     /* echo?raw=1 head was sent */
    struct evbuffer *src; /* body to send; unused for a pattern body */
    bool use_src;         /* body comes from src, not pattern[] */
    uint64_t remaining;   /* body bytes still to write */
    uint64_t offset;      /* body bytes written */
    /* connection state */
    bool busy;        /* a response is in progress: parsing waits */
    bool closing;     /* close once the output is flushed */
    bool kill;        /* close now */
    bool rst;         /* ... with RST */
    bool eof;         /* the peer closed its side */
    bool read_paused; /* raw echo: peer reads slower than it writes */
};

static struct {
    struct event_base *base;
    struct evconnlistener *listeners[MAX_LISTENERS];
    char *unix_paths[MAX_LISTENERS]; /* to unlink at exit */
    int nlisteners;
    struct conn *conns;   /* every open connection */
    uint64_t connections; /* accepted since start or reset */
    uint64_t active;      /* open now */
    uint64_t requests;    /* requests since start or reset */
    uint64_t generation;  /* bumped by /__reset_stats */
    uint64_t seq;         /* X-Origin-Seq; never reset */
} g;

static char pattern[PIECE_MAX + 26];
static http_parser_settings settings;

/* ---- small helpers ---- */

static void *xrealloc(void *p, size_t n)
{
    p = realloc(p, n);
    if (p == NULL) {
        fprintf(stderr, "pf-origin: out of memory\n");
        abort();
    }
    return p;
}

static int sb_add(struct strbuf *b, const char *s, size_t n)
{
    if (b->len + n + 1 > HEAD_MAX)
        return -1;
    if (b->len + n + 1 > b->cap) {
        b->cap = (b->len + n + 1) * 2;
        b->p = xrealloc(b->p, b->cap);
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
    return 0;
}

static struct evbuffer *out(struct conn *c)
{
    return bufferevent_get_output(c->bev);
}

static const char *reason(int status)
{
    const char *r = http_status_str((enum http_status)status);

    return r[0] == '<' ? "Unknown" : r;
}

static bool is_http10(const struct conn *c)
{
    return c->parser.http_major == 1 && c->parser.http_minor == 0;
}

static void timer_start(struct conn *c, int ms)
{
    struct timeval tv = {ms / 1000, (ms % 1000) * 1000};

    evtimer_add(c->timer, &tv);
}

/* Length of the valid UTF-8 sequence of 2 to 4 bytes at s, or 0. */
static size_t utf8_len(const unsigned char *s, size_t n)
{
    size_t len;
    uint32_t cp;

    if (s[0] >= 0xc2 && s[0] <= 0xdf) {
        len = 2;
        cp = s[0] & 0x1f;
    } else if ((s[0] & 0xf0) == 0xe0) {
        len = 3;
        cp = s[0] & 0x0f;
    } else if (s[0] >= 0xf0 && s[0] <= 0xf4) {
        len = 4;
        cp = s[0] & 0x07;
    } else {
        return 0;
    }
    if (n < len)
        return 0;
    for (size_t i = 1; i < len; i++) {
        if ((s[i] & 0xc0) != 0x80)
            return 0;
        cp = cp << 6 | (s[i] & 0x3f);
    }
    if (len == 3 && (cp < 0x800 || (cp >= 0xd800 && cp <= 0xdfff)))
        return 0;
    if (len == 4 && (cp < 0x10000 || cp > 0x10ffff))
        return 0;
    return len;
}

static bool utf8_valid(const unsigned char *s, size_t n)
{
    for (size_t i = 0; i < n;) {
        size_t u = s[i] < 0x80 ? 1 : utf8_len(s + i, n - i);

        if (u == 0)
            return false;
        i += u;
    }
    return true;
}

/* A JSON string; bytes that are not valid UTF-8 are taken as Latin-1. */
static void json_str(struct evbuffer *o, const char *str, size_t n)
{
    const unsigned char *s = (const unsigned char *)str;

    evbuffer_add(o, "\"", 1);
    for (size_t i = 0; i < n;) {
        size_t u = s[i] >= 0x80 ? utf8_len(s + i, n - i) : 0;

        if (u > 0) {
            evbuffer_add(o, s + i, u);
            i += u;
            continue;
        }
        if (s[i] == '"' || s[i] == '\\')
            evbuffer_add_printf(o, "\\%c", s[i]);
        else if (s[i] < 0x20 || s[i] >= 0x7f)
            evbuffer_add_printf(o, "\\u%04x", s[i]);
        else
            evbuffer_add(o, s + i, 1);
        i++;
    }
    evbuffer_add(o, "\"", 1);
}

/* ---- query string ---- */

static int hexval(int ch)
{
    if (ch >= '0' && ch <= '9')
        return ch - '0';
    if (ch >= 'a' && ch <= 'f')
        return ch - 'a' + 10;
    if (ch >= 'A' && ch <= 'F')
        return ch - 'A' + 10;
    return -1;
}

/* Decode %XX and '+' in place. */
static void url_decode(char *s)
{
    char *d = s;

    for (; *s; s++) {
        if (*s == '+') {
            *d++ = ' ';
        } else if (*s == '%' && hexval(s[1]) >= 0 && hexval(s[2]) >= 0) {
            *d++ = (char)(hexval(s[1]) << 4 | hexval(s[2]));
            s += 2;
        } else {
            *d++ = *s;
        }
    }
    *d = '\0';
}

static long long num(const char *v, long long lo, long long hi, long long dflt)
{
    char *end;
    long long x;

    errno = 0;
    x = strtoll(v, &end, 10);
    if (end == v || *end != '\0' || errno != 0)
        return dflt;
    return x < lo ? lo : x > hi ? hi : x;
}

static void plan_set(struct plan *p, const char *k, const char *v)
{
    bool on = strcmp(v, "0") != 0 && strcmp(v, "false") != 0;

    if (!strcmp(k, "status"))
        p->status = (int)num(v, 100, 999, 200);
    else if (!strcmp(k, "size"))
        p->size = num(v, 0, INT64_MAX, -1);
    else if (!strcmp(k, "body"))
        p->body = v;
    else if (!strcmp(k, "type"))
        p->type = v;
    else if (!strcmp(k, "header") && p->nxhdr < MAX_XHEADERS && strchr(v, ':'))
        p->xhdr[p->nxhdr++] = v;
    else if (!strcmp(k, "chunked"))
        p->chunked = on;
    else if (!strcmp(k, "close"))
        p->close = on;
    else if (!strcmp(k, "chunk"))
        p->chunk = (size_t)num(v, 0, INT32_MAX, 0);
    else if (!strcmp(k, "chunk_delay"))
        p->chunk_delay_ms = (int)num(v, 0, INT32_MAX, 0);
    else if (!strcmp(k, "delay"))
        p->delay_ms = (int)num(v, 0, INT32_MAX, 0);
    else if (!strcmp(k, "interim"))
        p->interim = (int)num(v, 0, 1000, 0);
    else if (!strcmp(k, "interim_delay"))
        p->interim_ms = (int)num(v, 0, INT32_MAX, 1000);
    else if (!strcmp(k, "drip"))
        p->drip_ms = (int)num(v, 1, INT32_MAX, 0);
    else if (!strcmp(k, "reset") && on)
        p->action = ACT_RESET;
    else if (!strcmp(k, "reset_body"))
        p->reset_body = (uint64_t)num(v, 0, INT64_MAX, 0);
    else if (!strcmp(k, "hang") && on)
        p->action = ACT_HANG;
    else if (!strcmp(k, "bad") && on)
        p->action = ACT_BAD;
    else if (!strcmp(k, "partial")) {
        p->action = ACT_PARTIAL;
        p->partial = (size_t)num(v, 0, INT32_MAX, 0);
    } else if (!strcmp(k, "lf"))
        p->lf = on;
    else if (!strcmp(k, "raw"))
        p->raw = on;
    else if (!strcmp(k, "echo"))
        p->echo = on;
    else if (!strcmp(k, "expect"))
        p->no_expect = !strcmp(v, "ignore");
    else if (!strcmp(k, "etag") && p->nxhdr < MAX_XHEADERS) {
        p->etag = v;
        snprintf(p->etag_line, sizeof(p->etag_line), "ETag: \"%s\"", v);
        p->xhdr[p->nxhdr++] = p->etag_line;
    }
}

/* Fill c->plan from the query string q (n bytes, not decoded). */
static void plan_parse(struct conn *c, const char *q, size_t n)
{
    struct plan *p = &c->plan;
    char *s, *next;

    memset(p, 0, sizeof(*p));
    p->status = 200;
    p->size = -1;
    p->interim_ms = 1000;
    c->query.len = 0;
    if (n == 0 || sb_add(&c->query, q, n) != 0)
        return;
    for (s = c->query.p; s != NULL; s = next) {
        char *v;

        next = strchr(s, '&');
        if (next != NULL)
            *next++ = '\0';
        v = strchr(s, '=');
        if (v != NULL)
            *v++ = '\0';
        else
            v = s + strlen(s);
        url_decode(s);
        url_decode(v);
        plan_set(p, s, v);
    }
}

/* ---- response ---- */

static void resp_head(struct conn *c, enum framing fr, uint64_t len, const char *dflt_type)
{
    struct evbuffer *o = out(c);
    const struct plan *p = &c->plan;
    const char *eol = p->lf ? "\n" : "\r\n";
    const char *type = p->type != NULL ? p->type : dflt_type;

    evbuffer_add_printf(o, "HTTP/1.1 %d %s%s", p->status, reason(p->status), eol);
    if (fr != FR_NONE && type[0] != '\0')
        evbuffer_add_printf(o, "Content-Type: %s%s", type, eol);
    if (fr == FR_LENGTH)
        evbuffer_add_printf(o, "Content-Length: %" PRIu64 "%s", len, eol);
    else if (fr == FR_CHUNKED)
        evbuffer_add_printf(o, "Transfer-Encoding: chunked%s", eol);
    if (!c->ka)
        evbuffer_add_printf(o, "Connection: close%s", eol);
    else if (is_http10(c))
        evbuffer_add_printf(o, "Connection: keep-alive%s", eol);
    evbuffer_add_printf(o, "X-Origin-Seq: %" PRIu64 "%s", ++g.seq, eol);
    for (int i = 0; i < p->nxhdr; i++)
        evbuffer_add_printf(o, "%s%s", p->xhdr[i], eol);
    evbuffer_add(o, eol, strlen(eol));
}

static void stats_json(struct evbuffer *o)
{
    evbuffer_add_printf(
        o, "{\"connections\": %" PRIu64 ", \"active\": %" PRIu64 ", \"requests\": %" PRIu64 "}\n",
        g.connections, g.active, g.requests);
}

static void echo_json(struct conn *c, struct evbuffer *o)
{
    const char *url = c->url.p != NULL ? c->url.p : "";
    size_t qoff = c->path_off + c->path_len;
    unsigned char *body;

    evbuffer_add_printf(o, "{\"method\": \"%s\", \"path\": ", http_method_str(c->parser.method));
    json_str(o, url + c->path_off, c->path_len);
    evbuffer_add(o, ", \"query\": ", 11);
    if (qoff < c->url.len && url[qoff] == '?')
        qoff++;
    json_str(o, url + qoff, strcspn(url + qoff, "#"));
    evbuffer_add(o, ", \"url\": ", 9);
    json_str(o, url, c->url.len);
    evbuffer_add_printf(o, ", \"http_version\": \"%d.%d\", \"peer\": \"%s\", \"headers\": [",
                        c->parser.http_major, c->parser.http_minor, c->peer);
    for (int i = 0; i < c->nh; i++) {
        evbuffer_add(o, i ? ", [" : "[", i ? 3 : 1);
        json_str(o, c->hdrs.p + c->h[i].name, c->h[i].name_len);
        evbuffer_add(o, ", ", 2);
        json_str(o, c->hdrs.p + c->h[i].value, c->h[i].value_len);
        evbuffer_add(o, "]", 1);
    }
    evbuffer_add_printf(o, "], \"body_length\": %" PRIu64 ", \"body_fnv1a64\": \"%016" PRIx64 "\"",
                        c->body_len, c->body_hash);
    body = evbuffer_pullup(c->body, -1);
    if (c->body_len <= ECHO_BODY_MAX && utf8_valid(body, evbuffer_get_length(c->body))) {
        evbuffer_add(o, ", \"body\": ", 10);
        json_str(o, (const char *)body, evbuffer_get_length(c->body));
    }
    evbuffer_add(o, "}\n", 2);
}

/* Put the body into c->src (or choose the pattern); return its length. */
static uint64_t body_source(struct conn *c, const char **type)
{
    struct evbuffer *src = c->src;

    evbuffer_drain(src, evbuffer_get_length(src));
    c->use_src = true;
    if (c->kind == K_STATS || c->kind == K_RESET_STATS) {
        stats_json(src);
        *type = "application/json";
    } else if (c->kind == K_ECHO) {
        echo_json(c, src);
        *type = "application/json";
    } else if (c->plan.body != NULL) {
        evbuffer_add(src, c->plan.body, strlen(c->plan.body));
    } else if (c->plan.size >= 0) {
        c->use_src = false;
        return (uint64_t)c->plan.size;
    } else {
        evbuffer_add_reference(src, DEFAULT_BODY, strlen(DEFAULT_BODY), NULL, NULL);
    }
    return evbuffer_get_length(src);
}

static void pattern_add(struct evbuffer *o, uint64_t offset, size_t n)
{
    while (n > 0) {
        size_t k = n < PIECE_MAX ? n : PIECE_MAX;

        evbuffer_add_reference(o, pattern + offset % 26, k, NULL, NULL);
        offset += k;
        n -= k;
    }
}

static void resp_done(struct conn *c)
{
    c->busy = false;
    c->phase = PH_IDLE;
    if (!c->ka)
        c->closing = true;
}

/* Write body pieces until done, the output is full or a chunk_delay is due. */
static void resp_pump(struct conn *c)
{
    struct evbuffer *o = out(c);
    size_t piece = c->plan.chunk > 0 ? c->plan.chunk : PIECE_MAX;

    while (c->remaining > 0) {
        size_t n = c->remaining < piece ? (size_t)c->remaining : piece;

        if (evbuffer_get_length(o) >= OUT_HIGH)
            return; /* write_cb resumes */
        if (c->framing == FR_CHUNKED)
            evbuffer_add_printf(o, "%zx\r\n", n);
        if (c->use_src)
            evbuffer_remove_buffer(c->src, o, n);
        else
            pattern_add(o, c->offset, n);
        if (c->framing == FR_CHUNKED)
            evbuffer_add(o, "\r\n", 2);
        c->offset += n;
        c->remaining -= n;
        if (c->plan.chunk_delay_ms > 0 && c->remaining > 0) {
            c->phase = PH_PAUSE;
            timer_start(c, c->plan.chunk_delay_ms);
            return;
        }
    }
    if (c->framing == FR_CHUNKED)
        evbuffer_add(o, "0\r\n\r\n", 5);
    resp_done(c);
}

static void resp_answer(struct conn *c)
{
    const char *type = "text/plain";
    uint64_t len = body_source(c, &type);
    int st = c->plan.status;
    bool nobody = st < 200 || st == 204 || st == 304;
    enum framing fr;

    if (nobody)
        fr = FR_NONE;
    else if (c->plan.close || (c->plan.chunked && is_http10(c)))
        fr = FR_CLOSE;
    else if (c->plan.chunked)
        fr = FR_CHUNKED;
    else
        fr = FR_LENGTH;
    c->ka = c->keep_alive && !c->plan.close && fr != FR_CLOSE && !c->parser.upgrade;
    resp_head(c, fr, len, type);
    c->framing = (nobody || c->head) ? FR_NONE : fr;
    c->remaining = c->framing == FR_NONE ? 0 : len;
    c->offset = 0;
    c->phase = PH_BODY;
    resp_pump(c);
}

/* drip=: one more byte of a fixed response; the last one ends it. */
static void drip_step(struct conn *c)
{
    static const char resp[] =
        "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello";

    evbuffer_add(out(c), resp + c->drip_off++, 1);
    if (c->drip_off < sizeof(resp) - 1) {
        c->phase = PH_DRIP;
        timer_start(c, c->plan.drip_ms);
        return;
    }
    c->ka = false;
    resp_done(c);
}

/* interim=: one more 100 Continue, the next one (or the head) after interim_delay. */
static void interim_step(struct conn *c)
{
    evbuffer_add_printf(out(c), "HTTP/1.1 100 Continue\r\n\r\n");
    c->interims_sent++;
    c->phase = PH_INTERIM;
    timer_start(c, c->plan.interim_ms);
}

/* The head is due (now or after delay=): act as the plan says. */
static void resp_fire(struct conn *c)
{
    static const char garbage[] = "garbage: this is not an HTTP response\r\n\r\n";

    switch (c->plan.action) {
    case ACT_RESET:
        c->kill = c->rst = true;
        break;
    case ACT_BAD:
        evbuffer_add(out(c), garbage, sizeof(garbage) - 1);
        c->ka = false;
        resp_done(c);
        break;
    case ACT_PARTIAL: {
        uint64_t size = c->plan.size > 0 ? (uint64_t)c->plan.size : 0;

        c->ka = true; /* no Connection: close: the RST is the surprise */
        resp_head(c, FR_LENGTH, size > c->plan.partial ? size : c->plan.partial + 1, "text/plain");
        pattern_add(out(c), 0, c->plan.partial);
        c->phase = PH_PARTIAL;
        break;
    }
    default:
        if (c->interims_sent < c->plan.interim)
            interim_step(c);
        else if (c->plan.drip_ms > 0)
            drip_step(c);
        else
            resp_answer(c);
        break;
    }
}

static void resp_start(struct conn *c)
{
    c->busy = true;
    c->interims_sent = 0;
    c->drip_off = 0;
    if (c->plan.action == ACT_HANG) {
        c->phase = PH_HANG;
    } else if (c->plan.delay_ms > 0) {
        c->phase = PH_DELAY;
        timer_start(c, c->plan.delay_ms);
    } else {
        resp_fire(c);
    }
}

static void reply_error(struct conn *c, int status)
{
    if (c->raw_started) {
        c->kill = true; /* a response is half sent: nothing sensible to add */
        return;
    }
    evbuffer_add_printf(out(c), "HTTP/1.1 %d %s\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                        status, reason(status));
    c->closing = true;
}

/* ---- echo?raw=1 ---- */

static void raw_begin(struct conn *c)
{
    enum framing fr = is_http10(c) ? FR_CLOSE : FR_CHUNKED;

    c->ka = c->keep_alive && !c->plan.close && fr == FR_CHUNKED && !c->parser.upgrade;
    resp_head(c, fr, 0, "application/octet-stream");
    c->framing = c->head ? FR_NONE : fr;
    c->raw_started = true;
}

static void raw_body(struct conn *c, const char *at, size_t len)
{
    struct evbuffer *o = out(c);

    if (c->framing == FR_CHUNKED)
        evbuffer_add_printf(o, "%zx\r\n", len);
    if (c->framing != FR_NONE)
        evbuffer_add(o, at, len);
    if (c->framing == FR_CHUNKED)
        evbuffer_add(o, "\r\n", 2);
}

static void raw_end(struct conn *c)
{
    if (c->framing == FR_CHUNKED)
        evbuffer_add(out(c), "0\r\n\r\n", 5);
    c->raw_started = false;
    resp_done(c);
}

/* ---- request parsing ---- */

static int hdr_find(const struct conn *c, const char *name)
{
    size_t n = strlen(name);

    for (int i = 0; i < c->nh; i++) {
        if (c->h[i].name_len == n && !strncasecmp(c->hdrs.p + c->h[i].name, name, n))
            return i;
    }
    return -1;
}

static int on_message_begin(http_parser *p)
{
    struct conn *c = p->data;

    c->url.len = 0;
    c->hdrs.len = 0;
    c->nh = 0;
    c->in_value = true;
    c->kind = K_PLAIN;
    c->body_len = 0;
    c->body_hash = 14695981039346656037ULL;
    evbuffer_drain(c->body, evbuffer_get_length(c->body));
    c->err_status = 0;
    c->nreq++;
    return 0;
}

static int on_url(http_parser *p, const char *at, size_t len)
{
    struct conn *c = p->data;

    if (sb_add(&c->url, at, len) != 0) {
        c->err_status = 414;
        return -1;
    }
    return 0;
}

static int on_header_field(http_parser *p, const char *at, size_t len)
{
    struct conn *c = p->data;

    if (c->in_value) {
        if (c->nh == c->caph) {
            c->caph = c->caph ? c->caph * 2 : 16;
            c->h = xrealloc(c->h, c->caph * sizeof(*c->h));
        }
        c->h[c->nh++] = (struct hdr_ref){c->hdrs.len, 0, c->hdrs.len, 0};
        c->in_value = false;
    }
    c->h[c->nh - 1].name_len += len;
    if (sb_add(&c->hdrs, at, len) != 0) {
        c->err_status = 431;
        return -1;
    }
    return 0;
}

static int on_header_value(http_parser *p, const char *at, size_t len)
{
    struct conn *c = p->data;

    if (!c->in_value) {
        c->h[c->nh - 1].value = c->hdrs.len;
        c->in_value = true;
    }
    c->h[c->nh - 1].value_len += len;
    if (sb_add(&c->hdrs, at, len) != 0) {
        c->err_status = 431;
        return -1;
    }
    return 0;
}

static void split_url(struct conn *c)
{
    struct http_parser_url u;
    const char *url = c->url.p != NULL ? c->url.p : "";

    http_parser_url_init(&u);
    c->path_off = 0;
    c->path_len = strcspn(url, "?#");
    if (http_parser_parse_url(url, c->url.len, c->parser.method == HTTP_CONNECT, &u) == 0) {
        c->path_off = u.field_data[UF_PATH].off;
        c->path_len = u.field_data[UF_PATH].len;
        if (u.field_set & (1 << UF_QUERY)) {
            plan_parse(c, url + u.field_data[UF_QUERY].off, u.field_data[UF_QUERY].len);
            return;
        }
    } else if (url[c->path_len] == '?') {
        const char *q = url + c->path_len + 1;

        plan_parse(c, q, strcspn(q, "#"));
        return;
    }
    plan_parse(c, "", 0);
}

static enum kind path_kind(const struct conn *c)
{
    const char *path = c->url.p + c->path_off;
    size_t n = c->path_len;

    if (n == 8 && !memcmp(path, "/__stats", 8))
        return K_STATS;
    if (n == 14 && !memcmp(path, "/__reset_stats", 14))
        return K_RESET_STATS;
    if (c->plan.echo || (n >= 5 && !memcmp(path + n - 5, "/echo", 5)))
        return K_ECHO;
    return K_PLAIN;
}

/* Does If-None-Match (request header i) list the plan's etag, weakly compared, or "*"? */
static bool inm_lists(const struct conn *c, int i)
{
    char want[160];
    const char *v = c->hdrs.p + c->h[i].value;
    size_t n = c->h[i].value_len;
    size_t wl = (size_t)snprintf(want, sizeof(want), "\"%s\"", c->plan.etag);

    if (n == 1 && v[0] == '*')
        return true;
    for (size_t k = 0; k + wl <= n; k++) {
        if (!memcmp(v + k, want, wl))
            return true;
    }
    return false;
}

static int on_headers_complete(http_parser *p)
{
    struct conn *c = p->data;
    int i;

    split_url(c);
    c->kind = path_kind(c);
    c->head = p->method == HTTP_HEAD;
    c->keep_alive = http_should_keep_alive(p);
    if (c->nreq == 1 && c->counted && (c->kind == K_STATS || c->kind == K_RESET_STATS)) {
        c->counted = false;
        g.active--;
        if (c->generation == g.generation)
            g.connections--;
    }
    i = hdr_find(c, "If-None-Match");
    if (i >= 0 && c->plan.etag != NULL && inm_lists(c, i))
        c->plan.status = 304;
    i = hdr_find(c, "Expect");
    if (i >= 0 && !c->plan.no_expect && !is_http10(c) && c->h[i].value_len == 12 &&
        !strncasecmp(c->hdrs.p + c->h[i].value, "100-continue", 12))
        evbuffer_add_printf(out(c), "HTTP/1.1 100 Continue%s", c->plan.lf ? "\n\n" : "\r\n\r\n");
    if (c->kind == K_ECHO && c->plan.raw)
        raw_begin(c);
    return 0;
}

static int on_body(http_parser *p, const char *at, size_t len)
{
    struct conn *c = p->data;
    size_t kept = evbuffer_get_length(c->body);

    if (c->plan.reset_body != 0 && c->body_len + len >= c->plan.reset_body) {
        c->kill = c->rst = true; /* conn_process stops at once: no answer */
        http_parser_pause(p, 1);
        return 0;
    }
    if (c->raw_started) {
        raw_body(c, at, len);
        return 0;
    }
    if (c->kind == K_ECHO) {
        for (size_t i = 0; i < len; i++)
            c->body_hash = (c->body_hash ^ (unsigned char)at[i]) * 1099511628211ULL;
        if (kept < ECHO_BODY_MAX + 1)
            evbuffer_add(c->body, at,
                         len < ECHO_BODY_MAX + 1 - kept ? len : ECHO_BODY_MAX + 1 - kept);
    }
    c->body_len += len;
    return 0;
}

static int on_message_complete(http_parser *p)
{
    http_parser_pause(p, 1); /* one response at a time; conn_process goes on */
    return 0;
}

/* A whole request has been read: answer it. */
static void request_done(struct conn *c)
{
    if (c->kind != K_STATS && c->kind != K_RESET_STATS)
        g.requests++;
    if (c->kind == K_RESET_STATS) {
        g.connections = 0;
        g.requests = 0;
        g.generation++;
    }
    if (c->parser.upgrade)
        c->keep_alive = false; /* what follows is not HTTP */
    if (c->raw_started) {
        c->busy = true;
        raw_end(c);
        return;
    }
    resp_start(c);
}

/* Parse what has arrived, answering requests one at a time. */
static void conn_process(struct conn *c)
{
    struct evbuffer *in = bufferevent_get_input(c->bev);

    while (!c->busy && !c->closing && !c->kill && !c->read_paused) {
        struct evbuffer_iovec v;
        enum http_errno err;
        size_t n;

        if (evbuffer_peek(in, -1, NULL, &v, 1) < 1 || v.iov_len == 0)
            break;
        n = http_parser_execute(&c->parser, &settings, v.iov_base, v.iov_len);
        err = HTTP_PARSER_ERRNO(&c->parser);
        evbuffer_drain(in, n);
        if (c->kill)
            break;
        if (err == HPE_PAUSED) {
            http_parser_pause(&c->parser, 0);
            request_done(c);
        } else if (err != HPE_OK) {
            reply_error(c, c->err_status ? c->err_status : 400);
        } else if (c->raw_started && evbuffer_get_length(out(c)) >= OUT_HIGH) {
            c->read_paused = true; /* write_cb resumes */
            bufferevent_disable(c->bev, EV_READ);
        }
    }
}

/* ---- connection ---- */

static void conn_free(struct conn *c)
{
    if (c->rst) {
        struct linger l = {1, 0};

        setsockopt(bufferevent_getfd(c->bev), SOL_SOCKET, SO_LINGER, &l, sizeof(l));
    }
    bufferevent_free(c->bev);
    event_free(c->timer);
    evbuffer_free(c->body);
    evbuffer_free(c->src);
    free(c->url.p);
    free(c->hdrs.p);
    free(c->query.p);
    free(c->h);
    if (c->prev != NULL)
        c->prev->next = c->next;
    else
        g.conns = c->next;
    if (c->next != NULL)
        c->next->prev = c->prev;
    if (c->counted)
        g.active--;
    free(c);
}

/* Called last by every callback: close the connection if its time has come. */
static void conn_settle(struct conn *c)
{
    if (!c->kill && !c->busy && c->eof && !c->read_paused)
        c->closing = true;
    if (c->kill || (c->closing && evbuffer_get_length(out(c)) == 0))
        conn_free(c);
}

static void read_cb(struct bufferevent *bev, void *arg)
{
    struct conn *c = arg;

    (void)bev;
    conn_process(c);
    conn_settle(c);
}

static void write_cb(struct bufferevent *bev, void *arg)
{
    struct conn *c = arg;

    (void)bev;
    if (c->phase == PH_BODY) {
        resp_pump(c);
    } else if (c->phase == PH_PARTIAL) {
        c->phase = PH_PARTIAL_2;
        timer_start(c, PARTIAL_RST_MS);
    }
    if (c->read_paused) {
        c->read_paused = false;
        bufferevent_enable(c->bev, EV_READ);
    }
    conn_process(c);
    conn_settle(c);
}

static void event_cb(struct bufferevent *bev, short what, void *arg)
{
    struct conn *c = arg;

    (void)bev;
    if (what & BEV_EVENT_ERROR)
        c->kill = true;
    if (what & BEV_EVENT_EOF) {
        c->eof = true;
        if (c->phase == PH_HANG)
            c->kill = true;
    }
    conn_settle(c);
}

static void timer_cb(evutil_socket_t fd, short what, void *arg)
{
    struct conn *c = arg;

    (void)fd;
    (void)what;
    if (c->phase == PH_DELAY) {
        resp_fire(c);
    } else if (c->phase == PH_PAUSE) {
        c->phase = PH_BODY;
        resp_pump(c);
    } else if (c->phase == PH_PARTIAL_2) {
        c->kill = c->rst = true;
    } else if (c->phase == PH_INTERIM) {
        resp_fire(c);
    } else if (c->phase == PH_DRIP) {
        drip_step(c);
    }
    conn_process(c);
    conn_settle(c);
}

static void accept_cb(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *sa, int salen,
                      void *arg)
{
    struct conn *c = calloc(1, sizeof(*c));
    int one = 1;

    (void)l;
    (void)salen;
    (void)arg;
    if (c == NULL) {
        evutil_closesocket(fd);
        return;
    }
    if (sa->sa_family == AF_INET || sa->sa_family == AF_INET6) {
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        if (sa->sa_family == AF_INET)
            inet_ntop(AF_INET, &((struct sockaddr_in *)sa)->sin_addr, c->peer, sizeof(c->peer));
        else
            inet_ntop(AF_INET6, &((struct sockaddr_in6 *)sa)->sin6_addr, c->peer, sizeof(c->peer));
    } else {
        strcpy(c->peer, "unix");
    }
    c->bev = bufferevent_socket_new(g.base, fd, BEV_OPT_CLOSE_ON_FREE);
    c->timer = evtimer_new(g.base, timer_cb, c);
    c->body = evbuffer_new();
    c->src = evbuffer_new();
    if (c->bev == NULL || c->timer == NULL || c->body == NULL || c->src == NULL) {
        fprintf(stderr, "pf-origin: out of memory\n");
        abort();
    }
    http_parser_init(&c->parser, HTTP_REQUEST);
    c->parser.data = c;
    bufferevent_setcb(c->bev, read_cb, write_cb, event_cb, c);
    bufferevent_setwatermark(c->bev, EV_READ, 0, IN_HIGH);
    bufferevent_enable(c->bev, EV_READ | EV_WRITE);
    c->next = g.conns;
    if (g.conns != NULL)
        g.conns->prev = c;
    g.conns = c;
    c->counted = true;
    c->generation = g.generation;
    g.connections++;
    g.active++;
}

/* ---- listeners and main ---- */

static int listen_unix(const char *path, char *desc, size_t desclen)
{
    struct sockaddr_un sun = {.sun_family = AF_UNIX};
    struct evconnlistener *l;
    struct stat st;

    if (strlen(path) >= sizeof(sun.sun_path)) {
        errno = ENAMETOOLONG;
        return -1;
    }
    strcpy(sun.sun_path, path);
    if (stat(path, &st) == 0 && S_ISSOCK(st.st_mode))
        unlink(path);
    l = evconnlistener_new_bind(g.base, accept_cb, NULL, LEV_OPT_CLOSE_ON_FREE, 1024,
                                (struct sockaddr *)&sun, sizeof(sun));
    if (l == NULL)
        return -1;
    g.unix_paths[g.nlisteners] = strdup(path);
    g.listeners[g.nlisteners++] = l;
    snprintf(desc, desclen, "unix:%s", path);
    return 0;
}

static int listen_tcp(const char *addr, char *desc, size_t desclen)
{
    struct addrinfo hints = {.ai_flags = AI_PASSIVE | AI_NUMERICSERV, .ai_socktype = SOCK_STREAM};
    struct addrinfo *ai;
    struct evconnlistener *l;
    struct sockaddr_storage ss;
    socklen_t sslen = sizeof(ss);
    char host[256], port[16], hbuf[INET6_ADDRSTRLEN];
    const char *colon = strrchr(addr, ':');
    size_t hl = colon != NULL ? (size_t)(colon - addr) : 0;
    int rc;

    if (colon == NULL || hl >= sizeof(host) || strlen(colon + 1) >= sizeof(port)) {
        errno = EINVAL;
        return -1;
    }
    if (hl >= 2 && addr[0] == '[' && addr[hl - 1] == ']')
        addr++, hl -= 2;
    memcpy(host, addr, hl);
    host[hl] = '\0';
    strcpy(port, colon + 1);
    rc = getaddrinfo(hl == 0 || !strcmp(host, "*") ? NULL : host, port, &hints, &ai);
    if (rc != 0) {
        errno = EINVAL;
        return -1;
    }
    l = evconnlistener_new_bind(g.base, accept_cb, NULL, LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE,
                                1024, ai->ai_addr, (int)ai->ai_addrlen);
    freeaddrinfo(ai);
    if (l == NULL)
        return -1;
    g.listeners[g.nlisteners++] = l;
    getsockname(evconnlistener_get_fd(l), (struct sockaddr *)&ss, &sslen);
    if (ss.ss_family == AF_INET6) {
        struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&ss;

        inet_ntop(AF_INET6, &s6->sin6_addr, hbuf, sizeof(hbuf));
        snprintf(desc, desclen, "[%s]:%d", hbuf, ntohs(s6->sin6_port));
    } else {
        struct sockaddr_in *s4 = (struct sockaddr_in *)&ss;

        inet_ntop(AF_INET, &s4->sin_addr, hbuf, sizeof(hbuf));
        snprintf(desc, desclen, "%s:%d", hbuf, ntohs(s4->sin_port));
    }
    return 0;
}

static void signal_cb(evutil_socket_t sig, short what, void *arg)
{
    (void)sig;
    (void)what;
    (void)arg;
    event_base_loopexit(g.base, NULL);
}

static void usage(FILE *f)
{
    fprintf(f, "usage: pf-origin [--listen ADDR]...\n"
               "  ADDR: host:port, [v6addr]:port or unix:/path (default 127.0.0.1:3000)\n"
               "  behaviour per request from the query string; see tests/origin/origin.c\n");
}

/* Collect --listen values; exit on bad usage. */
static int parse_args(int argc, char **argv, const char **addrs)
{
    int n = 0;

    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = NULL;

        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            exit(0);
        }
        if (!strncmp(a, "--listen=", 9))
            v = a + 9;
        else if ((!strcmp(a, "--listen") || !strcmp(a, "-l")) && i + 1 < argc)
            v = argv[++i];
        if (v == NULL || n == MAX_LISTENERS) {
            usage(stderr);
            exit(2);
        }
        addrs[n++] = v;
    }
    if (n == 0)
        addrs[n++] = "127.0.0.1:3000";
    return n;
}

static void setup(void)
{
    for (size_t i = 0; i < sizeof(pattern); i++)
        pattern[i] = (char)('a' + i % 26);
    settings.on_message_begin = on_message_begin;
    settings.on_url = on_url;
    settings.on_header_field = on_header_field;
    settings.on_header_value = on_header_value;
    settings.on_headers_complete = on_headers_complete;
    settings.on_body = on_body;
    settings.on_message_complete = on_message_complete;
    http_parser_set_max_header_size(HEAD_MAX);
    signal(SIGPIPE, SIG_IGN);
    g.base = event_base_new();
    if (g.base == NULL) {
        fprintf(stderr, "pf-origin: cannot create an event base\n");
        exit(1);
    }
}

/* Only for the e2e harness's self-test: a defect a sanitizer must report. */
static void *volatile selftest_leak;

static void selftest(const char *what)
{
    volatile int big = INT32_MAX;

    if (what == NULL)
        return;
    if (strcmp(what, "leak") == 0) {
        selftest_leak = malloc(48);
        selftest_leak = NULL;
    } else if (strcmp(what, "ubsan") == 0) {
        big = big + 1;
    }
}

static void teardown(struct event *sigs[2])
{
    while (g.conns != NULL)
        conn_free(g.conns);
    for (int i = 0; i < g.nlisteners; i++) {
        evconnlistener_free(g.listeners[i]);
        if (g.unix_paths[i] != NULL)
            unlink(g.unix_paths[i]);
        free(g.unix_paths[i]);
    }
    event_free(sigs[0]);
    event_free(sigs[1]);
    event_base_free(g.base);
}

int main(int argc, char **argv)
{
    const char *addrs[MAX_LISTENERS];
    int n;
    char descs[1024] = "", desc[300];
    struct event *sigs[2];

    selftest(getenv("PF_ORIGIN_SELFTEST")); /* first: a bad usage exit reports it too */
    n = parse_args(argc, argv, addrs);
    setup();
    for (int i = 0; i < n; i++) {
        int rc = !strncmp(addrs[i], "unix:", 5) ? listen_unix(addrs[i] + 5, desc, sizeof(desc))
                                                : listen_tcp(addrs[i], desc, sizeof(desc));

        if (rc != 0) {
            fprintf(stderr, "pf-origin: cannot listen on %s: %s\n", addrs[i], strerror(errno));
            return 1;
        }
        snprintf(descs + strlen(descs), sizeof(descs) - strlen(descs), "%s%s", i ? " " : "", desc);
    }
    sigs[0] = evsignal_new(g.base, SIGTERM, signal_cb, NULL);
    sigs[1] = evsignal_new(g.base, SIGINT, signal_cb, NULL);
    evsignal_add(sigs[0], NULL);
    evsignal_add(sigs[1], NULL);
    fprintf(stderr, "pf-origin: listening on %s\n", descs);
    event_base_dispatch(g.base);
    teardown(sigs);
    return 0;
}
