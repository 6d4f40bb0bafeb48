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

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "filters/cache/rfc.h"

struct evbuffer;

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
    size_t size;       /* bytes charged against memory: key, headers, body, bookkeeping */
    int64_t stored_at; /* seconds since the epoch */
    /* private to object.c / mem.c below */
    _Atomic unsigned refs;
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

/* First header named name (case-insensitive) of o, or NULL. */
const char *pf_cobj_header(const struct pf_cobj *o, const char *name);

/*
 * A copy of o with headers updated from a 304 (RFC 9111 §3.2: every header
 * of the 304 for which pf_cache_header_updated_by_304 holds replaces the
 * stored ones of that name) and meta replaced; one reference.
 */
struct pf_cobj *pf_cobj_updated(const struct pf_cobj *o, const struct pf_chdr *hdrs304, unsigned n,
                                const struct pf_cache_meta *meta, int64_t now);

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
/* Record (replace) the Vary field lines of key; vary NULL removes the record. Records are
 * charged against memory like objects; purge_key removes them too. */
void pf_cstore_set_vary(struct pf_cstore *s, const char *key, const char *vary);

/*
 * Store o (takes its own reference), replacing the same key+variant, and
 * evict from the LRU tail until everything fits. Objects bigger than the
 * store's share are refused (-1). Returns 0.
 */
int pf_cstore_put(struct pf_cstore *s, struct pf_cobj *o);

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
