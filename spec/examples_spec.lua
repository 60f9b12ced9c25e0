--- spec/examples_spec.lua: every example runs as its header says.
local lu = require "luaunit"
local reverb = require "reverb"
local core = require "reverb.core"
local H = require "helper"

local RUN = "exec bin/reverb run examples/"

local TestExamples = H.class()

function TestExamples.test_every_example_says_how_to_run_it()
  local ls = io.popen("ls examples/*.lua")
  for file in ls:lines() do
    local head = H.slurp(file):sub(1, 800)
    lu.assertEquals(head:sub(1, 3), "-- ", file .. " starts with a header comment")
    lu.assertStrContains(head, "Run:")
  end
  ls:close()
end

function TestExamples.test_tutorial_server_and_client_talk()
  local pid, out = H.start(RUN .. "tutorial_echo_server.lua 0")
  local port = H.await_output(out, "Server is listening on port (%d+)%.%.%.")
  local reply, status = H.sh("bin/reverb run examples/tutorial_echo_client.lua " .. port)
  lu.assertEquals(status, 0, reply)
  lu.assertEquals(reply, "Server replied: Hello, Server!\n")
  lu.assertTrue(H.wait_exit(pid), "the tutorial server exits after one client")
  lu.assertEquals(H.slurp(out),
    "Server is listening on port " .. port .. "...\nReceived: Hello, Server!\n")
  os.remove(out)
end

function TestExamples.test_tutorial_client_without_a_server_fails_in_one_line()
  local hold <close> = core.socket()   -- bound, never listening: refuses, and the port stays taken
  hold:bind("127.0.0.1", 0)
  local port = select(2, hold:getsockname())
  local out, status = H.sh("bin/reverb run examples/tutorial_echo_client.lua " .. port)
  lu.assertEquals(status, 1)
  lu.assertEquals(out, "reverb: connect 127.0.0.1:" .. port .. ": Connection refused\n")
end

function TestExamples.test_echo_client_says_when_the_server_closes_without_a_reply()
  -- a server that reads a line and hangs up
  local script = H.file("return function(conn) conn:read_line() end\n", ".lua")
  local pid, out = H.start("exec bin/reverb serve 0 " .. script)
  local port = H.await_output(out, "listening on 127%.0%.0%.1:(%d+)")
  local reply, status = H.sh("bin/reverb run examples/echo_client.lua " .. port .. " hi")
  lu.assertEquals(status, 0, reply)
  lu.assertEquals(reply, "Server closed the connection\n")
  H.stop(pid)
  os.remove(out)
  os.remove(script)
end

function TestExamples.test_udp_echo()
  local pid, out = H.start(RUN .. "udp_echo.lua 0")
  local port = H.await_output(out, "UDP echo listening on port (%d+)")
  local reply, status = H.sh("bin/reverb run examples/udp_echo.lua " .. port .. " 'over udp'")
  lu.assertEquals(status, 0, reply)
  lu.assertEquals(reply, "Server replied: over udp\n")
  H.await_output(out, "Received 8 bytes from 127%.0%.0%.1")
  H.stop(pid)
  os.remove(out)
end

function TestExamples.test_echo_server_and_client_log_joins_and_leaves()
  local pid, out = H.start(RUN .. "echo_server.lua 0")
  local port = H.await_output(out, "listening on port (%d+)")
  local reply, status = H.sh("bin/reverb run examples/echo_client.lua " .. port .. " one two")
  lu.assertEquals(status, 0, reply)
  lu.assertEquals(reply, "Server replied: one\nServer replied: two\n")
  H.await_output(out, "left; connected: \n")
  local log = H.slurp(out)
  lu.assertStrMatches(log, ".*127%.0%.0%.1:%d+ joined; connected: 127%.0%.0%.1:%d+\n.*")
  H.stop(pid)
  lu.assertTrue(H.wait_exit(pid))
  os.remove(out)
end

