-- udp_echo.lua: a UDP echo server and client in blocking reverb.core calls.
--
-- Run:   bin/reverb run examples/udp_echo.lua [PORT]           (default 8080; 0: any)
-- then:  bin/reverb run examples/udp_echo.lua PORT "a message"
-- The server answers every datagram with the same bytes until interrupted.
local core = require "reverb.core"

local port = tonumber(arg and arg[1]) or 8080
local message = arg and arg[2]

if message then
  local s = core.socket("inet", "dgram")
  s:sendto(message, "127.0.0.1", port)
  print("Server replied: " .. s:recvfrom())
  s:close()
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
