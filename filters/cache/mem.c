/*
 * filters/cache/mem.c: the L1 memory store. Keys are spread over shards by
 * a hash of the primary key (so every variant of a key, and its Vary record,
 * live in one shard); each shard has its own lock, chained hash table, LRU
 * list and byte budget (memory / shards). Everything a shard allocates is
 * charged against that budget, with malloc's per-allocation overhead.
 */
#include <malloc.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "filters/cache/store.h"
#include "proxy/arena.h"

#define ALLOC_OVERHEAD 16
/* An entry's share of its bucket table: the table doubles at load 1, so at most 2 slots each. */
#define BUCKET_SHARE (2 * sizeof(void *))
/* Purge generations per shard: keys share a slot by hash (a collision only costs a store). */
#define GEN_SLOTS 256
/* The prefix and tag purges a store remembers (a power of two): see stale(). */
#define RECENT 64

/* One slot of a shard: an object, or a key's Vary record (o == NULL). */
struct entry {
    struct entry *hnext;       /* hash chain */
    struct entry *prev, *next; /* the shard's object LRU or Vary list (front = newest) */
    struct pf_cobj *o;
    uint64_t hash; /* of the primary key */
    uint64_t tick; /* the shard's tick when last moved to the LRU front */
    size_t charge;
    char *vkey, *vary; /* Vary record only: inside this allocation */
};

struct shard {
    pthread_mutex_t lock;
    struct entry **buckets;
    size_t nbuckets, count;
    struct entry lru;   /* sentinel: objects */
    struct entry varys; /* sentinel: Vary records */
    uint64_t tick;      /* counts puts and hits */
    size_t bytes, limit;
    size_t base; /* the initial bucket table, charged from the start */
    /* bumped (under lock) by every purge of a key of the slot: see pf_cstore_gen */
    _Atomic uint64_t gens[GEN_SLOTS];
};

/* A prefix or tag purge, remembered so that a fetch it does not cover still stores. */
struct recent {
    uint64_t seq; /* the store's gen this purge made */
    bool tag;     /* a tag purge, else a prefix purge */
    char *arg;    /* NULL: none yet */
};

struct pf_cstore {
    unsigned nshards;
    struct shard *shards;
    atomic_uint_fast64_t bytes, objects, evictions;
    _Atomic uint64_t gen; /* bumped by every purge by prefix or tag, under recent_lock */
    pthread_mutex_t recent_lock;
    struct recent recent[RECENT]; /* guarded by recent_lock: purge gen n at [n % RECENT] */
};

/* A word at a time (keys are URLs of tens of bytes): multiply-xorshift, then a final mix. */
static uint64_t key_hash(const char *s)
{
    size_t n = strlen(s);
    uint64_t h = 0x9e3779b97f4a7c15ULL ^ n, w;

    for (; n >= 8; n -= 8, s += 8) {
        memcpy(&w, s, 8);
        h = (h ^ w) * 0xff51afd7ed558ccdULL;
        h ^= h >> 32;
    }
    w = 0;
    memcpy(&w, s, n);
    h = (h ^ w) * 0xc4ceb9fe1a85ec53ULL;
    h ^= h >> 29;
    h *= 0xff51afd7ed558ccdULL;
    return h ^ (h >> 32);
}

static struct shard *shard_of(struct pf_cstore *s, uint64_t h)
{
    return &s->shards[(h >> 48) & (s->nshards - 1)];
}

static _Atomic uint64_t *gen_slot(struct shard *sh, uint64_t h)
{
    return &sh->gens[(h >> 32) & (GEN_SLOTS - 1)];
}

/*
 * The store's prefix/tag purge count in the high half, the key's slot count in the low half:
 * both only grow, so the number is unchanged exactly when neither changed (modulo 2^32 purges
 * in between), and stale() can tell them apart.
 */
static uint64_t gen_of(struct pf_cstore *s, struct shard *sh, uint64_t h)
{
    return (atomic_load(&s->gen) << 32) | (uint32_t)atomic_load(gen_slot(sh, h));
}

static bool has_tag(const char *const *tags, unsigned n, const char *tag)
{
    for (unsigned i = 0; i < n; i++) {
        if (strcmp(tags[i], tag) == 0)
            return true;
    }
    return false;
}

