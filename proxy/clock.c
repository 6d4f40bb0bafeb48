/*
 * The monotonic clock of the data path.
 */
#include "proxy/clock.h"

#include <time.h>

uint64_t pf_clock_fixed_us;

uint64_t pf_now_us(void)
{
    struct timespec ts;

    if (pf_clock_fixed_us != 0)
        return pf_clock_fixed_us;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}
