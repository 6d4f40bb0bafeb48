/*
 * Listening sockets, accepting, and the shared connection budget.
 *
 * A second pilotfish on the same address must fail to start, not share the
 * port: only the first socket of an address is bound without SO_REUSEPORT,
 * and it is marked SO_REUSEPORT after its bind, so pilotfish's own further
 * sockets may join while any other bind without it (as every pilotfish's
 * first bind is) gets EADDRINUSE. There is no window in which the address is
 * free.
 *
 * limits.max_connections is one budget for the process: a worker takes a slot
 * (compare-and-swap on live_conns) before each accept(), pauses its listeners
 * when none is left and is woken by mail when a slot comes back.
 */
#include "proxy/listen.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <event2/event.h>

#include "proxy/arena.h"
#include "proxy/http1.h"
#include "proxy/log.h"

#define ACCEPT_BATCH    64  /* accepts per wakeup: other events get their turn */
#define ACCEPT_RETRY_MS 100 /* pause after an accept() error (EMFILE...) */

/* ---- sockets ---- */

/* Is somebody accepting on the unix socket at path? */
static bool unix_in_use(const struct sockaddr_un *sun, socklen_t len)
{
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    bool used;

    if (fd == -1)
        return false;
    /* ECONNREFUSED: a file left behind; success or EAGAIN (backlog full): a live listener */
    used = connect(fd, (const struct sockaddr *)sun, len) == 0 || errno == EAGAIN;
    close(fd);
    return used;
}

static int sock_bind(const struct pf_addr *a, bool reuseport, int backlog)
{
    int fd, one = 1;

    fd = socket(a->ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd == -1)
        return -errno;
    if (a->ss.ss_family == AF_UNIX) {
        const struct sockaddr_un *sun = (const struct sockaddr_un *)&a->ss;
        struct stat st;

        if (stat(sun->sun_path, &st) == 0 && S_ISSOCK(st.st_mode)) {
            if (unix_in_use(sun, a->len)) {
                close(fd);
                return -EADDRINUSE;
            }
            unlink(sun->sun_path);
        }
    } else {
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
        if (reuseport)
            setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one));
    }
    if (bind(fd, (const struct sockaddr *)&a->ss, a->len) == -1)
        goto fail;
    /* bound alone: from now on our own sockets may join (see the top of this file) */
    if (!reuseport && a->ss.ss_family != AF_UNIX &&
        setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) == -1)
        goto fail;
    if (listen(fd, backlog) == -1)
        goto fail;
    return fd;
fail : {
    int err = -errno;

    close(fd);
    return err;
}
}

int pf_listen_socket(const struct pf_addr *a, int backlog)
{
    return sock_bind(a, false, backlog);
}

int pf_listen_open(struct pf_listen_sock *ls, const struct pf_addr *a, unsigned n, int backlog)
{
    ls->text = pf_xstrdup(a->text);
    ls->is_unix = a->ss.ss_family == AF_UNIX;
    ls->fds = pf_xcalloc(n, sizeof(int));
    ls->n_fds = n;
    for (unsigned i = 0; i < n; i++) {
        int fd;

        if (i > 0 && ls->is_unix) {
            fd = fcntl(ls->fds[0], F_DUPFD_CLOEXEC, 0); /* one socket, shared */
            if (fd == -1)
                fd = -errno;
        } else {
            fd = sock_bind(a, i > 0, backlog);
        }
        if (fd < 0) {
            pf_log(PF_LOG_ERR, "cannot listen on %s: %s", a->text, strerror(-fd));
            for (unsigned j = 0; j < i; j++)
                close(ls->fds[j]);
            free(ls->fds);
            free(ls->text);
            return -1;
        }
        ls->fds[i] = fd;
    }
    return 0;
}

/* ---- the connection budget ---- */

/* Take a slot of limits.max_connections for a connection about to be accepted. */
static bool budget_take(struct pf_server *s)
{
    unsigned n = atomic_load(&s->live_conns);

    do {
        if (n >= atomic_load(&s->max_conns))
            return false;
    } while (!atomic_compare_exchange_weak(&s->live_conns, &n, n + 1));
    return true;
}

/* Mail: a slot came back (or the limit rose) while w was paused. */
static void worker_resume(struct pf_worker *w, void *arg)
{
    (void)arg;
    pf_listen_worker_update(w);
}

/* Wake every worker paused on the budget (any thread). */
static void budget_wake(struct pf_server *s)
{
    for (unsigned i = 0; i < s->n_workers; i++) {
        struct pf_worker *w = &s->workers[i];

        if (atomic_load(&w->full) && atomic_exchange(&w->full, false)) {
            atomic_fetch_sub(&s->n_full, 1);
            pf_server_mail(w, worker_resume, NULL);
        }
    }
}

void pf_listen_release(struct pf_server *s)
{
    if (atomic_fetch_sub(&s->live_conns, 1) == 1 && atomic_load(&s->draining))
        event_active(s->drain_check, EV_READ, 0);
    /* seq_cst: either this sees a pausing worker's n_full, or that worker sees the slot */
    if (atomic_load(&s->n_full) > 0)
        budget_wake(s);
}

void pf_listen_set_max(struct pf_server *s, unsigned max)
{
    atomic_store(&s->max_conns, max);
    if (atomic_load(&s->n_full) > 0)
        budget_wake(s);
}

