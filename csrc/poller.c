/*
 * poller.c -- a thin epoll wrapper: the loop's only way to sleep on I/O.
 *
 * Sockets are registered once, edge-triggered ("edge"), and the Lua side
 * keeps a readiness flag per descriptor, so it only waits when a call
 * really would block.  Descriptors that are not sockets (stdin, the signal
 * pipe) use level-triggered "read".  wait() writes its events into a
 * table the caller reuses, as pairs fd, flags (1 = readable, 2 = writable,
 * 4 = hang-up or error), so a busy loop allocates nothing per event; the
 * loop itself uses sched.c's dispatch, which reads them in place.  Errors
 * and hang-ups wake both directions, so whoever waits sees the failure on
 * its next call, as in redis's ae_epoll.c.
 */
#include <errno.h>
#include <math.h>
#include <sys/epoll.h>
#include <unistd.h>

#include "reverb.h"

#define RV_POLLER "reverb.poller"
#define MAXEVENTS 1024

typedef struct poller {
  int fd;
  struct epoll_event events[MAXEVENTS];
} poller;

/* The open poller at idx. */
static poller *checkpoller(lua_State *L, int idx) {
  poller *p = (poller *)luaL_checkudata(L, idx, RV_POLLER);
  if (p->fd < 0) rv_fail_msg(L, "poller", EBADF, "poller is closed", NULL);
  return p;
}

static int l_poller(lua_State *L) {
  poller *p = (poller *)lua_newuserdatauv(L, sizeof *p, 0);
  p->fd = -1;
  luaL_setmetatable(L, RV_POLLER);
  p->fd = epoll_create1(EPOLL_CLOEXEC);
  if (p->fd < 0) return rv_fail(L, "epoll_create", errno, NULL);
  return 1;
}

/* "edge" watches a socket for reading, edge-triggered; "edge+write" for
   writing as well (the loop switches a socket to it when a writer has to
   wait, so the usual event is a plain "readable").  "read" and "write"
   are level-triggered, for pipes and terminals. */
static const char *const modes[] = { "edge", "edge+write", "read", "write", NULL };
static const uint32_t masks[] = {
  EPOLLIN | EPOLLRDHUP | EPOLLET, EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET, EPOLLIN, EPOLLOUT
};

/* What an epoll event means to the loop: RV_READ wakes a reader, RV_WRITE
   a writer, RV_HUP marks a hang-up or error (which wakes both). */
int rv_poller_flags(uint32_t e) {
  int flags = 0;
  if (e & (EPOLLIN | EPOLLRDHUP | EPOLLERR | EPOLLHUP)) flags |= RV_READ;
  if (e & (EPOLLOUT | EPOLLERR | EPOLLHUP)) flags |= RV_WRITE;
  if (e & (EPOLLRDHUP | EPOLLERR | EPOLLHUP)) flags |= RV_HUP;
  return flags;
}

static int ctl(lua_State *L, int op, const char *name) {
  poller *p = checkpoller(L, 1);
  int fd = rv_checkfd(L, 2);
  struct epoll_event ev;
  /* add's mode defaults to "edge"; mod's is the point of the call */
  ev.events = op == EPOLL_CTL_DEL ? 0
            : masks[luaL_checkoption(L, 3, op == EPOLL_CTL_ADD ? "edge" : NULL, modes)];
  ev.data.fd = fd;
  if (epoll_ctl(p->fd, op, fd, &ev) < 0) return rv_fail(L, name, errno, NULL);
  lua_pushboolean(L, 1);
  return 1;
}

/* p:add(fd [, mode]), p:mod(fd, mode), p:del(fd) */
static int poller_add(lua_State *L) { return ctl(L, EPOLL_CTL_ADD, "epoll_add"); }
static int poller_mod(lua_State *L) { return ctl(L, EPOLL_CTL_MOD, "epoll_mod"); }
static int poller_del(lua_State *L) { return ctl(L, EPOLL_CTL_DEL, "epoll_del"); }

/* Waits for events on the poller at idx, for as long as the timeout at
   idx + 1 says: seconds, negative or nil for none, rounded up to the
   millisecond so a timer never fires early.  A signal ends the wait with
   no events.  Also the wait of sched.c's dispatch, which reads the events
   in place. */
int rv_poller_poll(lua_State *L, int idx, const struct epoll_event **events) {
  poller *p = checkpoller(L, idx);
  lua_Number timeout = luaL_optnumber(L, idx + 1, -1);
  int ms, n;
  /* NaN compares false with everything: converted to int it is undefined
     (INT_MIN on x86, a wait that never ends). */
  luaL_argcheck(L, timeout == timeout, idx + 1, "number expected, got NaN");
  ms = timeout < 0 ? -1 : timeout > 86400 ? 86400000 : (int)ceil(timeout * 1000);
  n = epoll_wait(p->fd, p->events, MAXEVENTS, ms);
  if (n < 0) {
    if (errno != EINTR) return rv_fail(L, "epoll_wait", errno, NULL);
    n = 0;
  }
  *events = p->events;
  return n;
}

/* p:wait(timeout, out) -> n, the events as pairs fd, flags in out. */
static int poller_wait(lua_State *L) {
  const struct epoll_event *ev;
  int n, i;
  luaL_checktype(L, 3, LUA_TTABLE);
  n = rv_poller_poll(L, 1, &ev);
  for (i = 0; i < n; i++) {
    lua_pushinteger(L, ev[i].data.fd);
    lua_rawseti(L, 3, 2 * i + 1);
    lua_pushinteger(L, rv_poller_flags(ev[i].events));
    lua_rawseti(L, 3, 2 * i + 2);
  }
  lua_pushinteger(L, n);
  return 1;
}

static int poller_close(lua_State *L) {
  poller *p = (poller *)luaL_checkudata(L, 1, RV_POLLER);
  if (p->fd >= 0) {
    int fd = p->fd;
    p->fd = -1;
    close(fd);
  }
  return 0;
}

/* __tostring: "reverb.poller: fd N", or "reverb.poller: closed". */
static int poller_tostring(lua_State *L) {
  const poller *p = (const poller *)luaL_checkudata(L, 1, RV_POLLER);
  if (p->fd < 0) lua_pushliteral(L, "reverb.poller: closed");
  else lua_pushfstring(L, "reverb.poller: fd %d", p->fd);
  return 1;
}

static int poller_fileno(lua_State *L) {
  lua_pushinteger(L, checkpoller(L, 1)->fd);
  return 1;
}

static const luaL_Reg methods[] = {
  { "add", poller_add },
  { "mod", poller_mod },
  { "del", poller_del },
  { "wait", poller_wait },
  { "close", poller_close },
  { "fileno", poller_fileno },
  { NULL, NULL }
};

void rv_poller_init(lua_State *L) {
  luaL_newmetatable(L, RV_POLLER);
  lua_newtable(L);
  luaL_setfuncs(L, methods, 0);
  lua_setfield(L, -2, "__index");
  lua_pushcfunction(L, poller_close);
  lua_setfield(L, -2, "__gc");
  lua_pushcfunction(L, poller_close);
  lua_setfield(L, -2, "__close");
  lua_pushcfunction(L, poller_tostring);
  lua_setfield(L, -2, "__tostring");
  lua_pop(L, 1);
}

const luaL_Reg rv_poller_funcs[] = {
  { "poller", l_poller },
  { NULL, NULL }
};
