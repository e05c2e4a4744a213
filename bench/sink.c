/* A fan-out load generator in C for the --workers scenario, where the Node generator is the bottleneck.
 *
 * It opens SUBS WebSocket connections to a Pusher-protocol server and subscribes each to CHANNEL, then sends the
 * same pre-signed HTTP publish (REQUEST_FILE, bytes as they go on the wire) MSGS times over PUB_CONC keep-alive
 * connections, one request in flight on each, and counts the frames carrying EVENT on every subscriber until each has
 * MSGS or TIMEOUT_S passes. Receiving costs a few tenths of what sending costs, so the server's cores stay the limit.
 * One JSON line goes to stdout. Server CPU is read from /proc for the SERVER_PIDs over the publish phase.
 *
 *   sink HOST PORT KEY CHANNEL EVENT SUBS MSGS PUB_CONC REQUEST_FILE TIMEOUT_S [SERVER_PID...]
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

enum phase { HANDSHAKE, ESTABLISHING, SUBSCRIBING, COUNTING, CLOSED };
enum { HEAD_MAX = 4096, PREFIX_MAX = 96, HANDSHAKES_IN_FLIGHT = 200, READ_SIZE = 1 << 18 };

typedef struct {
    int fd;
    int publisher;
    enum phase phase;
    char head[HEAD_MAX]; /* an HTTP response head being read (the upgrade answer, or a publish answer) */
    int head_len;
    long body_left;        /* publisher: bytes of the answer's body still to read; -1 while reading the head */
    unsigned char hdr[14]; /* a WebSocket frame header being read */
    int hdr_len, hdr_need;
    uint64_t payload_left;
    int in_payload, opcode;
    char prefix[PREFIX_MAX]; /* the start of the frame's payload, enough to tell its event */
    int prefix_len;
    long count;
} conn_t;

static const char *host, *key, *channel, *event_name;
static int port, subs, pub_conc;
static long msgs;
static char *request;
static size_t request_len;
static char event_needle[128];

static long connected, ready, handshakes_pending, delivered, duplicates, foreign_frames, closed_during;
static long publish_sent, publish_ok, publish_err, finished_subscribers;
static char error[256];

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static double own_cpu(void) {
    struct rusage usage;
    getrusage(RUSAGE_SELF, &usage);
    return usage.ru_utime.tv_sec + usage.ru_utime.tv_usec / 1e6 + usage.ru_stime.tv_sec + usage.ru_stime.tv_usec / 1e6;
}

static double server_cpu(int count, char **pids) {
    double total = 0;
    long ticks = sysconf(_SC_CLK_TCK);
    for (int i = 0; i < count; i++) {
        char path[64], line[1024];
        snprintf(path, sizeof path, "/proc/%s/stat", pids[i]);
        FILE *stat = fopen(path, "r");
        if (!stat) continue;
        size_t got = fread(line, 1, sizeof line - 1, stat);
        fclose(stat);
        line[got] = 0;
        char *after_name = strrchr(line, ')'); /* the name may hold spaces; fields 14 and 15 follow it */
        unsigned long utime = 0, stime = 0;
        if (after_name && sscanf(after_name + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &utime,
                                 &stime) == 2)
            total += (double)(utime + stime) / ticks;
    }
    return total;
}

static void fail(const char *what) {
    if (!error[0]) snprintf(error, sizeof error, "%s: %s", what, strerror(errno));
}

static int send_all(int fd, const void *data, size_t len) {
    /* Requests are a few hundred bytes written to an empty socket buffer: a short write means the peer is gone. */
    ssize_t sent = send(fd, data, len, MSG_NOSIGNAL);
    return sent == (ssize_t)len ? 0 : -1;
}