function TestExamples.test_echo_server_counts_the_clients_once_they_are_too_many_to_list()
  local pid, out = H.start(RUN .. "echo_server.lua 0")
  local port = tonumber((H.await_output(out, "listening on port (%d+)")))
  H.within(10, function()
    local conns = {}
    for i = 1, 9 do
      conns[i] = H.connect("127.0.0.1", port)
      conns[i]:write("ping " .. i)
      lu.assertEquals(conns[i]:read(#("ping " .. i)), "ping " .. i)
    end
    H.await_output(out, "joined; connected: 9 clients\n")
    local log = H.slurp(out)
    -- the eighth join still lists all eight, sorted
    local eighth = log:match("joined; connected: ([^\n]*)\n[^\n]*joined; connected: 9 clients")
    lu.assertNotNil(eighth, log)
    local listed = {}
    for peer in eighth:gmatch("127%.0%.0%.1:%d+") do listed[#listed + 1] = peer end
    lu.assertEquals(#listed, 8, eighth)
    conns[9]:close()
    H.await_output(out, "left; connected: 127[^\n]*\n")
    for i = 1, 8 do conns[i]:close() end
  end)
  H.stop(pid)
  os.remove(out)
end

-- examples/chat.lua started on any free port: its pid, output file, port.
local function chat()
  local pid, out = H.start(RUN .. "chat.lua 0")
  return pid, out, tonumber((H.await_output(out, "chat on port (%d+)")))
end

function TestExamples.test_chat_relays_lines_with_join_and_leave_notices()
  local pid, out, port = chat()
  H.within(10, function()
    local a = H.connect("127.0.0.1", port)
    lu.assertStrContains(a:read_line(), "0 others here")
    local b = H.connect("127.0.0.1", port)
    lu.assertStrContains(b:read_line(), "1 others here")
    lu.assertStrMatches(a:read_line(), "%* 127%.0%.0%.1:%d+ joined")
    a:write("hi all\n")
    lu.assertStrMatches(b:read_line(), "127%.0%.0%.1:%d+: hi all")
    b:close()
    lu.assertStrMatches(a:read_line(), "%* 127%.0%.0%.1:%d+ left")
    -- one that resets is gone all the same (the notice was lost with the
    -- handler's ECONNRESET)
    local c = H.connect("127.0.0.1", port)
    lu.assertStrContains(c:read_line(), "1 others here")
    lu.assertStrMatches(a:read_line(), "%* 127%.0%.0%.1:%d+ joined")
    c.socket:setoption("linger", 0)
    c:close()
    lu.assertStrMatches(a:read_line(), "%* 127%.0%.0%.1:%d+ left")
    a:close()
  end)
  H.stop(pid)
  os.remove(out)
end

-- A burst of lines from one client reaches a client that reads, however
-- long (clients were dropped 1,000 lines behind, reading or not, while the
-- sender's task had the loop).
function TestExamples.test_chat_delivers_a_burst_to_a_reader()
  local pid, out, port = chat()
  H.within(30, function()
    local a <close> = H.connect("127.0.0.1", port)
    lu.assertStrContains(a:read_line(), "0 others here")
    local b <close> = H.connect("127.0.0.1", port)
    lu.assertStrContains(b:read_line(), "1 others here")
    a:write(string.rep("burst\n", 3000))
    for _ = 1, 3000 do lu.assertStrMatches(b:read_line(), "127%.0%.0%.1:%d+: burst") end
  end)
  H.stop(pid)
  os.remove(out)
end

-- A client that never reads holds nobody up: the others go on talking,
-- and it is dropped once too far behind. (Each line was written to each
-- client in turn by its sender's task, which then waited on the one that
-- did not read, and so did everyone after it.)
function TestExamples.test_chat_is_not_held_up_by_a_client_that_does_not_read()
  local pid, out, port = chat()
  local line = string.rep("x", 1000)
  H.within(30, function()
    local mute <close> = H.connect("127.0.0.1", port)
    mute.socket:setoption("rcvbuf", 4096)
    lu.assertStrContains(mute:read_line(), "0 others here")   -- and never again
    local a <close> = H.connect("127.0.0.1", port)
    lu.assertStrContains(a:read_line(), "1 others here")
    local b <close> = H.connect("127.0.0.1", port)
    lu.assertStrContains(b:read_line(), "2 others here")
    lu.assertStrMatches(a:read_line(), "%* 127%.0%.0%.1:%d+ joined")
    -- a talks, b keeps up, mute never reads: however much the kernel's
    -- buffers take for mute (megabytes, by this machine's settings),
    -- mute is dropped once it is that far behind, and the talk goes on
    local dropped, batches = false, 0
    repeat
      for _ = 1, 100 do a:write(line, "\n") end
      local got = 0
      while got < 100 do
        local l = b:read_line()
        if l:match("^%* 127%.0%.0%.1:%d+ left") then dropped = true
        elseif not l:match("^%*") then got = got + 1 end
      end
      batches = batches + 1
    until dropped or batches == 640   -- 64 MB
    lu.assertTrue(dropped, "mute still there after " .. batches .. " batches")
    b:write("from b\n")
    local heard = {}
    repeat
      local l = a:read_line()
      heard[#heard + 1] = l
    until l:match(": from b$")
    lu.assertStrMatches(heard[1], "%* 127%.0%.0%.1:%d+ left")   -- the mute one, dropped
  end)
  H.stop(pid)
  os.remove(out)
end

function TestExamples.test_relay_carries_both_ways_to_the_target_and_passes_half_closes_on()
  -- the target: `reverb serve -v` logs each connection's byte counts,
  -- which tells that the echo came from it and not from the relay
  local echo_pid, echo_out = H.start("exec bin/reverb serve 0 -v")
  local echo_port = H.await_output(echo_out, "listening on 127%.0%.0%.1:(%d+)")
  local pid, out = H.start(RUN .. "relay.lua 0 127.0.0.1 " .. echo_port)
  local port = tonumber((H.await_output(out,
    "relay listening on 127%.0%.0%.1:(%d+) %-> 127%.0%.0%.1:" .. echo_port .. "\n")))
  local bytes = {}
  for i = 0, 255 do bytes[#bytes + 1] = string.char(i) end
  local blob = table.concat(bytes):rep(400)   -- 100 KiB, every byte value
  H.within(10, function()
    local c <close> = H.connect("127.0.0.1", port)
    c:write("one\n", "two\n")
    lu.assertEquals(c:read_line(), "one")
    lu.assertEquals(c:read_line(), "two")
    -- written by a task while this one reads: no buffer has to hold it all
    reverb.spawn(function() c:write(blob, "tail") end)
    local got = c:read(#blob)
    lu.assertEquals(#(got or ""), #blob)
    lu.assertTrue(got == blob, "the binary chunk came back changed")
    -- the client's half-close reaches the target, whose close ends the reply
    c:shutdown("write")
    lu.assertEquals(c:read_all(), "tail")
  end)
  local total = #"one\ntwo\n" + #blob + #"tail"
  H.await_output(echo_out, "closed, " .. total .. " bytes in, " .. total .. " bytes out")
  H.stop(pid)
  H.stop(echo_pid)
  os.remove(out)
  os.remove(echo_out)
end

function TestExamples.test_upper_is_a_handler_script()
  local handler = dofile("examples/upper.lua")
  local srv <close> = reverb.serve(0, handler)
  local c <close> = H.connect("127.0.0.1", srv.port)
  c:write("hello\n")
  lu.assertEquals(c:read_line(), "HELLO")
end

function TestExamples.test_self_test_is_its_own_server_and_client()
  local out, status = H.sh("bin/reverb run examples/self_test.lua")
  lu.assertEquals(status, 0, out)
  lu.assertEquals(out, "hello\none\ttwo\t2 clients\n")
end

return { TestExamples = TestExamples }
