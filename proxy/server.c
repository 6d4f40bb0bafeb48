/*
 * Workers, listeners, configuration swaps and draining (docs/HACKING.md).
 */
#include "proxy/server.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/random.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <event2/thread.h>

#include "proxy/arena.h"
#include "proxy/bufpool.h"
#include "proxy/defs.h"
#include "proxy/http1.h"
#include "proxy/listen.h"
#include "proxy/notify.h"
#include "proxy/probes.h"
#include "proxy/log.h"
#include "proxy/pipe.h"
#include "proxy/snapshot.h"
#include "proxy/stats.h"
#include "proxy/tx.h"
#include "proxy/upstream/health.h"
#include "proxy/upstream/upstream.h"

static struct pf_server *the_server;

static int admin_open(struct pf_server *s, const struct pf_config *cfg);

struct pf_server *pf_server_get(void)
{
    return the_server;
}

/* ---- CPUs ---- */

static long long read_ll(const char *root, const char *file)
{
    char path[512];
    long long v = 0;
    FILE *f;

    snprintf(path, sizeof(path), "%s/%s", root, file);
    f = fopen(path, "r");
    if (f == NULL)
        return -1;
    if (fscanf(f, "%lld", &v) != 1)
        v = -1;
    fclose(f);
    return v;
}

unsigned pf_server_cgroup_cpus(const char *root)
{
    char path[512];
    char quota[32] = "";
    long long q = 0, period = 0;
    FILE *f;

    /* cgroup v2: "cpu.max" holds "QUOTA PERIOD" or "max PERIOD" */
    snprintf(path, sizeof(path), "%s/cpu.max", root);
    f = fopen(path, "r");
    if (f != NULL) {
        if (fscanf(f, "%31s %lld", quota, &period) == 2 && strcmp(quota, "max") != 0)
            q = atoll(quota);
        fclose(f);
    } else {
        /* cgroup v1 */
        q = read_ll(root, "cpu/cpu.cfs_quota_us");
        period = read_ll(root, "cpu/cpu.cfs_period_us");
    }
    if (q <= 0 || period <= 0)
        return 0;
    return (unsigned)((q + period - 1) / period);
}

unsigned pf_server_auto_workers(void)
{
    cpu_set_t set;
    unsigned n = 1, quota;

    if (sched_getaffinity(0, sizeof(set), &set) == 0)
        n = (unsigned)CPU_COUNT(&set);
    quota = pf_server_cgroup_cpus("/sys/fs/cgroup");
    if (quota > 0 && quota < n)
        n = quota;
    return n > 0 ? n : 1;
}

/* ---- mailbox ---- */

void pf_server_mail(struct pf_worker *w, void (*fn)(struct pf_worker *, void *), void *arg)
{
    struct pf_mail *m = pf_xmalloc(sizeof(*m));
    uint64_t one = 1;

    m->fn = fn;
    m->arg = arg;
    m->next = NULL;
    pthread_mutex_lock(&w->mail_lock);
    if (w->mail_tail != NULL)
        w->mail_tail->next = m;
    else
        w->mail_head = m;
    w->mail_tail = m;
    pthread_mutex_unlock(&w->mail_lock);
    /*
     * An eventfd, not event_active(): the worker's event base has no lock
     * (EVENT_BASE_FLAG_NOLOCK), so no other thread may touch its events.
     */
    while (write(w->mail_fd, &one, sizeof(one)) < 0 && errno == EINTR)
        ;
}

void pf_worker_call(struct pf_worker *w, void (*fn)(struct pf_worker *, void *), void *arg)
{
    pf_server_mail(w, fn, arg);
}

static void mail_cb(evutil_socket_t fd, short what, void *arg)
{
    struct pf_worker *w = arg;
    struct pf_mail *m;
    uint64_t n;

    (void)what;
    /* reset the eventfd before taking the list: mail sent after this wakes us again */
    while (read(fd, &n, sizeof(n)) < 0 && errno == EINTR)
        ;
    pthread_mutex_lock(&w->mail_lock);
    m = w->mail_head;
    w->mail_head = w->mail_tail = NULL;
    pthread_mutex_unlock(&w->mail_lock);
    while (m != NULL) {
        struct pf_mail *next = m->next;

        m->fn(w, m->arg);
        free(m);
        m = next;
    }
}

/*
 * Descriptors kept for everything but client and upstream connections: stdio
 * and logs, each event loop's own (epoll, wakeup pipes) and listening sockets.
 */
