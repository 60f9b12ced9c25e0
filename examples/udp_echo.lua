-- udp_echo.lua: a UDP echo server in blocking reverb.core calls, and its
-- client on reverb.udp, which can wait for the reply with a timeout.
--
-- Run:   bin/reverb run examples/udp_echo.lua [PORT]           (default 8080; 0: any)
-- then:  bin/reverb run examples/udp_echo.lua PORT "a message"
-- The server answers every datagram with the same bytes until interrupted
-- (Ctrl-C); the client gives up after 5 seconds without a reply.
local core = require "reverb.core"

local port = tonumber(arg and arg[1]) or 8080
local message = arg and arg[2]

if message then
  -- UDP has no connection to refuse: without a server the reply never
  -- comes, so the client waits for it 5 seconds at most (on the loop)
  local reverb = require "reverb"
  local u <close> = reverb.udp():settimeout(5)
  u:sendto(message, "127.0.0.1", port)
  print("Server replied: " .. u:recvfrom())
  return
end

local s = core.socket("inet", "dgram")
s:bind("127.0.0.1", port)
print("UDP echo listening on port " .. select(2, s:getsockname()) .. "...")
io.stdout:flush()
while true do
  local data, host, from = s:recvfrom()
  print("Received " .. #data .. " bytes from " .. host .. ":" .. from)
  io.stdout:flush()
  s:sendto(data, host, from)
end
