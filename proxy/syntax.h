/*
 * HTTP and URI syntax (RFC 9110 §5.6, RFC 9112 §3.2, RFC 3986 §3.2.2): token
 * characters, comma-separated lists with quoted strings, Host and request
 * target checks. Pure functions, any thread; filters may use them too.
 */
#ifndef PF_SYNTAX_H
#define PF_SYNTAX_H

#include <stdbool.h>
#include <stddef.h>

/* tchar (RFC 9110 §5.6.2) */
bool pf_http_is_tchar(unsigned char ch);

/* True when s[0..len) is a token (RFC 9110 tchar, at least one). */
bool pf_http_is_token(const char *s, size_t len);

/* True when the NUL-terminated s is one or more ASCII digits (a Content-Length). */
bool pf_http_is_digits(const char *s);

/*
 * Next element of the comma-separated list at *s (RFC 9110 §5.6.1): its start
 * and length without surrounding whitespace; empty elements are skipped and
 * commas inside quoted strings do not split. Advances *s; false at the end.
 */
bool pf_http_list_next(const char **s, const char **elem, size_t *len);

/*
 * True when the list value has an element whose leading token (up to ';'
 * or '=', whitespace trimmed) is token, compared case-insensitively.
 */
bool pf_http_list_has(const char *value, const char *token);

/*
 * True when s[0..len) is a valid Host value (RFC 9112 §3.2, RFC 3986
 * §3.2.2-3): reg-name, IPv4 or [IP-literal], then optionally ':' and at most
 * five digits. Empty is valid (a target without authority), a port after an
 * empty host (":80") is not. No userinfo, and no percent-escapes (a host is
 * matched as written, and an upstream may decode them).
 */
bool pf_http_host_valid(const char *s, size_t len);

/*
 * True when every byte of the request target is one RFC 3986 allows in a
 * path or query (no CTL, space, DEL, byte >= 0x80, '#'), and every '%' starts
 * a pct-encoded triplet. Characters some clients send unencoded ('"', '<',
 * '>', '\', '^', '`', '{', '|', '}') are tolerated.
 */
bool pf_http_target_valid(const char *s, size_t len);

#endif /* PF_SYNTAX_H */
