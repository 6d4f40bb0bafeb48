/*
 * The probes listener (probes.h): GET/HEAD /live, /ready, /health and
 * /metrics of the admin API on an address of its own, nothing else.
 */
#include "proxy/probes.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/event.h>
#include <event2/listener.h>

#include "proxy/arena.h"
#include "proxy/conf.h"
#include "proxy/core.h"
#include "proxy/errors.h"
#include "proxy/http1.h"
#include "proxy/listen.h"
#include "proxy/log.h"
#include "proxy/server.h"
#include "proxy/tx.h"

static const char *const probe_paths[] = {"/live", "/ready", "/health", "/metrics", NULL};

bool pf_probes_path_ok(const char *url)
{
    size_t n = strcspn(url, "?");

    for (int i = 0; probe_paths[i] != NULL; i++) {
        if (strlen(probe_paths[i]) == n && strncmp(url, probe_paths[i], n) == 0)
            return true;
    }
    return false;
}

bool pf_probes_head_ok(struct pf_tx *tx)
{
    if (tx->method_id != HTTP_GET && tx->method_id != HTTP_HEAD) {
        pf_tx_error(tx, 405, PF_ERR_METHOD_NOT_ALLOWED);
        pf_tx_resp_header_add(tx, "Allow", "GET, HEAD");
        return false;
    }
    if (!pf_probes_path_ok(tx->url)) {
        pf_tx_error(tx, 404, PF_ERR_NOT_FOUND);
        return false;
    }
    return true;
}

static void probes_accept_cb(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *sa,
                             int len, void *arg)
{
    struct pf_server *s = arg;

    (void)l;
    (void)len;
    pf_conn_accept(&s->admin, fd, sa, true);
    /* pf_conn_accept puts the new connection last in the admin loop's list */
    TAILQ_LAST(&s->admin.conns, pf_conn_list)->is_probe = true;
}

static void probes_retry_cb(evutil_socket_t fd, short what, void *arg)
{
    struct pf_server *s = arg;

    (void)fd;
    (void)what;
    if (s->probes_listener != NULL)
        evconnlistener_enable(s->probes_listener);
}

/* accept() failed (EMFILE...): pause 100 ms instead of spinning. */
static void probes_error_cb(struct evconnlistener *l, void *arg)
{
    struct pf_server *s = arg;
    struct timeval tv = {0, 100 * 1000};

    pf_log(PF_LOG_DEBUG, "accept (probes): %s", strerror(EVUTIL_SOCKET_ERROR()));
    evconnlistener_disable(l);
    if (s->probes_retry == NULL)
        s->probes_retry = evtimer_new(s->base, probes_retry_cb, s);
    event_add(s->probes_retry, &tv);
}

static int probes_bind(const struct pf_config *cfg)
{
    int fd;

    if (cfg->probes_listen.len == 0)
        return -1;
    fd = pf_listen_socket(&cfg->probes_listen, 128);
    if (fd < 0) {
        pf_log(PF_LOG_ERR, "cannot listen on %s (probes): %s", cfg->probes_listen.text,
               strerror(-fd));
        return -2;
    }
    return fd;
}

void pf_probes_apply(struct pf_server *s, const struct pf_config *cfg, int fd)
{
    struct evconnlistener *l = NULL;

    if (fd == -3)
        return;
    if (fd >= 0) {
        l = evconnlistener_new(s->base, probes_accept_cb, s, LEV_OPT_CLOSE_ON_FREE, 0, fd);
        if (l == NULL)
            pf_fatal("evconnlistener_new failed");
        evconnlistener_set_error_cb(l, probes_error_cb);
    }
    pf_probes_close(s);
    s->probes_listener = l;
    s->probes_text = l != NULL ? pf_xstrdup(cfg->probes_listen.text) : NULL;
    if (l != NULL)
        pf_log(PF_LOG_INFO, "probes on %s", s->probes_text);
}

int pf_probes_open(struct pf_server *s, const struct pf_config *cfg)
{
    int fd = probes_bind(cfg);

    if (fd == -2)
        return -1;
    pf_probes_apply(s, cfg, fd);
    return 0;
}

int pf_probes_prepare(struct pf_server *s, const struct pf_config *cfg)
{
    const char *now = s->probes_text != NULL ? s->probes_text : "";
    const char *want = cfg->probes_listen.len > 0 ? cfg->probes_listen.text : "";

    return strcmp(now, want) == 0 ? -3 : probes_bind(cfg);
}

void pf_probes_close(struct pf_server *s)
{
    if (s->probes_listener != NULL)
        evconnlistener_free(s->probes_listener);
    s->probes_listener = NULL;
    free(s->probes_text);
    s->probes_text = NULL;
    if (s->probes_retry != NULL)
        event_free(s->probes_retry);
    s->probes_retry = NULL;
}
