/*
 * The probes listener (probes.listen): a read-only door to the admin API for
 * kubelets and scrapers. It serves GET/HEAD /live, /ready, /health and
 * /metrics only, so the admin listener with /reload, /config and /drain can
 * stay on loopback. Connections are served by the admin loop.
 */
#ifndef PF_PROBES_H
#define PF_PROBES_H

#include <stdbool.h>

struct pf_server;
struct pf_config;
struct pf_tx;

/* Open the probes listener of cfg at startup (none when probes.listen is off); -1 on error. */
int pf_probes_open(struct pf_server *s, const struct pf_config *cfg);

/*
 * Reload, before anything is applied: a socket for cfg's probes address when
 * it changed, -1 when it changed to off, -3 when unchanged, -2 on an error (logged).
 */
int pf_probes_prepare(struct pf_server *s, const struct pf_config *cfg);

/* Reload, once it cannot fail any more: serve fd from pf_probes_prepare (-3: nothing to do). */
void pf_probes_apply(struct pf_server *s, const struct pf_config *cfg, int fd);

/* Close the listener (exit). */
void pf_probes_close(struct pf_server *s);

/* The path is one the probes listener serves (query string ignored). */
bool pf_probes_path_ok(const char *url);

/* The head of a request on the probes listener: false with a 404/405 reply set when refused. */
bool pf_probes_head_ok(struct pf_tx *tx);

#endif /* PF_PROBES_H */
