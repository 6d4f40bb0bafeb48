/*
 * "did you mean": the known word closest to a misspelt one, by optimal
 * string alignment distance (insertions, deletions, substitutions and swaps
 * of neighbours each cost 1).
 */
#include <stdio.h>
#include <string.h>

#include "proxy/conf.h"

#define HINT_MAX_LEN 64

static unsigned min3(unsigned a, unsigned b, unsigned c)
{
    unsigned m = a < b ? a : b;

    return m < c ? m : c;
}

unsigned pf_conf_distance(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    unsigned d[HINT_MAX_LEN + 1][HINT_MAX_LEN + 1];

    if (la > HINT_MAX_LEN || lb > HINT_MAX_LEN)
        return HINT_MAX_LEN;
    for (size_t i = 0; i <= la; i++)
        d[i][0] = (unsigned)i;
    for (size_t j = 0; j <= lb; j++)
        d[0][j] = (unsigned)j;
    for (size_t i = 1; i <= la; i++) {
        for (size_t j = 1; j <= lb; j++) {
            unsigned cost = a[i - 1] != b[j - 1];

            d[i][j] = min3(d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + cost);
            if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] &&
                d[i - 2][j - 2] + 1 < d[i][j])
                d[i][j] = d[i - 2][j - 2] + 1;
        }
    }
    return d[la][lb];
}

void pf_conf_hint(const char *word, const struct pf_conf_key *keys, char *out, size_t size)
{
    size_t len = strlen(word);
    unsigned best = (unsigned)(len / 3 > 1 ? len / 3 : 1) + 1;
    const char *pick = NULL;

    for (; keys->name != NULL; keys++) {
        unsigned d = pf_conf_distance(word, keys->name);

        /* and at most half of the word: "zz" is not a typo of "sz" */
        if (d < best && 2 * d < len) {
            best = d;
            pick = keys->name;
        }
    }
    if (pick != NULL)
        snprintf(out, size, " (did you mean '%s'?)", pick);
    else if (size > 0)
        out[0] = '\0';
}
