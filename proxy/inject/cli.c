/*
 * pilotfish inject: the command line. Reads every input (files, or stdin),
 * checks --config FILE with the configuration loader (it also gives the
 * ports and the drain time), and writes the output only when all went well.
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proxy/arena.h"
#include "proxy/conf.h"
#include "proxy/inject/inject.h"

static void usage(FILE *f)
{
    fprintf(f, "usage: pilotfish inject [OPTIONS] [FILE|-]...\n"
               "Add the pilotfish sidecar to every pod template of Kubernetes manifests\n"
               "(Pod, Deployment, StatefulSet, DaemonSet, ReplicaSet, Job, CronJob, List)\n"
               "read from FILEs or stdin, and write them to stdout.\n\n"
               "  -p, --port NAME        take over the app's named port NAME: the app's port\n"
               "                         becomes app-NAME, pilotfish gets NAME\n"
               "  -m, --config-map NAME  the ConfigMap mounted at /etc/pilotfish (pilotfish)\n"
               "  -c, --config FILE      check FILE and emit it as that ConfigMap; its listen,\n"
               "                         probes.listen and drain settings are used\n"
               "  -i, --image IMAGE      the pilotfish image (pilotfish:latest)\n"
               "  -l, --legacy-sidecar   a first container with a preStop (Kubernetes < 1.29)\n"
               "                         instead of a native sidecar in initContainers\n"
               "      --proxy-port N     pilotfish's listen port without --config (8080)\n"
               "      --probes-port N    the probes.listen port without --config (9902)\n"
               "  -h, --help             this text\n");
}

static char *read_all(FILE *f, size_t *len)
{
    size_t cap = 65536, n;
    char *buf = pf_xmalloc(cap);

    *len = 0;
    while ((n = fread(buf + *len, 1, cap - *len - 1, f)) > 0) {
        *len += n;
        if (cap - *len - 1 == 0) {
            cap *= 2;
            buf = pf_xrealloc(buf, cap);
        }
    }
    buf[*len] = '\0';
    if (ferror(f)) {
        free(buf);
        return NULL;
    }
    return buf;
}

static char *read_path(const char *path, size_t *len)
{
    FILE *f = strcmp(path, "-") == 0 ? stdin : fopen(path, "rb");
    char *text;

    if (f == NULL)
        return NULL;
    text = read_all(f, len);
    if (f != stdin)
        fclose(f);
    return text;
}

static unsigned addr_port(const struct pf_addr *a)
{
    const char *colon = a->text != NULL ? strrchr(a->text, ':') : NULL;

    return colon != NULL ? (unsigned)strtoul(colon + 1, NULL, 10) : 0;
}

/* --config FILE: loaded like pilotfish -t does; ports and drain time from it. */
static int load_config(struct pf_inject_opts *o)
{
    struct pf_err err;
    struct pf_config *cfg;
    size_t len;

    pf_err_init(&err, o->config);
    cfg = pf_conf_load(o->config, &err);
    if (cfg == NULL) {
        pf_conf_print_errors(&err, stderr);
        pf_err_fini(&err);
        return -1;
    }
    pf_err_fini(&err);
    o->proxy_port = cfg->n_listen > 0 ? addr_port(&cfg->listen[0]) : 8080;
    o->probes_port = addr_port(&cfg->probes_listen);
    o->grace_s = (unsigned)((cfg->drain_delay_ms + cfg->drain_timeout_ms + 999) / 1000);
    pf_conf_unref(cfg);
    if (o->probes_port == 0 || o->proxy_port == 0) {
        fprintf(stderr,
                "pilotfish inject: %s: %s is not a TCP port: the kubelet needs probes.listen "
                "(e.g. probes: {listen: \"0.0.0.0:9902\"}) and a TCP listen address\n",
                o->config, o->probes_port == 0 ? "probes.listen" : "listen");
        return -1;
    }
    o->config_text = read_path(o->config, &len);
    return o->config_text != NULL ? 0 : -1;
}

static int port_arg(const char *s, unsigned *port)
{
    char *end;
    unsigned long v = strtoul(s, &end, 10);

    if (*s == '\0' || *end != '\0' || v == 0 || v > 65535)
        return -1;
    *port = (unsigned)v;
    return 0;
}

static const struct option long_opts[] = {
    {"port", required_argument, NULL, 'p'},
    {"config-map", required_argument, NULL, 'm'},
    {"config", required_argument, NULL, 'c'},
    {"image", required_argument, NULL, 'i'},
    {"legacy-sidecar", no_argument, NULL, 'l'},
    {"proxy-port", required_argument, NULL, 'P'},
    {"probes-port", required_argument, NULL, 'R'},
    {"help", no_argument, NULL, 'h'},
    {NULL, 0, NULL, 0},
};

/* Options into *o; -1 to go on, else the exit status. */
static int parse(int argc, char **argv, struct pf_inject_opts *o)
{
    int opt;

    optind = 1;
    while ((opt = getopt_long(argc, argv, "p:m:c:i:lh", long_opts, NULL)) != -1) {
        switch (opt) {
        case 'p':
            o->port = optarg;
            break;
        case 'm':
            o->config_map = optarg;
            break;
        case 'c':
            o->config = optarg;
            break;
        case 'i':
            o->image = optarg;
            break;
        case 'l':
            o->legacy = true;
            break;
        case 'P':
        case 'R':
            if (port_arg(optarg, opt == 'P' ? &o->proxy_port : &o->probes_port) == 0)
                break;
            fprintf(stderr, "pilotfish inject: bad port '%s'\n", optarg);
            return 1;
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 1;
        }
    }
    return -1;
}

/* Every input (stdin when there are none) into in[]; the count, or -1. */
static int read_inputs(int n, char **paths, struct pf_inject_input *in)
{
    for (int i = 0; i < (n > 0 ? n : 1); i++) {
        size_t len;
        const char *path = n > 0 ? paths[i] : "-";
        char *text = read_path(path, &len);

        if (text == NULL) {
            fprintf(stderr, "pilotfish inject: cannot read %s\n", path);
            while (i-- > 0)
                free((char *)in[i].text);
            return -1;
        }
        in[i] = (struct pf_inject_input){text, len, strcmp(path, "-") == 0 ? "stdin" : path};
    }
    return n > 0 ? n : 1;
}

int pf_inject_main(int argc, char **argv)
{
    struct pf_inject_opts o = {.image = "pilotfish:latest",
                               .config_map = "pilotfish",
                               .proxy_port = 8080,
                               .probes_port = 9902,
                               .grace_s = 15};
    struct pf_inject_err err = {{0}, false};
    struct pf_inject_input *in;
    size_t out_len = 0;
    char *out;
    int n, rc = parse(argc, argv, &o);

    if (rc >= 0)
        return rc;
    if (o.config != NULL && load_config(&o) != 0)
        return 1;
    in = pf_xcalloc((size_t)(argc - optind + 1), sizeof(*in));
    n = read_inputs(argc - optind, argv + optind, in);
    out = n > 0 ? pf_inject_texts(in, (unsigned)n, &o, &out_len, &err) : NULL;
    for (int i = 0; i < n; i++)
        free((char *)in[i].text);
    free(in);
    if (n < 0) {
        free(o.config_text);
        return 1;
    }
    free(o.config_text);
    if (out == NULL) {
        fprintf(stderr, "pilotfish inject: %s\n", err.msg);
        return 1;
    }
    rc = fwrite(out, 1, out_len, stdout) == out_len && fflush(stdout) == 0 ? 0 : 1;
    free(out);
    return rc;
}
