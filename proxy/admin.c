/*
 * Admin API: health, readiness, configuration, reload, drain and exit.
 * Mutating endpoints (POST) need "Authorization: Bearer TOKEN" when a token
 * is configured, and come only from loopback when none is.
 */
#include "proxy/admin.h"

#include <string.h>
#include <strings.h>

#include <event2/buffer.h>

#include "proxy/arena.h"
#include "proxy/filter.h"
#include "proxy/log.h"
#include "proxy/probes.h"
#include "proxy/server.h"
#include "proxy/stats.h"
#include "proxy/tx.h"
#include "proxy/upstream/breaker.h"
#include "filters/registry.h"

/* The admin endpoints, for GET / and the Allow header of a 405 (docs/operations.md). */
static const struct admin_ep {
    const char *path;
    const char *allow;
    const char *what;
} admin_eps[] = {
    {"/", "GET, HEAD", "this list"},
    {"/dashboard", "GET, HEAD", "HTML dashboard: rates, errors, latency, endpoints, cache"},
    {"/stats", "GET, HEAD", "every sample of /metrics as JSON (the dashboard's source)"},
    {"/health", "GET, HEAD", "liveness"},
    {"/live", "GET, HEAD", "liveness"},
    {"/ready", "GET, HEAD", "readiness, with the reasons when not ready"},
    {"/metrics", "GET, HEAD", "Prometheus metrics"},
    {"/config", "GET, HEAD", "the running configuration, secrets redacted"},
    {"/upstreams", "GET, HEAD",
     "per endpoint: circuit, health, recent counts, latency, connections"},
    {"/reload", "POST", "reload the configuration file"},
    {"/drain", "POST", "stop accepting, finish what is in flight"},
    {"/quitquitquit", "POST", "drain, then exit"},
    {"/cache/purge", "POST", "drop cached responses by url, prefix or tag"},
};

const char *pf_admin_allow(const char *path)
{
    for (size_t i = 0; i < sizeof(admin_eps) / sizeof(admin_eps[0]); i++) {
        if (strcmp(path, admin_eps[i].path) == 0)
            return admin_eps[i].allow;
    }
    return NULL;
}

static void admin_json(struct pf_tx *tx, int status, struct evbuffer *body)
{
    pf_tx_reply(tx, status, body);
    pf_tx_resp_header_add(tx, "Content-Type", "application/json");
    pf_tx_resp_header_add(tx, "Cache-Control", "no-store");
}

static void admin_simple(struct pf_tx *tx, int status, const char *json)
{
    struct evbuffer *b = pf_evbuffer_new();

    evbuffer_add(b, json, strlen(json));
    admin_json(tx, status, b);
    evbuffer_free(b);
}

static bool is_loopback(const char *client)
{
    return strncmp(client, "127.", 4) == 0 || strcmp(client, "::1") == 0 ||
           strcmp(client, "unix") == 0 || strncmp(client, "::ffff:127.", 11) == 0;
}

bool pf_admin_token_equal(const char *given, size_t given_len, const char *token)
{
    size_t len = strlen(token);
    unsigned char diff = given_len != len;

    /* as long as the token whatever the input: the time says nothing of a matching prefix */
    for (size_t i = 0; i < len; i++) {
        unsigned char g = i < given_len ? (unsigned char)given[i] : 0;

        diff |= g ^ (unsigned char)token[i];
    }
    return diff == 0;
}

/* docs/operations.md: the token, or loopback when there is none; on refusal the reply is set. */
static bool admin_authorized(struct pf_tx *tx)
{
    const char *token = tx->cfg->admin_token;
    const char *auth;

    if (token == NULL || token[0] == '\0') {
        if (is_loopback(pf_tx_client_addr(tx)))
            return true;
        pf_tx_error(tx, 403, PF_ERR_FORBIDDEN);
        return false;
    }
    auth = pf_tx_req_header(tx, "authorization");
    if (auth != NULL && strncasecmp(auth, "Bearer ", 7) == 0 &&
        pf_admin_token_equal(auth + 7, strlen(auth + 7), token))
        return true;
    pf_tx_error(tx, 401, PF_ERR_UNAUTHORIZED);
    pf_tx_resp_header_add(tx, "WWW-Authenticate", "Bearer");
    return false;
}

