--- spec/udp_spec.lua: reverb.udp, datagrams on the loop.
local lu = require "luaunit"
local reverb = require "reverb"
local core = require "reverb.core"
local H = require "helper"

local TestUdp = H.class()

function TestUdp.test_echo_between_two_sockets_at_top_level()
  local server <close> = H.udp("127.0.0.1", 0)
  lu.assertTrue(server.port > 0)
  lu.assertEquals(select(2, server.socket:getsockname()), server.port)
  local client <close> = H.udp()
  client:sendto("ping", "127.0.0.1", server.port)
  local data, host, port = server:recvfrom()
  lu.assertEquals({ data, host }, { "ping", "127.0.0.1" })
  server:sendto("pong", host, port)
  lu.assertEquals(client:recvfrom(), "pong")
end

function TestUdp.test_an_echo_task_serves_many_datagrams()
  local server <close> = H.udp("127.0.0.1", 0)
  reverb.spawn(function()
    for _ = 1, 50 do
      local d, h, p = server:recvfrom()
      server:sendto(d:upper(), h, p)
    end
  end)
  H.within(10, function()
    local c <close> = H.udp()
    for i = 1, 50 do
      c:sendto("msg " .. i, "127.0.0.1", server.port)
      lu.assertEquals(c:recvfrom(), "MSG " .. i)
    end
  end)
end

function TestUdp.test_recvfrom_timeout()
  local u <close> = H.udp("127.0.0.1", 0)
  u:settimeout(0.02)
  local err = H.raises("ETIMEDOUT", u.recvfrom, u)
  lu.assertEquals(err.op, "recvfrom")
  lu.assertErrorMsgContains("non-negative number", u.settimeout, u, "soon")
  lu.assertErrorMsgContains("non-negative number", u.settimeout, u, 0 / 0)
  lu.assertErrorMsgContains("bad argument #1 to 'sendto' (string expected, got table)",
    u.sendto, u, {}, "127.0.0.1", 9)
  lu.assertErrorMsgContains("bad argument #1 to 'udp' (host: string expected, got number)",
    reverb.udp, 5)
  lu.assertErrorMsgContains("bad argument #1 to 'recvfrom' (size must be positive)",
    u.recvfrom, u, 0)
  -- numbered as the method call counts, in udp's own name (they named
  -- core's bind, or counted the socket)
  lu.assertErrorMsgContains("bad argument #2 to 'sendto' (host expected, got nil)",
    u.sendto, u, "x", nil, 9)
  lu.assertErrorMsgContains("bad argument #3 to 'sendto' (port 0-65535 expected, got string)",
    u.sendto, u, "x", "127.0.0.1", "abc")
  lu.assertErrorMsgContains("bad argument #3 to 'sendto' (port 0-65535 expected, got 70000)",
    u.sendto, u, "x", "127.0.0.1", 70000)
  lu.assertErrorMsgContains("bad argument #2 to 'udp' (port 0-65535 expected, got -1)",
    reverb.udp, "127.0.0.1", -1)
  lu.assertErrorMsgContains("bad argument #1 to 'udp' (port 0-65535 expected, got string)",
    reverb.udp, { port = "x" })
end

function TestUdp.test_unix_datagrams()
  local path = os.tmpname()
  os.remove(path)
  local a <close> = H.udp { unix = path }
  local b <close> = H.udp { unix = path .. ".b" }
  b:sendto("over a unix datagram", path)
  local data, from = a:recvfrom()
  lu.assertEquals(data, "over a unix datagram")
  lu.assertEquals(from, path .. ".b")
  lu.assertTrue(H.exists(path))
  a:close()
  b:close()
  lu.assertFalse(H.exists(path), "close removes the socket's file, as a server's does")
  local again <close> = H.udp { unix = path }   -- so the path is free again
  lu.assertEquals(again.host, path)
end

-- A unix datagram socket is "writable" to epoll while its receiver's
-- queue is full: sendto must still honour its timeout, not spin on waits
-- that say ready.
function TestUdp.test_sendto_a_full_unix_receiver_times_out()
  local path = H.tmpname()
  local _rx <close> = H.udp { unix = path }   -- never reads
  local tx <close> = H.udp { unix = path .. ".tx" }
  tx:settimeout(0.05)
  local err = H.within(10, function()
    local _, e = pcall(function() for i = 1, 100000 do tx:sendto("d" .. i, path) end end)
    return e
  end)
  lu.assertTrue(reverb.iserror(err), tostring(err))
  lu.assertEquals(err.code, "ETIMEDOUT")
end

-- Closing the socket itself wakes a waiting recvfrom (see the stream's
-- test of the same).
function TestUdp.test_closing_the_socket_under_recvfrom_wakes_it()
  local u <close> = H.udp("127.0.0.1", 0)
  local err
  reverb.spawn(function() err = select(2, pcall(u.recvfrom, u)) end)
  reverb.sleep(0.01)
  u.socket:close()
  H.within(5, function() while err == nil do reverb.sleep(0.001) end end)
  lu.assertEquals(err.code, "EBADF")
  lu.assertTrue(u.closed)
end

function TestUdp.test_inet6_datagrams()
  if not H.has_ipv6() then lu.skip("this machine has no ::1") end
  local a <close> = H.udp("::1", 0)
  local b <close> = H.udp("::1", 0)
  b:sendto("v6", "::1", a.port)
  lu.assertEquals({ a:recvfrom() }, { "v6", "::1", b.port })
end

-- An unbound socket takes its family from opts.family: one made for IPv6
-- sends to an IPv6 address (the default, IPv4, cannot).
function TestUdp.test_an_unbound_socket_of_the_inet6_family()
  if not H.has_ipv6() then lu.skip("this machine has no ::1") end
  local a <close> = H.udp("::1", 0)
  local b <close> = H.udp { family = "inet6" }
  b:sendto("unbound", "::1", a.port)
  lu.assertEquals((a:recvfrom()), "unbound")
  local c <close> = H.udp { family = "inet6", port = 0 }   -- bound: to ::1
  lu.assertEquals(c.host, "::1")
  local v4 <close> = H.udp()
  lu.assertTrue(core.iserror(select(2, pcall(v4.sendto, v4, "x", "::1", a.port))))
  lu.assertErrorMsgContains([[(family: "inet" or "inet6" expected, got "unix")]],
    reverb.udp, { family = "unix" })
  lu.assertErrorMsgContains("(family: string expected, got number)", reverb.udp, { family = 6 })
  lu.assertErrorMsgContains("(unix: non-empty path expected)", reverb.udp, { unix = "" })
end

return { TestUdp = TestUdp }
