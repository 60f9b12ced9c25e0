--- reverb.udp: datagram sockets on the loop.
--
-- Each call tries the system call first and waits on the loop only when
-- it would block, so sendto/recvfrom work in tasks and at top level.

local core = require "reverb.core"
local loop = require "reverb.loop"
local address = require "reverb.address"
local ipv6, isport, bad_port = address.ipv6, address.port, address.bad_port

local methods = core.methods
local sendto, recvfrom = methods.sendto, methods.recvfrom

local Udp = {}
Udp.__index = Udp

local function timed_out(op)
  error(core.error(op, "ETIMEDOUT", "timed out"))
end

local function await(self, field, op, deadline)
  local t = self.timeout
  local r = loop.wait(self, field, deadline or (t and core.now() + t))
  if r == true then return end
  if r == false then timed_out(op) end
  error(core.error(op, "EBADF", "socket is closed"))
end

--- Sends one datagram; returns the bytes sent.
function Udp:sendto(data, host, port)
  -- checked here, numbered as the method call counts (core's sendto
  -- counts the socket too)
  local t = type(data)
  if t ~= "string" and t ~= "number" then
    error("bad argument #1 to 'sendto' (string expected, got " .. t .. ")", 2)
  end
  if type(host) ~= "string" then
    error("bad argument #2 to 'sendto' (" .. (self.unix and "path" or "host") ..
      " expected, got " .. type(host) .. ")", 2)
  end
  if not self.unix and not isport(port) then bad_port("sendto", 3, port) end
  local deadline, pause = self.timeout and core.now() + self.timeout, nil
  while true do
    local n = sendto(self.socket, data, host, port)
    if n then return n end
    if not pause then
      await(self, "write", "sendto", deadline)
      pause = 0.001
    else
      -- Still no room after epoll said "writable": an unconnected unix
      -- datagram socket is writable to epoll while its receiver's queue
      -- is full, so waiting on it again would spin. Retry after a pause
      -- that doubles, up to 50 ms.
      if deadline and core.now() >= deadline then timed_out("sendto") end
      loop.sleep(pause)
      pause = math.min(pause * 2, 0.05)
    end
  end
end

--- Receives one datagram: data, host, port.
function Udp:recvfrom(max)
  if max ~= nil then   -- checked here: numbered as the method call counts
    local n = math.tointeger(max)
    if not n or n < 1 then
      error("bad argument #1 to 'recvfrom' (size must be positive)", 2)
    end
  end
  while true do
    local data, host, port = recvfrom(self.socket, max)
    if data then return data, host, port end
    await(self, "read", "recvfrom")
  end
end

--- Each later wait raises ETIMEDOUT after this many seconds; nil: none.
function Udp:settimeout(seconds)
  if seconds ~= nil and (type(seconds) ~= "number" or seconds ~= seconds or seconds < 0) then
    error("bad argument #1 to 'settimeout' (non-negative number or nil expected)", 2)
  end
  self.timeout = seconds
  return self
end

function Udp:close()
  -- a unix socket's file goes with it, as a server's does
  if loop.close(self) and self.unix then os.remove(self.unix) end
  return true
end
Udp.__close = Udp.close

local FAMILIES = { inet = true, inet6 = true }

--- udp([host, port]) or udp{host=, port=, unix=path, family=}: bound when
-- given (port 0: any free port; the host, by default, the family's
-- loopback). The family is the host's ("inet6" for an address with
-- colons), else opts.family, else "inet": an unbound socket that will
-- send to IPv6 addresses needs family = "inet6".
local function udp(host, port)
  local opts = type(host) == "table" and host or { host = host, port = port }
  for _, k in ipairs { "host", "unix", "family" } do
    local t = type(opts[k])
    if t ~= "nil" and t ~= "string" then
      error("bad argument #1 to 'udp' (" .. k .. ": string expected, got " .. t .. ")", 2)
    end
  end
  if opts.unix == "" then
    error("bad argument #1 to 'udp' (unix: non-empty path expected)", 2)
  end
  if opts.port ~= nil and not isport(opts.port) then
    bad_port("udp", type(host) == "table" and 1 or 2, opts.port)
  end
  if opts.family and not FAMILIES[opts.family] then
    error("bad argument #1 to 'udp' (family: \"inet\" or \"inet6\" expected, got \"" ..
      opts.family .. "\")", 2)
  end
  local family = opts.unix and "unix"
    or (opts.host and ipv6(opts.host) and "inet6") or opts.family or "inet"
  local sock = core.socket(family, "dgram")
  local ok, err = pcall(function()
    if opts.unix then
      sock:bind(opts.unix)
    elseif opts.host or opts.port then
      sock:bind(opts.host or (family == "inet6" and "::1" or "127.0.0.1"), opts.port or 0)
    end
    sock:setblocking(false)
  end)
  if not ok then
    sock:close()
    error(err, 0)
  end
  local self = setmetatable({ socket = sock, unix = opts.unix }, Udp)
  loop.watch(self, sock:fileno(), "edge")
  if opts.unix or opts.host or opts.port then
    self.host, self.port = sock:getsockname()
  end
  return self
end

return { udp = udp }
