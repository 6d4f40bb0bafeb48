/*
 * bench/ratelimit.c: nanoseconds per rate-limit check (pf_ratelimit_take:
 * key digest, table lookup, token take) on 1..N threads, every check
 * admitted (the rate is far above what the threads can ask for).
 *
 *   bench/ratelimit.sh            (builds, then runs 1 and 2 threads)
 *   build/rel/bench/ratelimit THREADS KEYS CHECKS_PER_THREAD
 *
 * KEYS distinct keys are shared by all threads (KEYS=1: every thread on one
 * bucket, the worst case for the bucket's compare-and-swap).
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "filters/ratelimit.h"
#include "proxy/conf.h"

struct arg {
    void *conf;
    void *pstate;
    unsigned keys;
    unsigned long checks;
    unsigned seed;
    unsigned long refused;
};

static uint64_t now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void *run(void *p)
{
    struct arg *a = p;
    char(*keys)[16] = malloc(a->keys * sizeof(*keys));
    int *lens = malloc(a->keys * sizeof(*lens));
    uint64_t t = 1000000;

    if (keys == NULL || lens == NULL)
        abort();
    for (unsigned k = 0; k < a->keys; k++)
        lens[k] = snprintf(keys[k], sizeof(keys[k]), "k%u", k);
    for (unsigned long i = 0; i < a->checks; i++) {
        unsigned k = (unsigned)((i * 2654435761u + a->seed) % a->keys);

        if (!pf_ratelimit_take(a->conf, a->pstate, keys[k], (size_t)lens[k], t + i / 1024))
            a->refused++;
    }
    free(keys);
    free(lens);
    return NULL;
}

int main(int argc, char **argv)
{
    unsigned threads = argc > 1 ? (unsigned)atoi(argv[1]) : 1;
    unsigned keys = argc > 2 ? (unsigned)atoi(argv[2]) : 1000;
    unsigned long checks = argc > 3 ? strtoul(argv[3], NULL, 10) : 2000000;
    const char *yaml = "ratelimit: {requests_per_second: 1e9, burst: 100000000, "
                       "key: \"header:X-Key\", max_keys: 100000}\n";
    struct pf_conf_node *root = NULL;
    struct pf_err err;
    void *conf = NULL;
    void *pstate = NULL;
    struct arg *a = calloc(threads, sizeof(*a));
    pthread_t *tid = calloc(threads, sizeof(*tid));
    uint64_t t0, t1;
    unsigned long refused = 0;

    pf_err_init(&err, "bench");
    if (a == NULL || tid == NULL || pf_conf_node_parse(yaml, strlen(yaml), &root, &err) != 0 ||
        pf_filter_ratelimit.conf_parse(pf_conf_get(root, "ratelimit"), &conf, &err) != 0 ||
        pf_filter_ratelimit.init_process(conf, &pstate) != 0) {
        fprintf(stderr, "setup failed\n");
        return 1;
    }
    for (unsigned i = 0; i < threads; i++)
        a[i] = (struct arg){conf, pstate, keys, checks, i * 7919u, 0};
    run(&(struct arg){conf, pstate, keys, keys * 2ul, 0, 0}); /* warm: every key in the table */
    t0 = now_ns();
    for (unsigned i = 0; i < threads; i++)
        pthread_create(&tid[i], NULL, run, &a[i]);
    for (unsigned i = 0; i < threads; i++) {
        pthread_join(tid[i], NULL);
        refused += a[i].refused;
    }
    t1 = now_ns();
    printf("threads %u keys %u: %.1f ns per check per thread (%lu checks each, %lu refused)\n",
           threads, keys, (double)(t1 - t0) / (double)checks, checks, refused);
    pf_filter_ratelimit.fini_process(pstate);
    pf_filter_ratelimit.conf_free(conf);
    pf_conf_node_free(root);
    pf_err_fini(&err);
    free(a);
    free(tid);
    return 0;
}
