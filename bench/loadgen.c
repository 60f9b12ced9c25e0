/*
 * loadgen.c -- the load generator of reverb's benchmarks: epoll, one
 * process, optionally several threads (each owns its share of the
 * connections and its own epoll set; the results are merged).
 *
 *   make bench/build/loadgen
 *   loadgen --port P --mode pingpong|bulk|connstorm|idle [--host H] [--conns C]
 *           [--size S] [--duration SEC] [--warmup SEC] [--threads T]
 *           [--port2 Q [--slice SEC]] [--hold-until-stdin-eof]
 *
 * pingpong   C connections each send S bytes and wait for the whole echo
 *            (content checked) before sending again: round trips/s, latency.
 * bulk       C connections stream S-byte writes, at most 2*S unanswered,
 *            and check every echoed byte: MiB/s.
 * connstorm  C at a time: connect, send S bytes, read the echo, close: conn/s.
 * idle       open C connections, echo one byte on each, then hold them (for
 *            the server's memory per connection); prints idle_connected=N.
 *
 * Every byte sent follows a pattern that depends on the connection, the
 * message and the position (a 256-byte cycle, so it is written and
 * checked with memcpy and memcmp: checking byte by byte made the load
 * generator, not the server, the bottleneck of bulk).
 *
 * The connections are opened first; then work runs --warmup seconds
 * before counting starts, then --duration seconds.  Latency is kept in
 * buckets of 1 us below 1 ms, 10 us below 100 ms, 1 ms above.  The last
 * line is machine-readable:
 *   RESULT mode=pingpong conns=50 size=64 rate=123456.7 unit=req/s p50_us=.. p99_us=.. max_us=.. errors=0
 * (bulk, which has no round trips, has no latency fields).
 *
 * With --port2 Q (pingpong, bulk, connstorm; one thread) the load
 * alternates between two servers, P and Q, in slices of --slice seconds,
 * P Q P Q ... P: each slice starts its connections' work, stops starting
 * new work when its time is up, and waits for what is in flight, so the
 * two servers never run at once.  A slice's rate is its work over its
 * length; each Q slice gives the ratio of its rate to the mean of the two
 * P slices around it (which cancels a steady drift).  On a machine
 * whose speed drifts from second to second, neighbouring slices see the
 * same machine, so the median of those ratios holds still where the
 * ratio of two separate runs does not.  --warmup and --duration are then
 * rounded to whole pairs, and RESULT carries rate2=, ratio= (the median
 * pair ratio), the second server's latency (p50_us2= ...), errors= (both
 * servers': either makes the comparison void) with errors2= (Q's), work=
 * and work2= (all each server did, warm-up and drains included, in
 * requests, bytes or connections: what its CPU time is divided by for
 * its cost per unit) and each pair's ratio in ratios=.
 *
 * Exit status 0 without errors, 1 with, 2 on a usage error.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
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
  int port, port2, conns, size, threads, hold_stdin;
  double duration, warmup, slice;
  enum mode mode;
} cfg = { "127.0.0.1", 0, 0, 50, 64, 1, 0, 5, 1, 0.25, PINGPONG };

/* How long a slice waits for its work in flight before it gives up. */
#define DRAIN_MAX 10.0

/* Latency histogram: 1 us buckets below 1 ms, 10 us below 100 ms, 1 ms
   up to 10 s: within 1% of the latency from 100 us up. */
#define TIER1 1000                    /* buckets 0 .. 999: 1 us */
#define TIER2 (TIER1 + 9900)          /* .. 10,899: 10 us, 1 ms to 100 ms */
#define NBUCKETS (TIER2 + 9900)       /* .. 20,799: 1 ms, 100 ms to 10 s */

/* The byte pattern, one 256-byte cycle and a message's worth more, so
   that any stretch of it is one pointer: wave + (start & 255). */
static unsigned char wave[65536 + 256];

typedef struct conn {
  int fd, id;
  uint64_t seq;          /* pingpong: message number; connstorm: cycle */
  size_t got, put;       /* bytes read back / written, this message or in all */
  double t0;             /* when the current round trip began */
  int connecting;        /* connstorm, idle: the connect is under way */
  int streaming;         /* bulk: in this run and not drained yet */
  uint32_t events;       /* what epoll watches for it now */
} conn;

