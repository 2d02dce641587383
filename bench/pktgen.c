/* pktgen: the bench's small-packet generator, counter and request/response
 * probe. iperf3's UDP sender tops out near 150 kpps on a small machine;
 * this one sends with sendmmsg, 64 datagrams per call (paced when given a
 * rate), and counts with recvmmsg.
 *
 *   pktgen send IP PORT SECONDS PAYLOAD [PPS]  prints the datagrams sent
 *   pktgen recv PORT SECONDS                   prints the datagrams received
 *   pktgen echo PORT SECONDS                   answers every datagram
 *   pktgen rr IP PORT SECONDS                  one 64-byte request at a time:
 *                                              prints "transactions mean_us"
 *
 * Built by bench/run.py with the system's cc. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#define BATCH 64

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void timeout(int fd, long usec) {
    struct timeval tv = {.tv_sec = usec / 1000000, .tv_usec = usec % 1000000};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
}

static int usage(void) {
    fprintf(stderr, "usage: pktgen send IP PORT SECONDS PAYLOAD [PPS] | recv PORT SECONDS"
                    " | echo PORT SECONDS | rr IP PORT SECONDS\n");
    return 2;
}

int main(int argc, char **argv) {
    static char buf[BATCH][2048];
    struct mmsghdr msgs[BATCH];
    struct iovec iov[BATCH];
    struct sockaddr_in addr = {.sin_family = AF_INET}, peers[BATCH];
    unsigned long long count = 0;
    int fd = socket(AF_INET, SOCK_DGRAM, 0);
    if (fd < 0 || argc < 4)
        return usage();
    const char *mode = argv[1];
    int sending = strcmp(mode, "send") == 0, rr = strcmp(mode, "rr") == 0;
    int client = sending || rr;
    if (client && argc < 5)
        return usage();
    size_t len = sending && argc > 5 ? (size_t)atoi(argv[5]) : rr ? 18 : sizeof(buf[0]);
    double pps = sending && argc > 6 ? atof(argv[6]) : 0;
    double seconds = atof(argv[client ? 4 : 3]);
    memset(msgs, 0, sizeof(msgs));
    for (int i = 0; i < BATCH; i++) {
        iov[i].iov_base = buf[i];
        iov[i].iov_len = len;
        msgs[i].msg_hdr.msg_iov = &iov[i];
        msgs[i].msg_hdr.msg_iovlen = 1;
    }
    if (client) {
        addr.sin_port = htons(atoi(argv[3]));
        inet_pton(AF_INET, argv[2], &addr.sin_addr);
        if (connect(fd, (struct sockaddr *)&addr, sizeof(addr)) < 0) { perror("connect"); return 1; }
    } else {
        int size = 8 << 20;
        setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &size, sizeof(size));
        addr.sin_port = htons(atoi(argv[2]));
        if (bind(fd, (struct sockaddr *)&addr, sizeof(addr)) < 0) { perror("bind"); return 1; }
    }
    double start = now(), end = start + seconds;
    if (sending) {
        while (now() < end) {
            /* Paced: never ahead of PPS since the start, in batches of 64. */
            while (pps > 0 && count >= (now() - start) * pps)
                ;
            int n = sendmmsg(fd, msgs, BATCH, 0);
            if (n > 0) count += n;
            else if (errno != ENOBUFS && errno != EAGAIN && errno != ECONNREFUSED) { perror("sendmmsg"); return 1; }
        }
        printf("%llu\n", count);
    } else if (rr) {
        double total = 0;
        timeout(fd, 200000);
        while (now() < end) {
            double t = now();
            if (send(fd, buf[0], len, 0) < 0 || recv(fd, buf[1], sizeof(buf[1]), 0) < 0)
                continue;                                   /* lost: try again */
            total += now() - t;
            count++;
        }
        printf("%llu %.2f\n", count, count ? total / count * 1e6 : 0.0);
    } else {
        int echo = strcmp(mode, "echo") == 0;
        timeout(fd, 100000);
        for (int i = 0; i < BATCH; i++) {
            msgs[i].msg_hdr.msg_name = &peers[i];
            msgs[i].msg_hdr.msg_namelen = sizeof(peers[i]);
        }
        while (now() < end) {
            int n = recvmmsg(fd, msgs, BATCH, MSG_WAITFORONE, NULL);
            if (n <= 0)
                continue;
            count += n;
            if (echo) {
                for (int i = 0; i < n; i++)
                    iov[i].iov_len = msgs[i].msg_len;
                sendmmsg(fd, msgs, n, 0);
                for (int i = 0; i < n; i++)
                    iov[i].iov_len = len;
            }
            for (int i = 0; i < n; i++)
                msgs[i].msg_hdr.msg_namelen = sizeof(peers[i]);
        }
        if (!echo)
            printf("%llu\n", count);
    }
    return 0;
}
