/*
 * Addresses in the configuration: "host:port", "[v6]:port", ":port", "port"
 * and "unix:/path", alone or in lists. Main thread (host names resolve here).
 */
#include "proxy/conf.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/un.h>

#include "proxy/arena.h"
#include "proxy/log.h"

static int parse_port(const char *s, in_port_t *port)
{
    unsigned v = 0;

    if (*s == '\0')
        return -EINVAL;
    for (; *s != '\0'; s++) {
        if (*s < '0' || *s > '9' || v > 65535)
            return -EINVAL;
        v = v * 10 + (unsigned)(*s - '0');
    }
    if (v == 0 || v > 65535)
        return -EINVAL;
    *port = htons((in_port_t)v);
    return 0;
}

static int addr_unix(const char *path, struct pf_addr *a, const char **why)
{
    struct sockaddr_un *sun = (struct sockaddr_un *)&a->ss;
    size_t len = strlen(path);

    if (len == 0) {
        *why = "empty unix socket path";
        return -EINVAL;
    }
    if (len >= sizeof(sun->sun_path)) {
        *why = "unix socket path too long";
        return -EINVAL;
    }
    sun->sun_family = AF_UNIX;
    memcpy(sun->sun_path, path, len + 1);
    a->len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + len + 1);
    return 0;
}

/* Numeric IPv4/IPv6, else the resolver (IPv4 first: apps often bind 127.0.0.1 only). */
static int addr_host(const char *host, in_port_t port, struct pf_addr *a)
{
    struct sockaddr_in *sin = (struct sockaddr_in *)&a->ss;
    struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&a->ss;
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
    struct addrinfo *res, *pick = NULL;

    if (inet_pton(AF_INET, host, &sin->sin_addr) == 1) {
        sin->sin_family = AF_INET;
    } else if (inet_pton(AF_INET6, host, &sin6->sin6_addr) == 1) {
        sin6->sin6_family = AF_INET6;
    } else {
        if (getaddrinfo(host, NULL, &hints, &res) != 0)
            return -ENOENT;
        for (struct addrinfo *ai = res; ai != NULL; ai = ai->ai_next) {
            if (ai->ai_family == AF_INET || (ai->ai_family == AF_INET6 && pick == NULL))
                pick = ai;
            if (ai->ai_family == AF_INET)
                break;
        }
        if (pick != NULL)
            memcpy(&a->ss, pick->ai_addr, pick->ai_addrlen);
        freeaddrinfo(res);
        if (pick == NULL)
            return -ENOENT;
    }
    if (a->ss.ss_family == AF_INET) {
        sin->sin_port = port;
        a->len = sizeof(*sin);
    } else {
        sin6->sin6_port = port;
        a->len = sizeof(*sin6);
    }
    return 0;
}

/* Split s into host and port text; host "" means any (0.0.0.0). */
static int addr_split(const char *s, char *host, size_t size, const char **port, const char **why)
{
    const char *h = s, *end;

    *why = "expected host:port, [v6]:port, :port or unix:/path";
    if (s[0] == '[') {
        end = strchr(s, ']');
        if (end == NULL || end[1] != ':')
            return -EINVAL;
        h = s + 1;
        *port = end + 2;
    } else {
        end = strrchr(s, ':');
        if (end == NULL && s[strspn(s, "0123456789")] != '\0')
            return -EINVAL;
        if (end == NULL) {
            end = s; /* bare port */
            *port = s;
        } else {
            *port = end + 1;
        }
        if (memchr(s, ':', (size_t)(end - s)) != NULL) {
            *why = "IPv6 addresses need brackets, as in [::1]:8080";
            return -EINVAL;
        }
    }
    if ((size_t)(end - h) >= size)
        return -EINVAL;
    memcpy(host, h, (size_t)(end - h));
    host[end - h] = '\0';
    return 0;
}

static int addr_parse(const char *s, struct pf_addr *addr, const char **why)
{
    struct pf_addr a;
    char host[256];
    const char *port_s;
    in_port_t port;
    int rc;

    memset(&a, 0, sizeof(a));
    if (strncmp(s, "unix:", 5) == 0) {
        rc = addr_unix(s + 5, &a, why);
    } else {
        rc = addr_split(s, host, sizeof(host), &port_s, why);
        if (rc == 0 && parse_port(port_s, &port) < 0) {
            *why = "the port must be a number between 1 and 65535";
            rc = -EINVAL;
        }
        if (rc == 0 && s[0] == '[' && strchr(host, ':') == NULL) {
            *why = "only IPv6 addresses go between brackets";
            rc = -EINVAL;
        }
        if (rc == 0)
            rc = addr_host(host[0] != '\0' ? host : "0.0.0.0", port, &a);
    }
    if (rc < 0)
        return rc;
    a.text = pf_xstrdup(s);
    *addr = a;
    return 0;
}

int pf_addr_parse(const char *s, struct pf_addr *addr)
{
    const char *why;

    return addr_parse(s, addr, &why);
}

int pf_conf_addr(const struct pf_conf_node *n, struct pf_addr *a, const char *what,
                 struct pf_err *err)
{
    const char *why = "";
    int rc;

    if (n->type != PF_NODE_SCALAR) {
        pf_err_at(err, n, "%s: expected an address", what);
        return -EINVAL;
    }
    rc = addr_parse(n->value, a, &why);
    if (rc == -ENOENT)
        pf_err_at(err, n, "%s: cannot resolve the host of '%s'", what, n->value);
    else if (rc < 0)
        pf_err_at(err, n, "%s: invalid address '%s': %s", what, n->value, why);
    return rc;
}

void pf_addr_list_free(struct pf_addr *a, unsigned n)
{
    for (unsigned i = 0; i < n; i++)
        free(a[i].text);
    free(a);
}

unsigned pf_conf_node_items(const struct pf_conf_node *const *n,
                            const struct pf_conf_node *const **items)
{
    if ((*n)->type == PF_NODE_SCALAR) {
        *items = n;
        return 1;
    }
    *items = (const struct pf_conf_node *const *)(*n)->items;
    return (*n)->n_items;
}

void pf_conf_addr_keep_unique(const struct pf_conf_node *n, const char *what, struct pf_addr *v,
                              unsigned *k, struct pf_err *err)
{
    unsigned j = 0;

    while (j < *k && strcmp(v[j].text, v[*k].text) != 0)
        j++;
    if (j == *k) {
        (*k)++;
        return;
    }
    pf_err_at(err, n, "%s: '%s' is listed twice", what, v[*k].text);
    free(v[*k].text);
}

void pf_conf_addr_list(const struct pf_conf_node *n, const char *what, struct pf_addr **out,
                       unsigned *count, struct pf_err *err)
{
    const struct pf_conf_node *const *items;
    unsigned n_items = pf_conf_node_items(&n, &items), k = 0;
    struct pf_addr *v;

    if (n->type == PF_NODE_MAP) {
        pf_err_at(err, n, "%s: expected an address or a list of addresses", what);
        return;
    }
    if (n_items == 0) {
        pf_err_at(err, n, "%s: must list at least one address", what);
        return;
    }
    v = pf_xcalloc(n_items, sizeof(*v));
    for (unsigned i = 0; i < n_items; i++) {
        if (pf_conf_addr(items[i], &v[k], what, err) == 0)
            pf_conf_addr_keep_unique(items[i], what, v, &k, err);
    }
    pf_addr_list_free(*out, *count);
    *out = v;
    *count = k;
}
