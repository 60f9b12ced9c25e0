/*
 * stream.h -- private to the stream's files: its state, and what they
 * share.  stream.c keeps the state (made, checked, freed), its buffer's
 * memory and its waits; stream_read.c the reads; stream_write.c the
 * writes, pipe and the loop's relay.  See stream.c for how it works.
 */
#ifndef REVERB_STREAM_H
#define REVERB_STREAM_H

#include <errno.h>

#include "reverb.h"

#define SCRATCH (256 * 1024)     /* the most one recv asks for */
#define KEEP (64 * 1024)         /* an emptied buffer larger than this is freed */
#define MAX_LINE 65536           /* read_line's default limit */
#define STREAK 64                /* reads and writes in a row without a wait before a pause */
#define PIPE_STREAK 16           /* pipe's receives in a row without a wait before a pause */

typedef struct rv_stream {
  /* What every request touches first, together (after the userdata's
     72-byte header): three or four cache lines where the fields in their
     first order took four or five. */
  const char *tag;           /* marks a stream state (see rvs_tostate) */
  rv_socket *sock;           /* fd -1 once closed */
  rv_sched *sched;           /* the loop's, and its scratch buffer */
  char *scratch;             /* (all three kept alive by the state's user values) */
  size_t head, tail;         /* received, not read yet: buf[head, tail) */
  const char *scan_delim;    /* (a read parked in read_until keeps its delimiter alive) */
  double timeout;            /* seconds per wait; negative: none */
  lua_Integer bytes_in, bytes_out;   /* for getstats */
  int parked_fd;             /* where pipe last parked (its relay hint) */
  int rerr, werr;            /* a recv's or a send's errno that the loop's relay met,
                                raised by this stream's next receive or send */
  unsigned streak_at;        /* the scheduler's resumes at the first of them */
  unsigned char rready, hup, eof, wready, wlock;
  unsigned char streak;      /* calls in a row with no resume between (rvs_tired) */
  /* The rest: buffered reads, lines, getstats. */
  char *buf;
  size_t cap;
  size_t scanned;            /* bytes from head already searched for scan_delim */
  size_t max_line;
  double born;               /* when the stream was made (rv_now()) */
} rv_stream;

/* The upvalues of every stream function (see rv_stream_api). */
enum { UV_SCHED = 1, UV_MT, UV_READERS, UV_WAIT, UV_SLOW, UV_PAUSE, UV_SCRATCH, NUV = UV_SCRATCH };

/* A read's stack: self, its argument, the state userdata; in a
   continuation, the wake value above them. */
enum { I_SELF = 1, I_ARG, I_STATE };

static inline size_t buffered(const rv_stream *s) { return s->tail - s->head; }

static inline int wouldblock(ssize_t n) { return n == -EAGAIN || n == -EWOULDBLOCK; }

/* recv_once and send_once sit on the path of every request, called from
   a task's read or write and from the relay: left to itself, GCC splits
   them and calls the halves, 45 instructions more per echoed request
   (callgrind). */
#define RV_INLINE __attribute__((always_inline)) static inline

/* One recv into the scratch buffer, the stream kept up to date: the byte
   count (0 at the end of the stream; the stream then knows), or -errno.
   An error the relay met and kept comes first.  Raises nothing, so the
   relay calls it too, from dispatch. */
RV_INLINE ssize_t recv_once(rv_stream *s, char *scratch) {
  ssize_t n;
  if (s->rerr) {
    n = -s->rerr;
    s->rerr = 0;
    return n;
  }
  do n = recv(s->sock->fd, scratch, SCRATCH, 0);
  while (n < 0 && errno == EINTR);
  if (n < 0) return -errno;
  if (n == 0) {
    s->eof = 1;
    return 0;
  }
  /* A short read drained the socket: the next one waits for epoll first
     rather than pay a recv that says EAGAIN.  After a hang-up, reads go
     on until they see the end. */
  s->rready = n == SCRATCH || s->hup;
  s->bytes_in += n;
  return n;
}

/* One send of data[0, len): bytes taken, or -errno.  An error the relay
   met and kept comes first.  Raises nothing (the relay calls it too). */
RV_INLINE ssize_t send_once(rv_stream *s, const char *data, size_t len) {
  ssize_t n;
  if (s->werr) {
    n = -s->werr;
    s->werr = 0;
    return n;
  }
  do n = send(s->sock->fd, data, len, MSG_NOSIGNAL);
  while (n < 0 && errno == EINTR);
  return n < 0 ? -errno : n;
}

/* Whether a call on s should let the rest of the loop have a turn first
   (rvs_call_pause): the limit-th call on s with no resume of any task
   since the first, so one task that never has to wait (a client that
   never runs dry) cannot keep the loop to itself, while one that does
   wait between its calls (a broadcast now and then) never pauses. */
static inline int rvs_tired(rv_stream *s, unsigned limit) {
  unsigned r = s->sched->resumes;
  if (s->streak_at != r) {
    s->streak_at = r;
    s->streak = 0;
  }
  return ++s->streak > limit;
}

/* stream.c */
RV_HIDDEN int rvs_failat(lua_State *L, int idx, const char *op, int err, const char *message);
RV_HIDDEN int rvs_fail(lua_State *L, const char *op, int err, const char *message);
RV_HIDDEN int rvs_argerror(lua_State *L, int i, const char *fname, const char *msg);
RV_HIDDEN rv_stream *rvs_tostate(lua_State *L, int idx);
RV_HIDDEN rv_stream *rvs_check(lua_State *L);
RV_HIDDEN void rvs_append(lua_State *L, rv_stream *s, const char *data, size_t n);
RV_HIDDEN void rvs_consume(rv_stream *s, size_t n);
RV_HIDDEN int rvs_park(lua_State *L, rv_stream *s, const rv_stream *relay);
RV_HIDDEN void rvs_call_wait(lua_State *L, rv_stream *s, int write, lua_KContext ctx,
                             lua_KFunction k);
RV_HIDDEN void rvs_call_pause(lua_State *L, rv_stream *s, lua_KContext ctx, lua_KFunction k);
RV_HIDDEN void rvs_woken(lua_State *L, rv_stream *s, int write, const char *op, int at);

/* stream_read.c, stream_write.c: their methods, and the receive pipe shares */
extern RV_HIDDEN const luaL_Reg rv_stream_reads[];
extern RV_HIDDEN const luaL_Reg rv_stream_writes[];
RV_HIDDEN ssize_t rvs_receive(lua_State *L, rv_stream *s, char *scratch);

#endif
