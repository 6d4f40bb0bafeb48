/*
 * One loop's timers in a binary min-heap. See proxy/timer.h.
 */
#include "proxy/timer.h"

#include <stdlib.h>

#include <event2/event.h>

#include "proxy/arena.h"
#include "proxy/clock.h"

static void place(struct pf_timers *q, uint32_t i, struct pf_timer *t)
{
    q->heap[i] = t;
    t->slot = i + 1;
}

static void sift_up(struct pf_timers *q, uint32_t i, struct pf_timer *t)
{
    while (i > 0) {
        uint32_t parent = (i - 1) / 2;

        if (q->heap[parent]->at_us <= t->at_us)
            break;
        place(q, i, q->heap[parent]);
        i = parent;
    }
    place(q, i, t);
}

static void sift_down(struct pf_timers *q, uint32_t i, struct pf_timer *t)
{
    for (;;) {
        uint32_t child = 2 * i + 1;

        if (child >= q->n)
            break;
        if (child + 1 < q->n && q->heap[child + 1]->at_us < q->heap[child]->at_us)
            child++;
        if (t->at_us <= q->heap[child]->at_us)
            break;
        place(q, i, q->heap[child]);
        i = child;
    }
    place(q, i, t);
}

/* The earliest timer changed: arm the event if it must fire sooner than it will. */
static void arm(struct pf_timers *q, uint64_t now)
{
    uint64_t at, left;
    struct timeval tv;

    if (q->n == 0)
        return;
    at = q->heap[0]->at_us;
    if (q->ev_at_us != 0 && q->ev_at_us <= at)
        return; /* it fires first and finds nothing due, or this: lazy */
    left = at > now ? at - now : 0;
    tv.tv_sec = (time_t)(left / 1000000);
    tv.tv_usec = (suseconds_t)(left % 1000000);
    event_add(&q->ev, &tv);
    q->ev_at_us = at;
}

static void timers_cb(evutil_socket_t fd, short what, void *arg)
{
    struct pf_timers *q = arg;

    (void)fd;
    (void)what;
    q->ev_at_us = 0;
    pf_timers_run(q, pf_now_us());
}

void pf_timers_init(struct pf_timers *q, struct event_base *base)
{
    event_assign(&q->ev, base, -1, 0, timers_cb, q);
    q->ev_at_us = 0;
    q->heap = NULL;
    q->n = 0;
    q->cap = 0;
}

void pf_timers_fini(struct pf_timers *q)
{
    for (uint32_t i = 0; i < q->n; i++)
        q->heap[i]->slot = 0;
    if (q->ev_at_us != 0)
        event_del(&q->ev);
    q->ev_at_us = 0;
    free(q->heap);
    q->heap = NULL;
    q->n = 0;
    q->cap = 0;
}

void pf_timers_run(struct pf_timers *q, uint64_t now)
{
    /*
     * A callback may add or remove timers: the heap's top is read again each
     * time. At most as many run as were in the heap: one that a callback armed
     * again for now runs at the next turn of the loop, not in a busy loop here.
     */
    for (uint32_t budget = q->n; budget > 0 && q->n > 0 && q->heap[0]->at_us <= now; budget--) {
        struct pf_timer *t = q->heap[0];

        pf_timer_del(q, t);
        t->cb(t);
    }
    arm(q, now);
}

void pf_timer_init(struct pf_timer *t, pf_timer_cb cb)
{
    t->at_us = 0;
    t->slot = 0;
    t->cb = cb;
}

void pf_timer_add(struct pf_timers *q, struct pf_timer *t, uint64_t at_us)
{
    if (at_us == 0)
        at_us = 1; /* 0 means not armed */
    if (t->slot != 0) {
        uint64_t old = t->at_us;

        t->at_us = at_us;
        if (at_us < old)
            sift_up(q, t->slot - 1, t);
        else
            sift_down(q, t->slot - 1, t);
    } else {
        if (q->n == q->cap) {
            q->cap = q->cap != 0 ? q->cap * 2 : 64;
            q->heap = pf_xrealloc(q->heap, q->cap * sizeof(*q->heap));
        }
        t->at_us = at_us;
        q->n++;
        sift_up(q, q->n - 1, t);
    }
    if (q->heap[0] == t)
        arm(q, pf_now_us());
}

void pf_timer_del(struct pf_timers *q, struct pf_timer *t)
{
    uint32_t i = t->slot - 1;
    struct pf_timer *last;

    t->at_us = 0;
    if (t->slot == 0 || t->slot > q->n || q->heap[i] != t) {
        t->slot = 0;
        return;
    }
    t->slot = 0;
    last = q->heap[--q->n];
    if (last == t)
        return;
    /* the last timer fills the hole, then finds its place either way */
    if (i > 0 && last->at_us < q->heap[(i - 1) / 2]->at_us)
        sift_up(q, i, last);
    else
        sift_down(q, i, last);
}