typedef struct worker {
  pthread_t thread;
  struct sockaddr_in addr;   /* its server */
  int ep, count;          /* its connections: conns[0 .. count-1] */
  conn *conns;
  uint64_t done, errors;
  double bytes, work;     /* work: everything done, counted or not */
  uint64_t hist[NBUCKETS];
  double max_us;
} worker;

/* Work that starts before t_count or ends after t_end is not counted. */
static double t_start, t_count, t_end;

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void usage(void) {
  fprintf(stderr, "usage: loadgen --port P --mode pingpong|bulk|connstorm|idle [--host H] "
                  "[--conns C] [--size S] [--duration SEC] [--warmup SEC] [--threads T] "
                  "[--port2 Q [--slice SEC]] [--hold-until-stdin-eof]\n");
  exit(2);
}

static void error_once(worker *w, const char *what, int err) {
  if (w->errors++ == 0) fprintf(stderr, "loadgen: %s: %s\n", what, err ? strerror(err) : "");
}

/* A round trip from t0 to t1, counted where the rate counts it. */
static void record(worker *w, double t0, double t1) {
  if (t0 < t_count || t1 >= t_end) return;   /* warming up, or draining */
  double us = (t1 - t0) * 1e6;
  size_t b = us < 1000 ? (size_t)us
           : us < 100000 ? TIER1 + (size_t)((us - 1000) / 10)
           : TIER2 + (size_t)((us - 100000) / 1000);
  if (b >= NBUCKETS) b = NBUCKETS - 1;
  w->hist[b]++;
  if (us > w->max_us) w->max_us = us;
}

/* The lower bound of bucket b, in microseconds. */
static double bucket_us(int b) {
  if (b < TIER1) return b;
  if (b < TIER2) return 1000 + (double)(b - TIER1) * 10;
  return 100000 + (double)(b - TIER2) * 1000;
}

/* The expected bytes from position i of message seq on connection id. */
static const unsigned char *pattern(int id, uint64_t seq, size_t i) {
  return wave + (((unsigned)id * 7 + seq * 13 + i) & 255);
}

static int open_conn(const worker *w, int block) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | (block ? 0 : SOCK_NONBLOCK), 0);
  if (fd < 0) return -1;
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  if (connect(fd, (const struct sockaddr *)&w->addr, sizeof w->addr) < 0 && errno != EINPROGRESS) {
    int e = errno;
    close(fd);
    errno = e;
    return -1;
  }
  return fd;
}

/* Adds, changes or removes what epoll watches for c; a change to what
   it watches already is no system call (bulk asks after every event, and
   an epoll_ctl each time cost the load generator, the scenario's limit,
   a tenth of its time). */
static void watch(worker *w, conn *c, int op, uint32_t events) {
  struct epoll_event ev = { .events = events, .data.ptr = c };
  if (op == EPOLL_CTL_MOD && events == c->events) return;
  c->events = op == EPOLL_CTL_DEL ? 0 : events;
  epoll_ctl(w->ep, op, c->fd, &ev);
}

static void send_message(worker *w, conn *c) {
  c->got = 0;
  c->t0 = now();
  if (send(c->fd, pattern(c->id, c->seq, 0), (size_t)cfg.size, MSG_NOSIGNAL) != cfg.size)
    error_once(w, "send", errno);
}

/* Reads what is there; checks it against the message; 1 when whole. */
static int read_echo(worker *w, conn *c, char *buf) {
  ssize_t n = recv(c->fd, buf, (size_t)cfg.size - c->got, 0);
  if (n <= 0) {
    if (n < 0 && errno == EAGAIN) return 0;
    error_once(w, n == 0 ? "server closed a connection" : "recv", n == 0 ? 0 : errno);
    return -1;
  }
  if (memcmp(buf, pattern(c->id, c->seq, c->got), (size_t)n) != 0) {
    error_once(w, "echo differs from what was sent", 0);
    return -1;
  }
  c->got += (size_t)n;
  return c->got == (size_t)cfg.size;
}

static void reconnect(worker *w, conn *c) {
  close(c->fd);
  c->fd = open_conn(w, 1);
  if (c->fd < 0) {
    error_once(w, "connect", errno);
    return;
  }
  c->seq++;
  watch(w, c, EPOLL_CTL_ADD, EPOLLIN);
  send_message(w, c);
}

/* Each run below starts its connections' work, stops starting new work
   at t_stop, and returns once what is in flight has come back (or after
   DRAIN_MAX more seconds, an error).  Connections that failed for good
   have fd -1 and sit out. */

