/*
 * bench/micro_accesslog.c: CPU cost of one access log line (pf_accesslog_write)
 * in each format, json and text, for a typical proxied GET with Host,
 * User-Agent and Referer. Prints nanoseconds per line; the buffer is emptied
 * as it fills, so nothing reaches the writer thread.
 *
 *   make bench-micro            (or: build/rel/bench/micro_accesslog [LINES [json|text]])
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <event2/buffer.h>

#include "proxy/accesslog.h"
#include "proxy/arena.h"
#include "proxy/clock.h"
#include "proxy/core.h"
#include "proxy/hdrs.h"

static double now_s(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static double run(struct pf_tx *tx, unsigned long n)
{
    double t0 = now_s();

    for (unsigned long i = 0; i < n; i++) {
        pf_accesslog_write(tx);
        if (evbuffer_get_length(tx->w->alog) > 32 * 1024)
            evbuffer_drain(tx->w->alog, evbuffer_get_length(tx->w->alog));
    }
    return (now_s() - t0) / (double)n * 1e9;
}

int main(int argc, char **argv)
{
    unsigned long n = argc > 1 ? strtoul(argv[1], NULL, 10) : 2000000;
    const char *only = argc > 2 ? argv[2] : ""; /* one format only (for callgrind) */
    struct pf_worker w = {.alog = pf_evbuffer_new()};
    struct pf_config cfg = {.access_log_format = "json"};
    struct pf_route route = {.name = "api"};
    struct pf_upstream_conf up = {.name = "app"};
    struct pf_conn conn;
    struct pf_tx tx;
    struct pf_arena *a = pf_arena_new(PF_ARENA_CHUNK);

    if (n == 0) {
        fprintf(stderr, "usage: %s [LINES > 0]\n", argv[0]);
        return 2;
    }
    memset(&conn, 0, sizeof(conn));
    snprintf(conn.client, sizeof(conn.client), "10.1.2.3");
    memset(&tx, 0, sizeof(tx));
    tx.w = &w;
    tx.cfg = &cfg;
    tx.conn = &conn;
    tx.route = &route;
    tx.up = &up;
    tx.method = "GET";
    tx.url = "/api/v1/items/42?expand=owner";
    tx.http_major = tx.http_minor = 1;
    tx.host = "shop.example";
    pf_hdrs_add(a, &tx.req, "Host", "shop.example");
    pf_hdrs_add(a, &tx.req, "User-Agent", "Mozilla/5.0 (X11; Linux x86_64) Chrome/120.0");
    pf_hdrs_add(a, &tx.req, "Referer", "https://shop.example/cart");
    pf_hdrs_add(a, &tx.req, "Accept", "application/json");
    tx.request_id = "995a83bad05b5645bdd9d04ea4eb2b59";
    snprintf(tx.trace_id, sizeof(tx.trace_id), "c2a7583c51dff501dd4b44e3dbc10601");
    tx.endpoint = "10.0.0.7:8000";
    tx.status = tx.up_status = 200;
    tx.attempts = 1;
    tx.head_in = 180;
    tx.bytes_out = 1432;
    tx.t_start = pf_now_us() - 1234;
    tx.t_up_start = tx.t_start + 10;
    tx.t_up_head = tx.t_start + 1100;
    if (strcmp(only, "text") != 0)
        printf("access log json: %.1f ns per line (%lu lines)\n", run(&tx, n), n);
    cfg.access_log_format = "text";
    if (strcmp(only, "json") != 0)
        printf("access log text: %.1f ns per line (%lu lines)\n", run(&tx, n), n);
    evbuffer_free(w.alog);
    pf_arena_free(a);
    return 0;
}
