/*
 * A message head being assembled (proxy/head.c). Worker thread.
 */
#ifndef PF_HEAD_T_H
#define PF_HEAD_T_H

#include <stdint.h>

/*
 * Incremental assembly of a message head from http-parser callbacks, which
 * may deliver a name or value in several pieces across TCP reads. Names and
 * values are stored NUL-terminated in buf; offsets stay valid while it grows.
 */
struct pf_head {
    char *buf; /* url \0 name \0 value \0 ... */
    uint32_t len;
    uint32_t cap;
    uint32_t url_len;
    struct pf_head_ent {
        uint32_t name_off;
        uint32_t name_len;
        uint32_t value_off;
        uint32_t value_len;
    } * ent;
    unsigned n; /* headers started */
    unsigned cap_ent;
    uint8_t last; /* 0 none, 1 url, 2 field, 3 value */
};

#endif /* PF_HEAD_T_H */
