/*
 * Per-thread pools of I/O memory. See proxy/bufpool.h.
 *
 * A cached block is filed by what malloc_usable_size() says it holds: class k
 * holds blocks of at least 2^k usable bytes and serves requests of up to 2^k.
 * Every block is a plain malloc block, so a block allocated before the pools
 * were installed, or on another thread, may be freed through them, and a
 * block allocated through them may be freed by plain free() or realloc().
 */
#include "proxy/bufpool.h"

#include <malloc.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>

#include <event2/buffer.h>
#include <event2/event.h>

#include "proxy/arena.h"

#define CLASS_MIN 10 /* log2(PF_BUFPOOL_MIN) */
#define CLASS_MAX 17 /* log2(PF_BUFPOOL_MAX) */
#define N_CLASS   (CLASS_MAX - CLASS_MIN + 1)

/* A free block: the link lives in its first bytes (the rest is poisoned under ASan). */
struct free_block {
    struct free_block *next;
};

static __thread struct {
    struct free_block *head[N_CLASS];
    unsigned n;   /* blocks cached */
    size_t bytes; /* their usable bytes */
    struct evbuffer *evb[PF_BUFPOOL_EVB_MAX];
    unsigned n_evb;
    bool on;
} bp;

void pf_bufpool_install(void)
{
    event_set_mem_functions(pf_bufpool_malloc, pf_bufpool_realloc, pf_bufpool_free);
}

void pf_bufpool_start(void)
{
    bp.on = true;
}

void pf_bufpool_stop(void)
{
    bp.on = false;
    while (bp.n_evb > 0)
        evbuffer_free(bp.evb[--bp.n_evb]);
    for (unsigned k = 0; k < N_CLASS; k++) {
        while (bp.head[k] != NULL) {
            struct free_block *b = bp.head[k];

            PF_POOL_UNPOISON(b, sizeof(*b));
            bp.head[k] = b->next;
            PF_POOL_UNPOISON(b, (size_t)1 << (k + CLASS_MIN));
            free(b);
        }
    }
    bp.n = 0;
    bp.bytes = 0;
}

void *pf_bufpool_malloc(size_t size)
{
    if (bp.on && size >= PF_BUFPOOL_MIN && size <= PF_BUFPOOL_MAX) {
        /* the class of 2^k >= size */
        unsigned k = 64 - (unsigned)__builtin_clzll((unsigned long long)size - 1) - CLASS_MIN;
        struct free_block *b = bp.head[k];

        if (b != NULL) {
            PF_POOL_UNPOISON(b, sizeof(*b));
            bp.head[k] = b->next;
            PF_POOL_UNPOISON(b, (size_t)1 << (k + CLASS_MIN));
            bp.n--;
            bp.bytes -= malloc_usable_size(b);
            return b;
        }
    }
    return malloc(size);
}

void *pf_bufpool_realloc(void *p, size_t size)
{
    return realloc(p, size);
}

void pf_bufpool_free(void *p)
{
    size_t usable;
    unsigned k;
    struct free_block *b = p;

    if (p == NULL)
        return;
    if (!bp.on || (usable = malloc_usable_size(p)) < PF_BUFPOOL_MIN ||
        usable >= 2 * (size_t)PF_BUFPOOL_MAX || bp.bytes + usable > PF_BUFPOOL_BYTES) {
        free(p);
        return;
    }
    /* the class of 2^k <= usable */
    k = 63 - (unsigned)__builtin_clzll((unsigned long long)usable) - CLASS_MIN;
    b->next = bp.head[k];
    bp.head[k] = b;
    bp.n++;
    bp.bytes += usable;
    PF_POOL_POISON(b, (size_t)1 << (k + CLASS_MIN));
}

unsigned pf_bufpool_count(void)
{
    return bp.n;
}

size_t pf_bufpool_bytes(void)
{
    return bp.bytes;
}

struct evbuffer *pf_bufpool_evbuffer(void)
{
    if (bp.n_evb > 0)
        return bp.evb[--bp.n_evb];
    return pf_evbuffer_new();
}

void pf_bufpool_evbuffer_put(struct evbuffer *b)
{
    if (b == NULL)
        return;
    if (!bp.on || bp.n_evb == PF_BUFPOOL_EVB_MAX) {
        evbuffer_free(b);
        return;
    }
    if (evbuffer_get_length(b) > 0) /* a parked stream's are empty already */
        evbuffer_drain(b, evbuffer_get_length(b));
    bp.evb[bp.n_evb++] = b;
}

unsigned pf_bufpool_evbuffer_count(void)
{
    return bp.n_evb;
}
