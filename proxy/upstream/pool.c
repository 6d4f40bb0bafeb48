/*
 * Upstream connections and per-worker LIFO keep-alive pools.
 *
 * An idle connection keeps a read timeout of idle_timeout: the stream's
 * timeout closes it (idle_eventcb), and no syscall is spent switching it.
 * The tick (pf_upstream_sweep) closes those past their deadline or lifetime.
 */
#include "proxy/upstream/pool.h"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/buffer.h>

#include "proxy/arena.h"
#include "proxy/core.h"
#include "proxy/http1.h"
#include "proxy/stats.h"
#include "proxy/tx.h"
#include "proxy/upstream/endpoint.h"

struct pf_pool *pf_pool_of(struct pf_worker *w, unsigned id)
{
    if (id >= w->n_pools) {
        unsigned n = pf_endpoint_id_limit(); /* ids are reused: bounded by the most live at once */

        w->pools = pf_xrealloc(w->pools, n * sizeof(*w->pools));
        for (unsigned i = w->n_pools; i < n; i++) {
            w->pools[i] = pf_xcalloc(1, sizeof(**w->pools));
            TAILQ_INIT(&w->pools[i]->idle);
        }
        w->n_pools = n;
    }
    return w->pools[id];
}

static void upconn_free(struct pf_upconn *uc)
{
    struct pf_endpoint *ep;

    pf_stream_free(uc->s);
    evbuffer_free(uc->body);
    pf_head_free(&uc->head);
    ep = pf_endpoint_get(uc->endpoint_id);
    atomic_fetch_sub_explicit(&ep->open, 1, memory_order_relaxed);
    free(uc);
    pf_endpoint_unref(ep); /* the connection's reference: may free the endpoint */
}

void pf_upconn_close(struct pf_upconn *uc)
{
    if (uc->state == PF_UC_CLOSED)
        return;
    uc->state = PF_UC_CLOSED;
    if (uc->busy == 0)
        upconn_free(uc);
}

void pf_upconn_leave(struct pf_upconn *uc)
{
    if (--uc->busy == 0 && uc->state == PF_UC_CLOSED)
        upconn_free(uc);
}

void pf_upconn_set_rto(struct pf_upconn *uc, uint64_t ms)
{
    struct timeval tmp;

    pf_stream_set_read_timeout(uc->s, pf_stream_timeout(&uc->w->sloop, ms, &tmp));
}

struct pf_upconn *pf_upconn_new(struct pf_worker *w, unsigned id, int fd,
                                const struct pf_upstream_conf *up)
{
    struct pf_endpoint *ep = pf_endpoint_get(id);
    struct pf_upconn *uc = pf_xcalloc(1, sizeof(*uc));

    uc->w = w;
    uc->endpoint_id = id;
    uc->state = PF_UC_CONNECTING;
    uc->body = pf_evbuffer_new();
    uc->expire_us = pf_now_us() + up->pool.max_lifetime_ms * 1000;
    uc->s = pf_stream_new(&w->sloop, fd);
    atomic_fetch_add_explicit(&ep->open, 1, memory_order_relaxed);
    pf_endpoint_ref(ep); /* dropped by upconn_free */
    return uc;
}

struct pf_upconn *pf_upconn_connect(struct pf_worker *w, unsigned id,
                                    const struct pf_upstream_conf *up)
{
    struct pf_endpoint *ep = pf_endpoint_get(id);
    struct pf_upconn *uc;
    int fd, one = 1;

    fd = socket(ep->addr.ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd == -1)
        return NULL;
    if (ep->addr.ss.ss_family != AF_UNIX)
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    uc = pf_upconn_new(w, id, fd, up);
    if (pf_stream_connect(uc->s, (struct sockaddr *)&ep->addr.ss, ep->addr.len) != 0) {
        upconn_free(uc);
        return NULL;
    }
    return uc;
}

/* ---- pools ---- */

static void pool_remove(struct pf_upconn *uc)
{
    struct pf_pool *p = pf_pool_of(uc->w, uc->endpoint_id);

    TAILQ_REMOVE(&p->idle, uc, link);
    p->n_idle--;
}

static void idle_readcb(struct pf_stream *s, void *arg)
{
    struct pf_upconn *uc = arg;

    /* an idle connection must not speak: drop it */
    (void)s;
    pool_remove(uc);
    pf_upconn_close(uc);
}

static void idle_eventcb(struct pf_stream *s, int what, void *arg)
{
    (void)what;
    idle_readcb(s, arg);
}

/* False once no snapshot lists the endpoint: its idle connections only hold it alive. */
static bool endpoint_listed(unsigned id)
{
    return atomic_load_explicit(&pf_endpoint_get(id)->snaps, memory_order_relaxed) > 0;
}