static int open_connection(int epoll_fd, conn_t *conn, int publisher) {
    struct sockaddr_in address = {.sin_family = AF_INET, .sin_port = htons(port)};
    inet_pton(AF_INET, host, &address.sin_addr);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0 || connect(fd, (struct sockaddr *)&address, sizeof address) < 0) {
        fail("connect");
        if (fd >= 0) close(fd);
        return -1;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    memset(conn, 0, sizeof *conn);
    conn->fd = fd;
    conn->publisher = publisher;
    conn->body_left = -1;
    if (!publisher) {
        char upgrade[512];
        int len = snprintf(upgrade, sizeof upgrade,
                           "GET /app/%s?protocol=7&client=bench-sink&version=1 HTTP/1.1\r\nHost: %s:%d\r\n"
                           "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
                           "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
                           key, host, port);
        if (send_all(fd, upgrade, len) < 0) {
            fail("upgrade");
            return -1;
        }
        connected++;
        handshakes_pending++;
    }
    struct epoll_event interest = {.events = EPOLLIN, .data.ptr = conn};
    epoll_ctl(epoll_fd, EPOLL_CTL_ADD, fd, &interest);
    return 0;
}

static void subscribe(conn_t *conn) {
    char payload[256];
    int len = snprintf(payload, sizeof payload, "{\"event\":\"pusher:subscribe\",\"data\":{\"channel\":\"%s\"}}",
                       channel);
    /* A client frame must be masked; the all-zero mask leaves the payload as it is. */
    unsigned char frame[6 + 256] = {0x81, (unsigned char)(0x80 | len), 0, 0, 0, 0};
    memcpy(frame + 6, payload, len);
    if (send_all(conn->fd, frame, 6 + len) < 0) fail("subscribe");
}

static int is_delivery(const char *prefix, int len) {
    /* Deliveries start {"event":"EVENT", so look there first; a server may order the keys otherwise. */
    static const char start[] = "{\"event\":";
    size_t start_len = sizeof start - 1, needle_len = strlen(event_needle);
    if ((size_t)len >= start_len + needle_len && memcmp(prefix + start_len, event_needle, needle_len) == 0) return 1;
    return memmem(prefix, len, event_needle, needle_len) != NULL;
}

static void frame_done(conn_t *conn) {
    const char *prefix = conn->prefix;
    int len = conn->prefix_len;
    if (conn->opcode == 8) {
        if (conn->phase == COUNTING && conn->count < msgs) closed_during++;
        conn->phase = CLOSED;
        return;
    }
    if (conn->opcode != 1) return; /* pings and pongs: none are expected within a run */
    if (conn->phase == COUNTING && is_delivery(prefix, len)) {
        conn->count++;
        delivered++;
        if (conn->count == msgs) finished_subscribers++;
        if (conn->count > msgs) duplicates++;
    } else if (conn->phase == ESTABLISHING && memmem(prefix, len, "pusher:connection_established", 29)) {
        conn->phase = SUBSCRIBING;
        subscribe(conn);
    } else if (conn->phase == SUBSCRIBING && memmem(prefix, len, "subscription_succeeded", 22)) {
        conn->phase = COUNTING;
        ready++;
        handshakes_pending--;
    } else {
        foreign_frames++;
        if (memmem(prefix, len, "pusher:error", 12) && !error[0])
            snprintf(error, sizeof error, "pusher:error: %.*s", len, prefix);
    }
}

static void feed_frames(conn_t *conn, const unsigned char *data, size_t n) {
    size_t i = 0;
    while (i < n) {
        if (!conn->in_payload) {
            conn->hdr[conn->hdr_len++] = data[i++];
            if (conn->hdr_len == 2) {
                int len7 = conn->hdr[1] & 0x7f;
                conn->hdr_need = 2 + (len7 == 126 ? 2 : len7 == 127 ? 8 : 0) + ((conn->hdr[1] & 0x80) ? 4 : 0);
            }
            if (conn->hdr_len < 2 || conn->hdr_len < conn->hdr_need) continue;
            uint64_t len = conn->hdr[1] & 0x7f;
            if (len == 126) len = (uint64_t)conn->hdr[2] << 8 | conn->hdr[3];
            if (len == 127) {
                len = 0;
                for (int k = 2; k < 10; k++) len = len << 8 | conn->hdr[k];
            }
            conn->opcode = conn->hdr[0] & 0x0f;
            conn->payload_left = len;
            conn->prefix_len = 0;
            conn->hdr_len = 0;
            conn->in_payload = 1;
        } else {
            size_t take = n - i < conn->payload_left ? n - i : conn->payload_left;
            if (conn->prefix_len < PREFIX_MAX) {
                size_t room = PREFIX_MAX - conn->prefix_len;
                memcpy(conn->prefix + conn->prefix_len, data + i, take < room ? take : room);
                conn->prefix_len += take < room ? take : room;
            }
            i += take;
            conn->payload_left -= take;
        }
        if (conn->in_payload && conn->payload_left == 0) {
            conn->in_payload = 0;
            frame_done(conn);
        }
    }
}

