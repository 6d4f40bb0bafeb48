/*
 * pilotfish inject: one pod spec. Adds the pilotfish container (a native
 * sidecar in initContainers, or the first container with --legacy-sidecar),
 * its configuration volume and a long enough termination grace period, and
 * takes over the app's named port. Nothing else in the pod changes.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proxy/inject/inject.h"
#include "proxy/inject/ydoc.h"

#define PF_INJECT_NAME   "pilotfish"
#define PF_INJECT_VOLUME "pilotfish-config"
#define PF_PROBES_NAME   "pf-probes"
#define PF_PRESTOP_S     5 /* legacy: pilotfish gets SIGTERM this long after the app */

/*
 * The container as YAML text, parsed and copied into d: shorter and easier
 * to read than building it node by node.
 */
static int container_text(char *buf, size_t size, const struct pf_inject_opts *o,
                          const char *port_name)
{
    int n = snprintf(buf, size,
                     "name: " PF_INJECT_NAME "\n"
                     "image: \"%s\"\n"
                     "args: [\"-c\", \"/etc/pilotfish/pilotfish.yaml\"]\n"
                     "ports:\n"
                     "- name: %s\n  containerPort: %u\n"
                     "- name: " PF_PROBES_NAME "\n  containerPort: %u\n"
                     "%s"
                     "%s"
                     "livenessProbe:\n  httpGet: {path: /live, port: " PF_PROBES_NAME "}\n"
                     "  periodSeconds: 10\n"
                     "readinessProbe:\n  httpGet: {path: /ready, port: " PF_PROBES_NAME "}\n"
                     "  periodSeconds: 5\n"
                     "resources:\n"
                     "  requests: {cpu: 50m, memory: 32Mi}\n"
                     "  limits: {memory: 128Mi}\n"
                     "securityContext:\n"
                     "  runAsNonRoot: true\n  runAsUser: 65532\n  runAsGroup: 65532\n"
                     "  readOnlyRootFilesystem: true\n  allowPrivilegeEscalation: false\n"
                     "  capabilities: {drop: [ALL]}\n"
                     "volumeMounts:\n"
                     "- name: " PF_INJECT_VOLUME "\n  mountPath: /etc/pilotfish\n"
                     "  readOnly: true\n",
                     o->image, port_name, o->proxy_port, o->probes_port,
                     o->legacy ? "" : "restartPolicy: Always\n",
                     o->legacy ? "lifecycle:\n  preStop:\n    exec:\n"
                                 "      command: [\"/bin/sleep\", \"5\"]\n"
                               : "startupProbe:\n  httpGet: {path: /live, port: " PF_PROBES_NAME
                                 "}\n  periodSeconds: 1\n  failureThreshold: 30\n");

    return n > 0 && (size_t)n < size ? 0 : -1;
}

/* The pilotfish container, added to d; 0 with err set when the image name does not fit. */
static int container_new(yaml_document_t *d, const struct pf_inject_opts *o, const char *port_name,
                         struct pf_inject_err *err)
{
    char text[4096];
    yaml_parser_t p;
    yaml_document_t tmp;
    int id = 0;

    if (strpbrk(o->image, "\"\\\n") != NULL || container_text(text, sizeof(text), o, port_name))
        return pf_inject_fail(err, "bad image name '%s'", o->image), 0;
    yaml_parser_initialize(&p);
    yaml_parser_set_input_string(&p, (const unsigned char *)text, strlen(text));
    if (yaml_parser_load(&p, &tmp)) {
        if (yaml_document_get_root_node(&tmp) != NULL)
            id = pf_y_copy(d, &tmp, 1);
        yaml_document_delete(&tmp);
    }
    yaml_parser_delete(&p);
    if (id == 0)
        pf_inject_fail(err, "internal error: the container template does not parse");
    return id;
}

/* A container named pilotfish in containers or initContainers: injected already. */
static bool injected(yaml_document_t *d, int spec)
{
    return pf_y_named(d, pf_y_get(d, spec, "containers"), PF_INJECT_NAME) != 0 ||
           pf_y_named(d, pf_y_get(d, spec, "initContainers"), PF_INJECT_NAME) != 0;
}

