/*
 * stream_read.c -- the stream's reads: read_some, read_line, read_until,
 * read and read_all.  Each answers from the buffer when it can, else
 * receives, else parks the task and goes on in a continuation (readk)
 * when the loop wakes it; see stream.c.
 */
#define _GNU_SOURCE
#include <string.h>

#include "stream.h"

/* A read request, packed in a continuation's context: the operation in
   the low bits, its size above them (read_some's max, 0 for none; read's
   n).  So the hot path never converts its argument again. */
enum { OP_SOME, OP_LINE, OP_UNTIL, OP_EXACT, OP_ALL, OP_BITS = 3 };
#define OP(ctx) ((int)((ctx) & ((1 << OP_BITS) - 1)))
#define SIZE(ctx) ((size_t)((ctx) >> OP_BITS))
#define MAX_SIZE (((lua_Integer)1 << 60) - 1)   /* more than memory can hold */
static const char *const opnames[] = { "read", "read_line", "read_until", "read", "read_all" };

/* Pushes n buffered bytes (from the front) and consumes them. */
static void take(lua_State *L, rv_stream *s, size_t n) {
  lua_pushlstring(L, s->buf + s->head, n);
  rvs_consume(s, n);
}

/* Where the delimiter d (dlen bytes) starts in the buffer, searching from
   where the last search for d stopped; -1 when it is not there yet.  How
   far the last search went is kept with the delimiter it was for: another
   read of the stream (a second reader, refused as it goes to wait) must
   not make a parked read_until skip what it has not searched. */
static ptrdiff_t search(rv_stream *s, const char *d, size_t dlen) {
  const char *base = s->buf + s->head, *hit;
  size_t have = buffered(s), from = s->scan_delim == d ? s->scanned : 0;
  if (have < dlen) return -1;
  hit = dlen == 1 ? memchr(base + from, d[0], have - from)
                  : memmem(base + from, have - from, d, dlen);
  if (hit) return hit - base;
  /* The next search starts where a delimiter could still begin. */
  s->scanned = have - (dlen - 1);
  s->scan_delim = d;
  return -1;
}

static void toolong(lua_State *L, rv_stream *s) {
  lua_pushfstring(L, "line longer than %I bytes", (lua_Integer)s->max_line);
  rvs_fail(L, "read_line", EMSGSIZE, lua_tostring(L, -1));
}

/* A line of n buffered bytes, its "\n" (if any, one byte) and a "\r"
   before it dropped. */