static unsigned server_fd_reserve(const struct pf_server *s, const struct pf_config *cfg)
{
    return 16 + 6 * (s->n_workers + 1) + cfg->n_listen * s->n_workers;
}

/* limits.max_connections within what the open files limit allows. */
static unsigned server_max_conns(const struct pf_server *s, const struct pf_config *cfg)
{
    unsigned max = cfg->limits.max_connections;

    return s->fd_cap > 0 && max > s->fd_cap ? s->fd_cap : max;
}

/* Raise the soft open files limit to the hard one; note what it allows. */
static void server_raise_nofile(struct pf_server *s, const struct pf_config *cfg)
{
    struct rlimit rl;
    unsigned reserve = server_fd_reserve(s, cfg);

    if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
        return;
    if (rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
        getrlimit(RLIMIT_NOFILE, &rl);
    }
    if (rl.rlim_cur == RLIM_INFINITY || rl.rlim_cur > 0x7fffffff)
        return;
    /* each client connection may need an upstream one: both must fit */
    s->fd_cap = pf_listen_fd_cap(rl.rlim_cur, reserve);
    if (cfg->limits.max_connections > s->fd_cap)
        pf_log(PF_LOG_WARN,
               "open files limit %llu: max_connections %u lowered to %u ((%llu - %u reserved) / 2: "
               "an upstream connection for each client connection)",
               (unsigned long long)rl.rlim_cur, cfg->limits.max_connections, s->fd_cap,
               (unsigned long long)rl.rlim_cur, reserve);
}

/* limits.backlog, capped by net.core.somaxconn (warning when it is). */
static int server_backlog(const struct pf_config *cfg)
{
    bool capped;
    unsigned b = pf_listen_backlog(cfg->limits.backlog, "/proc/sys/net/core/somaxconn", &capped);

    if (capped)
        pf_log(PF_LOG_WARN, "limits.backlog %u capped to net.core.somaxconn %u",
               cfg->limits.backlog, b);
    return (int)b;
}

/* ---- configuration snapshots per worker ---- */

/* worker_fini for the first n filters of wc, then free wc and drop its reference. */
static void wconf_free(struct pf_worker *w, struct pf_wconf *wc, unsigned n)
{
    for (unsigned i = 0; i < n && !w->is_admin; i++) {
        const struct pf_filter_ops *ops = wc->cfg->filters[i].ops;

        if (ops->worker_fini != NULL)
            ops->worker_fini(wc->wstates[i]);
    }
    pf_conf_unref(wc->cfg);
    free(wc->wstates);
    free(wc);
}

/*
 * cfg (one reference, taken over) with w's wstates (worker_init runs on the
 * main thread; the wconf reaches w by mail). NULL when a worker_init fails:
 * the filters before it are finished again and *failed names the filter.
 */
static struct pf_wconf *wconf_new(struct pf_worker *w, struct pf_config *cfg, const char **failed)
{
    struct pf_wconf *wc = pf_xcalloc(1, sizeof(*wc));

    wc->cfg = cfg;
    wc->refs = 1;
    wc->wstates = pf_xcalloc(cfg->n_filters + 1, sizeof(void *));
    for (unsigned i = 0; i < cfg->n_filters && !w->is_admin; i++) {
        const struct pf_filter_ops *ops = cfg->filters[i].ops;

        if (ops->worker_init != NULL &&
            ops->worker_init(cfg->filters[i].conf, w, &wc->wstates[i]) != 0) {
            *failed = ops->name;
            wconf_free(w, wc, i);
            return NULL;
        }
    }
    return wc;
}

void pf_server_wconf_unref(struct pf_worker *w, struct pf_wconf *wc)
{
    if (--wc->refs > 0)
        return;
    wconf_free(w, wc, wc->cfg->n_filters);
}

/* Mail: switch w to a new snapshot (arg: a wconf built for w by the reload). */
static void worker_switch(struct pf_worker *w, void *arg)
{
    struct pf_wconf *old = w->wc;

    w->wc = arg;
    for (unsigned i = 0; i < w->wc->cfg->n_filters && !w->is_admin; i++) {
        const struct pf_filter_ops *ops = w->wc->cfg->filters[i].ops;

        if (ops->worker_start != NULL)
            ops->worker_start(w->wc->wstates[i]);
    }
    if (old != NULL)
        pf_server_wconf_unref(w, old);
}

/*
 * A wconf of cfg for each worker in wcs[], the admin loop's last. When a
 * worker_init fails nothing stays built; *failed / *at: which filter, worker.
 */