/*
 * Would storing key (with tags) under gen undo a purge (sh's lock held)? When its slot was
 * purged since gen, or a prefix purge since gen covers key, or a tag purge since gen one of its
 * tags, or there were more prefix and tag purges since gen than the store remembers.
 */
static bool stale(struct pf_cstore *s, struct shard *sh, uint64_t h, const char *key,
                  const char *const *tags, unsigned n_tags, uint64_t gen)
{
    uint32_t from = (uint32_t)(gen >> 32), to = (uint32_t)atomic_load(&s->gen);
    bool hit = false;

    if ((uint32_t)atomic_load(gen_slot(sh, h)) != (uint32_t)gen)
        return true;
    if (from == to)
        return false;
    if ((uint32_t)(to - from) > RECENT)
        return true;
    pthread_mutex_lock(&s->recent_lock);
    for (uint32_t q = from + 1; !hit && q != to + 1; q++) {
        const struct recent *r = &s->recent[q % RECENT];

        if (r->arg == NULL || (uint32_t)r->seq != q) /* overwritten by a later purge */
            hit = true;
        else if (r->tag)
            hit = has_tag(tags, n_tags, r->arg);
        else
            hit = strncmp(key, r->arg, strlen(r->arg)) == 0;
    }
    pthread_mutex_unlock(&s->recent_lock);
    return hit;
}

uint64_t pf_cstore_gen(struct pf_cstore *s, const char *key)
{
    uint64_t h = key_hash(key);

    return gen_of(s, shard_of(s, h), h);
}

static void list_init(struct entry *head)
{
    head->prev = head->next = head;
}

static void list_del(struct entry *e)
{
    e->prev->next = e->next;
    e->next->prev = e->prev;
}

static void list_push(struct entry *head, struct entry *e)
{
    e->next = head->next;
    e->prev = head;
    head->next->prev = e;
    head->next = e;
}

static size_t table_bytes(size_t n)
{
    return n * sizeof(struct entry *) + ALLOC_OVERHEAD;
}

struct pf_cstore *pf_cstore_new(size_t memory, unsigned shards)
{
    struct pf_cstore *s;
    unsigned i;

    if (shards == 0)
        shards = 16;
    if (shards & (shards - 1))
        return NULL;
    /*
     * glibc raises its mmap threshold each time it frees a large mmapped
     * chunk, after which large bodies come from the heap, whose holes are not
     * returned to the system as objects are evicted: RSS would grow past
     * memory. A fixed threshold keeps every large object (and the builder's
     * body) in its own mapping, given back when it is freed.
     */
    mallopt(M_MMAP_THRESHOLD, 128 * 1024);
    s = pf_xcalloc(1, sizeof(*s));
    s->nshards = shards;
    s->shards = pf_xcalloc(shards, sizeof(*s->shards));
    pthread_mutex_init(&s->recent_lock, NULL);
    for (i = 0; i < shards; i++) {
        struct shard *sh = &s->shards[i];

        pthread_mutex_init(&sh->lock, NULL);
        sh->nbuckets = 64;
        sh->buckets = pf_xcalloc(sh->nbuckets, sizeof(*sh->buckets));
        list_init(&sh->lru);
        list_init(&sh->varys);
        sh->limit = memory / shards;
        /* The initial table is charged once; entries pay for its growth. */
        sh->base = table_bytes(sh->nbuckets);
        if (sh->base > sh->limit)
            sh->base = sh->limit;
        sh->bytes = sh->base;
        atomic_fetch_add(&s->bytes, sh->bytes);
    }
    return s;
}

static void unlink_entry(struct pf_cstore *s, struct shard *sh, struct entry *e)
{
    struct entry **pp = &sh->buckets[e->hash & (sh->nbuckets - 1)];

    while (*pp != e)
        pp = &(*pp)->hnext;
    *pp = e->hnext;
    list_del(e);
    sh->count--;
    sh->bytes -= e->charge;
    atomic_fetch_sub(&s->bytes, e->charge);
    if (e->o) {
        atomic_fetch_sub(&s->objects, 1);
        pf_cobj_unref(e->o);
    }
    free(e);
}

