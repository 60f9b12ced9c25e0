/*
 * socket.c -- the socket userdata: creating, binding, listening,
 * accepting, connecting, shutting down and closing.
 *
 * As in liolib.c, a socket is born closed (fd = -1) and only then gets its
 * descriptor, so a memory error can never leave a descriptor without an
 * owner; close, __gc and __close share one idempotent close.  Every
 * descriptor is close-on-exec from birth (SOCK_CLOEXEC, accept4), and
 * EINTR never reaches Lua.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "reverb.h"

static const char *const family_names[] = { "inet", "inet6", "unix", NULL };
static const int family_values[] = { AF_INET, AF_INET6, AF_UNIX };
static const char *const type_names[] = { "stream", "dgram", NULL };
static const int type_values[] = { SOCK_STREAM, SOCK_DGRAM };

rv_socket *rv_newsocket(lua_State *L, int family, int type) {
  /* its user value: the owner (sock_setowner) */
  rv_socket *s = (rv_socket *)lua_newuserdatauv(L, sizeof *s, 1);
  s->fd = -1;
  s->family = family;
  s->type = type;
  s->blocking = 1;
  luaL_setmetatable(L, RV_SOCKET);
  return s;
}

/* Pushes what rv_check compares a metatable with: the socket metatable's
   address, as a light userdata.  The registry holds the metatable and Lua
   never moves a table, so the address identifies it for good. */
void rv_push_sockettag(lua_State *L) {
  const void *mt;
  luaL_getmetatable(L, RV_SOCKET);
  mt = lua_topointer(L, -1);
  lua_pop(L, 1);
  lua_pushlightuserdata(L, (void *)mt);
}

/* The open socket at idx, for a method whose upvalue 1 is the socket tag
   (rv_push_sockettag): a wrong type is an argument error, a closed socket
   EBADF.  Comparing addresses is the cheapest sure check, and it runs on
   every send and recv. */
rv_socket *rv_check(lua_State *L, int idx, const char *op) {
  /* (lua_touserdata also answers for a light userdata, whose metatable
     a script could make the socket metatable) */
  rv_socket *s = lua_type(L, idx) == LUA_TUSERDATA ? (rv_socket *)lua_touserdata(L, idx) : NULL;
  if (s == NULL || !lua_getmetatable(L, idx) ||
      lua_topointer(L, -1) != lua_touserdata(L, lua_upvalueindex(1)))
    luaL_typeerror(L, idx, RV_SOCKET);
  lua_pop(L, 1);
  if (s->fd < 0) rv_fail_msg(L, op, EBADF, "socket is closed", NULL);
  return s;
}

/* Out of descriptors, some may belong to sockets the script forgot:
   collect them (their __gc closes them) and let the caller try once more. */
static int collect_on_exhaustion(lua_State *L, int err) {
  if (err != EMFILE && err != ENFILE) return 0;
  lua_gc(L, LUA_GCCOLLECT);
  return 1;
}

/* core.socket([family [, type]]) */
static int l_socket(lua_State *L) {
  int family = family_values[luaL_checkoption(L, 1, "inet", family_names)];
  int type = type_values[luaL_checkoption(L, 2, "stream", type_names)];
  rv_socket *s = rv_newsocket(L, family, type);
  s->fd = socket(family, type | SOCK_CLOEXEC, 0);
  if (s->fd < 0 && collect_on_exhaustion(L, errno))
    s->fd = socket(family, type | SOCK_CLOEXEC, 0);
  if (s->fd < 0) return rv_fail(L, "socket", errno, NULL);
  return 1;
}

/* core.socketpair([type]) -> two connected unix sockets */
static int l_socketpair(lua_State *L) {
  int type = type_values[luaL_checkoption(L, 1, "stream", type_names)];
  rv_socket *a = rv_newsocket(L, AF_UNIX, type);
  rv_socket *b = rv_newsocket(L, AF_UNIX, type);
  int fds[2], rc;
  rc = socketpair(AF_UNIX, type | SOCK_CLOEXEC, 0, fds);
  if (rc < 0 && collect_on_exhaustion(L, errno))
    rc = socketpair(AF_UNIX, type | SOCK_CLOEXEC, 0, fds);
  if (rc < 0) return rv_fail(L, "socketpair", errno, NULL);
  a->fd = fds[0];
  b->fd = fds[1];
  return 2;
}

static int sock_bind(lua_State *L) {
  rv_socket *s = rv_check(L, 1, "bind");
  rv_addr a;
  char text[300];
  rv_getaddr(L, s, 2, "bind", &a, text, sizeof text);
  if (bind(s->fd, (struct sockaddr *)&a.ss, a.len) < 0)
    return rv_fail(L, "bind", errno, text);
  lua_pushboolean(L, 1);
  return 1;
}

