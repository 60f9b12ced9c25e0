/*
 * stream.c -- the hot half of reverb.stream: its reads, its writes, its
 * pipe and its waits, in C.  lua/reverb/stream.lua keeps the object
 * itself (a table, so scripts can hang their own fields on a
 * connection), the write lock queue and close.
 *
 * Why C: an echoed request used to cost some 75 Lua instructions and a
 * dozen table lookups in the stream alone (buffer, position, readiness,
 * counters, each a field of the stream table).  Here that state is one
 * struct, reached from the table's array slot 1, and a read or a write is
 * one call that either completes or parks the task and resumes in a
 * continuation (lua_yieldk / lua_callk), so Lua sees an ordinary blocking
 * call.
 *
 * The read buffer holds what was received and not yet read, buf[head,
 * tail).  Every recv lands in a scratch buffer first; read_some with
 * nothing buffered returns straight from it, and pipe sends straight
 * from it (the echo path: no Lua string at all); the other reads append
 * it to the buffer and answer from there.  A delimiter search
 * remembers how far it looked (`scanned`), so a long line arriving in
 * small pieces is searched once, not once per piece (within one call: the
 * next may look for another delimiter).
 *
 * Readiness: `rready` says a recv may find data (set by a wake, or by the
 * loop's dispatch when data came while nobody waited; cleared by a short
 * read, which shows the socket drained), `hup` that the peer hung up (then
 * reads go on until the end of stream), `wready` that the last send went
 * through whole.  A call that can complete never touches epoll.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "reverb.h"

#define SCRATCH (256 * 1024)     /* the most one recv asks for */
#define KEEP (64 * 1024)         /* an emptied buffer larger than this is freed */
#define MAX_LINE 65536           /* read_line's default limit */

typedef struct rv_stream {
  const char *tag;           /* &streamtag: marks a stream state (see tostate) */
  rv_socket *sock;           /* fd -1 once closed */
  rv_sched *sched;           /* the loop's, and its scratch buffer */
  char *scratch;             /* (all three kept alive by the state's user values) */
  char *buf;                 /* received, not read yet: buf[head, tail) */
  size_t head, tail, cap;
  size_t scanned;            /* bytes from head already searched for a delimiter */
  size_t max_line;
  double timeout;            /* seconds per wait; negative: none */
  double born;               /* when the stream was made (rv_now()) */
  lua_Integer bytes_in, bytes_out;   /* for getstats */
  int parked_fd;             /* where pipe last parked (its relay hint) */
  int rerr, werr;            /* a recv's or a send's errno that the loop's relay met,
                                raised by this stream's next receive or send */
  unsigned char rready, hup, eof, wready, wlock;
} rv_stream;

/* The upvalues of every function below (see rv_stream_api). */
enum { UV_SCHED = 1, UV_MT, UV_READERS, UV_WAIT, UV_SLOW, UV_SCRATCH, NUV = UV_SCRATCH };

static const char streamtag = 0;

/* A read's stack: self, its argument, the state userdata; in a
   continuation, the wake value above them. */
enum { I_SELF = 1, I_ARG, I_STATE };

/* A read request, packed in a continuation's context: the operation in
   the low bits, its size above them (read_some's max, 0 for none; read's
   n).  So the hot path never converts its argument again. */
enum { OP_SOME, OP_LINE, OP_UNTIL, OP_EXACT, OP_ALL, OP_BITS = 3 };
#define OP(ctx) ((int)((ctx) & ((1 << OP_BITS) - 1)))
#define SIZE(ctx) ((size_t)((ctx) >> OP_BITS))
#define MAX_SIZE (((lua_Integer)1 << 60) - 1)   /* more than memory can hold */
static const char *const opnames[] = { "read", "read_line", "read_until", "read", "read_all" };

/* Raises an error object for op, with the peer of the stream at idx as
   its address. */
static int failat(lua_State *L, int idx, const char *op, int err, const char *message) {
  lua_getfield(L, idx, "peer");
  return rv_fail_msg(L, op, err, message, lua_tostring(L, -1));
}

static int fail(lua_State *L, const char *op, int err, const char *message) {
  return failat(L, I_SELF, op, err, message);
}

