/*
 * Worker helpers: the accessors of proxy/filter.h and the random generator.
 */
#include "proxy/worker.h"

#include "proxy/worker-t.h"

uint64_t pf_worker_rand(struct pf_worker *w)
{
    uint64_t s1 = w->rng[0];
    const uint64_t s0 = w->rng[1];

    w->rng[0] = s0;
    s1 ^= s1 << 23;
    w->rng[1] = s1 ^ s0 ^ (s1 >> 17) ^ (s0 >> 26);
    return w->rng[1] + s0;
}

unsigned pf_worker_index(const struct pf_worker *w)
{
    return w->index;
}

unsigned pf_worker_count(const struct pf_worker *w)
{
    return w->count;
}

void *pf_worker_base(struct pf_worker *w)
{
    return w->base;
}
