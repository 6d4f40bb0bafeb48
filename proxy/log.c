/*
 * Process log (JSON lines on stderr) and the access log writer thread.
 *
 * The process log formats each message into a stack buffer and writes it with
 * one write(2), so lines from different threads never interleave (writes of
 * up to PIPE_BUF bytes to a pipe are atomic; LOG_LINE_MAX is that size).
 *
 * The access log moves whole buffers of finished lines from the workers into
 * one queue (evbuffer_add_buffer: chains are relinked, bytes are not copied).
 * A single writer thread takes the whole queue under the mutex and writes it
 * outside, so workers only ever wait for a few pointer updates.
 */
#include "proxy/log.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include <event2/buffer.h>

#include "proxy/arena.h"

#define LOG_MSG_MAX    2048        /* formatted message, before escaping */
#define LOG_LINE_MAX   4096        /* one process log line, JSON included */
#define LOG_TAIL       "...\"}\n"  /* room kept for the truncation mark and the end */
#define ALOG_QUEUE_MAX (16u << 20) /* queued bytes past which lines are dropped */
#define ALOG_IOV       64          /* chains per writev(2) */
#define ALOG_FLAGS     (O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC)

static atomic_int log_level = PF_LOG_INFO; /* atomic */

static const char *const level_names[] = {"error", "warn", "info", "debug"};

int pf_log_level_parse(const char *s)
{
    int i;

    if (s == NULL)
        return -1;
    for (i = 0; i <= PF_LOG_DEBUG; i++) {
        if (strcmp(s, level_names[i]) == 0)
            return i;
    }
    return -1;
}

void pf_log_set_level(enum pf_log_level level)
{
    int l = (int)level;

    if (l < PF_LOG_ERR)
        l = PF_LOG_ERR;
    if (l > PF_LOG_DEBUG)
        l = PF_LOG_DEBUG;
    atomic_store_explicit(&log_level, l, memory_order_relaxed);
}

enum pf_log_level pf_log_get_level(void)
{
    return (enum pf_log_level)atomic_load_explicit(&log_level, memory_order_relaxed);
}

/* ---- JSON strings ---- */

/*
 * Length of the well-formed UTF-8 sequence at s (RFC 3629: no overlong forms,
 * no surrogates, nothing above U+10FFFF), 0 when s does not start one.
 */
static size_t utf8_seq_len(const unsigned char *s, size_t len)
{
    unsigned char c = s[0];
    unsigned char lo = 0x80, hi = 0xbf;
    size_t need;

    if (c >= 0xc2 && c <= 0xdf) {
        need = 2;
    } else if (c >= 0xe0 && c <= 0xef) {
        need = 3;
        lo = c == 0xe0 ? 0xa0 : 0x80; /* overlong */
        hi = c == 0xed ? 0x9f : 0xbf; /* surrogates */
    } else if (c >= 0xf0 && c <= 0xf4) {
        need = 4;
        lo = c == 0xf0 ? 0x90 : 0x80; /* overlong */
        hi = c == 0xf4 ? 0x8f : 0xbf; /* above U+10FFFF */
    } else {
        return 0;
    }
    if (len < need || s[1] < lo || s[1] > hi)
        return 0;
    for (size_t i = 2; i < need; i++) {
        if ((s[i] & 0xc0) != 0x80)
            return 0;
    }
    return need;
}

size_t pf_json_plain_run(const char *s, size_t len)
{
    const unsigned char *u = (const unsigned char *)s;
    size_t i = 0;

    while (i < len) {
        unsigned char c = u[i];
        size_t k;

        if (c >= 0x20 && c < 0x7f && c != '"' && c != '\\') {
            i++;
            continue;
        }
        if (c < 0x80 || (k = utf8_seq_len(u + i, len - i)) == 0)
            break;
        i += k;
    }
    return i;
}

size_t pf_json_escape_byte(char *dst, unsigned char c)
{
    static const char hex[] = "0123456789abcdef";
    char e = 0;

    switch (c) {
    case '"':
        e = '"';
        break;
    case '\\':
        e = '\\';
        break;
    case '\n':
        e = 'n';
        break;
    case '\r':
        e = 'r';
        break;
    case '\t':
        e = 't';
        break;
    default:
        break;
    }
    dst[0] = '\\';
    if (e != 0) {
        dst[1] = e;
        return 2;
    }
    /* a control character, DEL, or a byte outside well-formed UTF-8 */
    memcpy(dst + 1, "u00", 3);
    dst[4] = hex[c >> 4];
    dst[5] = hex[c & 15];
    return 6;
}

