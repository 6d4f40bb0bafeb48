/*
 * HTTP/1.1 toward the upstream: the request head writer and the response
 * head reader (proxy/h1parse.c reads the head in one pass); bodies are
 * de-framed here (pf_h1c_deframe), which moves bytes toward the client
 * without copying.
 */
#include "proxy/upstream/h1client.h"

#include <limits.h>
#include <string.h>
#include <strings.h>

#include <event2/buffer.h>

#include "proxy/core.h"
#include "proxy/h1parse.h"
#include "proxy/http1.h"
#include "proxy/sbuf.h"
#include "proxy/syntax.h"
#include "proxy/tx.h"

/* ---- the response ---- */

void pf_h1c_reset(struct pf_upconn *uc)
{
    pf_h1p_rscan_init(&uc->rscan);
    pf_head_reset(&uc->head);
    uc->resp_bad = false;
    uc->head_ready = false;
    uc->body_mode = PF_BODY_NONE;
}

/* The framing of a final head (RFC 9112 §6.3); an interim one is dropped. 0, or -1: bad. */
static int resp_framing(struct pf_upconn *uc, const struct pf_h1p_resp *r)
{
    if (r->status < 100 || r->status > 599)
        return -1; /* not a status code (RFC 9110 §15): 502 */
    if (r->status / 100 == 1) {
        if (r->status == 101)
            return -1;    /* no upgrade was asked for */
        pf_h1c_reset(uc); /* interim: dropped (pilotfish sends its own 100) */
        return 0;
    }
    uc->status = (uint16_t)r->status;
    uc->head_ready = true;
    uc->resp_keepalive = r->major > 0 && r->minor > 0 ? !r->conn_close : r->conn_keepalive;
    if ((uc->tx != NULL && uc->tx->method_id == HTTP_HEAD) || r->status == 204 ||
        r->status == 304) {
        /* never a body, whatever the framing headers say: body_mode stays NONE */
    } else if (r->chunked) {
        uc->body_mode = PF_BODY_CHUNKED;
        pf_chunked_init(&uc->chunked);
    } else if (r->has_length && !r->has_te) {
        uc->body_mode = r->length > 0 ? PF_BODY_LENGTH : PF_BODY_NONE;
        uc->body_left = r->length;
    } else {
        uc->body_mode = PF_BODY_CLOSE; /* read until the upstream closes: not reusable */
        uc->resp_keepalive = false;
    }
    return 0;
}

/* uc->head holds a whole head: read it in place, then its framing. */
static int resp_head(struct pf_upconn *uc)
{
    struct pf_h1p_resp r;

    pf_head_close(&uc->head); /* a NUL after the head */
    r.f = pf_head_ents(&uc->head, uc->rscan.lines);
    if (pf_h1p_parse_response(uc->head.buf, uc->head.len - 1, &r) != 0)
        return -1;
    uc->head.n = r.n;
    uc->head.parsed = true;
    return resp_framing(uc, &r);
}

size_t pf_h1c_parse(struct pf_upconn *uc, const char *data, size_t len)
{
    size_t done = 0;

    while (done < len && !uc->head_ready && !uc->resp_bad) {
        size_t used = 0;
        int rc = pf_h1p_scan_response(&uc->rscan, data + done, len - done, &used);

        if (rc > PF_H1P_DONE ||
            pf_head_put_raw(&uc->head, data + done, used, PF_H1C_MAX_HEAD) != 0 ||
            uc->rscan.lines > PF_H1C_MAX_HEADERS + 1 || (rc == PF_H1P_DONE && resp_head(uc) != 0)) {
            uc->resp_bad = true;
            break;
        }
        done += used;
    }
    return done;
}

int pf_h1c_deframe(struct pf_upconn *uc, struct evbuffer *in)
{
    size_t n;

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