void pf_pool_put(struct pf_upconn *uc, const struct pf_upstream_conf *up)
{
    struct pf_pool *p = pf_pool_of(uc->w, uc->endpoint_id);
    uint64_t now = pf_now_us();

    if (p->n_idle >= up->pool.max_idle || now >= uc->expire_us || uc->w->draining ||
        !endpoint_listed(uc->endpoint_id)) {
        pf_upconn_close(uc);
        return;
    }
    uc->state = PF_UC_IDLE;
    uc->idle_deadline_us = now + up->pool.idle_timeout_ms * 1000;
    uc->reused = true;
    pf_upconn_set_rto(uc, up->pool.idle_timeout_ms);
    pf_stream_setcb(uc->s, idle_readcb, NULL, idle_eventcb, uc);
    pf_stream_read(uc->s, true);
    TAILQ_INSERT_HEAD(&p->idle, uc, link);
    p->n_idle++;
}

struct pf_upconn *pf_pool_get(struct pf_worker *w, unsigned id)
{
    struct pf_pool *p = pf_pool_of(w, id);
    uint64_t now = pf_now_us();
    struct pf_upconn *uc;

    while ((uc = TAILQ_FIRST(&p->idle)) != NULL) {
        pool_remove(uc);
        if (now < uc->idle_deadline_us && now < uc->expire_us)
            return uc;
        pf_upconn_close(uc);
    }
    return NULL;
}

void pf_upstream_sweep(struct pf_worker *w, bool all)
{
    uint64_t now = pf_now_us();

    for (unsigned i = 0; i < w->n_pools; i++) {
        struct pf_upconn *uc, *next;

        for (uc = TAILQ_FIRST(&w->pools[i]->idle); uc != NULL; uc = next) {
            next = TAILQ_NEXT(uc, link);
            if (all || now >= uc->idle_deadline_us || now >= uc->expire_us ||
                !endpoint_listed(uc->endpoint_id)) {
                pool_remove(uc);
                pf_upconn_close(uc);
            }
        }
    }
    if (w->stats != NULL)
        pf_stats_prune_endpoints(w->stats); /* series of endpoints that are gone */
    if (all) {
        for (unsigned i = 0; i < w->n_pools; i++)
            free(w->pools[i]);
        free(w->pools);
        w->pools = NULL;
        w->n_pools = 0;
    }
}

/* ---- debugging ---- */

const char *pf_upconn_state_name(enum pf_upconn_state st)
{
    static const char *const names[] = {
        [PF_UC_CONNECTING] = "connecting",
        [PF_UC_IDLE] = "idle",
        [PF_UC_SENDING] = "sending",
        [PF_UC_WAITING_HEAD] = "waiting_head",
        [PF_UC_READING_BODY] = "reading_body",
        [PF_UC_DONE] = "done",
        [PF_UC_CLOSED] = "closed",
    };

    return (unsigned)st < sizeof(names) / sizeof(names[0]) ? names[st] : "?";
}

/* The flags of uc that are set, comma-separated ("-" for none), into buf of size len. */
static void dump_flags(const struct pf_upconn *uc, char *buf, size_t len)
{
    const struct {
        bool on;
        const char *name;
    } f[] = {
        {uc->reused, "reused"},           {uc->got_bytes, "got_bytes"},
        {uc->head_ready, "head_ready"},   {uc->req_chunked, "req_chunked"},
        {uc->req_sent, "req_sent"},       {uc->read_blocked, "read_blocked"},
        {uc->eof_pending, "eof_pending"},
    };
    size_t at = 0;

    buf[0] = '\0';
    for (size_t i = 0; i < sizeof(f) / sizeof(f[0]); i++) {
        int n;

        if (!f[i].on)
            continue;
        n = snprintf(buf + at, len - at, "%s%s", at > 0 ? "," : "", f[i].name);
        if (n < 0 || (size_t)n >= len - at)
            break; /* cut: the dump stays one line */
        at += (size_t)n;
    }
    if (at == 0)
        snprintf(buf, len, "-");
}

char *pf_upconn_dump(const struct pf_upconn *uc, char *buf, size_t len)
{
    static const char *const modes[] = {"none", "length", "chunked", "close"};
    const struct pf_endpoint *ep = pf_endpoint_get(uc->endpoint_id);
    char flags[128];

    if (len == 0)
        return buf;
    dump_flags(uc, flags, sizeof(flags));
    snprintf(buf, len, "upconn state=%s endpoint=%u(%s) tx=%s busy=%u flags=%s body=%s left=%llu",
             pf_upconn_state_name(uc->state), uc->endpoint_id, ep != NULL ? ep->addr.text : "-",
             uc->tx != NULL ? "yes" : "no", uc->busy, flags,
             uc->body_mode < 4 ? modes[uc->body_mode] : "?", (unsigned long long)uc->body_left);
    return buf;
}
