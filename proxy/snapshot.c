/*
 * Snapshot bindings: endpoint references and filters' process state (see
 * proxy/snapshot.h and the lifetimes in proxy/filter.h).
 *
 * A pstate shared by several snapshots carries a count of them
 * (pf_filter_inst.pstate_refs, allocated with the pstate); the snapshot that
 * drops it to zero runs fini_process, on whichever thread freed it last.
 */
#include "proxy/snapshot.h"

#include <errno.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "proxy/arena.h"
#include "proxy/conf.h"
#include "proxy/filter.h"
#include "proxy/log.h"
#include "proxy/upstream/endpoint.h"
#include "proxy/upstream/retry.h"

static const struct pf_filter_inst *inst_of(const struct pf_config *cfg,
                                            const struct pf_filter_ops *ops)
{
    for (unsigned i = 0; cfg != NULL && i < cfg->n_filters; i++) {
        if (cfg->filters[i].ops == ops)
            return &cfg->filters[i];
    }
    return NULL;
}

static void pstate_drop(struct pf_filter_inst *f)
{
    if (f->pstate_refs == NULL)
        return;
    if (atomic_fetch_sub(f->pstate_refs, 1) == 1) {
        if (f->ops->fini_process != NULL)
            f->ops->fini_process(f->pstate);
        free(f->pstate_refs);
    }
    f->pstate = NULL;
    f->pstate_refs = NULL;
}

/* Adopt prev's pstate for f, or make one. 0 or -errno (message in err). */
static int pstate_take(struct pf_filter_inst *f, const struct pf_config *prev, struct pf_err *err)
{
    const struct pf_filter_ops *ops = f->ops;
    const struct pf_filter_inst *old = inst_of(prev, ops);
    int rc;

    if (ops->init_process == NULL)
        return 0;
    if (old != NULL && old->pstate_refs != NULL && ops->reuse_process != NULL &&
        ops->reuse_process(old->conf, f->conf)) {
        atomic_fetch_add(old->pstate_refs, 1);
        f->pstate = old->pstate;
        f->pstate_refs = old->pstate_refs;
        return 0;
    }
    rc = ops->init_process(f->conf, &f->pstate);
    if (rc != 0) {
        pf_err_at(err, NULL, "filters.%s: cannot set up its state: %s", ops->name, strerror(-rc));
        f->pstate = NULL;
        return rc;
    }
    f->pstate_refs = pf_xmalloc(sizeof(*f->pstate_refs));
    atomic_init(f->pstate_refs, 1);
    return 0;
}

int pf_snapshot_bind(struct pf_config *cfg, const struct pf_config *prev, struct pf_err *err)
{
    if (pf_endpoint_bind(cfg, err) != 0)
        return -1;
    pf_retry_bind(cfg, prev);
    cfg->release = pf_snapshot_release;
    for (unsigned i = 0; i < cfg->n_filters; i++) {
        if (pstate_take(&cfg->filters[i], prev, err) != 0) {
            pf_snapshot_release(cfg);
            return -1;
        }
    }
    pf_endpoint_fresh_breakers(cfg, prev); /* bound for good: those that left start closed */
    return 0;
}

void pf_snapshot_release(struct pf_config *cfg)
{
    for (unsigned i = 0; i < cfg->n_filters; i++)
        pstate_drop(&cfg->filters[i]);
    pf_endpoint_unbind(cfg);
    pf_retry_unbind(cfg);
    cfg->release = NULL;
}

int pf_upstream_bind(struct pf_config *cfg)
{
    if (pf_endpoint_bind(cfg, NULL) != 0)
        return -ENOSPC;
    pf_retry_bind(cfg, NULL);
    cfg->release = pf_snapshot_release;
    return 0;
}
