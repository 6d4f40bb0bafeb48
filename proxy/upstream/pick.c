/*
 * Choosing the endpoint of an attempt: the balancer's candidates (in
 * service by health and circuit) and the breaker's admission together, and
 * which error to answer when none is left.
 */
#include <stdatomic.h>
#include <string.h>

#include "proxy/clock.h"
#include "proxy/tx.h"
#include "proxy/upstream/balancer.h"
#include "proxy/upstream/breaker.h"
#include "proxy/upstream/health.h"
#include "proxy/upstream/upstream.h"

/* Health checks let ep serve: healthy, or found unhealthy when panic may use it. */
bool pf_upstream_health_lets_serve(const struct pf_upstream_conf *up, const struct pf_endpoint *ep)
{
    return pf_health_serving(&up->health, ep) ||
           (up->health.panic &&
            atomic_load_explicit(&ep->health, memory_order_relaxed) == PF_HEALTH_UNHEALTHY);
}

/*
 * Whether some endpoint of up that health checks would let serve (healthy,
 * or found unhealthy when panic may use it) is kept out by its circuit (open,
 * or refused its trial): then the answer is circuit_open, else
 * no_healthy_upstream.
 */
static bool any_circuit_out(const struct pf_upstream_conf *up, bool refused, uint64_t now)
{
    for (unsigned i = 0; i < up->n_endpoints; i++) {
        const struct pf_endpoint *ep = pf_endpoint_get(up->endpoint_ids[i]);

        if (pf_upstream_health_lets_serve(up, ep) && !pf_breaker_usable(ep, now))
            return true;
    }
    return refused;
}

struct pick_gate {
    const struct pf_upstream_conf *up;
    uint64_t now;
    uint64_t ticket; /* of the admitted endpoint */
};

static bool pick_admit(unsigned id, void *arg)
{
    struct pick_gate *g = arg;

    return pf_breaker_admit(pf_endpoint_get(id), &g->up->breaker, g->now, &g->ticket);
}

/*
 * An endpoint the balancer picks (in service: healthy, or in panic, and its
 * circuit not open) whose breaker admits the request (a half-open one gives
 * it a trial permit); the balancer picks again without the refused ones,
 * tried or not. PF_ERR_NONE, or the error to answer: circuit_open when
 * circuits keep the endpoints out, else no_healthy_upstream (health checks,
 * panic off).
 */
enum pf_error pf_upstream_pick(struct pf_tx *tx, unsigned *id, uint64_t *ticket)
{
    struct pick_gate g = {.up = tx->up, .now = pf_now_us()};
    struct pf_lb_admit a;

    a.fn = pick_admit;
    a.arg = &g;
    a.refused_any = false;
    memset(a.refused, 0, (tx->up->n_endpoints + 63) / 64 * sizeof(a.refused[0])); /* those read */
    *id = pf_balancer_pick_admit(tx, tx->tried, &a);
    *ticket = g.ticket;
    if (*id != PF_LB_NONE)
        return PF_ERR_NONE;
    return any_circuit_out(tx->up, a.refused_any, g.now) ? PF_ERR_CIRCUIT_OPEN
                                                         : PF_ERR_NO_HEALTHY_UPSTREAM;
}
