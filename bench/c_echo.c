/*
 * c_echo.c -- the C reference that reverb is measured against: a tight,
 * honest, single-threaded epoll echo server.
 *
 *   make bench/build/c_echo
 *   bench/build/c_echo [PORT [HOST]]     (default 8080 127.0.0.1; port 0: any)
 *
 * It prints "listening HOST:PORT" once bound.  Clients are level-triggered:
 * one read of up to 64 KiB per readiness event, written straight back; a
 * partial write parks the rest and switches the client to EPOLLOUT until
 * it drains.  That is the least work an epoll echo server can do per
 * request, which is what makes it a fair bar.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#define BUFSIZE 65536
#define MAXEVENTS 1024

typedef struct pending {   /* bytes the kernel has not taken yet */
  char *data;
  size_t len, off;
} pending;

static volatile sig_atomic_t stopping;
static pending *parked;     /* indexed by descriptor */
static int nparked;

static void on_signal(int sig) { (void)sig; stopping = 1; }

static void die(const char *what) {
  perror(what);
  exit(1);
}

static pending *slot(int fd) {
  if (fd >= nparked) {
    int n = fd * 2 + 64;
    parked = realloc(parked, (size_t)n * sizeof *parked);
    if (!parked) die("realloc");
    memset(parked + nparked, 0, (size_t)(n - nparked) * sizeof *parked);
    nparked = n;
  }
  return &parked[fd];
}

static void drop(int fd) {
  pending *p = slot(fd);
  free(p->data);
  memset(p, 0, sizeof *p);
  close(fd);   /* also leaves the epoll set */
}

static void watch(int ep, int op, int fd, uint32_t events) {
  struct epoll_event ev = { .events = events, .data.fd = fd };
  if (epoll_ctl(ep, op, fd, &ev) < 0) die("epoll_ctl");
}

/* Writes what is parked for fd; returns 0 when it all went. */
static int flush(int ep, int fd) {
  pending *p = slot(fd);
  while (p->off < p->len) {
    ssize_t n = send(fd, p->data + p->off, p->len - p->off, MSG_NOSIGNAL);
    if (n < 0) {
      if (errno == EAGAIN) return 1;
      drop(fd);
      return -1;
    }
    p->off += (size_t)n;
  }
  free(p->data);
  memset(p, 0, sizeof *p);
  watch(ep, EPOLL_CTL_MOD, fd, EPOLLIN);
  return 0;
}

static void echo(int ep, int fd, char *buf) {
  ssize_t n = recv(fd, buf, BUFSIZE, 0);
  if (n <= 0) {
    if (n < 0 && errno == EAGAIN) return;
    drop(fd);
    return;
  }
  ssize_t w = send(fd, buf, (size_t)n, MSG_NOSIGNAL);
  if (w == n) return;
  if (w < 0 && errno != EAGAIN) {
    drop(fd);
    return;
  }
  if (w < 0) w = 0;
  /* The kernel took part: keep the rest, stop reading until it drains. */
  pending *p = slot(fd);
  p->len = (size_t)(n - w);
  p->off = 0;
  p->data = malloc(p->len);
  if (!p->data) die("malloc");
  memcpy(p->data, buf + w, p->len);
  watch(ep, EPOLL_CTL_MOD, fd, EPOLLOUT);
}

int main(int argc, char **argv) {
  int port = argc > 1 ? atoi(argv[1]) : 8080;
  const char *host = argc > 2 ? argv[2] : "127.0.0.1";
  struct sockaddr_in addr = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
  socklen_t alen = sizeof addr;
  static char buf[BUFSIZE];
  struct epoll_event events[MAXEVENTS];
  int one = 1;

  signal(SIGINT, on_signal);
  signal(SIGTERM, on_signal);
  /* Thousands of clients: the soft limit on descriptors up to the hard
     one, as reverb's command raises its own. */
  struct rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
  }
  if (inet_pton(AF_INET, host, &addr.sin_addr) != 1) {
    fprintf(stderr, "c_echo: bad host %s\n", host);
    return 2;
  }
  int lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (lfd < 0) die("socket");
  setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (bind(lfd, (struct sockaddr *)&addr, sizeof addr) < 0) die("bind");
  if (listen(lfd, SOMAXCONN) < 0) die("listen");
  getsockname(lfd, (struct sockaddr *)&addr, &alen);
  printf("listening %s:%d\n", host, ntohs(addr.sin_port));
  fflush(stdout);

  int ep = epoll_create1(EPOLL_CLOEXEC);
  if (ep < 0) die("epoll_create1");
  watch(ep, EPOLL_CTL_ADD, lfd, EPOLLIN);
  while (!stopping) {
    int n = epoll_wait(ep, events, MAXEVENTS, -1);
    if (n < 0) {
      if (errno == EINTR) continue;
      die("epoll_wait");
    }
    for (int i = 0; i < n; i++) {
      int fd = events[i].data.fd;
      if (fd == lfd) {
        int c;
        /* Out of descriptors (EMFILE) ends this round; the level-triggered
           listener brings us back. */
        while ((c = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC)) >= 0)
          watch(ep, EPOLL_CTL_ADD, c, EPOLLIN);
      } else if (events[i].events & EPOLLOUT) {
        flush(ep, fd);
      } else {
        echo(ep, fd, buf);
      }
    }
  }
  return 0;
}
