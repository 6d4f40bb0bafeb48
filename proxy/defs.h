/*
 * Small macros of the whole tree.
 */
#ifndef PF_DEFS_H
#define PF_DEFS_H

/* Number of elements of array a (an array, not a pointer). */
#define PF_COUNTOF(a) (sizeof(a) / sizeof((a)[0]))

#endif /* PF_DEFS_H */