static int wconfs_new(struct pf_server *s, struct pf_config *cfg, struct pf_wconf **wcs,
                      const char **failed, unsigned *at)
{
    for (unsigned i = 0; i <= s->n_workers; i++) {
        struct pf_worker *w = i < s->n_workers ? &s->workers[i] : &s->admin;

        wcs[i] = wconf_new(w, pf_conf_ref(cfg), failed);
        if (wcs[i] == NULL) {
            *at = i;
            while (i-- > 0)
                pf_server_wconf_unref(&s->workers[i], wcs[i]);
            return -1;
        }
    }
    return 0;
}

/* ---- listeners ---- */

static void accept_cb(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *sa, int len,
                      void *arg)
{
    struct pf_worker *w = arg;

    (void)l;
    (void)len;
    pf_conn_accept(w, fd, sa, w->is_admin);
}

void pf_server_conn_closed(struct pf_worker *w)
{
    if (!w->is_admin)
        pf_listen_release(w->srv);
}

/* accept() failed on the admin listener (EMFILE...): pause it 100 ms instead of spinning. */
static void accept_retry_cb(evutil_socket_t fd, short what, void *arg)
{
    struct pf_worker *w = arg;

    (void)fd;
    (void)what;
    if (w->srv->admin_listener != NULL)
        evconnlistener_enable(w->srv->admin_listener);
}

static void accept_error_cb(struct evconnlistener *l, void *arg)
{
    struct pf_worker *w = arg;
    struct timeval tv = {0, 100 * 1000};
    uint64_t now = pf_now_us();
    int err = EVUTIL_SOCKET_ERROR();

    if (now - w->accept_err_logged > 10 * 1000000ull) {
        pf_log(PF_LOG_ERR, "accept: %s: pausing accepts (raise the open files limit?)",
               strerror(err));
        w->accept_err_logged = now;
    }
    evconnlistener_disable(l);
    if (w->accept_retry == NULL)
        w->accept_retry = evtimer_new(w->base, accept_retry_cb, w);
    event_add(w->accept_retry, &tv);
}

/* ---- workers ---- */

#define SWEEP_TICKS 10 /* idle pools are swept every 10th tick (1 s) */

static void tick_cb(evutil_socket_t fd, short what, void *arg)
{
    struct pf_worker *w = arg;
    static __thread unsigned ticks;

    (void)fd;
    (void)what;
    atomic_store_explicit(&w->heartbeat, pf_now_us(), memory_order_relaxed);
    if (evbuffer_get_length(w->alog) > 0)
        pf_alog_submit(w->alog);
    if (++ticks % SWEEP_TICKS == 0)
        pf_upstream_sweep(w, false);
}

/*
 * A worker's event base, without locks: only its own thread touches it (other
 * threads reach it through the mailbox's eventfd), and taking the base's mutex
 * on every event_add/event_del costs hundreds of instructions per request.
 */
static struct event_base *worker_base_new(void)
{
    struct event_config *ec = event_config_new();
    struct event_base *base;

    if (ec == NULL)
        pf_fatal("event_config_new failed");
    event_config_set_flag(ec, EVENT_BASE_FLAG_NOLOCK);
    base = event_base_new_with_config(ec);
    event_config_free(ec);
    if (base == NULL)
        pf_fatal("event_base_new failed");
    return base;
}

static void worker_init(struct pf_server *s, struct pf_worker *w, unsigned index, bool admin)
{
    struct timeval tv = {0, 100 * 1000};

    w->index = index;
    w->count = s->n_workers;
    w->is_admin = admin;
    w->srv = s;
    w->base = admin ? s->base : worker_base_new();
    pf_stream_loop_init(&w->sloop, w->base);
    TAILQ_INIT(&w->conns);
    TAILQ_INIT(&w->bg_txs);
    pthread_mutex_init(&w->mail_lock, NULL);
    w->mail_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (w->mail_fd < 0)
        pf_fatal("eventfd failed");
    w->mail_ev = event_new(w->base, w->mail_fd, EV_READ | EV_PERSIST, mail_cb, w);
    event_add(w->mail_ev, NULL);
    w->tick = event_new(w->base, -1, EV_PERSIST, tick_cb, w);
    event_add(w->tick, &tv);
    w->alog = pf_evbuffer_new();
    w->accepting = true;
    if (getrandom(w->rng, sizeof(w->rng), 0) != sizeof(w->rng) || (w->rng[0] | w->rng[1]) == 0) {
        w->rng[0] = (uint64_t)time(NULL) * 0x9E3779B97F4A7C15ull + index;
        w->rng[1] = (uint64_t)getpid() ^ 0xD1B54A32D192ED03ull;
    }
    atomic_store(&w->heartbeat, pf_now_us());
    w->stats = pf_stats_new(&s->cfg->metrics); /* outlives snapshots: counts survive reloads */
}

