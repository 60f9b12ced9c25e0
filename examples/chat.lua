-- chat.lua: every line a client sends goes to all the other clients, with
-- join and leave notices. The tutorial's client list, disconnect handling
-- and synchronisation, the coroutine way: one task per client, and no
-- mutex, because tasks only switch where they wait.
--
-- Each client's lines go out through an outbox of its own, emptied by a
-- task of its own: a client that stops reading fills its outbox, not the
-- sender's time, and one whose outbox grows too long while a write to it
-- waits is disconnected.
--
-- Run:   bin/reverb run examples/chat.lua [PORT]      (default 8080; 0: any free port)
-- Try:   nc 127.0.0.1 8080   in two or three terminals, and type.
local reverb = require "reverb"

local port = tonumber(arg and arg[1]) or 8080
local BEHIND = 1000   -- lines queued behind a write that waits: the client is dropped

local outbox = {}   -- conn -> { lines not yet written, writing = its task runs,
                    --          waiting = that task's write waits for room }

local function send(conn, text)
  local box = outbox[conn]
  if not box then return end
  if box.waiting and #box >= BEHIND then   -- not reading: dropped (its handler sees it)
    outbox[conn] = nil
    conn:close()
    return
  end
  box[#box + 1] = text
  if box.writing then return end   -- its task writes this one too
  box.writing = true
  reverb.spawn(function()
    while box[1] do   -- all that is queued, in one write
      local lines = table.concat(box)
      for i = #box, 1, -1 do box[i] = nil end
      box.waiting = true    -- (seen by others only if the write has to wait)
      local ok = pcall(conn.write, conn, lines)
      box.waiting = false
      if not ok then return end   -- gone: on_close tells
    end
    box.writing = false
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
