/*
 * The L2 tier: Redis through hiredis's async API on one worker's event
 * loop (filters/cache/l2.c), one client per worker. Values are opaque bytes
 * (pf_cobj_serialize). Keys are spread over several independent servers by
 * rendezvous hashing. A failure, a timeout or garbage only ever misses:
 * every get calls its callback exactly once, within timeout, unless it was
 * cancelled first.
 *
 * Threads: the worker that made the client only.
 */
#ifndef PF_CACHE_L2_H
#define PF_CACHE_L2_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct event_base;

struct pf_l2_conf {
    /* "host:port", "[v6addr]:port" or "unix:/path". A host name is resolved by hiredis with a
     * blocking getaddrinfo at each (re)connect: prefer addresses. */
    const char *const *addresses;
    unsigned n_addresses;
    unsigned db;
    const char *password;   /* "" = none */
    uint64_t timeout_ms;    /* per command, on pilotfish's own timer */
    const char *key_prefix; /* prepended to every key */
};

struct pf_l2;

/* Connects to every server at once (in the background); NULL when an address is malformed. */
struct pf_l2 *pf_l2_new(struct event_base *base, const struct pf_l2_conf *conf);
/*
 * A subscriber: one connection, to the server rendezvous hashing picks for channel among
 * conf's addresses, that SUBSCRIBEs to key_prefix + channel at each (re)connect (the same
 * backoff as a client) and calls cb with each message published there (msg lives during the
 * call only). Only pf_l2_free may be used on it. NULL when the address is malformed.
 */
typedef void (*pf_l2_msg_fn)(void *arg, const char *msg, size_t len);
struct pf_l2 *pf_l2_subscriber_new(struct event_base *base, const struct pf_l2_conf *conf,
                                   const char *channel, pf_l2_msg_fn cb, void *arg);
/* Pending gets are cancelled (callbacks not called). Not from inside a pf_l2 callback. */
void pf_l2_free(struct pf_l2 *l2);

/* data == NULL: a miss (absent, error, timeout, not connected). data lives during the call only. */
typedef void (*pf_l2_get_fn)(void *arg, const void *data, size_t len);

/* Start a GET; returns a handle for pf_l2_cancel (never 0). */
uint64_t pf_l2_get(struct pf_l2 *l2, const char *key, pf_l2_get_fn cb, void *arg);
/* The callback of handle h will not be called (no-op when it already was). */
void pf_l2_cancel(struct pf_l2 *l2, uint64_t h);

/*
 * Fire-and-forget writes: SET key value EX ttl_s (nothing when ttl_s is 0), plus SADD of key
 * into each tag's set key_prefix "tag:" tag, whose TTL is raised to the longest of its members'
 * (EXPIRE NX then EXPIRE GT: Redis 7.0 or later; older servers refuse them, counted as errors,
 * and the sets then never expire). DEL.
 */
void pf_l2_set(struct pf_l2 *l2, const char *key, const void *data, size_t len, uint64_t ttl_s,
               const char *const *tags, unsigned n_tags);
/*
 * A follow-up, on the client's thread: l2 is the client once the command's reply (or its loss
 * with the connection) is in, and commands may be sent on it; NULL when there is nothing to
 * follow up (the command was not sent) or the client is being freed (send nothing then).
 */
typedef void (*pf_l2_then_fn)(void *arg, struct pf_l2 *l2);
/* pf_l2_set, then fn(arg, ...) exactly once when the SET's reply is in (see pf_l2_then_fn). */
void pf_l2_set_then(struct pf_l2 *l2, const char *key, const void *data, size_t len, uint64_t ttl_s,
                    const char *const *tags, unsigned n_tags, pf_l2_then_fn fn, void *arg);
void pf_l2_del(struct pf_l2 *l2, const char *key);
/*
 * A purge job: the same deletes as pf_l2_del, _purge_tag and _purge_prefix, then
 * pf_l2_job_publish, which ends the job: msg is PUBLISHed (as pf_l2_publish) once Redis has run
 * every delete of the job (their replies, and a PING after each SCAN walk, are in), or lost them
 * with a connection. The job frees itself. The l2 client's thread only.
 */
struct pf_l2_job;
struct pf_l2_job *pf_l2_job_new(struct pf_l2 *l2);
void pf_l2_job_del(struct pf_l2_job *j, const char *key);
void pf_l2_job_purge_tag(struct pf_l2_job *j, const char *tag);
void pf_l2_job_purge_prefix(struct pf_l2_job *j, const char *prefix);
/* fn(arg, l2) once every delete of j has run, just before its PUBLISH (l2 NULL: being freed). */
void pf_l2_job_then(struct pf_l2_job *j, pf_l2_then_fn fn, void *arg);
void pf_l2_job_publish(struct pf_l2_job *j, const char *channel, const void *msg, size_t len);

/* PUBLISH msg on key_prefix + channel, on the server rendezvous hashing picks for channel. */
void pf_l2_publish(struct pf_l2 *l2, const char *channel, const void *msg, size_t len);
/* Delete every key of a tag's set (SMEMBERS then DEL), and every key with a prefix (SCAN MATCH). */
void pf_l2_purge_tag(struct pf_l2 *l2, const char *tag);
void pf_l2_purge_prefix(struct pf_l2 *l2, const char *prefix);

/*
 * misses: gets called back with NULL, whatever the cause (timeouts included);
 * errors: error replies, replies of the wrong type, commands lost with a connection;
 * timeouts: gets that passed timeout_ms; reconnects: connections re-established.
 */
struct pf_l2_stats {
    uint64_t hits, misses, errors, timeouts, reconnects;
};
void pf_l2_stats(const struct pf_l2 *l2, struct pf_l2_stats *out);

/*
 * The same counts summed over every client of the process, past ones
 * included, plus the time of each get sent to Redis (to its reply or its
 * timeout), counted in buckets of pf_l2_bounds seconds (not cumulative: a
 * get over the last bound is in count only). Any thread.
 */
#define PF_L2_BUCKETS 12
extern const double pf_l2_bounds[PF_L2_BUCKETS];
struct pf_l2_totals {
    uint64_t errors, timeouts, reconnects;
    uint64_t count, sum_us, buckets[PF_L2_BUCKETS];
};
void pf_l2_totals(struct pf_l2_totals *out);

/*
 * Which server holds key (rendezvous hashing, exposed for tests). The client
 * identifies a server by its address string (pf_l2_pick_among), so removing
 * any one address from the list only moves that server's keys; pf_l2_pick is
 * the same hashing with servers identified by their index 0..n-1.
 */
unsigned pf_l2_pick(const char *key, unsigned n);
unsigned pf_l2_pick_among(const char *key, const char *const *addresses, unsigned n);

#endif /* PF_CACHE_L2_H */
