-- bench/luasocket_echo.lua: the echo server a Lua programmer writes with
-- LuaSocket today, for context in `make bench`: one socket.select loop
-- over the listener and every client, each readable client's bytes sent
-- straight back. (select is bound to FD_SETSIZE, 1,024 descriptors, so
-- the bench runs it at 50 and 500 connections only.)
--
-- Run:   lua5.4 bench/luasocket_echo.lua [PORT]    (needs Debian's lua-socket; 0: any free port)
local socket = require "socket"

local server = assert(socket.bind("127.0.0.1", tonumber(arg and arg[1]) or 0))
server:settimeout(0)
print("listening 127.0.0.1:" .. select(2, server:getsockname()))
io.stdout:flush()

local watched = { server }   -- what select watches: the listener, then the clients
local where = {}             -- client -> its index in watched

local function drop(c)
  local i, last = where[c], watched[#watched]
  watched[i], where[last] = last, i
  watched[#watched], where[c] = nil, nil
  c:close()
end

while true do
  local readable = socket.select(watched, nil)
  for _, s in ipairs(readable) do
    if s == server then
      local c = server:accept()
      if c then
        c:settimeout(0)
        c:setoption("tcp-nodelay", true)
        watched[#watched + 1] = c
        where[c] = #watched
      end
    elseif where[s] then
      -- receive(n) with no wait gives what is there as its partial result
      local data, err, partial = s:receive(65536)
      data = data or partial
      if data and #data > 0 then
        local i = 1
        -- (a full send buffer spins the loop here, as it does in such servers)
        while i <= #data do
          local sent, serr, upto = s:send(data, i)
          if not sent and serr ~= "timeout" then break end
          i = (sent or upto) + 1
        end
      end
      if err and err ~= "timeout" then drop(s) end   -- closed, or reset
    end
  end
end
