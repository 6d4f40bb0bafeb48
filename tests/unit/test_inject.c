/*
 * Unit tests of proxy/inject/: the sidecar added to pod templates, the
 * named-port takeover, idempotence, the ConfigMap of --config, errors, and
 * the YAML document helpers.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "proxy/inject/inject.h"
#include "proxy/inject/ydoc.h"

static const char deploy[] = "apiVersion: apps/v1\n"
                             "kind: Deployment\n"
                             "metadata: {name: web}\n"
                             "spec:\n"
                             "  template:\n"
                             "    spec:\n"
                             "      terminationGracePeriodSeconds: 5\n"
                             "      containers:\n"
                             "      - name: app\n"
                             "        image: web:1\n"
                             "        ports:\n"
                             "        - {name: http, containerPort: 3000}\n"
                             "        livenessProbe: {httpGet: {path: /, port: http}}\n";

static struct pf_inject_opts opts(void)
{
    struct pf_inject_opts o = {.image = "pilotfish:1",
                               .config_map = "pilotfish",
                               .proxy_port = 8080,
                               .probes_port = 9902,
                               .grace_s = 15};
    return o;
}

static char *run(const char *in, const struct pf_inject_opts *o, struct pf_inject_err *err)
{
    size_t len = 0;
    char *out;

    memset(err, 0, sizeof(*err));
    out = pf_inject_text(in, strlen(in), "t.yaml", o, &len, err);
    if (out != NULL)
        assert_int_equal(strlen(out), len);
    return out;
}

static void test_native_sidecar(void **state)
{
    struct pf_inject_opts o = opts();
    struct pf_inject_err err;
    char *out = run(deploy, &o, &err);

    (void)state;
    assert_non_null(out);
    assert_non_null(strstr(out, "initContainers:\n      - name: pilotfish\n"));
    assert_non_null(strstr(out, "restartPolicy: Always\n"));
    assert_non_null(strstr(out, "startupProbe:"));
    assert_non_null(strstr(out, "readOnlyRootFilesystem: true"));
    assert_non_null(strstr(out, "drop:\n"));
    assert_non_null(strstr(out, "image: \"pilotfish:1\""));
    assert_non_null(strstr(out, "terminationGracePeriodSeconds: 15\n")); /* 5 raised */
    assert_null(strstr(out, "preStop"));
    /* no --port: the app's port is as it was */
    assert_non_null(strstr(out, "{name: http, containerPort: 3000}"));
    assert_non_null(strstr(out, "name: pf-http\n"));
    free(out);
}

static void test_idempotent(void **state)
{
    struct pf_inject_opts o = opts();
    struct pf_inject_err err;
    char *once, *twice;

    (void)state;
    o.port = "http";
    once = run(deploy, &o, &err);
    assert_non_null(once);
    twice = run(once, &o, &err);
    assert_non_null(twice);
    assert_string_equal(once, twice);
    free(once);
    free(twice);
}

static void test_port_takeover(void **state)
{
    struct pf_inject_opts o = opts();
    struct pf_inject_err err;
    char *out;

    (void)state;
    o.port = "http";
    out = run(deploy, &o, &err);
    assert_non_null(out);
    assert_non_null(strstr(out, "{name: app-http, containerPort: 3000}"));
    assert_non_null(strstr(out, "port: app-http}")); /* the app's probe follows */
    assert_non_null(strstr(out, "- name: http\n          containerPort: 8080\n"));
    free(out);
    /* a port that is not there: an error naming the ones that are */
    o.port = "grpc";
    assert_null(run(deploy, &o, &err));
    assert_true(err.set);
    assert_non_null(strstr(err.msg, "t.yaml:1: Deployment/web: no container port named 'grpc'"));
    assert_non_null(strstr(err.msg, "(named ports: http)"));
    /* the app on pilotfish's own port */
    o.port = "http";
    o.proxy_port = 3000;
    assert_null(run(deploy, &o, &err));
    assert_non_null(strstr(err.msg, "port 'http' is 3000"));
}

static void test_legacy_sidecar(void **state)
{
    struct pf_inject_opts o = opts();
    struct pf_inject_err err;
    char *out, *pilot, *app;

    (void)state;
    o.legacy = true;
    out = run(deploy, &o, &err);
    assert_non_null(out);
    pilot = strstr(out, "- name: pilotfish");
    app = strstr(out, "- name: app");
    assert_non_null(pilot);
    assert_true(pilot < app); /* first container */
    assert_null(strstr(out, "initContainers"));
    assert_non_null(strstr(out, "preStop:"));
    assert_non_null(strstr(out, "terminationGracePeriodSeconds: 20\n")); /* + the preStop sleep */
    free(out);
}

/* Two pods that share their containers through an anchor: both get the volume. */
static void test_shared_containers(void **state)
{
    static const char in[] = "kind: List\n"
                             "items:\n"
                             "- kind: Pod\n"
                             "  spec: {containers: &c [{name: a, image: a}]}\n"
                             "- kind: Pod\n"
                             "  spec: {terminationGracePeriodSeconds: 1, containers: *c}\n";
    struct pf_inject_opts o = opts();
    struct pf_inject_err err;
    char *out, *p;
    int n = 0;

    (void)state;
    o.legacy = true;
    out = run(in, &o, &err);
    assert_non_null(out);
    for (p = out; (p = strstr(p, "configMap: {name: \"pilotfish\"}")) != NULL; p++)
        n++;
    assert_int_equal(n, 2);
    assert_null(strstr(out, "terminationGracePeriodSeconds: 1,"));
    free(out);
}

