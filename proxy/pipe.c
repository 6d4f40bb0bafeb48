/*
 * Pipe pools for splice(2) and the splice counters. See proxy/pipe.h.
 */
#include "proxy/pipe.h"

#include <fcntl.h>
#include <stdlib.h>
#include <unistd.h>

#include "proxy/arena.h"
#include "proxy/stats.h"

static struct pf_counter_set counters = PF_COUNTER_SET(PF_SPLICE_N);
static __thread _Atomic uint64_t *cells;

struct pf_pipes *pf_pipes_new(unsigned max, size_t size)
{
    struct pf_pipes *pp = pf_xcalloc(1, sizeof(*pp));

    pp->max = max;
    pp->size = size;
    return pp;
}

static void pipe_close(struct pf_pipe *p)
{
    close(p->rd);
    close(p->wr);
    free(p);
}

struct pf_pipe *pf_pipes_get(struct pf_pipes *pp)
{
    struct pf_pipe *p;
    int fds[2];
    int cap;

    if (pp->n_used >= pp->max)
        return NULL;
    if (pp->n_idle > 0) {
        pp->n_used++;
        return pp->idle[--pp->n_idle];
    }
    if (pipe2(fds, O_NONBLOCK | O_CLOEXEC) == -1)
        return NULL; /* out of descriptors: the body is copied */
    /* a bigger pipe means fewer splice calls; the kernel may refuse (pipe-user-pages-soft) */
    if (pp->size > 0)
        (void)fcntl(fds[1], F_SETPIPE_SZ, (int)pp->size);
    cap = fcntl(fds[1], F_GETPIPE_SZ);
    p = pf_xcalloc(1, sizeof(*p));
    p->rd = fds[0];
    p->wr = fds[1];
    p->cap = cap > 0 ? (size_t)cap : 65536;
    pp->n_used++;
    return p;
}

void pf_pipes_put(struct pf_pipes *pp, struct pf_pipe *p)
{
    pp->n_used--;
    if (p->len > 0 || pp->n_idle == PF_PIPES_KEEP) {
        pipe_close(p);
        return;
    }
    pp->idle[pp->n_idle++] = p;
}

void pf_pipes_free(struct pf_pipes *pp)
{
    if (pp == NULL)
        return;
    while (pp->n_idle > 0)
        pipe_close(pp->idle[--pp->n_idle]);
    free(pp);
}

void pf_splice_count(unsigned which, uint64_t n)
{
    if (cells == NULL)
        cells = pf_counter_cells(&counters);
    pf_counter_add(&cells[which], n);
}

void pf_splice_render(struct evbuffer *out)
{
    pf_stats_put_one(out, "pilotfish_splice_responses_total", "counter",
                     "Response bodies moved upstream socket to client socket with splice.",
                     pf_counter_sum(&counters, PF_SPLICE_RESPONSES));
    pf_stats_put_one(out, "pilotfish_splice_bytes_total", "counter",
                     "Response body bytes moved with splice.",
                     pf_counter_sum(&counters, PF_SPLICE_BYTES));
    pf_stats_put_one(out, "pilotfish_splice_no_pipe_total", "counter",
                     "Bodies (responses and requests) copied instead because no pipe could be had.",
                     pf_counter_sum(&counters, PF_SPLICE_NO_PIPE));
    pf_stats_put_one(out, "pilotfish_splice_requests_total", "counter",
                     "Request bodies moved client socket to upstream socket with splice.",
                     pf_counter_sum(&counters, PF_SPLICE_REQUESTS));
    pf_stats_put_one(out, "pilotfish_splice_request_bytes_total", "counter",
                     "Request body bytes moved with splice.",
                     pf_counter_sum(&counters, PF_SPLICE_REQ_BYTES));
}
