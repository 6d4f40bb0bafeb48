/*
 * Unit tests of proxy/errors.c: the one table of error codes (names, default
 * statuses, counters) and the error of each upstream outcome.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "proxy/core.h"
#include "proxy/errors.h"
#include "proxy/upstream/endpoint-t.h"

static void test_errors_names_are_the_documented_codes(void **state)
{
    (void)state;
    assert_string_equal(pf_error_name(PF_ERR_BAD_REQUEST), "bad_request");
    assert_string_equal(pf_error_name(PF_ERR_REQUEST_TIMEOUT), "request_timeout");
    assert_string_equal(pf_error_name(PF_ERR_BODY_TOO_LARGE), "body_too_large");
    assert_string_equal(pf_error_name(PF_ERR_URI_TOO_LONG), "uri_too_long");
    assert_string_equal(pf_error_name(PF_ERR_HEADERS_TOO_LARGE), "headers_too_large");
    assert_string_equal(pf_error_name(PF_ERR_NO_ROUTE), "no_route");
    assert_string_equal(pf_error_name(PF_ERR_CONNECT_FAILED), "upstream_connect_failed");
    assert_string_equal(pf_error_name(PF_ERR_RESET), "upstream_reset");
    assert_string_equal(pf_error_name(PF_ERR_BAD_RESPONSE), "upstream_bad_response");
    assert_string_equal(pf_error_name(PF_ERR_TIMEOUT), "upstream_timeout");
    assert_string_equal(pf_error_name(PF_ERR_FILTER_FAILED), "filter_failed");
    assert_string_equal(pf_error_name(PF_ERR_RATE_LIMITED), "rate_limited");
    assert_string_equal(pf_error_name(PF_ERR_CIRCUIT_OPEN), "circuit_open");
    assert_string_equal(pf_error_name(PF_ERR_NO_HEALTHY_UPSTREAM), "no_healthy_upstream");
    assert_string_equal(pf_error_name(PF_ERR_OVERFLOW), "overflow");
    assert_string_equal(pf_error_name(PF_ERR_OTHER), "other");
    assert_string_equal(pf_error_name(PF_ERR_NOT_FOUND), "not_found");
    assert_string_equal(pf_error_name(PF_ERR_FORBIDDEN), "forbidden");
    assert_string_equal(pf_error_name(PF_ERR_UNAUTHORIZED), "unauthorized");
    assert_string_equal(pf_error_name(PF_ERR_METHOD_NOT_ALLOWED), "method_not_allowed");
    assert_string_equal(pf_error_name(PF_ERR_CLIENT_ABORT), "client_abort");
}

static void test_errors_every_code_has_a_distinct_name_and_a_status(void **state)
{
    (void)state;
    for (unsigned i = 0; i < PF_ERR_MAX; i++) {
        assert_non_null(pf_error_name(i));
        if (i != PF_ERR_NONE)
            assert_in_range(pf_error_status(i), 400, 599);
        for (unsigned j = i + 1; j < PF_ERR_MAX; j++)
            assert_string_not_equal(pf_error_name(i), pf_error_name(j));
    }
}

static void test_errors_default_statuses(void **state)
{
    (void)state;
    assert_int_equal(pf_error_status(PF_ERR_BAD_REQUEST), 400);
    assert_int_equal(pf_error_status(PF_ERR_REQUEST_TIMEOUT), 408);
    assert_int_equal(pf_error_status(PF_ERR_BODY_TOO_LARGE), 413);
    assert_int_equal(pf_error_status(PF_ERR_URI_TOO_LONG), 414);
    assert_int_equal(pf_error_status(PF_ERR_HEADERS_TOO_LARGE), 431);
    assert_int_equal(pf_error_status(PF_ERR_NO_ROUTE), 404);
    assert_int_equal(pf_error_status(PF_ERR_CONNECT_FAILED), 502);
    assert_int_equal(pf_error_status(PF_ERR_RESET), 502);
    assert_int_equal(pf_error_status(PF_ERR_BAD_RESPONSE), 502);
    assert_int_equal(pf_error_status(PF_ERR_TIMEOUT), 504);
    assert_int_equal(pf_error_status(PF_ERR_RATE_LIMITED), 429);
}

static void test_errors_count_maps_each_series_code_to_its_counter(void **state)
{
    struct pf_worker w;

    (void)state;
    for (unsigned e = 0; e < PF_ERR_MAX; e++) {
        if (!pf_error_has_series(e))
            continue;
        memset(&w, 0, sizeof(w));
        pf_error_count(&w, e);
        pf_error_count(&w, e);
        for (unsigned k = 0; k < PF_ERR_MAX; k++)
            assert_int_equal(w.errors[k], k == e ? 2 : 0);
    }
}

static void test_errors_admin_refusals_count_as_other_and_aborts_not_at_all(void **state)
{
    struct pf_worker w;

    (void)state;
    memset(&w, 0, sizeof(w));
    assert_false(pf_error_has_series(PF_ERR_NOT_FOUND));
    assert_false(pf_error_has_series(PF_ERR_CLIENT_ABORT));
    assert_false(pf_error_has_series(PF_ERR_NONE));
    pf_error_count(&w, PF_ERR_NOT_FOUND);
    pf_error_count(&w, PF_ERR_FORBIDDEN);
    pf_error_count(&w, PF_ERR_UNAUTHORIZED);
    pf_error_count(&w, PF_ERR_METHOD_NOT_ALLOWED);
    pf_error_count(&w, (enum pf_error)1000); /* out of range: other */
    pf_error_count(&w, PF_ERR_CLIENT_ABORT);
    pf_error_count(&w, PF_ERR_NONE);
    assert_int_equal(w.errors[PF_ERR_OTHER], 5);
    for (unsigned k = 0; k < PF_ERR_MAX; k++) {
        if (k != PF_ERR_OTHER)
            assert_int_equal(w.errors[k], 0);
    }
}

static void test_errors_of_each_upstream_outcome(void **state)
{
    (void)state;
    assert_int_equal(pf_error_of_outcome(PF_OUTCOME_OK), PF_ERR_OTHER);
    assert_int_equal(pf_error_of_outcome(PF_OUTCOME_CONNECT_FAILED), PF_ERR_CONNECT_FAILED);
    assert_int_equal(pf_error_of_outcome(PF_OUTCOME_RESET), PF_ERR_RESET);
    assert_int_equal(pf_error_of_outcome(PF_OUTCOME_TIMEOUT), PF_ERR_TIMEOUT);
    assert_int_equal(pf_error_of_outcome(PF_OUTCOME_BAD_RESPONSE), PF_ERR_BAD_RESPONSE);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_errors_names_are_the_documented_codes),
        cmocka_unit_test(test_errors_every_code_has_a_distinct_name_and_a_status),
        cmocka_unit_test(test_errors_default_statuses),
        cmocka_unit_test(test_errors_count_maps_each_series_code_to_its_counter),
        cmocka_unit_test(test_errors_admin_refusals_count_as_other_and_aborts_not_at_all),
        cmocka_unit_test(test_errors_of_each_upstream_outcome),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
