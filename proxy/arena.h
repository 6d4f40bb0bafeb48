/*
 * Per-transaction arena and checked allocation helpers.
 *
 * A transaction allocates from one arena and frees it once, when it ends.
 * Anything holding an outside resource registers a destructor with
 * pf_arena_defer(); destructors run in reverse order of registration.
 * OOM is fatal (pf_fatal): the pod is restarted, nothing half-works.
 * An arena belongs to one thread.
 */
#ifndef PF_ARENA_H
#define PF_ARENA_H

#include <stddef.h>

struct evbuffer;

struct pf_arena;

typedef void (*pf_defer_fn)(void *arg);

/* New arena whose first chunk is chunk_size bytes (header included). */
struct pf_arena *pf_arena_new(size_t chunk_size);

/* Zeroed, 16-byte aligned memory living until pf_arena_free(). */
void *pf_arena_alloc(struct pf_arena *a, size_t size);

/* Like pf_arena_alloc() without the zeroing, for memory about to be overwritten. */
void *pf_arena_alloc_raw(struct pf_arena *a, size_t size);

/* NUL-terminated copy of s[0..len) in the arena. */
char *pf_arena_strndup(struct pf_arena *a, const char *s, size_t len);

/* Run fn(arg) when the arena is freed (reverse order of registration). */
void pf_arena_defer(struct pf_arena *a, pf_defer_fn fn, void *arg);

/* Bytes handed out so far (for tests and debugging). */
size_t pf_arena_used(const struct pf_arena *a);

/* Run the deferred destructors, then release every chunk. NULL is a no-op. */
void pf_arena_free(struct pf_arena *a);

/* malloc family that never returns NULL: failure calls pf_fatal(). */
void *pf_xmalloc(size_t size);
void *pf_xcalloc(size_t n, size_t size);
void *pf_xrealloc(void *p, size_t size);
char *pf_xstrdup(const char *s);
char *pf_xstrndup(const char *s, size_t len);
/* evbuffer_new() that never returns NULL: failure calls pf_fatal(). */
struct evbuffer *pf_evbuffer_new(void);

#endif /* PF_ARENA_H */