/* Worker thread: no slot left; pause until pf_listen_release wakes w. */
static void budget_pause(struct pf_worker *w)
{
    struct pf_server *s = w->srv;

    atomic_store(&w->full, true);
    atomic_fetch_add(&s->n_full, 1);
    pf_listen_worker_update(w);
    /* a slot released before n_full was raised would wake nobody: look again */
    if (atomic_load(&s->live_conns) < atomic_load(&s->max_conns) &&
        atomic_exchange(&w->full, false)) {
        atomic_fetch_sub(&s->n_full, 1);
        pf_listen_worker_update(w);
    }
}

/* ---- accepting ---- */

void pf_listen_worker_update(struct pf_worker *w)
{
    bool on = !w->draining && !w->accept_paused && !atomic_load(&w->full);

    if (w->accepting == on)
        return;
    w->accepting = on;
    for (unsigned i = 0; i < w->n_listeners; i++) {
        if (on)
            event_add(w->listeners[i].ev, NULL);
        else
            event_del(w->listeners[i].ev);
    }
}

static void accept_retry_cb(evutil_socket_t fd, short what, void *arg)
{
    struct pf_worker *w = arg;

    (void)fd;
    (void)what;
    w->accept_paused = false;
    pf_listen_worker_update(w);
}

/* accept() failed (EMFILE, ENFILE, ENOMEM...): pause accepting instead of spinning. */
static void accept_failed(struct pf_worker *w, int err)
{
    struct timeval tv = {0, ACCEPT_RETRY_MS * 1000};
    uint64_t now = pf_now_us();

    if (now - w->accept_err_logged > 10 * 1000000ull) {
        pf_log(PF_LOG_ERR, "accept: %s: pausing accepts (raise the open files limit?)",
               strerror(err));
        w->accept_err_logged = now;
    }
    w->accept_paused = true;
    pf_listen_worker_update(w);
    if (w->accept_retry == NULL)
        w->accept_retry = evtimer_new(w->base, accept_retry_cb, w);
    if (w->accept_retry != NULL)
        event_add(w->accept_retry, &tv);
}

static void accept_cb(evutil_socket_t fd, short what, void *arg)
{
    struct pf_worker *w = arg;

    (void)what;
    for (unsigned i = 0; i < ACCEPT_BATCH && w->accepting; i++) {
        struct sockaddr_storage ss;
        socklen_t len = sizeof(ss);
        int cfd;

        if (!budget_take(w->srv)) {
            budget_pause(w);
            return;
        }
        cfd = accept4(fd, (struct sockaddr *)&ss, &len, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (cfd == -1) {
            int err = errno;

            pf_listen_release(w->srv);
            if (err == ECONNABORTED || err == EINTR)
                continue;
            if (err != EAGAIN && err != EWOULDBLOCK)
                accept_failed(w, err);
            return;
        }
        pf_conn_accept(w, cfd, (struct sockaddr *)&ss, false);
    }
}

/* Mail: start accepting on the socket fd (arg). */
static void listen_worker_add(struct pf_worker *w, void *arg)
{
    int fd = (int)(intptr_t)arg;
    struct pf_listener *l;

    w->listeners = pf_xrealloc(w->listeners, (w->n_listeners + 1) * sizeof(*w->listeners));
    l = &w->listeners[w->n_listeners];
    l->fd = fd;
    l->ev = event_new(w->base, fd, EV_READ | EV_PERSIST, accept_cb, w);
    if (l->ev == NULL)
        pf_fatal("event_new failed");
    w->n_listeners++;
    if (w->accepting)
        event_add(l->ev, NULL);
}

static void listener_close(struct pf_listener *l)
{
    event_free(l->ev);
    close(l->fd);
}

void pf_listen_worker_remove(struct pf_worker *w, void *arg)
{
    int fd = (int)(intptr_t)arg;

    for (unsigned i = 0; i < w->n_listeners; i++) {
        if (w->listeners[i].fd == fd) {
            listener_close(&w->listeners[i]);
            w->listeners[i] = w->listeners[--w->n_listeners];
            return;
        }
    }
}

void pf_listen_worker_close_all(struct pf_worker *w)
{
    for (unsigned i = 0; i < w->n_listeners; i++)
        listener_close(&w->listeners[i]);
    w->n_listeners = 0;
}

void pf_listen_worker_free(struct pf_worker *w)
{
    free(w->listeners);
    w->listeners = NULL;
    if (w->accept_retry != NULL)
        event_free(w->accept_retry);
    w->accept_retry = NULL;
}

void pf_listen_give(struct pf_server *s, struct pf_listen_sock *ls)
{
    for (unsigned i = 0; i < s->n_workers; i++)
        pf_server_mail(&s->workers[i], listen_worker_add, (void *)(intptr_t)ls->fds[i]);
}

unsigned pf_listen_backlog(unsigned want, const char *somaxconn_path, bool *capped)
{
    FILE *f = fopen(somaxconn_path, "r");
    long max = 0;

    *capped = false;
    if (f == NULL)
        return want;
    if (fscanf(f, "%ld", &max) == 1 && max > 0 && (unsigned long)max < want) {
        want = (unsigned)max;
        *capped = true;
    }
    fclose(f);
    return want;
}

unsigned pf_listen_fd_cap(uint64_t nofile, unsigned reserved)
{
    if (nofile <= reserved + 2)
        return 1;
    return (unsigned)((nofile - reserved) / 2 > 0x7fffffff ? 0x7fffffff : (nofile - reserved) / 2);
}
