/*
 * pilotfish inject: adds the pilotfish sidecar to every pod template of
 * Kubernetes manifests (docs/deployment.md).
 */
#ifndef PF_INJECT_H
#define PF_INJECT_H

#include <stdbool.h>
#include <stddef.h>

#include <yaml.h>

struct pf_inject_opts {
    const char *image;      /* pilotfish:latest */
    const char *port;       /* --port NAME: the app's named port to take over, or NULL */
    const char *config_map; /* the ConfigMap mounted at /etc/pilotfish ("pilotfish") */
    const char *config;     /* --config FILE: emitted as that ConfigMap, or NULL */
    char *config_text;      /* FILE's contents */
    bool legacy;            /* --legacy-sidecar: first container + preStop */
    unsigned proxy_port;    /* pilotfish's listen port (8080, or the config's) */
    unsigned probes_port;   /* probes.listen port (9902, or the config's) */
    unsigned grace_s;       /* terminationGracePeriodSeconds at least (drain_delay + timeout) */
};

/* Error messages gathered while injecting. */
struct pf_inject_err {
    char msg[512];
    bool set;
};

/* Keep the first error only (printf-like); returns -1 for `return pf_inject_fail(...)`. */
int pf_inject_fail(struct pf_inject_err *err, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/*
 * Inject into the pod spec at index spec of document d; what names the
 * workload in messages ("Deployment/web"). Returns 0 (also when pilotfish is
 * there already) or -1 with err set.
 */
int pf_inject_pod(yaml_document_t *d, int spec, const struct pf_inject_opts *o, const char *what,
                  struct pf_inject_err *err);

/*
 * Inject into the YAML text in[0..len) (one or more documents) and return the
 * new text (malloc'd, *out_len bytes), or NULL with err set: nothing is
 * returned half-done. name names the input in messages.
 */
char *pf_inject_text(const char *in, size_t len, const char *name, const struct pf_inject_opts *o,
                     size_t *out_len, struct pf_inject_err *err);

/* One input: its text and its name in messages. */
struct pf_inject_input {
    const char *text;
    size_t len;
    const char *name;
};

/* The same over several inputs, written out as one stream of documents. */
char *pf_inject_texts(const struct pf_inject_input *in, unsigned n, const struct pf_inject_opts *o,
                      size_t *out_len, struct pf_inject_err *err);

/* pilotfish inject [options] [FILE|-]...: the subcommand; the exit status. */
int pf_inject_main(int argc, char **argv);

#endif /* PF_INJECT_H */