/* A bad argument i of the method fname: numbered as the method call
   counts (self not counted), and named, since these methods are usually
   called through pcall or a local, where Lua cannot find their names. */
static int argerror(lua_State *L, int i, const char *fname, const char *msg) {
  return luaL_error(L, "bad argument #%d to '%s' (%s)", i - 1, fname, msg);
}

/* The stream state in slot 1 of the table at idx (pushed), or NULL.  A
   state is a userdata of its struct's size whose tag holds streamtag's
   address, which Lua code cannot forge: a check that runs twice per
   request in three API calls, where comparing metatables takes five. */
static rv_stream *tostate(lua_State *L, int idx) {
  rv_stream *s;
  if (lua_rawgeti(L, idx, 1) != LUA_TUSERDATA) return NULL;
  s = (rv_stream *)lua_touserdata(L, -1);
  if (lua_rawlen(L, -1) != sizeof *s || s->tag != &streamtag) return NULL;
  return s;
}

/* The state of the stream at index 1, pushed; an argument error for
   anything else. */
static rv_stream *checkstream(lua_State *L) {
  rv_stream *s = lua_type(L, I_SELF) == LUA_TTABLE ? tostate(L, I_SELF) : NULL;
  if (s == NULL) luaL_typeerror(L, I_SELF, "reverb.stream");
  return s;
}

/* ---- the read buffer ---- */

static size_t buffered(const rv_stream *s) { return s->tail - s->head; }

/* Makes room for n more bytes after tail.  The unread bytes move to the
   front only when at least as many dead ones precede them, so the moves
   cost O(1) per byte however the reads and receives interleave. */
static void reserve(lua_State *L, rv_stream *s, size_t n) {
  size_t live = buffered(s), cap;
  char *p;
  if (s->cap - s->tail >= n) return;
  if (live + n <= s->cap && s->head >= live) {
    memmove(s->buf, s->buf + s->head, live);
    s->head = 0;
    s->tail = live;
    return;
  }
  cap = s->cap ? s->cap : 4096;
  while (cap < 2 * (live + n)) cap *= 2;
  p = (char *)malloc(cap);
  if (p == NULL) luaL_error(L, "reverb: out of memory for a stream buffer");
  if (live) memcpy(p, s->buf + s->head, live);
  free(s->buf);
  s->buf = p;
  s->cap = cap;
  s->head = 0;
  s->tail = live;
}

static void append(lua_State *L, rv_stream *s, const char *data, size_t n) {
  reserve(L, s, n);
  memcpy(s->buf + s->tail, data, n);
  s->tail += n;
}

/* Drops n bytes from the front; an emptied large buffer is given back. */
static void consume(rv_stream *s, size_t n) {
  s->head += n;
  s->scanned = 0;
  if (s->head < s->tail) return;
  s->head = s->tail = 0;
  if (s->cap > KEEP) {
    free(s->buf);
    s->buf = NULL;
    s->cap = 0;
  }
}

/* Pushes n buffered bytes (from the front) and consumes them. */
static void take(lua_State *L, rv_stream *s, size_t n) {
  lua_pushlstring(L, s->buf + s->head, n);
  consume(s, n);
}

/* ---- answering a read from what is buffered ---- */

/* Where the delimiter d (dlen bytes) starts in the buffer, searching from
   where the last search stopped; -1 when it is not there yet. */
static ptrdiff_t search(rv_stream *s, const char *d, size_t dlen) {
  const char *base = s->buf + s->head, *hit;
  size_t have = buffered(s), from = s->scanned;
  if (have < dlen) return -1;
  hit = dlen == 1 ? memchr(base + from, d[0], have - from)
                  : memmem(base + from, have - from, d, dlen);
  if (hit) return hit - base;
  /* The next search starts where a delimiter could still begin. */
  s->scanned = have - (dlen - 1);
  return -1;
}

static void toolong(lua_State *L, rv_stream *s) {
  lua_pushfstring(L, "line longer than %I bytes", (lua_Integer)s->max_line);
  fail(L, "read_line", EMSGSIZE, lua_tostring(L, -1));
}

/* A line of n buffered bytes, its "\n" (if any, one byte) and a "\r"
   before it dropped. */
