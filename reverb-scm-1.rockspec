-- luarocks --lua-version 5.4 make            (from a checkout; offline)
-- luarocks --lua-version 5.4 make --tree DIR (into a scratch tree)
rockspec_format = "3.0"
package = "reverb"
version = "scm-1"
source = {
   url = "git+file://.",   -- `luarocks make` builds the checkout it runs in
}
description = {
   summary = "A Lua 5.4 networking toolkit with a C core",
   detailed = [[
      reverb.core binds socket, bind, listen, accept, connect, send, recv and
      friends faithfully, raising error objects with errno names. On top: an
      epoll loop with a coroutine per client, buffered streams, timeouts,
      servers, clients, UDP and unix sockets, and the `reverb` command (echo
      server, client, REPL that keeps serving).
   ]],
   license = "MIT",
}
dependencies = {
   "lua >= 5.4, < 5.5",
}
supported_platforms = { "linux" }
build = {
   type = "make",
   build_target = "build",
   build_variables = {
      CFLAGS = "$(CFLAGS)",
      LIBFLAG = "$(LIBFLAG)",
      LUA_INCDIR = "$(LUA_INCDIR)",
      LUA = "$(LUA)",
   },
   install_target = "install",
   install_variables = {
      LUA_LIBDIR = "$(LIBDIR)",
      LUA_SHAREDIR = "$(LUADIR)",
      BINDIR = "$(BINDIR)",
      LUA = "$(LUA)",
   },
}
