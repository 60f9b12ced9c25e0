--- spec/client_spec.lua: reverb.connect, at top level and in tasks.
local lu = require "luaunit"
local reverb = require "reverb"
local core = require "reverb.core"
local H = require "helper"

local echo_lines = H.echo_lines

local TestClient = H.class()

function TestClient.test_the_contract_example_at_top_level()
  local srv <close> = reverb.serve(0, function(conn)
    for l in conn:lines() do conn:write(l, "\n") end
  end)
  local c <close> = H.connect("127.0.0.1", srv.port)
  c:write("hello\n")
  lu.assertEquals(c:read_line(), "hello")
  lu.assertEquals(c.peer, "127.0.0.1:" .. srv.port)
  lu.assertStrContains(tostring(c.socket), "inet stream")
end

function TestClient.test_an_ipv6_peer_is_written_in_brackets()
  if not H.has_ipv6() then lu.skip("this machine has no ::1") end
  local srv <close> = reverb.serve({ host = "::1" }, echo_lines)
  local c <close> = H.connect("::1", srv.port)
  lu.assertEquals(c.peer, "[::1]:" .. srv.port)
  c:write("six\n")
  lu.assertEquals(c:read_line(), "six")
end

-- A port given as a string, as serve and bind take it (port = arg[1]).
function TestClient.test_a_port_may_be_a_numeral()
  local srv <close> = reverb.serve(0, echo_lines)
  local c <close> = H.connect("127.0.0.1", tostring(srv.port))
  lu.assertEquals(c.peer, "127.0.0.1:" .. srv.port)
end

-- A name is tried at each of its addresses in turn (core.getaddrinfo:
-- all of them, either family), as LuaSocket's connect and nc do.
function TestClient.test_a_name_is_tried_at_each_of_its_addresses()
  local addrs = core.getaddrinfo("localhost")
  local families = {}
  for _, a in ipairs(addrs) do families[a.family .. " " .. a.host] = true end
  lu.assertTrue(families["inet 127.0.0.1"], "localhost has 127.0.0.1")
  local ok, err = pcall(core.getaddrinfo, "no-such-host.invalid")
  lu.assertFalse(ok)
  lu.assertTrue(core.iserror(err) and err.code:match("^EAI_") ~= nil, tostring(err))
  local srv <close> = reverb.serve({ host = "127.0.0.1" }, echo_lines)
  local c <close> = H.connect("localhost", srv.port)
  lu.assertEquals(c.peer, "localhost:" .. srv.port)
  c:write("by name\n")
  lu.assertEquals(c:read_line(), "by name")
  -- A name whose first address refuses (nobody listens on 127.0.0.2):
  -- the next one is tried, and where all refuse, the last refusal is
  -- raised under the name.  The resolver's answers are made up here, as
  -- few machines give a name two loopback addresses.
  local real = core.getaddrinfo
  local answers = {}
  core.getaddrinfo = function(host)
    return answers[host] or real(host)
  end
  local _ <close> = setmetatable({}, { __close = function() core.getaddrinfo = real end })
  local function inet(host) return { family = "inet", host = host } end
  answers["two.test"] = { inet("127.0.0.2"), inet("127.0.0.1") }
  answers["none.test"] = { inet("127.0.0.2"), inet("127.0.0.3") }
  local d <close> = H.connect("two.test", srv.port)
  lu.assertEquals(d.peer, "two.test:" .. srv.port)
  d:write("second address\n")
  lu.assertEquals(d:read_line(), "second address")
  local e = H.raises("ECONNREFUSED", H.connect, "none.test", srv.port)
  lu.assertEquals(e.address, "none.test:" .. srv.port)
end

function TestClient.test_connect_inside_a_task()
  local srv <close> = reverb.serve(0, echo_lines)
  local got = H.within(5, function()
    local c <close> = H.connect { host = "127.0.0.1", port = srv.port }
    c:write("from a task\n")
    return c:read_line()
  end)
  lu.assertEquals(got, "from a task")