void pf_json_escape(struct evbuffer *out, const char *s, size_t len)
{
    char esc[6];

    /* Copy runs of plain bytes in one go: most strings need no escape at all. */
    while (len > 0) {
        size_t n = pf_json_plain_run(s, len);

        if (n > 0)
            evbuffer_add(out, s, n);
        if (n == len)
            return;
        evbuffer_add(out, esc, pf_json_escape_byte(esc, (unsigned char)s[n]));
        s += n + 1;
        len -= n + 1;
    }
}

/*
 * Escape s[0..len) into dst without splitting an escape or a UTF-8 sequence.
 * Returns the bytes written; *consumed is how much of s fitted.
 */
static size_t json_escape_to(char *dst, size_t cap, const char *s, size_t len, size_t *consumed)
{
    const unsigned char *u = (const unsigned char *)s;
    char esc[6];
    size_t n = 0;
    size_t i = 0;
    size_t k;

    while (i < len) {
        /* one plain character (an ASCII byte or a whole UTF-8 sequence), or 0 */
        k = u[i] < 0x80 ? pf_json_plain_run(s + i, 1) : utf8_seq_len(u + i, len - i);
        if (k > 0) {
            if (cap - n < k)
                break;
            memcpy(dst + n, s + i, k);
            n += k;
            i += k;
            continue;
        }
        k = pf_json_escape_byte(esc, u[i]);
        if (cap - n < k)
            break;
        memcpy(dst + n, esc, k);
        n += k;
        i++;
    }
    *consumed = i;
    return n;
}

/* Length of s[0..len) without a UTF-8 sequence cut short at its end. */
static size_t utf8_trim(const char *s, size_t len)
{
    size_t i = len;
    size_t need;
    unsigned char lead;

    while (i > 0 && len - i < 3 && ((unsigned char)s[i - 1] & 0xc0) == 0x80)
        i--;
    if (i == 0)
        return len;
    lead = (unsigned char)s[i - 1];
    if (lead < 0xc0)
        return len;
    need = lead >= 0xf0 ? 4 : lead >= 0xe0 ? 3 : 2;
    return len - (i - 1) < need ? i - 1 : len;
}

/* ---- time ---- */

void pf_log_timestamp(char *buf, size_t size, uint64_t wall_us)
{
    /* gmtime_r is slow enough to matter per request: cache the second. */
    static __thread int64_t cached_sec = -1;
    static __thread char cached[64];
    time_t sec = (time_t)(wall_us / 1000000);
    unsigned ms = (unsigned)(wall_us / 1000 % 1000);
    struct tm tm;

    if ((int64_t)sec != cached_sec) {
        if (gmtime_r(&sec, &tm) == NULL)
            memset(&tm, 0, sizeof(tm));
        snprintf(cached, sizeof(cached), "%04d-%02d-%02dT%02d:%02d:%02d", tm.tm_year + 1900,
                 tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec);
        cached_sec = (int64_t)sec;
    }
    snprintf(buf, size, "%s.%03uZ", cached, ms);
}

static uint64_t wall_now_us(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000000 + (uint64_t)ts.tv_nsec / 1000;
}

/* ---- process log ---- */

/* write(2) all of p, retrying on EINTR; other errors lose the line. */
static void write_all(int fd, const char *p, size_t n)
{
    ssize_t w;

    while (n > 0) {
        w = write(fd, p, n);
        if (w == -1 && errno == EINTR)
            continue;
        if (w <= 0)
            return;
        p += w;
        n -= (size_t)w;
    }
}

