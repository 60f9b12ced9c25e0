/*
 * sched.c -- the C half of the loop; lua/reverb/loop.lua keeps the policy.
 *
 * Three steps sit on the path of every request and cost less here than in
 * Lua: resuming a task, parking the running task on a watcher, and handing
 * a batch of epoll events to the tasks that wait for them.  Together they
 * replace, per request, a Lua loop over an event table, coroutine.resume's
 * argument shuffling, coroutine.running plus a table lookup, and
 * coroutine.yield.
 *
 * The yield protocol: a task parks by yielding the private marker WAIT (a
 * light userdata); whatever else a task yields is a stray yield, which the
 * Lua side reports.  Every resume of a task goes through here and records
 * the task as `current`, so park can tell a task from a plain coroutine
 * running inside one (whose yield would reach the wrong resumer) by a
 * pointer comparison.
 *
 * The loop keeps who waits in two tables indexed by descriptor, readers
 * and writers (fd -> the task, or a non-thread value for the top level,
 * which runs the loop itself until woken), and the watchers themselves in
 * a third (fd -> the table that owns the descriptor).  When data comes
 * with no reader waiting, dispatch marks a stream watcher's state as
 * readable (and hung up, when the peer hung up or the socket failed), so
 * its next read receives at once (csrc/stream.c parks on readers too).
 *
 * Prefetching.  With hundreds of connections, what a wake touches first
 * (the task's lua_State, the stream's state and socket, the stream table)
 * has left the cache since that connection's last request, and each of
 * those misses was a tenth of reverb's user time at 500 connections
 * (perf).  A task parking for a read leaves those addresses in hints[fd],
 * with those of its call frames, stack slots and stream table parts,
 * which only Lua's own structs tell (peek.c); dispatch prefetches them
 * for the event after the one it handles, so they arrive while the
 * kernel serves that one.  For prefetching a hint is only an address,
 * never dereferenced, so a stale one (the task finished, the descriptor
 * was reused) costs nothing but a wasted prefetch.
 *
 * Relaying.  A task parked in conn:pipe (reverb serve's echo, a relay)
 * also leaves its destination in the hint, and dispatch moves that
 * event's bytes itself, recv then send, leaving the task parked
 * (rv_stream_relay): the round trip of an echo touches no lua_State.
 * This hint is dereferenced, so it is trusted only under the condition
 * `relayed` checks.
 */
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>

#include "reverb.h"

typedef rv_sched sched;

const char rv_sched_wait = 0;   /* its address is the marker */
#define WAIT rv_sched_wait
static const char closed = 0;   /* its address: "a task closed from outside" (wake) */

/* The upvalue of the functions here (and the first of streams'). */
enum { UV_SCHED = 1 };

/* Indices in dispatch's frame. */
enum { A_POLLER = 1, A_TIMEOUT, A_WATCHERS, A_READERS, A_WRITERS, A_SETTLE, A_WAITER };

static sched *getsched(lua_State *L) {
  return (sched *)lua_touserdata(L, lua_upvalueindex(UV_SCHED));
}

/* Whether co is a dead coroutine (finished, failed or closed): nothing
   to run and nothing on its stack, as coroutine.status tells it. */
static int dead(lua_State *co) {
  return lua_status(co) == LUA_OK && lua_gettop(co) == 0;
}

/* lua_resume with co recorded as the running task. */
static int run(sched *S, lua_State *co, lua_State *from, int narg, int *nres) {
  lua_State *prev = S->current;
  int status;
  S->current = co;
  S->resumes++;
  status = lua_resume(co, from, narg, nres);
  S->current = prev;
  return status;
}

/* resume(co, ...) -> true, values... | false, error: coroutine.resume,
   for the loop's run queue and timers; a dead task (closed from outside
   while it waited) gives false, CLOSED, as dispatch tells settle. */
