/*
 * pilotfish inject: the documents (workloads, kind: List, the ConfigMap of
 * --config) and the command line. The whole output is built in memory and
 * written only when every document went through: an error leaves nothing
 * half-written.
 */
#include "proxy/inject/inject.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proxy/arena.h"
#include "proxy/inject/ydoc.h"

/* Where the pod spec of each workload kind is. */
static const struct {
    const char *kind;
    const char *path[6];
} pod_paths[] = {
    {"Pod", {"spec", NULL}},
    {"Deployment", {"spec", "template", "spec", NULL}},
    {"StatefulSet", {"spec", "template", "spec", NULL}},
    {"DaemonSet", {"spec", "template", "spec", NULL}},
    {"ReplicaSet", {"spec", "template", "spec", NULL}},
    {"ReplicationController", {"spec", "template", "spec", NULL}},
    {"Job", {"spec", "template", "spec", NULL}},
    {"CronJob", {"spec", "jobTemplate", "spec", "template", "spec", NULL}},
    {"PodTemplate", {"template", "spec", NULL}},
};

struct walk {
    const struct pf_inject_opts *o;
    struct pf_inject_err *err;
    const char *input;
    unsigned pods;         /* pod templates seen */
    bool config_map_found; /* the ConfigMap of --config is in the input */
    char *config_text;     /* --config FILE's contents */
    char namespace[254];   /* of the first workload that has one */
};

int pf_inject_fail(struct pf_inject_err *err, const char *fmt, ...)
{
    va_list ap;

    if (!err->set) {
        va_start(ap, fmt);
        vsnprintf(err->msg, sizeof(err->msg), fmt, ap);
        va_end(ap);
        err->set = true;
    }
    return -1;
}

/* The ConfigMap of --config met in the input: its text is replaced (idempotent re-injection). */
static void config_map_seen(yaml_document_t *d, int obj, struct walk *w)
{
    const char *meta[] = {"metadata", "name", NULL};
    const char *name = pf_y_str(d, pf_y_path(d, obj, meta));
    int data;

    if (w->config_text == NULL || name == NULL || strcmp(name, w->o->config_map) != 0)
        return;
    w->config_map_found = true;
    data = pf_y_want(d, obj, "data", YAML_MAPPING_NODE);
    if (data != 0)
        pf_y_set(d, data, "pilotfish.yaml",
                 pf_y_scalar(d, w->config_text, YAML_LITERAL_SCALAR_STYLE));
}

static int object(yaml_document_t *d, int obj, struct walk *w, int line);

static int list(yaml_document_t *d, int obj, struct walk *w)
{
    int items = pf_y_get(d, obj, "items");

    for (int i = 0; i < pf_y_len(d, items); i++) {
        int item = pf_y_at(d, items, i);

        if (object(d, item, w, (int)pf_y_node(d, item)->start_mark.line + 1) != 0)
            return -1;
    }
    return 0;
}

/* One Kubernetes object: a workload gets the sidecar, a List each item, the rest stays. */
static int object(yaml_document_t *d, int obj, struct walk *w, int line)
{
    const char *meta_name[] = {"metadata", "name", NULL};
    const char *meta_ns[] = {"metadata", "namespace", NULL};
    const char *kind = pf_y_str(d, pf_y_get(d, obj, "kind"));
    const char *name = pf_y_str(d, pf_y_path(d, obj, meta_name));
    const char *ns = pf_y_str(d, pf_y_path(d, obj, meta_ns));
    char what[300];

    if (!pf_y_is(d, obj, YAML_MAPPING_NODE) || kind == NULL)
        return pf_inject_fail(w->err, "%s:%d: not a Kubernetes object (no 'kind')", w->input, line);
    if (strcmp(kind, "List") == 0 ||
        (strlen(kind) > 4 && strcmp(kind + strlen(kind) - 4, "List") == 0))
        return list(d, obj, w);
    if (strcmp(kind, "ConfigMap") == 0)
        config_map_seen(d, obj, w);
    for (size_t i = 0; i < sizeof(pod_paths) / sizeof(pod_paths[0]); i++) {
        int spec;

        if (strcmp(kind, pod_paths[i].kind) != 0)
            continue;
        snprintf(what, sizeof(what), "%s:%d: %s/%s", w->input, line, kind, name ? name : "?");
        spec = pf_y_path(d, obj, pod_paths[i].path);
        if (spec == 0) {
            char path[64] = "";

            for (int k = 0; pod_paths[i].path[k] != NULL; k++)
                snprintf(path + strlen(path), sizeof(path) - strlen(path), "%s%s", k ? "." : "",
                         pod_paths[i].path[k]);
            return pf_inject_fail(w->err, "%s: no pod template (%s)", what, path);
        }
        if (ns != NULL && w->namespace[0] == '\0')
            snprintf(w->namespace, sizeof(w->namespace), "%s", ns);
        w->pods++;
        return pf_inject_pod(d, spec, w->o, what, w->err);
    }
    return 0;
}

/* The ConfigMap of --config, as a new document. */
static void config_map_doc(yaml_document_t *d, const struct walk *w)
{
    int root, meta, data;

    yaml_document_initialize(d, NULL, NULL, NULL, 1, 1);
    root = pf_y_map(d);
    pf_y_set(d, root, "apiVersion", pf_y_scalar(d, "v1", YAML_PLAIN_SCALAR_STYLE));
    pf_y_set(d, root, "kind", pf_y_scalar(d, "ConfigMap", YAML_PLAIN_SCALAR_STYLE));
    meta = pf_y_map(d);
    pf_y_set(d, meta, "name", pf_y_scalar(d, w->o->config_map, YAML_DOUBLE_QUOTED_SCALAR_STYLE));
    if (w->namespace[0] != '\0')
        pf_y_set(d, meta, "namespace",
                 pf_y_scalar(d, w->namespace, YAML_DOUBLE_QUOTED_SCALAR_STYLE));
    pf_y_set(d, root, "metadata", meta);
    data = pf_y_map(d);
    pf_y_set(d, data, "pilotfish.yaml", pf_y_scalar(d, w->config_text, YAML_LITERAL_SCALAR_STYLE));
    pf_y_set(d, root, "data", data);
}

