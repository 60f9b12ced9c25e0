-- chat.lua: every line a client sends goes to all the other clients, with
-- join and leave notices. The tutorial's client list, disconnect handling
-- and synchronisation, the coroutine way: one task per client, and no
-- mutex, because tasks only switch where they wait.
--
-- Each client's lines go out through an outbox of its own, emptied by a
-- task of its own: a client that stops reading fills its outbox, not the
-- sender's time, and one that falls too far behind is disconnected.
--
-- Run:   bin/reverb run examples/chat.lua [PORT]      (default 8080; 0: any free port)
-- Try:   nc 127.0.0.1 8080   in two or three terminals, and type.
local reverb = require "reverb"

local port = tonumber(arg and arg[1]) or 8080
local BEHIND = 1000   -- lines waiting for a client before it is dropped

local outbox = {}   -- conn -> the lines not yet written to it

local function send(conn, text)
  local box = outbox[conn]
  if not box then return end
  if #box >= BEHIND then   -- not reading: dropped (its handler sees the close)
    outbox[conn] = nil
    conn:close()
    return
  end
  box[#box + 1] = text
  if #box > 1 then return end   -- the task writing the first one writes this too
  reverb.spawn(function()
    while box[1] do
      if not pcall(conn.write, conn, box[1]) then return end   -- gone: on_close tells
      table.remove(box, 1)
    end
  end)
end

local function broadcast(srv, from, text)
  for _, conn in ipairs(srv:clients()) do
    if conn ~= from then send(conn, text) end
  end
end

local srv
srv = reverb.serve({
  port = port,
  on_open = function(conn) outbox[conn] = {} end,
  -- however a client goes (it closed, it reset, its line was too long,
  -- it fell behind), the others hear it: the handler may end by raising
  on_close = function(conn)
    outbox[conn] = nil
    broadcast(srv, conn, "* " .. conn.peer .. " left\n")
  end,
}, function(conn)
  send(conn, "welcome, " .. conn.peer .. "; " .. #srv:clients() - 1 .. " others here\n")
  broadcast(srv, conn, "* " .. conn.peer .. " joined\n")
  for line in conn:lines() do
    broadcast(srv, conn, conn.peer .. ": " .. line .. "\n")
  end
end)

print("chat on port " .. srv.port)
io.stdout:flush()
reverb.run()