static void *worker_main(void *arg)
{
    struct pf_worker *w = arg;
    sigset_t set;

    sigfillset(&set);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    pf_arena_pool_start();
    pf_bufpool_start();
    event_base_loop(w->base, EVLOOP_NO_EXIT_ON_EMPTY);
    pf_arena_pool_stop();
    pf_bufpool_stop();
    pf_head_pool_drain();
    pf_pipes_free(w->pipes);
    w->pipes = NULL;
    return NULL;
}

/* Mail: the process is stopping; close everything and leave the loop. */
static void worker_stop(struct pf_worker *w, void *arg)
{
    struct pf_conn *c;

    (void)arg;
    while ((c = TAILQ_FIRST(&w->conns)) != NULL)
        pf_conn_close(c);
    pf_tx_abort_background(w);
    pf_listen_worker_close_all(w);
    pf_upstream_sweep(w, true);
    if (evbuffer_get_length(w->alog) > 0)
        pf_alog_submit(w->alog);
    pf_stream_flush_all(&w->sloop);
    event_base_loopbreak(w->base);
}

/* After its loop has stopped: release what the worker owns. */
static void worker_free(struct pf_worker *w)
{
    struct pf_mail *m = w->mail_head;

    while (m != NULL) {
        struct pf_mail *next = m->next;

        if (m->fn == worker_switch)
            pf_server_wconf_unref(w, m->arg);
        free(m);
        m = next;
    }
    if (w->wc != NULL)
        pf_server_wconf_unref(w, w->wc);
    w->wc = NULL;
    pf_listen_worker_free(w);
    event_free(w->tick);
    event_free(w->mail_ev);
    close(w->mail_fd);
    evbuffer_free(w->alog);
    pf_stats_free(w->stats);
    pf_txref_fini(w);
    pthread_mutex_destroy(&w->mail_lock);
    pf_stream_loop_fini(&w->sloop);
    if (!w->is_admin)
        event_base_free(w->base);
}

/* Mail: stop accepting, close idle connections, the rest close after their response. */
static void worker_drain(struct pf_worker *w, void *arg)
{
    struct pf_conn *c, *next;

    (void)arg;
    w->draining = true;
    pf_listen_worker_update(w);
    /* close the listening sockets: new connections are refused, not queued */
    pf_listen_worker_close_all(w);
    for (c = TAILQ_FIRST(&w->conns); c != NULL; c = next) {
        next = TAILQ_NEXT(c, link);
        if (pf_conn_is_idle(c))
            pf_conn_close(c);
        else
            c->closing = true;
    }
    pf_upstream_sweep(w, false);
}

/* ---- admin listener ---- */

/* (Re)open the admin listener of cfg; the old one is closed once the new one is bound. */
/* Bind the admin address of cfg: a socket, -1 when it is "off", -2 on an error (logged). */
static int admin_bind(const struct pf_config *cfg)
{
    int fd;

    if (cfg->admin_listen.len == 0)
        return -1;
    fd = pf_listen_socket(&cfg->admin_listen, server_backlog(cfg));
    if (fd < 0) {
        pf_log(PF_LOG_ERR, "cannot listen on %s (admin): %s", cfg->admin_listen.text,
               strerror(-fd));
        return -2;
    }
    return fd;
}

/* Serve the admin API on fd (from admin_bind), closing the previous listener. */
static void admin_apply(struct pf_server *s, const struct pf_config *cfg, int fd)
{
    struct evconnlistener *l = NULL;

    if (fd >= 0) {
        /* backlog 0: listen() was called by pf_listen_socket */
        l = evconnlistener_new(s->base, accept_cb, &s->admin, LEV_OPT_CLOSE_ON_FREE, 0, fd);
        if (l == NULL)
            pf_fatal("evconnlistener_new failed");
        evconnlistener_set_error_cb(l, accept_error_cb);
    }
    if (s->admin_listener != NULL)
        evconnlistener_free(s->admin_listener);
    s->admin_listener = l;
    free(s->admin_text);
    s->admin_text = l != NULL ? pf_xstrdup(cfg->admin_listen.text) : NULL;
}

static int admin_open(struct pf_server *s, const struct pf_config *cfg)
{
    int fd = admin_bind(cfg);

    if (fd == -2)
        return -1;
    admin_apply(s, cfg, fd);
    return 0;
}

