/*
 * pilotfish: command line (docs/operations.md).
 */
#include <errno.h>
#include <getopt.h>
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/event.h>
#include <http_parser.h>
#include <hiredis/hiredis.h>
#include <yaml.h>
#include <zlib.h>

#include "proxy/bufpool.h"
#include "proxy/conf.h"
#include "proxy/inject/inject.h"
#include "proxy/log.h"
#include "proxy/notify.h"
#include "proxy/server.h"

static void usage(FILE *f)
{
    fprintf(f, "usage: pilotfish [-c FILE]            run (default: $PILOTFISH_CONFIG or "
               "conf/pilotfish.yaml)\n"
               "       pilotfish -t [-c FILE | FILE | -]  check a configuration (- reads stdin)\n"
               "       pilotfish inject [OPTIONS] [FILE|-]...  add the sidecar to Kubernetes "
               "manifests\n"
               "       pilotfish -V                   version and build options\n\n"
               "  -c, --config FILE   the configuration file\n"
               "  -t, --test          check the configuration and exit (0: OK, 1: errors)\n"
               "  -V, --version       version, build options and library versions\n"
               "  -h, --help          this text (pilotfish inject --help for inject's)\n"
               "Signals: SIGHUP reloads, SIGTERM drains then exits. Manual: pilotfish(8).\n");
}

static void version(void)
{
    unsigned long hp = http_parser_version();

    printf("pilotfish %s\n", PF_VERSION);
    printf("built: %s with gcc %s\n", __DATE__, __VERSION__);
#ifdef __SANITIZE_ADDRESS__
    printf("build options: sanitize=address,undefined\n");
#else
    printf("build options: release\n");
#endif
    printf("libevent %s, http-parser %lu.%lu.%lu, libyaml %s, zlib %s, hiredis %d.%d.%d\n",
           event_get_version(), (hp >> 16) & 255, (hp >> 8) & 255, hp & 255,
           yaml_get_version_string(), zlibVersion(), HIREDIS_MAJOR, HIREDIS_MINOR, HIREDIS_PATCH);
}

static const struct option long_opts[] = {
    {"config", required_argument, NULL, 'c'},
    {"test", no_argument, NULL, 't'},
    {"version", no_argument, NULL, 'V'},
    {"help", no_argument, NULL, 'h'},
    {NULL, 0, NULL, 0},
};

/*
 * Parse the command line into *path and *test_only. Returns -1 to go on, or
 * the exit status when the command is done already (-V, -h, a usage error).
 * With -t, the file may also be given as the one operand ("-": stdin).
 */
static int parse_args(int argc, char **argv, const char **path, bool *test_only)
{
    int opt;

    while ((opt = getopt_long(argc, argv, "c:tVh", long_opts, NULL)) != -1) {
        switch (opt) {
        case 'c':
            *path = optarg;
            break;
        case 't':
            *test_only = true;
            break;
        case 'V':
            version();
            return 0;
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 1;
        }
    }
    if (*test_only && optind == argc - 1)
        *path = argv[optind++];
    if (optind < argc) {
        fprintf(stderr, "pilotfish: unexpected argument '%s'\n", argv[optind]);
        usage(stderr);
        return 1;
    }
    if (*path == NULL || (*path)[0] == '\0')
        *path = "conf/pilotfish.yaml";
    if (strcmp(*path, "-") == 0 && !*test_only) {
        fprintf(stderr, "pilotfish: a configuration from stdin only with -t (reloads read "
                        "the file again)\n");
        return 1;
    }
    return -1;
}

/* The configuration text on stdin (pilotfish -t -), or NULL. */
static char *read_stdin(void)
{
    size_t cap = 65536, len = 0, n;
    char *buf = malloc(cap);

    while (buf != NULL && (n = fread(buf + len, 1, cap - len - 1, stdin)) > 0) {
        len += n;
        if (len + 1 == cap) {
            char *more = realloc(buf, cap * 2);

            if (more == NULL)
                free(buf);
            buf = more;
            cap *= 2;
        }
    }
    if (buf != NULL)
        buf[len] = '\0';
    return buf;
}

/* Load and check the configuration; NULL after printing every error. */
static struct pf_config *load(const char *path)
{
    struct pf_config *cfg;
    struct pf_err err;

    pf_err_init(&err, strcmp(path, "-") == 0 ? "stdin" : path);
    if (strcmp(path, "-") == 0) {
        char *text = read_stdin();

        cfg = text != NULL ? pf_conf_load_string(text, "stdin", &err) : NULL;
        if (text == NULL)
            pf_err_at(&err, NULL, "cannot read stdin");
        free(text);
    } else {
        cfg = pf_conf_load(path, &err);
    }
    if (cfg == NULL)
        pf_conf_print_errors(&err, stderr);
    pf_err_fini(&err);
    return cfg;
}

int main(int argc, char **argv)
{
    const char *path = getenv("PILOTFISH_CONFIG");
    bool test_only = false;
    struct pf_server server = {0};
    struct pf_config *cfg;
    int rc;

    if (argc > 1 && strcmp(argv[1], "inject") == 0)
        return pf_inject_main(argc - 1, argv + 1);
    rc = parse_args(argc, argv, &path, &test_only);
    if (rc >= 0)
        return rc;
    http_parser_set_max_header_size(UINT32_MAX / 2);
    /*
     * Buffers of 16-64 KiB come and go with every response. glibc would hand
     * the freed top of each thread's heap back to the kernel and fault it in
     * (zeroed) again moments later: keep up to 4 MiB of it instead.
     */
    mallopt(M_TRIM_THRESHOLD, 4 * 1024 * 1024);
    mallopt(M_MMAP_THRESHOLD, 1024 * 1024);
    pf_bufpool_install(); /* the workers reuse libevent's buffer memory (proxy/bufpool.h) */
    cfg = load(path);
    if (cfg == NULL)
        return 1;
    if (test_only) {
        printf("configuration OK\n");
        pf_conf_unref(cfg);
        return 0;
    }
    pf_log_set_level((enum pf_log_level)cfg->log_level);
    rc = pf_alog_start(cfg->access_log_path);
    if (rc != 0) {
        fprintf(stderr, "pilotfish: cannot open access log %s: %s\n", cfg->access_log_path,
                strerror(-rc));
        pf_conf_unref(cfg);
        return 1;
    }
    if (pf_server_start(&server, cfg) != 0) {
        pf_server_free(&server);
        pf_alog_stop();
        return 1;
    }
    pf_notify("READY=1");
    rc = pf_server_run(&server);
    pf_server_free(&server);
    pf_alog_stop();
    return rc;
}
