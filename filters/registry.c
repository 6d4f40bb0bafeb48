/*
 * Registered filters. Adding one: write filters/<name>.c exporting
 * `const struct pf_filter_ops pf_filter_<name>`, then list it here.
 */
#include "filters/registry.h"

#include <string.h>

#include "proxy/filter.h"
#include "filters/cache/cache.h"
#include "filters/gzip.h"
#include "filters/metrics.h"
#include "filters/ratelimit.h"

static const struct pf_filter_ops *const filters[] = {
    &pf_filter_metrics, &pf_filter_ratelimit, &pf_filter_gzip, &pf_filter_cache, NULL,
};

const char *const pf_filter_default_chain[] = {"metrics", "gzip", NULL};

const struct pf_filter_ops *pf_filter_at(unsigned i)
{
    return i < sizeof(filters) / sizeof(filters[0]) ? filters[i] : NULL;
}

const struct pf_filter_ops *pf_filter_find(const char *name)
{
    for (unsigned i = 0; filters[i] != NULL; i++) {
        if (strcmp(filters[i]->name, name) == 0)
            return filters[i];
    }
    return NULL;
}
