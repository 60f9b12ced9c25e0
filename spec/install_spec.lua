--- spec/install_spec.lua: make install puts a working reverb where it says.
local lu = require "luaunit"
local H = require "helper"

local TestInstall = H.class()

function TestInstall.test_make_install_prefix_gives_a_working_command()
  local prefix = os.tmpname()
  os.remove(prefix)
  local out, status = H.sh("make -s install PREFIX=" .. prefix)
  lu.assertEquals(status, 0, out)
  -- outside the checkout, with no LUA_PATH: only what was installed
  local script = prefix .. "/try.lua"
  local f = assert(io.open(script, "w"))
  f:write([[
print(package.searchpath("reverb.core", package.cpath))
local srv = reverb.serve(0, function(c) c:write(c:read_line(), "!\n") end)
local c = reverb.connect("127.0.0.1", srv.port)
print(c:write("hi\n"):read_line())
srv:close()
c:close()
]])
  f:close()
  out, status = H.sh("cd / && env -u LUA_PATH -u LUA_CPATH " .. prefix .. "/bin/reverb run "
    .. script)
  lu.assertEquals(status, 0, out)
  lu.assertEquals(out, prefix .. "/lib/lua/5.4/reverb/core.so\nhi!\n")
  H.sh("rm -rf " .. prefix)
end

return { TestInstall = TestInstall }
