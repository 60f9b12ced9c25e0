-- self_test.lua: a script that is its own server and client, with no task
-- in sight: each waiting call at top level runs the loop until it is done,
-- so the server answers meanwhile.
--
-- Run:   bin/reverb run examples/self_test.lua
local reverb = require "reverb"

local srv = reverb.serve(0, function(conn)
  for l in conn:lines() do conn:write(l, "\n") end
end)
local c = reverb.connect("127.0.0.1", srv.port)
c:write("hello\n")
print(c:read_line())              --> hello

-- a second client while the first is still connected
local d = reverb.connect("127.0.0.1", srv.port)
d:write("one\ntwo\n")
print(d:read_line(), d:read_line(), #srv:clients() .. " clients")   --> one two 2 clients

c:close()
d:close()
srv:close()