static int line(lua_State *L, rv_stream *s, size_t n, size_t eol) {
  const char *p = s->buf + s->head;
  lua_pushlstring(L, p, n > 0 && p[n - 1] == '\r' ? n - 1 : n);
  consume(s, n + eol);
  return 1;
}

/* Pushes the results of read request rq from the buffer and returns
   their number, or -1 when it needs more bytes than are buffered (and the
   stream goes on). */
static int answer(lua_State *L, rv_stream *s, lua_KContext rq) {
  size_t have = buffered(s), size = SIZE(rq);
  int op = OP(rq);
  ptrdiff_t at;
  switch (op) {
  case OP_SOME:
    if (have == 0) break;
    take(L, s, size && size < have ? size : have);
    return 1;
  case OP_LINE:
    at = search(s, "\n", 1);
    if (at >= 0 ? (size_t)at > s->max_line : have > s->max_line) toolong(L, s);
    if (at >= 0) return line(L, s, (size_t)at, 1);
    if (s->eof && have > 0) return line(L, s, have, 0);
    break;
  case OP_UNTIL: {
    size_t dlen;
    const char *d = lua_tolstring(L, I_ARG, &dlen);
    at = search(s, d, dlen);
    if (at < 0) break;
    take(L, s, (size_t)at);
    consume(s, dlen);
    return 1;
  }
  case OP_EXACT:
    if (have < size) break;
    take(L, s, size);
    return 1;
  default:   /* OP_ALL: it all, at the end */
    if (!s->eof) return -1;
    take(L, s, have);
    return 1;
  }
  if (!s->eof) return -1;
  /* The end of the stream, before what op wanted. */
  lua_pushnil(L);
  if (op == OP_SOME || op == OP_LINE) return 1;
  take(L, s, have);   /* nil, the partial rest */
  return 2;
}

/* ---- receiving and waiting ---- */

static int wouldblock(ssize_t n) { return n == -EAGAIN || n == -EWOULDBLOCK; }

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

/* recv_once for a task: an error raised, and -1 when the socket is
   drained. */
static ssize_t receive(lua_State *L, rv_stream *s, char *scratch) {
  ssize_t n = recv_once(s, scratch);
  if (n >= 0) return n;
  if (!wouldblock(n)) rv_fail(L, "recv", (int)-n, NULL);
  s->rready = 0;
  return -1;
}

/* A wait, in two steps so that no caller recurses: a task reading
   without a deadline parks itself on the loop's readers table (the path
   of every request): park_reader returns 1 and the caller returns
   lua_yieldk(L, 1, ctx, k).  Anything else (a deadline, a write, the top
   level) calls loop.wait through call_wait: inside a task that yields and
   k continues; at top level it returns with the wake value on top (true:
   ready, false: timed out, "closed") and the caller goes on in a loop. */
static int park_reader(lua_State *L, rv_stream *s, const rv_stream *relay) {
  int fd = s->sock->fd;
  rv_hint h;
  if (s->timeout >= 0 || L != s->sched->current) return 0;
  if (lua_rawgeti(L, lua_upvalueindex(UV_READERS), fd) != LUA_TNIL) {
    lua_pop(L, 1);   /* someone waits already: loop.wait says who is wrong */
    return 0;
  }
  lua_pop(L, 1);
  h.task = (uintptr_t)L;
  h.state = (uintptr_t)s;
  h.sock = (uintptr_t)s->sock;
  h.self = (uintptr_t)lua_topointer(L, I_SELF);
  h.relay = (uintptr_t)relay;
  s->parked_fd = fd;
  rv_sched_hint(s->sched, fd, &h);
  lua_pushthread(L);
  lua_rawseti(L, lua_upvalueindex(UV_READERS), fd);
  lua_pushlightuserdata(L, (void *)&rv_sched_wait);
  return 1;
}

static void call_wait(lua_State *L, const rv_stream *s, int write, lua_KContext ctx,
                      lua_KFunction k) {
  lua_pushvalue(L, lua_upvalueindex(UV_WAIT));
  lua_pushvalue(L, I_SELF);
  lua_pushstring(L, write ? "write" : "read");
  if (s->timeout >= 0) lua_pushnumber(L, rv_now() + s->timeout);
  else lua_pushnil(L);
  lua_callk(L, 3, 1, ctx, k);
}

