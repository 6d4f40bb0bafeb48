/*
 * Health checks: the health_check section, and the pure parts of the
 * checker (hysteresis, expect ranges, jitter), unit-tested without sockets.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>

#include "proxy/arena.h"
#include "proxy/log.h"
#include "proxy/conf.h"
#include "proxy/syntax.h"
#include "proxy/upstream/health.h"

const char *pf_health_state_name(enum pf_health_state s)
{
    switch (s) {
    case PF_HEALTH_HEALTHY:
        return "healthy";
    case PF_HEALTH_UNHEALTHY:
        return "unhealthy";
    default:
        return "unknown";
    }
}

bool pf_health_track(struct pf_health_track *t, const struct pf_health_conf *hc, bool pass)
{
    enum pf_health_state old = t->state;

    if (pass) {
        t->passes++;
        t->fails = 0;
        if (t->state == PF_HEALTH_UNKNOWN ||
            (t->state == PF_HEALTH_UNHEALTHY && t->passes >= hc->healthy_threshold))
            t->state = PF_HEALTH_HEALTHY;
    } else {
        t->fails++;
        t->passes = 0;
        if (t->state != PF_HEALTH_UNHEALTHY && t->fails >= hc->unhealthy_threshold)
            t->state = PF_HEALTH_UNHEALTHY;
    }
    return t->state != old;
}

bool pf_health_expect_ok(const struct pf_health_conf *hc, int status)
{
    for (unsigned i = 0; i < hc->n_expect; i++) {
        if (status >= hc->expect_lo[i] && status <= hc->expect_hi[i])
            return true;
    }
    return false;
}

uint64_t pf_health_next_ms(const struct pf_health_conf *hc, uint64_t rnd)
{
    uint64_t span = hc->interval_ms / 5; /* +-10% */

    if (span == 0)
        return hc->interval_ms;
    return hc->interval_ms - span / 2 + rnd % (span + 1);
}

/* ---- the section ---- */

/* One status "200" or range "200-399" of s[0..len) into *lo, *hi. */
static bool parse_range(const char *s, size_t len, uint16_t *lo, uint16_t *hi)
{
    char buf[16];
    char *dash, *end;
    long a, b;

    if (len == 0 || len >= sizeof(buf))
        return false;
    memcpy(buf, s, len);
    buf[len] = '\0';
    dash = strchr(buf, '-');
    a = strtol(buf, &end, 10);
    if (end == buf || (dash != NULL ? end != dash : *end != '\0'))
        return false;
    b = a;
    if (dash != NULL) {
        b = strtol(dash + 1, &end, 10);
        if (end == dash + 1 || *end != '\0')
            return false;
    }
    if (a < 100 || b > 599 || a > b)
        return false;
    *lo = (uint16_t)a;
    *hi = (uint16_t)b;
    return true;
}

/* expect: "200-399", "200, 204", "200-299, 404" (a list of statuses and ranges). */
static int parse_expect(const struct pf_conf_node *n, void *field, struct pf_err *err)
{
    struct pf_health_conf *hc = field;
    const char *v = n->value, *elem;
    size_t len;
    bool bad = n->type != PF_NODE_SCALAR;

    hc->n_expect = 0;
    while (!bad && pf_http_list_next(&v, &elem, &len)) {
        bad = hc->n_expect == PF_HEALTH_MAX_EXPECT ||
              !parse_range(elem, len, &hc->expect_lo[hc->n_expect], &hc->expect_hi[hc->n_expect]);
        hc->n_expect += !bad;
    }
    if (!bad && hc->n_expect > 0)
        return 0;
    pf_err_at(err, n,
              "'expect' must be statuses or ranges of 100-599, as \"200-399\" or "
              "\"200, 204\" (at most %u)",
              (unsigned)PF_HEALTH_MAX_EXPECT);
    return -EINVAL;
}

