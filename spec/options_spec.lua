--- spec/options_spec.lua: setoption and getoption, by every name.
local lu = require "luaunit"
local core = require "reverb.core"
local H = require "helper"

local TestOptions = H.class()

function TestOptions.test_booleans_round_trip()
  local s <close> = core.socket()
  for _, name in ipairs { "reuseaddr", "reuseport", "nodelay", "keepalive", "broadcast",
                          "tcp-nodelay" } do
    s:setoption(name, true)
    lu.assertTrue(s:getoption(name), name)
    s:setoption(name, false)
    lu.assertFalse(s:getoption(name), name)
  end
  if H.has_ipv6() then
    local s6 <close> = core.socket("inet6")
    for _, name in ipairs { "ipv6only", "ipv6-v6only" } do
      s6:setoption(name, true)
      lu.assertTrue(s6:getoption(name))
      s6:setoption(name, false)
      lu.assertFalse(s6:getoption(name))
    end
  end
end

function TestOptions.test_buffer_sizes()
  local s <close> = core.socket()
  for _, pair in ipairs { { "rcvbuf", "recv-buffer-size" }, { "sndbuf", "send-buffer-size" } } do
    s:setoption(pair[1], 65536)
    -- Linux doubles the value for its bookkeeping
    lu.assertTrue(s:getoption(pair[1]) >= 65536, pair[1])
    s:setoption(pair[2], 32768)
    lu.assertEquals(s:getoption(pair[2]), s:getoption(pair[1]))
  end
end

function TestOptions.test_linger()
  local s <close> = core.socket()
  lu.assertFalse(s:getoption("linger"))
  s:setoption("linger", 5)
  lu.assertEquals(s:getoption("linger"), 5)
  s:setoption("linger", false)
  lu.assertFalse(s:getoption("linger"))
  s:setoption("linger", { on = true, timeout = 2 })   -- LuaSocket's form
  lu.assertEquals(s:getoption("linger"), 2)
  -- checked as the number form is: the kernel takes a negative one as forever
  for _, bad in ipairs { -5, 1 << 32, "soon" } do
    lu.assertErrorMsgContains("linger timeout must be 0-65535 seconds",
      s.setoption, s, "linger", { on = true, timeout = bad })
  end
  lu.assertEquals(s:getoption("linger"), 2)
end

function TestOptions.test_error_is_read_only_and_nil_when_none()
  local s <close> = core.socket()
  lu.assertNil(s:getoption("error"))
  lu.assertErrorMsgContains("can only be read", s.setoption, s, "error", true)
end

function TestOptions.test_pending_error_of_a_nonblocking_connect()
  local hold <close> = core.socket()
  hold:bind("127.0.0.1", 0)
  local port = select(2, hold:getsockname())
  local c <close> = core.socket()
  c:setblocking(false)
  local ok, res = pcall(c.connect, c, "127.0.0.1", port)
  if ok and res == false then
    local p <close> = core.poller()
    p:add(c:fileno(), "write")
    p:wait(5 * H.SLOW, {})
    local err = c:getoption("error")
    lu.assertTrue(core.iserror(err))
    lu.assertEquals(err.code, "ECONNREFUSED")
  else
    lu.assertEquals(res.code, "ECONNREFUSED")   -- refused at once, also fine
  end
end

function TestOptions.test_wrong_names_and_values_are_argument_errors()
  local s <close> = core.socket()
  lu.assertErrorMsgContains("invalid option 'nagle'", s.setoption, s, "nagle", true)
  lu.assertErrorMsgContains("boolean expected", s.setoption, s, "nodelay", 1)
  lu.assertErrorMsgContains("number expected", s.setoption, s, "rcvbuf", "big")
  lu.assertErrorMsgContains("size out of range", s.setoption, s, "rcvbuf", -1)
  lu.assertErrorMsgContains("linger timeout must be 0-65535 seconds", s.setoption, s, "linger", -1)
end

function TestOptions.test_option_on_wrong_family_is_an_error_object()
  local s <close> = core.socket("unix")
  local err = H.raises("EOPNOTSUPP", s.setoption, s, "nodelay", true)
  lu.assertEquals(err.op, "setoption")
end

return { TestOptions = TestOptions }
