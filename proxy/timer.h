/*
 * Timers of one event loop kept in a binary min-heap under a single libevent
 * timer, armed for the earliest of them.
 *
 * A pf_timer is 24 bytes where a struct event is 128: every client
 * connection holds one for its header, body or idle timeout, so an idle
 * keep-alive connection is that much smaller. Moving a timer later (the
 * idle timeout of the next wait) is a sift in the heap; the libevent timer
 * is re-armed only when the earliest timer moves earlier. Worker thread only.
 */
#ifndef PF_TIMER_H
#define PF_TIMER_H

#include <stdbool.h>
#include <stdint.h>

#include <event2/event_struct.h>

struct event_base;
struct pf_timer;

typedef void (*pf_timer_cb)(struct pf_timer *t);

struct pf_timer {
    uint64_t at_us; /* when it fires (pf_now_us() time); 0: not armed */
    uint32_t slot;  /* index in the heap + 1; 0: not in it */
    pf_timer_cb cb;
};

struct pf_timers {
    struct event ev;   /* fires at ev_at_us for the earliest timer */
    uint64_t ev_at_us; /* 0: not armed */
    struct pf_timer **heap;
    uint32_t n;
    uint32_t cap;
};

void pf_timers_init(struct pf_timers *q, struct event_base *base);

/* The loop has stopped: drop the heap (timers still in it are forgotten). */
void pf_timers_fini(struct pf_timers *q);

/* Timers in the heap (tests, debugging). */
static inline uint32_t pf_timers_count(const struct pf_timers *q)
{
    return q->n;
}

/* Run the timers due at now, then arm the event for the next (the event's callback). */
void pf_timers_run(struct pf_timers *q, uint64_t now);

void pf_timer_init(struct pf_timer *t, pf_timer_cb cb);

/* Arm t for at_us, or move it there if armed. */
void pf_timer_add(struct pf_timers *q, struct pf_timer *t, uint64_t at_us);

/* Disarm t (a no-op if it is not armed). */
void pf_timer_del(struct pf_timers *q, struct pf_timer *t);

static inline bool pf_timer_pending(const struct pf_timer *t)
{
    return t->slot != 0;
}

#endif /* PF_TIMER_H */