/* Reads an HTTP response head into conn->head; returns the bytes of data it used, or -1 while the head is not whole. */
static long take_head(conn_t *conn, const unsigned char *data, size_t n) {
    size_t room = HEAD_MAX - 1 - conn->head_len;
    size_t take = n < room ? n : room;
    memcpy(conn->head + conn->head_len, data, take);
    int before = conn->head_len;
    conn->head_len += take;
    conn->head[conn->head_len] = 0;
    char *end = strstr(conn->head, "\r\n\r\n");
    if (!end) {
        if (conn->head_len >= HEAD_MAX - 1) snprintf(error, sizeof error, "an HTTP answer's head is too long");
        return -1;
    }
    return (end + 4 - conn->head) - before;
}

static void on_subscriber_data(conn_t *conn, const unsigned char *data, size_t n) {
    if (conn->phase == HANDSHAKE) {
        long used = take_head(conn, data, n);
        if (used < 0) return;
        if (strncmp(conn->head, "HTTP/1.1 101", 12) != 0) {
            snprintf(error, sizeof error, "the upgrade was refused: %.80s", conn->head);
            conn->phase = CLOSED;
            return;
        }
        conn->phase = ESTABLISHING;
        data += used;
        n -= used;
    }
    feed_frames(conn, data, n);
}

static void send_publish(conn_t *conn) {
    if (publish_sent >= msgs) return;
    publish_sent++;
    conn->head_len = 0;
    conn->body_left = -1;
    if (send_all(conn->fd, request, request_len) < 0) fail("publish");
}

static void on_publisher_data(conn_t *conn, const unsigned char *data, size_t n) {
    while (n > 0) {
        if (conn->body_left < 0) {
            long used = take_head(conn, data, n);
            if (used < 0) return;
            const char *length = strcasestr(conn->head, "\r\ncontent-length:");
            conn->body_left = length ? atol(length + 17) : 0;
            if (strncmp(conn->head, "HTTP/1.1 200", 12) != 0) {
                publish_err++;
                if (!error[0]) snprintf(error, sizeof error, "a publish was refused: %.120s", conn->head);
            }
            data += used;
            n -= used;
        }
        size_t take = n < (size_t)conn->body_left ? n : (size_t)conn->body_left;
        data += take;
        n -= take;
        conn->body_left -= take;
        if (conn->body_left == 0) {
            if (strncmp(conn->head, "HTTP/1.1 200", 12) == 0) publish_ok++;
            send_publish(conn);
        }
    }
}

