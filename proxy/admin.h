/*
 * The admin API (docs/operations.md), served by the same HTTP engine on its own listener
 * and on the main thread.
 */
#ifndef PF_ADMIN_H
#define PF_ADMIN_H

#include "proxy/core.h"

/* Answer admin request tx with pf_tx_reply() (its body is in tx->req_buf). */
void pf_admin_handle(struct pf_tx *tx);

#endif /* PF_ADMIN_H */