void pf_cstore_free(struct pf_cstore *s)
{
    unsigned i;

    if (!s)
        return;
    for (i = 0; i < s->nshards; i++) {
        struct shard *sh = &s->shards[i];

        while (sh->lru.next != &sh->lru)
            unlink_entry(s, sh, sh->lru.next);
        while (sh->varys.next != &sh->varys)
            unlink_entry(s, sh, sh->varys.next);
        free(sh->buckets);
        pthread_mutex_destroy(&sh->lock);
    }
    free(s->shards);
    for (i = 0; i < RECENT; i++)
        free(s->recent[i].arg);
    pthread_mutex_destroy(&s->recent_lock);
    free(s);
}

static void grow(struct shard *sh)
{
    size_t n = sh->nbuckets * 2, i;
    struct entry **nb = calloc(n, sizeof(*nb));

    if (!nb)
        return; /* longer chains, still correct */
    for (i = 0; i < sh->nbuckets; i++) {
        struct entry *e = sh->buckets[i], *next;

        for (; e; e = next) {
            next = e->hnext;
            e->hnext = nb[e->hash & (n - 1)];
            nb[e->hash & (n - 1)] = e;
        }
    }
    free(sh->buckets);
    sh->buckets = nb;
    sh->nbuckets = n;
}

static void link_entry(struct pf_cstore *s, struct shard *sh, struct entry *e, struct entry *list)
{
    struct entry **b;

    if (sh->count >= sh->nbuckets)
        grow(sh);
    b = &sh->buckets[e->hash & (sh->nbuckets - 1)];
    e->hnext = *b;
    *b = e;
    list_push(list, e);
    e->tick = ++sh->tick;
    sh->count++;
    sh->bytes += e->charge;
    atomic_fetch_add(&s->bytes, e->charge);
    if (e->o)
        atomic_fetch_add(&s->objects, 1);
}

static struct entry *find_obj(struct shard *sh, uint64_t h, const char *key, const char *variant)
{
    struct entry *e = sh->buckets[h & (sh->nbuckets - 1)];

    for (; e; e = e->hnext) {
        if (e->o && e->hash == h && strcmp(e->o->key, key) == 0 &&
            strcmp(e->o->variant, variant) == 0)
            return e;
    }
    return NULL;
}

static struct entry *find_vary(struct shard *sh, uint64_t h, const char *key)
{
    struct entry *e = sh->buckets[h & (sh->nbuckets - 1)];

    for (; e; e = e->hnext) {
        if (!e->o && e->hash == h && strcmp(e->vkey, key) == 0)
            return e;
    }
    return NULL;
}

/* An entry's object with a new reference, moved to the front of the LRU when it is not near it. */
static struct pf_cobj *hit(struct shard *sh, struct entry *e)
{
    /*
     * An entry moved to the front within the last quarter of the shard's
     * operations is still in its newest quarter: leave it (exact LRU for
     * small shards, and a hot object's hits write to no other entry).
     */
    if (++sh->tick - e->tick > sh->count / 4) {
        list_del(e);
        list_push(&sh->lru, e);
        e->tick = sh->tick;
    }
    return pf_cobj_ref(e->o);
}

struct pf_cobj *pf_cstore_get(struct pf_cstore *s, const char *key, const char *variant)
{
    uint64_t h = key_hash(key);
    struct shard *sh = shard_of(s, h);
    struct pf_cobj *o = NULL;
    struct entry *e;

    pthread_mutex_lock(&sh->lock);
    e = find_obj(sh, h, key, variant ? variant : "");
    if (e)
        o = hit(sh, e);
    pthread_mutex_unlock(&sh->lock);
    return o;
}

/* The Vary record of key into out (pf_cstore_vary), under sh's lock. */
static bool vary_of(struct shard *sh, uint64_t h, const char *key, char *out, size_t size)
{
    struct entry *e = find_vary(sh, h, key);
    size_t n;

    if (e == NULL || size == 0)
        return false;
    n = strlen(e->vary);
    if (n >= size)
        n = size - 1;
    memcpy(out, e->vary, n);
    out[n] = '\0';
    return true;
}

bool pf_cstore_vary(struct pf_cstore *s, const char *key, char *out, size_t size)
{
    uint64_t h = key_hash(key);
    struct shard *sh = shard_of(s, h);
    bool found;

    pthread_mutex_lock(&sh->lock);
    found = vary_of(sh, h, key, out, size);
    pthread_mutex_unlock(&sh->lock);
    return found;
}

