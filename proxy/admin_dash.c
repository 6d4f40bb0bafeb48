/*
 * GET /dashboard and GET /stats on the admin API (docs/operations.md).
 *
 * /stats is /metrics as JSON: the same rendering, read back sample by
 * sample, so the page and a Prometheus scrape can never disagree. The page
 * (proxy/dashboard.html, built into the binary) fetches it and does the
 * arithmetic (rates, shares, percentiles) in the browser; the admin loop only
 * renders. Main thread.
 */
#include "proxy/admin.h"

#include <stdbool.h>
#include <string.h>
#include <sys/time.h>

#include <event2/buffer.h>

#include "proxy/arena.h"
#include "proxy/stats.h"

/* the page, with a NUL after it (the Makefile makes this object depend on the file) */
__asm__(".section .rodata\n"
        ".global pf_dashboard_html\n"
        ".type pf_dashboard_html, @object\n"
        "pf_dashboard_html:\n"
        ".incbin \"proxy/dashboard.html\"\n"
        ".byte 0\n"
        ".previous\n");
extern const char pf_dashboard_html[];

const char *pf_admin_dashboard(void)
{
    return pf_dashboard_html;
}

/* s[0..n) into a JSON string body: label values come escaped as \\ \" \n, which JSON
 * reads the same; other control bytes are escaped here. */
static void json_chars(struct evbuffer *out, const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];

        if (c < 0x20)
            evbuffer_add_printf(out, "\\u%04x", c);
        else
            evbuffer_add(out, &s[i], 1);
    }
}

/* A JSON number as the exposition writes them (digits, '.', exponent); else false. */
static bool is_number(const char *s, size_t n)
{
    bool digit = false;

    for (size_t i = 0; i < n; i++) {
        if (s[i] >= '0' && s[i] <= '9')
            digit = true;
        else if (!strchr("+-.eE", s[i]) || (s[i] == '+' && i == 0))
            return false;
    }
    return digit && s[0] != '.' && s[n - 1] != '.';
}

/* {k="v",...} at *p (past the name) to "k":"v",...; *p past the closing brace. */
static void json_labels(struct evbuffer *out, const char **p, const char *end)
{
    const char *s = *p + 1;
    bool first = true;

    evbuffer_add(out, "{", 1);
    while (s < end && *s != '}') {
        const char *eq = memchr(s, '=', (size_t)(end - s));
        const char *v, *q;

        if (eq == NULL || eq + 1 >= end || eq[1] != '"')
            break;
        v = eq + 2;
        for (q = v; q < end && *q != '"'; q++) {
            if (*q == '\\' && q + 1 < end)
                q++;
        }
        evbuffer_add_printf(out, "%s\"", first ? "" : ",");
        json_chars(out, s, (size_t)(eq - s));
        evbuffer_add(out, "\":\"", 3);
        json_chars(out, v, (size_t)(q - v));
        evbuffer_add(out, "\"", 1);
        first = false;
        s = q + 1;
        if (s < end && *s == ',')
            s++;
    }
    evbuffer_add(out, "}", 1);
    *p = s < end ? s + 1 : end;
}

/* One sample line "name{labels} value" as ["name",{labels},value]. */
static void json_sample(struct evbuffer *out, const char *line, const char *end, bool first)
{
    const char *p = line, *v;

    while (p < end && *p != '{' && *p != ' ')
        p++;
    evbuffer_add_printf(out, "%s\n[\"", first ? "" : ",");
    json_chars(out, line, (size_t)(p - line));
    evbuffer_add(out, "\",", 2);
    if (p < end && *p == '{')
        json_labels(out, &p, end);
    else
        evbuffer_add(out, "{}", 2);
    while (p < end && *p == ' ')
        p++;
    v = p;
    while (p < end && *p != ' ')
        p++;
    evbuffer_add(out, ",", 1);
    if (is_number(v, (size_t)(p - v)))
        evbuffer_add(out, v, (size_t)(p - v));
    else
        evbuffer_add(out, "null", 4);
    evbuffer_add(out, "]", 1);
}

void pf_admin_stats_json(struct pf_server *s, struct evbuffer *out)
{
    struct evbuffer *text = pf_evbuffer_new();
    struct timeval now;
    const char *p, *end;
    bool first = true;

    pf_stats_render(s, text);
    gettimeofday(&now, NULL);
    evbuffer_add_printf(out, "{\"time\":%lld.%03d,\"samples\":[", (long long)now.tv_sec,
                        (int)(now.tv_usec / 1000));
    p = (const char *)evbuffer_pullup(text, -1);
    end = p + evbuffer_get_length(text);
    while (p != NULL && p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        const char *eol = nl != NULL ? nl : end;

        if (eol > p && *p != '#') {
            json_sample(out, p, eol, first);
            first = false;
        }
        p = eol + 1;
    }
    evbuffer_add(out, "\n]}\n", 4);
    evbuffer_free(text);
}
