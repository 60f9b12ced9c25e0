--- spec/server_spec.lua: reverb.serve, from accept to close, under trouble.
local lu = require "luaunit"
local reverb = require "reverb"
local core = require "reverb.core"
local H = require "helper"

local echo_lines = H.echo_lines

-- A server whose log lines are kept in srv.logged instead of stderr.
local function quiet_serve(opts, handler)
  local logged = {}
  opts.log = function(msg) logged[#logged + 1] = msg end
  local srv = reverb.serve(opts, handler)
  srv.logged = logged
  return srv
end

local TestServer = H.class()

function TestServer.test_serve_on_any_free_port_and_echo()
  local srv <close> = reverb.serve(0, echo_lines)
  lu.assertEquals(srv.host, "127.0.0.1")
  lu.assertTrue(srv.port > 0)
  local c <close> = H.connect("127.0.0.1", srv.port, { timeout = 5 * H.SLOW })
  c:write("hello\n")
  lu.assertEquals(c:read_line(), "hello")
end

--- A client's data usually comes after the server accepted it: the
--- first read of an accepted connection waits for epoll instead of
--- paying a recv that says EAGAIN (a third of a connect-storm
--- connection's recvs). The server is traced in a process of its own;
--- each client here sends only once the server has accepted it.
function TestServer.test_an_accepted_connection_makes_no_recv_that_says_eagain()
  if not H.can_strace() then return lu.skip("strace cannot trace here") end
  local script = H.file([[
local reverb = require "reverb"
local closed = 0
local srv
srv = reverb.serve({ port = 0, on_close = function()
  closed = closed + 1
  if closed == 5 then srv:close() reverb.stop() end
end }, function(conn) conn:pipe(conn) end)
print("port " .. srv.port)
io.stdout:flush()
reverb.run()
]], ".lua")
  local trace = H.tmpname()
  local pid, out = H.start(("exec strace -f -e trace=recvfrom -o %s %s %s")
    :format(trace, H.LUA, script))
  local port = tonumber((H.await_output(out, "port (%d+)")))
  H.within(10, function()
    for i = 1, 5 do
      local c <close> = H.connect("127.0.0.1", port)
      reverb.sleep(0.02)   -- the server accepts before the data comes
      c:write("hello " .. i)
      lu.assertEquals(c:read(7), "hello " .. i)
    end
  end)
  lu.assertTrue(H.wait_exit(pid, 5), "the server did not stop")
  local calls = H.slurp(trace)
  lu.assertStrContains(calls, '"hello 5')   -- (the trace is of the right reads)
  lu.assertNotStrContains(calls, "EAGAIN")
  os.remove(trace)
  os.remove(script)
  os.remove(out)
end

function TestServer.test_hundreds_of_concurrent_clients_each_get_their_own_echo()
  local srv <close> = reverb.serve(0, echo_lines)
  local N, ok = 300, 0
  local function client(i)
    local c <close> = H.connect("127.0.0.1", srv.port)
    for k = 1, 3 do
      c:write("client ", i, " line ", k, "\n")
      lu.assertEquals(c:read_line(), "client " .. i .. " line " .. k)
      reverb.sleep(0)
    end
    ok = ok + 1
  end
  H.within(30, function()
    for i = 1, N do reverb.spawn(client, i) end
    while ok < N do reverb.sleep(0.005) end
  end)
  lu.assertEquals(ok, N)
end

function TestServer.test_a_waiting_client_costs_under_2300_bytes_of_heap()
  -- regression: the frames under a handler's first read (the client task's
  -- own, a vararg one among them) reached past the 40 stack slots a
  -- coroutine starts with, and Lua doubled every client's stack: each
  -- cost 2,650 bytes (1,860 since)
  -- an echo as scripts write it (examples/echo_server.lua's handler)
  local srv <close> = reverb.serve(0, function(conn)
    while true do
      local data = conn:read_some()
      if not data then return end
      conn:write(data)
    end
  end)
  -- clients of a listener nobody accepts from cost their own side only
  local idle <close> = core.socket("inet", "stream")
  idle:bind("127.0.0.1", 0)
  idle:listen(256)
  local _, idle_port = idle:getsockname()
  local function heap()
    reverb.sleep(0.01)       -- the handlers' first turns, to their first read
    collectgarbage()
    collectgarbage()
    return collectgarbage("count") * 1024
  end
  local n, mine, theirs = 200, {}, {}
  local before, own, all
  H.within(10, function()
    before = heap()
    for i = 1, n do mine[i] = reverb.connect("127.0.0.1", idle_port) end
    own = heap()
    for i = 1, n do theirs[i] = reverb.connect("127.0.0.1", srv.port) end
    while #srv:clients() < n do reverb.sleep(0.001) end
    all = heap()
  end)
  for i = 1, n do
    mine[i]:close()
    theirs[i]:close()
  end
  local each = ((all - own) - (own - before)) / n
  lu.assertTrue(each < 2300, ("a waiting client costs the server %.0f bytes"):format(each))
end

function TestServer.test_clients_list_follows_connections()
  local srv <close> = reverb.serve(0, echo_lines)
  lu.assertEquals(#srv:clients(), 0)
  local a = H.connect("127.0.0.1", srv.port)
  local b = H.connect("127.0.0.1", srv.port)
  a:write("x\n") a:read_line()
  b:write("x\n") b:read_line()
  lu.assertEquals(#srv:clients(), 2)
  local peers = {}
  for _, conn in ipairs(srv:clients()) do peers[conn.peer] = true end
  local _, aport = a.socket:getsockname()
  lu.assertTrue(peers["127.0.0.1:" .. aport], "conn.peer names the client")
  a:close()
  H.within(5, function() while #srv:clients() ~= 1 do reverb.sleep(0.001) end end)
  b:close()
  H.within(5, function() while #srv:clients() ~= 0 do reverb.sleep(0.001) end end)
end

function TestServer.test_a_raising_handler_is_logged_and_others_go_on()
  local srv <close> = quiet_serve({}, function(conn)
    for line in conn:lines() do
      if line == "boom" then error("handler blew up") end
      conn:write(line, "\n")
    end
  end)
  H.within(10, function()
    local good = H.connect("127.0.0.1", srv.port)
    local bad = H.connect("127.0.0.1", srv.port)
    good:write("before\n")
    lu.assertEquals(good:read_line(), "before")
    bad:write("boom\n")
    lu.assertNil(bad:read_line(), "the failed handler's connection is closed")
    good:write("after\n")
    lu.assertEquals(good:read_line(), "after")
    good:close()
    bad:close()
  end)
  lu.assertEquals(#srv.logged, 1)
  lu.assertStrMatches(srv.logged[1], "127%.0%.0%.1:%d+: .*handler blew up.*")
  lu.assertStrContains(srv.logged[1], "stack traceback")
end

function TestServer.test_a_raising_on_open_hook_costs_one_client_only()
  local opened = 0
  local srv <close> = quiet_serve({ on_open = function()
    opened = opened + 1
    if opened == 1 then error("hook blew up") end
  end }, echo_lines)
  H.within(10, function()
    local first = H.connect("127.0.0.1", srv.port)
    lu.assertNil(first:read_line(), "the first client is closed")
    first:close()
    local second <close> = H.connect("127.0.0.1", srv.port)
    second:write("fine\n")
    lu.assertEquals(second:read_line(), "fine")
  end)
  lu.assertStrContains(srv.logged[1], "hook blew up")
end

-- An on_close hook that raises is logged through srv.log, and the
-- handler's own error still is.
function TestServer.test_a_raising_on_close_hook_is_logged_with_the_handlers_error()
  local srv <close> = quiet_serve({ on_close = function() error("close hook blew up") end },
    function(conn)
      conn:read_line()
      error("handler blew up")
    end)
  H.within(10, function()
    local c <close> = H.connect("127.0.0.1", srv.port)
    c:write("go\n")
    lu.assertNil(c:read_line())
    while #srv.logged < 2 do reverb.sleep(0.001) end
  end)
  local all = table.concat(srv.logged, "\n")
  lu.assertStrContains(all, "on_close: ")
  lu.assertStrContains(all, "close hook blew up")
  lu.assertStrContains(all, "handler blew up")
end

-- The loop closes a task that yields outside reverb (coroutine.yield()):
-- the connection is closed and leaves the list all the same.
function TestServer.test_a_handler_that_yields_by_itself_loses_its_client_only()
  local srv <close> = quiet_serve({}, function(conn)
    for line in conn:lines() do
      if line == "stray" then coroutine.yield() end
      conn:write(line, "\n")
    end
  end)
  io.stderr:write("(an expected 'coroutine.yield() inside a reverb task' report follows)\n")
  H.within(10, function()
    local good <close> = H.connect("127.0.0.1", srv.port)
    local bad <close> = H.connect("127.0.0.1", srv.port)
    bad:write("stray\n")
    lu.assertNil(bad:read_line(), "the stray task's connection is closed")
    while #srv:clients() ~= 1 do reverb.sleep(0.001) end
    good:write("fine\n")
    lu.assertEquals(good:read_line(), "fine")
  end)
end

function TestServer.test_reset_mid_message_and_silent_clients_do_not_hurt()
  local srv <close> = quiet_serve({}, echo_lines)
  H.within(10, function()
    local silent = H.connect("127.0.0.1", srv.port)
    for _ = 1, 20 do
      local r = H.connect("127.0.0.1", srv.port)
      r:write("half a li")
      r.socket:setoption("linger", 0)
      r:close()
    end
    local c <close> = H.connect("127.0.0.1", srv.port)
    c:write("still here\n")
    lu.assertEquals(c:read_line(), "still here")
    silent:close()
  end)
  lu.assertEquals(srv.logged, {}, "a reset is how a connection ends, not an error")
end

function TestServer.test_close_stops_accepting_but_live_clients_go_on()
  local srv = reverb.serve(0, echo_lines)
  local c <close> = H.connect("127.0.0.1", srv.port)
  c:write("1\n")
  lu.assertEquals(c:read_line(), "1")
  srv:close()
  H.raises("ECONNREFUSED", reverb.connect, "127.0.0.1", srv.port)
  c:write("2\n")
  lu.assertEquals(c:read_line(), "2")
end

function TestServer.test_idle_timeout_closes_silent_clients()
  local srv <close> = quiet_serve({ idle_timeout = 0.05 }, echo_lines)
  local c <close> = H.connect("127.0.0.1", srv.port)
  local t0 = reverb.now()
  lu.assertNil(H.within(5, c.read_line, c))
  lu.assertTrue(reverb.now() - t0 >= 0.05)
  lu.assertEquals(srv.logged, {}, "an idle close is not an error")
end

function TestServer.test_max_line_option()
  local srv <close> = quiet_serve({ max_line = 16 }, echo_lines)
  local c <close> = H.connect("127.0.0.1", srv.port)
  c:write(string.rep("y", 100), "\n")
  lu.assertNil(H.within(5, c.read_line, c))
  lu.assertStrContains(srv.logged[1], "EMSGSIZE")
end

function TestServer.test_unix_socket_server()
  local path = os.tmpname()
  os.remove(path)
  local srv = reverb.serve({ unix = path }, echo_lines)
  local c <close> = H.connect { unix = path }
  c:write("via unix\n")
  lu.assertEquals(c:read_line(), "via unix")
  lu.assertEquals(srv.clients(srv)[1].peer, path)
  -- a live server's path is refused to a second one
  H.raises("EADDRINUSE", reverb.serve, { unix = path }, echo_lines)
  lu.assertTrue(H.exists(path))
  srv:close()
  lu.assertFalse(H.exists(path), "the socket file is removed on close")
end

-- A server killed before it could remove its file leaves a path nobody
-- listens on: the next server takes it over.
function TestServer.test_a_stale_unix_socket_file_is_taken_over()
  local path = H.tmpname()
  local dead <close> = core.socket("unix")
  dead:bind(path)   -- bound, never listening: connections are refused
  local _srv <close> = reverb.serve({ unix = path }, echo_lines)
  local c <close> = H.connect { unix = path }
  c:write("fresh\n")
  lu.assertEquals(c:read_line(), "fresh")
  -- what is not a socket is never taken over
  local file = H.file("keep me")
  H.raises("EADDRINUSE", reverb.serve, { unix = file }, echo_lines)
  local f = assert(io.open(file))
  lu.assertEquals(f:read("a"), "keep me")
  f:close()
  os.remove(file)
end

function TestServer.test_inet6_server()
  if not H.has_ipv6() then lu.skip("this machine has no ::1") end
  local srv <close> = reverb.serve({ host = "::1" }, echo_lines)
  lu.assertEquals(srv.host, "::1")
  local c <close> = H.connect("::1", srv.port)
  c:write("v6\n")
  lu.assertEquals(c:read_line(), "v6")
  lu.assertStrMatches(srv:clients()[1].peer, "%[::1%]:%d+")
end

function TestServer.test_reuseport_lets_two_servers_share_a_port()
  local a <close> = reverb.serve({ reuseport = true }, echo_lines)
  local b <close> = reverb.serve({ reuseport = true, port = a.port }, echo_lines)
  lu.assertEquals(a.port, b.port)
  a:close()   -- the port is b's alone now, and b serves on it
  H.within(5, function()
    local c <close> = H.connect("127.0.0.1", b.port)
    c:write("to b\n")
    lu.assertEquals(c:read_line(), "to b")
  end)
end

function TestServer.test_port_in_use_raises_and_leaks_nothing()
  local a <close> = reverb.serve(0, echo_lines)
  local err = H.raises("EADDRINUSE", reverb.serve, a.port, echo_lines)
  lu.assertEquals(err.op, "bind")
end

function TestServer.test_bad_arguments()
  lu.assertErrorMsgContains("function expected", reverb.serve, 0, "echo")
  lu.assertErrorMsgContains("port or options expected", reverb.serve, "8080", echo_lines)
  -- options are checked before anything is made, not where they are used
  for opts, msg in pairs {
    [{ host = 5 }] = "(host: string expected, got number)",
    [{ port = 70000 }] = "(port: port 0-65535 expected, got 70000)",
    [{ port = "http" }] = '(port: port 0-65535 expected, got "http")',
    [{ unix = "" }] = '(unix: non-empty path expected, got "")',
    [{ unix = 5 }] = "(unix: non-empty path expected, got 5)",
    [{ idle_timeout = -1 }] = "(idle_timeout: non-negative number expected, got -1)",
    [{ max_line = 0 }] = "(max_line: positive integer expected, got 0)",
    [{ on_close = "bye" }] = "(on_close: function expected, got string)",
  } do
    lu.assertErrorMsgContains("bad argument #1 to 'serve' " .. msg, reverb.serve, opts, echo_lines)
  end
end

-- The server runs in a child process with a descriptor limit of 24, so
-- about 15 clients exhaust it. The rest wait in the backlog; once some
-- clients leave, every waiting one is served and none is dropped.
function TestServer.test_descriptor_exhaustion_pauses_accepting_then_resumes()
  local pid, out = H.start("ulimit -n 24; exec " .. H.LUA .. [[ -e '
    local reverb = require "reverb"
    local srv = reverb.serve(0, function(conn)
      for line in conn:lines() do conn:write(line, "\n") end
    end)
    print("port " .. srv.port) io.stdout:flush()
    reverb.run()']])
  local port = tonumber((H.await_output(out, "port (%d+)")))
  local N = 30   -- fewer than twice what the limit lets the server hold
  local conns, answered = {}, {}
  H.within(30, function()
    for i = 1, N do
      conns[i] = H.connect("127.0.0.1", port)
      conns[i]:write("hello ", i, "\n")
    end
    -- the ones the server could accept answer; the others wait
    for i = 1, N do
      reverb.spawn(function()
        local c = conns[i]
        if c:read_line() == "hello " .. i then answered[i] = true end
      end)
    end
    local function count()
      local n = 0
      for i = 1, N do if answered[i] then n = n + 1 end end
      return n
    end
    -- at least half are answered (however slow this machine is), and the
    -- rest go on waiting while nobody leaves
    local until_t = reverb.now() + 10 * H.SLOW
    while count() < N / 2 and reverb.now() < until_t do reverb.sleep(0.01) end
    reverb.sleep(0.1 * H.SLOW)
    local first = count()
    lu.assertTrue(first >= N / 2 and first < N, first .. " answered before any left")
    -- the first ones leave, freeing descriptors
    for i = 1, N do
      if answered[i] then conns[i]:close() end
    end
    local deadline = reverb.now() + 10 * H.SLOW
    local all
    repeat
      reverb.sleep(0.01)
      all = true
      for i = 1, N do if not answered[i] then all = false end end
    until all or reverb.now() > deadline
    lu.assertTrue(all, "every waiting client is served once descriptors free up")
    for i = 1, N do conns[i]:close() end
  end)
  H.stop(pid)
  local log = H.slurp(out)
  os.remove(out)
  lu.assertStrContains(log, "EMFILE")
  lu.assertStrContains(log,
    "accepting paused until descriptors free up (the open-files limit is 24: ulimit -n")
end

-- accept(2) passes on the network error of a connection that failed while
-- it waited in the queue (ECONNABORTED, EPROTO...): the server goes on to
-- the next one at once, with no log line and no pause. Loopback makes no
-- such error on demand, so a copy of the server module is loaded over an
-- accept that reports one, once, before it accepts for real.
function TestServer.test_a_connection_that_failed_in_the_queue_is_skipped_quietly()
  local real, injected = core.methods.accept, 0
  core.methods.accept = function(sock)
    if injected == 0 then
      injected = 1
      error(core.error("accept", "EPROTO"), 0)
    end
    return real(sock)
  end
  local saved = package.loaded["reverb.server"]
  package.loaded["reverb.server"] = nil
  local ok, server = pcall(require, "reverb.server")
  core.methods.accept, package.loaded["reverb.server"] = real, saved
  assert(ok, server)
  local logged = {}
  local srv <close> = server.serve({ port = 0, log = function(m) logged[#logged + 1] = m end },
                                   echo_lines)
  local c <close> = H.connect("127.0.0.1", srv.port, { timeout = 5 * H.SLOW })
  c:write("still served\n")
  lu.assertEquals(c:read_line(), "still served")
  lu.assertEquals(injected, 1)
  lu.assertEquals(logged, {})
end

-- A handler that closes its own connection and then fails: the failure is
-- a bug like any other, logged with the peer (it used to go unsaid,
-- taken for the end of a connection closed under a waiting read).
function TestServer.test_an_error_after_the_handler_closed_its_connection_is_logged()
  local srv <close> = quiet_serve({ port = 0 }, function(conn)
    conn:read_line()
    conn:write("bye\n")
    conn:close()
    local t = {}
    return t.missing.field
  end)
  local c <close> = H.connect("127.0.0.1", srv.port, { timeout = 5 * H.SLOW })
  c:write("hi\n")
  lu.assertEquals(c:read_line(), "bye")
  lu.assertNil(c:read_line())
  H.within(5, function() while #srv.logged == 0 do reverb.sleep(0.005) end end)
  lu.assertStrMatches(srv.logged[1], "127%.0%.0%.1:%d+: [^\n]*attempt to index a nil value.*")
end

-- Closing the listening socket itself closes the server: its accept task
-- ends, where it used to log EBADF twenty times a second for ever.
function TestServer.test_closing_the_listening_socket_closes_the_server()
  local srv <close> = quiet_serve({ port = 0 }, echo_lines)
  reverb.sleep(0.01)
  srv.socket:close()
  reverb.sleep(0.1)
  lu.assertTrue(srv.closed)
  lu.assertEquals(srv.logged, {})
  lu.assertEquals(coroutine.status(srv.task), "dead")
end

-- Options serve does not know are not passed on to each connection's
-- stream: `timeout` (a stream's option; idle_timeout is the server's)
-- made every accepted connection fail, logged, its socket left open.
function TestServer.test_an_option_of_the_stream_is_not_passed_to_connections()
  local srv <close> = quiet_serve({ port = 0, timeout = "soon" }, echo_lines)
  local c <close> = H.connect("127.0.0.1", srv.port, { timeout = 5 * H.SLOW })
  c:write("served\n")
  lu.assertEquals(c:read_line(), "served")
  lu.assertEquals(srv.logged, {})
end

-- A client that never runs dry does not keep the loop from the others:
-- a task whose reads and writes keep completing without a wait pauses
-- for a turn of the loop every few dozen. (The flood's handler read line
-- after line from its buffer, refilled by full receives, and nobody else
-- was answered, no timer fired, until it stopped: here, after 5 million
-- lines, when it closes the flood, which ends its sender.)
function TestServer.test_a_flooding_client_does_not_starve_the_others()
  local flooded, enough = 0, false
  local srv <close> = reverb.serve(0, function(conn)
    if conn:read_line() ~= "flood" then return conn:write("pong\n") end
    for _ in conn:lines() do
      flooded = flooded + 1
      if flooded >= 5e6 or enough then return end
    end
  end)
  local pid = H.start("(echo flood; exec yes) | exec socat -u - TCP:127.0.0.1:" .. srv.port)
  H.within(10, function() while flooded < 1e5 do reverb.sleep(0.001) end end)
  local c <close> = H.connect("127.0.0.1", srv.port, { timeout = 5 * H.SLOW })
  c:write("ping\n")
  lu.assertEquals(c:read_line(), "pong")
  lu.assertTrue(flooded < 5e6 and H.alive(pid), "answered while the flood went on")
  enough = true
  H.stop(pid)
  H.within(10, function() while #srv:clients() > 0 do reverb.sleep(0.01) end end)
end

-- The timer entries of closed connections do not pile up until their
-- deadline: with an idle timeout of an hour, 2,000 connections that came
-- and went left 2,000 entries (and their memory) for that hour.
function TestServer.test_closed_connections_leave_no_timers_behind()
  local loop = require "reverb.loop"
  local before = loop.timers()
  local srv <close> = reverb.serve({ port = 0, idle_timeout = 3600 }, echo_lines)
  H.within(60, function()
    for i = 1, 2000 do
      local c <close> = H.connect("127.0.0.1", srv.port)
      c:write("n ", i, "\n")
      lu.assertEquals(c:read_line(), "n " .. i)
    end
  end)
  H.within(10, function() while #srv:clients() > 0 do reverb.sleep(0.001) end end)
  local left = loop.timers() - before
  lu.assertTrue(left <= 600, left .. " timer entries left")
end

return { TestServer = TestServer }