static void admin_ready(struct pf_tx *tx, struct pf_server *s)
{
    struct evbuffer *why = pf_evbuffer_new();
    struct evbuffer *b = pf_evbuffer_new();

    if (pf_server_ready(s, why)) {
        evbuffer_add_printf(b, "{\"status\":\"ready\"}\n");
        admin_json(tx, 200, b);
    } else {
        evbuffer_add_printf(b, "{\"status\":\"not_ready\",\"reasons\":[");
        evbuffer_add_buffer(b, why);
        evbuffer_add_printf(b, "]}\n");
        admin_json(tx, 503, b);
    }
    evbuffer_free(why);
    evbuffer_free(b);
}

bool pf_admin_head_ok(struct pf_tx *tx)
{
    if (tx->is_probe)
        return pf_probes_head_ok(tx);
    /* only POSTs are authorized; anything else answers without reading a body */
    return tx->method_id != HTTP_POST || admin_authorized(tx);
}

/*
 * A POST no core endpoint answers: offered to each registered filter's admin
 * hook (proxy/filter.h) with the running snapshot's conf and pstate. True
 * when one answered.
 */
static bool admin_filters(struct pf_tx *tx, struct pf_server *s, const char *path)
{
    const struct pf_config *cfg = s != NULL ? s->cfg : NULL; /* NULL in unit tests */
    const struct pf_filter_ops *ops;
    struct evbuffer *b;
    size_t len = tx->req_buf != NULL ? evbuffer_get_length(tx->req_buf) : 0;
    const char *body = len > 0 ? (const char *)evbuffer_pullup(tx->req_buf, -1) : "";
    int status = 0;

    for (unsigned i = 0; status == 0 && (ops = pf_filter_at(i)) != NULL; i++) {
        const struct pf_filter_inst *f = NULL;

        if (ops->admin == NULL)
            continue;
        for (unsigned k = 0; cfg != NULL && k < cfg->n_filters && f == NULL; k++) {
            if (cfg->filters[k].ops == ops)
                f = &cfg->filters[k];
        }
        b = pf_evbuffer_new();
        status = ops->admin(f != NULL ? f->conf : NULL, f != NULL ? f->pstate : NULL, path, body,
                            len, b);
        if (status != 0)
            admin_json(tx, status, b);
        evbuffer_free(b);
    }
    return status != 0;
}

static void admin_post(struct pf_tx *tx, struct pf_server *s, const char *path)
{
    /* authorized already, when the head arrived (pf_admin_head_ok) */
    if (strcmp(path, "/reload") == 0) {
        struct evbuffer *b = pf_evbuffer_new();
        int rc = pf_server_reload(s, b);

        admin_json(tx, rc == 0 ? 200 : 400, b);
        evbuffer_free(b);
    } else if (strcmp(path, "/drain") == 0) {
        pf_server_drain(s, false);
        admin_simple(tx, 202, "{\"status\":\"draining\"}\n");
    } else if (strcmp(path, "/quitquitquit") == 0) {
        pf_server_drain(s, true);
        admin_simple(tx, 202, "{\"status\":\"exiting\"}\n");
    } else if (!admin_filters(tx, s, path)) {
        pf_tx_error(tx, 404, PF_ERR_NOT_FOUND);
    }
}

static void admin_index(struct pf_tx *tx)
{
    struct evbuffer *b = pf_evbuffer_new();

    evbuffer_add_printf(b, "{\"endpoints\":[");
    for (size_t i = 0; i < sizeof(admin_eps) / sizeof(admin_eps[0]); i++)
        evbuffer_add_printf(b, "%s\n{\"path\":\"%s\",\"methods\":\"%s\",\"description\":\"%s\"}",
                            i > 0 ? "," : "", admin_eps[i].path, admin_eps[i].allow,
                            admin_eps[i].what);
    evbuffer_add_printf(b, "\n]}\n");
    admin_json(tx, 200, b);
    evbuffer_free(b);
}

