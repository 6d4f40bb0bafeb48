/*
 * HTTP and URI syntax. See proxy/syntax.h.
 */
#include "proxy/syntax.h"

#include <string.h>
#include <strings.h>

static bool is_alnum(unsigned char ch)
{
    return (ch >= '0' && ch <= '9') || ((ch | 0x20) >= 'a' && (ch | 0x20) <= 'z');
}

static bool is_hex(unsigned char ch)
{
    return (ch >= '0' && ch <= '9') || ((ch | 0x20) >= 'a' && (ch | 0x20) <= 'f');
}

static bool is_ows(char ch)
{
    return ch == ' ' || ch == '\t';
}

bool pf_http_is_tchar(unsigned char ch)
{
    return is_alnum(ch) || (ch != 0 && strchr("!#$%&'*+-.^_`|~", ch) != NULL);
}

bool pf_http_is_token(const char *s, size_t len)
{
    if (len == 0)
        return false;
    for (size_t i = 0; i < len; i++) {
        if (!pf_http_is_tchar((unsigned char)s[i]))
            return false;
    }
    return true;
}

bool pf_http_is_digits(const char *s)
{
    if (*s == '\0')
        return false;
    for (; *s != '\0'; s++) {
        if (*s < '0' || *s > '9')
            return false;
    }
    return true;
}

bool pf_http_list_next(const char **s, const char **elem, size_t *len)
{
    const char *p = *s;
    const char *end;
    bool quoted = false;

    while (is_ows(*p) || *p == ',')
        p++;
    if (*p == '\0')
        return false;
    *elem = p;
    for (; *p != '\0' && (quoted || *p != ','); p++) {
        if (quoted && *p == '\\' && p[1] != '\0')
            p++;
        else if (*p == '"')
            quoted = !quoted;
    }
    end = p;
    while (end > *elem && is_ows(end[-1]))
        end--;
    *len = (size_t)(end - *elem);
    *s = p;
    return true;
}

bool pf_http_list_has(const char *value, const char *token)
{
    size_t tl = strlen(token);
    const char *elem;
    size_t len;

    while (pf_http_list_next(&value, &elem, &len)) {
        size_t n = 0;

        while (n < len && elem[n] != ';' && elem[n] != '=')
            n++;
        while (n > 0 && is_ows(elem[n - 1]))
            n--;
        if (n == tl && strncasecmp(elem, token, tl) == 0)
            return true;
    }
    return false;
}

/* unreserved / sub-delims (RFC 3986 §2.2-2.3) */
static bool is_unreserved_or_sub(unsigned char ch)
{
    return is_alnum(ch) || (ch != 0 && strchr("-._~!$&'()*+,;=", ch) != NULL);
}

/* Length of a valid pct-encoded triplet at s[i..len), or 0. */
static size_t pct_len(const char *s, size_t i, size_t len)
{
    if (s[i] != '%' || i + 2 >= len)
        return 0;
    return is_hex((unsigned char)s[i + 1]) && is_hex((unsigned char)s[i + 2]) ? 3 : 0;
}

/* IP-literal contents: IPv6 (hex, ':', '.') or IPvFuture ("v" ...). */
static bool ip_literal_valid(const char *s, size_t len)
{
    bool future = len > 0 && (s[0] == 'v' || s[0] == 'V');

    if (len == 0)
        return false;
    for (size_t i = 0; i < len; i++) {
        unsigned char ch = (unsigned char)s[i];

        if (future ? !(is_unreserved_or_sub(ch) || ch == ':')
                   : !(is_hex(ch) || ch == ':' || ch == '.'))
            return false;
    }
    return true;
}

bool pf_http_host_valid(const char *s, size_t len)
{
    size_t i = 0;

    if (len > 0 && s[0] == '[') {
        const char *close = memchr(s, ']', len);

        if (close == NULL || !ip_literal_valid(s + 1, (size_t)(close - s) - 1))
            return false;
        i = (size_t)(close - s) + 1;
    } else {
        /*
         * reg-name (an IPv4 address is one too), without the percent-escapes
         * RFC 3986 allows: "b%2Eexample" would be compared with match.host
         * as written while an upstream may decode it to "b.example".
         */
        while (i < len && s[i] != ':') {
            if (!is_unreserved_or_sub((unsigned char)s[i]))
                return false;
            i++;
        }
    }
    if (i == len)
        return true;
    if (i == 0 || s[i] != ':' || len - i - 1 > 5)
        return false; /* ":80": an empty host is invalid in an http URI (RFC 9110 §4.2.1) */
    for (i++; i < len; i++) {
        if (s[i] < '0' || s[i] > '9')
            return false;
    }
    return true;
}

/* Bytes of a request-target: 1 allowed as is, 2 '%' (an escape follows), 0 never. */
static const unsigned char target_class[256] = {
    [0x21 ... 0x22] = 1, /* not '#' (0x23) */
    ['$'] = 1,
    ['%'] = 2,
    [0x26 ... 0x7e] = 1,
};

bool pf_http_target_valid(const char *s, size_t len)
{
    const unsigned char *u = (const unsigned char *)s;
    size_t i = 0;

    /* 4 bytes a round while all four are plain (class 1: only 1 & 1 & 1 & 1 is 1) */
    while (i + 4 <= len && (target_class[u[i]] & target_class[u[i + 1]] & target_class[u[i + 2]] &
                            target_class[u[i + 3]]) == 1)
        i += 4;
    for (; i < len; i++) {
        unsigned char c = target_class[(unsigned char)s[i]];

        if (c != 1 && (c == 0 || pct_len(s, i, len) == 0))
            return false;
    }
    return true;
}
