/*
 * stream_write.c -- the stream's writes and pipe, and the loop's relay.
 * A write sends at once when the kernel takes it all (the usual case);
 * else stream.lua's slow write waits its turn (the write lock) and for
 * room.  pipe moves what one stream receives to another (or itself: an
 * echo) in C, and while it waits, the loop's dispatch moves each arrival
 * itself (rv_stream_relay, called from csrc/sched.c).
 */
#define _GNU_SOURCE
#include <string.h>

#include "stream.h"

/* A write's error, with the peer of the stream table at idx, its own
   message (or strerror's) and how much of this write went out before it
   (sent: LuaSocket tells its last index). */
static int write_failed(lua_State *L, int idx, const char *op, int err, const char *message,
                        size_t sent) {
  lua_getfield(L, idx, "peer");
  rv_pusherror_msg(L, op, err, message, lua_tostring(L, -1));
  lua_pushinteger(L, (lua_Integer)sent);
  lua_setfield(L, -2, "sent");
  return lua_error(L);
}

/* send_once for a task: bytes taken (counted: getstats reports what
   went out, not what was asked for), 0 when the kernel has no room; an
   error raised, with the peer of the stream table at idx.  A write's
   error also says how much of it went out before (`sent`: none, when it
   fails here; the slow write counts its own). */
static size_t transmit(lua_State *L, int idx, rv_stream *s, const char *data, size_t len,
                       int writing) {
  ssize_t n = send_once(s, data, len);
  if (n < 0) {
    if (!wouldblock(n)) {
      if (writing) write_failed(L, idx, "send", (int)-n, NULL, 0);
      rvs_failat(L, idx, "send", (int)-n, NULL);   /* pipe's: no count of its own */
    }
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

static int writing(lua_State *L, rv_stream *s, int n);

/* A write resumed after its pause: the pause's value off, then on. */
static int write_pausedk(lua_State *L, int status, lua_KContext n) {
  (void)status;
  lua_settop(L, (int)n + 2);   /* self, the n arguments, the state */
  return writing(L, (rv_stream *)lua_touserdata(L, -1), (int)n);
}

/* write(...) -> the stream, once every argument (strings or numbers) is
   sent.  The kernel usually takes it all at once; when it does not, or
   another writer holds the stream, the Lua slow path waits its turn and
   for room. */
static int s_write(lua_State *L) {
  int n = lua_gettop(L) - 1;
  rv_stream *s = rvs_check(L);
  if (rvs_tired(s, STREAK)) {   /* a turn for the rest of the loop first */
    rvs_call_pause(L, s, n, write_pausedk);
    lua_pop(L, 1);
  }
  return writing(L, s, n);
}

/* write's body: the stack holds self, the n arguments and the state. */
static int writing(lua_State *L, rv_stream *s, int n) {
  size_t len, sent = 0;
  /* One string (or number): the usual call, checked and read at once. */
  const char *data = n == 1 ? lua_tolstring(L, 2, &len) : NULL;
  if (data == NULL) {
    lua_pop(L, 1);   /* the state: concat takes the arguments on top */
    for (int i = 2; i <= n + 1; i++) {
      int t = lua_type(L, i);
      if (t != LUA_TSTRING && t != LUA_TNUMBER)
        rvs_argerror(L, i, "write", lua_pushfstring(L, "string expected, got %s", luaL_typename(L, i)));
    }
    lua_concat(L, n);
    data = lua_tolstring(L, 2, &len);
  }
  if (s->sock->fd < 0) return write_failed(L, I_SELF, "write", EBADF, "socket is closed", 0);
  if (!s->wlock && s->wready) {
    sent = len ? transmit(L, I_SELF, s, data, len, 1) : 0;
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
  rv_stream *s = rvs_check(L);
  size_t len;
  const char *data = luaL_checklstring(L, 2, &len);
  lua_Integer i = luaL_checkinteger(L, 3);
  luaL_argcheck(L, i >= 1, 3, "index must be positive");
  if (s->sock->fd < 0) return rvs_fail(L, "write", EBADF, "socket is closed");
  if ((size_t)i > len) {
    lua_pushinteger(L, 0);
  } else if (!s->wready) {
    luaL_pushfail(L);
  } else {
    size_t sent = transmit(L, 1, s, data + i - 1, len - (size_t)i + 1, 1);
    if (sent) lua_pushinteger(L, (lua_Integer)sent);
    else luaL_pushfail(L);
  }
  return 1;
}

static int writablek(lua_State *L, int status, lua_KContext ctx) {
  (void)status;
  (void)ctx;
  rvs_woken(L, (rv_stream *)lua_touserdata(L, 2), 1, "write", 3);   /* self, state, value */
  return 0;
}

/* wait_writable(self): until the kernel has room again (the slow write's
   wait); raises ETIMEDOUT or EBADF as a write does. */
static int s_wait_writable(lua_State *L) {
  rv_stream *s;
  lua_settop(L, 1);
  s = rvs_check(L);
  if (s->sock->fd < 0) return rvs_fail(L, "write", EBADF, "socket is closed");
  rvs_call_wait(L, s, 1, 0, writablek);
  return writablek(L, LUA_OK, 0);
}

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
  rvs_woken(L, s, 0, "pipe", P_BASE + 1);
  return piping(L);
}

/* pipe resumed after its pause: nothing learnt about the socket (pipe
   pauses only while it is readable). */
static int pipe_pausedk(lua_State *L, int status, lua_KContext ctx) {
  (void)status;
  (void)ctx;
  lua_settop(L, P_BASE);
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
  if (d->sock->fd < 0) rvs_failat(L, P_DST, "write", EBADF, "socket is closed");
  if (!d->wlock && d->wready) {
    sent = transmit(L, P_DST, d, data, len, 0);
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
      rvs_consume(s, buffered(s));
      data = lua_tolstring(L, -1, &len);
      forward(L, d, data, len);
      lua_settop(L, P_BASE);
      continue;
    }
    if (s->eof) break;
    if (s->sock->fd < 0) return rvs_fail(L, "pipe", EBADF, "socket is closed");
    if (!s->rready) {
      if (rvs_park(L, s, d)) return lua_yieldk(L, 1, 0, pipe_readk);
      rvs_call_wait(L, s, 0, 0, pipe_readk);
      rvs_woken(L, s, 0, "pipe", P_BASE + 1);
      continue;
    }
    if (rvs_tired(s, PIPE_STREAK)) {   /* (see rvs_call_pause) */
      rvs_call_pause(L, s, 0, pipe_pausedk);
      lua_settop(L, P_BASE);
      continue;
    }
    got = rvs_receive(L, s, s->scratch);
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
  s = rvs_check(L);
  d = lua_type(L, P_DST) == LUA_TTABLE ? rvs_tostate(L, P_DST) : NULL;
  if (d == NULL) rvs_argerror(L, P_DST, "pipe", "reverb.stream expected");
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
    rvs_append(L, s, s->scratch + sent, (size_t)(n - sent));
    return 0;
  }
  return n < SCRATCH;
}

const luaL_Reg rv_stream_writes[] = {
  { "write", s_write },
  { "pipe", s_pipe },
  { "send", s_send },
  { "wait_writable", s_wait_writable },
  { NULL, NULL }
};
