/*
 * Per-thread (so per-worker) LIFO pools for the memory of socket I/O.
 *
 * libevent allocates an evbuffer chain (a power of two from 1 KiB, header
 * included) for every read and every response, and frees it as soon as it is
 * drained: four malloc/free pairs per proxied request. With
 * pf_bufpool_install(), libevent's allocations of PF_BUFPOOL_MIN bytes or more
 * go through a cache of freed blocks by size class, LIFO, so they stay hot in
 * the CPU cache and the heap never hands them back to the kernel to fault
 * them in again; a thread that has not called pf_bufpool_start() (or after
 * pf_bufpool_stop()) uses malloc and free directly.
 *
 * The second pool holds empty evbuffers, taken back from connections that go
 * idle (pf_stream_park), so an idle keep-alive connection holds none.
 */
#ifndef PF_BUFPOOL_H
#define PF_BUFPOOL_H

#include <stddef.h>

struct evbuffer;

#define PF_BUFPOOL_MIN     1024              /* smallest block cached (libevent's smallest chain) */
#define PF_BUFPOOL_MAX     (128 * 1024)      /* largest (a 64 KiB read's chain) */
#define PF_BUFPOOL_BYTES   (4 * 1024 * 1024) /* cached bytes per thread, at most */
#define PF_BUFPOOL_EVB_MAX 256               /* empty evbuffers kept per thread, at most */

/* Route libevent's allocations through the pools (once, before the workers start). */
void pf_bufpool_install(void);

/* This thread caches from now on. */
void pf_bufpool_start(void);

/* Free what this thread holds and stop caching (the thread's exit). */
void pf_bufpool_stop(void);

/* libevent's allocator as installed (exported for tests). */
void *pf_bufpool_malloc(size_t size);
void *pf_bufpool_realloc(void *p, size_t size);
void pf_bufpool_free(void *p);

/* Blocks and bytes this thread keeps (tests, debugging). */
unsigned pf_bufpool_count(void);
size_t pf_bufpool_bytes(void);

/* An empty evbuffer: a pooled one, or a new one (never NULL: OOM is fatal). */
struct evbuffer *pf_bufpool_evbuffer(void);

/* Give back an evbuffer (emptied here); freed when the pool is full or off. */
void pf_bufpool_evbuffer_put(struct evbuffer *b);

/* Empty evbuffers this thread keeps. */
unsigned pf_bufpool_evbuffer_count(void);

#endif /* PF_BUFPOOL_H */
