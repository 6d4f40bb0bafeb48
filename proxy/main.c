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

#include "proxy/conf.h"
#include "proxy/inject/inject.h"
#include "proxy/log.h"
#include "proxy/server.h"

static void usage(FILE *f)
{
    fprintf(f, "usage: pilotfish [-c FILE]      run (default: $PILOTFISH_CONFIG or "
               "conf/pilotfish.yaml)\n"
               "       pilotfish -t [-c FILE]   check the configuration\n"
               "       pilotfish -V             version and build options\n");
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

/*
 * Parse the command line into *path and *test_only. Returns -1 to go on, or
 * the exit status when the command is done already (-V, -h, a usage error).
 */
static int parse_args(int argc, char **argv, const char **path, bool *test_only)
{
    int opt;

    while ((opt = getopt(argc, argv, "c:tVh")) != -1) {
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
    if (optind < argc) {
        usage(stderr);
        return 1;
    }
    if (*path == NULL || (*path)[0] == '\0')
        *path = "conf/pilotfish.yaml";
    return -1;
}

/* Load and check the configuration; NULL after printing every error. */
static struct pf_config *load(const char *path)
{
    struct pf_config *cfg;
    struct pf_err err;

    pf_err_init(&err, path);
    cfg = pf_conf_load(path, &err);
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
    rc = pf_server_run(&server);
    pf_server_free(&server);
    pf_alog_stop();
    return rc;
}
