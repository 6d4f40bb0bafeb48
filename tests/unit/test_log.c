/*
 * Unit tests for proxy/log.c: JSON escaping, timestamps, the process log on
 * stderr and the access log writer thread.
 */
#include <setjmp.h>
#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <pthread.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <event2/buffer.h>

#include "proxy/log.h"

#define TS_2026 1767323045ULL /* 2026-01-02T03:04:05Z */

static char tmpdir[] = "/tmp/pf_test_log.XXXXXX";

static void tmp_path(char *buf, size_t size, const char *name)
{
    snprintf(buf, size, "%s/%s", tmpdir, name);
}

/* Whole file as a NUL-terminated string; *len gets its length. */
static char *slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    char *buf;
    long n;

    assert_non_null(f);
    assert_int_equal(fseek(f, 0, SEEK_END), 0);
    n = ftell(f);
    rewind(f);
    buf = malloc((size_t)n + 1);
    assert_non_null(buf);
    assert_int_equal(fread(buf, 1, (size_t)n, f), (size_t)n);
    buf[n] = '\0';
    fclose(f);
    if (len != NULL)
        *len = (size_t)n;
    return buf;
}

static off_t file_size(const char *path)
{
    struct stat st;

    return stat(path, &st) == 0 ? st.st_size : -1;
}

/* Poll until path holds size bytes (the writer thread is asynchronous). */
static void wait_for_size(const char *path, off_t size)
{
    struct timespec ts = {0, 1000000};
    int i;

    for (i = 0; i < 5000 && file_size(path) != size; i++)
        nanosleep(&ts, NULL);
    assert_int_equal(file_size(path), size);
}

static char *escape(const char *s, size_t len)
{
    struct evbuffer *b = evbuffer_new();
    size_t n;
    char *out;

    pf_json_escape(b, s, len);
    n = evbuffer_get_length(b);
    out = malloc(n + 1);
    evbuffer_remove(b, out, n);
    out[n] = '\0';
    evbuffer_free(b);
    return out;
}

static void test_log_json_escape_quotes_backslash_and_control_chars(void **state)
{
    static const char in[] = "a\"b\\c\nd\te\r\x01\x1f\x7f";
    char *out = escape(in, sizeof(in) - 1);

    (void)state;
    assert_string_equal(out, "a\\\"b\\\\c\\nd\\te\\r\\u0001\\u001f\\u007f");
    free(out);
    out = escape("x\0y", 3);
    assert_string_equal(out, "x\\u0000y");
    free(out);
}

static void test_log_json_escape_passes_plain_text_and_utf8(void **state)
{
    static const char in[] = "GET /caf\xc3\xa9?q=1 HTTP/1.1";
    char *out = escape(in, sizeof(in) - 1);

    (void)state;
    assert_string_equal(out, in);
    free(out);
    out = escape("", 0);
    assert_string_equal(out, "");
    free(out);
}

/* Every output is valid UTF-8: bytes outside well-formed sequences are escaped one by one. */
static void test_log_json_escape_invalid_utf8_bytes(void **state)
{
    static const struct {
        const char *in;
        size_t len;
        const char *out;
    } cases[] = {
        {"/\xff", 2, "/\\u00ff"},
        {"\xc3", 1, "\\u00c3"},                                              /* cut short */
        {"\xc3(", 2, "\\u00c3("},                                            /* bad continuation */
        {"\xc0\xaf", 2, "\\u00c0\\u00af"},                                   /* overlong '/' */
        {"\xe0\x80\xaf", 3, "\\u00e0\\u0080\\u00af"},                        /* overlong */
        {"\xed\xa0\x80", 3, "\\u00ed\\u00a0\\u0080"},                        /* surrogate */
        {"\xf4\x90\x80\x80", 4, "\\u00f4\\u0090\\u0080\\u0080"},             /* > U+10FFFF */
        {"\x80", 1, "\\u0080"},                                              /* lone continuation */
        {"\xe2\x82\xac\xf0\x9f\x90\x9f", 7, "\xe2\x82\xac\xf0\x9f\x90\x9f"}, /* valid */
    };

    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char *out = escape(cases[i].in, cases[i].len);

        assert_string_equal(out, cases[i].out);
        free(out);
    }
}

