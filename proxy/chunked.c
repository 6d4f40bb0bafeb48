/*
 * Strict chunked decoding. See proxy/chunked.h.
 *
 *   chunk      = size [ ext ] CRLF data CRLF
 *   ext        = *( BWS ";" ... ): whitespace after the size only before ';'
 *   last-chunk = 1*"0" [ ext ] CRLF
 *   trailers   = *( field-line CRLF ) CRLF
 */
#include "proxy/chunked.h"

#include <stdbool.h>
#include <string.h>

#include <event2/buffer.h>

enum {
    CH_SIZE = 0,     /* hex digits */
    CH_BWS,          /* whitespace after the size: a ';' must follow */
    CH_EXT,          /* ";..." up to CR */
    CH_SIZE_LF,      /* LF after the size line's CR */
    CH_DATA,         /* left bytes of data */
    CH_DATA_CR,      /* CR after data */
    CH_DATA_LF,      /* LF after data */
    CH_TRAILER,      /* at the start of a trailer line */
    CH_TRAILER_LINE, /* inside a trailer line */
    CH_TRAILER_LF,   /* LF ending a trailer line */
    CH_END_LF,       /* LF ending the trailer section */
    CH_DONE,
};

void pf_chunked_init(struct pf_chunked *d)
{
    memset(d, 0, sizeof(*d));
}

static int hexval(unsigned char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    c |= 0x20;
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1;
}

/* One byte of framing; returns -1 on error, 1 when done, 0 otherwise. */
static int chunked_byte(struct pf_chunked *d, unsigned char c)
{
    int v;

    switch (d->state) {
    case CH_SIZE:
        v = hexval(c);
        if (v >= 0) {
            /* 15 hex digits: sizes below 2^60, no overflow */
            if (++d->digits > 15)
                return -1;
            d->left = d->left * 16 + (uint64_t)v;
            return 0;
        }
        if (d->digits == 0)
            return -1;
        if (c == ';') {
            d->state = CH_EXT;
            d->line = 0;
            return 0;
        }
        if (c == ' ' || c == '\t') {
            /* BWS before an extension (RFC 9112 §7.1.1) */
            d->state = CH_BWS;
            d->line = 1;
            return 0;
        }
        if (c != '\r')
            return -1;
        d->state = CH_SIZE_LF;
        return 0;
    case CH_BWS:
        if (c == ';') {
            d->state = CH_EXT;
            return 0;
        }
        if ((c != ' ' && c != '\t') || ++d->line > PF_CHUNKED_MAX_LINE)
            return -1; /* "5 \r\n", "5 5": whitespace not followed by ';' */
        return 0;
    case CH_EXT:
        if (c == '\r') {
            d->state = CH_SIZE_LF;
            return 0;
        }
        /* extensions are ignored, but must be visible text within bounds */
        if ((c < 0x20 && c != '\t') || c == 0x7f || ++d->line > PF_CHUNKED_MAX_LINE)
            return -1;
        return 0;
    case CH_SIZE_LF:
        if (c != '\n')
            return -1;
        d->digits = 0;
        d->state = d->left > 0 ? CH_DATA : CH_TRAILER;
        return 0;
    case CH_DATA_CR:
        if (c != '\r')
            return -1;
        d->state = CH_DATA_LF;
        return 0;
    case CH_DATA_LF:
        if (c != '\n')
            return -1;
        d->state = CH_SIZE;
        return 0;
    case CH_TRAILER:
        if (c == '\r') {
            d->state = CH_END_LF;
            return 0;
        }
        if (c == ' ' || c == '\t' || c == '\n')
            return -1; /* obs-fold or bare LF */
        d->state = CH_TRAILER_LINE;
        d->line = 1;
        return 0;
    case CH_TRAILER_LINE:
        if (c == '\r') {
            d->state = CH_TRAILER_LF;
            return 0;
        }
        if (c == '\n' || ++d->line > PF_CHUNKED_MAX_LINE)
            return -1;
        return 0;
    case CH_TRAILER_LF:
        if (c != '\n')
            return -1;
        d->state = CH_TRAILER;
        return 0;
    case CH_END_LF:
        if (c != '\n')
            return -1;
        d->state = CH_DONE;
        return 1;
    default:
        return -1;
    }
}

int pf_chunked_decode(struct pf_chunked *d, struct evbuffer *in, struct evbuffer *out)
{
    while (d->state != CH_DONE) {
        struct evbuffer_iovec v;
        size_t i, n;

        if (d->state == CH_DATA) {
            size_t avail = evbuffer_get_length(in);
            size_t take = avail < d->left ? avail : (size_t)d->left;

            if (take == 0)
                return 0;
            evbuffer_remove_buffer(in, out, take);
            d->left -= take;
            d->total += take;
            if (d->left == 0)
                d->state = CH_DATA_CR;
            continue;
        }
        if (evbuffer_peek(in, -1, NULL, &v, 1) < 1 || v.iov_len == 0)
            return 0;
        n = v.iov_len;
        for (i = 0; i < n && d->state != CH_DATA && d->state != CH_DONE; i++) {
            if (chunked_byte(d, ((const unsigned char *)v.iov_base)[i]) < 0)
                return -1;
        }
        evbuffer_drain(in, i);
    }
    return 1;
}
