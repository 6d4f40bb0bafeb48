/*
 * Helpers over a libyaml document (yaml_document_t) for pilotfish inject.
 * Nodes are named by index, never by pointer: adding a node may move them all.
 */
#ifndef PF_YDOC_H
#define PF_YDOC_H

#include <stdbool.h>

#include <yaml.h>

/* The node at index id, or NULL for 0 and out of range. */
yaml_node_t *pf_y_node(yaml_document_t *d, int id);

/* The scalar value of node id, or NULL when it is not a scalar. */
const char *pf_y_str(yaml_document_t *d, int id);

/* Node id's type is t. */
bool pf_y_is(yaml_document_t *d, int id, yaml_node_type_t t);

/* The value of key in mapping map (also through "<<" merge keys), or 0. */
int pf_y_get(yaml_document_t *d, int map, const char *key);

/* The value at a path of keys ("spec", "template", NULL-terminated), or 0. */
int pf_y_path(yaml_document_t *d, int map, const char *const *keys);

/* A new plain or quoted scalar; a new empty block mapping or sequence. */
int pf_y_scalar(yaml_document_t *d, const char *value, yaml_scalar_style_t style);
int pf_y_map(yaml_document_t *d);
int pf_y_seq(yaml_document_t *d);

/* Set key in map to value: replaces the value in place, else appends the pair. */
void pf_y_set(yaml_document_t *d, int map, const char *key, int value);

/* The value of key in map, added as a new empty mapping/sequence when absent; 0 on a type clash. */
int pf_y_want(yaml_document_t *d, int map, const char *key, yaml_node_type_t t);

/* Add item at the start (first) or the end of sequence seq. */
void pf_y_push(yaml_document_t *d, int seq, int item, bool first);

/* Number of items of sequence seq and the item at index i (0 when out of range). */
int pf_y_len(yaml_document_t *d, int seq);
int pf_y_at(yaml_document_t *d, int seq, int i);

/* The item of sequence seq whose "name" is name, or 0. */
int pf_y_named(yaml_document_t *d, int seq, const char *name);

/* Replace scalar id's value (the style stays). */
void pf_y_set_str(yaml_document_t *d, int id, const char *value);

/* Copy node id of src (and everything under it) into dst; the index in dst. */
int pf_y_copy(yaml_document_t *dst, yaml_document_t *src, int id);

#endif /* PF_YDOC_H */