/* pingpong: one message out per connection at a time. */
static void run_pingpong(worker *w, char *buf, double t_stop) {
  struct epoll_event evs[512];
  int busy = 0;
  for (int i = 0; i < w->count; i++) {
    conn *c = &w->conns[i];
    if (c->fd < 0) continue;
    send_message(w, c);
    busy++;
  }
  while (busy > 0) {
    if (now() > t_stop + DRAIN_MAX) {
      error_once(w, "echoes still missing after the run", 0);
      break;
    }
    int n = epoll_wait(w->ep, evs, 512, 100);
    for (int i = 0; i < n; i++) {
      conn *c = evs[i].data.ptr;
      int r = read_echo(w, c, buf);
      if (r < 0) {
        reconnect(w, c);   /* sends the next message on a new connection */
        if (c->fd < 0) busy--;
      } else if (r == 1) {
        double t = now();
        record(w, c->t0, t);
        if (c->t0 >= t_count && t < t_end) w->done++;
        w->work++;
        c->seq++;
        if (t < t_stop) send_message(w, c);
        else busy--;
      }
    }
  }
}

/* bulk: each connection streams, with at most 2*S bytes unanswered;
   c->put counts bytes written, c->got bytes read back, in all. */
static void run_bulk(worker *w, char *buf, double t_stop) {
  struct epoll_event evs[512];
  size_t window = 2 * (size_t)cfg.size;
  int busy = 0, stopping = 0;
  for (int i = 0; i < w->count; i++) {
    conn *c = &w->conns[i];
    if (c->fd < 0) continue;
    c->streaming = 1;
    watch(w, c, EPOLL_CTL_MOD, EPOLLIN | EPOLLOUT);
    busy++;
  }
  while (busy > 0) {
    double t = now();
    if (t > t_stop + DRAIN_MAX) {
      error_once(w, "echoes still missing after the run", 0);
      break;
    }
    if (!stopping && t >= t_stop) {   /* no more writes; the idle are done */
      stopping = 1;
      for (int i = 0; i < w->count; i++) {
        conn *c = &w->conns[i];
        if (c->fd >= 0 && c->streaming && c->put == c->got) {
          c->streaming = 0;
          watch(w, c, EPOLL_CTL_MOD, EPOLLIN);
          busy--;
        }
      }
      continue;
    }
    int n = epoll_wait(w->ep, evs, 512, 100);
    for (int i = 0; i < n; i++) {
      conn *c = evs[i].data.ptr;
      if (c->fd < 0 || !c->streaming) continue;
      if (evs[i].events & EPOLLIN) {
        ssize_t k = recv(c->fd, buf, 65536, 0);
        if (k <= 0 && !(k < 0 && errno == EAGAIN)) {
          error_once(w, k == 0 ? "server closed a connection" : "recv", k == 0 ? 0 : errno);
          close(c->fd);
          c->fd = -1;
          busy--;
          continue;
        }
        if (k > 0) {
          double tk = now();
          if (memcmp(buf, pattern(c->id, 0, c->got), (size_t)k) != 0)
            error_once(w, "echo differs from what was sent", 0);
          c->got += (size_t)k;
          w->work += (double)k;
          if (tk >= t_count && tk < t_end) w->bytes += (double)k;
        }
      }
      if (stopping) {
        if (c->put == c->got) {
          c->streaming = 0;
          watch(w, c, EPOLL_CTL_MOD, EPOLLIN);
          busy--;
        }
        continue;
      }
      if (c->put - c->got < window) {
        size_t len = (size_t)cfg.size;
        if (len > window - (c->put - c->got)) len = window - (c->put - c->got);
        ssize_t k = send(c->fd, pattern(c->id, 0, c->put), len, MSG_NOSIGNAL);
        if (k > 0) c->put += (size_t)k;
        else if (k < 0 && errno != EAGAIN) error_once(w, "send", errno);
      }
      /* Only ask to write while the window has room. */
      watch(w, c, EPOLL_CTL_MOD, EPOLLIN | (c->put - c->got < window ? EPOLLOUT : 0));
    }
  }
}

/* connstorm: connect, send, read the echo, close, and again. */
static void storm_start(worker *w, conn *c) {
  c->fd = open_conn(w, 0);
  if (c->fd < 0) {
    error_once(w, "connect", errno);
    return;
  }
  c->connecting = 1;
  c->t0 = now();
  watch(w, c, EPOLL_CTL_ADD, EPOLLOUT);
}