static bool admin_changed(const struct pf_server *s, const struct pf_config *cfg)
{
    const char *now = s->admin_text != NULL ? s->admin_text : "";
    const char *want = cfg->admin_listen.len > 0 ? cfg->admin_listen.text : "";

    return strcmp(now, want) != 0;
}

/* ---- signals, drain and exit ---- */

static void server_stop(struct pf_server *s)
{
    if (s->stopping)
        return;
    s->stopping = true;
    for (unsigned i = 0; i < s->n_workers; i++)
        pf_server_mail(&s->workers[i], worker_stop, NULL);
    event_base_loopbreak(s->base);
}

/* Drain progress: a connection closed (EV_READ) or drain_timeout passed (EV_TIMEOUT). */
static void drain_check_cb(evutil_socket_t fd, short what, void *arg)
{
    struct pf_server *s = arg;

    (void)fd;
    if (what & EV_TIMEOUT) {
        if (s->exit_after_drain) {
            pf_log(PF_LOG_WARN, "drain timeout: closing %u connections",
                   atomic_load(&s->live_conns));
            server_stop(s);
        } else {
            pf_log(PF_LOG_WARN, "drain timeout passed with %u connections still open",
                   atomic_load(&s->live_conns));
        }
        return;
    }
    if (s->drain_closed && atomic_load(&s->live_conns) == 0 && s->exit_after_drain)
        server_stop(s);
}

static void drain_stop_accepting(evutil_socket_t fd, short what, void *arg)
{
    struct pf_server *s = arg;
    uint64_t ms = s->cfg->drain_timeout_ms;
    struct timeval tv = {(time_t)(ms / 1000), (suseconds_t)(ms % 1000) * 1000};

    (void)fd;
    (void)what;
    for (unsigned i = 0; i < s->n_workers; i++)
        pf_server_mail(&s->workers[i], worker_drain, NULL);
    s->drain_closed = true;
    event_free(s->drain_timer);
    s->drain_timer = evtimer_new(s->base, drain_check_cb, s);
    event_add(s->drain_timer, &tv);
    if (atomic_load(&s->live_conns) == 0)
        event_active(s->drain_check, EV_READ, 0);
}

void pf_server_drain(struct pf_server *s, bool exit_after)
{
    uint64_t ms = s->cfg->drain_delay_ms;
    struct timeval tv = {(time_t)(ms / 1000), (suseconds_t)(ms % 1000) * 1000};

    bool newly_exiting = exit_after && !s->exit_after_drain;

    if (newly_exiting)
        pf_notify("STOPPING=1");
    if (exit_after)
        s->exit_after_drain = true;
    if (atomic_exchange(&s->draining, true)) {
        if (newly_exiting && s->drain_closed) {
            /* drained already (POST /drain): now exit, within a fresh drain_timeout */
            uint64_t t = s->cfg->drain_timeout_ms;
            struct timeval tv = {(time_t)(t / 1000), (suseconds_t)(t % 1000) * 1000};

            event_free(s->drain_timer);
            s->drain_timer = evtimer_new(s->base, drain_check_cb, s);
            event_add(s->drain_timer, &tv);
            event_active(s->drain_check, EV_READ, 0);
        }
        return;
    }
    pf_log(PF_LOG_INFO, "draining: delay %llums, timeout %llums", (unsigned long long)ms,
           (unsigned long long)s->cfg->drain_timeout_ms);
    s->drain_timer = evtimer_new(s->base, drain_stop_accepting, s);
    event_add(s->drain_timer, &tv);
}

static void signal_cb(evutil_socket_t sig, short what, void *arg)
{
    struct pf_server *s = arg;

    (void)what;
    switch (sig) {
    case SIGHUP:
        pf_server_reload(s, NULL);
        break;
    case SIGUSR1:
        pf_alog_reopen();
        break;
    case SIGTERM:
    case SIGINT:
        if (s->stop_signals++ > 0) {
            pf_log(PF_LOG_WARN, "second signal: exiting now");
            pf_alog_stop();
            _exit(1);
        }
        pf_server_drain(s, true);
        break;
    }
}

/* ---- start / run ---- */

static int server_open_listeners(struct pf_server *s, const struct pf_config *cfg)
{
    int backlog = server_backlog(cfg);

    s->socks = pf_xcalloc(cfg->n_listen, sizeof(*s->socks));
    for (unsigned i = 0; i < cfg->n_listen; i++) {
        if (pf_listen_open(&s->socks[i], &cfg->listen[i], s->n_workers, backlog) != 0)
            return -1;
        s->n_socks++;
    }
    return 0;
}