void pf_vlog(enum pf_log_level level, const char *fmt, va_list ap)
{
    char msg[LOG_MSG_MAX];
    char line[LOG_LINE_MAX];
    char ts[32];
    size_t len;
    size_t used;
    size_t n;
    int r;
    int saved = errno;

    if ((int)level > atomic_load_explicit(&log_level, memory_order_relaxed))
        return;
    r = vsnprintf(msg, sizeof(msg), fmt, ap);
    len = r < 0 ? 0 : (size_t)r;
    if (len >= sizeof(msg))
        len = utf8_trim(msg, sizeof(msg) - 1);
    pf_log_timestamp(ts, sizeof(ts), wall_now_us());
    if ((unsigned)level > PF_LOG_DEBUG)
        level = PF_LOG_DEBUG;
    n = (size_t)snprintf(line, sizeof(line), "{\"ts\":\"%s\",\"level\":\"%s\",\"msg\":\"", ts,
                         level_names[level]);
    n += json_escape_to(line + n, sizeof(line) - n - strlen(LOG_TAIL), msg, len, &used);
    if (used < len) {
        memcpy(line + n, "...", 3); /* json_escape_to never splits a sequence */
        n += 3;
    } else if (r >= (int)sizeof(msg)) {
        memcpy(line + n, "...", 3);
        n += 3;
    }
    memcpy(line + n, "\"}\n", 3);
    write_all(STDERR_FILENO, line, n + 3);
    errno = saved;
}

void pf_log_fields(enum pf_log_level level, const char *msg, const char *fields)
{
    char line[LOG_LINE_MAX];
    char ts[32];
    size_t n, used, flen = strlen(fields);

    if ((int)level > atomic_load_explicit(&log_level, memory_order_relaxed))
        return;
    if (flen > sizeof(line) / 2)
        flen = 0; /* never cut a field in half: the line stays valid JSON */
    pf_log_timestamp(ts, sizeof(ts), wall_now_us());
    n = (size_t)snprintf(line, sizeof(line), "{\"ts\":\"%s\",\"level\":\"%s\",\"msg\":\"", ts,
                         level_names[level > PF_LOG_DEBUG ? PF_LOG_DEBUG : level]);
    n += json_escape_to(line + n, sizeof(line) - n - flen - 4, msg, strlen(msg), &used);
    line[n++] = '"';
    if (flen > 0) {
        line[n++] = ',';
        memcpy(line + n, fields, flen);
        n += flen;
    }
    memcpy(line + n, "}\n", 2);
    write_all(STDERR_FILENO, line, n + 2);
}

void pf_log(enum pf_log_level level, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    pf_vlog(level, fmt, ap);
    va_end(ap);
}

void pf_fatal(const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    pf_vlog(PF_LOG_ERR, fmt, ap);
    va_end(ap);
    exit(1);
}

/* ---- access log ---- */

/*
 * The main thread starts, stops and retargets the writer; workers submit.
 * new_fd/reopen are requests the writer picks up on its next round, so the
 * fd itself is only ever touched by one thread at a time.
 */
struct alog_state {
    pthread_mutex_t lock;      /* guards queue, new_fd, new_path, reopen, stop */
    pthread_cond_t wake;       /* signalled when the writer has work */
    struct evbuffer *queue;    /* guarded by lock; NULL when no writer runs */
    int new_fd;                /* guarded by lock; target handed over, or -1 */
    char *new_path;            /* guarded by lock; its file path, NULL for stdio */
    bool reopen;               /* guarded by lock; reopen the file */
    bool stop;                 /* guarded by lock; flush and exit */
    int fd;                    /* writer thread while it runs, else main */
    char *path;                /* writer thread while it runs; NULL for stdio */
    bool failing;              /* writer thread; last write failed */
    pthread_t thread;          /* main thread only */
    bool running;              /* main thread only */
    atomic_bool off;           /* atomic; true when nothing is written */
    atomic_uint_fast64_t lost; /* atomic; lines dropped */
};

static struct alog_state alog = {
    .lock = PTHREAD_MUTEX_INITIALIZER,
    .wake = PTHREAD_COND_INITIALIZER,
    .new_fd = -1,
    .fd = -1,
    .off = true,
};

/* Open an access log target: fd 1 or 2, or a file (*file gets its path). */
static int alog_open(const char *path, int *fd, char **file)
{
    *file = NULL;
    if (strcmp(path, "stdout") == 0) {
        *fd = STDOUT_FILENO;
        return 0;
    }
    if (strcmp(path, "stderr") == 0) {
        *fd = STDERR_FILENO;
        return 0;
    }
    *fd = open(path, ALOG_FLAGS, 0644);
    if (*fd == -1)
        return -errno;
    *file = pf_xstrdup(path);
    return 0;
}

static void alog_close(int fd)
{
    if (fd > STDERR_FILENO)
        close(fd);
}

