/*
 * Small string helpers of the cache's RFC code (rfc.c, rfc_date.c,
 * rfc_key.c): OWS, tchar, case folding and comma-separated lists.
 */
#ifndef PF_CACHE_RFC_INT_H
#define PF_CACHE_RFC_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <string.h>
#include <strings.h>

#define MAX_LINES 16 /* field lines of one header looked at */

static inline bool is_ows(char c)
{
    return c == ' ' || c == '\t';
}

static inline bool is_digit(char c)
{
    return c >= '0' && c <= '9';
}

/* RFC 9110 tchar */
static inline bool is_tchar(char c)
{
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || is_digit(c))
        return true;
    return c != '\0' && strchr("!#$%&'*+-.^_`|~", c) != NULL;
}

static inline char lower(char c)
{
    return (c >= 'A' && c <= 'Z') ? (char)(c - 'A' + 'a') : c;
}

/* Does [s, s+n) equal the NUL-terminated word, ignoring case? */
static inline bool eq_ci(const char *s, size_t n, const char *word)
{
    return strlen(word) == n && strncasecmp(s, word, n) == 0;
}

/* Trim OWS from both ends of [*s, *e). */
static inline void trim(const char **s, const char **e)
{
    while (*s < *e && is_ows(**s))
        (*s)++;
    while (*e > *s && is_ows((*e)[-1]))
        (*e)--;
}

/*
 * The next comma-separated member of a list at *p, trimmed, into [*s, *e);
 * empty members are skipped. False at the end (or when *p is NULL).
 */
static inline bool next_member(const char **p, const char **s, const char **e)
{
    while (*p != NULL && **p != '\0') {
        const char *c = strchr(*p, ',');
        *s = *p;
        *e = c != NULL ? c : *p + strlen(*p);
        *p = c != NULL ? c + 1 : *e;
        trim(s, e);
        if (*e > *s)
            return true;
    }
    return false;
}

#endif /* PF_CACHE_RFC_INT_H */