struct out {
    char *buf;
    size_t len, cap;
};

static int out_write(void *data, unsigned char *buf, size_t size)
{
    struct out *o = data;

    if (o->len + size + 1 > o->cap) {
        o->cap = (o->len + size + 1) * 2;
        o->buf = pf_xrealloc(o->buf, o->cap);
    }
    memcpy(o->buf + o->len, buf, size);
    o->len += size;
    o->buf[o->len] = '\0';
    return 1;
}

/* Is document d empty ("---" alone, or a null)? Such documents are dropped. */
static bool doc_empty(yaml_document_t *d)
{
    const char *s = pf_y_str(d, 1);

    return s != NULL && (s[0] == '\0' || strcmp(s, "null") == 0 || strcmp(s, "~") == 0);
}

/* Load every document of the parser into docs[]; -1 on a YAML error. */
static int load_all(yaml_parser_t *p, yaml_document_t **docs, unsigned *n, struct walk *w)
{
    unsigned cap = 0;

    for (;;) {
        yaml_document_t d;

        if (!yaml_parser_load(p, &d))
            return pf_inject_fail(w->err, "%s:%zu:%zu: not YAML: %s %s", w->input,
                                  p->problem_mark.line + 1, p->problem_mark.column + 1,
                                  p->problem ? p->problem : "error", p->context ? p->context : "");
        if (yaml_document_get_root_node(&d) == NULL) {
            yaml_document_delete(&d);
            return 0;
        }
        if (doc_empty(&d)) {
            yaml_document_delete(&d);
            continue;
        }
        if (*n == cap) {
            cap = cap ? cap * 2 : 8;
            *docs = pf_xrealloc(*docs, cap * sizeof(**docs));
        }
        (*docs)[(*n)++] = d;
    }
}

/* Emit docs[] (the emitter deletes each one) and the ConfigMap; the text or NULL. */
static char *emit_all(yaml_document_t *docs, unsigned n, struct walk *w, size_t *out_len)
{
    yaml_emitter_t e;
    struct out out = {0};
    bool ok;
    unsigned i = 0;

    yaml_emitter_initialize(&e);
    yaml_emitter_set_output(&e, out_write, &out);
    yaml_emitter_set_unicode(&e, 1);
    yaml_emitter_set_width(&e, -1);
    yaml_emitter_set_indent(&e, 2);
    ok = yaml_emitter_open(&e);
    for (; ok && i < n; i++)
        ok = yaml_emitter_dump(&e, &docs[i]);
    if (ok && w->config_text != NULL && !w->config_map_found) {
        yaml_document_t cm;

        config_map_doc(&cm, w);
        ok = yaml_emitter_dump(&e, &cm);
    }
    ok = ok && yaml_emitter_close(&e);
    for (; i < n; i++)
        yaml_document_delete(&docs[i]);
    if (!ok) {
        pf_inject_fail(w->err, "%s: cannot write YAML: %s", w->input,
                       e.problem ? e.problem : "error");
        free(out.buf);
        out.buf = NULL;
    }
    yaml_emitter_delete(&e);
    *out_len = out.len;
    return out.buf;
}

/* Every input, loaded and injected in turn; emitted only when all went through. */
static char *inject_texts(const struct pf_inject_input *in, unsigned n_in, struct walk *w,
                          size_t *out_len)
{
    yaml_document_t *docs = NULL;
    unsigned n = 0, i = 0;
    char *out = NULL;

    for (unsigned f = 0; f < n_in && !w->err->set; f++) {
        yaml_parser_t p;
        unsigned first = n;

        w->input = in[f].name;
        yaml_parser_initialize(&p);
        yaml_parser_set_input_string(&p, (const unsigned char *)in[f].text, in[f].len);
        if (load_all(&p, &docs, &n, w) == 0) {
            for (i = first; i < n; i++) {
                int line = (int)yaml_document_get_root_node(&docs[i])->start_mark.line + 1;

                if (object(&docs[i], 1, w, line) != 0)
                    break;
            }
        }
        yaml_parser_delete(&p);
    }
    if (!w->err->set && w->pods == 0)
        pf_inject_fail(
            w->err,
            "%s: no pod template: no Pod, Deployment, StatefulSet, DaemonSet, ReplicaSet, "
            "Job or CronJob",
            n_in == 1 ? in[0].name : "the inputs");
    if (!w->err->set) {
        out = emit_all(docs, n, w, out_len); /* deletes the documents */
        n = 0;
    }
    for (i = 0; i < n; i++)
        yaml_document_delete(&docs[i]);
    free(docs);
    return out;
}

char *pf_inject_texts(const struct pf_inject_input *in, unsigned n, const struct pf_inject_opts *o,
                      size_t *out_len, struct pf_inject_err *err)
{
    struct walk w = {.o = o, .err = err, .input = ""};

    w.config_text = o->config_text;
    return inject_texts(in, n, &w, out_len);
}

char *pf_inject_text(const char *text, size_t len, const char *name, const struct pf_inject_opts *o,
                     size_t *out_len, struct pf_inject_err *err)
{
    struct pf_inject_input in = {text, len, name};

    return pf_inject_texts(&in, 1, o, out_len, err);
}
