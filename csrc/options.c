/*
 * options.c -- setoption and getoption: socket options by name.
 *
 * One table maps every name (reverb's and LuaSocket's spellings) to its
 * level, option and kind, so set and get cannot disagree.  Booleans,
 * integers and linger (seconds or false) are the three kinds; "error"
 * reads the pending SO_ERROR, which is how a non-blocking connect learns
 * its outcome.
 */
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <string.h>

#include "reverb.h"

enum kind { BOOL, INT, LINGER, ERROR };

static const char *const names[] = {
  "reuseaddr", "reuseport", "nodelay", "keepalive", "broadcast", "ipv6only",
  "rcvbuf", "sndbuf", "linger", "error",
  /* LuaSocket's names for the same options */
  "tcp-nodelay", "recv-buffer-size", "send-buffer-size", "ipv6-v6only",
  NULL
};

static const struct { int level, name; enum kind kind; } options[] = {
  { SOL_SOCKET, SO_REUSEADDR, BOOL },  { SOL_SOCKET, SO_REUSEPORT, BOOL },
  { IPPROTO_TCP, TCP_NODELAY, BOOL },  { SOL_SOCKET, SO_KEEPALIVE, BOOL },
  { SOL_SOCKET, SO_BROADCAST, BOOL },  { IPPROTO_IPV6, IPV6_V6ONLY, BOOL },
  { SOL_SOCKET, SO_RCVBUF, INT },      { SOL_SOCKET, SO_SNDBUF, INT },
  { SOL_SOCKET, SO_LINGER, LINGER },   { SOL_SOCKET, SO_ERROR, ERROR },
  { IPPROTO_TCP, TCP_NODELAY, BOOL },  { SOL_SOCKET, SO_RCVBUF, INT },
  { SOL_SOCKET, SO_SNDBUF, INT },      { IPPROTO_IPV6, IPV6_V6ONLY, BOOL },
};

/* linger: a number of seconds, false (off), or LuaSocket's {on=, timeout=} */
static struct linger checklinger(lua_State *L, int idx) {
  struct linger l = { 0, 0 };
  lua_Integer secs = 0;
  int isint = 1;
  if (lua_istable(L, idx)) {
    lua_getfield(L, idx, "on");
    lua_getfield(L, idx, "timeout");
    l.l_onoff = lua_toboolean(L, -2);
    if (!lua_isnil(L, -1)) secs = lua_tointegerx(L, -1, &isint);
    lua_pop(L, 2);
  } else if (!lua_isboolean(L, idx) || lua_toboolean(L, idx)) {
    secs = luaL_checkinteger(L, idx);
    l.l_onoff = 1;
  }
  /* the kernel would take a negative one as "linger forever" */
  luaL_argcheck(L, isint && secs >= 0 && secs <= 65535, idx,
                "linger timeout must be 0-65535 seconds");
  l.l_linger = (int)secs;
  return l;
}

static int sock_setoption(lua_State *L) {
  rv_socket *s = rv_check(L, 1, "setoption");
  int which = luaL_checkoption(L, 2, NULL, names);
  int ival;
  struct linger l;
  const void *value = &ival;
  socklen_t len = sizeof ival;
  switch (options[which].kind) {
  case BOOL:
    luaL_checktype(L, 3, LUA_TBOOLEAN);
    ival = lua_toboolean(L, 3);
    break;
  case INT: {
    lua_Integer n = luaL_checkinteger(L, 3);
    luaL_argcheck(L, n >= 0 && n <= 0x7fffffff, 3, "size out of range");
    ival = (int)n;
    break;
  }
  case LINGER:
    l = checklinger(L, 3);
    value = &l;
    len = sizeof l;
    break;
  case ERROR:
    return luaL_argerror(L, 2, "'error' can only be read");
  }
  if (setsockopt(s->fd, options[which].level, options[which].name, value, len) < 0)
    return rv_fail(L, "setoption", errno, names[which]);
  lua_pushboolean(L, 1);
  return 1;
}

static int sock_getoption(lua_State *L) {
  rv_socket *s = rv_check(L, 1, "getoption");
  int which = luaL_checkoption(L, 2, NULL, names);
  int ival = 0;
  struct linger l = { 0, 0 };
  void *value = options[which].kind == LINGER ? (void *)&l : (void *)&ival;
  socklen_t len = options[which].kind == LINGER ? sizeof l : sizeof ival;
  if (getsockopt(s->fd, options[which].level, options[which].name, value, &len) < 0)
    return rv_fail(L, "getoption", errno, names[which]);
  switch (options[which].kind) {
  case BOOL: lua_pushboolean(L, ival); break;
  case INT: lua_pushinteger(L, ival); break;
  case LINGER:
    if (l.l_onoff) lua_pushinteger(L, l.l_linger);
    else lua_pushboolean(L, 0);
    break;
  case ERROR:
    if (ival == 0) {
      lua_pushnil(L);
    } else {
      rv_pusherror(L, "connect", ival, NULL);
    }
    break;
  }
  return 1;
}

const luaL_Reg rv_option_methods[] = {
  { "setoption", sock_setoption },
  { "getoption", sock_getoption },
  { NULL, NULL }
};