/* Takes the wake value off the top: ready, or raise what went wrong. */
static void woken(lua_State *L, rv_stream *s, int write, const char *op) {
  if (lua_toboolean(L, -1)) {
    lua_pop(L, 1);
    if (write) s->wready = 1;
    else s->rready = 1;   /* woken by the loop: the socket is readable */
    return;
  }
  if (lua_type(L, -1) == LUA_TBOOLEAN) fail(L, op, ETIMEDOUT, "timed out");
  fail(L, op, EBADF, "socket is closed");
}

/* ---- reads ---- */

static int readk(lua_State *L, int status, lua_KContext rq);

/* The body of every read: answer request rq from the buffer, else
   receive, else wait, until it has its answer. */
static int reading(lua_State *L, rv_stream *s, lua_KContext rq) {
  char *scratch = s->scratch;
  for (;;) {
    int n = answer(L, s, rq);
    ssize_t got;
    if (n >= 0) return n;
    if (s->sock->fd < 0) return fail(L, opnames[OP(rq)], EBADF, "socket is closed");
    if (!s->rready) {
      if (park_reader(L, s, NULL)) return lua_yieldk(L, 1, rq, readk);
      call_wait(L, s, 0, rq, readk);
      woken(L, s, 0, opnames[OP(rq)]);
      continue;
    }
    got = receive(L, s, scratch);
    if (got <= 0) continue;   /* at the end, or drained */
    if (OP(rq) == OP_SOME) {  /* nothing was buffered: straight from scratch */
      size_t give = SIZE(rq) && SIZE(rq) < (size_t)got ? SIZE(rq) : (size_t)got;
      lua_pushlstring(L, scratch, give);
      if (give < (size_t)got) append(L, s, scratch + give, (size_t)got - give);
      return 1;
    }
    append(L, s, scratch, (size_t)got);
  }
}

static int readk(lua_State *L, int status, lua_KContext rq) {
  rv_stream *s = (rv_stream *)lua_touserdata(L, I_STATE);
  (void)status;
  woken(L, s, 0, opnames[OP(rq)]);
  return reading(L, s, rq);
}

/* Starts a read: the stack becomes self, argument, state (I_STATE). */
static int startread(lua_State *L, int op, lua_Integer size) {
  rv_stream *s;
  if (lua_gettop(L) != I_ARG) lua_settop(L, I_ARG);
  s = checkstream(L);
  if (size > MAX_SIZE) size = MAX_SIZE;
  s->scanned = 0;   /* what an earlier call searched was for its own delimiter */
  return reading(L, s, (lua_KContext)size << OP_BITS | op);
}

/* read_some([max]) -> at least one byte, at most max; nil at the end. */
static int s_read_some(lua_State *L) {
  lua_Integer max = 0;
  if (lua_gettop(L) <= I_SELF) {   /* read_some(): the usual call */
    if (lua_gettop(L) < I_SELF) luaL_typeerror(L, I_SELF, "reverb.stream");
    lua_pushnil(L);   /* cheaper than settop */
  } else if (!lua_isnil(L, I_ARG)) {
    max = lua_isinteger(L, I_ARG) ? lua_tointeger(L, I_ARG) : 0;
    if (max < 1) argerror(L, I_ARG, "read_some", "positive integer expected");
  }
  return startread(L, OP_SOME, max);
}

/* read_line() -> a line without "\n" (and without a "\r" before it);
   nil at the end.  A line longer than max_line raises EMSGSIZE and
   stays buffered. */
static int s_read_line(lua_State *L) { return startread(L, OP_LINE, 0); }

/* read_until(delim) -> the bytes before delim (consumed); nil, partial
   at the end. */
static int s_read_until(lua_State *L) {
  if (lua_type(L, I_ARG) != LUA_TSTRING || lua_rawlen(L, I_ARG) == 0)
    argerror(L, I_ARG, "read_until", "non-empty string expected");
  return startread(L, OP_UNTIL, 0);
}

