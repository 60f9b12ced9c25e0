--- reverb.cli_connect: `reverb connect` (an interactive client, like nc)
-- and `reverb send` (the tutorial's client: a message, then the reply).
--
-- connect runs two tasks, stdin to the socket and the socket to stdout,
-- so bytes flow both ways at once. End of stdin half-closes; the peer
-- closing ends the command. A failure in either direction ends it with
-- one line and status 1.

local reverb = require "reverb"
local core = require "reverb.core"
local cli = require "reverb.cli"
local stdio = require "reverb.stdio"
local ipv6 = require("reverb.address").ipv6

-- How a peer that closed or reset shows in a write (and in the shutdown
-- after it: ENOTCONN).
local PEER_GONE = { EPIPE = true, ECONNRESET = true, ENOTCONN = true }

local ESC = { ["\r"] = "\\r", ["\n"] = "\\n", ["\t"] = "\\t", ["\\"] = "\\\\" }

local function escape(s)
  return (s:gsub("[%z\1-\31\\\127-\255]", function(c)
    return ESC[c] or string.format("\\x%02x", c:byte())
  end))
end

-- "> 00000000 hello\r\n": direction, offset of the chunk's first byte in
-- that direction, the bytes escaped.
local function tracer(enabled)
  if not enabled then return function() end end
  local offsets = { [">"] = 0, ["<"] = 0 }
  return function(dir, data)
    io.stderr:write(string.format("%s %08x %s\n", dir, offsets[dir], escape(data)))
    offsets[dir] = offsets[dir] + #data
  end
end

local function target(cmd, o, pos)
  if o.unix then return { unix = cli.path(cmd, o.unix) }, o.unix end
  if not pos[1] or not pos[2] then cli.usage(cmd, "needs HOST and PORT") end
  return pos[1], cli.port(cmd, pos[2])
end

-- Copies stdin, chunk by chunk, to put(data) until the end of input.
local function pump_stdin(put)
  while true do
    local data = stdio.read()
    if not data then return end
    put(data)
  end
end

-- Runs the given task bodies until the loop is idle or one of them calls
-- finish(); the first error any of them raised is raised here.
local function run_tasks(...)
  local failed
  for _, body in ipairs { ... } do
    reverb.spawn(function()
      local ok, err = pcall(body)
      if not ok and not failed then
        failed = err
        reverb.stop()
      end
    end)
  end
  reverb.run()
  if failed then error(failed, 0) end
end

-- UDP has no end of stream: after the end of stdin, replies still in
-- flight get LINGER seconds, then the socket is closed, which ends the
-- reader wherever it waits.
local LINGER = 0.5

-- The largest UDP payload over IPv4: stdin is sent in datagrams of at
-- most this size.
local MAX_DATAGRAM = 65507

local function connect_udp(host, port, trace)
  -- the family of the host, as TCP's connect picks it
  local u = reverb.udp { family = ipv6(host) and "inet6" or "inet" }
  run_tasks(function()
    pump_stdin(function(data)
      for i = 1, #data, MAX_DATAGRAM do
        local d = data:sub(i, i + MAX_DATAGRAM - 1)
        trace(">", d)
        u:sendto(d, host, port)
      end
    end)
    reverb.sleep(LINGER)
    u:close()
  end, function()
    while true do
      local ok, data = pcall(u.recvfrom, u)
      if not ok then
        if u.closed then break end
        error(data, 0)
      end
      trace("<", data)
      stdio.write(data)
    end
  end)
  return 0
end

-- The options of each command (the help spec checks each is documented).
local SPECS = {
  connect = { values = { ["--unix"] = "unix" },
              flags = { ["--udp"] = "udp", ["--trace"] = "trace" } },
  send = { values = { ["--unix"] = "unix", ["--timeout"] = "timeout" } },
}

local function connect(args)
  local o, pos = cli.parse("connect", args, SPECS.connect)
  if o.help then
    io.stdout:write(cli.HELP.connect)
    return 0
  end
  if o.udp and o.unix then cli.usage("connect", "--udp goes with HOST PORT, not --unix") end
  local host, port = target("connect", o, pos)
  local trace = tracer(o.trace)
  if o.udp then return connect_udp(host, port, trace) end
  local conn = reverb.connect(host, port)
  run_tasks(function()
    pump_stdin(function(data)
      trace(">", data)
      conn:write(data)
    end)
    if not conn.closed then conn:shutdown("write") end
  end, function()
    while true do
      local data = conn:read_some()
      if not data then break end
      trace("<", data)
      stdio.write(data)
    end
    reverb.stop()   -- the peer closed: done, even if stdin is still open
  end)
  conn:close()
  return 0
end

local function send(args)
  local o, pos = cli.parse("send", args, SPECS.send)
  if o.help then
    io.stdout:write(cli.HELP.send)
    return 0
  end
  local host, port = target("send", o, pos)
  local first = o.unix and 1 or 3
  local message = pos[first] and table.concat(pos, " ", first) .. "\n"
  -- checked before connecting, and bounding the connect too
  local timeout = o.timeout and cli.number("send", "--timeout", o.timeout) or 5
  local opts = type(host) == "table" and host or { host = host, port = port }
  opts.timeout = timeout
  local conn <close> = reverb.connect(opts)
  -- Writing and reading at once: a reply longer than the socket buffers
  -- must be read while the rest of stdin still goes out. A peer that
  -- stops reading and answers early (a server's "413 too big", then
  -- close) makes the writes fail: its reply is still printed, then that
  -- failure is reported. The command ends when both directions have, or
  -- S seconds after the reply ended while stdin still runs (the peer may
  -- read on after its half-close, or be gone: only a write would tell),
  -- or at once when the peer resets.
  local cut_off, reset, sent_at
  run_tasks(function()
    local ok, err = pcall(function()
      if message then conn:write(message) else pump_stdin(function(d) conn:write(d) end) end
      conn:shutdown("write")
    end)
    if not ok then
      if not (core.iserror(err) and PEER_GONE[err.code]) then error(err, 0) end
      cut_off = err
    end
    sent_at = core.now()
  end, function()
    while true do
      local ok, data = pcall(conn.read_some, conn)
      if ok then
        if not data then break end   -- the reply is over; the writes may not be
        stdio.write(data)
      elseif core.iserror(data) and PEER_GONE[data.code] then
        reset = data   -- reported below (the writes' own failure first)
        return reverb.stop()
      elseif not (core.iserror(data) and data.code == "ETIMEDOUT") then
        error(data, 0)
      elseif sent_at then
        -- silent for S seconds once all was sent: done (a wait that began
        -- before then gets the rest of its S)
        local left = sent_at + timeout - core.now()
        if left <= 0 then break end
        conn:settimeout(left)
      end
    end
    -- The reply ended before the writes did: they go on while bytes move
    -- (a server may read on after its half-close); S seconds without one
    -- going out, and the peer is taken for gone.
    local _, last = conn:getstats()
    local give_up = core.now() + timeout
    while not sent_at and core.now() < give_up do
      reverb.sleep(0.01)
      local _, out = conn:getstats()
      if out ~= last then last, give_up = out, core.now() + timeout end
    end
    if not sent_at then reverb.stop() end
  end)
  if cut_off or reset then error(cut_off or reset, 0) end
  return 0
end

return { connect = connect, send = send, escape = escape, SPECS = SPECS }
