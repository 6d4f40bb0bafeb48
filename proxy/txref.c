/*
 * References to paused transactions (pf_tx_ref in proxy/filter.h).
 *
 * Each worker keeps a table of slots that lives as long as the worker. A
 * transaction takes a slot the first time a filter asks for a reference and
 * gives it back when it is freed, bumping the slot's generation. A reference
 * is (worker, slot, generation): it finds its transaction only while the
 * generations match, so a waiter that wakes after an abort finds nothing
 * instead of freed memory. Worker thread only, no locks.
 */
#include <stdint.h>
#include <stdlib.h>

#include "proxy/arena.h"
#include "proxy/core.h"
#include "proxy/tx.h"

struct pf_tx_ref pf_tx_ref(struct pf_tx *tx)
{
    struct pf_worker *w = tx->w;
    struct pf_txref_slot *s;
    uint32_t i;

    if (tx->ref_slot != 0) {
        i = tx->ref_slot - 1;
        return (struct pf_tx_ref){w, i, w->txrefs[i].gen};
    }
    if (w->txref_free != 0) {
        i = w->txref_free - 1;
        w->txref_free = w->txrefs[i].next_free;
    } else {
        if (w->n_txrefs == w->cap_txrefs) {
            w->cap_txrefs = w->cap_txrefs ? 2 * w->cap_txrefs : 64;
            w->txrefs = pf_xrealloc(w->txrefs, w->cap_txrefs * sizeof(*w->txrefs));
        }
        i = w->n_txrefs++;
        w->txrefs[i].gen = 1; /* a zeroed pf_tx_ref (generation 0) never matches */
    }
    s = &w->txrefs[i];
    s->tx = tx;
    s->next_free = 0;
    tx->ref_slot = i + 1;
    return (struct pf_tx_ref){w, i, s->gen};
}

struct pf_tx *pf_tx_deref(struct pf_tx_ref r)
{
    const struct pf_txref_slot *s;

    if (r.w == NULL || r.slot >= r.w->n_txrefs)
        return NULL;
    s = &r.w->txrefs[r.slot];
    return s->gen == r.gen ? s->tx : NULL;
}

void pf_txref_release(struct pf_tx *tx)
{
    struct pf_worker *w = tx->w;
    struct pf_txref_slot *s;

    if (tx->ref_slot == 0)
        return;
    s = &w->txrefs[tx->ref_slot - 1];
    s->tx = NULL;
    if (++s->gen == 0)
        s->gen = 1;
    s->next_free = w->txref_free;
    w->txref_free = tx->ref_slot;
    tx->ref_slot = 0;
}

void pf_txref_fini(struct pf_worker *w)
{
    free(w->txrefs);
    w->txrefs = NULL;
    w->n_txrefs = w->cap_txrefs = 0;
    w->txref_free = 0;
}
