/*
 * The access log: one JSON line per transaction, built without printf.
 */
#include "proxy/accesslog.h"

#include <string.h>
#include <time.h>

#include <event2/buffer.h>

#include "proxy/clock.h"
#include "proxy/conf.h"
#include "proxy/conn-t.h"
#include "proxy/errors.h"
#include "proxy/log.h"
#include "proxy/route.h"
#include "proxy/tx-t.h"
#include "proxy/worker-t.h"

/* a worker hands its lines to the writer once it has this much (else at its tick) */
#define ALOG_SUBMIT_BYTES (64 * 1024)
#include "proxy/sbuf.h"

/* ,"key":"value" with value JSON-escaped (NULL: empty). */
static void log_str(struct pf_sbuf *b, const char *key, const char *v)
{
    pf_sb_put(b, ",\"", 2);
    pf_sb_str(b, key);
    pf_sb_put(b, "\":\"", 3);
    for (size_t len = v != NULL ? strlen(v) : 0; len > 0;) {
        size_t n = pf_json_plain_run(v, len);
        char esc[6];

        /* runs that need no escaping go in one piece; the rest stays valid UTF-8 */
        pf_sb_put(b, v, n);
        if (n < len)
            pf_sb_put(b, esc, pf_json_escape_byte(esc, (unsigned char)v[n++]));
        v += n;
        len -= n;
    }
    pf_sb_put(b, "\"", 1);
}

/* ,"key":N.NNN for a duration in microseconds. */
static void log_ms(struct pf_sbuf *b, const char *key, uint64_t us)
{
    char frac[4] = {(char)('0' + us / 100 % 10), (char)('0' + us / 10 % 10), (char)('0' + us % 10),
                    '\0'};

    pf_sb_put(b, ",\"", 2);
    pf_sb_str(b, key);
    pf_sb_put(b, "\":", 2);
    pf_sb_u64(b, us / 1000);
    pf_sb_put(b, ".", 1);
    pf_sb_put(b, frac, 3);
}

/* ,"key":N */
static void log_num(struct pf_sbuf *b, const char *key, uint64_t v)
{
    pf_sb_put(b, ",\"", 2);
    pf_sb_str(b, key);
    pf_sb_put(b, "\":", 2);
    pf_sb_u64(b, v);
}

/* No printf: this runs for every request. */
void pf_accesslog_write(struct pf_tx *tx)
{
    struct pf_sbuf b;
    char ts[40];
    struct timespec wall;

    clock_gettime(CLOCK_REALTIME, &wall);
    pf_log_timestamp(ts, sizeof(ts),
                     (uint64_t)wall.tv_sec * 1000000u + (uint64_t)wall.tv_nsec / 1000u);
    pf_sb_init(&b, tx->w->alog);
    pf_sb_put(&b, "{\"ts\":\"", 7);
    pf_sb_str(&b, ts);
    pf_sb_put(&b, "\"", 1);
    log_str(&b, "request_id", tx->request_id);
    log_str(&b, "trace_id", tx->trace_id);
    log_str(&b, "client", tx->conn != NULL ? tx->conn->client : NULL);
    log_str(&b, "method", tx->method);
    log_str(&b, "path", tx->url);
    log_num(&b, "status", (uint64_t)tx->status);
    log_num(&b, "bytes_in", tx->head_in + tx->body_in);
    log_num(&b, "bytes_out", tx->bytes_out);
    log_ms(&b, "duration_ms", pf_now_us() - tx->t_start);
    log_str(&b, "route", tx->route != NULL ? tx->route->name : NULL);
    log_str(&b, "upstream", tx->up != NULL ? tx->up->name : NULL);
    log_str(&b, "endpoint", tx->endpoint);
    log_num(&b, "attempts", tx->attempts);
    if (tx->t_up_head > 0)
        log_ms(&b, "upstream_ms", tx->t_up_head - tx->t_up_start);
    else
        pf_sb_str(&b, ",\"upstream_ms\":null");
    if (tx->error != PF_ERR_NONE)
        log_str(&b, "error", pf_error_name(tx->error));
    else
        pf_sb_str(&b, ",\"error\":null");
    pf_sb_put(&b, "}\n", 2);
    pf_sb_flush(&b);
    if (evbuffer_get_length(tx->w->alog) > ALOG_SUBMIT_BYTES)
        pf_alog_submit(tx->w->alog);
}
