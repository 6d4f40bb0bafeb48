/*
 * HTTP-date (RFC 9110 §5.6.7): parsing its three formats and writing
 * IMF-fixdate, with no clock and no time zone of the C library.
 */
#include "filters/cache/rfc.h"

#include <stdio.h>
#include <string.h>

#include "filters/cache/rfc-int.h"

/* ---- HTTP-date (RFC 9110 §5.6.7) ---- */

static const char *const wkday_short[7] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
static const char *const wkday_long[7] = {"Sunday",   "Monday", "Tuesday", "Wednesday",
                                          "Thursday", "Friday", "Saturday"};
static const char *const month_name[12] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                           "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};

/* Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm). */
static int64_t days_from_civil(int64_t y, int m, int d)
{
    int64_t era;
    int64_t yoe;
    int64_t doy;

    y -= m <= 2;
    era = (y >= 0 ? y : y - 399) / 400;
    yoe = y - era * 400;
    doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    return era * 146097 + yoe * 365 + yoe / 4 - yoe / 100 + doy - 719468;
}

static int days_in_month(int64_t y, int m)
{
    static const int dim[12] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    bool leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;

    return (m == 2 && leap) ? 29 : dim[m - 1];
}

/* A cursor over a date string: every reader advances it or fails. */
struct scan {
    const char *p;
    bool ok;
};

static void lit(struct scan *s, const char *w)
{
    size_t n = strlen(w);

    if (s->ok && strncmp(s->p, w, n) == 0)
        s->p += n;
    else
        s->ok = false;
}

/* Exactly n digits. */
static int digits(struct scan *s, int n)
{
    int v = 0;

    for (int i = 0; i < n && s->ok; i++) {
        if (!is_digit(s->p[i]))
            s->ok = false;
        else
            v = v * 10 + (s->p[i] - '0');
    }
    if (s->ok)
        s->p += n;
    return v;
}

/* One of names[0..n), case-sensitively (HTTP-date is case-sensitive); returns its index. */
static int word(struct scan *s, const char *const *names, int n)
{
    for (int i = 0; s->ok && i < n; i++) {
        size_t l = strlen(names[i]);
        if (strncmp(s->p, names[i], l) == 0 && !(s->p[l] >= 'a' && s->p[l] <= 'z')) {
            s->p += l;
            return i;
        }
    }
    s->ok = false;
    return 0;
}

/* "HH:MM:SS" */
static void time_of_day(struct scan *s, int *hh, int *mm, int *ss)
{
    *hh = digits(s, 2);
    lit(s, ":");
    *mm = digits(s, 2);
    lit(s, ":");
    *ss = digits(s, 2);
}

/*
 * Seconds since the epoch of the parsed fields, -1 when out of range.
 * Dates before 1970 are valid HTTP-dates long past: they give 0.
 */
static int64_t to_epoch(int64_t y, int mon, int d, int hh, int mm, int ss)
{
    int64_t t;

    if (mon < 1 || mon > 12 || d < 1 || d > days_in_month(y, mon) || hh > 23 || mm > 59 || ss > 60)
        return -1;
    t = days_from_civil(y, mon, d) * 86400 + hh * 3600 + mm * 60 + ss;
    return t < 0 ? 0 : t;
}

/*
 * RFC 850's two-digit year (RFC 9110 §5.6.7): a year more than 50 years
 * after now's is taken as the most recent past year with the same last two
 * digits. Without a now (now < 0) the year 2000 stands in for it.
 */
static int64_t rfc850_year(int yy, int64_t now)
{
    int64_t cur = 2000;
    int64_t y;

    if (now >= 0)
        cur = 1970 + now / 31556952; /* good to a day, plenty for a 50-year window */
    y = cur - cur % 100 + yy;
    if (y > cur + 50)
        y -= 100;
    else if (y <= cur - 50)
        y += 100;
    return y;
}

static int64_t parse_date(const char *str, int64_t now)
{
    struct scan s = {str, true};
    int d;
    int mon;
    int hh;
    int mm;
    int ss;
    int64_t y;
    const char *e;

    while (is_ows(*s.p))
        s.p++;
    e = s.p + strlen(s.p);
    while (e > s.p && is_ows(e[-1]))
        e--;
    if (e - s.p == 29 && s.p[3] == ',') { /* IMF-fixdate: Sun, 06 Nov 1994 08:49:37 GMT */
        word(&s, wkday_short, 7);
        lit(&s, ", ");
        d = digits(&s, 2);
        lit(&s, " ");
        mon = word(&s, month_name, 12) + 1;
        lit(&s, " ");
        y = digits(&s, 4);
        lit(&s, " ");
        time_of_day(&s, &hh, &mm, &ss);
        lit(&s, " GMT");
    } else if (e - s.p == 24 && s.p[3] == ' ') { /* asctime: Sun Nov  6 08:49:37 1994 */
        word(&s, wkday_short, 7);
        lit(&s, " ");
        mon = word(&s, month_name, 12) + 1;
        lit(&s, " ");
        if (s.ok && *s.p == ' ') {
            s.p++;
            d = digits(&s, 1);
        } else {
            d = digits(&s, 2);
        }
        lit(&s, " ");
        time_of_day(&s, &hh, &mm, &ss);
        lit(&s, " ");
        y = digits(&s, 4);
    } else { /* RFC 850: Sunday, 06-Nov-94 08:49:37 GMT */
        word(&s, wkday_long, 7);
        lit(&s, ", ");
        d = digits(&s, 2);
        lit(&s, "-");
        mon = word(&s, month_name, 12) + 1;
        lit(&s, "-");
        y = rfc850_year(digits(&s, 2), now);
        lit(&s, " ");
        time_of_day(&s, &hh, &mm, &ss);
        lit(&s, " GMT");
    }
    if (!s.ok || s.p != e)
        return -1;
    return to_epoch(y, mon, d, hh, mm, ss);
}

int64_t pf_http_date_parse(const char *s)
{
    return s == NULL ? -1 : parse_date(s, -1);
}

int64_t pf_http_date_at(const char *s, int64_t now)
{
    return s == NULL ? -1 : parse_date(s, now);
}

char *pf_http_date_fmt(int64_t t, char *out)
{
    int64_t days = (t < 0 ? 0 : t) / 86400;
    int64_t secs = (t < 0 ? 0 : t) % 86400;
    /* civil_from_days (Hinnant) */
    int64_t z = days + 719468;
    int64_t era = z / 146097;
    int64_t doe = z - era * 146097;
    int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    int64_t mp = (5 * doy + 2) / 153;
    int d = (int)(doy - (153 * mp + 2) / 5 + 1);
    int m = (int)(mp < 10 ? mp + 3 : mp - 9);
    int64_t y = yoe + era * 400 + (m <= 2);

    snprintf(out, 30, "%s, %02d %s %04d %02d:%02d:%02d GMT", wkday_short[(days + 4) % 7], d,
             month_name[m - 1], (int)(y % 10000), (int)(secs / 3600), (int)(secs / 60 % 60),
             (int)(secs % 60));
    return out;
}
