/*
 * The admin API (docs/operations.md), served by the same HTTP engine on its own listener
 * and on the main thread.
 */
#ifndef PF_ADMIN_H
#define PF_ADMIN_H

#include <stdbool.h>
#include <stddef.h>

struct evbuffer;
struct pf_server;
struct pf_tx;

/* Admin request bodies up to this size are read; a bigger one is discarded. */
#define PF_ADMIN_BODY_MAX (1024 * 1024)

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

/* GET /dashboard: the page (proxy/dashboard.html), NUL-terminated (proxy/admin_dash.c). */
const char *pf_admin_dashboard(void);

/* GET /stats: every sample of /metrics as JSON, {"time": s, "samples": [[name, {labels},
 * value], ...]} (proxy/admin_dash.c). Main thread. */
void pf_admin_stats_json(struct pf_server *s, struct evbuffer *out);

/*
 * The methods path answers ("GET, HEAD", "POST") when it is a known admin
 * endpoint, else NULL. Filters' POST endpoints (/cache/purge) count.
 */
const char *pf_admin_allow(const char *path);

#endif /* PF_ADMIN_H */
