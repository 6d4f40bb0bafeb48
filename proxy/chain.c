/*
 * The filter chain. See proxy/filter.h for the contract and docs/HACKING.md.
 */
#include "proxy/chain.h"

#include <event2/buffer.h>

#include "proxy/arena.h"
#include "proxy/log.h"

static const struct pf_filter_ops *chain_ops(const struct pf_tx *tx, unsigned i)
{
    return tx->cfg->filters[tx->route->filters[i]].ops;
}

void pf_chain_init(struct pf_tx *tx)
{
    const struct pf_route *r = tx->route;

    tx->n_filters = r->n_filters;
    if (r->n_filters == 0)
        return;
    tx->slots = pf_arena_alloc(tx->arena, sizeof(*tx->slots) * r->n_filters);
    tx->slot_state = pf_arena_alloc(tx->arena, r->n_filters); /* zeroed: PF_SLOT_IDLE */
    for (unsigned i = 0; i < r->n_filters; i++) {
        unsigned k = r->filters[i];
        const struct pf_filter_ops *ops = tx->cfg->filters[k].ops;

        tx->slots[i].conf = tx->cfg->filters[k].conf;
        tx->slots[i].wstate = tx->wc->wstates[k];
        tx->slots[i].pstate = tx->cfg->filters[k].pstate;
        if (ops->ctx_size > 0)
            tx->slots[i].ctx = pf_arena_alloc(tx->arena, ops->ctx_size);
        if (ops->on_body != NULL)
            tx->has_body_filters = true;
    }
}

static enum pf_verdict chain_request(struct pf_tx *tx);

enum pf_verdict pf_chain_request(struct pf_tx *tx)
{
    enum pf_verdict v = chain_request(tx);

    tx->in_chain = false;
    tx->resume_pending = false; /* a resume followed by a verdict other than PAUSED */
    return v;
}

static enum pf_verdict chain_request(struct pf_tx *tx)
{
    tx->in_chain = true;
    while (tx->next_filter < tx->n_filters) {
        unsigned i = tx->next_filter;
        const struct pf_filter_ops *ops = chain_ops(tx, i);
        enum pf_verdict v = PF_NEXT;

        if (tx->n_ran <= i)
            tx->n_ran = i + 1;
        tx->next_filter = i + 1;
        if (tx->slot_state[i] == PF_SLOT_IDLE)
            tx->slot_state[i] = PF_SLOT_REQUEST;
        if (ops->on_request != NULL)
            v = ops->on_request(tx, &tx->slots[i]);
        switch (v) {
        case PF_NEXT:
            continue;
        case PF_PAUSED:
            if (tx->resume_pending) {
                /* the filter resumed before returning: take its verdict now */
                tx->resume_pending = false;
                v = tx->resume_verdict;
                if (v == PF_NEXT)
                    continue;
                if (v != PF_PAUSED) {
                    if (v == PF_FAILED)
                        pf_log(PF_LOG_ERR, "filter %s failed on request", ops->name);
                    tx->out_from = i;
                    return v;
                }
            }
            tx->next_filter = i; /* the resume verdict decides */
            return PF_PAUSED;
        case PF_REPLIED:
        case PF_FAILED:
            if (v == PF_FAILED)
                pf_log(PF_LOG_ERR, "filter %s failed on request", ops->name);
            tx->out_from = i;
            return v;
        }
    }
    tx->out_from = tx->n_filters;
    return PF_NEXT;
}

enum pf_verdict pf_chain_response(struct pf_tx *tx)
{
    tx->has_body_filters = false;
    for (unsigned i = tx->out_from; i-- > 0;) {
        const struct pf_filter_ops *ops = chain_ops(tx, i);

        if (tx->slot_state[i] != PF_SLOT_REQUEST)
            continue;
        if (ops->on_response != NULL && ops->on_response(tx, &tx->slots[i]) == PF_FAILED) {
            pf_log(PF_LOG_ERR, "filter %s failed on response", ops->name);
            return PF_FAILED;
        }
        tx->slot_state[i] = PF_SLOT_RESPONSE;
        /* when no filter wants this body it goes to the client without the chain */
        if (ops->on_body != NULL && !tx->slots[i].skip_body)
            tx->has_body_filters = true;
    }
    return PF_NEXT;
}

enum pf_verdict pf_chain_body(struct pf_tx *tx, struct evbuffer *data, bool eos,
                              struct evbuffer **out)
{
    struct evbuffer *in = tx->body_a;
    struct evbuffer *next = tx->body_b;

    if (data != NULL)
        evbuffer_add_buffer(in, data);
    for (unsigned i = tx->out_from; i-- > 0;) {
        const struct pf_filter_ops *ops = chain_ops(tx, i);
        struct pf_body b = {in, next, eos};
        struct evbuffer *t;

        if (ops->on_body == NULL || tx->slots[i].skip_body || tx->slot_state[i] != PF_SLOT_RESPONSE)
            continue;
        if (ops->on_body(tx, &tx->slots[i], &b) == PF_FAILED) {
            pf_log(PF_LOG_ERR, "filter %s failed on body", ops->name);
            return PF_FAILED;
        }
        if (evbuffer_get_length(in) != 0) {
            /* the contract: a filter consumes all of in and keeps its own state */
            pf_log(PF_LOG_ERR, "filter %s left body bytes unread", ops->name);
            return PF_FAILED;
        }
        t = in;
        in = next;
        next = t;
    }
    *out = in;
    return PF_NEXT;
}

void pf_chain_done(struct pf_tx *tx)
{
    for (unsigned i = tx->n_ran; i-- > 0;) {
        const struct pf_filter_ops *ops = chain_ops(tx, i);

        if (tx->slot_state[i] == PF_SLOT_IDLE || tx->slot_state[i] == PF_SLOT_DONE)
            continue;
        tx->slot_state[i] = PF_SLOT_DONE; /* before the call: on_done never runs twice */
        if (ops->on_done != NULL)
            ops->on_done(tx, &tx->slots[i]);
    }
}
