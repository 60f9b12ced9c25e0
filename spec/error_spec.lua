--- spec/error_spec.lua: error objects, their fields and their text.
local lu = require "luaunit"
local core = require "reverb.core"
local H = require "helper"

-- A loopback port nobody listens on: bound (so nobody else gets it) but
-- not listening, so a connect is refused.
local function dead_port()
  local s = core.socket()
  s:bind("127.0.0.1", 0)
  local _, port = s:getsockname()
  return s, port
end

-- A connected client whose peer has just closed with a reset (linger 0).
local function reset_client()
  local l <close> = core.socket()
  l:bind("127.0.0.1", 0)
  l:listen()
  local c = core.socket()
  c:connect("127.0.0.1", select(2, l:getsockname()))
  local a = l:accept()
  a:setoption("linger", 0)
  a:close()
  return c
end

local TestErrors = H.class()

function TestErrors.test_connection_refused()
  local _hold <close>, port = dead_port()
  local c <close> = core.socket()
  local err = H.raises("ECONNREFUSED", c.connect, c, "127.0.0.1", port)
  lu.assertEquals(err.op, "connect")
  lu.assertEquals(err.errno, 111)
  lu.assertEquals(err.message, "Connection refused")
  lu.assertEquals(err.address, "127.0.0.1:" .. port)
  lu.assertEquals(tostring(err),
    "connect 127.0.0.1:" .. port .. ": Connection refused (ECONNREFUSED)")
end

function TestErrors.test_address_in_use()
  local a <close> = core.socket()
  a:bind("127.0.0.1", 0)
  a:listen()
  local _, port = a:getsockname()
  local b <close> = core.socket()
  local err = H.raises("EADDRINUSE", b.bind, b, "127.0.0.1", port)
  lu.assertEquals(err.op, "bind")
  lu.assertStrContains(tostring(err), "bind 127.0.0.1:" .. port .. ": ")
end

function TestErrors.test_name_resolution_failure_has_eai_code()
  local c <close> = core.socket()
  local ok, err = pcall(c.connect, c, "no-such-host.invalid", 80)
  lu.assertFalse(ok)
  lu.assertStrMatches(err.code, "EAI_%u+")
  lu.assertNil(err.errno)
  lu.assertEquals(err.address, "no-such-host.invalid:80")
  lu.assertStrContains(tostring(err), "connect no-such-host.invalid:80: ")
  -- an IPv6 literal for an IPv4 socket: glibc's own code (not
  -- EAI_UNKNOWN), and the address written in brackets
  err = H.raises("EAI_ADDRFAMILY", c.connect, c, "::1", 1)
  lu.assertEquals(err.address, "[::1]:1")
end

function TestErrors.test_send_after_peer_reset_is_epipe_or_econnreset()
  local c <close> = reset_client()
  local ok, err
  for _ = 1, 100 do
    ok, err = pcall(c.send, c, "anyone there?")
    if not ok then break end
  end
  lu.assertFalse(ok, "send to a reset peer must fail")
  lu.assertTrue(err.code == "EPIPE" or err.code == "ECONNRESET", tostring(err))
  lu.assertEquals(err.op, "send")
end

function TestErrors.test_recv_after_reset_is_econnreset()
  local c <close> = reset_client()
  H.raises("ECONNRESET", c.recv, c)
end

function TestErrors.test_uncaught_error_prints_one_line_in_lua5_4()
  local _hold <close>, port = dead_port()
  local out, status = H.sh(H.LUA .. " -e 'local s = require(\"reverb.core\").socket() "
    .. "s:connect(\"127.0.0.1\", " .. port .. ")'")
  lu.assertEquals(status, 1)
  lu.assertStrContains(out, "connect 127.0.0.1:" .. port .. ": Connection refused (ECONNREFUSED)")
end

function TestErrors.test_error_constructor_and_errno_table()
  local e = core.error("read", "ETIMEDOUT", "timed out", "127.0.0.1:1")
  lu.assertTrue(core.iserror(e))
  lu.assertFalse(core.iserror({}))
  lu.assertFalse(core.iserror("ETIMEDOUT"))
  lu.assertEquals(e.errno, core.errno.ETIMEDOUT)
  lu.assertEquals(tostring(e), "read 127.0.0.1:1: timed out (ETIMEDOUT)")
  lu.assertEquals(tostring(core.error("x", "ENOENT")), "x: No such file or directory (ENOENT)")
  -- a resolver's code reads as a failed resolution does (gai_strerror)
  lu.assertEquals(core.error("x", "EAI_NONAME").message, "Name or service not known")
  -- generated from <errno.h>: far more than a handful
  local n = 0
  for _ in pairs(core.errno) do n = n + 1 end
  lu.assertTrue(n > 100, n .. " errno names")
  -- aliases too, with their canonical name's number; an error is named canonically
  lu.assertEquals(core.errno.EWOULDBLOCK, core.errno.EAGAIN)
  lu.assertEquals(core.error("x", "EWOULDBLOCK").errno, core.errno.EAGAIN)
  for _, name in ipairs { "EAGAIN", "ECONNRESET", "EPIPE", "ENETUNREACH", "EHOSTUNREACH",
                          "ECONNABORTED", "EADDRNOTAVAIL", "EMFILE", "ENOBUFS", "ETIMEDOUT" } do
    lu.assertNotNil(core.errno[name], name)
  end
end

return { TestErrors = TestErrors }
