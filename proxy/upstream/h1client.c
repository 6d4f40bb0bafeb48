/*
 * HTTP/1.1 toward the upstream: the request head writer and the response
 * parser. http-parser reads response heads only: bodies are de-framed here
 * (pf_h1c_deframe), which moves bytes toward the client without copying.
 */
#include "proxy/upstream/h1client.h"

#include <limits.h>
#include <string.h>
#include <strings.h>

#include <event2/buffer.h>

#include "proxy/core.h"
#include "proxy/http1.h"
#include "proxy/sbuf.h"
#include "proxy/syntax.h"
#include "proxy/tx.h"

/* ---- the response ---- */

static int on_message_begin(http_parser *p)
{
    struct pf_upconn *uc = p->data;

    pf_head_reset(&uc->head);
    return 0;
}

static int on_header_field(http_parser *p, const char *at, size_t len)
{
    struct pf_upconn *uc = p->data;

    return pf_head_append(&uc->head, PF_HEAD_FIELD, at, len, PF_H1C_MAX_HEAD, PF_H1C_MAX_HEADERS) ==
                   0
               ? 0
               : -1;
}

static int on_header_value(http_parser *p, const char *at, size_t len)
{
    struct pf_upconn *uc = p->data;

    return pf_head_append(&uc->head, PF_HEAD_VALUE, at, len, PF_H1C_MAX_HEAD, PF_H1C_MAX_HEADERS) ==
                   0
               ? 0
               : -1;
}

static int on_headers_complete(http_parser *p)
{
    struct pf_upconn *uc = p->data;

    if (p->status_code < 100 || p->status_code > 599)
        return -1; /* not a status code (RFC 9110 §15): 502 */
    if (p->status_code / 100 == 1) {
        if (p->status_code == 101)
            return -1;     /* no upgrade was asked for */
        uc->in_1xx = true; /* interim: dropped (pilotfish sends its own 100) */
        return 0;
    }
    uc->head_ready = true;
    http_parser_pause(p, 1);
    if (uc->tx != NULL && uc->tx->method_id == HTTP_HEAD)
        return 1; /* the parser knows no method: no body follows a HEAD */
    if (p->status_code == 204 || p->status_code == 304)
        return 1; /* never a body, whatever the framing headers say */
    if (p->flags & F_CHUNKED) {
        uc->body_mode = PF_BODY_CHUNKED;
        pf_chunked_init(&uc->chunked);
    } else if (p->content_length != ULLONG_MAX) {
        if (p->content_length == 0)
            return 0; /* the parser ends the message itself */
        uc->body_mode = PF_BODY_LENGTH;
        uc->body_left = p->content_length;
    } else {
        uc->body_mode = PF_BODY_CLOSE;
    }
    uc->head_lf = true;
    return 0;
}

static int on_message_complete(http_parser *p)
{
    struct pf_upconn *uc = p->data;

    if (uc->in_1xx) {
        uc->in_1xx = false;
        return 0;
    }
    uc->state = PF_UC_DONE;
    http_parser_pause(p, 1);
    return 0;
}

static const http_parser_settings resp_settings = {
    .on_message_begin = on_message_begin,
    .on_header_field = on_header_field,
    .on_header_value = on_header_value,
    .on_headers_complete = on_headers_complete,
    .on_message_complete = on_message_complete,
};

void pf_h1c_reset(struct pf_upconn *uc)
{
    http_parser_init(&uc->parser, HTTP_RESPONSE);
    uc->parser.data = uc;
}

size_t pf_h1c_parse(struct pf_upconn *uc, const char *data, size_t len)
{
    return http_parser_execute(&uc->parser, &resp_settings, data, len);
}

int pf_h1c_deframe(struct pf_upconn *uc, struct evbuffer *in)
{
    size_t n;

    if (uc->head_lf) {
        unsigned char lf;

        if (evbuffer_copyout(in, &lf, 1) != 1)
            return 0;
        if (lf != '\n')
            return -1;
        evbuffer_drain(in, 1);
        uc->head_lf = false;
    }
    switch (uc->body_mode) {
    case PF_BODY_LENGTH:
        n = evbuffer_get_length(in);
        if (n > uc->body_left)
            n = (size_t)uc->body_left;
        evbuffer_remove_buffer(in, uc->body, n);
        uc->body_left -= n;
        if (uc->body_left == 0)
            uc->state = PF_UC_DONE;
        break;
    case PF_BODY_CHUNKED:
        switch (pf_chunked_decode(&uc->chunked, in, uc->body)) {
        case -1:
            return -1;
        case 1:
            uc->state = PF_UC_DONE;
            break;
        }
        break;
    default:
        evbuffer_add_buffer(uc->body, in);
        break;
    }
    return uc->state == PF_UC_DONE ? 1 : 0;
}

/*
 * Transfer codings other than chunked were never asked for (no TE goes
 * upstream), and the response cannot be passed on as it is: Transfer-Encoding
 * is hop-by-hop and the client did not ask for them either. Such a response
 * is a bad one (502), whether it is close-delimited ("gzip") or chunked last
 * ("gzip, chunked", whose de-chunked bytes are still gzip-coded). Chunked
 * applied twice (RFC 9112 §6.1 forbids it), in one header or two, is bad too:
 * the parser does not de-chunk "chunked, chunked" and the chunks would reach
 * the client as content.
 */