static void test_log_timestamp_is_utc_with_milliseconds(void **state)
{
    char buf[32];

    (void)state;
    pf_log_timestamp(buf, sizeof(buf), TS_2026 * 1000000 + 678999);
    assert_string_equal(buf, "2026-01-02T03:04:05.678Z");
    /* Same second again (the cached path), then the next second. */
    pf_log_timestamp(buf, sizeof(buf), TS_2026 * 1000000 + 1000);
    assert_string_equal(buf, "2026-01-02T03:04:05.001Z");
    pf_log_timestamp(buf, sizeof(buf), (TS_2026 + 60) * 1000000);
    assert_string_equal(buf, "2026-01-02T03:05:05.000Z");
    pf_log_timestamp(buf, sizeof(buf), 0);
    assert_string_equal(buf, "1970-01-01T00:00:00.000Z");
}

static void test_log_level_parse_knows_the_four_levels(void **state)
{
    (void)state;
    assert_int_equal(pf_log_level_parse("error"), PF_LOG_ERR);
    assert_int_equal(pf_log_level_parse("warn"), PF_LOG_WARN);
    assert_int_equal(pf_log_level_parse("info"), PF_LOG_INFO);
    assert_int_equal(pf_log_level_parse("debug"), PF_LOG_DEBUG);
    assert_int_equal(pf_log_level_parse("verbose"), -1);
    assert_int_equal(pf_log_level_parse(""), -1);
    assert_int_equal(pf_log_level_parse(NULL), -1);
}

/* ---- process log, captured by pointing fd 2 at a file ---- */

struct capture {
    char path[256];
    int saved;
};

