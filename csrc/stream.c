/*
 * stream.c -- the hot half of reverb.stream, in C: its reads
 * (stream_read.c), its writes and pipe (stream_write.c) and, here, the
 * state they share, its buffer's memory and its waits.
 * lua/reverb/stream.lua keeps the object itself (a table, so scripts can
 * hang their own fields on a connection), the write lock queue and close.
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
#include <stdlib.h>
#include <string.h>

#include "stream.h"

static const char streamtag = 0;

/* Raises an error object for op, with the peer of the stream at idx as
   its address (message NULL: strerror's). */
int rvs_failat(lua_State *L, int idx, const char *op, int err, const char *message) {
  lua_getfield(L, idx, "peer");
  return rv_fail_msg(L, op, err, message, lua_tostring(L, -1));
}

int rvs_fail(lua_State *L, const char *op, int err, const char *message) {
  return rvs_failat(L, I_SELF, op, err, message);
}

/* A bad argument i of the method fname: numbered as the method call
   counts (self not counted), and named, since these methods are usually
   called through pcall or a local, where Lua cannot find their names. */
int rvs_argerror(lua_State *L, int i, const char *fname, const char *msg) {
  return luaL_error(L, "bad argument #%d to '%s' (%s)", i - 1, fname, msg);
}

/* The stream state in slot 1 of the table at idx (pushed), or NULL.  A
   state is a userdata of its struct's size whose tag holds streamtag's
   address, which Lua code cannot forge: a check that runs twice per
   request in three API calls, where comparing metatables takes five. */
rv_stream *rvs_tostate(lua_State *L, int idx) {
  rv_stream *s;
  if (lua_rawgeti(L, idx, 1) != LUA_TUSERDATA) return NULL;
  s = (rv_stream *)lua_touserdata(L, -1);
  if (lua_rawlen(L, -1) != sizeof *s || s->tag != &streamtag) return NULL;
  return s;
}

/* The state of the stream at index 1, pushed; an argument error for
   anything else. */
rv_stream *rvs_check(lua_State *L) {
  rv_stream *s = lua_type(L, I_SELF) == LUA_TTABLE ? rvs_tostate(L, I_SELF) : NULL;
  if (s == NULL) luaL_typeerror(L, I_SELF, "reverb.stream");
  return s;
}

/* ---- the read buffer ---- */

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

void rvs_append(lua_State *L, rv_stream *s, const char *data, size_t n) {
  reserve(L, s, n);
  memcpy(s->buf + s->tail, data, n);
  s->tail += n;
}

