/*
 * What a configuration snapshot holds outside itself: references to the
 * process-wide endpoints of its upstreams, and the filters' process state
 * (pstate, see proxy/filter.h). Both are taken before the snapshot is
 * published and released when its last reference goes (pf_conf_unref), so
 * they outlive a reload exactly when the new snapshot takes them too.
 */
#ifndef PF_SNAPSHOT_H
#define PF_SNAPSHOT_H

struct pf_config;
struct pf_err;

/*
 * Bind cfg's endpoints and give each filter of cfg its process state: the
 * one of prev (the running snapshot, or NULL) when the filter's
 * reuse_process accepts cfg's settings, else a new one from init_process.
 * 0; or -1 with nothing kept and each failure described in err. Main thread,
 * before cfg is published.
 */
int pf_snapshot_bind(struct pf_config *cfg, const struct pf_config *prev, struct pf_err *err);

/* cfg->release: drop what pf_snapshot_bind (or pf_endpoint_bind) took. Any thread. */
void pf_snapshot_release(struct pf_config *cfg);

#endif /* PF_SNAPSHOT_H */
