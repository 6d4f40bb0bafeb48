/*
 * The HTTP/1.1 client side of an upstream connection
 * (proxy/upstream/h1client.c): the request writer, and the response parser
 * and body de-framer. Nothing here owns a connection's life: the attempt
 * code (proxy/upstream/upstream.c) acts on what these report, and a health
 * prober can reuse them.
 */
#ifndef PF_UPSTREAM_H1CLIENT_H
#define PF_UPSTREAM_H1CLIENT_H

#include <stdbool.h>
#include <stddef.h>

#include "proxy/hdrs-t.h"
#include "proxy/upstream/upconn-t.h"

struct evbuffer;

#define PF_H1C_MAX_HEAD    (64 * 1024) /* bytes of a response head */
#define PF_H1C_MAX_HEADERS 200         /* header lines of a response head */

/* Ready uc's response parser for a new response. */
void pf_h1c_reset(struct pf_upconn *uc);

/*
 * Feed response head bytes to uc's reader. It stops after a final head
 * (uc->head_ready; uc->status, uc->resp_keepalive), or at a malformed one
 * (uc->resp_bad); a body is left to pf_h1c_deframe (uc->body_mode, NONE when
 * there is none). Returns the bytes used.
 */
size_t pf_h1c_parse(struct pf_upconn *uc, const char *data, size_t len);

/*
 * De-frame response body bytes from in into uc->body. 0: more to come, 1:
 * the body is complete (state DONE), -1: malformed.
 */
int pf_h1c_deframe(struct pf_upconn *uc, struct evbuffer *in);

/* False when the response's Transfer-Encoding is not just "chunked" (a bad response). */
bool pf_h1c_resp_te_ok(const struct pf_hdrs *h);

/*
 * Write tx's request head toward the upstream into out, re-framed: hop-by-hop
 * headers dropped, X-Forwarded-*, X-Request-Id and traceparent written anew.
 * default_host is the Host of a request that had none.
 */
void pf_h1c_write_head(const struct pf_tx *tx, struct evbuffer *out, const char *default_host);

/* Move len request body bytes from src to out, as one chunk when chunked. */
void pf_h1c_write_body(struct evbuffer *out, struct evbuffer *src, size_t len, bool chunked);

/* A health probe's request head (GET path, Host host, Connection: close) into out. */
void pf_h1c_write_probe(struct evbuffer *out, const char *path, const char *host);

#endif /* PF_UPSTREAM_H1CLIENT_H */
