/*
 * loadgen.c -- the load generator of reverb's benchmarks: epoll, one
 * process, optionally several threads (each owns its share of the
 * connections and its own epoll set; the results are merged).
 *
 *   make bench/build/loadgen
 *   loadgen --port P --mode pingpong|bulk|connstorm|idle [--host H] [--conns C]
 *           [--size S] [--duration SEC] [--warmup SEC] [--threads T]
 *           [--hold-until-stdin-eof]
 *
 * pingpong   C connections each send S bytes and wait for the whole echo
 *            (content checked) before sending again: round trips/s, latency.
 * bulk       C connections stream S-byte writes, at most 2*S unanswered,
 *            and check every echoed byte: MiB/s.
 * connstorm  C at a time: connect, send S bytes, read the echo, close: conn/s.
 * idle       open C connections, echo one byte on each, then hold them (for
 *            the server's memory per connection); prints idle_connected=N.
 *
 * Work runs --warmup seconds before counting starts, then --duration
 * seconds.  The last line is machine-readable:
 *   RESULT mode=pingpong conns=50 size=64 rate=123456.7 unit=req/s p50_us=.. p99_us=.. max_us=.. errors=0
 * Exit status 0 without errors, 1 with, 2 on a usage error.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

enum mode { PINGPONG, BULK, CONNSTORM, IDLE };

static struct {
  const char *host;
  int port, conns, size, threads, hold_stdin;
  double duration, warmup;
  enum mode mode;
  struct sockaddr_in addr;
} cfg = { "127.0.0.1", 0, 50, 64, 1, 0, 5, 1, PINGPONG, { 0 } };

/* Latency histogram: 1 us buckets below 1 ms, 1 ms buckets up to 10 s. */
#define FINE 1000
#define NBUCKETS (FINE + 10000)

typedef struct conn {
  int fd, id;
  uint64_t seq;          /* pingpong: message number; connstorm: cycle */
  size_t got, put;       /* bytes read back / written, this message or in all */
  double t0;             /* when the current round trip began */
  int connecting;
} conn;

typedef struct worker {
  pthread_t thread;
  int ep, first, count;  /* its connections: ids first .. first+count-1 */
  conn *conns;
  uint64_t done, errors;
  double bytes;
  uint64_t hist[NBUCKETS];
  double max_us;
} worker;

static double t_start, t_count, t_end;
static volatile int holding = 1;

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void usage(void) {
  fprintf(stderr, "usage: loadgen --port P --mode pingpong|bulk|connstorm|idle [--host H] "
                  "[--conns C] [--size S] [--duration SEC] [--warmup SEC] [--threads T] "
                  "[--hold-until-stdin-eof]\n");
  exit(2);
}

static void error_once(worker *w, const char *what, int err) {
  if (w->errors++ == 0) fprintf(stderr, "loadgen: %s: %s\n", what, err ? strerror(err) : "");
}

static void record(worker *w, double t0, double t1) {
  if (t0 < t_count) return;   /* warming up */
  double us = (t1 - t0) * 1e6;
  size_t b = us < FINE ? (size_t)us : FINE + (size_t)(us / 1000);
  if (b >= NBUCKETS) b = NBUCKETS - 1;
  w->hist[b]++;
  if (us > w->max_us) w->max_us = us;
}

/* The expected byte at position i of message seq on connection id. */
static unsigned char pattern(int id, uint64_t seq, size_t i) {
  return (unsigned char)(id * 7 + seq * 13 + i);
}

static int open_conn(int block) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | (block ? 0 : SOCK_NONBLOCK), 0);
  if (fd < 0) return -1;
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  if (connect(fd, (struct sockaddr *)&cfg.addr, sizeof cfg.addr) < 0 && errno != EINPROGRESS) {
    int e = errno;
    close(fd);
    errno = e;
    return -1;
  }
  return fd;
}

static void watch(worker *w, conn *c, int op, uint32_t events) {
  struct epoll_event ev = { .events = events, .data.ptr = c };
  epoll_ctl(w->ep, op, c->fd, &ev);
}

static void send_message(worker *w, conn *c, char *buf) {
  for (int i = 0; i < cfg.size; i++) buf[i] = (char)pattern(c->id, c->seq, (size_t)i);
  c->got = 0;
  c->t0 = now();
  if (send(c->fd, buf, (size_t)cfg.size, MSG_NOSIGNAL) != cfg.size) error_once(w, "send", errno);
}

