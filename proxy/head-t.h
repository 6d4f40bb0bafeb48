/*
 * A message head being assembled (proxy/head.c). Worker thread.
 */
#ifndef PF_HEAD_T_H
#define PF_HEAD_T_H

#include <stdbool.h>
#include <stdint.h>

/*
 * A message head kept across TCP reads: either assembled from pieces of
 * names and values (pf_head_append), or the raw bytes of a response head
 * (pf_head_put_raw) that h1parse.c then reads in place. Names and values end
 * up NUL-terminated in buf; offsets stay valid while it grows.
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
        uint8_t id; /* enum pf_hdr_id, when parsed */
    } * ent;
    unsigned n; /* headers started */
    unsigned cap_ent;
    uint8_t last; /* 0 none, 1 url, 2 field, 3 value */
    bool parsed;  /* buf is a raw head read in place (pf_head_put_raw, h1parse.c): ent ids set */
};

#endif /* PF_HEAD_T_H */
