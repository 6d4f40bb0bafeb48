/*
 * Process log and access log.
 *
 * Process log: one JSON object per line on stderr,
 *   {"ts":"2026-01-02T03:04:05.678Z","level":"warn","msg":"..."}
 * Any thread may call pf_log(); lines are written whole (one write(2)).
 *
 * Access log: workers append finished lines to their own evbuffer (no lock);
 * pf_alog_submit() hands that buffer to a writer thread under a short mutex. The writer does the
 * write(2), so a slow disk or a full pipe never blocks an event loop; past a bound of queued bytes
 * lines are dropped and counted instead.
 */
#ifndef PF_LOG_H
#define PF_LOG_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

struct evbuffer;

enum pf_log_level {
    PF_LOG_ERR = 0,
    PF_LOG_WARN,
    PF_LOG_INFO,
    PF_LOG_DEBUG,
};

/* Parse "error|warn|info|debug"; -1 when unknown. */
int pf_log_level_parse(const char *s);
void pf_log_set_level(enum pf_log_level level);
enum pf_log_level pf_log_get_level(void);

/* Log one message at level (dropped when above the current level). */
void pf_log(enum pf_log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void pf_vlog(enum pf_log_level level, const char *fmt, va_list ap);
/*
 * Log one line of structured fields: fields[0..len) is JSON object members,
 * each preceded by a comma (,"msg":"...","upstream":"app"), put after ts and
 * level. A line that would pass 4 KiB is dropped.
 */
void pf_log_fields(enum pf_log_level level, const char *fields, size_t len);

/* Log at ERR and exit(1) at once (OOM, impossible states). */
void pf_fatal(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));

#ifdef PF_DEBUG
#define pf_debug(...) pf_log(PF_LOG_DEBUG, __VA_ARGS__)
#else
#define pf_debug(...) ((void)0)
#endif

/* Append s[0..len) to out as the body of a JSON string (no quotes added). */
void pf_json_escape(struct evbuffer *out, const char *s, size_t len);

/*
 * JSON escaping that keeps every output valid UTF-8: the length of the
 * leading run of s[0..len) that goes out as is (printable ASCII other than
 * '"' and '\', and well-formed UTF-8 sequences).
 */
size_t pf_json_plain_run(const char *s, size_t len);

/*
 * The escape of a byte that is not in such a run into dst (6 bytes at most):
 * \" \\ \n \r \t, else \u00XX (controls, DEL, bytes outside well-formed UTF-8).
 * Returns its length.
 */
size_t pf_json_escape_byte(char *dst, unsigned char c);

/* "2026-01-02T03:04:05.678Z" for a wall clock in microseconds; buf >= 32. */
void pf_log_timestamp(char *buf, size_t size, uint64_t wall_us);

/* ---- access log ---- */

/*
 * Start the writer thread, writing to path: "stdout", "stderr", "off" or a
 * file opened for append. Main thread only. Returns 0 or -errno.
 */
int pf_alog_start(const char *path);

/* Switch to another path (reload). Main thread only. 0 or -errno. */
int pf_alog_set_path(const char *path);

/* Reopen the file (SIGUSR1, logrotate). Safe from the main thread. */
void pf_alog_reopen(void);

/* Flush what is queued and stop the writer thread. Main thread only. */
void pf_alog_stop(void);

/* True when access logging is off (callers skip formatting the line). */
int pf_alog_is_off(void);

/*
 * Hand a worker's buffer of complete lines to the writer; buf is emptied.
 * Any thread; takes a short mutex. Lines beyond the queue bound are dropped.
 */
void pf_alog_submit(struct evbuffer *buf);

/* Lines dropped because the writer fell behind. */
uint64_t pf_alog_dropped(void);

#endif /* PF_LOG_H */