/* Reads what is there; checks it against the message; 1 when whole. */
static int read_echo(worker *w, conn *c, char *buf) {
  ssize_t n = recv(c->fd, buf, (size_t)cfg.size - c->got, 0);
  if (n <= 0) {
    if (n < 0 && errno == EAGAIN) return 0;
    error_once(w, n == 0 ? "server closed a connection" : "recv", n == 0 ? 0 : errno);
    return -1;
  }
  for (ssize_t i = 0; i < n; i++)
    if ((unsigned char)buf[i] != pattern(c->id, c->seq, c->got + (size_t)i)) {
      error_once(w, "echo differs from what was sent", 0);
      return -1;
    }
  c->got += (size_t)n;
  return c->got == (size_t)cfg.size;
}

static void reconnect(worker *w, conn *c, char *buf) {
  close(c->fd);
  c->fd = open_conn(1);
  if (c->fd < 0) {
    error_once(w, "connect", errno);
    return;
  }
  c->seq++;
  watch(w, c, EPOLL_CTL_ADD, EPOLLIN);
  send_message(w, c, buf);
}

static void run_pingpong(worker *w, char *buf) {
  struct epoll_event evs[512];
  for (int i = 0; i < w->count; i++) {
    conn *c = &w->conns[i];
    watch(w, c, EPOLL_CTL_ADD, EPOLLIN);
    send_message(w, c, buf);
  }
  while (now() < t_end) {
    int n = epoll_wait(w->ep, evs, 512, 100);
    for (int i = 0; i < n; i++) {
      conn *c = evs[i].data.ptr;
      int r = read_echo(w, c, buf);
      if (r < 0) {
        reconnect(w, c, buf);
      } else if (r == 1) {
        double t = now();
        record(w, c->t0, t);
        if (c->t0 >= t_count && t < t_end) w->done++;
        c->seq++;
        send_message(w, c, buf);
      }
    }
  }
}

/* bulk: c->put counts bytes written, c->got bytes read back, in all. */
static void run_bulk(worker *w, char *buf) {
  struct epoll_event evs[512];
  size_t window = 2 * (size_t)cfg.size;
  char *out = malloc((size_t)cfg.size);
  for (int i = 0; i < w->count; i++) watch(w, &w->conns[i], EPOLL_CTL_ADD, EPOLLIN | EPOLLOUT);
  while (now() < t_end) {
    int n = epoll_wait(w->ep, evs, 512, 100);
    for (int i = 0; i < n; i++) {
      conn *c = evs[i].data.ptr;
      if (evs[i].events & EPOLLIN) {
        ssize_t k = recv(c->fd, buf, 65536, 0);
        if (k <= 0 && !(k < 0 && errno == EAGAIN)) {
          error_once(w, k == 0 ? "server closed a connection" : "recv", k == 0 ? 0 : errno);
          watch(w, c, EPOLL_CTL_DEL, 0);
          continue;
        }
        for (ssize_t j = 0; j < k; j++)
          if ((unsigned char)buf[j] != pattern(c->id, 0, c->got + (size_t)j)) {
            error_once(w, "echo differs from what was sent", 0);
            break;
          }
        if (k > 0) {
          c->got += (size_t)k;
          if (now() >= t_count) w->bytes += (double)k;
        }
      }
      if (c->put - c->got < window) {
        size_t len = (size_t)cfg.size;
        if (len > window - (c->put - c->got)) len = window - (c->put - c->got);
        for (size_t j = 0; j < len; j++) out[j] = (char)pattern(c->id, 0, c->put + j);
        ssize_t k = send(c->fd, out, len, MSG_NOSIGNAL);
        if (k > 0) c->put += (size_t)k;
        else if (k < 0 && errno != EAGAIN) error_once(w, "send", errno);
      }
      /* Only ask to write while the window has room. */
      watch(w, c, EPOLL_CTL_MOD, EPOLLIN | (c->put - c->got < window ? EPOLLOUT : 0));
    }
  }
  free(out);
}

static void storm_start(worker *w, conn *c) {
  c->fd = open_conn(0);
  if (c->fd < 0) {
    error_once(w, "connect", errno);
    return;
  }
  c->connecting = 1;
  c->t0 = now();
  watch(w, c, EPOLL_CTL_ADD, EPOLLOUT);
}