static const struct pf_conf_key health_keys[] = {
    {"path", PF_CONF_STRING, offsetof(struct pf_health_conf, path), 0, 0, NULL},
    {"host", PF_CONF_STRING, offsetof(struct pf_health_conf, host), 0, 0, NULL},
    {"interval", PF_CONF_DURATION, offsetof(struct pf_health_conf, interval_ms), 10, 3600000, NULL},
    {"timeout", PF_CONF_DURATION, offsetof(struct pf_health_conf, timeout_ms), 1, 3600000, NULL},
    {"healthy_threshold", PF_CONF_UINT, offsetof(struct pf_health_conf, healthy_threshold), 1, 1000,
     NULL},
    {"unhealthy_threshold", PF_CONF_UINT, offsetof(struct pf_health_conf, unhealthy_threshold), 1,
     1000, NULL},
    {"expect", PF_CONF_CUSTOM, 0, 0, 0, parse_expect},
    {"panic", PF_CONF_BOOL, offsetof(struct pf_health_conf, panic), 0, 0, NULL},
    {NULL, 0, 0, 0, 0, NULL},
};

void pf_health_conf_parse(const struct pf_conf_node *n, const char *section,
                          struct pf_health_conf *hc, struct pf_err *err)
{
    char sub[320];

    if (n == NULL)
        return;
    hc->enabled = true;
    hc->panic = true;
    hc->path = pf_xstrdup("/health");
    hc->interval_ms = 5000;
    hc->timeout_ms = 1000;
    hc->healthy_threshold = 2;
    hc->unhealthy_threshold = 3;
    hc->n_expect = 1;
    hc->expect_lo[0] = 200;
    hc->expect_hi[0] = 399;
    snprintf(sub, sizeof(sub), "%s.health_check", section);
    if (pf_conf_is_null(n))
        return; /* health_check: with every default */
    if (n->type != PF_NODE_MAP) {
        pf_err_at(err, n, "%s: expected a map of settings (or nothing, for the defaults)", sub);
        return;
    }
    if (pf_conf_fill_section(n, sub, health_keys, hc, err) != 0)
        return;
    if (hc->path[0] != '/' || !pf_http_target_valid(hc->path, strlen(hc->path)))
        pf_err_at(err, pf_conf_get(n, "path"), "%s.path: must be a path starting with '/'", sub);
    if (hc->host != NULL && !pf_http_host_valid(hc->host, strlen(hc->host)))
        pf_err_at(err, pf_conf_get(n, "host"), "%s.host: not a valid Host value", sub);
    if (hc->timeout_ms > hc->interval_ms && pf_conf_get(n, "timeout") == NULL)
        hc->timeout_ms = hc->interval_ms; /* the default timeout, within a short interval */
    else if (hc->timeout_ms > hc->interval_ms)
        pf_err_at(err, pf_conf_get(n, "timeout"), "%s.timeout: must not exceed interval", sub);
}

void pf_health_conf_free(struct pf_health_conf *hc)
{
    free(hc->path);
    free(hc->host);
    hc->path = NULL;
    hc->host = NULL;
}

void pf_health_conf_json(struct evbuffer *out, const struct pf_health_conf *hc)
{
    char iv[24], to[24];

    if (!hc->enabled) {
        evbuffer_add_printf(out, ",\"health_check\":null");
        return;
    }
    pf_conf_format_duration(hc->interval_ms, iv, sizeof(iv));
    pf_conf_format_duration(hc->timeout_ms, to, sizeof(to));
    evbuffer_add_printf(out, ",\"health_check\":{\"path\":\"");
    pf_json_escape(out, hc->path, strlen(hc->path));
    evbuffer_add_printf(out, "\",\"host\":");
    if (hc->host != NULL) {
        evbuffer_add(out, "\"", 1);
        pf_json_escape(out, hc->host, strlen(hc->host));
        evbuffer_add(out, "\"", 1);
    } else {
        evbuffer_add_printf(out, "null");
    }
    evbuffer_add_printf(out,
                        ",\"interval\":\"%s\",\"timeout\":\"%s\",\"healthy_threshold\":%u,"
                        "\"unhealthy_threshold\":%u,\"expect\":\"",
                        iv, to, hc->healthy_threshold, hc->unhealthy_threshold);
    for (unsigned i = 0; i < hc->n_expect; i++) {
        evbuffer_add_printf(out, "%s%u", i > 0 ? ", " : "", hc->expect_lo[i]);
        if (hc->expect_hi[i] != hc->expect_lo[i])
            evbuffer_add_printf(out, "-%u", hc->expect_hi[i]);
    }
    evbuffer_add_printf(out, "\",\"panic\":%s}", hc->panic ? "true" : "false");
}