/* read(n) -> exactly n bytes; nil, partial at the end. */
static int s_read(lua_State *L) {
  if (!lua_isinteger(L, I_ARG) || lua_tointeger(L, I_ARG) < 0)
    argerror(L, I_ARG, "read", "non-negative integer expected");
  return startread(L, OP_EXACT, lua_tointeger(L, I_ARG));
}

/* read_all() -> everything until the end ("" when nothing came). */
static int s_read_all(lua_State *L) { return startread(L, OP_ALL, 0); }

/* ---- writes ---- */

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

/* send_once for a task: bytes taken (counted: getstats reports what
   went out, not what was asked for), 0 when the kernel has no room; an
   error raised. */
static size_t transmit(lua_State *L, rv_stream *s, const char *data, size_t len) {
  ssize_t n = send_once(s, data, len);
  if (n < 0) {
    if (!wouldblock(n)) rv_fail(L, "send", (int)-n, NULL);
    n = 0;
  }
  s->bytes_out += n;
  s->wready = (size_t)n == len;   /* a short send means the kernel buffer is full */
  return (size_t)n;
}

static int writek(lua_State *L, int status, lua_KContext ctx) {
  (void)L;
  (void)status;
  (void)ctx;
  return 1;   /* what the slow path returned: the stream */
}

/* write(...) -> the stream, once every argument (strings or numbers) is
   sent.  The kernel usually takes it all at once; when it does not, or
   another writer holds the stream, the Lua slow path waits its turn and
   for room. */
static int s_write(lua_State *L) {
  int n = lua_gettop(L) - 1;
  rv_stream *s = checkstream(L);
  size_t len, sent = 0;
  /* One string (or number): the usual call, checked and read at once. */
  const char *data = n == 1 ? lua_tolstring(L, 2, &len) : NULL;
  if (data == NULL) {
    lua_pop(L, 1);   /* the state: concat takes the arguments on top */
    for (int i = 2; i <= n + 1; i++) {
      int t = lua_type(L, i);
      if (t != LUA_TSTRING && t != LUA_TNUMBER)
        argerror(L, i, "write", lua_pushfstring(L, "string expected, got %s", luaL_typename(L, i)));
    }
    lua_concat(L, n);
    data = lua_tolstring(L, 2, &len);
  }
  if (s->sock->fd < 0) return fail(L, "write", EBADF, "socket is closed");
  if (!s->wlock && s->wready) {
    sent = len ? transmit(L, s, data, len) : 0;
    if (sent == len) {
      lua_settop(L, I_SELF);
      return 1;
    }
  }
  lua_settop(L, 2);
  lua_pushvalue(L, lua_upvalueindex(UV_SLOW));
  lua_insert(L, 1);
  lua_pushinteger(L, (lua_Integer)sent + 1);
  lua_callk(L, 3, 1, 0, writek);   /* slow_write(self, data, i) */
  return 1;
}

/* send(self, data, i) -> bytes of data[i..] the kernel took, or nil when
   it has no room: the slow path's step. */
static int s_send(lua_State *L) {
  rv_stream *s = checkstream(L);
  size_t len;
  const char *data = luaL_checklstring(L, 2, &len);
  lua_Integer i = luaL_checkinteger(L, 3);
  luaL_argcheck(L, i >= 1, 3, "index must be positive");
  if (s->sock->fd < 0) return fail(L, "write", EBADF, "socket is closed");
  if ((size_t)i > len) {
    lua_pushinteger(L, 0);
  } else if (!s->wready) {
    luaL_pushfail(L);
  } else {
    size_t sent = transmit(L, s, data + i - 1, len - (size_t)i + 1);
    if (sent) lua_pushinteger(L, (lua_Integer)sent);
    else luaL_pushfail(L);
  }
  return 1;
}

static int writablek(lua_State *L, int status, lua_KContext ctx) {
  (void)status;
  (void)ctx;
  woken(L, (rv_stream *)lua_touserdata(L, 2), 1, "write");
  return 0;
}

/* wait_writable(self): until the kernel has room again (the slow write's
   wait); raises ETIMEDOUT or EBADF as a write does. */