/* Every worker's first snapshot; -1 (logged) when a filter cannot start. */
static int server_wconfs(struct pf_server *s)
{
    struct pf_wconf **wcs = pf_xcalloc(s->n_workers + 1, sizeof(*wcs));
    const char *failed = NULL;
    unsigned at = 0;
    int rc = wconfs_new(s, s->cfg, wcs, &failed, &at);

    if (rc != 0)
        pf_log(PF_LOG_ERR, "cannot start: filter %s: worker_init failed on worker %u", failed, at);
    for (unsigned i = 0; rc == 0 && i <= s->n_workers; i++)
        worker_switch(i < s->n_workers ? &s->workers[i] : &s->admin, wcs[i]);
    free(wcs);
    return rc;
}

/* Endpoints and filters' process state of the first snapshot; problems are logged. */
static int server_bind_snapshot(struct pf_config *cfg)
{
    struct pf_err err;
    int rc;

    pf_err_init(&err, cfg->path);
    rc = pf_snapshot_bind(cfg, NULL, &err);
    for (unsigned i = 0; i < err.n; i++)
        pf_log(PF_LOG_ERR, "%s", err.msgs[i]);
    pf_err_fini(&err);
    return rc;
}

int pf_server_start(struct pf_server *s, struct pf_config *cfg)
{
    static const int sigs[PF_SERVER_N_SIGNALS] = {SIGHUP, SIGUSR1, SIGTERM, SIGINT};

    the_server = s;
    /* for the main loop's base only (workers event_active() its drain_check) */
    evthread_use_pthreads();
    signal(SIGPIPE, SIG_IGN);
    s->cfg = cfg;
    s->base = event_base_new();
    s->n_workers = cfg->workers ? cfg->workers : pf_server_auto_workers();
    if (server_bind_snapshot(cfg) != 0)
        return -1;
    /* before the listeners: once a port accepts, a SIGHUP is a reload (run by the loop),
       never the default action that ends the process */
    for (unsigned i = 0; i < PF_COUNTOF(s->sig); i++) {
        s->sig[i] = evsignal_new(s->base, sigs[i], signal_cb, s);
        event_add(s->sig[i], NULL);
    }
    if (server_open_listeners(s, cfg) != 0 || admin_open(s, cfg) != 0 ||
        pf_probes_open(s, cfg) != 0)
        return -1;
    /* after the listeners: a port in use is the one line printed */
    server_raise_nofile(s, cfg);
    atomic_store(&s->max_conns, server_max_conns(s, cfg));
    s->drain_check = event_new(s->base, -1, 0, drain_check_cb, s);
    worker_init(s, &s->admin, s->n_workers, true);
    s->workers = pf_xcalloc(s->n_workers, sizeof(*s->workers));
    for (unsigned i = 0; i < s->n_workers; i++)
        worker_init(s, &s->workers[i], i, false);
    if (server_wconfs(s) != 0)
        return -1;
    pf_health_apply(&s->admin, cfg); /* probes on the main loop; traffic after a first pass */
    for (unsigned i = 0; i < s->n_socks; i++)
        pf_listen_give(s, &s->socks[i]);
    for (unsigned i = 0; i < s->n_workers; i++) {
        if (pthread_create(&s->workers[i].thread, NULL, worker_main, &s->workers[i]) != 0)
            pf_fatal("pthread_create failed");
    }
    s->last_reload_ok_s = (uint64_t)time(NULL);
    pf_log(PF_LOG_INFO, "pilotfish %s started: %u workers, %u listeners, admin %s", PF_VERSION,
           s->n_workers, s->n_socks, s->admin_text ? s->admin_text : "off");
    return 0;
}

int pf_server_run(struct pf_server *s)
{
    struct pf_conn *c;

    event_base_loop(s->base, EVLOOP_NO_EXIT_ON_EMPTY);
    /* from here a signal kills the process (a second SIGTERM exits at once) */
    signal(SIGTERM, SIG_DFL);
    signal(SIGINT, SIG_DFL);
    for (unsigned i = 0; i < s->n_workers; i++)
        pthread_join(s->workers[i].thread, NULL);
    while ((c = TAILQ_FIRST(&s->admin.conns)) != NULL)
        pf_conn_close(c);
    pf_stream_flush_all(&s->admin.sloop);
    if (evbuffer_get_length(s->admin.alog) > 0)
        pf_alog_submit(s->admin.alog);
    pf_log(PF_LOG_INFO, "stopped");
    return s->exit_code;
}

