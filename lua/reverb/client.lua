--- reverb.client: reverb.connect, a stream to a server.
--
-- The socket is non-blocking from the start; the connect waits on the loop
-- (so it works in tasks and at top level) and its outcome is read from
-- SO_ERROR. A failure closes the socket before raising: nothing leaks.

local core = require "reverb.core"
local loop = require "reverb.loop"
local stream = require "reverb.stream"
local address = require "reverb.address"
local hostport, ipv6 = address.hostport, address.ipv6

local function fail(sock, err)
  sock:close()
  error(err, 0)
end

-- One connect of a new socket of the family to host (a numeric address,
-- or a path) and port, within t seconds (nil: no limit); the stream, or
-- the socket closed and the failure raised.
local function attempt(family, host, port, peer, opts, t)
  local sock = core.socket(family)
  sock:setblocking(false)
  local ok, done = pcall(sock.connect, sock, host, port)
  if not ok then fail(sock, done) end
  local made, conn = pcall(stream.new, sock, peer, opts)
  if not made then fail(sock, conn) end
  if not done then
    local r = loop.wait(conn, "write", t and core.now() + t)
    if r ~= true then
      conn:close()
      error(core.error("connect", "ETIMEDOUT", "timed out", peer))
    end
    local err = sock:getoption("error")
    if err then
      err.address = peer
      conn:close()
      error(err)
    end
  end
  if opts.nodelay then
    local set, err = pcall(sock.setoption, sock, "nodelay", true)   -- not on a unix socket
    if not set then
      conn:close()
      error(err, 0)
    end
  end
  return conn
end

--- connect(host, port [, opts]) or connect{host=, port=} or connect{unix=path}
-- opts: timeout (seconds, for the connect and every later wait), nodelay,
-- max_line.
local function connect(host, port, opts)
  local argn = 3   -- where opts came: connect(host, port, opts) or connect(opts)
  if type(host) == "table" then
    opts, argn = host, 1
    host, port = opts.host, opts.port
  end
  if opts ~= nil and type(opts) ~= "table" then
    error("bad argument #3 to 'connect' (options table expected, got " .. type(opts) .. ")", 2)
  end
  opts = opts or {}
  local t, max_line = opts.timeout, opts.max_line
  if t ~= nil and (type(t) ~= "number" or t ~= t or t < 0) then
    error(("bad argument #%d to 'connect' (timeout: non-negative number expected)"):format(argn), 2)
  end
  if max_line ~= nil and (math.type(max_line) ~= "integer" or max_line < 1) then
    error(("bad argument #%d to 'connect' (max_line: positive integer expected)"):format(argn), 2)
  end
  if opts.unix ~= nil and (type(opts.unix) ~= "string" or opts.unix == "") then
    error(("bad argument #%d to 'connect' (unix: non-empty path expected)"):format(argn), 2)
  end
  if opts.unix then return attempt("unix", opts.unix, nil, opts.unix, opts, t) end
  if type(host) ~= "string" then
    error("bad argument #1 to 'connect' (string expected, got " .. type(host) .. ")", 2)
  end
  local n = address.port(port)   -- "8080" too, as serve and bind take it
  if not n then address.bad_port("connect", 2, port) end
  local peer = hostport(host, n)
  if ipv6(host) then return attempt("inet6", host, n, peer, opts, t) end
  if host:find("^[%d.]+$") or host == "*" then return attempt("inet", host, n, peer, opts, t) end
  -- A name: each of its addresses in turn, within one timeout, until one
  -- answers; the last failure if none does.
  local ok, addrs = pcall(core.getaddrinfo, host)
  if not ok then
    if core.iserror(addrs) then addrs.op, addrs.address = "connect", peer end
    error(addrs, 0)
  end
  local deadline, err = t and core.now() + t
  for _, a in ipairs(addrs) do
    local left = deadline and math.max(deadline - core.now(), 0)
    local made, conn = pcall(attempt, a.family, a.host, n, peer, opts, left)
    if made then return conn end
    err = conn
    if not core.iserror(err) then break end   -- (not the network's doing)
  end
  error(err, 0)
end

return { connect = connect }
