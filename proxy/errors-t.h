/*
 * Error codes pilotfish answers or logs itself (the CODE of the JSON error
 * body, X-Pilotfish-Error and pilotfish_errors_total{error}). Filters see this
 * file through proxy/filter.h; names and statuses are in proxy/errors.c.
 */
#ifndef PF_ERRORS_T_H
#define PF_ERRORS_T_H

enum pf_error {
    PF_ERR_NONE = 0, /* no error (the access log says null) */
    /* codes with their own pilotfish_errors_total series */
    PF_ERR_BAD_REQUEST,
    PF_ERR_REQUEST_TIMEOUT,
    PF_ERR_BODY_TOO_LARGE,
    PF_ERR_URI_TOO_LONG,
    PF_ERR_HEADERS_TOO_LARGE,
    PF_ERR_NO_ROUTE,
    PF_ERR_CONNECT_FAILED,
    PF_ERR_RESET,
    PF_ERR_BAD_RESPONSE,
    PF_ERR_TIMEOUT,
    PF_ERR_FILTER_FAILED,
    PF_ERR_RATE_LIMITED,
    PF_ERR_CIRCUIT_OPEN,
    PF_ERR_NO_HEALTHY_UPSTREAM,
    PF_ERR_OVERFLOW,
    PF_ERR_OTHER,
    /* the admin API's refusals: counted as other */
    PF_ERR_NOT_FOUND,
    PF_ERR_FORBIDDEN,
    PF_ERR_UNAUTHORIZED,
    PF_ERR_METHOD_NOT_ALLOWED,
    /* logged, never counted: the client went away */
    PF_ERR_CLIENT_ABORT,
    PF_ERR_MAX,
};

#endif /* PF_ERRORS_T_H */
