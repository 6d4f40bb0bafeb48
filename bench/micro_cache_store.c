/*
 * bench/micro_cache_store.c: CPU cost of the cache's L1 store (a get that
 * hits, a put that replaces or evicts) and its memory cost: RSS per 10,000
 * stored 1 KiB objects, and RSS growth under a flood of distinct keys
 * against the configured memory (the store must stay within 125 %).
 *
 *   make bench-micro            (or: build/rel/bench/micro_cache_store [OPS])
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/wait.h>
#include <unistd.h>

#include "filters/cache/store.h"

static double now_s(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static long rss_bytes(void)
{
    long pages = 0, resident = 0;
    FILE *f = fopen("/proc/self/statm", "r");

    if (!f)
        return 0;
    if (fscanf(f, "%ld %ld", &pages, &resident) != 2)
        resident = 0;
    fclose(f);
    return resident * sysconf(_SC_PAGESIZE);
}

/* A typical cached 1 KiB response: key, four headers, one tag. */
static struct pf_cobj *obj(unsigned long i, size_t body_len)
{
    static unsigned char body[(1 << 20) + (1 << 14)];
    struct pf_cache_meta m;
    struct pf_cobj_builder *b;
    char key[64];

    memset(&m, 0, sizeof(m));
    m.status = 200;
    snprintf(key, sizeof(key), "GET http://bench.example/items/%lu", i);
    b = pf_cobj_builder_new(key, "", 200, &m, 0);
    pf_cobj_builder_header(b, "Content-Type", "application/json");
    pf_cobj_builder_header(b, "Cache-Control", "max-age=60");
    pf_cobj_builder_header(b, "ETag", "\"0123456789abcdef\"");
    pf_cobj_builder_header(b, "Date", "Thu, 03 Dec 2026 14:00:00 GMT");
    pf_cobj_builder_tags(b, "items");
    memset(body, 'x', body_len);
    pf_cobj_builder_body_bytes(b, body, body_len);
    return pf_cobj_builder_finish(b, 1);
}

static void bench_cpu(unsigned long n)
{
    enum { N = 20000 };
    struct pf_cstore *s = pf_cstore_new((size_t)256 << 20, 0);
    static struct pf_cobj *objs[N];
    static char keys[N][64];
    double t0, took;
    unsigned long i, hits = 0;

    t0 = now_s();
    for (i = 0; i < n / 4; i++)
        pf_cobj_unref(obj(i, 1024));
    took = now_s() - t0;
    printf("cache object build + free (1 KiB body, 4 headers, 1 tag): %.1f ns per object\n",
           took / (double)(n / 4) * 1e9);
    for (i = 0; i < N; i++)
        objs[i] = obj(i, 1024);
    for (i = 0; i < N; i++) {
        snprintf(keys[i], sizeof(keys[i]), "%s", objs[i]->key);
        pf_cstore_put(s, objs[i]);
    }
    t0 = now_s();
    for (i = 0; i < n; i++) {
        struct pf_cobj *o = pf_cstore_get(s, keys[i % N], "");

        hits += o != NULL;
        pf_cobj_unref(o);
    }
    took = now_s() - t0;
    printf("cache store get (hit, %d objects): %.1f ns per call (%lu calls, %lu hits)\n", N,
           took / (double)n * 1e9, n, hits);
    t0 = now_s();
    for (i = 0; i < n; i++) {
        struct pf_cobj *o = pf_cstore_get(s, keys[(i * 7) % 64], "");

        hits += o != NULL;
        pf_cobj_unref(o);
    }
    took = now_s() - t0;
    printf("cache store get (hit, 64 hot keys of %d): %.1f ns per call (%lu calls)\n", N,
           took / (double)n * 1e9, n);
    t0 = now_s();
    for (i = 0; i < n; i++)
        pf_cstore_put(s, objs[i % N]);
    took = now_s() - t0;
    printf("cache store put (replacing the same key): %.1f ns per call (%lu calls)\n",
           took / (double)n * 1e9, n);
    pf_cstore_free(s);
    for (i = 0; i < N; i++)
        pf_cobj_unref(objs[i]);
}

static void bench_rss(void)
{
    struct pf_cstore *s = pf_cstore_new((size_t)256 << 20, 0);
    struct pf_cstore_stats st;
    long before = rss_bytes(), after;
    unsigned long i;

    for (i = 0; i < 10000; i++) {
        struct pf_cobj *o = obj(1000000 + i, 1024);

        pf_cstore_put(s, o);
        pf_cobj_unref(o);
    }
    after = rss_bytes();
    pf_cstore_stats(s, &st);
    printf("RSS per 10,000 stored 1 KiB objects: %ld bytes (%.0f per object; store charges "
           "%llu)\n",
           after - before, (double)(after - before) / 10000.0, (unsigned long long)st.bytes);
    pf_cstore_free(s);
}

static void flood(unsigned long n, size_t min, size_t spread)
{
    size_t memory = (size_t)64 << 20;
    struct pf_cstore *s = pf_cstore_new(memory, 0);
    struct pf_cstore_stats st;
    long before = rss_bytes(), peak = 0;
    unsigned long i;

    for (i = 0; i < n; i++) {
        struct pf_cobj *o = obj(2000000 + i, min + (i * 7919) % spread);

        pf_cstore_put(s, o);
        pf_cobj_unref(o);
        if (i % 100 == 0 && rss_bytes() - before > peak)
            peak = rss_bytes() - before;
    }
    pf_cstore_stats(s, &st);
    printf("flood of %lu distinct keys (%zu B..%zu KiB) into memory %zu: RSS growth %ld "
           "(%.1f %% of memory), %llu objects, %llu evictions\n",
           n, min, (min + spread) >> 10, memory, peak, 100.0 * (double)peak / (double)memory,
           (unsigned long long)st.objects, (unsigned long long)st.evictions);
    pf_cstore_free(s);
}

static void bench_flood(void)
{
    flood(400000, 64, 4000);
}

static void bench_flood_large(void)
{
    flood(4000, 1024, 60000);
}

static void bench_flood_huge(void)
{
    flood(1000, 16384, 1 << 20);
}

static void in_child(void (*fn)(void))
{
    pid_t pid;

    fflush(stdout);
    pid = fork();
    if (pid == 0) {
        fn();
        fflush(stdout);
        _exit(0);
    }
    if (pid > 0)
        waitpid(pid, NULL, 0);
}

int main(int argc, char **argv)
{
    unsigned long n = argc > 1 ? strtoul(argv[1], NULL, 10) : 2000000;

    if (n == 0) {
        fprintf(stderr, "usage: %s [CALLS > 0]\n", argv[0]);
        return 2;
    }
    /* Each memory measurement in a fresh process: memory freed by an earlier step would hide
     * its RSS growth. */
    in_child(bench_flood);
    in_child(bench_flood_large);
    in_child(bench_flood_huge);
    in_child(bench_rss);
    bench_cpu(n);
    return 0;
}
