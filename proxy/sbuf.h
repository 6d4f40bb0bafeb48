/*
 * A string builder on the stack for message heads: pieces are copied into a
 * local buffer and handed to an evbuffer in one evbuffer_add(), instead of one
 * evbuffer_add() (and its bookkeeping) per piece.
 */
#ifndef PF_SBUF_H
#define PF_SBUF_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <event2/buffer.h>

struct pf_sbuf {
    struct evbuffer *out; /* where the bytes go */
    size_t len;           /* bytes in buf */
    size_t total;         /* bytes handed to out so far */
    char buf[4096];
};

static inline void pf_sb_init(struct pf_sbuf *b, struct evbuffer *out)
{
    b->out = out;
    b->len = 0;
    b->total = 0;
}

static inline void pf_sb_flush(struct pf_sbuf *b)
{
    if (b->len > 0)
        evbuffer_add(b->out, b->buf, b->len);
    b->total += b->len;
    b->len = 0;
}

static inline void pf_sb_put(struct pf_sbuf *b, const char *s, size_t n)
{
    if (b->len + n > sizeof(b->buf)) {
        pf_sb_flush(b);
        if (n > sizeof(b->buf)) {
            evbuffer_add(b->out, s, n);
            b->total += n;
            return;
        }
    }
    memcpy(b->buf + b->len, s, n);
    b->len += n;
}

static inline void pf_sb_str(struct pf_sbuf *b, const char *s)
{
    pf_sb_put(b, s, strlen(s));
}

/* Decimal v into out (room for 21 bytes), NUL-terminated, without printf; its length. */
static inline size_t pf_fmt_u64(char *out, uint64_t v)
{
    char tmp[24];
    size_t i = sizeof(tmp);

    do {
        tmp[--i] = (char)('0' + v % 10);
        v /= 10;
    } while (v != 0);
    memcpy(out, tmp + i, sizeof(tmp) - i);
    out[sizeof(tmp) - i] = '\0';
    return sizeof(tmp) - i;
}

/* Decimal v. */
static inline void pf_sb_u64(struct pf_sbuf *b, uint64_t v)
{
    char tmp[24];

    pf_sb_put(b, tmp, pf_fmt_u64(tmp, v));
}

/* "Name: value\r\n" (when it fits, one bounds check for the four pieces) */
static inline void pf_sb_header(struct pf_sbuf *b, const char *name, size_t nl, const char *value,
                                size_t vl)
{
    if (b->len + nl + vl + 4 <= sizeof(b->buf)) {
        char *o = b->buf + b->len;

        memcpy(o, name, nl);
        o += nl;
        *o++ = ':';
        *o++ = ' ';
        memcpy(o, value, vl);
        o += vl;
        *o++ = '\r';
        *o = '\n';
        b->len += nl + vl + 4;
        return;
    }
    pf_sb_put(b, name, nl);
    pf_sb_put(b, ": ", 2);
    pf_sb_put(b, value, vl);
    pf_sb_put(b, "\r\n", 2);
}

/* Lower-case hex of v into buf (at least 17 bytes); returns the length. */
static inline size_t pf_hex(char *buf, uint64_t v)
{
    static const char digits[] = "0123456789abcdef";
    char tmp[16];
    size_t n = 0;

    do {
        tmp[n++] = digits[v & 15];
        v >>= 4;
    } while (v != 0);
    for (size_t i = 0; i < n; i++)
        buf[i] = tmp[n - 1 - i];
    return n;
}

#endif /* PF_SBUF_H */
