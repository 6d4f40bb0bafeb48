/*
 * The access log: one line per transaction, JSON or an nginx-combined-like
 * text line (access_log.format), built without printf.
 */
#include "proxy/accesslog.h"

#include <string.h>
#include <time.h>

#include <event2/buffer.h>

#include "proxy/clock.h"
#include "proxy/conf.h"
#include "proxy/conn-t.h"
#include "proxy/errors.h"
#include "proxy/hdrs.h"
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

/* ,"key":N, or ,"key":null when v is 0 */
static void log_num_or_null(struct pf_sbuf *b, const char *key, uint64_t v)
{
    if (v > 0) {
        log_num(b, key, v);
        return;
    }
    pf_sb_put(b, ",\"", 2);
    pf_sb_str(b, key);
    pf_sb_put(b, "\":null", 6);
}

/* "HTTP/1.1" of the request (the client's version). */
static const char *protocol(const struct pf_tx *tx)
{
    if (tx->http_major == 1)
        return tx->http_minor == 0 ? "HTTP/1.0" : "HTTP/1.1";
    return tx->http_major == 0 && tx->method != NULL ? "HTTP/0.9" : "";
}

static const char *req_header(const struct pf_tx *tx, const char *name)
{
    return tx->method != NULL ? pf_hdrs_get(&tx->req, name) : NULL;
}

static void write_json(struct pf_sbuf *b, struct pf_tx *tx, const char *ts, uint64_t dur_us)
{
    pf_sb_put(b, "{\"ts\":\"", 7);
    pf_sb_str(b, ts);
    pf_sb_put(b, "\"", 1);
    log_str(b, "request_id", tx->request_id);
    log_str(b, "trace_id", tx->trace_id);
    log_str(b, "client", tx->conn != NULL ? tx->conn->client : NULL);
    log_str(b, "method", tx->method);
    log_str(b, "path", tx->url);
    log_str(b, "protocol", protocol(tx));
    log_str(b, "host", tx->host);
    log_str(b, "user_agent", req_header(tx, "user-agent"));
    log_num(b, "status", (uint64_t)tx->status);
    log_num(b, "bytes_in", tx->head_in + tx->body_in);
    log_num(b, "bytes_out", tx->bytes_out);
    log_ms(b, "duration_ms", dur_us);
    log_str(b, "route", tx->route != NULL ? tx->route->name : NULL);
    log_str(b, "upstream", tx->up != NULL ? tx->up->name : NULL);
    log_str(b, "endpoint", tx->endpoint);
    log_num_or_null(b, "upstream_status", (uint64_t)(tx->up_status > 0 ? tx->up_status : 0));
    log_num(b, "attempts", tx->attempts);
    if (tx->t_up_head > 0)
        log_ms(b, "upstream_ms", tx->t_up_head - tx->t_up_start);
    else
        pf_sb_str(b, ",\"upstream_ms\":null");
    if (tx->error != PF_ERR_NONE)
        log_str(b, "error", pf_error_name(tx->error));
    else
        pf_sb_str(b, ",\"error\":null");
    pf_sb_put(b, "}\n", 2);
}

/* v, or "-" when NULL or empty; '"', '\\', control bytes and DEL as \xHH (as nginx does). */
static void text_field(struct pf_sbuf *b, const char *v)
{
    static const char hex[] = "0123456789ABCDEF";

    if (v == NULL || v[0] == '\0') {
        pf_sb_put(b, "-", 1);
        return;
    }
    for (const char *p = v;; p++) {
        unsigned char c = (unsigned char)*p;
        char esc[4] = {'\\', 'x', 0, 0};

        if (c != '\0' && c != '"' && c != '\\' && c >= 0x20 && c != 0x7f)
            continue;
        /* the plain run before p in one piece */
        pf_sb_put(b, v, (size_t)(p - v));
        if (c == '\0')
            return;
        esc[2] = hex[c >> 4];
        esc[3] = hex[c & 15];
        pf_sb_put(b, esc, 4);
        v = p + 1;
    }
}

