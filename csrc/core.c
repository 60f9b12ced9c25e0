/*
 * core.c -- luaopen_reverb_core: assembles the module from the tables
 * the other files export.  This is the only symbol the library exports.
 */
#include "reverb.h"

/* The socket methods, each with the socket tag as upvalue 1 (so rv_check
   is a pointer comparison, not a registry lookup by name); the data
   methods also get the receive scratch buffer as upvalue 2. */
static void setmethods(lua_State *L) {
  luaL_getmetatable(L, RV_SOCKET);
  lua_newtable(L);
  rv_push_sockettag(L);
  luaL_setfuncs(L, rv_socket_methods, 1);
  rv_push_sockettag(L);
  luaL_setfuncs(L, rv_option_methods, 1);
  rv_push_sockettag(L);
  rv_io_init(L);
  luaL_setfuncs(L, rv_io_methods, 2);
  lua_setfield(L, -2, "__index");
  lua_pop(L, 1);
}

int luaopen_reverb_core(lua_State *L) {
  luaL_checkversion(L);
  rv_socket_init(L);
  rv_poller_init(L);
  setmethods(L);
  lua_newtable(L);
  luaL_setfuncs(L, rv_socket_funcs, 0);
  luaL_setfuncs(L, rv_address_funcs, 0);
  luaL_setfuncs(L, rv_error_funcs, 0);
  luaL_setfuncs(L, rv_poller_funcs, 0);
  luaL_setfuncs(L, rv_sched_funcs, 0);
  luaL_setfuncs(L, rv_signal_funcs, 0);
  luaL_setfuncs(L, rv_process_funcs, 0);
  rv_push_sockettag(L);
  rv_io_init(L);
  luaL_setfuncs(L, rv_io_funcs, 2);
  rv_error_init(L);                    /* also sets core.errno */
  /* core.methods: the socket methods, so Lua layers can hold them as
     locals on their hot paths. */
  luaL_getmetatable(L, RV_SOCKET);
  lua_getfield(L, -1, "__index");
  lua_setfield(L, -3, "methods");
  lua_pop(L, 1);
  lua_pushliteral(L, "0.1.0");
  lua_setfield(L, -2, "version");
  return 1;
}
