/*
 * address.c -- turning (host, port) or a path into a sockaddr, and back.
 *
 * Numeric addresses skip the resolver (inet_pton is a few hundred times
 * cheaper than getaddrinfo); names go through getaddrinfo and fail with
 * EAI_* codes.  "*" means the family's any-address.  Printable forms are
 * "127.0.0.1:8080", "[::1]:8080" and the path for unix sockets.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/un.h>

#include "reverb.h"

static void set_port(rv_addr *a, int port) {
  if (a->ss.ss_family == AF_INET)
    ((struct sockaddr_in *)&a->ss)->sin_port = htons((uint16_t)port);
  else
    ((struct sockaddr_in6 *)&a->ss)->sin6_port = htons((uint16_t)port);
}

/* The numeric fast path; returns 0 when host is not a literal of family. */
static int numeric(int family, const char *host, rv_addr *out) {
  memset(out, 0, sizeof *out);
  if (family == AF_INET) {
    struct sockaddr_in *sin = (struct sockaddr_in *)&out->ss;
    if (strcmp(host, "*") == 0) sin->sin_addr.s_addr = htonl(INADDR_ANY);
    else if (inet_pton(AF_INET, host, &sin->sin_addr) != 1) return 0;
    sin->sin_family = AF_INET;
    out->len = sizeof *sin;
  } else {
    struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&out->ss;
    if (strcmp(host, "*") == 0) sin6->sin6_addr = in6addr_any;
    else if (inet_pton(AF_INET6, host, &sin6->sin6_addr) != 1) return 0;
    sin6->sin6_family = AF_INET6;
    out->len = sizeof *sin6;
  }
  return 1;
}

static int resolve(lua_State *L, const char *op, int family, int type,
                   const char *host, lua_Integer port, rv_addr *out) {
  struct addrinfo hints, *res = NULL;
  int rc;
  if (numeric(family, host, out)) {
    set_port(out, (int)port);
    return 0;
  }
  memset(&hints, 0, sizeof hints);
  hints.ai_family = family;
  hints.ai_socktype = type;
  rc = getaddrinfo(host, NULL, &hints, &res);
  if (rc != 0) {
    char text[300];
    snprintf(text, sizeof text, strchr(host, ':') ? "[%s]:%d" : "%s:%d", host, (int)port);
    return rv_fail_gai(L, op, rc, text);
  }
  memcpy(&out->ss, res->ai_addr, res->ai_addrlen);
  out->len = res->ai_addrlen;
  freeaddrinfo(res);
  set_port(out, (int)port);
  return 0;
}

static int unixaddr(lua_State *L, const char *op, const char *path, rv_addr *out) {
  struct sockaddr_un *sun = (struct sockaddr_un *)&out->ss;
  size_t n = strlen(path);
  memset(out, 0, sizeof *out);
  if (n >= sizeof sun->sun_path)
    return rv_fail_msg(L, op, ENAMETOOLONG, "unix socket path too long", NULL);
  sun->sun_family = AF_UNIX;
  memcpy(sun->sun_path, path, n);
  out->len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n + 1);
  return 0;
}

void rv_addr_format(const struct sockaddr *sa, socklen_t len, char *buf,
                    size_t size) {
  char host[INET6_ADDRSTRLEN];
  switch (sa->sa_family) {
  case AF_INET: {
    const struct sockaddr_in *sin = (const struct sockaddr_in *)sa;
    inet_ntop(AF_INET, &sin->sin_addr, host, sizeof host);
    snprintf(buf, size, "%s:%d", host, ntohs(sin->sin_port));
    break;
  }
  case AF_INET6: {
    const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)sa;
    inet_ntop(AF_INET6, &sin6->sin6_addr, host, sizeof host);
    snprintf(buf, size, "[%s]:%d", host, ntohs(sin6->sin6_port));
    break;
  }
  case AF_UNIX: {
    const struct sockaddr_un *sun = (const struct sockaddr_un *)sa;
    size_t n = len > offsetof(struct sockaddr_un, sun_path)
                   ? strnlen(sun->sun_path, len - offsetof(struct sockaddr_un, sun_path))
                   : 0;
    snprintf(buf, size, "%.*s", (int)n, sun->sun_path);
    break;
  }
  default:
    snprintf(buf, size, "?");
  }
}

/* An IPv4 address in dotted decimal, as inet_ntop writes it, without
   the sprintf that inet_ntop spends a tenth of an accept on. */
static size_t format_ipv4(const struct in_addr *in, char *out) {
  const unsigned char *b = (const unsigned char *)&in->s_addr;
  char *p = out;
  for (int i = 0; i < 4; i++) {
    unsigned v = b[i];
    if (i > 0) *p++ = '.';
    if (v >= 100) *p++ = (char)('0' + v / 100);
    if (v >= 10) *p++ = (char)('0' + v / 10 % 10);
    *p++ = (char)('0' + v % 10);
  }
  return (size_t)(p - out);
}

