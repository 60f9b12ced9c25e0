/*
 * peek.c -- where Lua keeps a parked task's call frames and stack, and a
 * table's parts: addresses for dispatch to prefetch, nothing more.
 *
 * Why.  Waking a task at 5,000 connections, the first touch of each of
 * its objects is a cache miss: sched.c prefetches the ones the public API
 * names (the lua_State, the stream's state and socket, the stream table),
 * but lua_resume and the Lua code after it go on to the task's two call
 * frames (CallInfo, each allocated apart), the stack slots of those
 * frames, and the stream table's array (where its state is) and hash part
 * (where a method lookup looks first).  perf put a third of the Lua
 * handler's user time (examples/echo_server.lua) on those loads;
 * prefetching them too made it 2-3% faster at 5,000 connections
 * (bench/NOTES.md).
 *
 * How.  The API has no call that tells these addresses, so they are read
 * from Lua 5.4's own structs, at fixed offsets (lstate.h, lobject.h; the
 * fields read here are where they are from 5.4.0 to 5.4.7).  That is
 * safe only where it was checked: rv_peek_check tries each offset, on a
 * thread and tables made for the purpose, against what the API can see
 * (a pushed value moves the top by one slot, a called function's frame
 * names its caller and its slot, a stored value lands in the array), and
 * a scheduler peeks only if all of it held.  The addresses are read while
 * the task runs (it is parking), when its objects are certainly alive,
 * and only prefetched later: a stale one costs a wasted prefetch, never a
 * read.
 */
#include <string.h>

#include "reverb.h"

/* Offsets in Lua 5.4's structs, in bytes (64-bit). */
enum {
  STATE_TOP = 16,      /* lua_State.top: the first free stack slot */
  STATE_CI = 32,       /* lua_State.ci: the running function's CallInfo */
  CI_FUNC = 0,         /* CallInfo.func: the function's stack slot */
  CI_PREVIOUS = 16,    /* CallInfo.previous: the caller's CallInfo */
  TABLE_LSIZENODE = 11, /* Table.lsizenode: log2 of the hash part's size */
  TABLE_ARRAY = 16,    /* Table.array */
  TABLE_NODE = 24,     /* Table.node */
  STATE_SIZE = 200,    /* sizeof(lua_State), about: its base frame is inside */
  CI_SIZE = 64,        /* sizeof(CallInfo) */
  SLOT = 16,           /* a stack slot (StackValue) */
  NODE = 24            /* a hash node (Node) */
};

static char *field(const void *base, int offset) {
  char *p;
  memcpy(&p, (const char *)base + offset, sizeof p);
  return p;
}

/* Runs in the probe thread: its frame must name its own slot and the
   thread's base frame as its caller (upvalues 1 and 2). */
static int probe(lua_State *L) {
  char *ci = field(L, STATE_CI);
  lua_pushboolean(L, ci != NULL &&
                     field(ci, CI_FUNC) == (char *)lua_touserdata(L, lua_upvalueindex(1)) &&
                     field(ci, CI_PREVIOUS) == (char *)lua_touserdata(L, lua_upvalueindex(2)));
  return 1;
}

/* The thread's offsets, on a new thread: one slot in use (its base
   function's), its base frame inside the lua_State, at that slot; a push
   moves the top by a slot; a call's frame as probe sees it.  What can
   allocate (the closure) is made on L, where an error raises as usual,
   and moved over: T has no protected call of its own to catch one. */
static int checkthread(lua_State *L, lua_State *T) {
  char *top = field(T, STATE_TOP), *base = field(T, STATE_CI);
  if (top == NULL || base <= (char *)T || base + CI_SIZE > (char *)T + STATE_SIZE ||
      field(base, CI_FUNC) + SLOT != top || field(base, CI_PREVIOUS) != NULL)
    return 0;
  lua_pushnil(T);
  if (field(T, STATE_TOP) != top + SLOT) return 0;
  lua_pushlightuserdata(L, top + SLOT);   /* where the closure will sit in T */
  lua_pushlightuserdata(L, base);
  lua_pushcclosure(L, probe, 2);
  lua_xmove(L, T, 1);
  return lua_pcall(T, 0, 1, 0) == LUA_OK && lua_toboolean(T, -1);
}

static int checktables(lua_State *L) {
  char *a, *b, *h;
  static char marker;   /* its address, stored and found again */
  int ok;
  lua_createtable(L, 2, 0);
  lua_createtable(L, 1, 0);
  lua_createtable(L, 0, 4);
  a = (char *)lua_topointer(L, -3);
  b = (char *)lua_topointer(L, -2);
  h = (char *)lua_topointer(L, -1);
  lua_pushlightuserdata(L, &marker);
  lua_rawseti(L, -4, 1);
  /* Tables with no hash part share Lua's one empty node; a hash part of
     four has log2 size 2; a stored value is at the start of its slot. */
  ok = field(a, TABLE_NODE) == field(b, TABLE_NODE) && field(a, TABLE_NODE) != NULL &&
       field(h, TABLE_NODE) != field(a, TABLE_NODE) && a[TABLE_LSIZENODE] == 0 &&
       h[TABLE_LSIZENODE] == 2 && field(a, TABLE_ARRAY) != NULL &&
       field(field(a, TABLE_ARRAY), 0) == (char *)&marker;
  lua_pop(L, 3);
  return ok;
}

int rv_peek_check(lua_State *L) {
  int ok = sizeof(void *) == 8 && checkthread(L, lua_newthread(L));
  lua_pop(L, 1);
  return ok && checktables(L);
}

/* Only where rv_peek_check said yes (the scheduler keeps its answer). */
void rv_peek_task(lua_State *L, const void *table, rv_hint *h) {
  char *ci, *caller;
  ci = field(L, STATE_CI);   /* the C function that parks (a read) */
  caller = field(ci, CI_PREVIOUS);
  h->frame = (uintptr_t)ci;
  h->slots = (uintptr_t)field(ci, CI_FUNC);
  if (caller != NULL) {
    h->caller = (uintptr_t)caller;
    h->callerslots = (uintptr_t)field(caller, CI_FUNC);
  }
  if (table != NULL) {
    unsigned lsize = ((const unsigned char *)table)[TABLE_LSIZENODE];
    char *node = field(table, TABLE_NODE);
    h->array = (uintptr_t)field(table, TABLE_ARRAY);
    h->node = (uintptr_t)node;
    /* (dispatch prefetches 4 lines of it at most) */
    h->nodeend = (uintptr_t)node + (lsize < 8 ? ((uintptr_t)NODE << lsize) - 1 : 255);
  }
}