/* GET /dashboard and GET /stats (proxy/admin_dash.c) */
static void admin_dash(struct pf_tx *tx, struct pf_server *s, bool page)
{
    struct evbuffer *b = pf_evbuffer_new();

    if (page) {
        const char *html = pf_admin_dashboard();

        evbuffer_add(b, html, strlen(html));
        pf_tx_reply(tx, 200, b);
        pf_tx_resp_header_add(tx, "Content-Type", "text/html; charset=utf-8");
        pf_tx_resp_header_add(tx, "Cache-Control", "no-store");
        /* nothing but the page itself: no outside scripts, styles or images */
        pf_tx_resp_header_add(tx, "Content-Security-Policy",
                              "default-src 'none'; script-src 'unsafe-inline'; "
                              "style-src 'unsafe-inline'; connect-src 'self'; img-src data:");
    } else {
        pf_admin_stats_json(s, b);
        admin_json(tx, 200, b);
    }
    evbuffer_free(b);
}

static void admin_get(struct pf_tx *tx, struct pf_server *s, const char *path)
{
    if (strcmp(path, "/") == 0) {
        admin_index(tx);
    } else if (strcmp(path, "/dashboard") == 0 || strcmp(path, "/stats") == 0) {
        admin_dash(tx, s, path[1] == 'd');
    } else if (strcmp(path, "/health") == 0 || strcmp(path, "/live") == 0) {
        if (pf_server_live(s))
            admin_simple(tx, 200, "{\"status\":\"ok\"}\n");
        else
            admin_simple(tx, 503, "{\"status\":\"stalled\"}\n");
    } else if (strcmp(path, "/ready") == 0) {
        admin_ready(tx, s);
    } else if (strcmp(path, "/config") == 0) {
        struct evbuffer *b = pf_evbuffer_new();

        pf_conf_to_json(s->cfg, b);
        evbuffer_add(b, "\n", 1);
        admin_json(tx, 200, b);
        evbuffer_free(b);
    } else if (strcmp(path, "/upstreams") == 0) {
        struct evbuffer *b = pf_evbuffer_new();

        pf_breaker_upstreams_json(s->cfg, b, pf_now_us());
        admin_json(tx, 200, b);
        evbuffer_free(b);
    } else if (strcmp(path, "/metrics") == 0) {
        struct evbuffer *b = pf_evbuffer_new();

        pf_stats_render(s, b);
        pf_tx_reply(tx, 200, b);
        pf_tx_resp_header_add(tx, "Content-Type", PF_STATS_CONTENT_TYPE);
        pf_tx_resp_header_add(tx, "Cache-Control", "no-store");
        evbuffer_free(b);
    } else {
        pf_tx_error(tx, 404, PF_ERR_NOT_FOUND);
    }
}

void pf_admin_handle(struct pf_tx *tx)
{
    struct pf_server *s = pf_server_get();
    char path[256];
    size_t n = strcspn(tx->url, "?");
    const char *allow;
    bool get;

    if (n >= sizeof(path))
        n = sizeof(path) - 1;
    memcpy(path, tx->url, n);
    path[n] = '\0';
    tx->out_from = 0;
    allow = pf_admin_allow(path);
    get = tx->method_id == HTTP_GET || tx->method_id == HTTP_HEAD;
    if (allow != NULL && (get ? allow[0] != 'G' : tx->method_id != HTTP_POST || allow[0] != 'P')) {
        /* a known endpoint asked with a method it does not take */
        pf_tx_error(tx, 405, PF_ERR_METHOD_NOT_ALLOWED);
        pf_tx_resp_header_add(tx, "Allow", allow);
    } else if (get) {
        admin_get(tx, s, path);
    } else if (tx->method_id == HTTP_POST) {
        admin_post(tx, s, path);
    } else {
        pf_tx_error(tx, 404, PF_ERR_NOT_FOUND);
    }
}
