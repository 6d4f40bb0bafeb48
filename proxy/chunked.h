/*
 * A strict decoder of chunked transfer coding (RFC 9112 §7.1), for request
 * bodies and upstream response bodies alike. http-parser as Debian builds it is lenient about chunk
 * framing (a missing CRLF after chunk data is accepted), and a proxy must not be: any deviation is
 * an error, and the connection is closed.
 */
#ifndef PF_CHUNKED_H
#define PF_CHUNKED_H

#include <stdint.h>

struct evbuffer;

struct pf_chunked {
    int state;       /* where in the framing we are */
    uint64_t left;   /* bytes of chunk data still to come */
    unsigned digits; /* hex digits of the current size */
    uint32_t line;   /* bytes of the current extension / trailer line */
    uint64_t total;  /* payload bytes decoded so far */
};

#define PF_CHUNKED_MAX_LINE 4096 /* chunk extensions, each trailer line */

/* Ready for a new body. */
void pf_chunked_init(struct pf_chunked *d);

/*
 * Consume framing from in and move payload bytes to out (without copying).
 * Returns 1 when the last chunk and the trailer section have been consumed
 * (the rest of in is the next message), 0 when more input is needed, -1 on a
 * framing error.
 */
int pf_chunked_decode(struct pf_chunked *d, struct evbuffer *in, struct evbuffer *out);

#endif /* PF_CHUNKED_H */
