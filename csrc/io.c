/*
 * io.c -- moving bytes: send, recv, sendto, recvfrom, and raw read/write
 * on plain descriptors (stdin and stdout for the command line).
 *
 * Three outcomes, never mixed: bytes (a count or a string), nil when a
 * non-blocking call would block, or a raised error object.  Every send
 * carries MSG_NOSIGNAL, so a closed peer is EPIPE and never SIGPIPE, without
 * touching the process's signal dispositions.  Receives up to 256 KiB land
 * in a scratch buffer owned by this Lua state (an upvalue), so the hot
 * path allocates only the resulting string.
 */
#include <errno.h>
#include <limits.h>
#include <string.h>
#include <unistd.h>

#include "reverb.h"

#define RECV_DEFAULT 65536          /* recv's max when not told */
#define SCRATCH (256 * 1024)       /* receives up to this size need no allocation */

/* Reads the optional (i, j) of send as string.sub does, returning the
   start and length of the slice. */
static const char *slice(lua_State *L, int idx, size_t *len) {
  size_t n;
  const char *data = luaL_checklstring(L, idx, &n);
  if (lua_gettop(L) == idx) {   /* the common call: the whole string */
    *len = n;
    return data;
  }
  lua_Integer i = luaL_optinteger(L, idx + 1, 1);
  lua_Integer j = luaL_optinteger(L, idx + 2, -1);
  lua_Integer size = (lua_Integer)n;
  if (i < 0) i = i < -size ? 1 : size + i + 1;
  else if (i == 0) i = 1;
  if (j < 0) j = size + j + 1;
  else if (j > size) j = size;
  if (i > j) {
    *len = 0;
    return data;
  }
  *len = (size_t)(j - i + 1);
  return data + i - 1;
}

static size_t checkmax(lua_State *L, int idx) {
  lua_Integer max = luaL_optinteger(L, idx, RECV_DEFAULT);
  luaL_argcheck(L, max >= 1, idx, "size must be positive");
  return max > RV_MAXIO ? RV_MAXIO : (size_t)max;
}

/* A transfer that returned -1: nil when it would block, else the error. */
static int blocked(lua_State *L, const char *op, const char *address) {
  if (errno == EAGAIN || errno == EWOULDBLOCK) {
    luaL_pushfail(L);
    return 1;
  }
  return rv_fail(L, op, errno, address);
}

/* A place to receive max bytes: the state's scratch buffer when it is
   big enough, else a fresh Lua buffer (freed with the string). */
static char *space(lua_State *L, size_t max, luaL_Buffer *b) {
  if (max <= SCRATCH) return (char *)lua_touserdata(L, lua_upvalueindex(2));
  return luaL_buffinitsize(L, b, max);
}

static void pushbytes(lua_State *L, char *buf, size_t n, size_t max, luaL_Buffer *b) {
  if (max <= SCRATCH) lua_pushlstring(L, buf, n);
  else luaL_pushresultsize(b, n);
}

/* send(data [, i [, j]]) -> bytes taken | nil (would block) */
static int sock_send(lua_State *L) {
  rv_socket *s = rv_check(L, 1, "send");
  size_t len;
  const char *data = slice(L, 2, &len);
  ssize_t n;
  do n = send(s->fd, data, len, MSG_NOSIGNAL);
  while (n < 0 && errno == EINTR);
  if (n < 0) return blocked(L, "send", NULL);
  lua_pushinteger(L, n);
  return 1;
}

/* recv([max]) -> 1..max bytes | "" at end of stream | nil (would block) */
static int sock_recv(lua_State *L) {
  rv_socket *s = rv_check(L, 1, "recv");
  size_t max = checkmax(L, 2);
  luaL_Buffer b;
  char *buf = space(L, max, &b);
  ssize_t n;
  do n = recv(s->fd, buf, max, 0);
  while (n < 0 && errno == EINTR);
  if (n < 0) return blocked(L, "recv", NULL);
  pushbytes(L, buf, (size_t)n, max, &b);
  return 1;
}

/* sendto(data, host, port) | sendto(data, path) -> bytes | nil */
static int sock_sendto(lua_State *L) {
  rv_socket *s = rv_check(L, 1, "sendto");
  size_t len;
  const char *data = luaL_checklstring(L, 2, &len);
  rv_addr a;
  char text[300];
  ssize_t n;
  rv_getaddr(L, s, 3, "sendto", &a, text, sizeof text);
  do n = sendto(s->fd, data, len, MSG_NOSIGNAL, (struct sockaddr *)&a.ss, a.len);
  while (n < 0 && errno == EINTR);
  if (n < 0) return blocked(L, "sendto", text);
  lua_pushinteger(L, n);
  return 1;
}

/* recvfrom([max]) -> data, host, port | data, path | nil */
static int sock_recvfrom(lua_State *L) {
  rv_socket *s = rv_check(L, 1, "recvfrom");
  size_t max = checkmax(L, 2);
  struct sockaddr_storage ss;
  socklen_t slen;
  luaL_Buffer b;
  char *buf = space(L, max, &b);
  ssize_t n;
  do {
    slen = sizeof ss;
    n = recvfrom(s->fd, buf, max, 0, (struct sockaddr *)&ss, &slen);
  } while (n < 0 && errno == EINTR);
  if (n < 0) return blocked(L, "recvfrom", NULL);
  pushbytes(L, buf, (size_t)n, max, &b);
  if (slen == 0) return 1;   /* a connected stream peer has no address */
  return 1 + rv_push_addr(L, (struct sockaddr *)&ss, slen);
}

/* A descriptor argument: an int, or an argument error (2^32 cast to int
   would be descriptor 0). */
int rv_checkfd(lua_State *L, int idx) {
  lua_Integer fd = luaL_checkinteger(L, idx);
  luaL_argcheck(L, fd >= 0 && fd <= INT_MAX, idx, "not a descriptor");
  return (int)fd;
}

/* core.read(fd [, max]) -> bytes | "" at end of file | nil (would block) */
static int l_read(lua_State *L) {
  int fd = rv_checkfd(L, 1);
  size_t max = checkmax(L, 2);
  luaL_Buffer b;
  char *buf = space(L, max, &b);
  ssize_t n;
  do n = read(fd, buf, max);
  while (n < 0 && errno == EINTR);
  if (n < 0) return blocked(L, "read", NULL);
  pushbytes(L, buf, (size_t)n, max, &b);
  return 1;
}

/* core.write(fd, data [, i [, j]]) -> bytes written | nil (would block) */
static int l_write(lua_State *L) {
  int fd = rv_checkfd(L, 1);
  size_t len;
  const char *data = slice(L, 2, &len);
  ssize_t n;
  do n = write(fd, data, len);
  while (n < 0 && errno == EINTR);
  if (n < 0) return blocked(L, "write", NULL);
  lua_pushinteger(L, n);
  return 1;
}

const luaL_Reg rv_io_methods[] = {
  { "send", sock_send },
  { "recv", sock_recv },
  { "sendto", sock_sendto },
  { "recvfrom", sock_recvfrom },
  { NULL, NULL }
};

const luaL_Reg rv_io_funcs[] = {
  { "read", l_read },
  { "write", l_write },
  { NULL, NULL }
};

/* Pushes the scratch buffer that every function above takes as its
   upvalue 2 (upvalue 1 is the socket tag, for rv_check). */
void rv_io_init(lua_State *L) {
  lua_newuserdatauv(L, SCRATCH, 0);
}
