/*
 * The monotonic clock of the data path.
 */
#include "proxy/clock.h"

#include <time.h>

uint64_t pf_clock_fixed_us;

/*
 * The time of the callback this thread is in (0: none holds it). A socket
 * read leads to a dozen clock reads on the way (timeouts re-armed, pool and
 * breaker bookkeeping, the pick, the transaction's start): they all take the
 * callback's time, which is off by no more than the callback's own run.
 */
static __thread uint64_t held_us;
static __thread unsigned held_depth;

uint64_t pf_clock_read_us(void)
{
    struct timespec ts;

    if (pf_clock_fixed_us != 0)
        return pf_clock_fixed_us;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

uint64_t pf_now_us(void)
{
    if (held_us != 0 && pf_clock_fixed_us == 0)
        return held_us;
    return pf_clock_read_us();
}

void pf_clock_hold(void)
{
    if (held_depth++ == 0)
        held_us = pf_clock_read_us();
}

void pf_clock_release(void)
{
    if (held_depth > 0 && --held_depth == 0)
        held_us = 0;
}
