/* udpflood: send small UDP datagrams as fast as the kernel takes them, for a fixed time.
 * usage: udpflood DEST_IP DEST_PORT SECONDS [FLOWS [PAYLOAD]]
 * FLOWS sockets (source ports) take turns, 64 datagrams per sendmmsg() call. Prints the
 * number of datagrams sent. Used by benchmarks/fwd_bench.py between the lab's own
 * namespaces only. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define BATCH 64

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

int main(int argc, char **argv) {
    if (argc < 4) {
        fprintf(stderr, "usage: %s DEST_IP DEST_PORT SECONDS [FLOWS [PAYLOAD]]\n", argv[0]);
        return 2;
    }
    double seconds = atof(argv[3]);
    int flows = argc > 4 ? atoi(argv[4]) : 16;
    int payload = argc > 5 ? atoi(argv[5]) : 18; /* 18 + 8 UDP + 20 IP + 14 eth = 60 (+FCS = 64) */
    struct sockaddr_in dst = {.sin_family = AF_INET, .sin_port = htons(atoi(argv[2]))};
    if (inet_pton(AF_INET, argv[1], &dst.sin_addr) != 1) {
        fprintf(stderr, "bad address %s\n", argv[1]);
        return 2;
    }
    int *socks = calloc(flows, sizeof(int));
    for (int i = 0; i < flows; i++) {
        socks[i] = socket(AF_INET, SOCK_DGRAM, 0);
        if (socks[i] < 0 || connect(socks[i], (struct sockaddr *)&dst, sizeof dst) < 0) {
            perror("socket");
            return 1;
        }
    }
    char buf[1500];
    memset(buf, 0x5a, sizeof buf);
    struct mmsghdr msgs[BATCH];
    struct iovec iov[BATCH];
    for (int i = 0; i < BATCH; i++) {
        iov[i].iov_base = buf;
        iov[i].iov_len = payload;
        memset(&msgs[i], 0, sizeof msgs[i]);
        msgs[i].msg_hdr.msg_iov = &iov[i];
        msgs[i].msg_hdr.msg_iovlen = 1;
    }
    long long sent = 0;
    double end = now() + seconds;
    int turn = 0;
    while (1) {
        for (int k = 0; k < 16; k++) {
            int n = sendmmsg(socks[turn], msgs, BATCH, 0);
            if (n > 0)
                sent += n;
            turn = (turn + 1) % flows;
        }
        if (now() >= end)
            break;
    }
    printf("%lld\n", sent);
    return 0;
}
