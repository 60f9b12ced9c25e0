--- spec/poller_spec.lua: the epoll poller, the clock, signals, processes.
local lu = require "luaunit"
local core = require "reverb.core"
local H = require "helper"

local TestPoller = H.class()

function TestPoller.test_edge_triggered_reports_once_per_arrival()
  local a, b = core.socketpair()
  local p <close> = core.poller()
  p:add(b:fileno(), "edge")
  local ev = {}
  lu.assertEquals(p:wait(0, ev), 0)          -- "edge" watches reading only
  a:send("x")
  lu.assertEquals(p:wait(1, ev), 1)
  lu.assertEquals(ev[1], b:fileno())
  lu.assertEquals(ev[2], 1)
  lu.assertEquals(p:wait(0, ev), 0)          -- not re-armed: edge-triggered
  a:close()
  lu.assertEquals(p:wait(1, ev), 1)
  lu.assertEquals(ev[2] & 4, 4, "hang-up flag")
  b:close()
end

-- NaN is no timeout: cast to a millisecond count it is undefined (on x86
-- a wait that never ends).
function TestPoller.test_a_nan_timeout_is_an_argument_error()
  local p <close> = core.poller()
  lu.assertErrorMsgContains("number expected, got NaN", p.wait, p, 0 / 0, {})
  lu.assertEquals(p:wait(0, {}), 0)
end

-- Numbers that would change meaning on their way to the kernel are
-- argument errors: 2^32 as an int is descriptor 0, as a pid_t pid 0 (the
-- whole group); and mod without a mode says nothing to change.
function TestPoller.test_out_of_range_numbers_are_argument_errors()
  lu.assertErrorMsgContains("not a descriptor", core.read, 1 << 32)
  lu.assertErrorMsgContains("not a descriptor", core.write, -1, "x")
  lu.assertErrorMsgContains("not a descriptor", core.isatty, 1 << 32)   -- (it answered for 0)
  lu.assertErrorMsgContains("not a descriptor", core.isatty, -1)
  lu.assertErrorMsgContains("pid out of range", core.waitpid, 1 << 32, true)
  local p <close> = core.poller()
  local a, b = core.socketpair()
  p:add(a:fileno())
  lu.assertErrorMsgContains("string expected", p.mod, p, a:fileno())
  a:close()
  b:close()
end

-- What a writer that has to wait relies on: switching to "edge+write"
-- reports a socket that is already writable, at once, every time.
function TestPoller.test_rearming_for_write_reports_current_state()
  local a, b = core.socketpair()
  local p <close> = core.poller()
  p:add(b:fileno(), "edge")
  local ev = {}
  p:mod(b:fileno(), "edge+write")
  lu.assertEquals(p:wait(1, ev), 1)
  lu.assertEquals(ev[2], 2)
  lu.assertEquals(p:wait(0, ev), 0)
  p:mod(b:fileno(), "edge+write")
  lu.assertEquals(p:wait(1, ev), 1, "a second arming reports again")
  a:close()
  b:close()
end

function TestPoller.test_level_read_mode_and_del()
  local a, b = core.socketpair()
  local p <close> = core.poller()
  p:add(b:fileno(), "read")
  local ev = {}
  lu.assertEquals(p:wait(0, ev), 0)
  a:send("x")
  lu.assertEquals(p:wait(1, ev), 1)
  lu.assertEquals(p:wait(1, ev), 1)          -- level: still readable
  p:del(b:fileno())
  lu.assertEquals(p:wait(0, ev), 0)
  H.raises("ENOENT", p.del, p, b:fileno())
  H.raises("EBADF", p.add, p, 100000)
  a:close()
  b:close()
end

function TestPoller.test_tostring_names_its_descriptor_until_closed()
  local p = core.poller()
  lu.assertEquals(tostring(p), "reverb.poller: fd " .. p:fileno())
  p:close()
  lu.assertEquals(tostring(p), "reverb.poller: closed")
  H.raises("EBADF", p.fileno, p)
end

function TestPoller.test_wait_times_out()
  local p <close> = core.poller()
  local t0 = core.now()
  lu.assertEquals(p:wait(0.02, {}), 0)
  lu.assertTrue(core.now() - t0 >= 0.02)
  lu.assertErrorMsgContains("table expected", p.wait, p, 0)
end

function TestPoller.test_clock_is_monotonic()
  local t1 = core.now()
  local t2 = core.now()
  lu.assertTrue(t2 >= t1)
  lu.assertEquals(math.type(t1), "float")
end

function TestPoller.test_signals_arrive_through_the_pipe()
  local fd = core.signal_catch("USR1")
  local p <close> = core.poller()
  p:add(fd, "read")
  core.kill(core.getpid(), "USR1")
  lu.assertEquals(p:wait(5 * H.SLOW, {}), 1)
  lu.assertEquals(core.signal_pending(), { "USR1" })
  lu.assertEquals(core.signal_pending(), {})
  p:del(fd)
  core.signal_default("USR1")
  -- KILL is for kill(): catching or ignoring it is an argument error, not EINVAL
  for _, f in ipairs { core.signal_catch, core.signal_ignore, core.signal_default } do
    lu.assertErrorMsgContains("KILL cannot be caught or ignored", f, "KILL")
  end
end

-- signal_catch("KILL") raises before it makes the signal pipe (in a
-- fresh process: this one's pipe may be made already).
function TestPoller.test_catching_kill_makes_no_pipe()
  local out = H.sh(H.LUA .. [[ -e '
    local core = require "reverb.core"
    local function fds()
      local ls, n = io.popen("ls /proc/" .. core.getpid() .. "/fd"), 0
      for _ in ls:lines() do n = n + 1 end
      ls:close()
      return n
    end
    local before = fds()
    print(pcall(core.signal_catch, "KILL"))
    print(fds() - before)']])
  lu.assertStrMatches(out, "false\t[^\n]*KILL cannot be caught or ignored[^\n]*\n0\n")
end

function TestPoller.test_fork_and_waitpid()
  local pid = core.fork()
  if pid == 0 then
    lu.unregisterCurrentSuite()   -- luaunit guards os.exit
    os.exit(7, false)
  end
  local got, how, code = core.waitpid(pid)
  lu.assertEquals({ got, how, code }, { pid, "exit", 7 })
  H.raises("ECHILD", core.waitpid, pid)
end

return { TestPoller = TestPoller }
