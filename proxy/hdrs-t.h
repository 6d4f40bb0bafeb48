/*
 * Header lists: one header, a list of them, and the ids of the headers the
 * core acts on (recognised once, when a head is parsed).
 */
#ifndef PF_HDRS_T_H
#define PF_HDRS_T_H

#include <stdint.h>

/* Headers the core acts on, recognised once when a head is parsed. */
enum pf_hdr_id {
    PF_H_OTHER = 0,
    PF_H_CONNECTION,
    PF_H_KEEP_ALIVE,
    PF_H_PROXY_CONNECTION,
    PF_H_TE,
    PF_H_TRAILER,
    PF_H_TRANSFER_ENCODING,
    PF_H_UPGRADE, /* the last hop-by-hop one */
    PF_H_EXPECT,
    PF_H_CONTENT_LENGTH,
    PF_H_HOST,
    PF_H_X_FORWARDED_FOR,
    PF_H_X_FORWARDED_PROTO,
    PF_H_X_FORWARDED_HOST,
    PF_H_X_REQUEST_ID,
    PF_H_TRACEPARENT,
    PF_H_DATE,
};

#define PF_H_IS_HOP(id) ((id) >= PF_H_CONNECTION && (id) <= PF_H_UPGRADE)

/* One header; name and value are NUL-terminated. */
struct pf_hdr {
    const char *name;
    const char *value;
    uint32_t name_len;
    uint32_t value_len;
    enum pf_hdr_id id;
};

struct pf_hdrs {
    struct pf_hdr *v;
    unsigned n;
    unsigned cap;
};

#endif /* PF_HDRS_T_H */
