--- reverb.server: reverb.serve, a listener whose every client gets its own
-- task, with the live connections kept in srv:clients().
--
-- The accept task accepts until the kernel says "would block", then waits
-- for the listener's next edge. When descriptors run out (EMFILE, ENFILE)
-- it pauses briefly and tries again: pending clients wait in the backlog
-- and nobody already connected is dropped. A handler that returns or
-- raises has its connection closed and removed from the list; a raise is
-- logged with the peer's address and the server goes on. A client that
-- resets or vanishes (ECONNRESET, EPIPE) ends its handler quietly: that is
-- how connections end, not a failure.

local core = require "reverb.core"
local loop = require "reverb.loop"
local stream = require "reverb.stream"
local address = require "reverb.address"
local hostport, ipv6 = address.hostport, address.ipv6

local accept = core.methods.accept
local traceback = debug.traceback

local EXHAUSTED = { EMFILE = true, ENFILE = true, ENOBUFS = true, ENOMEM = true }
-- What accept(2) may report of a connection that failed while it waited
-- in the queue (Linux passes its network errors on): try the next one.
-- (ECONNABORTED, the usual one, core's accept retries itself.)
local ACCEPT_AGAIN = {
  EPROTO = true, ENETDOWN = true, ENOPROTOOPT = true, EHOSTDOWN = true,
  ENONET = true, EHOSTUNREACH = true, EOPNOTSUPP = true, ENETUNREACH = true,
}
-- The client went away: how connections end, not a failure worth a line.
local PEER_GONE = { ECONNRESET = true, EPIPE = true }
local PAUSE = 0.05   -- seconds accepting stops when descriptors run out

local Server = {}
Server.__index = Server

local function default_log(msg)
  io.stderr:write("reverb: ", msg, "\n")
end

-- Keeps the error and, for Lua errors (bugs), where they happened.
local function capture(e)
  if core.iserror(e) then return e end
  return traceback(tostring(e), 2)
end

-- The client list is a table keyed by connection, which does not shrink
-- by itself: when few clients are left (loop.outgrown), it is rebuilt at
-- the size of what is left.
local function add_client(srv, conn)
  srv._clients[conn] = true
  srv._nclients = srv._nclients + 1
  if srv._nclients > srv._most then srv._most = srv._nclients end
end

local function drop_client(srv, conn)
  srv._clients[conn] = nil
  local n = srv._nclients - 1
  srv._nclients = n
  if loop.outgrown(n, srv._most) then
    local t = {}
    for c in pairs(srv._clients) do t[c] = true end
    srv._clients, srv._most = t, n
  end
end

-- on_open, then the handler, as a tail call: its frame replaces this
-- one (see loop.lua's run: frames under a handler cost stack).
local function open_and_handle(srv, conn)
  if srv.on_open then srv.on_open(conn) end
  return srv.handler(conn, srv)
end

-- Drops and closes a client's connection, then runs on_close: a hook
-- that raises is logged like a handler (it must not cost the handler's
-- own error its log line, nor bypass srv.log).
local function clean_up(srv, conn)
  drop_client(srv, conn)
  conn:close()
  if srv.on_close then
    local ok, err = xpcall(srv.on_close, capture, conn)
    if not ok then srv.log(conn.peer .. ": on_close: " .. tostring(err)) end
  end
end

-- Cleans up when the task's coroutine is closed under the handler: the
-- loop closes a task that yields outside reverb (coroutine.yield()), and
-- the connection would stay open and listed.
local Guard = { __close = function(g) if g[1] then clean_up(g[1], g[2]) end end }

-- The task of one client: on_open and the handler, then the clean-up,
-- which runs whatever the handler (or a hook) did.
local function client_main(srv, conn)
  local guard <close> = setmetatable({ srv, conn }, Guard)
  local ok, err = xpcall(open_and_handle, capture, srv, conn)
  local closed_under_it = conn.closed
  guard[1] = nil
  clean_up(srv, conn)
  if ok then return end
  -- How a connection ends is not worth a line: the peer went, the idle
  -- timeout struck, or the connection was closed under a waiting call (by
  -- another task, the command's signal handling, the handler itself). A
  -- bug after the handler closed its connection still is.
  if core.iserror(err) and (PEER_GONE[err.code] or
                            (err.code == "ETIMEDOUT" and srv.idle_timeout) or
                            (closed_under_it and err.code == "EBADF")) then
    return
  end
  srv.log(conn.peer .. ": " .. tostring(err))
end

local function start_client(srv, c, host, port)
  local peer
  if port then
    peer = hostport(host, port)
  else
    peer = srv.unix
  end
  local conn = stream.new(c, peer, srv.stream_opts, true)
  conn:settimeout(srv.idle_timeout)
  loop.spawn_pooled(client_main, srv, conn)
  add_client(srv, conn)   -- (the task runs on the loop's next turn)
end

local function accept_batch(srv)
  local sock = srv.socket
  while not srv.closed do
    local c, host, port = accept(sock)
    if c then
      local ok, err = pcall(start_client, srv, c, host, port)
      if not ok then   -- (epoll_ctl's ENOSPC, out of memory): c goes now, not at a GC
        c:close()      -- (and with it its stream, if it had one)
        error(err, 0)
      end
    elseif loop.wait(srv, "read") ~= true then
      return
    end
  end
end

local function accept_loop(srv)
  while not srv.closed do
    local ok, err = pcall(accept_batch, srv)
    if not ok and not srv.closed and core.iserror(err) and ACCEPT_AGAIN[err.code] then
      -- a connection that failed while queued: on to the next at once
      srv.paused = nil
    elseif not ok and not srv.closed then
      if not (core.iserror(err) and EXHAUSTED[err.code]) then
        srv.log("accept: " .. tostring(err))
      elseif not srv.paused then
        -- Out of descriptors is usually the process's limit, often a
        -- shell's 1,024: the line says which, for whoever raises it.
        local ok_limit, limit = pcall(core.getrlimit, "nofile")
        local why = err.code == "EMFILE" and ok_limit and
          " (the open-files limit is " .. limit .. ": ulimit -n, up to ulimit -Hn)" or ""
        srv.log(tostring(err) .. ": accepting paused until descriptors free up" .. why)
      end
      srv.paused = true
      loop.sleep(PAUSE)
    elseif ok then
      srv.paused = nil
    end
  end
end

--- The live connections, as a list.
function Server:clients()
  local list = {}
  for conn in pairs(self._clients) do list[#list + 1] = conn end
  return list
end

--- Stops accepting; live clients go on.
function Server:close()
  if loop.close(self) and self.unix then os.remove(self.unix) end
  return true
end
Server.__close = Server.close

-- Whether path is a socket file: opening one fails with ENXIO, where a
-- regular file or a directory opens.
local function is_socket_file(path)
  local f, _, code = io.open(path, "r")
  if f then f:close() end
  return code == core.errno.ENXIO
end

-- Binds a unix stream socket to path. A socket file left there by a
-- server that died without removing it (SIGKILL) refuses connections: it
-- is removed and the bind tried again. One that accepts them is a live
-- server's, and anything that is not a socket is never removed.
local function bind_unix(sock, path)
  local ok, err = pcall(sock.bind, sock, path)
  if ok then return end
  if core.iserror(err) and err.code == "EADDRINUSE" and is_socket_file(path) then
    local probe <close> = core.socket("unix")
    local live, perr = pcall(probe.connect, probe, path)
    if not live and core.iserror(perr) and perr.code == "ECONNREFUSED" then
      os.remove(path)
      return sock:bind(path)
    end
  end
  error(err, 0)
end

local function listen(opts)
  local family = opts.unix and "unix"
    or (ipv6(opts.host) and "inet6") or "inet"
  local sock = core.socket(family)
  local ok, err = pcall(function()
    if opts.unix then
      bind_unix(sock, opts.unix)
    else
      sock:setoption("reuseaddr", true)
      if opts.reuseport then sock:setoption("reuseport", true) end
      sock:bind(opts.host, opts.port)
    end
    sock:listen(opts.backlog)
    sock:setblocking(false)
  end)
  if not ok then
    sock:close()
    error(err, 0)
  end
  return sock
end

-- What each option must be, checked up front: a wrong one would fail
-- deep inside (indexing a number) or, for a hook, only when a client came.
local function is_string(v) return type(v) == "string" end
local function is_function(v) return type(v) == "function" end
local OPTIONS = {   -- option -> its test, and what the test wants (for the message)
  host = { is_string, "string" },
  unix = { function(v) return is_string(v) and v ~= "" end, "non-empty path" },
  port = { function(v) return address.port(v) ~= nil end, "port 0-65535" },   -- (port = arg[1])
  backlog = { function(v) return math.type(v) == "integer" end, "integer" },
  idle_timeout = { function(v) return type(v) == "number" and v >= 0 end, "non-negative number" },
  max_line = { function(v) return math.type(v) == "integer" and v >= 1 end, "positive integer" },
  log = { is_function, "function" },
  on_open = { is_function, "function" },
  on_close = { is_function, "function" },
}

-- The first option that is wrong, described; nil when all are fine.
local function check_options(opts)
  for k, c in pairs(OPTIONS) do
    local v = opts[k]
    if v ~= nil and not c[1](v) then
      -- a wrong type by its name, as Lua says it; a wrong value by itself
      local got = type(v)
      if c[2] ~= "string" and c[2] ~= "function" then
        if got == "number" then got = v elseif got == "string" then got = ("%q"):format(v) end
      end
      return ("%s: %s expected, got %s"):format(k, c[2], got)
    end
  end
end

--- serve(port_or_opts, handler): handler(conn, srv) runs in its own task
-- for each client. opts: host ("127.0.0.1"), port (0), unix, backlog,
-- reuseport, idle_timeout, max_line, log (function(msg)), on_open and
-- on_close (function(conn)).
local function serve(opts, handler)
  if type(opts) == "number" then opts = { port = opts } end
  if type(opts) ~= "table" then
    error("bad argument #1 to 'serve' (port or options expected, got " .. type(opts) .. ")", 2)
  end
  if type(handler) ~= "function" then
    error("bad argument #2 to 'serve' (function expected, got " .. type(handler) .. ")", 2)
  end
  local bad = check_options(opts)
  if bad then error("bad argument #1 to 'serve' (" .. bad .. ")", 2) end
  opts = setmetatable({ host = opts.host or "127.0.0.1", port = opts.port or 0 },
                      { __index = opts })
  local sock = listen(opts)
  local srv = setmetatable({
    socket = sock, handler = handler, _clients = {}, _nclients = 0, _most = 0,
    stream_opts = opts.max_line and { max_line = opts.max_line } or false,
    unix = opts.unix, idle_timeout = opts.idle_timeout,
    log = opts.log or default_log, on_open = opts.on_open, on_close = opts.on_close,
  }, Server)
  srv.host, srv.port = sock:getsockname()
  loop.watch(srv, sock:fileno(), "edge")
  srv.task = loop.spawn(accept_loop, srv)
  return srv
end

return { serve = serve, Server = Server }