static void run_connstorm(worker *w, char *buf) {
  struct epoll_event evs[512];
  struct linger rst = { 1, 0 };
  for (int i = 0; i < w->count; i++) storm_start(w, &w->conns[i]);
  while (now() < t_end) {
    int n = epoll_wait(w->ep, evs, 512, 100);
    for (int i = 0; i < n; i++) {
      conn *c = evs[i].data.ptr;
      if (c->connecting) {
        int err = 0;
        socklen_t len = sizeof err;
        getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len);
        c->connecting = 0;
        if (err) {
          error_once(w, "connect", err);
          close(c->fd);
          storm_start(w, c);
          continue;
        }
        double t0 = c->t0;
        watch(w, c, EPOLL_CTL_MOD, EPOLLIN);
        send_message(w, c, buf);
        c->t0 = t0;
        continue;
      }
      int r = read_echo(w, c, buf);
      if (r == 0) continue;
      double t = now();
      if (r == 1) {
        record(w, c->t0, t);
        if (c->t0 >= t_count && t < t_end) w->done++;
      }
      /* Close with a reset: thousands of cycles a second would otherwise
         fill the port range with TIME_WAIT sockets within the run. */
      setsockopt(c->fd, SOL_SOCKET, SO_LINGER, &rst, sizeof rst);
      close(c->fd);
      c->seq++;
      storm_start(w, c);
    }
  }
}

/* idle: connect everything, prove each is served with a one-byte echo,
   then hold. */
static void run_idle(worker *w, char *buf) {
  struct epoll_event evs[512];
  int pending = 0;
  for (int i = 0; i < w->count; i++) {
    conn *c = &w->conns[i];
    c->fd = open_conn(0);
    if (c->fd < 0) {
      error_once(w, "connect", errno);
      continue;
    }
    c->connecting = 1;
    watch(w, c, EPOLL_CTL_ADD, EPOLLOUT);
    pending++;
  }
  double deadline = now() + 60;
  while (pending > 0 && now() < deadline) {
    int n = epoll_wait(w->ep, evs, 512, 100);
    for (int i = 0; i < n; i++) {
      conn *c = evs[i].data.ptr;
      if (c->connecting) {
        c->connecting = 0;
        if (send(c->fd, "!", 1, MSG_NOSIGNAL) != 1) {
          error_once(w, "send", errno);
          pending--;
          continue;
        }
        watch(w, c, EPOLL_CTL_MOD, EPOLLIN);
      } else if (recv(c->fd, buf, 1, 0) == 1) {
        w->done++;
        watch(w, c, EPOLL_CTL_DEL, 0);
        pending--;
      } else {
        error_once(w, "idle connection closed", errno);
        watch(w, c, EPOLL_CTL_DEL, 0);
        pending--;
      }
    }
  }
  if (pending > 0) w->errors += (uint64_t)pending;
}

static void *work(void *arg) {
  worker *w = arg;
  char *buf = malloc(65536);
  w->ep = epoll_create1(EPOLL_CLOEXEC);
  if (cfg.mode == PINGPONG || cfg.mode == BULK)
    for (int i = 0; i < w->count; i++) {
      conn *c = &w->conns[i];
      c->fd = open_conn(1);
      if (c->fd < 0) {
        error_once(w, "connect", errno);
        w->count = i;
        break;
      }
    }
  switch (cfg.mode) {
  case PINGPONG: run_pingpong(w, buf); break;
  case BULK: run_bulk(w, buf); break;
  case CONNSTORM: run_connstorm(w, buf); break;
  case IDLE: run_idle(w, buf); break;
  }
  free(buf);
  return NULL;
}

static double percentile(const uint64_t *hist, uint64_t total, double p) {
  uint64_t want = (uint64_t)((double)total * p), seen = 0;
  for (int b = 0; b < NBUCKETS; b++) {
    seen += hist[b];
    if (seen > want) return b < FINE ? b : (double)(b - FINE) * 1000;
  }
  return 0;
}

