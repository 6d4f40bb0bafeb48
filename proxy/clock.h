/*
 * The monotonic clock of the data path (pf_now_us(), declared in
 * proxy/filter.h), which tests can fix. Any thread.
 */
#ifndef PF_CLOCK_H
#define PF_CLOCK_H

#include <stdint.h>

/* Microseconds of CLOCK_MONOTONIC (or pf_clock_fixed_us when set). */
uint64_t pf_now_us(void);

/* Tests only: when non-zero, pf_now_us() returns this instead of the clock. */
extern uint64_t pf_clock_fixed_us;

#endif /* PF_CLOCK_H */
