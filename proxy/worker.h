/*
 * Small helpers of a worker (struct pf_worker, proxy/worker-t.h) that need no
 * server: its random generator. Worker thread.
 */
#ifndef PF_WORKER_H
#define PF_WORKER_H

#include <stdint.h>

struct pf_worker;

/* Random 64-bit value from the worker's generator (xorshift128+, not for secrets). */
uint64_t pf_worker_rand(struct pf_worker *w);

#endif /* PF_WORKER_H */