struct pf_cobj *pf_cstore_lookup(struct pf_cstore *s, const char *key, char *out, size_t size,
                                 bool *has_vary)
{
    uint64_t h = key_hash(key);
    struct shard *sh = shard_of(s, h);
    struct pf_cobj *o = NULL;
    struct entry *e;

    pthread_mutex_lock(&sh->lock);
    *has_vary = vary_of(sh, h, key, out, size);
    if (!*has_vary && (e = find_obj(sh, h, key, "")) != NULL)
        o = hit(sh, e);
    pthread_mutex_unlock(&sh->lock);
    return o;
}

/* Make room in sh: objects from the LRU tail first, then the oldest Vary records. */
static void evict(struct pf_cstore *s, struct shard *sh, const struct entry *keep)
{
    while (sh->bytes > sh->limit) {
        struct entry *e = sh->lru.prev;

        if (e == keep || e == &sh->lru)
            e = sh->varys.prev;
        if (e == keep || e == &sh->varys)
            break;
        unlink_entry(s, sh, e);
        atomic_fetch_add(&s->evictions, 1);
    }
}

/* Replace (or, e NULL, remove) key's Vary record in sh; 1 when checked and key's generation is no
 * longer gen (nothing changed: e freed). */
static int swap_vary(struct pf_cstore *s, struct shard *sh, uint64_t h, const char *key,
                     struct entry *e, bool check, uint64_t gen)
{
    struct entry *old;

    pthread_mutex_lock(&sh->lock);
    /* under the shard's lock, as put's check: a key purge either ran (refused) or comes after */
    if (check && stale(s, sh, h, key, NULL, 0, gen)) {
        pthread_mutex_unlock(&sh->lock);
        free(e);
        return 1;
    }
    old = find_vary(sh, h, key);
    if (old)
        unlink_entry(s, sh, old);
    if (e != NULL) {
        link_entry(s, sh, e, &sh->varys);
        evict(s, sh, e);
    }
    pthread_mutex_unlock(&sh->lock);
    return 0;
}

static int set_vary(struct pf_cstore *s, const char *key, const char *vary, bool check,
                    uint64_t gen)
{
    uint64_t h = key_hash(key);
    struct shard *sh = shard_of(s, h);
    size_t kl = strlen(key) + 1, vl;
    size_t charge;
    struct entry *e;

    if (!vary)
        return swap_vary(s, sh, h, key, NULL, check, gen);
    vl = strlen(vary) + 1;
    charge = sizeof(struct entry) + kl + vl + ALLOC_OVERHEAD + BUCKET_SHARE;
    if (charge > sh->limit - sh->base)
        return check && pf_cstore_gen(s, key) != gen;
    e = pf_xcalloc(1, sizeof(*e) + kl + vl);
    e->hash = h;
    e->charge = charge;
    e->vkey = (char *)(e + 1);
    e->vary = e->vkey + kl;
    memcpy(e->vkey, key, kl);
    memcpy(e->vary, vary, vl);
    return swap_vary(s, sh, h, key, e, check, gen);
}

void pf_cstore_set_vary(struct pf_cstore *s, const char *key, const char *vary)
{
    set_vary(s, key, vary, false, 0);
}

int pf_cstore_set_vary_at(struct pf_cstore *s, const char *key, const char *vary, uint64_t gen)
{
    return set_vary(s, key, vary, true, gen);
}

static int put(struct pf_cstore *s, struct pf_cobj *o, bool check, uint64_t gen)
{
    uint64_t h = key_hash(o->key);
    struct shard *sh = shard_of(s, h);
    size_t charge = o->size + sizeof(struct entry) + ALLOC_OVERHEAD + BUCKET_SHARE;
    struct entry *e, *old;

    if (charge > sh->limit - sh->base)
        return -1;
    e = pf_xcalloc(1, sizeof(*e));
    e->hash = h;
    e->charge = charge;
    e->o = pf_cobj_ref(o);
    pthread_mutex_lock(&sh->lock);
    /*
     * Under the shard's lock: a key purge bumps its slot under the same lock, and a prefix or
     * tag purge bumps the store's count before it locks the shards to scan them, so a put either
     * sees the new count or is in the shard before the scan.
     */
    if (check && stale(s, sh, h, o->key, o->tags, o->n_tags, gen)) {
        pthread_mutex_unlock(&sh->lock);
        pf_cobj_unref(e->o);
        free(e);
        return 1;
    }
    old = find_obj(sh, h, o->key, o->variant);
    if (old)
        unlink_entry(s, sh, old);
    link_entry(s, sh, e, &sh->lru);
    evict(s, sh, e);
    pthread_mutex_unlock(&sh->lock);
    return 0;
}

