/*
 * Listening sockets and accepting: one socket per worker and TCP address
 * (SO_REUSEPORT among pilotfish's own sockets only), the listen backlog, and
 * the process-wide budget of limits.max_connections shared by the workers.
 *
 * Threads: pf_listen_open, pf_listen_socket, pf_listen_give, pf_listen_set_max
 * run on the main thread; the pf_listen_worker_* functions on the worker's.
 */
#ifndef PF_LISTEN_H
#define PF_LISTEN_H

#include <stdbool.h>
#include <stdint.h>

#include "proxy/server.h"

/* A worker's listener: its own socket for one listen address. */
struct pf_listener {
    struct event *ev;
    int fd;
};

/*
 * One socket bound to a (no SO_REUSEPORT: it fails with EADDRINUSE when the
 * address is taken, by another pilotfish too) and listening with backlog.
 * A socket file left by a dead process is replaced; one somebody still
 * accepts on is "in use". Returns the socket or -errno.
 */
int pf_listen_socket(const struct pf_addr *a, int backlog);

/*
 * The sockets of listen address a for n workers, into ls. The first is bound
 * without SO_REUSEPORT (so an address in use fails), and only then marked
 * SO_REUSEPORT for the other n - 1 to join; unix: sockets are shared. 0, or
 * -1 after logging why.
 */
int pf_listen_open(struct pf_listen_sock *ls, const struct pf_addr *a, unsigned n, int backlog);

/* Hand ls's sockets to the workers (each starts accepting on its own). */
void pf_listen_give(struct pf_server *s, struct pf_listen_sock *ls);

/* want, capped by the value in somaxconn_path (when readable); *capped says so. */
unsigned pf_listen_backlog(unsigned want, const char *somaxconn_path, bool *capped);

/*
 * Client connections an open files limit of nofile allows, when reserved
 * descriptors go to everything else: each client connection may need an
 * upstream one, so (nofile - reserved) / 2, at least 1.
 */
unsigned pf_listen_fd_cap(uint64_t nofile, unsigned reserved);

/* Set the process-wide connection limit; workers paused under a lower one resume. */
void pf_listen_set_max(struct pf_server *s, unsigned max);

/* A client connection closed: give its slot back (wakes paused workers). */
void pf_listen_release(struct pf_server *s);

/* Worker thread: enable or disable w's listeners as its state says. */
void pf_listen_worker_update(struct pf_worker *w);

/* Worker thread (mail): stop accepting on the socket bound like fd (arg) and close it. */
void pf_listen_worker_remove(struct pf_worker *w, void *arg);

/* Worker thread: close every listener of w. */
void pf_listen_worker_close_all(struct pf_worker *w);

/* Worker thread: release the listener table (after pf_listen_worker_close_all). */
void pf_listen_worker_free(struct pf_worker *w);

#endif /* PF_LISTEN_H */
