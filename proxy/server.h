/*
 * The server: worker threads with their listeners, the admin loop on the main
 * thread, configuration swaps (reload) and draining.
 *
 * Threads: pf_server_* functions run on the main thread unless said otherwise.
 * The main thread reaches a worker only through its mailbox (pf_server_mail).
 */
#ifndef PF_SERVER_H
#define PF_SERVER_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "proxy/core.h"

struct evbuffer;

/* One listen address: its sockets (one per worker for TCP, shared for unix:). */
/* SIGHUP, SIGUSR1, SIGTERM, SIGINT */
#define PF_SERVER_N_SIGNALS 4

struct pf_listen_sock {
    char *text;
    int *fds; /* one per worker (TCP: pilotfish's own SO_REUSEPORT group; unix: one, dup'ed) */
    unsigned n_fds;
    bool is_unix;
};

struct pf_server {
    struct event_base *base; /* main thread */
    struct pf_worker *workers;
    unsigned n_workers;
    struct pf_worker admin; /* the admin API's loop, on the main thread */
    struct evconnlistener *admin_listener;
    char *admin_text;                       /* address the admin listener is bound to */
    struct evconnlistener *probes_listener; /* probes.listen (proxy/probes.c), or NULL */
    char *probes_text;
    struct event *probes_retry;
    struct pf_config *cfg; /* current snapshot (the server's reference) */
    struct pf_listen_sock *socks;
    unsigned n_socks;
    atomic_bool draining; /* atomic: /ready answers 503 */
    bool exit_after_drain;
    bool drain_closed;     /* drain_delay passed: listeners closed */
    unsigned stop_signals; /* SIGTERM/SIGINT received (the second exits at once) */
    unsigned fd_cap;       /* client connections the open files limit allows (0: no cap) */
    bool stopping;
    atomic_uint live_conns; /* atomic: client connections, all workers (and slots being taken) */
    atomic_uint max_conns;  /* atomic: limits.max_connections within the open files limit */
    atomic_uint n_full;     /* atomic: workers paused because live_conns reached max_conns */
    struct event *drain_timer;
    struct event *drain_check;
    struct event *sig[PF_SERVER_N_SIGNALS];
    uint64_t reloads_ok;
    uint64_t reloads_failed;
    uint64_t last_reload_ok_s; /* wall clock seconds */
    int exit_code;
};

/* Open listeners, start workers and the admin API. 0, or -1 after logging why. */
int pf_server_start(struct pf_server *s, struct pf_config *cfg);

/* Run the main loop until the process should exit; returns the exit code. */
int pf_server_run(struct pf_server *s);

/* Release everything (after pf_server_run, or after a failed start). */
void pf_server_free(struct pf_server *s);

/*
 * Reload the configuration file. On success the new snapshot is in force for
 * new requests; on failure every error is logged and the old one stays.
 * result (may be NULL) receives a JSON object. Returns 0 or -1.
 */
int pf_server_reload(struct pf_server *s, struct evbuffer *result);

/* Start draining (docs/operations.md); exit when done if exit_after. */
void pf_server_drain(struct pf_server *s, bool exit_after);

/* Readiness: true when ready; otherwise reasons (JSON array items) in why. */
bool pf_server_ready(struct pf_server *s, struct evbuffer *why);

/* Liveness: every worker's loop ticked recently. */
bool pf_server_live(struct pf_server *s);

/* The server of the process (set by pf_server_start). */
struct pf_server *pf_server_get(void);

/* Worker thread: a connection of w closed (accept limits, drain). */
void pf_server_conn_closed(struct pf_worker *w);

/* Worker thread: drop one reference to wc (frees it at zero). */
void pf_server_wconf_unref(struct pf_worker *w, struct pf_wconf *wc);

/* Any thread: run fn(w, arg) on worker w's thread. */
void pf_server_mail(struct pf_worker *w, void (*fn)(struct pf_worker *, void *), void *arg);

/*
 * CPUs the cgroup CPU quota under root allows (v2 cpu.max, or v1
 * cpu/cpu.cfs_quota_us and cpu.cfs_period_us), rounded up; 0 when unlimited.
 */
unsigned pf_server_cgroup_cpus(const char *root);

/* Number of CPUs this process may use (affinity and cgroup quota). */
unsigned pf_server_auto_workers(void);

#endif /* PF_SERVER_H */
