-- echo_client.lua: sends each argument as a line to an echo server and
-- prints each reply: the tutorial's client on reverb streams.
--
-- Run:   bin/reverb run examples/echo_client.lua [PORT] [MESSAGE...]
--        (default port 8080, default message "Hello, Server!")
local reverb = require "reverb"

local port = tonumber(arg and arg[1]) or 8080
local messages = { table.unpack(arg or {}, 2) }
if #messages == 0 then messages = { "Hello, Server!" } end

local conn <close> = reverb.connect("127.0.0.1", port, { timeout = 10 })
for _, message in ipairs(messages) do
  conn:write(message, "\n")
  local reply = conn:read_line()
  if not reply then   -- the server closed without answering
    print("Server closed the connection")
    break
  end
  print("Server replied: " .. reply)
end