static int s_wait_writable(lua_State *L) {
  rv_stream *s;
  lua_settop(L, 1);
  s = checkstream(L);
  if (s->sock->fd < 0) return fail(L, "write", EBADF, "socket is closed");
  call_wait(L, s, 1, 0, writablek);
  return writablek(L, LUA_OK, 0);
}

/* ---- pipe ---- */

/* pipe's stack: the source (self), the destination, their states, and
   the source's byte count before what pipe moves (for its result). */
enum { P_DST = 2, P_SRC_STATE, P_DST_STATE, P_BASE };

static int piping(lua_State *L);

static int pipe_readk(lua_State *L, int status, lua_KContext ctx) {
  rv_stream *s = (rv_stream *)lua_touserdata(L, P_SRC_STATE);
  rv_sched *S = s->sched;
  int fd = s->parked_fd;
  (void)status;
  (void)ctx;
  /* Resumed, however: the loop must not relay for this task any more
     (the hint is the parked task's until another parks on fd). */
  if (fd >= 0 && fd < S->nhints && S->hints[fd].state == (uintptr_t)s) S->hints[fd].relay = 0;
  woken(L, s, 0, "pipe");
  return piping(L);
}

static int pipe_writek(lua_State *L, int status, lua_KContext ctx) {
  (void)status;
  (void)ctx;
  lua_settop(L, P_BASE);   /* slow_write's result */
  return piping(L);
}

/* Writes data[0, len) to the destination d, all of it, as write does:
   at once when the kernel takes it, else through the slow write, with a
   copy of the rest (data may be the scratch buffer, which other tasks
   reuse while this one waits).  Inside a task the slow write yields and
   pipe_writek goes on piping. */
static void forward(lua_State *L, rv_stream *d, const char *data, size_t len) {
  size_t sent = 0;
  if (d->sock->fd < 0) failat(L, P_DST, "write", EBADF, "socket is closed");
  if (!d->wlock && d->wready) {
    sent = transmit(L, d, data, len);
    if (sent == len) return;
  }
  lua_pushvalue(L, lua_upvalueindex(UV_SLOW));
  lua_pushvalue(L, P_DST);
  lua_pushlstring(L, data + sent, len - sent);
  lua_pushinteger(L, 1);
  lua_callk(L, 3, 1, 0, pipe_writek);
  lua_settop(L, P_BASE);
}

/* The body of pipe: whatever the source had buffered, then each chunk
   as it arrives, straight from the scratch buffer to the destination,
   until the source ends. */
static int piping(lua_State *L) {
  rv_stream *s = (rv_stream *)lua_touserdata(L, P_SRC_STATE);
  rv_stream *d = (rv_stream *)lua_touserdata(L, P_DST_STATE);
  for (;;) {
    ssize_t got;
    if (buffered(s) > 0) {   /* left by an earlier read: copied, then sent */
      size_t len;
      const char *data;
      lua_pushlstring(L, s->buf + s->head, buffered(s));
      consume(s, buffered(s));
      data = lua_tolstring(L, -1, &len);
      forward(L, d, data, len);
      lua_settop(L, P_BASE);
      continue;
    }
    if (s->eof) break;
    if (s->sock->fd < 0) return fail(L, "pipe", EBADF, "socket is closed");
    if (!s->rready) {
      if (park_reader(L, s, d)) return lua_yieldk(L, 1, 0, pipe_readk);
      call_wait(L, s, 0, 0, pipe_readk);
      woken(L, s, 0, "pipe");
      continue;
    }
    got = receive(L, s, s->scratch);
    if (got > 0) forward(L, d, s->scratch, (size_t)got);
  }
  lua_pushinteger(L, s->bytes_in - lua_tointeger(L, P_BASE));
  return 1;
}

/* pipe(dst) -> bytes moved: writes everything the stream receives to
   dst (another stream, or this one: an echo) until the stream ends.  A
   relay's inner loop, in C: no string per chunk, no Lua between a recv
   and its send. */
static int s_pipe(lua_State *L) {
  rv_stream *s, *d;
  lua_settop(L, P_DST);
  s = checkstream(L);
  d = lua_type(L, P_DST) == LUA_TTABLE ? tostate(L, P_DST) : NULL;
  if (d == NULL) argerror(L, P_DST, "pipe", "reverb.stream expected");
  lua_pushinteger(L, s->bytes_in - (lua_Integer)buffered(s));
  return piping(L);
}