static int sock_listen(lua_State *L) {
  rv_socket *s = rv_check(L, 1, "listen");
  lua_Integer backlog = luaL_optinteger(L, 2, SOMAXCONN);
  if (backlog < 0 || backlog > 65535) backlog = SOMAXCONN;
  if (listen(s->fd, (int)backlog) < 0) return rv_fail(L, "listen", errno, NULL);
  lua_pushboolean(L, 1);
  return 1;
}

/* accept() -> socket, host, port | socket, path | nil (would block).
   The new socket inherits the listener's blocking mode, as on the BSDs:
   a server on a loop wants non-blocking clients and this saves an fcntl
   per connection. */
static int sock_accept(lua_State *L) {
  rv_socket *s = rv_check(L, 1, "accept");
  struct sockaddr_storage ss;
  socklen_t len;
  rv_socket *c = rv_newsocket(L, s->family, s->type);
  int flags = SOCK_CLOEXEC | (s->blocking ? 0 : SOCK_NONBLOCK);
  int collected = 0;
  for (;;) {
    len = sizeof ss;
    c->fd = accept4(s->fd, (struct sockaddr *)&ss, &len, flags);
    if (c->fd >= 0) break;
    if (errno == EINTR || errno == ECONNABORTED) continue;   /* nothing to report */
    if (errno == EMFILE && !collected++ && collect_on_exhaustion(L, errno)) continue;
    break;
  }
  if (c->fd < 0) {
    if (errno == EAGAIN || errno == EWOULDBLOCK) {
      luaL_pushfail(L);
      return 1;
    }
    return rv_fail(L, "accept", errno, NULL);
  }
  c->blocking = s->blocking;
  return 1 + rv_push_addr(L, (struct sockaddr *)&ss, len);
}

/* A blocking connect interrupted by a signal goes on in the kernel;
   calling connect again would say EALREADY, so wait for it and read
   SO_ERROR instead. */
static int finish_interrupted(int fd) {
  struct pollfd p = { fd, POLLOUT, 0 };
  int err = 0;
  socklen_t len = sizeof err;
  while (poll(&p, 1, -1) < 0)
    if (errno != EINTR) return errno;
  if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0) return errno;
  return err;
}

/* connect(host, port) -> true | false (in progress, non-blocking) */
static int sock_connect(lua_State *L) {
  rv_socket *s = rv_check(L, 1, "connect");
  rv_addr a;
  char text[300];
  int err = 0;
  rv_getaddr(L, s, 2, "connect", &a, text, sizeof text);
  if (connect(s->fd, (struct sockaddr *)&a.ss, a.len) < 0) {
    err = errno;
    if (err == EINTR) err = s->blocking ? finish_interrupted(s->fd) : EINPROGRESS;
  }
  if (err == EINPROGRESS && !s->blocking) {
    lua_pushboolean(L, 0);
    return 1;
  }
  if (err != 0) return rv_fail(L, "connect", err, text);
  lua_pushboolean(L, 1);
  return 1;
}

static int sock_shutdown(lua_State *L) {
  static const char *const hows[] = { "read", "write", "both", NULL };
  static const int values[] = { SHUT_RD, SHUT_WR, SHUT_RDWR };
  rv_socket *s = rv_check(L, 1, "shutdown");
  int how = values[luaL_checkoption(L, 2, "both", hows)];
  if (shutdown(s->fd, how) < 0) return rv_fail(L, "shutdown", errno, NULL);
  lua_pushboolean(L, 1);
  return 1;
}

/* The one close of the descriptor: idempotent, and all __gc does.
   Linux releases the descriptor even when close(2) fails, so it is never
   retried and its error is not worth raising. */
static int sock_gc(lua_State *L) {
  rv_socket *s = (rv_socket *)luaL_checkudata(L, 1, RV_SOCKET);
  if (s->fd >= 0) {
    int fd = s->fd;
    s->fd = -1;
    close(fd);
  }
  return 0;
}

/* close() and __close.  A socket with an owner (a stream's, a server's:
   loop.watch sets it) closes through the owner's close, so that the loop
   lets go of the descriptor and wakes whoever waits on it; otherwise they
   would wait forever, since epoll forgets a closed descriptor without an
   event.  The owner's close comes back here, no longer owned, to close
   the descriptor. */
static int sock_close(lua_State *L) {
  int failed = 0;
  luaL_checkudata(L, 1, RV_SOCKET);
  lua_settop(L, 1);   /* __close passes the error too; close(x) an x */
  if (lua_getiuservalue(L, 1, 1) != LUA_TNIL) {
    lua_pushnil(L);
    lua_setiuservalue(L, 1, 1);
    if (lua_getfield(L, 2, "close") == LUA_TFUNCTION) {
      lua_insert(L, 2);
      failed = lua_pcall(L, 1, 0, 0) != LUA_OK;   /* the descriptor closes all the same */
    }
  }
  sock_gc(L);   /* (index 1; the owner's error, if any, stays on top) */
  if (failed) return lua_error(L);
  lua_pushboolean(L, 1);
  return 1;
}

