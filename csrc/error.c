/*
 * error.c -- error objects: how a failing system call reaches Lua.
 *
 * A failure is a table { op, code, errno, message, address } sharing one
 * metatable, raised with lua_error.  Its __tostring gives
 * "connect 127.0.0.1:9: Connection refused (ECONNREFUSED)", which is also
 * what the standalone interpreter prints for an uncaught one.  The errno
 * names come from errnames.h, generated from the system's <errno.h> at
 * build time, so every errno the platform has gets its own name.
 */
#define _GNU_SOURCE   /* glibc's <netdb.h> hides EAI_NODATA and EAI_ADDRFAMILY without it */
#include <errno.h>
#include <netdb.h>
#include <string.h>

#include "reverb.h"

static const struct { const char *name; int code, alias; } errnames[] = {
#include "errnames.h"
  { NULL, 0, 0 }
};

const char *rv_errname(int err) {
  /* An error is named by its canonical name (EAGAIN), never an alias
     (EWOULDBLOCK), which only core.errno and core.error know. */
  for (int i = 0; errnames[i].name != NULL; i++)
    if (errnames[i].code == err && !errnames[i].alias) return errnames[i].name;
  return NULL;
}

static int errcode(const char *name) {
  for (int i = 0; errnames[i].name != NULL; i++)
    if (strcmp(errnames[i].name, name) == 0) return errnames[i].code;
  return 0;
}

static const struct { const char *name; int code; } gainames[] = {
  { "EAI_AGAIN", EAI_AGAIN },     { "EAI_BADFLAGS", EAI_BADFLAGS },
  { "EAI_FAIL", EAI_FAIL },       { "EAI_FAMILY", EAI_FAMILY },
  { "EAI_MEMORY", EAI_MEMORY },   { "EAI_NONAME", EAI_NONAME },
  { "EAI_SERVICE", EAI_SERVICE }, { "EAI_SOCKTYPE", EAI_SOCKTYPE },
  { "EAI_SYSTEM", EAI_SYSTEM },
#ifdef EAI_NODATA
  { "EAI_NODATA", EAI_NODATA },
#endif
#ifdef EAI_ADDRFAMILY
  { "EAI_ADDRFAMILY", EAI_ADDRFAMILY },
#endif
  { NULL, 0 }
};

/* Builds the error table on the stack.  Nothing here reads errno, so the
   caller's saved value is what ends up in the object. */
static void newerror(lua_State *L, const char *op, const char *code, int err,
                     const char *message, const char *address) {
  lua_createtable(L, 0, 5);
  lua_pushstring(L, op);
  lua_setfield(L, -2, "op");
  lua_pushstring(L, code);
  lua_setfield(L, -2, "code");
  if (err != 0) {
    lua_pushinteger(L, err);
    lua_setfield(L, -2, "errno");
  }
  lua_pushstring(L, message);
  lua_setfield(L, -2, "message");
  if (address != NULL) {
    lua_pushstring(L, address);
    lua_setfield(L, -2, "address");
  }
  luaL_setmetatable(L, RV_ERROR);
}

/* Pushes the error object of errno err, with message (NULL: strerror's). */
void rv_pusherror_msg(lua_State *L, const char *op, int err, const char *message,
                      const char *address) {
  const char *name = rv_errname(err);
  newerror(L, op, name ? name : "EUNKNOWN", err, message ? message : strerror(err), address);
}

int rv_fail_msg(lua_State *L, const char *op, int err, const char *message,
                const char *address) {
  rv_pusherror_msg(L, op, err, message, address);
  return lua_error(L);
}

void rv_pusherror(lua_State *L, const char *op, int err, const char *address) {
  rv_pusherror_msg(L, op, err, NULL, address);
}

int rv_fail(lua_State *L, const char *op, int err, const char *address) {
  rv_pusherror(L, op, err, address);
  return lua_error(L);
}

int rv_fail_gai(lua_State *L, const char *op, int gaierr, const char *address) {
  const char *name = "EAI_UNKNOWN";
  if (gaierr == EAI_SYSTEM) return rv_fail(L, op, errno, address);
  for (int i = 0; gainames[i].name != NULL; i++)
    if (gainames[i].code == gaierr) name = gainames[i].name;
  newerror(L, op, name, 0, gai_strerror(gaierr), address);
  return lua_error(L);
}

/* __tostring: "op address: message (CODE)"; works on any table with the
   metatable, including ones made from Lua with core.error(). */
static int error_tostring(lua_State *L) {
  luaL_Buffer b;
  luaL_buffinit(L, &b);
  lua_getfield(L, 1, "op");
  luaL_addvalue(&b);
  if (lua_getfield(L, 1, "address") == LUA_TSTRING) {
    luaL_addchar(&b, ' ');
    luaL_addvalue(&b);
  } else {
    lua_pop(L, 1);
  }
  luaL_addstring(&b, ": ");
  lua_getfield(L, 1, "message");
  luaL_addvalue(&b);
  if (lua_getfield(L, 1, "code") == LUA_TSTRING) {
    luaL_addstring(&b, " (");
    luaL_addvalue(&b);
    luaL_addchar(&b, ')');
  } else {
    lua_pop(L, 1);
  }
  luaL_pushresult(&b);
  return 1;
}

/* core.error(op, code, message [, address]) -> an error object, not raised.
   The Lua layers use it for their own failures (ETIMEDOUT, EMSGSIZE). */
/* The text of a getaddrinfo code by its name, as rv_fail_gai gives it;
   the name itself for one it does not know. */
static const char *gaitext(const char *name) {
  for (int i = 0; gainames[i].name != NULL; i++)
    if (strcmp(gainames[i].name, name) == 0) return gai_strerror(gainames[i].code);
  return name;
}

static int l_error(lua_State *L) {
  const char *op = luaL_checkstring(L, 1);
  const char *code = luaL_checkstring(L, 2);
  const char *message = luaL_optstring(L, 3, NULL);
  const char *address = luaL_optstring(L, 4, NULL);
  int err = errcode(code);
  if (message == NULL) message = err ? strerror(err) : gaitext(code);
  newerror(L, op, code, err, message, address);
  return 1;
}

/* core.iserror(v) -> true when v is a reverb error object. */
static int l_iserror(lua_State *L) {
  int is = 0;
  if (lua_getmetatable(L, 1)) {
    luaL_getmetatable(L, RV_ERROR);
    is = lua_rawequal(L, -1, -2);
  }
  lua_pushboolean(L, is);
  return 1;
}

/* core.errno: name -> number for every errno of the platform, aliases too. */
static void push_errno_table(lua_State *L) {
  lua_newtable(L);
  for (int i = 0; errnames[i].name != NULL; i++) {
    lua_pushinteger(L, errnames[i].code);
    lua_setfield(L, -2, errnames[i].name);
  }
}

void rv_error_init(lua_State *L) {
  luaL_newmetatable(L, RV_ERROR);
  lua_pushcfunction(L, error_tostring);
  lua_setfield(L, -2, "__tostring");
  lua_pop(L, 1);
  push_errno_table(L);
  lua_setfield(L, -2, "errno");
}

const luaL_Reg rv_error_funcs[] = {
  { "error", l_error },
  { "iserror", l_iserror },
  { NULL, NULL }
};
