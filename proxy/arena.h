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

/*
 * A thread that calls pf_arena_pool_start() keeps the first chunks of freed
 * arenas (at most PF_ARENA_POOL_MAX, LIFO) for the next pf_arena_new() of
 * the same size: a worker's transaction then costs no malloc at all.
 * pf_arena_pool_stop() frees them and turns it off (the thread's exit).
 */
#define PF_ARENA_POOL_MAX 16

/* Pooled memory is poisoned under AddressSanitizer: a use after release still reports. */
#ifdef __SANITIZE_ADDRESS__
#include <sanitizer/asan_interface.h>
#define PF_POOL_POISON(p, n)   ASAN_POISON_MEMORY_REGION((p), (n))
#define PF_POOL_UNPOISON(p, n) ASAN_UNPOISON_MEMORY_REGION((p), (n))
#else
#define PF_POOL_POISON(p, n)   ((void)(p), (void)(n))
#define PF_POOL_UNPOISON(p, n) ((void)(p), (void)(n))
#endif
void pf_arena_pool_start(void);
void pf_arena_pool_stop(void);
unsigned pf_arena_pool_count(void);

/* malloc family that never returns NULL: failure calls pf_fatal(). */
void *pf_xmalloc(size_t size);
void *pf_xcalloc(size_t n, size_t size);
void *pf_xrealloc(void *p, size_t size);
char *pf_xstrdup(const char *s);
char *pf_xstrndup(const char *s, size_t len);
/* evbuffer_new() that never returns NULL: failure calls pf_fatal(). */
struct evbuffer *pf_evbuffer_new(void);

#endif /* PF_ARENA_H */
