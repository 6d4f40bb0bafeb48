/*
 * Configuration building blocks: error list, YAML -> node tree with marks,
 * ${VAR} substitution, scalar parsers and key tables. The pilotfish sections
 * themselves are in proxy/conf.c.
 */
#include "proxy/conf.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <event2/buffer.h>
#include <yaml.h>

#include "proxy/arena.h"
#include "proxy/log.h"

#define MAX_DEPTH    64 /* deeper nesting is no configuration anybody writes */
#define MAX_FRAC_DIG 6  /* keeps frac * unit below 2^64 for every unit */

/* ---- errors ---- */

void pf_err_init(struct pf_err *err, const char *file)
{
    memset(err, 0, sizeof(*err));
    err->file = file;
}

void pf_err_fini(struct pf_err *err)
{
    for (unsigned i = 0; i < err->n; i++)
        free(err->msgs[i]);
    free(err->msgs);
    err->msgs = NULL;
    err->n = 0;
    err->cap = 0;
}

static void err_add_v(struct pf_err *err, unsigned line, unsigned col, const char *fmt, va_list ap)
{
    char prefix[64] = "";
    const char *file = err->file != NULL ? err->file : "config";
    va_list ap2;

    if (line > 0)
        snprintf(prefix, sizeof(prefix), ":%u:%u", line, col);
    va_copy(ap2, ap);
    int body = vsnprintf(NULL, 0, fmt, ap2);
    va_end(ap2);
    if (body < 0)
        body = 0;
    size_t head = strlen(file) + strlen(prefix) + 2;
    char *msg = pf_xmalloc(head + (size_t)body + 1);
    snprintf(msg, head + 1, "%s%s: ", file, prefix);
    vsnprintf(msg + head, (size_t)body + 1, fmt, ap);

    if (err->n == err->cap) {
        err->cap = err->cap ? err->cap * 2 : 8;
        err->msgs = pf_xrealloc(err->msgs, err->cap * sizeof(*err->msgs));
    }
    err->msgs[err->n++] = msg;
}

void pf_err_at(struct pf_err *err, const struct pf_conf_node *n, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    err_add_v(err, n != NULL ? n->line : 0, n != NULL ? n->col : 0, fmt, ap);
    va_end(ap);
}

/* Line and column of a message ("FILE:LINE:COL: ..."); 0, 0 when it has none. */
static void err_mark(const struct pf_err *err, const char *msg, unsigned long *line,
                     unsigned long *col)
{
    const char *p = msg + (err->file != NULL ? strlen(err->file) : strlen("config"));
    char *end;

    *line = 0;
    *col = 0;
    if (*p != ':' || p[1] < '0' || p[1] > '9')
        return;
    *line = strtoul(p + 1, &end, 10);
    if (*end == ':')
        *col = strtoul(end + 1, NULL, 10);
}

void pf_err_sort(struct pf_err *err)
{
    /* insertion sort: stable, and error lists are short */
    for (unsigned i = 1; i < err->n; i++) {
        char *m = err->msgs[i];
        unsigned long line, col, l2, c2;
        unsigned j = i;
        err_mark(err, m, &line, &col);
        for (; j > 0; j--) {
            err_mark(err, err->msgs[j - 1], &l2, &c2);
            if (l2 < line || (l2 == line && c2 <= col))
                break;
            err->msgs[j] = err->msgs[j - 1];
        }
        err->msgs[j] = m;
    }
}

void pf_conf_print_errors(const struct pf_err *err, FILE *f)
{
    for (unsigned i = 0; i < err->n; i++)
        fprintf(f, "%s\n", err->msgs[i]);
}

/* ---- ${VAR} substitution ---- */

struct sbuf {
    char *p;    /* NUL-terminated */
    size_t len; /* without the NUL */
    size_t cap; /* allocated */
};

static void sbuf_add(struct sbuf *b, const char *s, size_t len)
{
    if (b->len + len + 1 > b->cap) {
        b->cap = (b->len + len + 1) * 2;
        b->p = pf_xrealloc(b->p, b->cap);
    }
    memcpy(b->p + b->len, s, len);
    b->len += len;
    b->p[b->len] = '\0';
}

