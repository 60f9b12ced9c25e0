-- chat.lua: every line a client sends goes to all the other clients, with
-- join and leave notices. The tutorial's client list, disconnect handling
-- and synchronisation, the coroutine way: one task per client, and no
-- mutex, because tasks only switch where they wait.
--
-- Run:   bin/reverb run examples/chat.lua [PORT]      (default 8080; 0: any free port)
-- Try:   nc 127.0.0.1 8080   in two or three terminals, and type.
local reverb = require "reverb"

local port = tonumber(arg and arg[1]) or 8080

local function broadcast(srv, from, text)
  for _, conn in ipairs(srv:clients()) do
    if conn ~= from then
      -- one failed peer must not stop the others from hearing
      pcall(conn.write, conn, text)
    end
  end
end

local srv = reverb.serve({ port = port }, function(conn, srv)
  conn:write("welcome, ", conn.peer, "; ", #srv:clients() - 1, " others here\n")
  broadcast(srv, conn, "* " .. conn.peer .. " joined\n")
  for line in conn:lines() do
    broadcast(srv, conn, conn.peer .. ": " .. line .. "\n")
  end
  broadcast(srv, conn, "* " .. conn.peer .. " left\n")
end)

print("chat on port " .. srv.port)
io.stdout:flush()
reverb.run()