void pf_server_free(struct pf_server *s)
{
    pf_health_stop();
    for (unsigned i = 0; s->workers != NULL && i < s->n_workers; i++)
        worker_free(&s->workers[i]);
    free(s->workers);
    if (s->admin.base != NULL)
        worker_free(&s->admin);
    if (s->admin_listener != NULL)
        evconnlistener_free(s->admin_listener);
    pf_probes_close(s);
    for (unsigned i = 0; i < s->n_socks; i++) {
        free(s->socks[i].fds);
        free(s->socks[i].text);
    }
    free(s->socks);
    free(s->admin_text);
    for (unsigned i = 0; i < PF_COUNTOF(s->sig); i++) {
        if (s->sig[i] != NULL)
            event_free(s->sig[i]);
    }
    if (s->drain_timer != NULL)
        event_free(s->drain_timer);
    if (s->drain_check != NULL)
        event_free(s->drain_check);
    if (s->cfg != NULL)
        pf_conf_unref(s->cfg);
    if (s->base != NULL)
        event_base_free(s->base);
    pf_upstream_free_all();
}

/* ---- health of the process ---- */

/* /live fails when a worker has not ticked (100 ms) for this long */
#define PF_LIVE_WINDOW_US (2 * 1000000u)

bool pf_server_live(struct pf_server *s)
{
    uint64_t now = pf_now_us();

    for (unsigned i = 0; i < s->n_workers; i++) {
        uint64_t hb = atomic_load_explicit(&s->workers[i].heartbeat, memory_order_relaxed);

        if (now > hb + PF_LIVE_WINDOW_US)
            return false;
    }
    return true;
}

bool pf_server_ready(struct pf_server *s, struct evbuffer *why)
{
    bool ok = true;

    if (atomic_load(&s->draining)) {
        evbuffer_add_printf(why, "%s\"draining\"", ok ? "" : ",");
        ok = false;
    }
    if (!pf_server_live(s)) {
        evbuffer_add_printf(why, "%s\"worker not answering\"", ok ? "" : ",");
        ok = false;
    }
    pf_health_ready(s->cfg, why, &ok);
    return ok;
}

/* ---- reload ---- */

static int listen_find(const struct pf_server *s, const char *text)
{
    for (unsigned i = 0; i < s->n_socks; i++) {
        if (strcmp(s->socks[i].text, text) == 0)
            return (int)i;
    }
    return -1;
}

static bool cfg_has_listen(const struct pf_config *cfg, const char *text)
{
    for (unsigned i = 0; i < cfg->n_listen; i++) {
        if (strcmp(cfg->listen[i].text, text) == 0)
            return true;
    }
    return false;
}

/* Open the new listen addresses of cfg; close those it dropped. */
/* Reload, step 1: open the sockets of the new listen addresses (kept unused). */
static int reload_open_listeners(struct pf_server *s, const struct pf_config *cfg,
                                 unsigned *first_new)
{
    int backlog = -1;

    *first_new = s->n_socks;
    for (unsigned i = 0; i < cfg->n_listen; i++) {
        if (listen_find(s, cfg->listen[i].text) >= 0)
            continue;
        if (backlog < 0)
            backlog = server_backlog(cfg);
        s->socks = pf_xrealloc(s->socks, (s->n_socks + 1) * sizeof(*s->socks));
        if (pf_listen_open(&s->socks[s->n_socks], &cfg->listen[i], s->n_workers, backlog) != 0)
            return -1;
        s->n_socks++;
    }
    return 0;
}

/* Reload failed: close the sockets step 1 opened. */
static void reload_close_new_listeners(struct pf_server *s, unsigned first_new)
{
    for (unsigned j = first_new; j < s->n_socks; j++) {
        for (unsigned k = 0; k < s->socks[j].n_fds; k++)
            close(s->socks[j].fds[k]);
        free(s->socks[j].fds);
        free(s->socks[j].text);
    }
    s->n_socks = first_new;
}

/* Reload, step 2: workers take the new sockets; those cfg does not list go. */
static void reload_commit_listeners(struct pf_server *s, const struct pf_config *cfg,
                                    unsigned first_new)
{
    for (unsigned i = first_new; i < s->n_socks; i++)
        pf_listen_give(s, &s->socks[i]);
    for (unsigned i = 0; i < s->n_socks;) {
        struct pf_listen_sock *ls = &s->socks[i];

        if (cfg_has_listen(cfg, ls->text)) {
            i++;
            continue;
        }
        for (unsigned w = 0; w < s->n_workers; w++)
            pf_server_mail(&s->workers[w], pf_listen_worker_remove, (void *)(intptr_t)ls->fds[w]);
        free(ls->fds);
        free(ls->text);
        s->socks[i] = s->socks[--s->n_socks];
    }
}