/* Lines in buf: newlines, plus an unterminated last line. */
static uint64_t count_lines(struct evbuffer *buf)
{
    size_t len = evbuffer_get_length(buf);
    struct evbuffer_ptr p = evbuffer_search(buf, "\n", 1, NULL);
    uint64_t n = 0;
    size_t end = 0;

    while (p.pos != -1) {
        n++;
        end = (size_t)p.pos + 1;
        if (evbuffer_ptr_set(buf, &p, 1, EVBUFFER_PTR_ADD) == -1)
            break;
        p = evbuffer_search(buf, "\n", 1, &p);
    }
    return n + (end < len ? 1 : 0);
}

static void alog_drop(struct evbuffer *buf)
{
    size_t len = evbuffer_get_length(buf);

    if (len == 0)
        return;
    atomic_fetch_add_explicit(&alog.lost, count_lines(buf), memory_order_relaxed);
    evbuffer_drain(buf, len);
}

/* Writer thread: a failed write drops the batch; warn once per failure streak. */
static void alog_write_failed(struct evbuffer *batch, int err)
{
    char eb[128];

    if (!alog.failing) {
        pf_log(PF_LOG_WARN, "access log write failed, dropping lines: %s",
               strerror_r(err, eb, sizeof(eb)));
        alog.failing = true;
    }
    alog_drop(batch);
}

/* Writer thread: write all of batch, chains gathered by writev(2). */
static void alog_write(struct evbuffer *batch)
{
    struct evbuffer_iovec vec[ALOG_IOV];
    struct iovec iov[ALOG_IOV];
    ssize_t w;
    int n;
    int i;

    while (evbuffer_get_length(batch) > 0) {
        n = evbuffer_peek(batch, -1, NULL, vec, ALOG_IOV);
        if (n > ALOG_IOV)
            n = ALOG_IOV;
        for (i = 0; i < n; i++) {
            iov[i].iov_base = vec[i].iov_base;
            iov[i].iov_len = vec[i].iov_len;
        }
        w = writev(alog.fd, iov, n);
        if (w == -1 && errno == EINTR)
            continue;
        if (w <= 0) {
            alog_write_failed(batch, w == 0 ? EIO : errno);
            return;
        }
        evbuffer_drain(batch, (size_t)w);
        alog.failing = false;
    }
}

/* Writer thread: switch to a target handed over by pf_alog_set_path(). */
static void alog_switch(int fd, char *path)
{
    alog_close(alog.fd);
    free(alog.path);
    alog.fd = fd;
    alog.path = path;
}

/* Writer thread: reopen the file under its name (logrotate moved it). */
static void alog_reopen_file(void)
{
    char eb[128];
    int fd;

    if (alog.path == NULL)
        return;
    fd = open(alog.path, ALOG_FLAGS, 0644);
    if (fd == -1) {
        pf_log(PF_LOG_WARN, "access log reopen of %s failed, keeping the old file: %s", alog.path,
               strerror_r(errno, eb, sizeof(eb)));
        return;
    }
    alog_close(alog.fd);
    alog.fd = fd;
}

static void *alog_main(void *arg)
{
    struct evbuffer *batch = pf_evbuffer_new();
    bool stop = false;
    bool reopen;
    char *path;
    int fd;

    (void)arg;
    if (batch == NULL)
        pf_fatal("out of memory");
    while (!stop) {
        pthread_mutex_lock(&alog.lock);
        while (!alog.stop && !alog.reopen && alog.new_fd == -1 &&
               evbuffer_get_length(alog.queue) == 0)
            pthread_cond_wait(&alog.wake, &alog.lock);
        evbuffer_add_buffer(batch, alog.queue);
        fd = alog.new_fd;
        path = alog.new_path;
        reopen = alog.reopen;
        stop = alog.stop;
        alog.new_fd = -1;
        alog.new_path = NULL;
        alog.reopen = false;
        pthread_mutex_unlock(&alog.lock);

        if (fd != -1)
            alog_switch(fd, path);
        if (reopen)
            alog_reopen_file();
        alog_write(batch);
    }
    evbuffer_free(batch);
    return NULL;
}

