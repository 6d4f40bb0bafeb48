/*
 * Per-transaction arena: a chunked bump allocator.
 *
 * The first chunk holds the arena header, so a transaction costs one malloc
 * as long as it fits in chunk_size. Small requests bump a pointer inside the
 * current chunk; when it is full a new chunk of chunk_size bytes becomes the
 * current one. Large requests (over a quarter of a chunk) get a chunk of
 * their own and leave the current chunk in place, so one big buffer does not
 * waste the rest of a nearly empty chunk (nginx's pool->max, h2o's
 * "direct" allocations).
 */
#include "proxy/arena.h"

#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>

#include "proxy/log.h"

#define ARENA_ALIGN     16
#define ARENA_MIN_CHUNK 256

/* An extra chunk; its memory follows the header. */
struct arena_chunk {
    struct arena_chunk *next; /* older extra chunk */
};

/* One pf_arena_defer() registration, stored in the arena itself. */
struct arena_defer {
    struct arena_defer *next; /* registered earlier */
    pf_defer_fn fn;           /* destructor */
    void *arg;                /* its argument */
};

struct pf_arena {
    char *cur;                  /* next free byte of the current chunk, aligned */
    char *end;                  /* end of the current chunk, aligned down */
    size_t chunk_size;          /* size of each normal chunk, header included */
    size_t used;                /* bytes requested through pf_arena_alloc() */
    struct arena_chunk *chunks; /* extra chunks, newest first */
    struct arena_defer *defers; /* destructors, newest first */
};

static inline uintptr_t align_up(uintptr_t v)
{
    return (v + (ARENA_ALIGN - 1)) & ~(uintptr_t)(ARENA_ALIGN - 1);
}

static inline uintptr_t align_down(uintptr_t v)
{
    return v & ~(uintptr_t)(ARENA_ALIGN - 1);
}

/* This thread's pool of freed first chunks (pf_arena_pool_start). */
static __thread struct {
    struct pf_arena *free[PF_ARENA_POOL_MAX];
    size_t size[PF_ARENA_POOL_MAX]; /* their chunk_size (the chunks are poisoned under ASan) */
    unsigned n;
    bool on;
} arena_pool;

void pf_arena_pool_start(void)
{
    arena_pool.on = true;
}

void pf_arena_pool_stop(void)
{
    while (arena_pool.n > 0) {
        struct pf_arena *a = arena_pool.free[--arena_pool.n];

        PF_POOL_UNPOISON(a, arena_pool.size[arena_pool.n]);
        free(a);
    }
    arena_pool.on = false;
}

unsigned pf_arena_pool_count(void)
{
    return arena_pool.n;
}

struct pf_arena *pf_arena_new(size_t chunk_size)
{
    struct pf_arena *a;

    if (chunk_size < ARENA_MIN_CHUNK)
        chunk_size = ARENA_MIN_CHUNK;
    if (arena_pool.n > 0 && arena_pool.size[arena_pool.n - 1] == chunk_size) {
        a = arena_pool.free[--arena_pool.n];
        PF_POOL_UNPOISON(a, chunk_size);
    } else {
        a = pf_xmalloc(chunk_size);
    }
    a->cur = (char *)align_up((uintptr_t)(a + 1));
    a->end = (char *)align_down((uintptr_t)a + chunk_size);
    a->chunk_size = chunk_size;
    a->used = 0;
    a->chunks = NULL;
    a->defers = NULL;
    return a;
}

/*
 * The current chunk cannot hold size bytes: allocate a new chunk. Returns
 * uninitialised memory.
 */