static void run_connstorm(worker *w, char *buf, double t_stop) {
  struct epoll_event evs[512];
  struct linger rst = { 1, 0 };
  int busy = 0;
  for (int i = 0; i < w->count; i++) {
    storm_start(w, &w->conns[i]);
    busy += w->conns[i].fd >= 0;
  }
  while (busy > 0) {
    if (now() > t_stop + DRAIN_MAX) {
      error_once(w, "echoes still missing after the run", 0);
      break;
    }
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
          c->fd = -1;
          if (now() < t_stop) storm_start(w, c);
          if (c->fd < 0) busy--;
          continue;
        }
        double t0 = c->t0;
        watch(w, c, EPOLL_CTL_MOD, EPOLLIN);
        send_message(w, c);
        c->t0 = t0;
        continue;
      }
      int r = read_echo(w, c, buf);
      if (r == 0) continue;
      double t = now();
      if (r == 1) {
        record(w, c->t0, t);
        if (c->t0 >= t_count && t < t_end) w->done++;
        w->work++;
      }
      /* Close with a reset: thousands of cycles a second would otherwise
         fill the port range with TIME_WAIT sockets within the run. */
      setsockopt(c->fd, SOL_SOCKET, SO_LINGER, &rst, sizeof rst);
      close(c->fd);
      c->fd = -1;
      c->seq++;
      if (t < t_stop) storm_start(w, c);
      if (c->fd < 0) busy--;
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
    c->fd = open_conn(w, 0);
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
      } else if (recv(c->fd, buf, 1, 0) == 1 && buf[0] == '!') {
        w->done++;
        watch(w, c, EPOLL_CTL_DEL, 0);
        pending--;
      } else {
        error_once(w, "idle connection closed or echoed wrong", errno);
        watch(w, c, EPOLL_CTL_DEL, 0);
        pending--;
      }
    }
  }
  if (pending > 0) w->errors += (uint64_t)pending;
}

/* A worker's epoll set and, for pingpong and bulk, its connections,
   open and watched for the runs to come. */
static void setup(worker *w) {
  w->ep = epoll_create1(EPOLL_CLOEXEC);
  for (int i = 0; i < w->count; i++) w->conns[i].fd = -1;
  if (cfg.mode != PINGPONG && cfg.mode != BULK) return;
  for (int i = 0; i < w->count; i++) {
    conn *c = &w->conns[i];
    c->fd = open_conn(w, 1);
    if (c->fd < 0) {
      error_once(w, "connect", errno);
      w->count = i;
      break;
    }
    watch(w, c, EPOLL_CTL_ADD, EPOLLIN);
  }
}

static void run(worker *w, char *buf, double t_stop) {
  switch (cfg.mode) {
  case PINGPONG: run_pingpong(w, buf, t_stop); break;
  case BULK: run_bulk(w, buf, t_stop); break;
  case CONNSTORM: run_connstorm(w, buf, t_stop); break;
  case IDLE: run_idle(w, buf); break;
  }
}

/* A thread's work: its connections are open already (setup, before the
   clock starts). */
static void *work(void *arg) {
  worker *w = arg;
  char *buf = malloc(65536);
  run(w, buf, t_end);
  free(buf);
  return NULL;
}

static double percentile(const uint64_t *hist, uint64_t total, double p) {
  uint64_t want = (uint64_t)((double)total * p), seen = 0;
  for (int b = 0; b < NBUCKETS; b++) {
    seen += hist[b];
    if (seen > want) return bucket_us(b);
  }
  return 0;
}

/* A whole number from 0 to INT_MAX or a decimal, all of v, or a usage
   error. */
static int whole(const char *v) {
  char *end;
  long n = strtol(v, &end, 10);
  if (*v == '\0' || *end != '\0' || n < 0 || n > INT_MAX) usage();
  return (int)n;
}

static double decimal(const char *v) {
  char *end;
  double x = strtod(v, &end);
  if (*v == '\0' || *end != '\0') usage();
  return x;
}

