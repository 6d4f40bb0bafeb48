/*
 * bench/micro_sockio.c: kernel cost of the system calls a proxied response
 * is written and read with, on a TCP connection over 127.0.0.1: a 1 KiB
 * message written as a head and a body (writev of 2 pieces), as one piece
 * (writev of 1), with send(2), copied into one buffer then sent, and read
 * back with readv(2) or recv(2). The modes alternate in short rounds and
 * the fastest round of each is kept, so other load on the machine mostly
 * drops out. Prints nanoseconds per write + read.
 *
 *   make bench-micro            (or: build/rel/bench/micro_sockio [BYTES])
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#define ROUNDS 100 /* per mode */
#define ITERS  2000
#define HEAD   100 /* bytes of the "head" piece */

enum { WRITEV2_READV, WRITEV1_READV, SEND_RECV, COPY_SEND_RECV, WRITEV2_RECV, MODES };

static const char *const names[MODES] = {
    "writev (2 pieces) + readv",   "writev (1 piece) + readv", "send + recv",
    "copy 2 pieces + send + recv", "writev (2 pieces) + recv",
};

static double now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

static int tcp_pair(int *a, int *b)
{
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(sa);
    int one = 1, l = socket(AF_INET, SOCK_STREAM, 0);

    if (l < 0 || bind(l, (struct sockaddr *)&sa, sizeof(sa)) != 0 || listen(l, 1) != 0 ||
        getsockname(l, (struct sockaddr *)&sa, &len) != 0)
        return -1;
    *a = socket(AF_INET, SOCK_STREAM, 0);
    if (*a < 0 || connect(*a, (struct sockaddr *)&sa, sizeof(sa)) != 0)
        return -1;
    *b = accept(l, NULL, NULL);
    close(l);
    setsockopt(*a, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    return *b < 0 ? -1 : 0;
}

static ssize_t put(int mode, int fd, char *buf, char *tmp, size_t n)
{
    struct iovec v[2] = {{buf, HEAD}, {buf + HEAD, n - HEAD}};

    switch (mode) {
    case WRITEV2_READV:
    case WRITEV2_RECV:
        return writev(fd, v, 2);
    case WRITEV1_READV:
        v[0].iov_len = n;
        return writev(fd, v, 1);
    case COPY_SEND_RECV:
        memcpy(tmp, buf, HEAD);
        memcpy(tmp + HEAD, buf + HEAD, n - HEAD);
        return send(fd, tmp, n, MSG_NOSIGNAL);
    default:
        return send(fd, buf, n, MSG_NOSIGNAL);
    }
}

static ssize_t get(int mode, int fd, char *buf, size_t room)
{
    struct iovec v = {buf, room};

    if (mode == WRITEV2_READV || mode == WRITEV1_READV)
        return readv(fd, &v, 1);
    return recv(fd, buf, room, 0);
}

int main(int argc, char **argv)
{
    size_t n = argc > 1 ? strtoul(argv[1], NULL, 10) : 1024;
    size_t room = n + 65536;
    double best[MODES];
    char *buf, *tmp, *in;
    int a, b;

    if (n <= HEAD || tcp_pair(&a, &b) != 0) {
        fprintf(stderr, "usage: micro_sockio [BYTES > %d] (needs 127.0.0.1)\n", HEAD);
        return 2;
    }
    buf = malloc(n);
    tmp = malloc(n);
    in = malloc(room);
    if (buf == NULL || tmp == NULL || in == NULL)
        return 2;
    memset(buf, 'x', n);
    for (int m = 0; m < MODES; m++)
        best[m] = 1e18;
    for (int r = 0; r < ROUNDS * MODES; r++) {
        int mode = r % MODES;
        double t0 = now_ns(), d;

        for (int i = 0; i < ITERS; i++) {
            size_t got = 0;

            if (put(mode, a, buf, tmp, n) != (ssize_t)n)
                return perror("write"), 1;
            while (got < n) {
                ssize_t k = get(mode, b, in, room);

                if (k <= 0)
                    return perror("read"), 1;
                got += (size_t)k;
            }
        }
        d = (now_ns() - t0) / ITERS;
        if (d < best[mode])
            best[mode] = d;
    }
    printf("%zu bytes, fastest of %d rounds of %d, ns per write + read:\n", n, ROUNDS, ITERS);
    for (int m = 0; m < MODES; m++)
        printf("  %-30s %8.0f\n", names[m], best[m]);
    free(buf);
    free(tmp);
    free(in);
    close(a);
    close(b);
    return 0;
}