/* Drops n bytes from the front; an emptied large buffer is given back. */
void rvs_consume(rv_stream *s, size_t n) {
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

/* ---- waiting ---- */

/* A wait, in two steps so that no caller recurses: a task reading
   without a deadline parks itself on the loop's readers table (the path
   of every request): rvs_park returns 1 and the caller returns
   lua_yieldk(L, 1, ctx, k).  Anything else (a deadline, a write, the top
   level) calls loop.wait through rvs_call_wait: inside a task that yields and
   k continues; at top level it returns with the wake value on top (true:
   ready, false: timed out, "closed") and the caller goes on in a loop. */
int rvs_park(lua_State *L, rv_stream *s, const rv_stream *relay) {
  int fd = s->sock->fd;
  rv_hint h = { 0 };
  /* Not yieldable (inside a metamethod, say): the slow path raises,
     before anything is registered. */
  if (s->timeout >= 0 || L != s->sched->current || !lua_isyieldable(L)) return 0;
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
  if (relay == NULL && s->sched->peeking)   /* (a relay wakes no frame) */
    rv_peek_task(L, (const void *)h.self, &h);
  s->parked_fd = fd;   /* (its streak starts again: it is resumed, see rvs_tired) */
  rv_sched_hint(s->sched, fd, &h);
  lua_pushthread(L);
  lua_rawseti(L, lua_upvalueindex(UV_READERS), fd);
  lua_pushlightuserdata(L, (void *)&rv_sched_wait);
  return 1;
}

void rvs_call_wait(lua_State *L, rv_stream *s, int write, lua_KContext ctx,
                      lua_KFunction k) {
  s->streak = 0;
  lua_pushvalue(L, lua_upvalueindex(UV_WAIT));
  lua_pushvalue(L, I_SELF);
  lua_pushstring(L, write ? "write" : "read");
  if (s->timeout >= 0) lua_pushnumber(L, rv_now() + s->timeout);
  else lua_pushnil(L);
  lua_callk(L, 3, 1, ctx, k);
}

/* Lets the rest of the loop have a turn before a call goes on (loop.lua's
   pause, which wakes it with true): after STREAK reads and writes in a
   row that did not wait (or PIPE_STREAK receives in pipe), a connection
   that never runs dry (a client flooding, pipelined requests, a big
   transfer) would otherwise keep the loop, its other clients and its
   timers waiting until it does. */
void rvs_call_pause(lua_State *L, rv_stream *s, lua_KContext ctx, lua_KFunction k) {
  s->streak = 0;
  lua_pushvalue(L, lua_upvalueindex(UV_PAUSE));
  lua_callk(L, 0, 1, ctx, k);
}

/* Takes the wake value, at index at, off the top: ready, or raise what
   went wrong.  The stack is first made to end there, whatever the resume
   passed: a stray resume with no value must not take what lies below
   for one. */
void rvs_woken(lua_State *L, rv_stream *s, int write, const char *op, int at) {
  if (lua_gettop(L) != at) lua_settop(L, at);
  if (lua_toboolean(L, -1)) {
    lua_pop(L, 1);
    if (write) s->wready = 1;
    else s->rready = 1;   /* woken by the loop: the socket is readable */
    return;
  }
  if (lua_type(L, -1) == LUA_TBOOLEAN) rvs_fail(L, op, ETIMEDOUT, "timed out");
  rvs_fail(L, op, EBADF, "socket is closed");
}

/* lock(self, held) -> whether the write lock was held before. */
static int s_lock(lua_State *L) {
  rv_stream *s = rvs_check(L);
  lua_pushboolean(L, s->wlock);
  s->wlock = (unsigned char)lua_toboolean(L, 2);
  return 1;
}

/* settimeout(self, seconds | nil) -> self: every later wait raises
   ETIMEDOUT after this long. */
static int s_settimeout(lua_State *L) {
  rv_stream *s;
  int t;
  lua_settop(L, 2);   /* settimeout() is settimeout(nil) (rvs_check pushes the state at 3) */
  s = rvs_check(L);
  t = lua_type(L, 2);
  if (t > LUA_TNIL && (t != LUA_TNUMBER || !(lua_tonumber(L, 2) >= 0)))   /* NaN too */
    rvs_argerror(L, 2, "settimeout", "non-negative number or nil expected");
  s->timeout = t == LUA_TNUMBER ? lua_tonumber(L, 2) : -1;
  lua_settop(L, 1);
  return 1;
}

/* getstats(self) -> bytes received, bytes written, seconds since the
   stream was made: LuaSocket's getstats.  (Counters kept here and read
   on demand: storing them in the stream table on every read and write
   cost 270 of the 2,750 instructions of an echoed request.) */
static int s_getstats(lua_State *L) {
  rv_stream *s = rvs_check(L);
  lua_pushinteger(L, s->bytes_in);
  lua_pushinteger(L, s->bytes_out);
  lua_pushnumber(L, rv_now() - s->born);
  return 3;
}

/* new(socket [, max_line [, timeout [, accepted]]]) -> the state of a
   new stream, which stream.lua keeps at index 1 of the stream table. */
static int s_new(lua_State *L) {
  rv_socket *sock = (rv_socket *)luaL_checkudata(L, 1, RV_SOCKET);
  lua_Integer max_line = luaL_optinteger(L, 2, MAX_LINE);
  lua_Number timeout = luaL_optnumber(L, 3, -1);
  int accepted = lua_toboolean(L, 4);
  rv_stream *s;
  luaL_argcheck(L, max_line >= 1, 2, "must be positive");
  s = (rv_stream *)lua_newuserdatauv(L, sizeof *s, 2);
  memset(s, 0, sizeof *s);
  s->tag = &streamtag;
  s->sock = sock;
  s->sched = (rv_sched *)lua_touserdata(L, lua_upvalueindex(UV_SCHED));
  s->scratch = (char *)lua_touserdata(L, lua_upvalueindex(UV_SCRATCH));
  s->max_line = (size_t)max_line;
  s->timeout = timeout;
  s->born = rv_now();
  s->parked_fd = -1;
  /* A read or send is tried first, and says if it would block; but a
     just-accepted connection's data usually comes after the accept, so
     its first read waits for epoll instead (which reports data already
     there when the socket is added), as nginx waits for a new
     connection's first read event: a recv that said EAGAIN was a third
     of a connect-storm connection's recvs. */
  s->rready = !accepted;
  s->wready = 1;
  lua_pushvalue(L, lua_upvalueindex(UV_MT));
  lua_setmetatable(L, -2);
  /* What the pointers above point into lives as long as the state: a
     state can outlive the functions that made it (a script may drop the
     scheduler and keep a stream).  Its user values: the socket, and the
     scratch buffer, which holds the scheduler (two, not three: a header
     of 72 bytes, not 88). */
  lua_pushvalue(L, 1);
  lua_setiuservalue(L, -2, 1);
  lua_pushvalue(L, lua_upvalueindex(UV_SCRATCH));
  lua_setiuservalue(L, -2, 2);
  return 1;
}

static int s_gc(lua_State *L) {
  rv_stream *s = (rv_stream *)lua_touserdata(L, 1);
  free(s->buf);
  s->buf = NULL;
  s->cap = s->head = s->tail = 0;
  return 0;
}

/* Pushes the metatable of the states an API makes: their __gc. */
static void statemeta(lua_State *L) {
  lua_createtable(L, 0, 2);
  lua_pushcfunction(L, s_gc);
  lua_setfield(L, -2, "__gc");
  lua_pushliteral(L, "reverb.stream.state");
  lua_setfield(L, -2, "__name");
}

/* dispatch's: data came for the watcher table at idx while nobody waited
   to read it; if it is a stream, its next read receives at once. */
void rv_stream_mark(lua_State *L, int idx, int hup) {
  rv_stream *s = rvs_tostate(L, idx);
  lua_pop(L, 1);
  if (s == NULL) return;
  s->rready = 1;
  if (hup) s->hup = 1;
}

/* Whether the value on top is a function of this stream API: a C
   closure whose first two upvalues are this one's scheduler and state
   metatable (no other function has both). */
static int ours(lua_State *L) {
  int same = 0;
  if (!lua_iscfunction(L, -1) || lua_getupvalue(L, -1, UV_SCHED) == NULL) return 0;
  if (lua_rawequal(L, -1, lua_upvalueindex(UV_SCHED)) &&
      lua_getupvalue(L, -2, UV_MT) != NULL) {
    same = lua_rawequal(L, -1, lua_upvalueindex(UV_MT));
    lua_pop(L, 1);
  }
  lua_pop(L, 1);
  return same;
}

/* rebind(api, readers): points every function of api (this table of
   functions) at a new readers table, once the loop has rebuilt its own
   at a smaller size (loop.lua's compact).  Any other function in the
   table is left alone: its upvalues are not ours to replace. */
static int s_rebind(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  luaL_checktype(L, 2, LUA_TTABLE);
  lua_pushnil(L);
  while (lua_next(L, 1)) {
    if (ours(L)) {
      lua_pushvalue(L, 2);
      lua_setupvalue(L, -2, UV_READERS);
    }
    lua_pop(L, 1);
  }
  return 0;
}

static const luaL_Reg funcs[] = {
  { "new", s_new },
  { "lock", s_lock },
  { "settimeout", s_settimeout },
  { "getstats", s_getstats },
  { "rebind", s_rebind },
  { NULL, NULL }
};

/* streams(readers, wait, slow_write, pause) -> the stream's functions,
   bound to this loop: its scheduler (this closure's upvalue), a
   metatable for the states they make, its readers table, wait and pause,
   stream.lua's slow write, and a scratch buffer. */
int rv_stream_api(lua_State *L) {
  const luaL_Reg *const lists[] = { rv_stream_reads, rv_stream_writes, funcs };
  int api, up;
  luaL_checktype(L, 1, LUA_TTABLE);
  luaL_checktype(L, 2, LUA_TFUNCTION);
  luaL_checktype(L, 3, LUA_TFUNCTION);
  luaL_checktype(L, 4, LUA_TFUNCTION);
  lua_newtable(L);
  api = lua_gettop(L);
  lua_pushvalue(L, lua_upvalueindex(1));   /* UV_SCHED */
  up = lua_gettop(L);
  statemeta(L);                            /* UV_MT */
  lua_pushvalue(L, 1);
  lua_pushvalue(L, 2);
  lua_pushvalue(L, 3);
  lua_pushvalue(L, 4);
  lua_newuserdatauv(L, SCRATCH, 1);        /* UV_SCRATCH, holding the scheduler */
  lua_pushvalue(L, up);
  lua_setiuservalue(L, -2, 1);
  for (size_t k = 0; k < sizeof lists / sizeof lists[0]; k++) {
    for (const luaL_Reg *f = lists[k]; f->name != NULL; f++) {
      for (int i = 0; i < NUV; i++) lua_pushvalue(L, up + i);
      lua_pushcclosure(L, f->func, NUV);
      lua_setfield(L, api, f->name);
    }
  }
  lua_settop(L, api);
  return 1;
}

