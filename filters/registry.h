/*
 * The filters pilotfish knows, by the name used in YAML.
 */
#ifndef PF_REGISTRY_H
#define PF_REGISTRY_H

struct pf_filter_ops;

/* The filter called name, or NULL. Any thread. */
const struct pf_filter_ops *pf_filter_find(const char *name);

/* The i-th registered filter (0, 1, ...), NULL past the last. Any thread. */
const struct pf_filter_ops *pf_filter_at(unsigned i);

/*
 * The chain a route gets when it lists no filters: [metrics, gzip],
 * restricted to the filters this build has. NULL-terminated.
 */
extern const char *const pf_filter_default_chain[];

#endif /* PF_REGISTRY_H */
