/*
 * Routing: the request path normalised for matching (and, by default, for
 * forwarding), and the first route whose match (prefix, host, methods) fits.
 * The exact rules are in docs/configuration.md (routes).
 */
#ifndef PF_ROUTE_H
#define PF_ROUTE_H

#include <stddef.h>
#include <sys/types.h>

#include "proxy/core.h"

/*
 * Normalise the path path[0..len) (origin-form, starting with '/', without
 * the query) into out, which has room for len + 2 bytes:
 *   - "%25" followed by two hex digits (double encoding) is refused, also
 *     when the digits were encoded themselves ("%25%36%31");
 *   - "%00" and escapes that start an overlong UTF-8 form ("%C0", "%C1",
 *     "%E0" before "%80"-"%9F", "%F0" before "%80"-"%8F") are refused;
 *   - percent-encoded unreserved characters are decoded (RFC 3986 §6.2.2.2),
 *     the hex digits of the other triplets upper-cased (§6.2.2.1);
 *   - "%2F", "%5C" and "\" become "/" (upstreams may read them so);
 *   - empty segments ("//") are dropped, except a trailing one;
 *   - dot segments are removed (RFC 3986 §5.2.4), "..;x" counting as "..".
 * ";params" of segments stay in out. Returns the length of out (NUL
 * terminated), or -1 when the path is refused (400).
 */
ssize_t pf_route_normalize(const char *path, size_t len, char *out);

/*
 * Remove the ";params" of every segment of s[0..len) in place, and the
 * segments that were nothing but params ("/;x/a" is "/a", as an upstream that
 * drops params and merges "//" reads it); returns the new length.
 */
size_t pf_route_strip_params(char *s, size_t len);

/*
 * Choose tx's route (tx->route, NULL when none matches) from its normalised
 * path, and set tx->url to what the upstream gets (normalize_path). Returns
 * -1 when the target is refused (400): pf_route_normalize() refuses it, or
 * the route is match_only and ";params" met dot segments or params-only
 * segments in the path. 0 otherwise.
 */
int pf_route_select(struct pf_tx *tx);

#endif /* PF_ROUTE_H */
