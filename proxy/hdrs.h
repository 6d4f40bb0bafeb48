/*
 * Header lists (proxy/hdrs-t.h): lookups, arena-backed additions, removal.
 * Worker thread (the list's arena).
 */
#ifndef PF_HDRS_H
#define PF_HDRS_H

#include <stddef.h>

#include "proxy/hdrs-t.h"

struct pf_arena;

/* First value of header name (case-insensitive), or NULL. */
const char *pf_hdrs_get(const struct pf_hdrs *h, const char *name);
/* First value of the header recognised as id (faster than by name). */
const char *pf_hdrs_get_id(const struct pf_hdrs *h, enum pf_hdr_id id);
/* Which known header name[0..len) is (PF_H_OTHER when none). */
enum pf_hdr_id pf_hdr_classify(const char *name, size_t len);
/* Append a copy of name: value (copied into a), classified. */
void pf_hdrs_add(struct pf_arena *a, struct pf_hdrs *h, const char *name, const char *value);
/* Append name: value as they are (not copied: they must outlive the list), classified. */
void pf_hdrs_add_ref(struct pf_arena *a, struct pf_hdrs *h, const char *name, size_t name_len,
                     const char *value, size_t value_len);
/* Append n entries as they are (classified already; their strings must outlive the list). */
void pf_hdrs_add_many(struct pf_arena *a, struct pf_hdrs *h, const struct pf_hdr *v, unsigned n);
/* Remove every header called name, keeping the order of the others. */
void pf_hdrs_del(struct pf_hdrs *h, const char *name);

#endif /* PF_HDRS_H */
