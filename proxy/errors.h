/*
 * The table of error codes (enum pf_error in proxy/errors-t.h): name, default
 * status and counter of each. Any thread (the table is constant).
 */
#ifndef PF_ERRORS_H
#define PF_ERRORS_H

#include <stdbool.h>

#include "proxy/errors-t.h"

struct pf_worker;

/* The code's name ("bad_request"), as in docs/operations.md and the access log. */
const char *pf_error_name(enum pf_error e);

/* The status pilotfish answers e with when nothing more precise applies. */
int pf_error_status(enum pf_error e);

/* Whether e has its own pilotfish_errors_total series (others count as other). */
bool pf_error_has_series(enum pf_error e);

/* Count e in w's pilotfish_errors_total (PF_ERR_NONE and client_abort are not counted). */
void pf_error_count(struct pf_worker *w, enum pf_error e);

/* The error of an upstream attempt's outcome (enum pf_outcome; OK gives other). */
enum pf_error pf_error_of_outcome(int outcome);

#endif /* PF_ERRORS_H */
