/*
 * The balancer's settings of an upstream: endpoints with weights, hash_on,
 * and the ring of ring_hash.
 *
 * The ring places each endpoint at points hashed from its address (not its
 * position in the list), weight times as many points for a weight: an
 * endpoint that leaves the list, or is out of service, moves only the keys
 * that fell on its own points.
 */
#include <stdio.h>
#include <stdlib.h>

#include <event2/buffer.h>
#include <string.h>

#include "proxy/arena.h"
#include "proxy/conf.h"
#include "proxy/syntax.h"
#include "proxy/upstream/balancer.h"

#define RING_POINTS     16384 /* points of a ring of equal weights, about */
#define RING_MAX_PER_EP 256   /* points per unit of weight, at most */
#define MAX_WEIGHT      1000

struct ep_raw {
    unsigned weight;
};

static int keep_for_later(const struct pf_conf_node *n, void *field, struct pf_err *err)
{
    (void)n;
    (void)field;
    (void)err;
    return 0;
}

static const struct pf_conf_key ep_keys[] = {
    {"address", PF_CONF_CUSTOM, 0, 0, 0, keep_for_later},
    {"weight", PF_CONF_UINT, offsetof(struct ep_raw, weight), 1, MAX_WEIGHT, NULL},
    {NULL, 0, 0, 0, 0, NULL},
};

/* One item of endpoints into a and *weight; -1 when it is wrong (reported). */
static int parse_item(const struct pf_conf_node *item, const char *what, struct pf_addr *a,
                      unsigned *weight, struct pf_err *err)
{
    const struct pf_conf_node *addr = item;
    struct ep_raw raw = {1};

    if (item->type == PF_NODE_MAP) {
        if (pf_conf_fill_section(item, what, ep_keys, &raw, err) != 0)
            return -1;
        addr = pf_conf_get(item, "address");
        if (addr == NULL) {
            pf_err_at(err, item,
                      "%s: an endpoint map needs 'address', as in {address: "
                      "\"127.0.0.1:3000\", weight: 2}",
                      what);
            return -1;
        }
    }
    *weight = raw.weight;
    return pf_conf_addr(addr, a, what, err) < 0 ? -1 : 0;
}

void pf_balancer_conf_endpoints(const struct pf_conf_node *n, const char *what,
                                struct pf_upstream_conf *u, struct pf_err *err)
{
    const struct pf_conf_node *const *items;
    unsigned n_items, k = 0;
    struct pf_addr *v;
    unsigned *wt;

    if (n->type == PF_NODE_MAP) {
        pf_err_at(err, n, "%s: expected an address or a list of addresses", what);
        return;
    }
    n_items = pf_conf_node_items(&n, &items);
    if (n_items == 0) {
        pf_err_at(err, n, "%s: must list at least one address", what);
        return;
    }
    v = pf_xcalloc(n_items, sizeof(*v));
    wt = pf_xcalloc(n_items, sizeof(*wt));
    for (unsigned i = 0; i < n_items; i++) {
        if (parse_item(items[i], what, &v[k], &wt[k], err) == 0)
            pf_conf_addr_keep_unique(items[i], what, v, &k, err);
    }
    pf_addr_list_free(u->endpoints, u->n_endpoints);
    free(u->weights);
    u->endpoints = v;
    u->weights = wt;
    u->n_endpoints = k;
}

void pf_balancer_conf_hash_on(const struct pf_conf_node *n, const char *section,
                              struct pf_upstream_conf *u, struct pf_err *err)
{
    const char *name;

    if (n->type == PF_NODE_SCALAR && strcmp(n->value, "client_ip") == 0)
        return;
    if (n->type == PF_NODE_SCALAR && strncmp(n->value, "header:", 7) == 0) {
        name = n->value + 7;
        if (pf_http_is_token(name, strlen(name))) {
            free(u->hash_header);
            u->hash_header = pf_xstrdup(name);
            return;
        }
    }
    pf_err_at(err, n, "%s.hash_on: must be client_ip or header:NAME", section);
}

static int point_cmp(const void *a, const void *b)
{
    const struct pf_ring_point *x = a, *y = b;

    if (x->hash != y->hash)
        return x->hash < y->hash ? -1 : 1;
    return x->index < y->index ? -1 : x->index > y->index; /* the same order on every build */
}

void pf_balancer_ring_build(struct pf_upstream_conf *u)
{
    unsigned total = 0, per, n = 0;
    char buf[512];

    free(u->ring);
    u->ring = NULL;
    u->n_ring = 0;
    if (u->n_endpoints == 0)
        return;
    for (unsigned i = 0; i < u->n_endpoints; i++)
        total += u->weights != NULL ? u->weights[i] : 1;
    per = RING_POINTS / total;
    per = per < 1 ? 1 : per > RING_MAX_PER_EP ? RING_MAX_PER_EP : per;
    u->ring = pf_xcalloc((size_t)total * per, sizeof(*u->ring));
    for (unsigned i = 0; i < u->n_endpoints; i++) {
        unsigned points = (u->weights != NULL ? u->weights[i] : 1) * per;

        for (unsigned j = 0; j < points; j++) {
            int len = snprintf(buf, sizeof(buf), "%s#%u", u->endpoints[i].text, j);

            u->ring[n].hash =
                pf_balancer_hash(buf, (size_t)len < sizeof(buf) ? (size_t)len : sizeof(buf) - 1);
            u->ring[n++].index = i;
        }
    }
    qsort(u->ring, n, sizeof(*u->ring), point_cmp);
    u->n_ring = n;
}

void pf_balancer_conf_free(struct pf_upstream_conf *u)
{
    free(u->weights);
    free(u->hash_header);
    free(u->ring);
    u->weights = NULL;
    u->hash_header = NULL;
    u->ring = NULL;
}

void pf_balancer_conf_json(struct evbuffer *out, const struct pf_upstream_conf *u)
{
    char ss[24];

    evbuffer_add_printf(out, ",\"weights\":[");
    for (unsigned i = 0; i < u->n_endpoints; i++)
        evbuffer_add_printf(out, "%s%u", i > 0 ? "," : "", u->weights != NULL ? u->weights[i] : 1);
    pf_conf_format_duration(u->slow_start_ms, ss, sizeof(ss));
    evbuffer_add_printf(out, "],\"slow_start\":\"%s\"", ss);
    if (u->balance == PF_BALANCE_RING_HASH)
        evbuffer_add_printf(out, ",\"hash_on\":\"%s%s\"", u->hash_header ? "header:" : "client_ip",
                            u->hash_header ? u->hash_header : "");
}