/* The new name of the app's port: "app-" + name, at most 15 characters, no trailing '-'. */
static void renamed(char *out, const char *name)
{
    size_t n;

    snprintf(out, 16, "app-%s", name);
    n = strlen(out);
    while (n > 0 && out[n - 1] == '-')
        out[--n] = '\0';
}

/* The app's probes and hooks that name the port follow it to its new name. */
static void rename_refs(yaml_document_t *d, int container, const char *from, const char *to)
{
    static const char *const owners[] = {"livenessProbe", "readinessProbe", "startupProbe", NULL};
    static const char *const kinds[] = {"httpGet", "tcpSocket", NULL};

    for (int i = 0; owners[i] != NULL; i++) {
        for (int k = 0; kinds[k] != NULL; k++) {
            const char *path[] = {owners[i], kinds[k], "port", NULL};
            int port = pf_y_path(d, container, path);
            const char *v = pf_y_str(d, port);

            if (v != NULL && strcmp(v, from) == 0)
                pf_y_set_str(d, port, to);
        }
    }
}

/* Every port of every container: is number used, is name used? */
static void ports_in_use(yaml_document_t *d, int spec, unsigned number, const char *name,
                         bool *num_used, bool *name_used)
{
    static const char *const lists[] = {"containers", "initContainers", NULL};

    for (int l = 0; lists[l] != NULL; l++) {
        int cs = pf_y_get(d, spec, lists[l]);

        for (int c = 0; c < pf_y_len(d, cs); c++) {
            int ports = pf_y_get(d, pf_y_at(d, cs, c), "ports");

            for (int i = 0; i < pf_y_len(d, ports); i++) {
                int p = pf_y_at(d, ports, i);
                const char *n = pf_y_str(d, pf_y_get(d, p, "name"));
                const char *v = pf_y_str(d, pf_y_get(d, p, "containerPort"));

                if (v != NULL && strtoul(v, NULL, 10) == number)
                    *num_used = true;
                if (n != NULL && name != NULL && strcmp(n, name) == 0)
                    *name_used = true;
            }
        }
    }
}

/* The names of the app's ports, for the error message of a port that is not there. */
static void port_names(yaml_document_t *d, int containers, char *out, size_t size)
{
    size_t used = 0;

    out[0] = '\0';
    for (int c = 0; c < pf_y_len(d, containers); c++) {
        int ports = pf_y_get(d, pf_y_at(d, containers, c), "ports");

        for (int i = 0; i < pf_y_len(d, ports); i++) {
            const char *n = pf_y_str(d, pf_y_get(d, pf_y_at(d, ports, i), "name"));

            if (n != NULL && used + strlen(n) + 3 < size)
                used += (size_t)snprintf(out + used, size - used, "%s%s", used ? ", " : "", n);
        }
    }
    if (used == 0)
        snprintf(out, size, "none");
}

/* --port NAME: the app's port NAME becomes app-NAME; pilotfish takes NAME. */
static int take_port(yaml_document_t *d, int spec, const struct pf_inject_opts *o, const char *what,
                     struct pf_inject_err *err)
{
    int containers = pf_y_get(d, spec, "containers");
    char to[16], names[256];
    bool num_used = false, name_used = false;

    for (int c = 0; c < pf_y_len(d, containers); c++) {
        int container = pf_y_at(d, containers, c);
        int port = pf_y_named(d, pf_y_get(d, container, "ports"), o->port);
        const char *num;

        if (port == 0)
            continue;
        num = pf_y_str(d, pf_y_get(d, port, "containerPort"));
        if (num != NULL && strtoul(num, NULL, 10) == o->proxy_port)
            return pf_inject_fail(err,
                                  "%s: port '%s' is %u, the port pilotfish listens on: "
                                  "move the app or pilotfish's listen port",
                                  what, o->port, o->proxy_port);
        renamed(to, o->port);
        ports_in_use(d, spec, 0, to, &num_used, &name_used);
        if (name_used)
            return pf_inject_fail(err, "%s: cannot rename port '%s': '%s' exists already", what,
                                  o->port, to);
        pf_y_set_str(d, pf_y_get(d, port, "name"), to);
        rename_refs(d, container, o->port, to);
        return 0;
    }
    port_names(d, containers, names, sizeof(names));
    return pf_inject_fail(err, "%s: no container port named '%s' (named ports: %s)", what, o->port,
                          names);
}

