/*
 * Cache storage, apart from HTTP decisions: immutable, reference-counted
 * objects (filters/cache/object.c) and the L1 memory store, a sharded,
 * byte-bounded LRU shared by all workers (filters/cache/mem.c). Nothing here
 * parses HTTP; the cache filter decides what goes in and what comes out.
 *
 * Threads: any worker may call any function; the store takes one shard lock
 * per call (a short critical section, never across I/O). Objects are
 * immutable once built, so a hit reads them without a lock while it holds a
 * reference.
 */
#ifndef PF_CACHE_STORE_H
#define PF_CACHE_STORE_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "filters/cache/rfc.h"

struct evbuffer;
struct pf_hdr;

/* ---- objects ---- */

struct pf_chdr {
    const char *name;  /* NUL-terminated, inside the object */
    const char *value; /* NUL-terminated, inside the object */
};

/*
 * One stored response: key + variant, status, headers, body, meta, tags.
 * Everything lives in one or a few allocations counted in size.
 */
struct pf_cobj {
    const char *key;     /* primary key (pf_cache_key) */
    const char *variant; /* variant key (pf_cache_variant_key), "" without Vary */
    int status;
    struct pf_chdr *hdrs;
    unsigned n_hdrs;
    const unsigned char *body;
    size_t body_len;
    struct pf_cache_meta meta;
    const char *const *tags; /* from the tag header, split on spaces */
    unsigned n_tags;
    size_t size; /* bytes charged against memory: key, headers, body, head block, bookkeeping */
    int64_t stored_at; /* seconds since the epoch */
    /* private to object.c / mem.c below */
    _Atomic unsigned refs;
    _Atomic(void *) head; /* pf_cobj_head's block, made at the first call */
    void *priv;
};

/* Build an object. The builder copies everything it is given. */
struct pf_cobj_builder;
/* max_body: 0 = no limit. */
struct pf_cobj_builder *pf_cobj_builder_new(const char *key, const char *variant, int status,
                                            const struct pf_cache_meta *meta, size_t max_body);
void pf_cobj_builder_header(struct pf_cobj_builder *b, const char *name, const char *value);
void pf_cobj_builder_tags(struct pf_cobj_builder *b, const char *tag_header_value);
/* Append body bytes (moved out of, or copied from, buf: buf is left as it was). false: over
 * max_body (abandon). */
bool pf_cobj_builder_body(struct pf_cobj_builder *b, struct evbuffer *buf);
bool pf_cobj_builder_body_bytes(struct pf_cobj_builder *b, const void *data, size_t len);
/* The finished object with one reference, or NULL; the builder is freed either way. */
struct pf_cobj *pf_cobj_builder_finish(struct pf_cobj_builder *b, int64_t now);
void pf_cobj_builder_abandon(struct pf_cobj_builder *b);

struct pf_cobj *pf_cobj_ref(struct pf_cobj *o);
void pf_cobj_unref(struct pf_cobj *o); /* NULL is fine */
/* Objects alive now in this process (built and not yet freed): for tests and leak checks. */
long pf_cobj_live(void);

/*
 * o's fields serialised, "Name: value\r\n" each, in order, made at the first
 * call and kept with o (any thread); NULL when plain(name, NULL) is false for one
 * of them (a field that may not be written as it is). *len: its length.
 */
const char *pf_cobj_head(struct pf_cobj *o, bool (*plain)(const char *name, const char *conn),
                         size_t *len);

/* pf_cobj_head's block and what a hit adds with it (pointers into o or the block, kept with o). */
struct pf_cobj_wire {
    const char *raw;             /* the block */
    size_t len;                  /* ... its length */
    const struct pf_hdr *fields; /* o's fields as header-list entries: lengths and ids set */
    unsigned n;                  /* ... how many (o->n_hdrs) */
    const char *body_len;        /* o->body_len in decimal */
    unsigned body_len_len;       /* ... its length */
};

/* pf_cobj_head's block into w, with the rest of pf_cobj_wire; false where it gives NULL. */
bool pf_cobj_wire(struct pf_cobj *o, bool (*plain)(const char *name, const char *conn),
                  struct pf_cobj_wire *w);

/* First header named name (case-insensitive) of o, or NULL. */
const char *pf_cobj_header(const struct pf_cobj *o, const char *name);

/*
 * A copy of o with headers updated from a 304 (RFC 9111 §3.2: every header
 * of the 304 for which pf_cache_header_updated_by_304 holds replaces the
 * stored ones of that name) and meta replaced; one reference.
 */