static void test_errors(void **state)
{
    static const struct {
        const char *in, *want;
    } cases[] = {
        {"kind: Pod\nspec: {containers: [\n", "t.yaml:3:1: not YAML"},
        {"apiVersion: v1\nkind: Service\n", "no pod template"},
        {"just text\n", "t.yaml:1: not a Kubernetes object"},
        {"kind: Pod\nmetadata: {name: p}\nspec: {containers: []}\n", "Pod/p: the pod spec has no"},
        {"kind: CronJob\nmetadata: {name: c}\nspec: {schedule: x}\n",
         "CronJob/c: no pod template (spec.jobTemplate.spec.template.spec)"},
        {"kind: Pod\nspec: {containers: [{name: a}], initContainers: 3}\n", "not a list"},
    };
    struct pf_inject_opts o = opts();
    struct pf_inject_err err;

    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        assert_null(run(cases[i].in, &o, &err));
        assert_true(err.set);
        if (strstr(err.msg, cases[i].want) == NULL)
            fail_msg("case %zu: '%s' lacks '%s'", i, err.msg, cases[i].want);
    }
}

static void test_kinds_and_list(void **state)
{
    static const char in[] = "kind: List\n"
                             "items:\n"
                             "- kind: CronJob\n"
                             "  metadata: {name: c}\n"
                             "  spec: {jobTemplate: {spec: {template: {spec: {containers: "
                             "[{name: a, image: a}]}}}}}\n"
                             "- kind: Service\n"
                             "  metadata: {name: s}\n"
                             "---\n"
                             "kind: Pod\n"
                             "spec: {containers: [{name: b, image: b}]}\n";
    struct pf_inject_opts o = opts();
    struct pf_inject_err err;
    char *out = run(in, &o, &err), *p;
    int n = 0;

    (void)state;
    assert_non_null(out);
    for (p = out; (p = strstr(p, "name: pilotfish,")) != NULL; p++)
        n++; /* flow style inside the flow mappings */
    for (p = out; (p = strstr(p, "name: pilotfish\n")) != NULL; p++)
        n++;
    assert_int_equal(n, 2);
    assert_non_null(strstr(out, "- kind: Service\n  metadata: {name: s}\n"));
    free(out);
}

static void test_config_map(void **state)
{
    struct pf_inject_opts o = opts();
    struct pf_inject_err err;
    char text[] = "listen: \":8080\"\nupstreams: {app: {endpoints: [\"127.0.0.1:3000\"]}}\n";
    char *out, *again;

    (void)state;
    o.config = "x.yaml";
    o.config_text = text;
    o.config_map = "pf-web";
    out = run(deploy, &o, &err);
    assert_non_null(out);
    assert_non_null(strstr(out, "---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: "
                                "\"pf-web\"\ndata:\n  pilotfish.yaml: |\n    listen: \":8080\"\n"));
    assert_non_null(strstr(out, "configMap:\n          name: \"pf-web\""));
    again = run(out, &o, &err);
    assert_non_null(again);
    assert_string_equal(out, again); /* the ConfigMap is not emitted twice */
    free(out);
    free(again);
}

static void test_ydoc_helpers(void **state)
{
    static const char in[] = "base: &b {x: 1, y: 2}\n"
                             "m: {<<: *b, y: 3}\n"
                             "s: [a, b]\n";
    yaml_parser_t p;
    yaml_document_t d;
    int m, s;

    (void)state;
    yaml_parser_initialize(&p);
    yaml_parser_set_input_string(&p, (const unsigned char *)in, strlen(in));
    assert_true(yaml_parser_load(&p, &d));
    m = pf_y_get(&d, 1, "m");
    assert_string_equal(pf_y_str(&d, pf_y_get(&d, m, "x")), "1"); /* through the merge */
    assert_string_equal(pf_y_str(&d, pf_y_get(&d, m, "y")), "3"); /* own key first */
    assert_int_equal(pf_y_get(&d, m, "z"), 0);
    s = pf_y_get(&d, 1, "s");
    pf_y_push(&d, s, pf_y_scalar(&d, "first", YAML_PLAIN_SCALAR_STYLE), true);
    pf_y_push(&d, s, pf_y_scalar(&d, "last", YAML_PLAIN_SCALAR_STYLE), false);
    assert_int_equal(pf_y_len(&d, s), 4);
    assert_string_equal(pf_y_str(&d, pf_y_at(&d, s, 0)), "first");
    assert_string_equal(pf_y_str(&d, pf_y_at(&d, s, 1)), "a");
    assert_string_equal(pf_y_str(&d, pf_y_at(&d, s, 3)), "last");
    assert_int_equal(pf_y_at(&d, s, 4), 0);
    pf_y_set_str(&d, pf_y_at(&d, s, 1), "renamed");
    assert_string_equal(pf_y_str(&d, pf_y_at(&d, s, 1)), "renamed");
    assert_int_equal(pf_y_want(&d, 1, "s", YAML_MAPPING_NODE), 0); /* a type clash */
    assert_true(pf_y_is(&d, pf_y_want(&d, 1, "new", YAML_SEQUENCE_NODE), YAML_SEQUENCE_NODE));
    yaml_document_delete(&d);
    yaml_parser_delete(&p);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_native_sidecar),
        cmocka_unit_test(test_idempotent),
        cmocka_unit_test(test_port_takeover),
        cmocka_unit_test(test_legacy_sidecar),
        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_kinds_and_list),
        cmocka_unit_test(test_config_map),
        cmocka_unit_test(test_ydoc_helpers),
        cmocka_unit_test(test_shared_containers),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