/* dispatch's: data came for a task parked in pipe, from src (the state
   its hint names) to dst (the hint's relay).  Moves it as piping would,
   without resuming the task: one recv, one send, and the task stays
   parked (1).  That is the echo's whole round trip without touching the
   task's lua_State, call frames or stack, which at hundreds of
   connections are each a cache miss (+5-6% at 500 and 5,000 connections
   by alternating slices).  Anything else wakes the task (0), leaving it
   what piping needs to go on:
     - a full read: there may be more;
     - the end of the stream (eof set);
     - a recv error, kept in rerr for the task's next receive, or a send
       error, kept in dst's werr for its next send: the kernel reports a
       reset only once, and the next call would say EPIPE instead;
     - a send that took less than all: the rest goes to src's buffer,
       which piping forwards first, through the slow write.
   A stream another task is writing through (wlock) or whose last send
   found the kernel full is left to the task, so writes never interleave.
   Only the buffer's growth can raise (out of memory), in dispatch. */
int rv_stream_relay(lua_State *L, uintptr_t src, uintptr_t dst) {
  rv_stream *s = (rv_stream *)src, *d = (rv_stream *)dst;
  ssize_t n, sent;
  if (s->sock->fd < 0 || s->eof || s->hup || s->rerr || buffered(s) > 0 ||
      d->sock->fd < 0 || d->wlock || !d->wready || d->werr)
    return 0;
  n = recv_once(s, s->scratch);
  if (wouldblock(n)) return 1;   /* nothing after all */
  if (n <= 0) {                  /* the end (recv_once marked it), or an error */
    s->rerr = (int)-n;
    return 0;
  }
  sent = send_once(d, s->scratch, (size_t)n);
  if (sent < 0 && !wouldblock(sent)) {
    d->werr = (int)-sent;   /* for the task's own send, as transmit would raise it */
    sent = 0;
  } else {
    if (sent < 0) sent = 0;
    d->wready = sent == n;
  }
  d->bytes_out += sent;
  if (sent < n) {
    append(L, s, s->scratch + sent, (size_t)(n - sent));
    return 0;
  }
  return n < SCRATCH;
}

/* lock(self, held) -> whether the write lock was held before. */
static int s_lock(lua_State *L) {
  rv_stream *s = checkstream(L);
  lua_pushboolean(L, s->wlock);
  s->wlock = (unsigned char)lua_toboolean(L, 2);
  return 1;
}

/* settimeout(self, seconds | nil) -> self: every later wait raises
   ETIMEDOUT after this long. */
static int s_settimeout(lua_State *L) {
  rv_stream *s = checkstream(L);
  int t = lua_type(L, 2);
  if (t > LUA_TNIL && (t != LUA_TNUMBER || !(lua_tonumber(L, 2) >= 0)))   /* NaN too */
    argerror(L, 2, "settimeout", "non-negative number or nil expected");
  s->timeout = t == LUA_TNUMBER ? lua_tonumber(L, 2) : -1;
  lua_settop(L, 1);
  return 1;
}

/* getstats(self) -> bytes received, bytes written, seconds since the
   stream was made: LuaSocket's getstats.  (Counters kept here and read
   on demand: storing them in the stream table on every read and write
   cost 270 of the 2,750 instructions of an echoed request.) */
static int s_getstats(lua_State *L) {
  rv_stream *s = checkstream(L);
  lua_pushinteger(L, s->bytes_in);
  lua_pushinteger(L, s->bytes_out);
  lua_pushnumber(L, rv_now() - s->born);
  return 3;
}

/* new(socket [, max_line [, timeout]]) -> the state of a new stream,
   which stream.lua keeps at index 1 of the stream table. */