int main(int argc, char **argv) {
    if (argc < 11) {
        fprintf(stderr,
                "usage: %s HOST PORT KEY CHANNEL EVENT SUBS MSGS PUB_CONC REQUEST_FILE TIMEOUT_S [SERVER_PID...]\n",
                argv[0]);
        return 2;
    }
    host = argv[1];
    port = atoi(argv[2]);
    key = argv[3];
    channel = argv[4];
    event_name = argv[5];
    subs = atoi(argv[6]);
    msgs = atol(argv[7]);
    pub_conc = atoi(argv[8]);
    double timeout = atof(argv[10]);
    snprintf(event_needle, sizeof event_needle, "\"%s\"", event_name);

    FILE *file = fopen(argv[9], "rb");
    if (!file) {
        perror(argv[9]);
        return 2;
    }
    fseek(file, 0, SEEK_END);
    request_len = ftell(file);
    rewind(file);
    request = malloc(request_len);
    if (fread(request, 1, request_len, file) != request_len) {
        perror(argv[9]);
        return 2;
    }
    fclose(file);

    conn_t *conns = calloc(subs + pub_conc, sizeof(conn_t));
    unsigned char *buffer = malloc(READ_SIZE);
    int epoll_fd = epoll_create1(0);
    struct epoll_event events[512];
    double started = now(), deadline = started + timeout;
    double publish_started = 0, last_delivery = 0, cpu_started = 0, server_started = 0;
    int opened = 0;

    while (!error[0] && now() < deadline) {
        while (opened < subs && handshakes_pending < HANDSHAKES_IN_FLIGHT && !error[0])
            if (open_connection(epoll_fd, &conns[opened++], 0) < 0) break;
        if (ready == subs && publish_started == 0) {
            cpu_started = own_cpu();
            server_started = server_cpu(argc - 11, argv + 11);
            publish_started = now();
            for (int k = 0; k < pub_conc && !error[0]; k++) {
                if (open_connection(epoll_fd, &conns[subs + k], 1) < 0) break;
                send_publish(&conns[subs + k]);
            }
        }
        if (publish_started && finished_subscribers == subs) break;
        int count = epoll_wait(epoll_fd, events, 512, 100);
        /* A wake-up for a few sockets costs as much as reading them: let a burst of writes gather first (this took
         * the sink from 0.21 to 0.17 µs per delivery; waiting 1 ms instead of 0.2 made it dearer again). */
        if (publish_started && count > 0 && count < 64) {
            usleep(200);
            count = epoll_wait(epoll_fd, events, 512, 0);
        }
        for (int e = 0; e < count; e++) {
            conn_t *conn = events[e].data.ptr;
            ssize_t got = recv(conn->fd, buffer, READ_SIZE, 0);
            if (got <= 0) {
                if (got < 0 && errno == EAGAIN) continue;
                if (!conn->publisher && conn->phase == COUNTING && conn->count < msgs) closed_during++;
                if (conn->publisher && publish_sent < msgs) snprintf(error, sizeof error, "a publisher was closed");
                if (!conn->publisher && conn->phase != COUNTING)
                    snprintf(error, sizeof error, "a subscriber was closed before it subscribed");
                epoll_ctl(epoll_fd, EPOLL_CTL_DEL, conn->fd, NULL);
                close(conn->fd);
                conn->phase = CLOSED;
                continue;
            }
            if (conn->publisher)
                on_publisher_data(conn, buffer, got);
            else {
                long before = delivered;
                on_subscriber_data(conn, buffer, got);
                if (delivered != before) last_delivery = now();
            }
        }
    }
    double cpu_spent = publish_started ? own_cpu() - cpu_started : 0;
    double server_spent = publish_started ? server_cpu(argc - 11, argv + 11) - server_started : 0;
    if (!error[0] && now() >= deadline) snprintf(error, sizeof error, "timed out after %.0f s", timeout);

    long expected = (long)subs * msgs;
    double seconds = last_delivery > publish_started ? last_delivery - publish_started : 0;
    double wall = publish_started ? now() - publish_started : 0;
    printf("{\"generator\": \"bench/sink.c\", \"subs\": %d, \"msgs\": %ld, \"pub_conc\": %d, \"connected\": %ld, "
           "\"ready\": %ld, \"expected\": %ld, \"delivered\": %ld, \"lost\": %ld, \"duplicates\": %ld, "
           "\"foreign_frames\": %ld, \"closed_during\": %ld, \"publish_ok\": %ld, \"publish_err\": %ld, "
           "\"first_publish_to_last_delivery_s\": %.3f, \"deliveries_per_s\": %.0f, \"wall_s\": %.3f, "
           "\"server_cpu_s\": %.3f, \"server_cpu_util\": %.3f, \"server_cpu_us_per_delivery\": %.3f, "
           "\"gen_cpu_s\": %.3f, \"gen_cpu_util\": %.3f, \"gen_cpu_us_per_delivery\": %.3f, \"error\": ",
           subs, msgs, pub_conc, connected, ready, expected, delivered - duplicates,
           expected - (delivered - duplicates), duplicates, foreign_frames, closed_during, publish_ok, publish_err,
           seconds, seconds > 0 ? delivered / seconds : 0, wall, server_spent, wall > 0 ? server_spent / wall : 0,
           delivered ? server_spent * 1e6 / delivered : 0, cpu_spent, wall > 0 ? cpu_spent / wall : 0,
           delivered ? cpu_spent * 1e6 / delivered : 0);
    if (error[0]) {
        putchar('"');
        for (const char *c = error; *c; c++)
            if (*c == '"' || *c == '\\')
                printf("\\%c", *c);
            else if ((unsigned char)*c >= 0x20)
                putchar(*c);
        puts("\"}");
    } else
        puts("null}");
    return error[0] ? 1 : 0;
}