static int l_resume(lua_State *L) {
  lua_State *co = lua_tothread(L, 1);
  int narg = lua_gettop(L) - 1, nres, status;
  luaL_argexpected(L, co != NULL, 1, "thread");
  if (co == L || dead(co)) {
    lua_pushboolean(L, 0);
    if (co == L) lua_pushliteral(L, "cannot resume non-suspended coroutine");
    else lua_pushlightuserdata(L, (void *)&closed);
    return 2;
  }
  if (!lua_checkstack(co, narg)) luaL_error(L, "too many arguments to resume");
  lua_xmove(L, co, narg);
  status = run(getsched(L), co, L, narg, &nres);
  if (status == LUA_OK || status == LUA_YIELD) {
    if (!lua_checkstack(L, nres + 1)) {
      lua_pop(co, nres);
      lua_pushboolean(L, 0);
      lua_pushliteral(L, "too many results to resume");
      return 2;
    }
    lua_pushboolean(L, 1);
    lua_xmove(co, L, nres);
    return nres + 1;
  }
  lua_pushboolean(L, 0);
  lua_xmove(co, L, 1);   /* the error object; co's frames stay for a traceback */
  return 2;
}

/* park(q, fd) -> the value the task is woken with.  Inside a task:
   q[fd] = the task, and the task yields to the loop.  Anywhere else (top
   level, a plain coroutine, a C call that cannot yield) nothing happens
   and nothing is returned: the caller takes its slow path, which says
   what is wrong. */
static int l_park(lua_State *L) {
  lua_Integer fd;
  if (L != getsched(L)->current || !lua_isyieldable(L)) return 0;
  luaL_checktype(L, 1, LUA_TTABLE);
  fd = luaL_checkinteger(L, 2);
  lua_pushthread(L);
  lua_rawseti(L, 1, fd);
  lua_pushlightuserdata(L, (void *)&WAIT);
  return lua_yield(L, 1);
}

/* What a resume ended with, other than parking, goes to the Lua side:
   settle(co, ok, first result or the error). */
static void settle(lua_State *L, lua_State *co, int status, int nres) {
  int ok = status == LUA_OK || status == LUA_YIELD;
  if (!ok) nres = 1;   /* the error object, on top of co's stack */
  lua_pushvalue(L, A_SETTLE);
  lua_pushvalue(L, A_WAITER);
  lua_pushboolean(L, ok);
  if (nres > 0 && lua_checkstack(L, nres)) {
    lua_xmove(co, L, nres);
    lua_settop(L, A_WAITER + 4);   /* keep the first */
  } else {
    lua_pop(co, nres);
  }
  lua_call(L, lua_gettop(L) - A_WAITER - 1, 0);
}

/* Resumes the task co (at A_WAITER) with true: its descriptor is ready.
   0 when co was no parked task (the event then is nobody's yet). */
static int wake(lua_State *L, sched *S, lua_State *co) {
  int nres = 0, status;
  /* Only a parked task is resumed.  A dead one was closed from outside
     while it waited (coroutine.close): settle, told so by the CLOSED
     marker, lets it go.  A running or normal thread was never parked
     here, whoever put it in the table. */
  if (co == L || lua_status(co) != LUA_YIELD) {
    if (co != L && dead(co)) {
      lua_pushvalue(L, A_SETTLE);
      lua_pushvalue(L, A_WAITER);
      lua_pushboolean(L, 0);
      lua_pushlightuserdata(L, (void *)&closed);
      lua_call(L, 3, 0);
    }
    return 0;
  }
  /* A task parks from a C function, which Lua gives LUA_MINSTACK slots:
     there is room for the value it is woken with. */
  if (!lua_checkstack(co, 1)) luaL_error(L, "reverb: no stack to resume a task");
  lua_pushboolean(co, 1);
  status = run(S, co, L, 1, &nres);
  if (status == LUA_YIELD && nres == 1 && lua_touserdata(co, -1) == &WAIT) {
    lua_pop(co, 1);   /* parked again: the usual end of a turn */
    return 1;
  }
  settle(L, co, status, nres);
  return 1;
}

/* Takes the waiter of fd out of the table at q and wakes it: a task is
   resumed with true, the top level told by the result.  Returns 0 when
   nobody waited, 1 for a task, 2 for the top level. */
static int waiter(lua_State *L, sched *S, int q, int fd) {
  lua_State *co;
  int who;
  if (lua_rawgeti(L, q, fd) == LUA_TNIL) {
    lua_pop(L, 1);
    return 0;
  }
  lua_pushnil(L);
  lua_rawseti(L, q, fd);
  co = lua_tothread(L, A_WAITER);
  who = co == NULL ? 2 : wake(L, S, co);
  lua_settop(L, A_SETTLE);
  return who;
}

/* Records where the objects of the task parking on fd live.  The table
   doubles as descriptors grow (calloc: the kernel's zero pages, so the
   part no descriptor reached yet costs no memory); if it cannot grow, the
   hint is dropped. */