static void parse(int argc, char **argv) {
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
    if (strcmp(a, "--hold-until-stdin-eof") == 0) { cfg.hold_stdin = 1; continue; }
    if (!v) usage();
    if (strcmp(a, "--host") == 0) cfg.host = v;
    else if (strcmp(a, "--port") == 0) cfg.port = atoi(v);
    else if (strcmp(a, "--conns") == 0) cfg.conns = atoi(v);
    else if (strcmp(a, "--size") == 0) cfg.size = atoi(v);
    else if (strcmp(a, "--duration") == 0) cfg.duration = atof(v);
    else if (strcmp(a, "--warmup") == 0) cfg.warmup = atof(v);
    else if (strcmp(a, "--threads") == 0) cfg.threads = atoi(v);
    else if (strcmp(a, "--mode") == 0) {
      if (strcmp(v, "pingpong") == 0) cfg.mode = PINGPONG;
      else if (strcmp(v, "bulk") == 0) cfg.mode = BULK;
      else if (strcmp(v, "connstorm") == 0) cfg.mode = CONNSTORM;
      else if (strcmp(v, "idle") == 0) cfg.mode = IDLE;
      else usage();
    } else usage();
    i++;
  }
  if (cfg.port <= 0 || cfg.port > 65535 || cfg.conns < 1 || cfg.size < 1 || cfg.size > 65536 ||
      cfg.threads < 1 || cfg.threads > cfg.conns || cfg.duration <= 0 || cfg.warmup < 0)
    usage();
  cfg.addr.sin_family = AF_INET;
  cfg.addr.sin_port = htons((uint16_t)cfg.port);
  if (inet_pton(AF_INET, cfg.host, &cfg.addr.sin_addr) != 1) usage();
}

int main(int argc, char **argv) {
  static const char *modes[] = { "pingpong", "bulk", "connstorm", "idle" };
  static const char *units[] = { "req/s", "MiB/s", "conn/s", "conn" };
  struct rlimit rl;
  parse(argc, argv);
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {   /* thousands of connections */
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
  }
  worker *ws = calloc((size_t)cfg.threads, sizeof *ws);
  conn *conns = calloc((size_t)cfg.conns, sizeof *conns);
  for (int i = 0; i < cfg.conns; i++) conns[i].id = i;
  t_start = now();
  t_count = t_start + cfg.warmup;
  t_end = t_count + cfg.duration;
  if (cfg.mode == IDLE) t_end = t_start + 3600;
  for (int t = 0, first = 0; t < cfg.threads; t++) {
    ws[t].first = first;
    ws[t].count = cfg.conns / cfg.threads + (t < cfg.conns % cfg.threads);
    ws[t].conns = conns + first;
    first += ws[t].count;
    pthread_create(&ws[t].thread, NULL, work, &ws[t]);
  }
  uint64_t done = 0, errors = 0;
  double bytes = 0, max_us = 0;
  static uint64_t hist[NBUCKETS];
  for (int t = 0; t < cfg.threads; t++) {
    pthread_join(ws[t].thread, NULL);
    done += ws[t].done;
    errors += ws[t].errors;
    bytes += ws[t].bytes;
    if (ws[t].max_us > max_us) max_us = ws[t].max_us;
    for (int b = 0; b < NBUCKETS; b++) hist[b] += ws[t].hist[b];
  }
  if (cfg.mode == IDLE) {
    printf("idle_connected=%llu\n", (unsigned long long)done);
    fflush(stdout);
    if (cfg.hold_stdin) {
      char c;
      while (read(0, &c, 1) > 0) {}
    } else {
      sleep((unsigned)cfg.duration);
    }
    printf("RESULT mode=idle conns=%d connected=%llu errors=%llu\n", cfg.conns,
           (unsigned long long)done, (unsigned long long)errors);
    return errors ? 1 : 0;
  }
  uint64_t total = 0;
  for (int b = 0; b < NBUCKETS; b++) total += hist[b];
  double rate = cfg.mode == BULK ? bytes / cfg.duration / (1024 * 1024) : (double)done / cfg.duration;
  printf("%s: %d connections, %d-byte messages, %.1f s after %.1f s warm-up\n",
         modes[cfg.mode], cfg.conns, cfg.size, cfg.duration, cfg.warmup);
  printf("%.1f %s, latency p50 %.0f us, p99 %.0f us, max %.0f us, %llu errors\n", rate,
         units[cfg.mode], percentile(hist, total, 0.5), percentile(hist, total, 0.99), max_us,
         (unsigned long long)errors);
  printf("RESULT mode=%s conns=%d size=%d rate=%.1f unit=%s p50_us=%.0f p99_us=%.0f max_us=%.0f "
         "errors=%llu\n", modes[cfg.mode], cfg.conns, cfg.size, rate, units[cfg.mode],
         percentile(hist, total, 0.5), percentile(hist, total, 0.99), max_us,
         (unsigned long long)errors);
  return errors ? 1 : 0;
}
