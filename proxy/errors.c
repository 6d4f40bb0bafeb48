/*
 * The one table of error codes: name, default status, counter.
 */
#include "proxy/errors.h"

#include "proxy/worker-t.h"
#include "proxy/stats.h"
#include "proxy/upstream/endpoint-t.h"

/* How an error is counted in pilotfish_errors_total. */
enum count_as {
    COUNT_NONE = 0, /* not at all */
    COUNT_OWN,      /* its own series */
    COUNT_OTHER,    /* under other */
};

static const struct {
    const char *name;
    int status;
    enum count_as count;
} errors[PF_ERR_MAX] = {
    [PF_ERR_NONE] = {"none", 0, COUNT_NONE},
    [PF_ERR_BAD_REQUEST] = {"bad_request", 400, COUNT_OWN},
    [PF_ERR_REQUEST_TIMEOUT] = {"request_timeout", 408, COUNT_OWN},
    [PF_ERR_BODY_TOO_LARGE] = {"body_too_large", 413, COUNT_OWN},
    [PF_ERR_URI_TOO_LONG] = {"uri_too_long", 414, COUNT_OWN},
    [PF_ERR_HEADERS_TOO_LARGE] = {"headers_too_large", 431, COUNT_OWN},
    [PF_ERR_NO_ROUTE] = {"no_route", 404, COUNT_OWN},
    [PF_ERR_CONNECT_FAILED] = {"upstream_connect_failed", 502, COUNT_OWN},
    [PF_ERR_RESET] = {"upstream_reset", 502, COUNT_OWN},
    [PF_ERR_BAD_RESPONSE] = {"upstream_bad_response", 502, COUNT_OWN},
    [PF_ERR_TIMEOUT] = {"upstream_timeout", 504, COUNT_OWN},
    [PF_ERR_FILTER_FAILED] = {"filter_failed", 500, COUNT_OWN},
    [PF_ERR_RATE_LIMITED] = {"rate_limited", 429, COUNT_OWN},
    [PF_ERR_CIRCUIT_OPEN] = {"circuit_open", 503, COUNT_OWN},
    [PF_ERR_NO_HEALTHY_UPSTREAM] = {"no_healthy_upstream", 503, COUNT_OWN},
    [PF_ERR_OVERFLOW] = {"overflow", 503, COUNT_OWN},
    [PF_ERR_OTHER] = {"other", 500, COUNT_OWN},
    [PF_ERR_NOT_FOUND] = {"not_found", 404, COUNT_OTHER},
    [PF_ERR_FORBIDDEN] = {"forbidden", 403, COUNT_OTHER},
    [PF_ERR_UNAUTHORIZED] = {"unauthorized", 401, COUNT_OTHER},
    [PF_ERR_METHOD_NOT_ALLOWED] = {"method_not_allowed", 405, COUNT_OTHER},
    [PF_ERR_CLIENT_ABORT] = {"client_abort", 499, COUNT_NONE},
};

/* Out-of-range values (a filter's cast int) are treated as other. */
static enum pf_error valid(enum pf_error e)
{
    return (unsigned)e < PF_ERR_MAX ? e : PF_ERR_OTHER;
}

const char *pf_error_name(enum pf_error e)
{
    return errors[valid(e)].name;
}

int pf_error_status(enum pf_error e)
{
    return errors[valid(e)].status;
}

bool pf_error_has_series(enum pf_error e)
{
    return errors[valid(e)].count == COUNT_OWN;
}

void pf_error_count(struct pf_worker *w, enum pf_error e)
{
    switch (errors[valid(e)].count) {
    case COUNT_OWN:
        pf_counter_add(&w->errors[valid(e)], 1);
        break;
    case COUNT_OTHER:
        pf_counter_add(&w->errors[PF_ERR_OTHER], 1);
        break;
    case COUNT_NONE:
        break;
    }
}

enum pf_error pf_error_of_outcome(int outcome)
{
    switch (outcome) {
    case PF_OUTCOME_CONNECT_FAILED:
        return PF_ERR_CONNECT_FAILED;
    case PF_OUTCOME_RESET:
        return PF_ERR_RESET;
    case PF_OUTCOME_TIMEOUT:
        return PF_ERR_TIMEOUT;
    case PF_OUTCOME_BAD_RESPONSE:
        return PF_ERR_BAD_RESPONSE;
    default:
        return PF_ERR_OTHER;
    }
}