static void capture_start(struct capture *c, const char *name)
{
    int fd;

    tmp_path(c->path, sizeof(c->path), name);
    fd = open(c->path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    assert_true(fd != -1);
    fflush(stderr);
    c->saved = dup(STDERR_FILENO);
    assert_true(c->saved != -1);
    assert_int_equal(dup2(fd, STDERR_FILENO), STDERR_FILENO);
    close(fd);
}

static char *capture_end(struct capture *c, size_t *len)
{
    dup2(c->saved, STDERR_FILENO);
    close(c->saved);
    return slurp(c->path, len);
}

static void assert_line_shape(const char *line, const char *level)
{
    char head[64];

    assert_memory_equal(line, "{\"ts\":\"", 7);
    /* 2026-01-02T03:04:05.678Z: 24 characters ending in Z. */
    assert_int_equal(line[7 + 4], '-');
    assert_int_equal(line[7 + 10], 'T');
    assert_int_equal(line[7 + 19], '.');
    assert_int_equal(line[7 + 23], 'Z');
    snprintf(head, sizeof(head), "\",\"level\":\"%s\",\"msg\":\"", level);
    assert_memory_equal(line + 7 + 24, head, strlen(head));
}

static void test_log_writes_json_lines_and_filters_by_level(void **state)
{
    struct capture c;
    char *out;
    char *second;
    size_t len;

    (void)state;
    capture_start(&c, "stderr1");
    pf_log_set_level(PF_LOG_WARN);
    assert_int_equal(pf_log_get_level(), PF_LOG_WARN);
    pf_log(PF_LOG_INFO, "hidden %d", 1);
    pf_log(PF_LOG_DEBUG, "hidden %d", 2);
    pf_log(PF_LOG_WARN, "upstream %s is \"down\"", "app");
    pf_log(PF_LOG_ERR, "line\nbreak");
    pf_log_set_level(PF_LOG_INFO);
    out = capture_end(&c, &len);

    assert_null(strstr(out, "hidden"));
    assert_line_shape(out, "warn");
    assert_non_null(strstr(out, "\"msg\":\"upstream app is \\\"down\\\"\"}\n"));
    second = strchr(out, '\n') + 1;
    assert_line_shape(second, "error");
    assert_string_equal(strstr(second, "\"msg\""), "\"msg\":\"line\\nbreak\"}\n");
    free(out);
}

/* The msg of a truncated line ends in "..." right after a whole character. */
static void assert_cut_cleanly(const char *line)
{
    const char *msg = strstr(line, "\"msg\":\"") + 7;
    const char *end = strstr(msg, "...\"}\n");
    size_t lead = 0;
    size_t cont = 0;
    const char *p;

    assert_non_null(end);
    assert_true(strchr(line, '\n') - line < 4096);
    for (p = msg; p < end; p++) {
        lead += (unsigned char)*p == 0xc3;
        cont += (unsigned char)*p == 0xa9;
    }
    assert_true(lead > 0);
    assert_int_equal(lead, cont);
    assert_int_equal((unsigned char)end[-1], 0xa9);
}

static void test_log_truncates_long_messages_to_one_line(void **state)
{
    static char big[10000];
    static char ctl[501];
    struct capture c;
    char *out;
    char *line;
    size_t len;

    (void)state;
    memset(big, 'x', sizeof(big) - 1);
    memset(ctl, 1, sizeof(ctl) - 1);
    capture_start(&c, "stderr2");
    pf_log(PF_LOG_ERR, "%s", big);
    for (len = 0; len + 2 < sizeof(big); len += 2)
        memcpy(big + len, "\xc3\xa9", 2);
    big[len] = '\0';
    /* Cut by the message buffer, in the middle of a character. */
    pf_log(PF_LOG_ERR, "\x01\x01%s", big);
    /* Cut by the line buffer, once on each side of a character boundary. */
    pf_log(PF_LOG_ERR, "%s%s", ctl, big);
    pf_log(PF_LOG_ERR, "x%s%s", ctl, big);
    out = capture_end(&c, &len);

    line = out;
    assert_line_shape(line, "error");
    assert_non_null(strstr(line, "xxx...\"}\n"));
    assert_true(strchr(line, '\n') - line < 4096);
    line = strchr(line, '\n') + 1;
    assert_line_shape(line, "error");
    assert_non_null(strstr(line, "\"msg\":\"\\u0001\\u0001\xc3\xa9"));
    assert_cut_cleanly(line);
    line = strchr(line, '\n') + 1;
    assert_cut_cleanly(line);
    line = strchr(line, '\n') + 1;
    assert_cut_cleanly(line);
    assert_string_equal(strchr(line, '\n'), "\n");
    free(out);
}

/* ---- access log ---- */

#define THREAD_BATCHES 2000
#define BATCH_LINES    5

#define LINE_FMT "{\"t\":%d,\"seq\":%06d,\"pad\":\"%040d\"}"

/* Runs outside cmocka's thread: no asserts here. */
static void *submitter(void *arg)
{
    int id = (int)(intptr_t)arg;
    struct evbuffer *b = evbuffer_new();
    intptr_t bad = 0;
    int i;
    int j;

    for (i = 0; i < THREAD_BATCHES; i++) {
        for (j = 0; j < BATCH_LINES; j++) {
            evbuffer_add_printf(b, LINE_FMT, id, i * BATCH_LINES + j, 0);
            evbuffer_add(b, "\n", 1);
        }
        pf_alog_submit(b);
        bad |= evbuffer_get_length(b) != 0;
    }
    evbuffer_free(b);
    return (void *)bad;
}

/* Every line is whole, and each thread's lines come in submission order. */
static void check_lines(char *data, int threads, int per_thread)
{
    int next[2] = {0, 0};
    char want[128];
    char *line = data;
    char *nl;
    int t;
    int seq;
    int count = 0;

    while ((nl = strchr(line, '\n')) != NULL) {
        *nl = '\0';
        assert_int_equal(sscanf(line, "{\"t\":%d,\"seq\":%d,", &t, &seq), 2);
        assert_true(t >= 0 && t < threads);
        assert_int_equal(seq, next[t]);
        snprintf(want, sizeof(want), LINE_FMT, t, seq, 0);
        assert_string_equal(line, want);
        next[t]++;
        count++;
        line = nl + 1;
    }
    assert_int_equal(*line, '\0');
    assert_int_equal(count, threads * per_thread);
}

static void test_log_access_log_keeps_lines_whole_across_threads(void **state)
{
    uint64_t dropped = pf_alog_dropped();
    pthread_t th[2];
    char path[256];
    char *data;
    int i;

    (void)state;
    tmp_path(path, sizeof(path), "access.log");
    assert_int_equal(pf_alog_start(path), 0);
    assert_false(pf_alog_is_off());
    for (i = 0; i < 2; i++)
        assert_int_equal(pthread_create(&th[i], NULL, submitter, (void *)(intptr_t)i), 0);
    for (i = 0; i < 2; i++) {
        void *bad;

        pthread_join(th[i], &bad);
        assert_null(bad);
    }
    pf_alog_stop();
    assert_true(pf_alog_is_off());

    data = slurp(path, NULL);
    check_lines(data, 2, THREAD_BATCHES * BATCH_LINES);
    assert_int_equal(pf_alog_dropped(), dropped);
    free(data);
}

static void submit_str(const char *s)
{
    struct evbuffer *b = evbuffer_new();

    evbuffer_add(b, s, strlen(s));
    pf_alog_submit(b);
    assert_int_equal(evbuffer_get_length(b), 0);
    evbuffer_free(b);
}

static void test_log_access_log_reopen_after_rename_writes_new_file(void **state)
{
    char path[256];
    char rotated[256];
    char *data;

    (void)state;
    tmp_path(path, sizeof(path), "rotate.log");
    tmp_path(rotated, sizeof(rotated), "rotate.log.1");
    assert_int_equal(pf_alog_start(path), 0);
    submit_str("before\n");
    wait_for_size(path, 7);
    assert_int_equal(rename(path, rotated), 0);
    pf_alog_reopen();
    submit_str("after\n");
    pf_alog_stop();

    data = slurp(rotated, NULL);
    assert_string_equal(data, "before\n");
    free(data);
    data = slurp(path, NULL);
    assert_string_equal(data, "after\n");
    free(data);
}

static void test_log_access_log_set_path_switches_file(void **state)
{
    char first[256];
    char second[256];
    char *data;

    (void)state;
    tmp_path(first, sizeof(first), "first.log");
    tmp_path(second, sizeof(second), "second.log");
    assert_int_equal(pf_alog_start(first), 0);
    submit_str("one\n");
    wait_for_size(first, 4);
    assert_int_equal(pf_alog_set_path(second), 0);
    submit_str("two\n");
    /* Switching to off stops the writer; lines are then discarded. */
    assert_int_equal(pf_alog_set_path("off"), 0);
    assert_true(pf_alog_is_off());
    submit_str("three\n");
    pf_alog_stop();

    data = slurp(first, NULL);
    assert_string_equal(data, "one\n");
    free(data);
    data = slurp(second, NULL);
    assert_string_equal(data, "two\n");
    free(data);
}

static void test_log_access_log_off_drains_without_counting(void **state)
{
    uint64_t dropped = pf_alog_dropped();

    (void)state;
    assert_int_equal(pf_alog_start("off"), 0);
    assert_true(pf_alog_is_off());
    submit_str("nobody reads this\n");
    pf_alog_stop();
    assert_int_equal(pf_alog_dropped(), dropped);
}

static void test_log_access_log_start_fails_on_bad_path(void **state)
{
    (void)state;
    assert_int_equal(pf_alog_start("/nonexistent-dir/x/access.log"), -ENOENT);
    assert_true(pf_alog_is_off());
}

/* ---- queue bound: stdout is a pipe nobody reads until the end ---- */

struct reader {
    int fd;
    uint64_t lines;
};

static void *pipe_reader(void *arg)
{
    struct reader *r = arg;
    char buf[65536];
    ssize_t n;
    ssize_t i;

    while ((n = read(r->fd, buf, sizeof(buf))) > 0) {
        for (i = 0; i < n; i++)
            r->lines += buf[i] == '\n';
    }
    return NULL;
}

#define BIG_BATCHES 40
#define BIG_LINES   1024 /* of 1024 bytes: 1 MiB per batch */

static void submit_big_batches(void)
{
    struct evbuffer *b = evbuffer_new();
    char line[1024];
    int i;
    int j;

    memset(line, 'a', sizeof(line) - 1);
    line[sizeof(line) - 1] = '\n';
    for (i = 0; i < BIG_BATCHES; i++) {
        for (j = 0; j < BIG_LINES; j++)
            evbuffer_add(b, line, sizeof(line));
        pf_alog_submit(b);
        assert_int_equal(evbuffer_get_length(b), 0);
    }
    evbuffer_free(b);
}

static void test_log_access_log_drops_and_counts_when_writer_falls_behind(void **state)
{
    uint64_t dropped = pf_alog_dropped();
    struct reader r = {0, 0};
    pthread_t th;
    int p[2];
    int saved;

    (void)state;
    assert_int_equal(pipe(p), 0);
    fflush(stdout);
    saved = dup(STDOUT_FILENO);
    assert_int_equal(dup2(p[1], STDOUT_FILENO), STDOUT_FILENO);
    close(p[1]);
    assert_int_equal(pf_alog_start("stdout"), 0);
    submit_big_batches();
    r.fd = p[0];
    assert_int_equal(pthread_create(&th, NULL, pipe_reader, &r), 0);
    pf_alog_stop();
    dup2(saved, STDOUT_FILENO); /* closes the pipe's last write end: EOF */
    close(saved);
    pthread_join(th, NULL);
    close(p[0]);

    assert_true(pf_alog_dropped() > dropped);
    assert_int_equal(r.lines + (pf_alog_dropped() - dropped), BIG_BATCHES * BIG_LINES);
}

static int group_setup(void **state)
{
    (void)state;
    return mkdtemp(tmpdir) == NULL ? -1 : 0;
}

static int group_teardown(void **state)
{
    static const char *const names[] = {"stderr1",      "stderr2",   "access.log", "rotate.log",
                                        "rotate.log.1", "first.log", "second.log"};
    char path[256];
    size_t i;

    (void)state;
    for (i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        tmp_path(path, sizeof(path), names[i]);
        unlink(path);
    }
    return rmdir(tmpdir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_log_json_escape_quotes_backslash_and_control_chars),
        cmocka_unit_test(test_log_json_escape_passes_plain_text_and_utf8),
        cmocka_unit_test(test_log_json_escape_invalid_utf8_bytes),
        cmocka_unit_test(test_log_timestamp_is_utc_with_milliseconds),
        cmocka_unit_test(test_log_level_parse_knows_the_four_levels),
        cmocka_unit_test(test_log_writes_json_lines_and_filters_by_level),
        cmocka_unit_test(test_log_truncates_long_messages_to_one_line),
        cmocka_unit_test(test_log_access_log_keeps_lines_whole_across_threads),
        cmocka_unit_test(test_log_access_log_reopen_after_rename_writes_new_file),
        cmocka_unit_test(test_log_access_log_set_path_switches_file),
        cmocka_unit_test(test_log_access_log_off_drains_without_counting),
        cmocka_unit_test(test_log_access_log_start_fails_on_bad_path),
        cmocka_unit_test(test_log_access_log_drops_and_counts_when_writer_falls_behind),
    };

    return cmocka_run_group_tests_name("log", tests, group_setup, group_teardown);
}
