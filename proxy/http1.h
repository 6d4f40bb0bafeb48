/*
 * The HTTP/1.1 engine: client connections (proxy and admin listeners) and the
 * message-head helpers shared with the upstream side. Worker thread only.
 */
#ifndef PF_HTTP1_H
#define PF_HTTP1_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "proxy/conn-t.h"
#include "proxy/hdrs-t.h"
#include "proxy/head-t.h"
#include "proxy/syntax.h"

struct evbuffer;
struct pf_arena;
struct pf_tx;
struct pf_worker;
struct sockaddr;

/* Take ownership of an accepted socket fd and start reading requests. */
void pf_conn_accept(struct pf_worker *w, int fd, const struct sockaddr *sa, bool is_admin);

/* Close a connection now (drain, shutdown); aborts its transaction. */
void pf_conn_close(struct pf_conn *c);

/* True when the connection waits between requests (safe to close on drain). */
bool pf_conn_is_idle(const struct pf_conn *c);

/*
 * Response side, called by the transaction code:
 *   pf_conn_send_head()  writes the status line and headers (framing decided);
 *   pf_conn_send_body()  moves data into the client output, framed;
 *   pf_conn_send_end()   writes the last chunk if chunked.
 * When the client is gone (tx->conn NULL) they do nothing; the body
 * is drained all the same.
 */
void pf_conn_send_head(struct pf_tx *tx);
void pf_conn_send_body(struct pf_tx *tx, struct evbuffer *data);
void pf_conn_send_end(struct pf_tx *tx);

/* The transaction ended: release it and go on with the next request. */
void pf_conn_tx_done(struct pf_conn *c);

/* Output buffer size of the client (backpressure on the upstream). */
size_t pf_conn_out_len(const struct pf_conn *c);

/* Resume reading the request body (upstream ready / drained). */
void pf_conn_resume_body(struct pf_conn *c);

/* Stop reading the request body (the upstream's output is full). */
void pf_conn_block_body(struct pf_conn *c);

/* Write "HTTP/1.1 100 Continue" if the request expects it and it was not sent. */
void pf_conn_send_continue(struct pf_tx *tx);

/* Name of a connection state ("WAITING"). */
const char *pf_conn_state_name(enum pf_conn_state st);

/* A buffer this big holds any pf_conn_dump(). */
#define PF_CONN_DUMP_SIZE 256

/*
 * One line describing c for debug logs (state, flags, busy, tx, body framing,
 * buffered bytes) into buf, NUL-terminated and cut to size. Returns its length.
 */
size_t pf_conn_dump(const struct pf_conn *c, char *buf, size_t size);

/* ---- message heads (proxy/head.c) ---- */

/* What pf_head_append() adds to. */
enum {
    PF_HEAD_URL = 1,
    PF_HEAD_FIELD = 2,
    PF_HEAD_VALUE = 3,
};

/* Append data to the current url/field/value; -1 when the head passes limit. */
int pf_head_append(struct pf_head *h, int what, const char *at, size_t len, uint32_t limit,
                   unsigned max_headers);
void pf_head_reset(struct pf_head *h);
/* Append raw head bytes (h1parse.c reads them in place); -1 when the head passes limit. */
int pf_head_put_raw(struct pf_head *h, const char *at, size_t len, uint32_t limit);
/* h->ent with room for n entries. */
struct pf_head_ent *pf_head_ents(struct pf_head *h, unsigned n);
/* Terminate the piece in progress with a NUL (the head is complete). */
void pf_head_close(struct pf_head *h);
void pf_head_free(struct pf_head *h);
/*
 * Free the head's buffers once exported; buffers of the first size go to this
 * thread's pool (at most PF_HEAD_POOL_MAX of each kind) for the next head.
 */
#define PF_HEAD_POOL_MAX 64
void pf_head_release(struct pf_head *h);
/* Buffers in this thread's pool; free them all (a worker thread's exit). */
unsigned pf_head_pool_count(void);
void pf_head_pool_drain(void);

/* Copy the assembled head into arena-backed pf_hdrs (and url if wanted). */
void pf_head_export(const struct pf_head *h, struct pf_arena *a, struct pf_hdrs *out,
                    const char **url);

/* Reason phrase for a status code. */
const char *pf_http_reason(int status);

/* Cached "Date: ...\r\n" value for this second ("Thu, 01 Jan 2026 00:00:00 GMT"). */
const char *pf_http_date(void);

#endif /* PF_HTTP1_H */