int pf_cstore_put(struct pf_cstore *s, struct pf_cobj *o)
{
    return put(s, o, false, 0);
}

int pf_cstore_put_at(struct pf_cstore *s, struct pf_cobj *o, uint64_t gen)
{
    return put(s, o, true, gen);
}

bool pf_cstore_covered(struct pf_cstore *s, const struct pf_cobj *o, uint64_t gen)
{
    uint64_t h = key_hash(o->key);
    struct shard *sh = shard_of(s, h);
    bool covered;

    pthread_mutex_lock(&sh->lock);
    covered = stale(s, sh, h, o->key, o->tags, o->n_tags, gen);
    pthread_mutex_unlock(&sh->lock);
    return covered;
}

size_t pf_cstore_purge_key(struct pf_cstore *s, const char *key)
{
    uint64_t h = key_hash(key);
    struct shard *sh = shard_of(s, h);
    struct entry **pp, *e;
    size_t n = 0;

    pthread_mutex_lock(&sh->lock);
    atomic_fetch_add(gen_slot(sh, h), 1); /* a fetch of key under way does not store */
    pp = &sh->buckets[h & (sh->nbuckets - 1)];
    while ((e = *pp) != NULL) {
        const char *k = e->o ? e->o->key : e->vkey;

        if (e->hash == h && strcmp(k, key) == 0) {
            n += e->o != NULL;
            unlink_entry(s, sh, e); /* *pp now points past e */
            continue;
        }
        pp = &e->hnext;
    }
    pthread_mutex_unlock(&sh->lock);
    return n;
}

typedef bool (*match_fn)(const struct pf_cobj *o, const char *arg);

/* Remember a prefix or tag purge and move the store's gen past it (see stale). */
static void remember(struct pf_cstore *s, bool tag, const char *arg)
{
    char *copy = pf_xstrdup(arg);
    struct recent *r;
    uint64_t seq;

    pthread_mutex_lock(&s->recent_lock);
    seq = atomic_load(&s->gen) + 1;
    r = &s->recent[(uint32_t)seq % RECENT];
    free(r->arg);
    r->seq = seq;
    r->tag = tag;
    r->arg = copy;
    atomic_store(&s->gen, seq);
    pthread_mutex_unlock(&s->recent_lock);
}

/* Remove every object of every shard for which match holds (a scan: purges are rare). */
static size_t purge_scan(struct pf_cstore *s, match_fn match, bool tag, const char *arg)
{
    size_t n = 0;
    unsigned i;

    remember(s, tag, arg); /* fetches under way that it covers do not store (see put) */
    for (i = 0; i < s->nshards; i++) {
        struct shard *sh = &s->shards[i];
        struct entry *e, *prev;

        pthread_mutex_lock(&sh->lock);
        for (e = sh->lru.prev; e != &sh->lru; e = prev) {
            prev = e->prev;
            if (match(e->o, arg)) {
                unlink_entry(s, sh, e);
                n++;
            }
        }
        pthread_mutex_unlock(&sh->lock);
    }
    return n;
}

static bool match_prefix(const struct pf_cobj *o, const char *prefix)
{
    return strncmp(o->key, prefix, strlen(prefix)) == 0;
}

static bool match_tag(const struct pf_cobj *o, const char *tag)
{
    return has_tag(o->tags, o->n_tags, tag);
}

size_t pf_cstore_purge_prefix(struct pf_cstore *s, const char *prefix)
{
    return purge_scan(s, match_prefix, false, prefix);
}

size_t pf_cstore_purge_tag(struct pf_cstore *s, const char *tag)
{
    return purge_scan(s, match_tag, true, tag);
}

void pf_cstore_stats(struct pf_cstore *s, struct pf_cstore_stats *out)
{
    out->bytes = atomic_load(&s->bytes);
    out->objects = atomic_load(&s->objects);
    out->evictions = atomic_load(&s->evictions);
}
