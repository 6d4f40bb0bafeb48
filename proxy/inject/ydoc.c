/*
 * Helpers over a libyaml document for pilotfish inject (ydoc.h).
 */
#include "proxy/inject/ydoc.h"

#include <stdlib.h>
#include <string.h>

#include "proxy/arena.h"
#include "proxy/log.h"

yaml_node_t *pf_y_node(yaml_document_t *d, int id)
{
    return id > 0 ? yaml_document_get_node(d, id) : NULL;
}

const char *pf_y_str(yaml_document_t *d, int id)
{
    yaml_node_t *n = pf_y_node(d, id);

    return n != NULL && n->type == YAML_SCALAR_NODE ? (const char *)n->data.scalar.value : NULL;
}

bool pf_y_is(yaml_document_t *d, int id, yaml_node_type_t t)
{
    yaml_node_t *n = pf_y_node(d, id);

    return n != NULL && n->type == t;
}

/* key in map, looking into "<<" merges (a mapping or a sequence of them) when allowed */
static int get(yaml_document_t *d, int map, const char *key, int depth)
{
    yaml_node_t *m = pf_y_node(d, map);
    int merge = 0;

    if (m == NULL || m->type != YAML_MAPPING_NODE || depth > 8)
        return 0;
    for (yaml_node_pair_t *p = m->data.mapping.pairs.start; p < m->data.mapping.pairs.top; p++) {
        const char *k = pf_y_str(d, p->key);

        if (k != NULL && strcmp(k, key) == 0)
            return p->value;
        if (k != NULL && strcmp(k, "<<") == 0)
            merge = p->value;
    }
    if (pf_y_is(d, merge, YAML_MAPPING_NODE))
        return get(d, merge, key, depth + 1);
    for (int i = 0; i < pf_y_len(d, merge); i++) {
        int v = get(d, pf_y_at(d, merge, i), key, depth + 1);

        if (v != 0)
            return v;
    }
    return 0;
}

int pf_y_get(yaml_document_t *d, int map, const char *key)
{
    return get(d, map, key, 0);
}

int pf_y_path(yaml_document_t *d, int map, const char *const *keys)
{
    for (; *keys != NULL && map != 0; keys++)
        map = pf_y_get(d, map, *keys);
    return map;
}

int pf_y_scalar(yaml_document_t *d, const char *value, yaml_scalar_style_t style)
{
    int id = yaml_document_add_scalar(d, NULL, (yaml_char_t *)value, (int)strlen(value), style);

    if (id == 0)
        pf_fatal("out of memory (yaml)");
    return id;
}

int pf_y_map(yaml_document_t *d)
{
    int id = yaml_document_add_mapping(d, NULL, YAML_BLOCK_MAPPING_STYLE);

    if (id == 0)
        pf_fatal("out of memory (yaml)");
    return id;
}

int pf_y_seq(yaml_document_t *d)
{
    int id = yaml_document_add_sequence(d, NULL, YAML_BLOCK_SEQUENCE_STYLE);

    if (id == 0)
        pf_fatal("out of memory (yaml)");
    return id;
}

void pf_y_set(yaml_document_t *d, int map, const char *key, int value)
{
    yaml_node_t *m = pf_y_node(d, map);
    int k;

    for (yaml_node_pair_t *p = m->data.mapping.pairs.start; p < m->data.mapping.pairs.top; p++) {
        const char *s = pf_y_str(d, p->key);

        if (s != NULL && strcmp(s, key) == 0) {
            p->value = value;
            return;
        }
    }
    k = pf_y_scalar(d, key, YAML_PLAIN_SCALAR_STYLE);
    if (!yaml_document_append_mapping_pair(d, map, k, value))
        pf_fatal("out of memory (yaml)");
}

int pf_y_want(yaml_document_t *d, int map, const char *key, yaml_node_type_t t)
{
    int v = pf_y_get(d, map, key);
    const char *s = pf_y_str(d, v);

    /* "key:" or "key: null" is as good as absent */
    if (v == 0 || (s != NULL && (s[0] == '\0' || strcmp(s, "null") == 0 || strcmp(s, "~") == 0))) {
        v = t == YAML_MAPPING_NODE ? pf_y_map(d) : pf_y_seq(d);
        pf_y_set(d, map, key, v);
        return v;
    }
    return pf_y_is(d, v, t) ? v : 0;
}

void pf_y_push(yaml_document_t *d, int seq, int item, bool first)
{
    yaml_node_t *s;
    size_t n;

    if (!yaml_document_append_sequence_item(d, seq, item))
        pf_fatal("out of memory (yaml)");
    if (!first)
        return;
    s = pf_y_node(d, seq);
    n = (size_t)(s->data.sequence.items.top - s->data.sequence.items.start);
    memmove(s->data.sequence.items.start + 1, s->data.sequence.items.start,
            (n - 1) * sizeof(yaml_node_item_t));
    s->data.sequence.items.start[0] = item;
}

int pf_y_len(yaml_document_t *d, int seq)
{
    yaml_node_t *s = pf_y_node(d, seq);

    if (s == NULL || s->type != YAML_SEQUENCE_NODE)
        return 0;
    return (int)(s->data.sequence.items.top - s->data.sequence.items.start);
}

int pf_y_at(yaml_document_t *d, int seq, int i)
{
    if (i < 0 || i >= pf_y_len(d, seq))
        return 0;
    return pf_y_node(d, seq)->data.sequence.items.start[i];
}

int pf_y_named(yaml_document_t *d, int seq, const char *name)
{
    for (int i = 0; i < pf_y_len(d, seq); i++) {
        const char *n = pf_y_str(d, pf_y_get(d, pf_y_at(d, seq, i), "name"));

        if (n != NULL && strcmp(n, name) == 0)
            return pf_y_at(d, seq, i);
    }
    return 0;
}

void pf_y_set_str(yaml_document_t *d, int id, const char *value)
{
    yaml_node_t *n = pf_y_node(d, id);
    size_t len = strlen(value);
    yaml_char_t *v = (yaml_char_t *)pf_xmalloc(len + 1);

    memcpy(v, value, len + 1);
    /* the document frees its scalars with yaml_free, which is free() */
    free(n->data.scalar.value);
    n->data.scalar.value = v;
    n->data.scalar.length = len;
}

int pf_y_copy(yaml_document_t *dst, yaml_document_t *src, int id)
{
    yaml_node_t *n = pf_y_node(src, id);
    int out;

    if (n->type == YAML_SCALAR_NODE)
        return pf_y_scalar(dst, (const char *)n->data.scalar.value, n->data.scalar.style);
    if (n->type == YAML_SEQUENCE_NODE) {
        out = pf_y_seq(dst);
        for (int i = 0; i < pf_y_len(src, id); i++)
            pf_y_push(dst, out, pf_y_copy(dst, src, pf_y_at(src, id, i)), false);
        return out;
    }
    out = pf_y_map(dst);
    for (int i = 0;; i++) {
        yaml_node_pair_t *p = pf_y_node(src, id)->data.mapping.pairs.start + i;
        int k, v;

        if (p >= pf_y_node(src, id)->data.mapping.pairs.top)
            break;
        k = pf_y_copy(dst, src, p->key);
        p = pf_y_node(src, id)->data.mapping.pairs.start + i;
        v = pf_y_copy(dst, src, p->value);
        if (!yaml_document_append_mapping_pair(dst, out, k, v))
            pf_fatal("out of memory (yaml)");
    }
    return out;
}
