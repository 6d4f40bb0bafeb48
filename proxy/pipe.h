/*
 * Per-worker pools of pipes for splice(2) (proxy/pipe.c), and the splice
 * counters. A response body that no filter reads moves upstream socket ->
 * pipe -> client socket without entering user space, a request body client
 * socket -> pipe -> upstream socket (proxy/upstream/upsplice.c).
 *
 * A pool hands out at most max pipes at a time and keeps a few idle ones
 * (LIFO) for the next body. A pipe given back with bytes still in it (a body
 * cut short) is closed, never reused: those bytes belong to no one. Worker
 * thread only, except pf_splice_render (any thread).
 */
#ifndef PF_PIPE_H
#define PF_PIPE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct evbuffer;

#define PF_PIPES_MAX  256 /* pipes in use at once per worker */
#define PF_PIPES_KEEP 16  /* idle pipes kept per worker */
#ifndef PF_PIPE_SIZE
#define PF_PIPE_SIZE (256 * 1024) /* F_SETPIPE_SZ (64 KiB and 1 MiB measured no different) */
#endif

struct pf_pipe {
    int rd;
    int wr;
    size_t cap; /* its size (F_GETPIPE_SZ) */
    size_t len; /* bytes in it */
};

struct pf_pipes {
    struct pf_pipe *idle[PF_PIPES_KEEP]; /* most recently used last */
    unsigned n_idle;
    unsigned n_used; /* handed out, not yet given back */
    unsigned max;    /* most n_used */
    size_t size;     /* asked of F_SETPIPE_SZ (0: the kernel's default) */
};

/* A new pool of at most max pipes of size bytes. Never NULL (OOM aborts). */
struct pf_pipes *pf_pipes_new(unsigned max, size_t size);

/* An empty pipe (an idle one, else a new one); NULL at the limit or when pipe2 fails. */
struct pf_pipe *pf_pipes_get(struct pf_pipes *pp);

/* Give p back: kept when empty and there is room, else closed. */
void pf_pipes_put(struct pf_pipes *pp, struct pf_pipe *p);

/* Close every idle pipe and free pp (the worker exits; none may be in use). NULL: no-op. */
void pf_pipes_free(struct pf_pipes *pp);

/* This thread's splice counters. */
enum {
    PF_SPLICE_RESPONSES, /* response bodies moved with splice */
    PF_SPLICE_BYTES,     /* body bytes moved with splice */
    PF_SPLICE_NO_PIPE,   /* bodies copied because no pipe could be had */
    PF_SPLICE_REQUESTS,  /* request bodies moved with splice */
    PF_SPLICE_REQ_BYTES, /* request body bytes moved with splice */
    PF_SPLICE_N,
};
void pf_splice_count(unsigned which, uint64_t n);

/* The splice metrics (docs/metrics.md) into out. */
void pf_splice_render(struct evbuffer *out);

#endif /* PF_PIPE_H */
