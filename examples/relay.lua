-- relay.lua: a TCP relay, what `socat TCP-LISTEN:8000,fork TCP:HOST:PORT`
-- is used for. Each client gets its own connection to the target, and
-- conn:pipe carries the bytes both ways: client to target in a task of
-- its own, target to client in the handler. When one side stops sending,
-- the relay passes that on as a half-close, so a client that shuts its
-- write side still gets the whole reply; when the target is done, so is
-- the client's connection (as with socat).
--
-- Run:   bin/reverb run examples/relay.lua LISTEN_PORT TARGET_HOST TARGET_PORT
--        (LISTEN_PORT 0: any free port)
-- Try:   bin/reverb serve 9000      (an echo server as the target), then
--        bin/reverb run examples/relay.lua 8000 127.0.0.1 9000
--        printf 'hello\n' | nc -N 127.0.0.1 8000       --> hello
local reverb = require "reverb"

local listen_port = tonumber(arg and arg[1])
local target_host = arg and arg[2]
local target_port = tonumber(arg and arg[3])
if not (listen_port and target_host and target_port) then
  io.stderr:write("usage: reverb run examples/relay.lua LISTEN_PORT TARGET_HOST TARGET_PORT\n")
  os.exit(2)
end

-- One direction: everything from src to dst until src ends, then a
-- half-close of dst. An error (a peer that reset, a connection closed
-- under it) ends it the same way.
local function forward(src, dst)
  pcall(src.pipe, src, dst)
  pcall(dst.shutdown, dst, "write")
end

local function relay(conn)
  -- A target that refuses is logged by the server, and the client dropped.
  local upstream <close> = reverb.connect(target_host, target_port)
  reverb.spawn(forward, conn, upstream)
  -- Returning closes both, which ends the task above if it still runs.
  forward(upstream, conn)
end

local srv = reverb.serve({ port = listen_port, host = "127.0.0.1" }, relay)

print("relay listening on " .. srv.host .. ":" .. srv.port
      .. " -> " .. target_host .. ":" .. target_port)
io.stdout:flush()
reverb.on_signal("INT", function() srv:close() reverb.stop() end)
reverb.on_signal("TERM", function() srv:close() reverb.stop() end)
reverb.run()