static void reload_result(struct evbuffer *out, bool ok, const struct pf_err *err)
{
    if (out == NULL)
        return;
    evbuffer_add_printf(out, "{\"result\":\"%s\",\"errors\":[", ok ? "success" : "failure");
    for (unsigned i = 0; err != NULL && i < err->n; i++) {
        evbuffer_add_printf(out, "%s\"", i ? "," : "");
        pf_json_escape(out, err->msgs[i], strlen(err->msgs[i]));
        evbuffer_add(out, "\"", 1);
    }
    evbuffer_add(out, "]}\n", 3);
}

static int reload_fail(struct pf_server *s, struct evbuffer *result, struct pf_err *err)
{
    s->reloads_failed++;
    for (unsigned i = 0; i < err->n; i++)
        pf_log(PF_LOG_ERR, "reload: %s", err->msgs[i]);
    pf_log(PF_LOG_ERR, "reload failed: keeping the running configuration");
    reload_result(result, false, err);
    pf_err_fini(err);
    pf_notify("READY=1");
    return -1;
}

int pf_server_reload(struct pf_server *s, struct evbuffer *result)
{
    struct pf_err err;
    struct pf_config *cfg;
    struct pf_wconf **wcs;
    const char *failed = NULL;
    unsigned first_new = s->n_socks;
    unsigned at = 0;
    int admin_fd, probes_fd;

    pf_notify_reloading();
    pf_err_init(&err, s->cfg->path);
    cfg = pf_conf_load(s->cfg->path, &err);
    if (cfg == NULL)
        return reload_fail(s, result, &err);
    /* everything that can fail happens before anything is applied */
    if (pf_snapshot_bind(cfg, s->cfg, &err) != 0) {
        pf_conf_unref(cfg); /* releases whatever the bind took */
        return reload_fail(s, result, &err);
    }
    admin_fd = admin_changed(s, cfg) ? admin_bind(cfg) : -3;
    probes_fd = pf_probes_prepare(s, cfg);
    wcs = pf_xcalloc(s->n_workers + 1, sizeof(*wcs));
    if (admin_fd == -2 || probes_fd == -2 || reload_open_listeners(s, cfg, &first_new) != 0 ||
        wconfs_new(s, cfg, wcs, &failed, &at) != 0) {
        if (admin_fd >= 0)
            close(admin_fd);
        if (probes_fd >= 0)
            close(probes_fd);
        reload_close_new_listeners(s, first_new);
        if (failed != NULL)
            pf_err_at(&err, NULL, "filter %s: worker_init failed on worker %u", failed, at);
        else
            pf_err_at(&err, NULL, "cannot listen on a new listen or admin address (see log)");
        free(wcs);
        pf_conf_unref(cfg);
        return reload_fail(s, result, &err);
    }
    reload_commit_listeners(s, cfg, first_new);
    if (admin_fd != -3)
        admin_apply(s, cfg, admin_fd);
    pf_probes_apply(s, cfg, probes_fd);
    if (cfg->workers != s->cfg->workers)
        pf_log(PF_LOG_WARN, "reload: a change of 'workers' takes effect at the next restart");
    if (!pf_stats_conf_same(&cfg->metrics, &s->cfg->metrics))
        pf_log(PF_LOG_WARN, "reload: a change of 'metrics' takes effect at the next restart");
    if (strcmp(cfg->access_log_path, s->cfg->access_log_path) != 0 &&
        pf_alog_set_path(cfg->access_log_path) != 0)
        pf_log(PF_LOG_ERR, "reload: cannot open access log %s: keeping the old one",
               cfg->access_log_path);
    pf_log_set_level((enum pf_log_level)cfg->log_level);
    pf_health_apply(&s->admin, cfg); /* before any worker uses the snapshot */
    for (unsigned i = 0; i < s->n_workers; i++)
        pf_server_mail(&s->workers[i], worker_switch, wcs[i]);
    worker_switch(&s->admin, wcs[s->n_workers]);
    free(wcs);
    pf_listen_set_max(s, server_max_conns(s, cfg));
    pf_conf_unref(s->cfg);
    s->cfg = cfg;
    s->reloads_ok++;
    s->last_reload_ok_s = (uint64_t)time(NULL);
    pf_log(PF_LOG_INFO, "configuration reloaded from %s", cfg->path);
    reload_result(result, true, NULL);
    pf_err_fini(&err);
    pf_notify("READY=1");
    return 0;
}