/* The configuration volume, unless one of that name is there. */
static int add_volume(yaml_document_t *d, int spec, const struct pf_inject_opts *o,
                      const char *what, struct pf_inject_err *err)
{
    int vols = pf_y_want(d, spec, "volumes", YAML_SEQUENCE_NODE);
    int v, cm;

    if (vols == 0)
        return pf_inject_fail(err, "%s: 'volumes' is not a list", what);
    if (pf_y_named(d, vols, PF_INJECT_VOLUME) != 0)
        return 0;
    v = pf_y_map(d);
    pf_y_set(d, v, "name", pf_y_scalar(d, PF_INJECT_VOLUME, YAML_PLAIN_SCALAR_STYLE));
    cm = pf_y_map(d);
    pf_y_set(d, cm, "name", pf_y_scalar(d, o->config_map, YAML_DOUBLE_QUOTED_SCALAR_STYLE));
    pf_y_set(d, v, "configMap", cm);
    pf_y_push(d, vols, v, false);
    return 0;
}

/* terminationGracePeriodSeconds: raised to the drain time (+ the preStop sleep), never lowered. */
static void grace(yaml_document_t *d, int spec, const struct pf_inject_opts *o)
{
    unsigned want = o->grace_s + (o->legacy ? PF_PRESTOP_S : 0);
    const char *now = pf_y_str(d, pf_y_get(d, spec, "terminationGracePeriodSeconds"));
    char num[16];

    if (now != NULL && now[0] != '\0' && strtoul(now, NULL, 10) >= want)
        return;
    if (now == NULL && want < 30)
        want = 30; /* Kubernetes' default */
    snprintf(num, sizeof(num), "%u", want);
    pf_y_set(d, spec, "terminationGracePeriodSeconds",
             pf_y_scalar(d, num, YAML_PLAIN_SCALAR_STYLE));
}

int pf_inject_pod(yaml_document_t *d, int spec, const struct pf_inject_opts *o, const char *what,
                  struct pf_inject_err *err)
{
    bool num_used = false, name_used = false, probes_used = false;
    const char *name = o->port != NULL ? o->port : "pf-http";
    int list, c;

    if (!pf_y_is(d, spec, YAML_MAPPING_NODE))
        return pf_inject_fail(err, "%s: the pod spec is not a mapping", what);
    if (injected(d, spec)) {
        /* the container may be shared through an anchor: the rest is made sure of */
        if (add_volume(d, spec, o, what, err) != 0)
            return -1;
        grace(d, spec, o);
        return 0;
    }
    if (pf_y_len(d, pf_y_get(d, spec, "containers")) == 0)
        return pf_inject_fail(err, "%s: the pod spec has no containers", what);
    if (o->port != NULL && take_port(d, spec, o, what, err) != 0)
        return -1;
    ports_in_use(d, spec, o->proxy_port, name, &num_used, &name_used);
    ports_in_use(d, spec, o->probes_port, PF_PROBES_NAME, &probes_used, &name_used);
    if (num_used || probes_used || name_used)
        return pf_inject_fail(
            err, "%s: a container uses port %u or %u or the port name '%s' or '%s' already", what,
            o->proxy_port, o->probes_port, name, PF_PROBES_NAME);
    list = pf_y_want(d, spec, o->legacy ? "containers" : "initContainers", YAML_SEQUENCE_NODE);
    if (list == 0)
        return pf_inject_fail(err, "%s: 'initContainers' is not a list", what);
    c = container_new(d, o, name, err);
    if (c == 0)
        return -1;
    /* native: after the existing init containers, whose behaviour stays as it was */
    pf_y_push(d, list, c, o->legacy);
    if (add_volume(d, spec, o, what, err) != 0)
        return -1;
    grace(d, spec, o);
    return 0;
}