void rv_sched_hint(rv_sched *S, int fd, const rv_hint *h) {
  if (fd < 0 || fd > INT_MAX / 2) return;
  if (fd >= S->nhints) {
    int n = S->nhints ? S->nhints : 64;
    rv_hint *grown;
    while (n <= fd) n *= 2;
    grown = (rv_hint *)calloc((size_t)n, sizeof *grown);
    if (grown == NULL) return;
    if (S->nhints > 0) memcpy(grown, S->hints, (size_t)S->nhints * sizeof *grown);
    free(S->hints);
    S->hints = grown;
    S->nhints = n;
  }
  S->hints[fd] = *h;
}

#define PF(addr) __builtin_prefetch((const void *)(addr))

/* Prefetches the lines the wake of the task parked on fd reads first:
   the lua_State (some 200 bytes), the stream's state (its first 104
   bytes, what stream.h puts first, and the userdata header in front of
   them, 72 bytes in Lua 5.4 with two user values), the socket
   and the stream table; and where peek.c could tell them, the two call
   frames (64 bytes each), the stack from the caller's slots to the
   parked call's (the handler's locals, the read's arguments), the
   table's array (the state at [1]) and its hash part (a method lookup
   looks there first).  Always inlined: GCC takes a function that does
   nothing but prefetch for one without effects, and drops its calls. */
__attribute__((always_inline)) static inline void prefetch(const sched *S, int fd) {
  const rv_hint *h;
  uintptr_t p;
  if (fd < 0 || fd >= S->nhints || S->hints[fd].task == 0) return;
  h = &S->hints[fd];
  PF(h->task);
  PF(h->task + 64);
  PF(h->task + 128);
  PF(h->state - 72);
  PF(h->state - 8);
  PF(h->state + 56);
  PF(h->state + 103);
  PF(h->sock);
  PF(h->self);
  if (h->frame == 0) return;
  PF(h->frame);
  PF(h->frame + 63);
  PF(h->caller);
  PF(h->caller + 63);
  /* at most 4 lines: a caller far below is not the handler's frame */
  for (p = h->callerslots; p <= h->slots + 63 && p < h->callerslots + 256; p += 64) PF(p);
  PF(h->array);
  for (p = h->node; p <= h->nodeend && p < h->node + 256; p += 64) PF(p);
  PF(h->nodeend);
}

/* The hint itself: prefetch reads it to know what to prefetch, so it
   is fetched one event earlier still.  96 bytes in an array calloc
   aligns to 16 only: two lines or three. */
__attribute__((always_inline)) static inline void prefetch_hint(const sched *S, int fd) {
  const char *h;
  if (fd < 0 || fd >= S->nhints) return;
  h = (const char *)&S->hints[fd];
  PF(h);
  PF(h + 64);
  PF(h + sizeof(rv_hint) - 1);
}

/* Keeps on the stream watching fd what nobody was there to take: data
   came, and with hup, the peer hung up (a later read sees the end). */
static void mark(lua_State *L, int fd, int hup) {
  if (lua_rawgeti(L, A_WATCHERS, fd) == LUA_TTABLE)
    rv_stream_mark(L, -1, hup);
  lua_settop(L, A_SETTLE);
}

/* Whether the task parked on fd is a pipe whose stream moved this
   event's data itself, the task staying parked (rv_stream_relay).  The
   hint is trusted only while the task it names still waits in
   readers[fd], suspended: such a task holds both streams' states on its
   stack, and any resume of it clears the relay first (pipe_readk). */
static int relayed(lua_State *L, const sched *S, int fd) {
  const rv_hint *h;
  lua_State *co;
  if (fd < 0 || fd >= S->nhints || S->hints[fd].relay == 0) return 0;
  h = &S->hints[fd];
  lua_rawgeti(L, A_READERS, fd);
  co = lua_tothread(L, -1);
  lua_pop(L, 1);
  if (co == NULL || (uintptr_t)co != h->task || lua_status(co) != LUA_YIELD) return 0;
  return rv_stream_relay(L, h->state, h->relay);
}

/* dispatch(poller, timeout, watchers, readers, writers, settle)
   -> n, top_woken.  Waits on the poller (timeout in seconds, negative:
   none) and, for each event, resumes the tasks waiting on its descriptor,
   or marks the watcher when no reader waits.  top_woken says the top
   level's wait was among them. */