/* setowner(t | nil) -> self: close() calls t:close() first (see
   sock_close); reverb's streams, servers and UDP sockets own theirs. */
static int sock_setowner(lua_State *L) {
  luaL_checkudata(L, 1, RV_SOCKET);
  if (!lua_isnoneornil(L, 2)) luaL_checktype(L, 2, LUA_TTABLE);
  lua_settop(L, 2);
  lua_setiuservalue(L, 1, 1);
  return 1;
}

static int sock_setblocking(lua_State *L) {
  rv_socket *s = rv_check(L, 1, "setblocking");
  int blocking = lua_toboolean(L, 2);
  int flags = fcntl(s->fd, F_GETFL);
  luaL_checkany(L, 2);
  if (flags < 0) return rv_fail(L, "setblocking", errno, NULL);
  flags = blocking ? (flags & ~O_NONBLOCK) : (flags | O_NONBLOCK);
  if (fcntl(s->fd, F_SETFL, flags) < 0) return rv_fail(L, "setblocking", errno, NULL);
  s->blocking = blocking;
  lua_pushboolean(L, 1);
  return 1;
}

static int sock_fileno(lua_State *L) {
  rv_socket *s = rv_check(L, 1, "fileno");
  lua_pushinteger(L, s->fd);
  return 1;
}

static int sock_getsockname(lua_State *L) {
  rv_socket *s = rv_check(L, 1, "getsockname");
  struct sockaddr_storage ss;
  socklen_t len = sizeof ss;
  if (getsockname(s->fd, (struct sockaddr *)&ss, &len) < 0)
    return rv_fail(L, "getsockname", errno, NULL);
  return rv_push_addr(L, (struct sockaddr *)&ss, len);
}

static int sock_getpeername(lua_State *L) {
  rv_socket *s = rv_check(L, 1, "getpeername");
  struct sockaddr_storage ss;
  socklen_t len = sizeof ss;
  if (getpeername(s->fd, (struct sockaddr *)&ss, &len) < 0)
    return rv_fail(L, "getpeername", errno, NULL);
  return rv_push_addr(L, (struct sockaddr *)&ss, len);
}

/* "reverb.socket: fd 7, inet stream, 127.0.0.1:8080 -> 127.0.0.1:50512" */
static int sock_tostring(lua_State *L) {
  rv_socket *s = (rv_socket *)luaL_checkudata(L, 1, RV_SOCKET);
  struct sockaddr_storage ss;
  socklen_t len = sizeof ss;
  char here[300] = "", there[300] = "";
  if (s->fd < 0) {
    lua_pushliteral(L, "reverb.socket: closed");
    return 1;
  }
  if (getsockname(s->fd, (struct sockaddr *)&ss, &len) == 0)
    rv_addr_format((struct sockaddr *)&ss, len, here, sizeof here);
  len = sizeof ss;
  if (getpeername(s->fd, (struct sockaddr *)&ss, &len) == 0) {
    there[0] = ' ';
    there[1] = '-';
    there[2] = '>';
    there[3] = ' ';
    rv_addr_format((struct sockaddr *)&ss, len, there + 4, sizeof there - 4);
  }
  lua_pushfstring(L, "reverb.socket: fd %d, %s %s, %s%s", s->fd,
                  s->family == AF_INET ? "inet" : s->family == AF_INET6 ? "inet6" : "unix",
                  s->type == SOCK_STREAM ? "stream" : "dgram", here, there);
  return 1;
}

const luaL_Reg rv_socket_funcs[] = {
  { "socket", l_socket },
  { "socketpair", l_socketpair },
  { NULL, NULL }
};

const luaL_Reg rv_socket_methods[] = {
  { "bind", sock_bind },
  { "listen", sock_listen },
  { "accept", sock_accept },
  { "connect", sock_connect },
  { "shutdown", sock_shutdown },
  { "close", sock_close },
  { "setowner", sock_setowner },
  { "setblocking", sock_setblocking },
  { "fileno", sock_fileno },
  { "getsockname", sock_getsockname },
  { "getpeername", sock_getpeername },
  { NULL, NULL }
};

/* Creates the socket metatable; the methods of io.c and options.c are
   added to its __index table by core.c. */
void rv_socket_init(lua_State *L) {
  luaL_newmetatable(L, RV_SOCKET);
  lua_pushcfunction(L, sock_gc);
  lua_setfield(L, -2, "__gc");
  lua_pushcfunction(L, sock_close);
  lua_setfield(L, -2, "__close");
  lua_pushcfunction(L, sock_tostring);
  lua_setfield(L, -2, "__tostring");
  lua_pop(L, 1);
}