struct pf_cobj *pf_cobj_updated(const struct pf_cobj *o, const struct pf_chdr *hdrs304, unsigned n,
                                const struct pf_cache_meta *meta, int64_t now);
/* The same, without the stored fields for which keep(arg, name) is false (none when NULL). */
typedef bool (*pf_cobj_keep_fn)(void *arg, const char *name);
struct pf_cobj *pf_cobj_updated_if(const struct pf_cobj *o, const struct pf_chdr *hdrs304,
                                   unsigned n, const struct pf_cache_meta *meta, int64_t now,
                                   pf_cobj_keep_fn keep, void *arg);

/*
 * Append o's body to out without copying: the evbuffer holds a reference on
 * o until its bytes are drained (evbuffer_add_reference with a cleanup).
 * [from, from+len) of the body; returns 0 or -1.
 */
int pf_cobj_body_to(struct pf_cobj *o, struct evbuffer *out, size_t from, size_t len);

/* Serialization for the L2 tier, versioned: the first byte is PF_COBJ_WIRE_VERSION. */
#define PF_COBJ_WIRE_VERSION 1
void pf_cobj_serialize(const struct pf_cobj *o, struct evbuffer *out);
/* An object with one reference, or NULL when data is not a valid serialization. */
struct pf_cobj *pf_cobj_deserialize(const void *data, size_t len, size_t max_body);

/* ---- a response stored while it streams in (grow.c) ---- */

struct pf_worker;
struct pf_cgrow_sub;

enum pf_cgrow_state {
    PF_CGROW_GROWING = 0,
    PF_CGROW_COMPLETE,  /* the whole body is there */
    PF_CGROW_ABANDONED, /* the fetch failed: never complete */
    PF_CGROW_DROPPED,   /* not stored after all (grew past the max): never complete */
};

struct pf_cgrow_head {
    int status;
    struct pf_cache_meta meta;
    const struct pf_chdr *hdrs; /* the stored fields */
    size_t n_hdrs;
    const char *variant; /* its variant key ("" without Vary) */
    const char *vary;    /* the Vary lines comma-joined, NULL without */
    long long length;    /* the body's declared length, -1 when unknown */
};

/* Read-only once made (head); the body and the state belong to grow.c. */
struct pf_cgrow {
    int status;
    struct pf_cache_meta meta;
    struct pf_chdr *hdrs;
    unsigned n_hdrs;
    char *variant;
    char *vary;
    long long length;
    /* private to grow.c */
    size_t max_body;
    pthread_mutex_t lock;
    _Atomic unsigned refs;
    enum pf_cgrow_state state; /* written by the writer under lock */
    struct chunk *first, *last;
    size_t body_len;
    struct pf_cgrow_sub *subs;
    unsigned n_subs;
    struct pf_worker *wr_w; /* the writer's watch (pf_cgrow_watch) */
    void (*wr_fn)(struct pf_worker *w, void *arg);
    void *wr_arg;
    bool wr_pending;
};

/* An empty body with one reference (max_body: 0 = no limit); the head is copied. */
struct pf_cgrow *pf_cgrow_new(const struct pf_cgrow_head *head, size_t max_body);
struct pf_cgrow *pf_cgrow_ref(struct pf_cgrow *g);
void pf_cgrow_unref(struct pf_cgrow *g); /* NULL is fine */
/* The writer: append a copy of buf (left as it was); false once ended (dropped past max_body). */
bool pf_cgrow_append(struct pf_cgrow *g, struct evbuffer *buf);
/* The writer: the body is complete, or (complete false) abandoned. The first end counts. */
void pf_cgrow_end(struct pf_cgrow *g, bool complete);
/* The writer: the response is not stored after all (PF_CGROW_DROPPED). The first end counts. */
void pf_cgrow_drop(struct pf_cgrow *g);
/*
 * The writer, on its worker w: fn(w, arg) runs there soon after a reader subscribes (one call on
 * its way at a time); fn NULL withdraws it (on w: a call on its way then does nothing).
 */
void pf_cgrow_watch(struct pf_cgrow *g, struct pf_worker *w,
                    void (*fn)(struct pf_worker *w, void *arg), void *arg);
/* Any thread: how many readers are subscribed now. */
unsigned pf_cgrow_readers(struct pf_cgrow *g);
/* Any thread: the state now (a GROWING object may end at any time after). */
enum pf_cgrow_state pf_cgrow_state(struct pf_cgrow *g);
/* A reader on worker w: fn(w, arg) runs there soon, then after appends and at the end. */
typedef void (*pf_cgrow_fn)(struct pf_worker *w, void *arg);
struct pf_cgrow_sub *pf_cgrow_subscribe(struct pf_cgrow *g, struct pf_worker *w, pf_cgrow_fn fn,
                                        void *arg);