end

function TestClient.test_refused_raises_and_leaks_nothing()
  local hold <close> = core.socket()
  hold:bind("127.0.0.1", 0)
  local port = select(2, hold:getsockname())
  local err = H.raises("ECONNREFUSED", reverb.connect, "127.0.0.1", port)
  lu.assertEquals(err.address, "127.0.0.1:" .. port)
  lu.assertEquals(tostring(err),
    "connect 127.0.0.1:" .. port .. ": Connection refused (ECONNREFUSED)")
end

function TestClient.test_unknown_host_raises_eai()
  local ok, err = pcall(reverb.connect, "no-such-host.invalid", 80)
  lu.assertFalse(ok)
  lu.assertStrMatches(err.code, "EAI_%u+")
end

function TestClient.test_connect_timeout()
  -- A listener with a backlog of 0 that never accepts: once its queue is
  -- full the kernel drops further handshakes and a connect hangs.
  local l <close> = core.socket()
  l:bind("127.0.0.1", 0)
  l:listen(0)
  local port = select(2, l:getsockname())
  local held, timed_out = {}, nil
  for _ = 1, 20 do
    local ok, res = pcall(reverb.connect, "127.0.0.1", port, { timeout = 0.05 })
    if not ok then
      timed_out = res
      break
    end
    held[#held + 1] = res
  end
  for _, c in ipairs(held) do c:close() end
  lu.assertNotNil(timed_out, "some connect must time out")
  lu.assertEquals(timed_out.code, "ETIMEDOUT")
  lu.assertEquals(timed_out.op, "connect")
end

function TestClient.test_nodelay_and_timeout_options()
  local srv <close> = reverb.serve(0, echo_lines)
  local c <close> = H.connect("127.0.0.1", srv.port, { nodelay = true, timeout = 0.02 })
  lu.assertTrue(c.socket:getoption("nodelay"))
  H.raises("ETIMEDOUT", c.read_line, c)   -- the timeout applies to later waits
end

function TestClient.test_bad_arguments()
  lu.assertErrorMsgContains("string expected", reverb.connect, 42, 80)
  lu.assertErrorMsgContains("port 0-65535 expected, got string",
    reverb.connect, "127.0.0.1", "http")
  lu.assertErrorMsgContains("port 0-65535 expected, got 70000", reverb.connect, "127.0.0.1", 70000)
  lu.assertErrorMsgContains("bad argument #3 to 'connect' (timeout: non-negative number",
    reverb.connect, "127.0.0.1", 80, { timeout = "soon" })
  lu.assertErrorMsgContains("bad argument #3 to 'connect' (options table expected, got number)",
    reverb.connect, "127.0.0.1", 80, 5)
  lu.assertErrorMsgContains("bad argument #1 to 'connect' (max_line: positive integer",
    reverb.connect, { host = "127.0.0.1", port = 80, max_line = 0 })
  -- an empty path would name no file (Linux takes it for an abstract
  -- address of its own choosing)
  lu.assertErrorMsgContains("bad argument #1 to 'connect' (unix: non-empty path expected)",
    reverb.connect, { unix = "" })
end

-- A connect that fails after making its socket closes it before raising,
-- not when the collector comes by (stopped here, so a leak shows).
function TestClient.test_a_failed_connect_leaves_no_descriptor()
  local path = H.tmpname()
  local _ <close> = reverb.serve({ unix = path }, echo_lines)
  collectgarbage("stop")
  local _gc <close> = setmetatable({}, { __close = function() collectgarbage("restart") end })
  local before = H.fds()
  local err = H.raises("EOPNOTSUPP", reverb.connect, { unix = path, nodelay = true })
  lu.assertEquals(err.op, "setoption")
  lu.assertEquals(H.fds(), before)
end

return { TestClient = TestClient }