/* Start the writer on an opened target; signals stay with the main thread. */
static int alog_spawn(int fd, char *path)
{
    struct evbuffer *queue = pf_evbuffer_new();
    sigset_t all;
    sigset_t old;
    int err;

    if (queue == NULL)
        pf_fatal("out of memory");
    alog.fd = fd;
    alog.path = path;
    alog.failing = false;
    pthread_mutex_lock(&alog.lock);
    alog.queue = queue;
    alog.stop = false;
    alog.reopen = false;
    pthread_mutex_unlock(&alog.lock);

    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    err = pthread_create(&alog.thread, NULL, alog_main, NULL);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (err != 0)
        goto out_queue;
    alog.running = true;
    atomic_store(&alog.off, false);
    return 0;

out_queue:
    pthread_mutex_lock(&alog.lock);
    alog.queue = NULL;
    pthread_mutex_unlock(&alog.lock);
    evbuffer_free(queue);
    alog_close(fd);
    free(path);
    alog.fd = -1;
    alog.path = NULL;
    return -err;
}

int pf_alog_start(const char *path)
{
    char *file;
    int fd;
    int err;

    if (alog.running)
        return pf_alog_set_path(path);
    if (path == NULL || strcmp(path, "off") == 0) {
        atomic_store(&alog.off, true);
        return 0;
    }
    err = alog_open(path, &fd, &file);
    if (err != 0)
        return err;
    return alog_spawn(fd, file);
}

int pf_alog_set_path(const char *path)
{
    char *file;
    int fd;
    int err;

    if (!alog.running)
        return pf_alog_start(path);
    if (path == NULL || strcmp(path, "off") == 0) {
        pf_alog_stop();
        return 0;
    }
    err = alog_open(path, &fd, &file);
    if (err != 0)
        return err;
    pthread_mutex_lock(&alog.lock);
    if (alog.new_fd != -1) {
        /* An earlier switch the writer has not picked up yet: replace it. */
        alog_close(alog.new_fd);
        free(alog.new_path);
    }
    alog.new_fd = fd;
    alog.new_path = file;
    pthread_cond_signal(&alog.wake);
    pthread_mutex_unlock(&alog.lock);
    return 0;
}

void pf_alog_reopen(void)
{
    pthread_mutex_lock(&alog.lock);
    if (alog.queue != NULL) {
        alog.reopen = true;
        pthread_cond_signal(&alog.wake);
    }
    pthread_mutex_unlock(&alog.lock);
}

void pf_alog_stop(void)
{
    struct evbuffer *late;

    atomic_store(&alog.off, true);
    if (!alog.running)
        return;
    pthread_mutex_lock(&alog.lock);
    alog.stop = true;
    pthread_cond_signal(&alog.wake);
    pthread_mutex_unlock(&alog.lock);
    pthread_join(alog.thread, NULL);

    /* Lines submitted while the writer was finishing have nowhere to go. */
    pthread_mutex_lock(&alog.lock);
    late = alog.queue;
    alog.queue = NULL;
    if (alog.new_fd != -1) {
        alog_close(alog.new_fd);
        free(alog.new_path);
        alog.new_fd = -1;
        alog.new_path = NULL;
    }
    pthread_mutex_unlock(&alog.lock);
    alog_drop(late);
    evbuffer_free(late);
    alog_close(alog.fd);
    free(alog.path);
    alog.fd = -1;
    alog.path = NULL;
    alog.running = false;
}

int pf_alog_is_off(void)
{
    return atomic_load_explicit(&alog.off, memory_order_relaxed);
}

void pf_alog_submit(struct evbuffer *buf)
{
    size_t len = evbuffer_get_length(buf);
    size_t queued = 0;
    bool taken = false;

    if (len == 0)
        return;
    if (atomic_load_explicit(&alog.off, memory_order_relaxed)) {
        evbuffer_drain(buf, len);
        return;
    }
    pthread_mutex_lock(&alog.lock);
    if (alog.queue != NULL) {
        queued = evbuffer_get_length(alog.queue);
        if (queued <= ALOG_QUEUE_MAX) {
            evbuffer_add_buffer(alog.queue, buf);
            taken = true;
            /* The writer sleeps only on an empty queue. */
            if (queued == 0)
                pthread_cond_signal(&alog.wake);
        }
    }
    pthread_mutex_unlock(&alog.lock);
    if (taken)
        return;
    if (queued > ALOG_QUEUE_MAX)
        alog_drop(buf);
    else
        evbuffer_drain(buf, len);
}

uint64_t pf_alog_dropped(void)
{
    return atomic_load_explicit(&alog.lost, memory_order_relaxed);
}