static void *arena_take_slow(struct pf_arena *a, size_t size)
{
    struct arena_chunk *c;
    size_t need;
    size_t bytes;
    char *p;

    if (size > SIZE_MAX / 2)
        pf_fatal("out of memory: arena allocation of %zu bytes", size);
    need = sizeof(*c) + ARENA_ALIGN + align_up(size);
    bytes = need;
    if (size <= a->chunk_size / 4 && a->chunk_size > need)
        bytes = a->chunk_size;
    c = pf_xmalloc(bytes);
    c->next = a->chunks;
    a->chunks = c;
    p = (char *)align_up((uintptr_t)(c + 1));
    if (bytes == need && size > a->chunk_size / 4)
        return p; /* a chunk of its own: keep bumping the current one */
    a->cur = p + align_up(size);
    a->end = (char *)align_down((uintptr_t)c + bytes);
    return p;
}

/* Aligned, uninitialised memory; the hot path is a compare and an add. */
static inline void *arena_take(struct pf_arena *a, size_t size)
{
    size_t rsize = align_up(size);
    char *p = a->cur;

    if (rsize >= size && rsize <= (size_t)(a->end - p)) {
        a->cur = p + rsize;
        return p;
    }
    return arena_take_slow(a, size);
}

void *pf_arena_alloc(struct pf_arena *a, size_t size)
{
    void *p = arena_take(a, size);

    a->used += size;
    return memset(p, 0, size);
}

void *pf_arena_alloc_raw(struct pf_arena *a, size_t size)
{
    a->used += size;
    return arena_take(a, size);
}

char *pf_arena_strndup(struct pf_arena *a, const char *s, size_t len)
{
    char *p;

    len = strnlen(s, len);
    p = arena_take(a, len + 1);
    a->used += len + 1;
    memcpy(p, s, len);
    p[len] = '\0';
    return p;
}

void pf_arena_defer(struct pf_arena *a, pf_defer_fn fn, void *arg)
{
    struct arena_defer *d = arena_take(a, sizeof(*d));

    d->fn = fn;
    d->arg = arg;
    d->next = a->defers;
    a->defers = d;
}

size_t pf_arena_used(const struct pf_arena *a)
{
    return a->used;
}

void pf_arena_free(struct pf_arena *a)
{
    struct arena_defer *d;
    struct arena_chunk *c;

    if (a == NULL)
        return;
    /* Pop before calling, so a destructor that defers more still runs it. */
    while ((d = a->defers) != NULL) {
        a->defers = d->next;
        d->fn(d->arg);
    }
    while ((c = a->chunks) != NULL) {
        a->chunks = c->next;
        free(c);
    }
    if (arena_pool.on && arena_pool.n < PF_ARENA_POOL_MAX) {
        arena_pool.size[arena_pool.n] = a->chunk_size;
        arena_pool.free[arena_pool.n++] = a;
        PF_POOL_POISON(a, a->chunk_size);
        return;
    }
    free(a);
}

/* ---- checked malloc family ---- */

void *pf_xmalloc(size_t size)
{
    void *p = malloc(size ? size : 1);

    if (p == NULL)
        pf_fatal("out of memory (malloc %zu bytes)", size);
    return p;
}

void *pf_xcalloc(size_t n, size_t size)
{
    void *p;

    if (n == 0 || size == 0)
        n = size = 1;
    p = calloc(n, size);
    if (p == NULL)
        pf_fatal("out of memory (calloc %zu x %zu bytes)", n, size);
    return p;
}

void *pf_xrealloc(void *p, size_t size)
{
    void *q = realloc(p, size ? size : 1);

    if (q == NULL)
        pf_fatal("out of memory (realloc %zu bytes)", size);
    return q;
}

char *pf_xstrdup(const char *s)
{
    return pf_xstrndup(s, strlen(s));
}

char *pf_xstrndup(const char *s, size_t len)
{
    char *p;

    len = strnlen(s, len);
    p = pf_xmalloc(len + 1);
    memcpy(p, s, len);
    p[len] = '\0';
    return p;
}

struct evbuffer *pf_evbuffer_new(void)
{
    struct evbuffer *b = evbuffer_new();

    if (b == NULL)
        pf_fatal("out of memory (evbuffer_new)");
    return b;
}