static void parse(int argc, char **argv) {
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
    if (strcmp(a, "--hold-until-stdin-eof") == 0) { cfg.hold_stdin = 1; continue; }
    if (!v) usage();
    if (strcmp(a, "--host") == 0) cfg.host = v;
    else if (strcmp(a, "--port") == 0) cfg.port = whole(v);
    else if (strcmp(a, "--port2") == 0) cfg.port2 = whole(v);
    else if (strcmp(a, "--slice") == 0) cfg.slice = decimal(v);
    else if (strcmp(a, "--conns") == 0) cfg.conns = whole(v);
    else if (strcmp(a, "--size") == 0) cfg.size = whole(v);
    else if (strcmp(a, "--duration") == 0) cfg.duration = decimal(v);
    else if (strcmp(a, "--warmup") == 0) cfg.warmup = decimal(v);
    else if (strcmp(a, "--threads") == 0) cfg.threads = whole(v);
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
  if (cfg.port2 && (cfg.port2 < 0 || cfg.port2 > 65535 || cfg.threads != 1 || cfg.mode == IDLE ||
                    !(cfg.slice > 0)))
    usage();
}

static void address(struct sockaddr_in *addr, int port) {
  addr->sin_family = AF_INET;
  addr->sin_port = htons((uint16_t)port);
  if (inet_pton(AF_INET, cfg.host, &addr->sin_addr) != 1) {
    fprintf(stderr, "loadgen: --host takes a numeric IPv4 address, not '%s'\n", cfg.host);
    exit(2);
  }
}

static const char *const modes[] = { "pingpong", "bulk", "connstorm", "idle" };
static const char *const units[] = { "req/s", "MiB/s", "conn/s", "conn" };