bool pf_h1c_resp_te_ok(const struct pf_hdrs *h)
{
    unsigned chunked = 0;

    for (unsigned i = 0; i < h->n; i++) {
        const char *v = h->v[i].value, *elem;
        size_t len;

        if (h->v[i].id != PF_H_TRANSFER_ENCODING)
            continue;
        while (pf_http_list_next(&v, &elem, &len)) {
            if (len != 7 || strncasecmp(elem, "chunked", 7) != 0 || chunked++ > 0)
                return false;
        }
    }
    return true;
}

/* ---- the request ---- */

/*
 * Not forwarded as received: hop-by-hop headers (and those Connection lists),
 * Expect (answered here), Content-Length (re-framed), and the X-Forwarded-*,
 * X-Request-Id and traceparent headers, which are written anew below. Host is
 * always kept: Connection cannot remove a header pilotfish handles itself
 * ("Connection: Host" would otherwise send an HTTP/1.1 request without Host).
 */
static bool req_hop_by_hop(const struct pf_hdr *h, const char *conn_value)
{
    if (h->id != PF_H_OTHER)
        return h->id != PF_H_HOST;
    return conn_value != NULL && pf_http_list_has(conn_value, h->name);
}

static void put_header(struct pf_sbuf *b, const char *name, const char *value)
{
    pf_sb_header(b, name, strlen(name), value, strlen(value));
}

/* Every X-Forwarded-For line, in order, then the client. */
static void put_xff(struct pf_sbuf *b, const struct pf_tx *tx)
{
    const char *xff = pf_hdrs_get_id(&tx->req, PF_H_X_FORWARDED_FOR);

    pf_sb_str(b, "X-Forwarded-For: ");
    for (unsigned i = 0; xff != NULL && i < tx->req.n; i++) {
        if (tx->req.v[i].id == PF_H_X_FORWARDED_FOR && tx->req.v[i].value_len > 0) {
            pf_sb_put(b, tx->req.v[i].value, tx->req.v[i].value_len);
            pf_sb_put(b, ", ", 2);
        }
    }
    pf_sb_str(b, pf_tx_client_addr(tx));
    pf_sb_put(b, "\r\n", 2);
}

/* The request head toward the upstream (hop-by-hop, X-Forwarded-*: docs/operations.md). */
void pf_h1c_write_head(const struct pf_tx *tx, struct evbuffer *out, const char *default_host)
{
    struct pf_sbuf b;
    const char *conn_value = pf_hdrs_get_id(&tx->req, PF_H_CONNECTION);

    pf_sb_init(&b, out);
    pf_sb_str(&b, tx->method);
    pf_sb_put(&b, " ", 1);
    pf_sb_str(&b, tx->url);
    pf_sb_put(&b, " HTTP/1.1\r\n", 11);
    for (unsigned i = 0; i < tx->req.n; i++) {
        const struct pf_hdr *h = &tx->req.v[i];

        if (req_hop_by_hop(h, conn_value) || (h->id == PF_H_HOST && tx->host_from_target))
            continue;
        pf_sb_header(&b, h->name, h->name_len, h->value, h->value_len);
    }
    if (tx->host == NULL)
        put_header(&b, "Host", default_host);
    else if (tx->host_from_target)
        put_header(&b, "Host", tx->host);
    if (tx->req_chunked) {
        pf_sb_str(&b, "Transfer-Encoding: chunked\r\n");
    } else if (tx->req_has_length) {
        pf_sb_str(&b, "Content-Length: ");
        pf_sb_u64(&b, tx->req_length);
        pf_sb_put(&b, "\r\n", 2);
    }
    put_xff(&b, tx);
    pf_sb_str(&b, "X-Forwarded-Proto: http\r\n");
    if (tx->host != NULL)
        put_header(&b, "X-Forwarded-Host", tx->host);
    put_header(&b, "X-Request-Id", tx->request_id);
    pf_sb_header(&b, "traceparent", 11, tx->traceparent, 55);
    pf_sb_put(&b, "\r\n", 2);
    pf_sb_flush(&b);
}

void pf_h1c_write_body(struct evbuffer *out, struct evbuffer *src, size_t len, bool chunked)
{
    if (chunked) {
        char hex[24];
        size_t n = pf_hex(hex, len);

        hex[n++] = '\r';
        hex[n++] = '\n';
        evbuffer_add(out, hex, n);
        evbuffer_remove_buffer(src, out, len);
        evbuffer_add(out, "\r\n", 2);
    } else {
        evbuffer_remove_buffer(src, out, len);
    }
}

/* A health probe's request: GET path, the given Host, no keep-alive (one probe per connection). */
void pf_h1c_write_probe(struct evbuffer *out, const char *path, const char *host)
{
    struct pf_sbuf b;

    pf_sb_init(&b, out);
    pf_sb_str(&b, "GET ");
    pf_sb_str(&b, path);
    pf_sb_put(&b, " HTTP/1.1\r\n", 11);
    put_header(&b, "Host", host);
    pf_sb_str(&b, "User-Agent: pilotfish-health-check\r\nAccept: */*\r\nConnection: close\r\n\r\n");
    pf_sb_flush(&b);
}
