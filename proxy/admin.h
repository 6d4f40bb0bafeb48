/*
 * The admin API (docs/operations.md), served by the same HTTP engine on its own listener
 * and on the main thread.
 */
#ifndef PF_ADMIN_H
#define PF_ADMIN_H

#include "proxy/core.h"

/* Answer admin request tx with pf_tx_reply() (its body is in tx->req_buf). */
void pf_admin_handle(struct pf_tx *tx);

/*
 * At the end of the request head, before any body is read: false when the
 * request is refused (401/403, the reply is set), so that an unauthorized
 * client cannot make pilotfish read and buffer a body.
 */
bool pf_admin_head_ok(struct pf_tx *tx);

/* given[0..given_len) equals token, in a time that depends only on the token's length. */
bool pf_admin_token_equal(const char *given, size_t given_len, const char *token);

#endif /* PF_ADMIN_H */
