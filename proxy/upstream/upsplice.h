/*
 * Bodies moved with splice(2) (proxy/upstream/upsplice.c): response bodies
 * upstream socket -> pipe -> client socket, for bodies no filter reads, and
 * request bodies client socket -> pipe -> upstream socket (no filter reads a
 * request body). The attempt code (upstream.c) decides what each result
 * means for the transaction.
 */
#ifndef PF_UPSTREAM_UPSPLICE_H
#define PF_UPSTREAM_UPSPLICE_H

#include <stdbool.h>
#include <stdint.h>

struct pf_stream;
struct pf_tx;
struct pf_upconn;

enum pf_upsplice_res {
    PF_UPSPLICE_WAIT_UP,     /* the upstream has nothing more for now */
    PF_UPSPLICE_WAIT_CLIENT, /* the client socket (or its buffered output) is full */
    PF_UPSPLICE_DONE,        /* the whole body went out (Content-Length, or up to the close) */
    PF_UPSPLICE_UP_CUT,      /* the upstream closed early or failed: the body is cut */
    PF_UPSPLICE_CLIENT_ERR,  /* writing to the client failed */
};

/*
 * Whether tx's response body on uc may be spliced: splice.responses is on in
 * tx's snapshot, no filter reads the body, and it is Content-Length framed
 * (at least splice.min_response_size bytes) and passed on so, or
 * close-delimited toward an HTTP/1.0 client.
 * Call after the head went out (pf_tx_respond).
 */
bool pf_upsplice_eligible(const struct pf_tx *tx, const struct pf_upconn *uc);

/* Take a pipe and make uc's stream raw. False (counted) when no pipe can be had. */
bool pf_upsplice_begin(struct pf_upconn *uc);

/* Move what can be moved now toward client (whose buffered output goes first); *out counts. */
enum pf_upsplice_res pf_upsplice_pump(struct pf_upconn *uc, struct pf_stream *client,
                                      uint64_t *out);

/* Give the pipe back (closed if bytes are left in it), the stream reads again. */
void pf_upsplice_end(struct pf_upconn *uc);

/*
 * Request bodies. Once the bytes read with the head (and any read after it)
 * have been handed on, a Content-Length body of at least
 * splice.min_request_size bytes (splice.requests on in tx's snapshot) that
 * streams to tx's upstream connection (not buffered, not kept for a retry)
 * goes on with splice: a pipe is taken and the client's stream
 * made raw. Called after each piece of body the copying path hands on;
 * false when the body stays on the copying path.
 */
bool pf_upsplice_req_begin(struct pf_tx *tx);

/*
 * Move what can be moved now from the client to the upstream (whose
 * buffered output goes first). The connection's body_left counts the bytes
 * not yet written upstream; at 0 the pipe is given back and the connection
 * ends the body. A client that closes or fails is closed as on the copying
 * path; a write that fails is reported to the upstream's event callback as
 * the copying path's flush does. True when the upstream must take bytes
 * before more are read (the caller blocks the body and waits for it).
 */
bool pf_upsplice_req_pump(struct pf_tx *tx);

/* Give tx's request pipe back (closed if bytes are left in it), the client's stream reads again. */
void pf_upsplice_req_end(struct pf_tx *tx);

#endif /* PF_UPSTREAM_UPSPLICE_H */