static double amount(const worker *w) {
  return cfg.mode == BULK ? w->bytes / (1024 * 1024) : (double)w->done;
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

static double median(const double *v, int n) {
  double *t = malloc((size_t)n * sizeof *t), m;
  memcpy(t, v, (size_t)n * sizeof *t);
  qsort(t, (size_t)n, sizeof *t, cmp_double);
  m = n % 2 ? t[n / 2] : (t[n / 2 - 1] + t[n / 2]) / 2;
  free(t);
  return m;
}

static uint64_t total_of(const uint64_t *hist) {
  uint64_t total = 0;
  for (int b = 0; b < NBUCKETS; b++) total += hist[b];
  return total;
}

/* --port2: the two workers take turns, a slice each: P Q P Q ... P.
   Each Q slice is compared with the P slices on either side of it, so a
   steady drift of the machine's speed cancels out. */
static int alternate(worker *ws) {
  int warm = (int)ceil(cfg.warmup / (2 * cfg.slice) - 1e-9);
  int pairs = (int)ceil(cfg.duration / (2 * cfg.slice) - 1e-9);
  double *rate[2], *ratio;
  char *buf = malloc(65536);
  if (pairs < 1) pairs = 1;
  rate[0] = calloc((size_t)pairs + 1, sizeof(double));
  rate[1] = calloc((size_t)pairs + 1, sizeof(double));
  ratio = calloc((size_t)pairs, sizeof(double));
  setup(&ws[0]);
  setup(&ws[1]);
  t_end = HUGE_VAL;
  for (int k = 0; k < 2 * (warm + pairs) + 1; k++) {
    int g = k % 2, i = k / 2 - warm;
    worker *w = &ws[g];
    double before = amount(w), t0 = now();
    t_count = i < 0 ? HUGE_VAL : t0;   /* warm-up slices count nothing */
    run(w, buf, t0 + cfg.slice);
    if (i >= 0) rate[g][i] = (amount(w) - before) / (now() - t0);
  }
  for (int i = 0; i < pairs; i++) {
    double p = (rate[0][i] + rate[0][i + 1]) / 2;
    ratio[i] = p > 0 ? rate[1][i] / p : 0;
  }
  uint64_t errors = ws[0].errors + ws[1].errors;
  const char *wunit = cfg.mode == BULK ? "bytes" : cfg.mode == CONNSTORM ? "conns" : "requests";
  double r0 = median(rate[0], pairs + 1), r1 = median(rate[1], pairs), q = median(ratio, pairs);
  uint64_t n0 = total_of(ws[0].hist), n1 = total_of(ws[1].hist);
  printf("%s: %d connections, %d-byte messages, %d pairs of %.2f s slices after %d warm-up pairs\n",
         modes[cfg.mode], cfg.conns, cfg.size, pairs, cfg.slice, warm);
  for (int g = 0; g < 2; g++) {
    printf("port %d: %.1f %s (median slice), %.0f %s in all, %llu errors", g ? cfg.port2 : cfg.port,
           g ? r1 : r0, units[cfg.mode], ws[g].work, wunit, (unsigned long long)ws[g].errors);
    if (cfg.mode != BULK)
      printf(", latency p50 %.0f us, p99 %.0f us, max %.0f us",
             percentile(ws[g].hist, g ? n1 : n0, 0.5), percentile(ws[g].hist, g ? n1 : n0, 0.99),
             ws[g].max_us);
    printf("\n");
  }
  printf("port %d / port %d: median %.3f of pairs", cfg.port2, cfg.port, q);
  for (int p = 0; p < pairs; p++) printf(" %.3f", ratio[p]);
  printf("\n");
  printf("RESULT mode=%s conns=%d size=%d rate=%.1f rate2=%.1f ratio=%.4f unit=%s ",
         modes[cfg.mode], cfg.conns, cfg.size, r0, r1, q, units[cfg.mode]);
  if (cfg.mode != BULK)
    printf("p50_us=%.0f p99_us=%.0f max_us=%.0f p50_us2=%.0f p99_us2=%.0f max_us2=%.0f ",
           percentile(ws[0].hist, n0, 0.5), percentile(ws[0].hist, n0, 0.99), ws[0].max_us,
           percentile(ws[1].hist, n1, 0.5), percentile(ws[1].hist, n1, 0.99), ws[1].max_us);
  printf("work=%.0f work2=%.0f errors=%llu errors2=%llu ratios=", ws[0].work, ws[1].work,
         (unsigned long long)errors, (unsigned long long)ws[1].errors);
  for (int p = 0; p < pairs; p++) printf("%s%.4f", p ? "," : "", ratio[p]);
  printf("\n");
  free(buf);
  free(rate[0]);
  free(rate[1]);
  free(ratio);
  return errors ? 1 : 0;
}

int main(int argc, char **argv) {
  struct rlimit rl;
  parse(argc, argv);
  for (size_t i = 0; i < sizeof wave; i++) wave[i] = (unsigned char)i;
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {   /* thousands of connections */
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
  }
  if (cfg.port2) {
    worker *ws = calloc(2, sizeof *ws);
    conn *conns = calloc(2 * (size_t)cfg.conns, sizeof *conns);
    for (int g = 0; g < 2; g++) {
      address(&ws[g].addr, g ? cfg.port2 : cfg.port);
      ws[g].count = cfg.conns;
      ws[g].conns = conns + g * cfg.conns;
      for (int i = 0; i < cfg.conns; i++) ws[g].conns[i].id = i;
    }
    return alternate(ws);
  }
  worker *ws = calloc((size_t)cfg.threads, sizeof *ws);
  conn *conns = calloc((size_t)cfg.conns, sizeof *conns);
  for (int i = 0; i < cfg.conns; i++) conns[i].id = i;
  for (int t = 0, first = 0; t < cfg.threads; t++) {
    address(&ws[t].addr, cfg.port);
    ws[t].count = cfg.conns / cfg.threads + (t < cfg.conns % cfg.threads);
    ws[t].conns = conns + first;
    first += ws[t].count;
    setup(&ws[t]);   /* connections opened before the clock starts */
  }
  t_start = now();
  t_count = t_start + cfg.warmup;
  t_end = t_count + cfg.duration;
  if (cfg.mode == IDLE) t_end = t_start + 3600;
  for (int t = 0; t < cfg.threads; t++) pthread_create(&ws[t].thread, NULL, work, &ws[t]);
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
  uint64_t total = total_of(hist);
  double rate = cfg.mode == BULK ? bytes / cfg.duration / (1024 * 1024) : (double)done / cfg.duration;
  printf("%s: %d connections, %d-byte messages, %.1f s after %.1f s warm-up\n",
         modes[cfg.mode], cfg.conns, cfg.size, cfg.duration, cfg.warmup);
  if (cfg.mode == BULK)
    printf("%.1f %s, %llu errors\n", rate, units[cfg.mode], (unsigned long long)errors);
  else
    printf("%.1f %s, latency p50 %.0f us, p99 %.0f us, max %.0f us, %llu errors\n", rate,
           units[cfg.mode], percentile(hist, total, 0.5), percentile(hist, total, 0.99), max_us,
           (unsigned long long)errors);
  printf("RESULT mode=%s conns=%d size=%d rate=%.1f unit=%s ", modes[cfg.mode], cfg.conns,
         cfg.size, rate, units[cfg.mode]);
  if (cfg.mode != BULK)
    printf("p50_us=%.0f p99_us=%.0f max_us=%.0f ", percentile(hist, total, 0.5),
           percentile(hist, total, 0.99), max_us);
  printf("errors=%llu\n", (unsigned long long)errors);
  return errors ? 1 : 0;
}