static int l_dispatch(lua_State *L) {
  sched *S = getsched(L);
  const struct epoll_event *ev;
  int n, i, top = 0;
  luaL_checktype(L, A_WATCHERS, LUA_TTABLE);
  luaL_checktype(L, A_READERS, LUA_TTABLE);
  luaL_checktype(L, A_WRITERS, LUA_TTABLE);
  luaL_checktype(L, A_SETTLE, LUA_TFUNCTION);
  n = rv_poller_poll(L, A_POLLER, &ev);   /* the timeout: A_POLLER + 1 */
  lua_settop(L, A_SETTLE);
  /* A pipeline: while event i is handled, event i+1's lines are on
     their way (its hint was fetched while i-1 was handled) and event
     i+2's hint.  Handling one takes microseconds (its recv and send),
     ample time for twenty-odd lines; prefetching those two events ahead
     kept twice as many in flight, more than the core has room to track,
     and was 1% slower for a Lua handler at 500 and 5,000 connections. */
  if (n > 1) prefetch_hint(S, ev[1].data.fd);
  if (n > 0) prefetch(S, ev[0].data.fd);
  for (i = 0; i < n; i++) {
    int fd = ev[i].data.fd, flags = rv_poller_flags(ev[i].events);
    if (i + 2 < n) prefetch_hint(S, ev[i + 2].data.fd);
    if (i + 1 < n) prefetch(S, ev[i + 1].data.fd);
    if (flags & RV_HUP) mark(L, fd, 1);
    if (flags == RV_READ && relayed(L, S, fd)) continue;
    if (flags & RV_READ) {
      int who = waiter(L, S, A_READERS, fd);
      if (who == 0 && !(flags & RV_HUP)) mark(L, fd, 0);
      top |= who == 2;
    }
    if (flags & RV_WRITE) top |= waiter(L, S, A_WRITERS, fd) == 2;
  }
  lua_pushinteger(L, n);
  lua_pushboolean(L, top);
  return 2;
}

/* __gc of the scheduler, and drop_hints(): frees the hints, which park
   makes again as tasks wait (the loop drops them with its tables after
   a spike of connections, when they would hold one per descriptor the
   spike reached). */
static int l_drop_hints(lua_State *L) {
  sched *S = (sched *)lua_touserdata(L, lua_upvalueindex(UV_SCHED));
  free(S->hints);
  S->hints = NULL;
  S->nhints = 0;
  return 0;
}

/* core.scheduler() -> { resume, park, dispatch, drop_hints, streams,
   WAIT }, sharing one record of the running task.  streams(...) makes the
   C half of reverb.stream for this scheduler (csrc/stream.c). */
static int l_scheduler(lua_State *L) {
  static const luaL_Reg funcs[] = {   /* each with the scheduler as upvalue */
    { "resume", l_resume },
    { "park", l_park },
    { "dispatch", l_dispatch },
    { "drop_hints", l_drop_hints },
    { NULL, NULL }
  };
  sched *S;
  lua_createtable(L, 0, 6);
  S = (sched *)lua_newuserdatauv(L, sizeof *S, 0);
  S->current = NULL;
  S->hints = NULL;
  S->nhints = 0;
  S->resumes = 0;
  S->peeking = 0;
  lua_createtable(L, 0, 1);   /* its metatable: __gc frees the hints */
  lua_pushvalue(L, -2);
  lua_pushcclosure(L, l_drop_hints, 1);
  lua_setfield(L, -2, "__gc");
  lua_setmetatable(L, -2);
  lua_pushvalue(L, -1);
  lua_pushcclosure(L, rv_stream_api, 1);
  lua_setfield(L, -3, "streams");
  luaL_setfuncs(L, funcs, 1);
  lua_pushlightuserdata(L, (void *)&WAIT);
  lua_setfield(L, -2, "WAIT");
  lua_pushlightuserdata(L, (void *)&closed);
  lua_setfield(L, -2, "CLOSED");
  /* Whether parked tasks' frames are prefetched too (peek.c). */
  S->peeking = rv_peek_check(L);
  lua_pushboolean(L, S->peeking);
  lua_setfield(L, -2, "peeking");
  return 1;
}

const luaL_Reg rv_sched_funcs[] = {
  { "scheduler", l_scheduler },
  { NULL, NULL }
};