/* On the reader's worker: no more calls; the subscription is freed. NULL is fine. */
void pf_cgrow_unsubscribe(struct pf_cgrow_sub *sub);
/*
 * On the reader's worker: append the bytes it has not read yet to out, by reference (each piece
 * holds a reference to g until out lets go of it, so readers share one copy); the state they end
 * in.
 */
enum pf_cgrow_state pf_cgrow_read(struct pf_cgrow_sub *sub, struct evbuffer *out);

/* ---- the L1 store ---- */

struct pf_cstore;

/* A store of at most memory bytes (everything counted) in shards (a power of two, 0 = 16). */
struct pf_cstore *pf_cstore_new(size_t memory, unsigned shards);
void pf_cstore_free(struct pf_cstore *s); /* NULL is fine; objects still referenced live on */

/*
 * The object stored for key and variant with a new reference (the caller
 * unrefs), moved to the front of its shard's LRU; NULL when none.
 */
struct pf_cobj *pf_cstore_get(struct pf_cstore *s, const char *key, const char *variant);

/*
 * The Vary field lines recorded for key (by the last put of a response with
 * Vary), copied into out (NUL-terminated, comma-joined); false when the key
 * has no Vary record. Lets a lookup compute the variant key before get.
 */
bool pf_cstore_vary(struct pf_cstore *s, const char *key, char *out, size_t size);
/*
 * A lookup in one step: pf_cstore_vary(key) into out and *has_vary; when there is no Vary record,
 * pf_cstore_get(key, "") too (one hash, one lock), else NULL (the caller gets the variant).
 */
struct pf_cobj *pf_cstore_lookup(struct pf_cstore *s, const char *key, char *out, size_t size,
                                 bool *has_vary);
/* Record (replace) the Vary field lines of key; vary NULL removes the record. Records are
 * charged against memory like objects; purge_key removes them too. */
void pf_cstore_set_vary(struct pf_cstore *s, const char *key, const char *vary);

/*
 * Store o (takes its own reference), replacing the same key+variant, and
 * evict from the LRU tail until everything fits. Objects bigger than the
 * store's share are refused (-1). Returns 0.
 */
int pf_cstore_put(struct pf_cstore *s, struct pf_cobj *o);

/*
 * The purge generation of key: a number that changes whenever key may have
 * been purged (by key, prefix or tag, an invalidation included; any prefix
 * or tag purge changes it, covering key or not). A fetch takes it as it
 * starts and stores with pf_cstore_put_at, so that a purge that landed while
 * it was under way is not undone by its response.
 */
uint64_t pf_cstore_gen(struct pf_cstore *s, const char *key);
/*
 * pf_cstore_put unless a purge since gen covers o: a purge of its key (or of
 * a key sharing its slot), a prefix purge of a prefix of its key, a tag purge
 * of one of its tags, or more prefix and tag purges than the store remembers
 * (64): then 1, nothing stored. A prefix or tag purge that does not cover o
 * does not refuse it.
 */
int pf_cstore_put_at(struct pf_cstore *s, struct pf_cobj *o, uint64_t gen);
/* Did a purge since gen cover o (pf_cstore_put_at would refuse it now)? */
bool pf_cstore_covered(struct pf_cstore *s, const struct pf_cobj *o, uint64_t gen);
/* pf_cstore_set_vary unless a purge since gen covers key (as pf_cstore_put_at, without tags):
 * then 1, nothing changed (the check is made under the same lock as the change, so a purge of
 * key is either before, and the record is refused, or after, and removes it). 0 otherwise. */
int pf_cstore_set_vary_at(struct pf_cstore *s, const char *key, const char *vary, uint64_t gen);

/* Remove: one key (every variant), every key starting with prefix, every object tagged tag. */
size_t pf_cstore_purge_key(struct pf_cstore *s, const char *key);
size_t pf_cstore_purge_prefix(struct pf_cstore *s, const char *prefix);
size_t pf_cstore_purge_tag(struct pf_cstore *s, const char *tag);

struct pf_cstore_stats {
    uint64_t bytes;     /* charged now (with the store's own initial tables) */
    uint64_t objects;   /* stored now */
    uint64_t evictions; /* since start */
};
void pf_cstore_stats(struct pf_cstore *s, struct pf_cstore_stats *out);

#endif /* PF_CACHE_STORE_H */