static int s_new(lua_State *L) {
  rv_socket *sock = (rv_socket *)luaL_checkudata(L, 1, RV_SOCKET);
  lua_Integer max_line = luaL_optinteger(L, 2, MAX_LINE);
  lua_Number timeout = luaL_optnumber(L, 3, -1);
  rv_stream *s;
  luaL_argcheck(L, max_line >= 1, 2, "must be positive");
  s = (rv_stream *)lua_newuserdatauv(L, sizeof *s, 3);
  memset(s, 0, sizeof *s);
  s->tag = &streamtag;
  s->sock = sock;
  s->sched = (rv_sched *)lua_touserdata(L, lua_upvalueindex(UV_SCHED));
  s->scratch = (char *)lua_touserdata(L, lua_upvalueindex(UV_SCRATCH));
  s->max_line = (size_t)max_line;
  s->timeout = timeout;
  s->born = rv_now();
  s->parked_fd = -1;
  s->rready = s->wready = 1;   /* try first: a recv or send says if not */
  lua_pushvalue(L, lua_upvalueindex(UV_MT));
  lua_setmetatable(L, -2);
  /* What the pointers above point into lives as long as the state: a
     state can outlive the functions that made it (a script may drop the
     scheduler and keep a stream). */
  lua_pushvalue(L, 1);
  lua_setiuservalue(L, -2, 1);
  lua_pushvalue(L, lua_upvalueindex(UV_SCHED));
  lua_setiuservalue(L, -2, 2);
  lua_pushvalue(L, lua_upvalueindex(UV_SCRATCH));
  lua_setiuservalue(L, -2, 3);
  return 1;
}

static int s_gc(lua_State *L) {
  rv_stream *s = (rv_stream *)lua_touserdata(L, 1);
  free(s->buf);
  s->buf = NULL;
  s->cap = s->head = s->tail = 0;
  return 0;
}

void rv_stream_meta(lua_State *L) {
  lua_createtable(L, 0, 2);
  lua_pushcfunction(L, s_gc);
  lua_setfield(L, -2, "__gc");
  lua_pushliteral(L, "reverb.stream.state");
  lua_setfield(L, -2, "__name");
}

/* dispatch's: data came for the watcher table at idx while nobody waited
   to read it; if it is a stream, its next read receives at once. */
void rv_stream_mark(lua_State *L, int idx, int hup) {
  rv_stream *s = tostate(L, idx);
  lua_pop(L, 1);
  if (s == NULL) return;
  s->rready = 1;
  if (hup) s->hup = 1;
}

/* rebind(api, readers): points every function of api (this table of
   functions) at a new readers table, once the loop has rebuilt its own
   at a smaller size (loop.lua's compact). */
static int s_rebind(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  luaL_checktype(L, 2, LUA_TTABLE);
  lua_pushnil(L);
  while (lua_next(L, 1)) {
    if (lua_iscfunction(L, -1) && lua_getupvalue(L, -1, UV_READERS) != NULL) {
      lua_pop(L, 1);
      lua_pushvalue(L, 2);
      lua_setupvalue(L, -2, UV_READERS);
    }
    lua_pop(L, 1);
  }
  return 0;
}

static const luaL_Reg funcs[] = {
  { "new", s_new },
  { "read_some", s_read_some },
  { "read_line", s_read_line },
  { "read_until", s_read_until },
  { "read", s_read },
  { "read_all", s_read_all },
  { "write", s_write },
  { "pipe", s_pipe },
  { "send", s_send },
  { "wait_writable", s_wait_writable },
  { "lock", s_lock },
  { "settimeout", s_settimeout },
  { "getstats", s_getstats },
  { "rebind", s_rebind },
  { NULL, NULL }
};

/* streams(readers, wait, slow_write) -> the functions above, bound to
   this loop: its scheduler and state metatable (this closure's
   upvalues), its readers table and wait, and stream.lua's slow write. */
int rv_stream_api(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  luaL_checktype(L, 2, LUA_TFUNCTION);
  luaL_checktype(L, 3, LUA_TFUNCTION);
  lua_newtable(L);
  lua_pushvalue(L, lua_upvalueindex(1));   /* UV_SCHED */
  lua_pushvalue(L, lua_upvalueindex(2));   /* UV_MT */
  lua_pushvalue(L, 1);
  lua_pushvalue(L, 2);
  lua_pushvalue(L, 3);
  lua_newuserdatauv(L, SCRATCH, 0);
  luaL_setfuncs(L, funcs, NUV);
  return 1;
}
