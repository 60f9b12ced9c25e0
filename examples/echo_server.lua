-- echo_server.lua: the tutorial's multi-client echo server, the reverb way:
-- a coroutine per client instead of a thread, and the client list kept by
-- reverb (srv:clients()) instead of a vector behind a mutex. Joins and
-- leaves are logged with the clients still connected: their addresses
-- while there are a few, their number beyond that (a line per join that
-- listed 5,000 clients would be 80 KB).
--
-- Run:   bin/reverb run examples/echo_server.lua [PORT]     (default 8080; 0: any free port)
-- Try:   nc 127.0.0.1 8080      (from several terminals at once)
local reverb = require "reverb"

local port = tonumber(arg and arg[1]) or 8080

local LISTED = 8   -- at most this many addresses in a join or leave line

local function names(srv)
  local clients = srv:clients()
  if #clients > LISTED then return #clients .. " clients" end
  local peers = {}
  for i, c in ipairs(clients) do peers[i] = c.peer end
  table.sort(peers)
  return table.concat(peers, ", ")
end

local srv
srv = reverb.serve({ port = port, host = "127.0.0.1",
  on_open = function(conn)
    print(conn.peer .. " joined; connected: " .. names(srv))
    io.stdout:flush()
  end,
  on_close = function(conn)
    print(conn.peer .. " left; connected: " .. names(srv))
    io.stdout:flush()
  end,
}, function(conn)
  -- Echo each chunk as it arrives: binary-safe, no line limit.
  while true do
    local data = conn:read_some()
    if not data then return end
    conn:write(data)
  end
end)

print("Server is listening on port " .. srv.port .. "...")
io.stdout:flush()
reverb.on_signal("INT", function() srv:close() reverb.stop() end)
reverb.on_signal("TERM", function() srv:close() reverb.stop() end)
reverb.run()