/* Pushes host, port (inet) or the path (unix); returns how many. */
int rv_push_addr(lua_State *L, const struct sockaddr *sa, socklen_t len) {
  char host[INET6_ADDRSTRLEN];
  if (sa->sa_family == AF_INET) {
    const struct sockaddr_in *sin = (const struct sockaddr_in *)sa;
    lua_pushlstring(L, host, format_ipv4(&sin->sin_addr, host));
    lua_pushinteger(L, ntohs(sin->sin_port));
    return 2;
  }
  if (sa->sa_family == AF_INET6) {
    const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)sa;
    lua_pushstring(L, inet_ntop(AF_INET6, &sin6->sin6_addr, host, sizeof host));
    lua_pushinteger(L, ntohs(sin6->sin6_port));
    return 2;
  }
  if (sa->sa_family == AF_UNIX) {
    const struct sockaddr_un *sun = (const struct sockaddr_un *)sa;
    size_t off = offsetof(struct sockaddr_un, sun_path);
    lua_pushlstring(L, sun->sun_path, len > off ? strnlen(sun->sun_path, len - off) : 0);
    return 1;
  }
  lua_pushnil(L);
  return 1;
}

/* Reads the address arguments of a method at argidx: (host, port) for
   inet sockets, (path) for unix ones, checking their types as Lua
   arguments; text receives the printable form for error messages. */
int rv_getaddr(lua_State *L, rv_socket *s, int argidx, const char *op,
               rv_addr *out, char *text, size_t size) {
  if (s->family == AF_UNIX) {
    const char *path = luaL_checkstring(L, argidx);
    snprintf(text, size, "%s", path);
    return unixaddr(L, op, path, out);
  } else {
    const char *host = luaL_checkstring(L, argidx);
    lua_Integer port = luaL_checkinteger(L, argidx + 1);
    luaL_argcheck(L, port >= 0 && port <= 65535, argidx + 1,
                  "port out of range (0-65535)");
    snprintf(text, size, s->family == AF_INET6 && strchr(host, ':') ? "[%s]:%d" : "%s:%d",
             host, (int)port);
    return resolve(L, op, s->family, s->type, host, port, out);
  }
}

/* core.getaddrinfo(host) -> { { family = "inet" | "inet6", host = numeric
   address }, ... }: every stream address of a name, in the resolver's
   order (RFC 6724's, from /etc/gai.conf), without repeats.  reverb.connect
   tries them in turn, as LuaSocket's connect and nc do: "localhost" may be
   ::1 first, where the server listens only on 127.0.0.1. */
static int l_getaddrinfo(lua_State *L) {
  const char *host = luaL_checkstring(L, 1);
  struct addrinfo hints, *res = NULL;
  struct sockaddr_storage found[32];   /* more than any name has */
  socklen_t lens[32];
  int rc, n = 0;
  memset(&hints, 0, sizeof hints);
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  rc = getaddrinfo(host, NULL, &hints, &res);
  if (rc != 0) return rv_fail_gai(L, "getaddrinfo", rc, host);
  /* Copied out, repeats left behind, and the list freed before any Lua
     object is made: an allocation that raises must not leak it. */
  for (const struct addrinfo *ai = res; ai != NULL && n < 32; ai = ai->ai_next) {
    int dup = 0;
    if (ai->ai_family != AF_INET && ai->ai_family != AF_INET6) continue;
    for (int i = 0; i < n && !dup; i++)
      dup = lens[i] == ai->ai_addrlen && memcmp(&found[i], ai->ai_addr, lens[i]) == 0;
    if (dup || ai->ai_addrlen > sizeof found[n]) continue;
    memcpy(&found[n], ai->ai_addr, ai->ai_addrlen);
    lens[n++] = ai->ai_addrlen;
  }
  freeaddrinfo(res);
  lua_createtable(L, n, 0);
  for (int i = 0; i < n; i++) {
    const struct sockaddr *sa = (const struct sockaddr *)&found[i];
    lua_createtable(L, 0, 2);
    lua_pushstring(L, sa->sa_family == AF_INET ? "inet" : "inet6");
    lua_setfield(L, -2, "family");
    rv_push_addr(L, sa, lens[i]);   /* host, port (0: not asked for) */
    lua_pop(L, 1);
    lua_setfield(L, -2, "host");
    lua_rawseti(L, -2, i + 1);
  }
  return 1;
}

const luaL_Reg rv_address_funcs[] = {
  { "getaddrinfo", l_getaddrinfo },
  { NULL, NULL }
};