static int line(lua_State *L, rv_stream *s, size_t n, size_t eol) {
  const char *p = s->buf + s->head;
  lua_pushlstring(L, p, n > 0 && p[n - 1] == '\r' ? n - 1 : n);
  rvs_consume(s, n + eol);
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
  case OP_LINE: {
    /* The limit is on the line read_line returns: without its "\r\n".
       Before the "\n" comes, a last "\r" may be the start of one. */
    size_t len;
    at = search(s, "\n", 1);
    len = at >= 0 ? (size_t)at : have;
    if (len > 0 && s->buf[s->head + len - 1] == '\r') len--;
    if (len > s->max_line) toolong(L, s);
    if (at >= 0) return line(L, s, (size_t)at, 1);
    if (s->eof && have > 0) return line(L, s, have, 0);
    break;
  }
  case OP_UNTIL: {
    size_t dlen;
    const char *d = lua_tolstring(L, I_ARG, &dlen);
    at = search(s, d, dlen);
    if (at < 0) break;
    take(L, s, (size_t)at);
    rvs_consume(s, dlen);
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

/* recv_once for a task (and pipe): an error raised, and -1 when the
   socket is drained. */
ssize_t rvs_receive(lua_State *L, rv_stream *s, char *scratch) {
  ssize_t n = recv_once(s, scratch);
  if (n >= 0) return n;
  if (!wouldblock(n)) {   /* the stream (at 1: a read's self, pipe's source) names its peer */
    lua_getfield(L, 1, "peer");
    rv_fail(L, "recv", (int)-n, lua_tostring(L, -1));
  }
  s->rready = 0;
  return -1;
}

static int readk(lua_State *L, int status, lua_KContext rq);

/* The body of every read: answer request rq from the buffer, else
   receive, else wait, until it has its answer. */
static int reading(lua_State *L, rv_stream *s, lua_KContext rq) {
  char *scratch = s->scratch;
  for (;;) {
    int n = answer(L, s, rq);
    ssize_t got;
    if (n >= 0) return n;
    if (s->sock->fd < 0) return rvs_fail(L, opnames[OP(rq)], EBADF, "socket is closed");
    if (!s->rready) {
      if (rvs_park(L, s, NULL)) return lua_yieldk(L, 1, rq, readk);
      rvs_call_wait(L, s, 0, rq, readk);
      rvs_woken(L, s, 0, opnames[OP(rq)], I_STATE + 1);
      continue;
    }
    got = rvs_receive(L, s, scratch);
    if (got <= 0) continue;   /* at the end, or drained */
    if (OP(rq) == OP_SOME) {  /* nothing was buffered: straight from scratch */
      size_t give = SIZE(rq) && SIZE(rq) < (size_t)got ? SIZE(rq) : (size_t)got;
      lua_pushlstring(L, scratch, give);
      if (give < (size_t)got) rvs_append(L, s, scratch + give, (size_t)got - give);
      return 1;
    }
    rvs_append(L, s, scratch, (size_t)got);
  }
}

static int readk(lua_State *L, int status, lua_KContext rq) {
  rv_stream *s = (rv_stream *)lua_touserdata(L, I_STATE);
  (void)status;
  rvs_woken(L, s, 0, opnames[OP(rq)], I_STATE + 1);   /* one wake value above the state */
  return reading(L, s, rq);
}

/* A read resumed after its pause (rvs_call_pause): the pause's value
   dropped, and nothing learnt about the socket. */
static int read_pausedk(lua_State *L, int status, lua_KContext rq) {
  (void)status;
  lua_settop(L, I_STATE);
  return reading(L, (rv_stream *)lua_touserdata(L, I_STATE), rq);
}

/* Starts a read: the stack becomes self, argument, state (I_STATE). */
static int startread(lua_State *L, int op, lua_Integer size) {
  rv_stream *s;
  if (lua_gettop(L) != I_ARG) lua_settop(L, I_ARG);
  s = rvs_check(L);
  if (size > MAX_SIZE) size = MAX_SIZE;
  s->scan_delim = NULL;   /* what an earlier call searched was for its own delimiter */
  if (rvs_tired(s, STREAK)) {   /* a turn for the rest of the loop first */
    rvs_call_pause(L, s, (lua_KContext)size << OP_BITS | op, read_pausedk);
    lua_pop(L, 1);
  }
  return reading(L, s, (lua_KContext)size << OP_BITS | op);
}

/* read_some([max]) -> at least one byte, at most max; nil at the end. */
static int s_read_some(lua_State *L) {
  lua_Integer max = 0;
  if (lua_gettop(L) <= I_SELF) {   /* read_some(): the usual call */
    if (lua_gettop(L) < I_SELF) luaL_typeerror(L, I_SELF, "reverb.stream");
    lua_pushnil(L);   /* cheaper than settop */
  } else if (!lua_isnil(L, I_ARG)) {
    int isint;   /* 2.0 or "2" too, as luaL_checkinteger takes them */
    max = lua_tointegerx(L, I_ARG, &isint);
    if (!isint || max < 1) rvs_argerror(L, I_ARG, "read_some", "positive integer expected");
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
    rvs_argerror(L, I_ARG, "read_until", "non-empty string expected");
  return startread(L, OP_UNTIL, 0);
}

/* read(n) -> exactly n bytes; nil, partial at the end. */
static int s_read(lua_State *L) {
  int isint;
  lua_Integer n = lua_tointegerx(L, I_ARG, &isint);
  if (!isint || n < 0) rvs_argerror(L, I_ARG, "read", "non-negative integer expected");
  return startread(L, OP_EXACT, n);
}

/* read_all() -> everything until the end ("" when nothing came). */
static int s_read_all(lua_State *L) { return startread(L, OP_ALL, 0); }

const luaL_Reg rv_stream_reads[] = {
  { "read_some", s_read_some },
  { "read_line", s_read_line },
  { "read_until", s_read_until },
  { "read", s_read },
  { "read_all", s_read_all },
  { NULL, NULL }
};