/* [03/Dec/2026:16:19:25 +0000], the time in UTC */
static void text_time(struct pf_sbuf *b, time_t now)
{
    static const char months[] = "JanFebMarAprMayJunJulAugSepOctNovDec";
    struct tm tm;
    char t[29];

    gmtime_r(&now, &tm);
    t[0] = '[';
    t[1] = (char)('0' + tm.tm_mday / 10);
    t[2] = (char)('0' + tm.tm_mday % 10);
    t[3] = '/';
    memcpy(t + 4, months + 3 * tm.tm_mon, 3);
    t[7] = '/';
    pf_sb_put(b, t, 8);
    pf_sb_u64(b, (uint64_t)tm.tm_year + 1900);
    t[0] = ':';
    t[1] = (char)('0' + tm.tm_hour / 10);
    t[2] = (char)('0' + tm.tm_hour % 10);
    t[3] = ':';
    t[4] = (char)('0' + tm.tm_min / 10);
    t[5] = (char)('0' + tm.tm_min % 10);
    t[6] = ':';
    t[7] = (char)('0' + tm.tm_sec / 10);
    t[8] = (char)('0' + tm.tm_sec % 10);
    memcpy(t + 9, " +0000] ", 8);
    pf_sb_put(b, t, 17);
}

/* " key=value": value quoted unless it is a number */
static void text_kv(struct pf_sbuf *b, const char *key, const char *v)
{
    pf_sb_put(b, " ", 1);
    pf_sb_str(b, key);
    pf_sb_put(b, "=\"", 2);
    text_field(b, v);
    pf_sb_put(b, "\"", 1);
}

/*
 * CLIENT - - [TIME] "METHOD PATH PROTOCOL" STATUS BYTES_OUT "REFERER" "USER_AGENT"
 * then key=value pairs (docs/operations.md, "Access log").
 */
static void write_text(struct pf_sbuf *b, struct pf_tx *tx, time_t now, uint64_t dur_us)
{
    text_field(b, tx->conn != NULL ? tx->conn->client : NULL);
    pf_sb_put(b, " - - ", 5);
    text_time(b, now);
    pf_sb_put(b, "\"", 1);
    text_field(b, tx->method);
    pf_sb_put(b, " ", 1);
    text_field(b, tx->url);
    pf_sb_put(b, " ", 1);
    text_field(b, protocol(tx));
    pf_sb_put(b, "\" ", 2);
    pf_sb_u64(b, (uint64_t)tx->status);
    pf_sb_put(b, " ", 1);
    pf_sb_u64(b, tx->bytes_out);
    pf_sb_put(b, " \"", 2);
    text_field(b, req_header(tx, "referer"));
    pf_sb_put(b, "\" \"", 3);
    text_field(b, req_header(tx, "user-agent"));
    pf_sb_put(b, "\"", 1);
    text_kv(b, "host", tx->host);
    text_kv(b, "route", tx->route != NULL ? tx->route->name : NULL);
    text_kv(b, "upstream", tx->up != NULL ? tx->up->name : NULL);
    text_kv(b, "endpoint", tx->endpoint);
    pf_sb_put(b, " upstream_status=", 17);
    if (tx->up_status > 0)
        pf_sb_u64(b, (uint64_t)tx->up_status);
    else
        pf_sb_put(b, "-", 1);
    pf_sb_put(b, " attempts=", 10);
    pf_sb_u64(b, tx->attempts);
    pf_sb_put(b, " duration_ms=", 13);
    pf_sb_u64(b, dur_us / 1000);
    pf_sb_put(b, ".", 1);
    pf_sb_u64(b, dur_us % 1000 / 100);
    pf_sb_u64(b, dur_us % 100 / 10);
    pf_sb_u64(b, dur_us % 10);
    text_kv(b, "request_id", tx->request_id);
    text_kv(b, "error", tx->error != PF_ERR_NONE ? pf_error_name(tx->error) : NULL);
    pf_sb_put(b, "\n", 1);
}

/* No printf: this runs for every request. */
void pf_accesslog_write(struct pf_tx *tx)
{
    struct pf_sbuf b;
    char ts[40];
    struct timespec wall;
    uint64_t dur_us = pf_clock_read_us() - tx->t_start;

    clock_gettime(CLOCK_REALTIME, &wall);
    pf_sb_init(&b, tx->w->alog);
    if (tx->cfg != NULL && tx->cfg->access_log_format[0] == 't') {
        write_text(&b, tx, wall.tv_sec, dur_us);
    } else {
        pf_log_timestamp(ts, sizeof(ts),
                         (uint64_t)wall.tv_sec * 1000000u + (uint64_t)wall.tv_nsec / 1000u);
        write_json(&b, tx, ts, dur_us);
    }
    pf_sb_flush(&b);
    if (evbuffer_get_length(tx->w->alog) > ALOG_SUBMIT_BYTES)
        pf_alog_submit(tx->w->alog);
}
