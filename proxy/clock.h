/*
 * The monotonic clock of the data path (pf_now_us(), declared in
 * proxy/filter.h), which tests can fix. Any thread.
 */
#ifndef PF_CLOCK_H
#define PF_CLOCK_H

#include <stdint.h>

/*
 * Microseconds of CLOCK_MONOTONIC (or pf_clock_fixed_us when set); between
 * pf_clock_hold() and pf_clock_release() on this thread, the time read by
 * the outermost pf_clock_hold().
 */
uint64_t pf_now_us(void);

/* A fresh read of the clock, held or not: for the end of a measured duration. */
uint64_t pf_clock_read_us(void);

/* Read the clock once for the callback that starts here (nests; pair each). */
void pf_clock_hold(void);
void pf_clock_release(void);

/* Tests only: when non-zero, pf_now_us() returns this instead of the clock. */
extern uint64_t pf_clock_fixed_us;

#endif /* PF_CLOCK_H */
