/*
 * Request identity: X-Request-Id (kept or made) and W3C Trace Context.
 */
#include "proxy/trace.h"

#include <stdbool.h>
#include <string.h>
#ifdef __SSE2__
#include <emmintrin.h>
#endif

#include "proxy/arena.h"
#include "proxy/tx-t.h"
#include "proxy/hdrs.h"
#include "proxy/worker.h"

#define REQUEST_ID_MAX 200 /* a longer X-Request-Id is replaced by ours */
#define REQUEST_ID_HEX 32  /* ours: 128 random bits in hex */

#ifdef __SSE2__
/*
 * 16 lower-case hex digits of v, most significant first: the bytes (highest
 * first) split into high and low nibbles, interleaved, and turned into digits
 * 16 at a time (+'0', and +39 more for 10..15), one 16-byte store. Five ids'
 * worth per request made the scalar version a visible part of a small
 * request's cost (about 70 instructions for each 16 digits, here 12).
 */
static void hex64(char *out, uint64_t v)
{
    const __m128i low4 = _mm_set1_epi8(0x0F);
    __m128i x = _mm_cvtsi64_si128((long long)__builtin_bswap64(v));
    __m128i hi = _mm_and_si128(_mm_srli_epi16(x, 4), low4);
    __m128i nib = _mm_unpacklo_epi8(hi, _mm_and_si128(x, low4));
    __m128i letter = _mm_and_si128(_mm_cmpgt_epi8(nib, _mm_set1_epi8(9)), _mm_set1_epi8(39));

    nib = _mm_add_epi8(nib, _mm_add_epi8(letter, _mm_set1_epi8('0')));
    _mm_storeu_si128((__m128i *)(void *)out, nib);
}
#else
/*
 * 8 lower-case hex digits of v, most significant first, without a loop: a
 * few shifts put each nibble in a byte of its own, the bytes become digits
 * all at once (+'0', and +39 more for 10..15), 8 bytes stored with one copy.
 */
static void hex32(char *out, uint32_t v)
{
    uint64_t x = v;

    x = ((x & 0xFFFF0000ull) << 16) | (x & 0xFFFFull);
    x = ((x & 0x0000FF000000FF00ull) << 8) | (x & 0x000000FF000000FFull);
    x = ((x & 0x00F000F000F000F0ull) << 4) | (x & 0x000F000F000F000Full);
    /* now byte i holds nibble i (byte 0 the lowest); 1 in each byte >= 10 */
    x += 0x3030303030303030ull + 39 * (((x + 0x0606060606060606ull) >> 4) & 0x0101010101010101ull);
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    x = __builtin_bswap64(x); /* the highest nibble first in memory */
#endif
    memcpy(out, &x, 8);
}

static void hex64(char *out, uint64_t v)
{
    hex32(out, (uint32_t)(v >> 32));
    hex32(out + 8, (uint32_t)v);
}
#endif

static bool is_hex(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
            return false;
    }
    return true;
}

static bool is_zero(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (s[i] != '0')
            return false;
    }
    return true;
}

/* "00-<32 hex trace-id>-<16 hex parent-id>-<2 hex flags>" (W3C Trace Context) */
static bool traceparent_valid(const char *in)
{
    size_t len = strlen(in);

    if (len < 55 || in[2] != '-' || in[35] != '-' || in[52] != '-')
        return false;
    if (!is_hex(in, 2) || strncmp(in, "ff", 2) == 0 || (strncmp(in, "00", 2) == 0 && len != 55))
        return false;
    if (len > 55 && in[55] != '-')
        return false;
    return is_hex(in + 3, 32) && !is_zero(in + 3, 32) && is_hex(in + 36, 16) &&
           !is_zero(in + 36, 16) && is_hex(in + 53, 2);
}

void pf_trace_start(struct pf_tx *tx)
{
    const char *in = pf_hdrs_get_id(&tx->req, PF_H_TRACEPARENT);
    char *o = tx->traceparent;
    char flags[2] = {'0', '1'};

    if (in != NULL && traceparent_valid(in)) {
        memcpy(tx->trace_id, in + 3, 32);
        flags[0] = in[53];
        flags[1] = in[54];
    } else {
        hex64(tx->trace_id, pf_worker_rand(tx->w));
        hex64(tx->trace_id + 16, pf_worker_rand(tx->w));
    }
    tx->trace_id[32] = '\0';
    memcpy(o, "00-", 3);
    memcpy(o + 3, tx->trace_id, 32);
    o[35] = '-';
    hex64(o + 36, pf_worker_rand(tx->w) | 1);
    o[52] = '-';
    o[53] = flags[0];
    o[54] = flags[1];
    o[55] = '\0';
}

void pf_trace_request_id(struct pf_tx *tx)
{
    const char *id = pf_hdrs_get_id(&tx->req, PF_H_X_REQUEST_ID);
    char *buf;

    if (id != NULL && id[0] != '\0' && strlen(id) <= REQUEST_ID_MAX) {
        tx->request_id = id;
        return;
    }
    buf = pf_arena_alloc(tx->arena, REQUEST_ID_HEX + 1);
    hex64(buf, pf_worker_rand(tx->w));
    hex64(buf + 16, pf_worker_rand(tx->w));
    tx->request_id = buf;
}