static bool env_name_is_valid(const char *s, size_t len)
{
    if (len == 0 || (s[0] >= '0' && s[0] <= '9'))
        return false;
    for (size_t i = 0; i < len; i++) {
        char c = s[i];
        if (!(c == '_' || (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
              (c >= '0' && c <= '9')))
            return false;
    }
    return true;
}

/* Expand the body of one ${...} (s..end, braces excluded) into b. */
static int subst_one(const char *s, const char *end, struct sbuf *b, const struct pf_conf_node *n,
                     struct pf_err *err)
{
    const char *dflt = NULL;
    size_t name_len = (size_t)(end - s);
    char name[256];

    for (const char *p = s; p + 1 < end; p++) {
        if (p[0] == ':' && p[1] == '-') {
            dflt = p + 2;
            name_len = (size_t)(p - s);
            break;
        }
    }
    if (!env_name_is_valid(s, name_len) || name_len >= sizeof(name)) {
        pf_err_at(err, n, "invalid environment variable reference '${%.*s}'", (int)(end - s), s);
        return -EINVAL;
    }
    memcpy(name, s, name_len);
    name[name_len] = '\0';
    const char *val = getenv(name);
    if (val != NULL && (dflt == NULL || val[0] != '\0')) {
        sbuf_add(b, val, strlen(val));
    } else if (dflt != NULL) {
        sbuf_add(b, dflt, (size_t)(end - dflt));
    } else {
        pf_err_at(err, n, "environment variable %s is not set", name);
        return -EINVAL;
    }
    return 0;
}

/* s with ${NAME} and ${NAME:-default} replaced (pf_xmalloc'd), or NULL on error. */
static char *subst_env(const char *s, const struct pf_conf_node *n, struct pf_err *err)
{
    struct sbuf b = {NULL, 0, 0};

    sbuf_add(&b, "", 0);
    while (*s != '\0') {
        if (s[0] == '$' && s[1] == '$' && s[2] == '{') {
            sbuf_add(&b, "${", 2);
            s += 3;
        } else if (s[0] == '$' && s[1] == '{') {
            const char *end = strchr(s + 2, '}');
            if (end == NULL) {
                pf_err_at(err, n, "unterminated '${' in value");
                goto out_fail;
            }
            if (subst_one(s + 2, end, &b, n, err) < 0)
                goto out_fail;
            s = end + 1;
        } else {
            sbuf_add(&b, s, 1);
            s++;
        }
    }
    return b.p;

out_fail:
    free(b.p);
    return NULL;
}

/* ---- the node tree ---- */

struct tree {
    yaml_parser_t parser; /* libyaml event parser */
    struct pf_err *err;   /* where errors go */
    unsigned depth;       /* current nesting */
};

static struct pf_conf_node *node_new(enum pf_node_type type, yaml_mark_t m)
{
    struct pf_conf_node *n = pf_xcalloc(1, sizeof(*n));

    n->type = type;
    n->line = (unsigned)m.line + 1;
    n->col = (unsigned)m.column + 1;
    return n;
}

void pf_conf_node_free(struct pf_conf_node *n)
{
    if (n == NULL)
        return;
    for (unsigned i = 0; i < n->n_items; i++)
        pf_conf_node_free(n->items[i]);
    free(n->items);
    free(n->value);
    free(n->key);
    /* the key node is owned by the value it names */
    pf_conf_node_free((struct pf_conf_node *)n->key_node);
    free(n);
}

static int next_event(struct tree *t, yaml_event_t *ev)
{
    if (yaml_parser_parse(&t->parser, ev))
        return 0;
    struct pf_conf_node at = {.line = (unsigned)t->parser.problem_mark.line + 1,
                              .col = (unsigned)t->parser.problem_mark.column + 1};
    const char *problem = t->parser.problem != NULL ? t->parser.problem : "invalid YAML";
    const char *context = t->parser.context != NULL ? t->parser.context : "";

    pf_err_at(t->err, &at, "%s%s%s", problem, context[0] ? " " : "", context);
    return -EINVAL;
}

static void push_item(struct pf_conf_node *n, struct pf_conf_node *item, unsigned *cap)
{
    if (n->n_items == *cap) {
        *cap = *cap ? *cap * 2 : 4;
        n->items = pf_xrealloc(n->items, *cap * sizeof(*n->items));
    }
    n->items[n->n_items++] = item;
}

static struct pf_conf_node *scalar_node(struct tree *t, const yaml_event_t *ev)
{
    struct pf_conf_node *n = node_new(PF_NODE_SCALAR, ev->start_mark);
    const char *raw = (const char *)ev->data.scalar.value;

    if (ev->type == YAML_ALIAS_EVENT) {
        pf_err_at(t->err, n, "YAML aliases are not supported");
        n->value = pf_xstrdup("");
        return n;
    }
    n->quoted = ev->data.scalar.style != YAML_PLAIN_SCALAR_STYLE;
    if (strlen(raw) != ev->data.scalar.length) {
        pf_err_at(t->err, n, "NUL byte in value");
        n->value = pf_xstrdup("");
        return n;
    }
    n->value = subst_env(raw, n, t->err);
    if (n->value == NULL)
        n->value = pf_xstrdup("");
    return n;
}

static int parse_node(struct tree *t, yaml_event_t *ev, struct pf_conf_node **out);

static int parse_seq(struct tree *t, struct pf_conf_node *n)
{
    unsigned cap = 0;
    yaml_event_t ev;

    for (;;) {
        if (next_event(t, &ev) < 0)
            return -EINVAL;
        if (ev.type == YAML_SEQUENCE_END_EVENT) {
            yaml_event_delete(&ev);
            return 0;
        }
        struct pf_conf_node *item;
        int rc = parse_node(t, &ev, &item);
        if (rc < 0)
            return rc;
        push_item(n, item, &cap);
    }
}

/* Attach value under key to map n, unless the key is there already. */
static void map_add(struct tree *t, struct pf_conf_node *n, struct pf_conf_node *key,
                    struct pf_conf_node *value, unsigned *cap)
{
    if (key->type != PF_NODE_SCALAR) {
        pf_err_at(t->err, key, "map keys must be scalars");
        goto out_drop;
    }
    if (pf_conf_get(n, key->value) != NULL) {
        pf_err_at(t->err, key, "duplicate key '%s'", key->value);
        goto out_drop;
    }
    value->key = pf_xstrdup(key->value);
    value->key_node = key;
    push_item(n, value, cap);
    return;

out_drop:
    pf_conf_node_free(key);
    pf_conf_node_free(value);
}

static int parse_map(struct tree *t, struct pf_conf_node *n)
{
    unsigned cap = 0;
    yaml_event_t ev;

    for (;;) {
        struct pf_conf_node *key, *value;
        if (next_event(t, &ev) < 0)
            return -EINVAL;
        if (ev.type == YAML_MAPPING_END_EVENT) {
            yaml_event_delete(&ev);
            return 0;
        }
        if (parse_node(t, &ev, &key) < 0)
            return -EINVAL;
        if (next_event(t, &ev) < 0 || parse_node(t, &ev, &value) < 0) {
            pf_conf_node_free(key);
            return -EINVAL;
        }
        map_add(t, n, key, value, &cap);
    }
}

static const char *event_anchor(const yaml_event_t *ev)
{
    if (ev->type == YAML_SCALAR_EVENT)
        return (const char *)ev->data.scalar.anchor;
    if (ev->type == YAML_SEQUENCE_START_EVENT)
        return (const char *)ev->data.sequence_start.anchor;
    if (ev->type == YAML_MAPPING_START_EVENT)
        return (const char *)ev->data.mapping_start.anchor;
    return NULL;
}

/* Build the node starting with ev (consumed). Only YAML syntax errors fail. */
static int parse_node(struct tree *t, yaml_event_t *ev, struct pf_conf_node **out)
{
    int rc = 0;
    struct pf_conf_node *n;

    if (ev->type == YAML_SCALAR_EVENT || ev->type == YAML_ALIAS_EVENT) {
        n = scalar_node(t, ev);
    } else {
        bool seq = ev->type == YAML_SEQUENCE_START_EVENT;
        n = node_new(seq ? PF_NODE_SEQ : PF_NODE_MAP, ev->start_mark);
    }
    if (event_anchor(ev) != NULL)
        pf_err_at(t->err, n, "YAML anchors are not supported");
    *out = n;
    if (n->type != PF_NODE_SCALAR) {
        if (++t->depth > MAX_DEPTH) {
            pf_err_at(t->err, n, "nesting deeper than %d levels", MAX_DEPTH);
            rc = -EINVAL;
        } else {
            rc = n->type == PF_NODE_SEQ ? parse_seq(t, n) : parse_map(t, n);
        }
        t->depth--;
    }
    yaml_event_delete(ev);
    if (rc < 0) {
        pf_conf_node_free(n);
        *out = NULL;
    }
    return rc;
}

/* Expect an event of type want (anything else is a syntax error). */
static int expect_event(struct tree *t, yaml_event_type_t want, yaml_event_t *ev)
{
    if (next_event(t, ev) < 0)
        return -EINVAL;
    if (ev->type == want)
        return 0;
    struct pf_conf_node at = {.line = (unsigned)ev->start_mark.line + 1,
                              .col = (unsigned)ev->start_mark.column + 1};
    pf_err_at(t->err, &at, "only one YAML document is allowed");
    yaml_event_delete(ev);
    return -EINVAL;
}

static int parse_stream(struct tree *t, struct pf_conf_node **root)
{
    yaml_event_t ev;

    if (expect_event(t, YAML_STREAM_START_EVENT, &ev) < 0)
        return -EINVAL;
    yaml_event_delete(&ev);
    if (next_event(t, &ev) < 0)
        return -EINVAL;
    if (ev.type == YAML_STREAM_END_EVENT) {
        yaml_event_delete(&ev);
        return 0;
    }
    yaml_event_delete(&ev); /* DOCUMENT_START */
    if (next_event(t, &ev) < 0 || parse_node(t, &ev, root) < 0)
        return -EINVAL;
    if (expect_event(t, YAML_DOCUMENT_END_EVENT, &ev) < 0)
        return -EINVAL;
    yaml_event_delete(&ev);
    if (expect_event(t, YAML_STREAM_END_EVENT, &ev) < 0)
        return -EINVAL;
    yaml_event_delete(&ev);
    return 0;
}

int pf_conf_node_parse(const char *yaml, size_t len, struct pf_conf_node **root, struct pf_err *err)
{
    struct tree t = {.err = err, .depth = 0};
    int rc;

    *root = NULL;
    if (!yaml_parser_initialize(&t.parser))
        return -ENOMEM;
    yaml_parser_set_input_string(&t.parser, (const unsigned char *)yaml, len);
    rc = parse_stream(&t, root);
    yaml_parser_delete(&t.parser);
    if (rc < 0) {
        pf_conf_node_free(*root);
        *root = NULL;
    }
    return rc;
}

const struct pf_conf_node *pf_conf_get(const struct pf_conf_node *n, const char *key)
{
    if (n == NULL || n->type != PF_NODE_MAP)
        return NULL;
    for (unsigned i = 0; i < n->n_items; i++) {
        if (strcmp(n->items[i]->key, key) == 0)
            return n->items[i];
    }
    return NULL;
}

bool pf_conf_is_null(const struct pf_conf_node *n)
{
    if (n == NULL || n->type != PF_NODE_SCALAR || n->quoted)
        return false;
    return n->value[0] == '\0' || strcmp(n->value, "~") == 0 || strcmp(n->value, "null") == 0 ||
           strcmp(n->value, "Null") == 0 || strcmp(n->value, "NULL") == 0;
}

/* ---- node to JSON ---- */

static void json_str(struct evbuffer *out, const char *s)
{
    evbuffer_add(out, "\"", 1);
    pf_json_escape(out, s, strlen(s));
    evbuffer_add(out, "\"", 1);
}

static void json_key(struct evbuffer *out, unsigned i, const char *key)
{
    if (i > 0)
        evbuffer_add(out, ",", 1);
    json_str(out, key);
    evbuffer_add(out, ":", 1);
}

static bool json_is_number(const char *s)
{
    if (*s == '-')
        s++;
    if (*s == '0')
        s++;
    else if (*s >= '1' && *s <= '9')
        s += strspn(s, "0123456789");
    else
        return false;
    if (*s == '.' && s[1] >= '0' && s[1] <= '9')
        s += 1 + strspn(s + 1, "0123456789");
    return *s == '\0';
}

static bool is_secret_key(const char *key)
{
    return strcmp(key, "password") == 0 || strcmp(key, "token") == 0;
}

void pf_conf_node_to_json(const struct pf_conf_node *n, struct evbuffer *out)
{
    bool map = n->type == PF_NODE_MAP;

    if (n->type == PF_NODE_SCALAR) {
        if (pf_conf_is_null(n))
            evbuffer_add_printf(out, "null");
        else if (!n->quoted && (json_is_number(n->value) || strcmp(n->value, "true") == 0 ||
                                strcmp(n->value, "false") == 0))
            evbuffer_add_printf(out, "%s", n->value);
        else
            json_str(out, n->value);
        return;
    }
    evbuffer_add(out, map ? "{" : "[", 1);
    for (unsigned i = 0; i < n->n_items; i++) {
        const struct pf_conf_node *v = n->items[i];
        if (map)
            json_key(out, i, v->key);
        else if (i > 0)
            evbuffer_add(out, ",", 1);
        if (map && is_secret_key(v->key) && !pf_conf_is_null(v) &&
            (v->type != PF_NODE_SCALAR || v->value[0] != '\0'))
            json_str(out, "<redacted>");
        else
            pf_conf_node_to_json(v, out);
    }
    evbuffer_add(out, map ? "}" : "]", 1);
}

/* ---- scalar parsers ---- */

/* "12" or "12.345": integer part, fraction digits and 10^(their count). */
static int parse_decimal(const char **sp, uint64_t *ip, uint64_t *frac, uint64_t *scale)
{
    const char *s = *sp;

    *ip = 0;
    *frac = 0;
    *scale = 1;
    if (*s < '0' || *s > '9')
        return -EINVAL;
    for (; *s >= '0' && *s <= '9'; s++) {
        if (__builtin_mul_overflow(*ip, 10, ip) || __builtin_add_overflow(*ip, *s - '0', ip))
            return -EINVAL;
    }
    if (*s == '.') {
        s++;
        if (*s < '0' || *s > '9')
            return -EINVAL;
        for (unsigned digits = 0; *s >= '0' && *s <= '9'; s++) {
            if (++digits > MAX_FRAC_DIG)
                return -EINVAL;
            *frac = *frac * 10 + (uint64_t)(*s - '0');
            *scale *= 10;
        }
    }
    *sp = s;
    return 0;
}

/* (ip + frac/scale) * mult, which must be a whole number that fits. */
static int scale_value(uint64_t ip, uint64_t frac, uint64_t scale, uint64_t mult, uint64_t *out)
{
    uint64_t a, b;

    if (__builtin_mul_overflow(ip, mult, &a) || __builtin_mul_overflow(frac, mult, &b))
        return -EINVAL;
    if (b % scale != 0)
        return -EINVAL;
    if (__builtin_add_overflow(a, b / scale, out))
        return -EINVAL;
    return 0;
}

struct unit {
    const char *name; /* suffix */
    uint64_t mult;    /* value of one */
};

static const struct unit duration_units[] = {
    {"", 1000}, {"ms", 1}, {"s", 1000}, {"m", 60000}, {"h", 3600000}, {NULL, 0},
};

static const struct unit size_units[] = {
    {"", 1},
    {"b", 1},
    {"k", 1ull << 10},
    {"kb", 1ull << 10},
    {"kib", 1ull << 10},
    {"m", 1ull << 20},
    {"mb", 1ull << 20},
    {"mib", 1ull << 20},
    {"g", 1ull << 30},
    {"gb", 1ull << 30},
    {"gib", 1ull << 30},
    {"t", 1ull << 40},
    {"tb", 1ull << 40},
    {"tib", 1ull << 40},
    {NULL, 0},
};

static int parse_with_units(const char *s, const struct unit *units, bool icase, uint64_t *out)
{
    uint64_t ip, frac, scale;

    if (s == NULL || parse_decimal(&s, &ip, &frac, &scale) < 0)
        return -EINVAL;
    for (const struct unit *u = units; u->name != NULL; u++) {
        if ((icase ? strcasecmp(s, u->name) : strcmp(s, u->name)) == 0)
            return scale_value(ip, frac, scale, u->mult, out);
    }
    return -EINVAL;
}

int pf_parse_duration_ms(const char *s, uint64_t *ms)
{
    return parse_with_units(s, duration_units, false, ms);
}

int pf_parse_size(const char *s, uint64_t *bytes)
{
    return parse_with_units(s, size_units, true, bytes);
}

int pf_parse_percent(const char *s, double *ratio)
{
    uint64_t ip, frac, scale;

    if (s == NULL || parse_decimal(&s, &ip, &frac, &scale) < 0)
        return -EINVAL;
    if (strcmp(s, "%") != 0)
        return -EINVAL;
    *ratio = ((double)ip + (double)frac / (double)scale) / 100.0;
    return 0;
}

int pf_parse_bool(const char *s, bool *b)
{
    static const char *const yes[] = {"true", "yes", "on", NULL};
    static const char *const no[] = {"false", "no", "off", NULL};

    if (s == NULL)
        return -EINVAL;
    for (unsigned i = 0; yes[i] != NULL; i++) {
        if (strcasecmp(s, yes[i]) == 0) {
            *b = true;
            return 0;
        }
        if (strcasecmp(s, no[i]) == 0) {
            *b = false;
            return 0;
        }
    }
    return -EINVAL;
}

/* Strict decimal integer: optional '-', digits, nothing else. */
static int parse_int(const char *s, int64_t *v)
{
    const char *p = s[0] == '-' ? s + 1 : s;
    char *end;

    if (*p < '0' || *p > '9')
        return -EINVAL;
    errno = 0;
    long long x = strtoll(s, &end, 10);
    if (errno != 0 || *end != '\0')
        return -EINVAL;
    *v = x;
    return 0;
}

/* Strict decimal number: [-]digits[.digits][e[+-]digits]. */
static int parse_double(const char *s, double *v)
{
    const char *p = s[0] == '-' ? s + 1 : s;
    char *end;

    if (*p < '0' || *p > '9')
        return -EINVAL;
    for (; *p != '\0'; p++) {
        if (!strchr("0123456789.eE+-", *p))
            return -EINVAL;
    }
    errno = 0;
    double x = strtod(s, &end);
    if (errno != 0 || *end != '\0' || !isfinite(x))
        return -EINVAL;
    *v = x;
    return 0;
}

void pf_conf_format_duration(uint64_t ms, char *buf, size_t size)
{
    if (ms != 0 && ms % 3600000 == 0)
        snprintf(buf, size, "%lluh", (unsigned long long)(ms / 3600000));
    else if (ms != 0 && ms % 60000 == 0)
        snprintf(buf, size, "%llum", (unsigned long long)(ms / 60000));
    else if (ms % 1000 == 0)
        snprintf(buf, size, "%llus", (unsigned long long)(ms / 1000));
    else
        snprintf(buf, size, "%llums", (unsigned long long)ms);
}

static void format_size(uint64_t b, char *buf, size_t size)
{
    static const char *const names[] = {"TiB", "GiB", "MiB", "KiB"};

    for (unsigned i = 0; i < 4; i++) {
        uint64_t unit = 1ull << (40 - 10 * i);
        if (b != 0 && b % unit == 0) {
            snprintf(buf, size, "%llu%s", (unsigned long long)(b / unit), names[i]);
            return;
        }
    }
    snprintf(buf, size, "%llu", (unsigned long long)b);
}

/* ---- key tables ---- */

struct fill {
    const char *section;          /* "limits", NULL for the top level */
    const struct pf_conf_key *k;  /* the key being filled */
    const struct pf_conf_node *n; /* its value */
    void *field;                  /* where it goes */
    struct pf_err *err;           /* where errors go */
};

/* "limits.max_body_size" or "workers" for messages. */
static void key_path(const struct fill *f, char *buf, size_t size)
{
    if (f->section != NULL)
        snprintf(buf, size, "%s.%s", f->section, f->k->name);
    else
        snprintf(buf, size, "%s", f->k->name);
}

static void fill_error_at(const struct fill *f, const struct pf_conf_node *n, const char *what)
{
    char path[256];

    key_path(f, path, sizeof(path));
    pf_err_at(f->err, n, "%s: %s", path, what);
}

static void fill_error(const struct fill *f, const char *what)
{
    fill_error_at(f, f->n, what);
}

static bool bounded(const struct pf_conf_key *k)
{
    return k->min != 0 || k->max != 0;
}

static void bounds_error(const struct fill *f, const char *lo, const char *hi)
{
    char msg[160];

    snprintf(msg, sizeof(msg), "must be between %s and %s", lo, hi);
    fill_error(f, msg);
}

static void fill_percent(const struct fill *f)
{
    double lo = bounded(f->k) ? f->k->min : 0, hi = bounded(f->k) ? f->k->max : 1, v;
    char a[48], b[48];

    if (pf_parse_percent(f->n->value, &v) < 0) {
        fill_error(f, "expected a percentage like 20%");
    } else if (v < lo || v > hi) {
        snprintf(a, sizeof(a), "%g%%", lo * 100);
        snprintf(b, sizeof(b), "%g%%", hi * 100);
        bounds_error(f, a, b);
    } else {
        *(double *)f->field = v;
    }
}

/* Bounds of an INT, UINT or DOUBLE key (the type's range when none). */
static void number_bounds(const struct pf_conf_key *k, double *lo, double *hi)
{
    if (bounded(k)) {
        *lo = k->min;
        *hi = k->max;
    } else if (k->kind == PF_CONF_INT) {
        *lo = (double)INT64_MIN;
        *hi = (double)INT64_MAX;
    } else if (k->kind == PF_CONF_UINT) {
        *lo = 0;
        *hi = UINT_MAX;
    } else {
        *lo = -HUGE_VAL;
        *hi = HUGE_VAL;
    }
}

/* INT, UINT and DOUBLE values, checked against their bounds. */
static void fill_number(const struct fill *f)
{
    enum pf_conf_kind kind = f->k->kind;
    double lo, hi, v = 0;
    int64_t i = 0;
    char a[48], b[48];

    number_bounds(f->k, &lo, &hi);
    if (kind == PF_CONF_DOUBLE ? parse_double(f->n->value, &v) < 0
                               : parse_int(f->n->value, &i) < 0) {
        fill_error(f, kind == PF_CONF_DOUBLE ? "expected a number" : "expected an integer");
        return;
    }
    if (kind != PF_CONF_DOUBLE)
        v = (double)i;
    if (v < lo || v > hi) {
        snprintf(a, sizeof(a), "%.15g", lo);
        snprintf(b, sizeof(b), "%.15g", hi);
        bounds_error(f, a, b);
    } else if (kind == PF_CONF_INT) {
        *(int64_t *)f->field = i;
    } else if (kind == PF_CONF_UINT) {
        *(unsigned *)f->field = (unsigned)i;
    } else {
        *(double *)f->field = v;
    }
}

/* DURATION and SIZE values. */
static void fill_unit(const struct fill *f)
{
    bool dur = f->k->kind == PF_CONF_DURATION;
    uint64_t v;
    char a[48], b[48];

    if ((dur ? pf_parse_duration_ms(f->n->value, &v) : pf_parse_size(f->n->value, &v)) < 0) {
        fill_error(f, dur ? "expected a duration like 250ms, 5s, 2m or 1h"
                          : "expected a size like 512, 64KiB or 1MiB");
        return;
    }
    if (bounded(f->k) && ((double)v < f->k->min || (double)v > f->k->max)) {
        if (dur) {
            pf_conf_format_duration((uint64_t)f->k->min, a, sizeof(a));
            pf_conf_format_duration((uint64_t)f->k->max, b, sizeof(b));
        } else {
            format_size((uint64_t)f->k->min, a, sizeof(a));
            format_size((uint64_t)f->k->max, b, sizeof(b));
        }
        bounds_error(f, a, b);
        return;
    }
    *(uint64_t *)f->field = v;
}

static void strlist_free(struct pf_strlist *l)
{
    for (unsigned i = 0; i < l->n; i++)
        free(l->v[i]);
    free(l->v);
    l->v = NULL;
    l->n = 0;
}

static void fill_strlist(const struct fill *f)
{
    struct pf_strlist *l = f->field;
    const struct pf_conf_node *n = f->n;

    if (n->type == PF_NODE_MAP) {
        fill_error(f, "expected a list");
        return;
    }
    for (unsigned i = 0; n->type == PF_NODE_SEQ && i < n->n_items; i++) {
        if (n->items[i]->type != PF_NODE_SCALAR) {
            fill_error_at(f, n->items[i], "expected a list of scalars");
            return;
        }
    }
    strlist_free(l);
    if (n->type == PF_NODE_SCALAR) {
        l->v = pf_xmalloc(sizeof(*l->v));
        l->v[l->n++] = pf_xstrdup(n->value);
        return;
    }
    l->v = pf_xcalloc(n->n_items ? n->n_items : 1, sizeof(*l->v));
    for (unsigned i = 0; i < n->n_items; i++)
        l->v[l->n++] = pf_xstrdup(n->items[i]->value);
}

static void fill_one(const struct fill *f)
{
    enum pf_conf_kind kind = f->k->kind;
    bool b;

    if (kind == PF_CONF_CUSTOM) {
        unsigned before = f->err->n;
        if (f->k->parse(f->n, f->field, f->err) < 0 && f->err->n == before)
            fill_error(f, "invalid value");
        return;
    }
    if (kind == PF_CONF_STRLIST) {
        fill_strlist(f);
        return;
    }
    if (f->n->type != PF_NODE_SCALAR) {
        fill_error(f, "expected a scalar");
        return;
    }
    switch (kind) {
    case PF_CONF_BOOL:
        if (pf_parse_bool(f->n->value, &b) < 0)
            fill_error(f, "expected true or false");
        else
            *(bool *)f->field = b;
        break;
    case PF_CONF_PERCENT:
        fill_percent(f);
        break;
    case PF_CONF_DURATION:
    case PF_CONF_SIZE:
        fill_unit(f);
        break;
    case PF_CONF_STRING:
        free(*(char **)f->field);
        *(char **)f->field = pf_xstrdup(f->n->value);
        break;
    default:
        fill_number(f);
        break;
    }
}

int pf_conf_fill_section(const struct pf_conf_node *n, const char *section,
                         const struct pf_conf_key *keys, void *dst, struct pf_err *err)
{
    unsigned before = err->n;

    if (n == NULL || pf_conf_is_null(n))
        return 0;
    if (n->type != PF_NODE_MAP) {
        pf_err_at(err, n, "%s: expected a map", section != NULL ? section : "configuration");
        return -EINVAL;
    }
    for (unsigned i = 0; i < n->n_items; i++) {
        const struct pf_conf_node *item = n->items[i];
        const struct pf_conf_key *k = keys;
        while (k->name != NULL && strcmp(k->name, item->key) != 0)
            k++;
        if (k->name == NULL) {
            char hint[96];

            pf_conf_hint(item->key, keys, hint, sizeof(hint));
            if (section != NULL)
                pf_err_at(err, item->key_node, "unknown key '%s' in %s%s", item->key, section,
                          hint);
            else
                pf_err_at(err, item->key_node, "unknown key '%s' at the top level%s", item->key,
                          hint);
            continue;
        }
        struct fill f = {section, k, item, (char *)dst + k->offset, err};
        fill_one(&f);
    }
    return err->n == before ? 0 : -EINVAL;
}

int pf_conf_fill(const struct pf_conf_node *n, const struct pf_conf_key *keys, void *dst,
                 struct pf_err *err)
{
    return pf_conf_fill_section(n, n != NULL ? n->key : NULL, keys, dst, err);
}

void pf_conf_fields_free(const struct pf_conf_key *keys, void *dst)
{
    for (const struct pf_conf_key *k = keys; k->name != NULL; k++) {
        void *field = (char *)dst + k->offset;
        if (k->kind == PF_CONF_STRING) {
            free(*(char **)field);
            *(char **)field = NULL;
        } else if (k->kind == PF_CONF_STRLIST) {
            strlist_free(field);
        }
    }
}
