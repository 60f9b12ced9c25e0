--- spec/loop_spec.lua: tasks, sleeps, run, stop, top-level waits, signals.
local lu = require "luaunit"
local reverb = require "reverb"
local loop = require "reverb.loop"
local core = require "reverb.core"
local H = require "helper"

local TestLoop = H.class()

function TestLoop.test_spawn_passes_arguments_and_run_returns_when_idle()
  local got
  reverb.spawn(function(a, b, c) got = { a, b, c } end, 1, nil, "three")
  reverb.run()
  lu.assertEquals(got, { 1, nil, "three" })
  lu.assertEquals(loop.count(), 0)
end

function TestLoop.test_pooled_tasks_reuse_finished_coroutines_only()
  local got = {}
  local function task(i, extra)
    reverb.sleep(0)
    got[#got + 1] = { i, extra }
  end
  local first = loop.spawn_pooled(task, 1, "a")
  lu.assertEquals(got, {}, "a task starts on the loop's next turn")
  reverb.run()
  local second = loop.spawn_pooled(task, 2)
  lu.assertIs(second, first, "a finished task's coroutine runs the next one")
  reverb.run()
  lu.assertEquals(got, { { 1, "a" }, { 2 } }, "each run sees its own arguments only")
  lu.assertEquals(loop.count(), 0)
  -- one that raises is not reused (a dead coroutine cannot be)
  local bad = loop.spawn_pooled(function() coroutine.yield("stray") end)
  io.stderr:write("(an expected 'task failed' report follows)\n")
  reverb.run()
  lu.assertEquals(coroutine.status(bad), "dead")
  lu.assertNotIs(loop.spawn_pooled(task, 3), bad)
  reverb.run()
  lu.assertEquals(got[3], { 3 })
end

function TestLoop.test_sleeps_wake_in_deadline_order()
  local order = {}
  for _, d in ipairs { 0.03, 0.01, 0.02, 0.01, 0 } do
    reverb.spawn(function() reverb.sleep(d) order[#order + 1] = d end)
  end
  reverb.run()
  lu.assertEquals(order, { 0, 0.01, 0.01, 0.02, 0.03 })
end

function TestLoop.test_sleep_waits_at_least_its_time()
  local t0 = reverb.now()
  reverb.sleep(0.02)          -- top level: runs the loop meanwhile
  lu.assertTrue(reverb.now() - t0 >= 0.02)
end

-- A sleep at top level that ends in an error (lua5.4's "interrupted!";
-- here a hook as the loop takes its turn) leaves no timer to wake a later
-- wait: a read with no timeout was told it timed out when it came due.
function TestLoop.test_an_interrupted_top_level_sleep_wakes_nothing_later()
  local interrupted, err = H.interrupted(reverb.sleep, 0.05)
  lu.assertFalse(interrupted)
  lu.assertStrContains(tostring(err), "interrupted!")
  local p <close> = H.stream_pair({ timeout = 5 * H.SLOW })
  reverb.spawn(function() reverb.sleep(0.1) p[1]:write("later\n") end)
  lu.assertEquals(p[2]:read_line(), "later")
end

-- A child made by reverb.fork has a loop of its own: its waits are its
-- own (sharing the parent's epoll instance, a child's read took the
-- parent's events and timed out), and the parent goes on serving.
function TestLoop.test_a_forked_child_has_a_loop_of_its_own()
  local srv <close> = reverb.serve(0, H.echo_lines)
  local p <close> = H.stream_pair({ timeout = 5 * H.SLOW })
  local pid = reverb.fork()
  if pid == 0 then
    lu.unregisterCurrentSuite()   -- luaunit guards os.exit
    local ok, got = pcall(function()
      local c = reverb.connect("127.0.0.1", srv.port, { timeout = 5 })
      c:write("from the child\n")
      local mine = c:read_line()
      -- and a stream made before the fork, watched by the child's epoll
      -- instance now: the parent writes only once told the child waits,
      -- so the read must wait for its event (one missed would time out)
      p[2]:write("waiting\n")
      return mine .. ", " .. p[2]:read_line()
    end)
    os.exit(ok and got == "from the child, from the parent" and 0 or 1, false)
  end
  local status
  local ok, err = pcall(H.within, 10, function()
    lu.assertEquals(p[1]:read_line(), "waiting")
    reverb.sleep(0.05)
    p[1]:write("from the parent\n")
    repeat
      local got, how, code = core.waitpid(pid, true)
      if got then status = { how, code } else reverb.sleep(0.01) end
    until status
  end)
  if not status then   -- the child must not outlive the test (it holds the runner's output)
    core.kill(pid, "KILL")
    core.waitpid(pid)
  end
  if not ok then error(err, 0) end
  lu.assertEquals(status, { "exit", 0 })
  -- inside a task it is refused: the child would go on in the middle of
  -- the parent's turn of the loop (and, were it not, it must end here)
  local forked, r = H.within(5, function() return pcall(reverb.fork) end)
  if forked and r == 0 then os.exit(99, false) end
  if forked and r > 0 then core.waitpid(r) end
  lu.assertFalse(forked)
  lu.assertStrContains(r, "reverb.fork() called inside a task")
end

-- A task that fails with resume's own words is a failure like any other
-- (a closed task is told apart by the loop's marker, not by a message).
function TestLoop.test_a_task_failing_as_resume_would_is_reported()
  local before = loop.failures()
  io.stderr:write("(an expected 'task failed' report follows)\n")
  reverb.spawn(function() error("cannot resume dead coroutine", 0) end)
  reverb.run()
  lu.assertEquals(loop.failures(), before + 1)
end

-- After a top-level wait, the loop waits in epoll again rather than
-- polling: its wake was left standing, and a run() after it spun at full
-- CPU until its tasks were done (`reverb send` did, waiting for a reply).
-- Counted with strace, in a script of its own: a few epoll_waits, not
-- thousands.
function TestLoop.test_run_after_a_top_level_wait_does_not_spin()
  if not H.can_strace() then return lu.skip("strace cannot trace here") end
  local script = H.file([[
local reverb = require "reverb"
reverb.sleep(0.01)
reverb.spawn(function() reverb.sleep(0.3) end)
reverb.run()
print("done")
]], ".lua")
  local trace = H.tmpname()
  local out, status = H.sh(("strace -f -e trace=epoll_wait,epoll_pwait -o %s %s %s")
    :format(trace, H.LUA, script))
  lu.assertEquals({ out, status }, { "done\n", 0 })
  local _, waits = H.slurp(trace):gsub("epoll_p?wait%(", "")
  lu.assertTrue(waits > 0 and waits < 50, waits .. " epoll_waits for two sleeps")
  os.remove(trace)
  os.remove(script)
end

function TestLoop.test_top_level_sleep_keeps_tasks_running()
  local ticks = 0
  reverb.spawn(function()
    for _ = 1, 3 do reverb.sleep(0.001) ticks = ticks + 1 end
  end)
  reverb.sleep(0.05)
  lu.assertEquals(ticks, 3)
end

function TestLoop.test_a_raising_task_is_reported_and_others_go_on()
  local done = false
  reverb.spawn(function() error("boom in a task") end)
  reverb.spawn(function() reverb.sleep(0.01) done = true end)
  -- the report goes to stderr: run in a child to see it
  local out, status = H.sh(H.LUA .. [[ -e '
    local reverb = require "reverb"
    reverb.spawn(function() local x = nil; return x.field end)
    reverb.spawn(function() reverb.sleep(0.01) print("other task finished") end)
    reverb.run()']])
  lu.assertEquals(status, 0)
  lu.assertStrContains(out, "reverb: task failed:")
  lu.assertStrContains(out, "attempt to index a nil value")
  lu.assertStrContains(out, "stack traceback")
  lu.assertStrContains(out, "other task finished")
  io.stderr:write("(an expected 'task failed' report follows)\n")
  reverb.run()
  lu.assertTrue(done)
end

function TestLoop.test_a_task_that_yields_by_itself_is_refused_clearly()
  local out = H.sh(H.LUA .. [[ -e '
    local reverb = require "reverb"
    reverb.spawn(function() coroutine.yield("mine") end)
    reverb.run() print("loop survived")']])
  lu.assertStrContains(out, "coroutine.yield() inside a reverb task")
  lu.assertStrContains(out, "loop survived")
end

-- The report of a failed task survives an error object whose __tostring
-- raises: the loop goes on, and so do the other tasks.
function TestLoop.test_an_error_that_cannot_be_printed_is_reported_all_the_same()
  local out = H.sh(H.LUA .. [[ -e '
    local reverb = require "reverb"
    reverb.spawn(function()   -- its __tostring raises the object itself: twice unprintable
      error(setmetatable({}, { __tostring = function(e) error(e) end }))
    end)
    reverb.spawn(function() reverb.sleep(0.01) print("other task done") end)
    reverb.run() print("loop survived")' 2>&1]])
  lu.assertStrContains(out, "an error whose __tostring failed")
  lu.assertStrContains(out, "other task done")
  lu.assertStrContains(out, "loop survived")
end

-- An error raised inside a turn of the loop (lua5.4's Ctrl-C raises
-- "interrupted!" wherever the loop is) leaves it usable: run() works again.
function TestLoop.test_the_loop_runs_again_after_an_error_inside_a_turn()
  local out = H.sh(H.LUA .. [[ -e '
    local reverb = require "reverb"
    reverb.spawn(function() reverb.sleep(0) end)
    local n = 0
    debug.sethook(function()   -- raises some 60 instructions into run()
      n = n + 1
      if n == 60 then debug.sethook() error("interrupted!") end
    end, "", 1)
    print(pcall(reverb.run))
    reverb.spawn(function() print("runs again") end)
    reverb.run()' 2>&1]])
  lu.assertStrContains(out, "interrupted!")
  lu.assertStrContains(out, "runs again")
end

function TestLoop.test_to_be_closed_variables_of_a_failed_task_are_closed()
  local out = H.sh(H.LUA .. [[ -e '
    local reverb = require "reverb"
    reverb.spawn(function()
      local guard <close> = setmetatable({}, { __close = function() print("guard closed") end })
      reverb.sleep(0)
      error("after a wait")
    end)
    reverb.run()']])
  lu.assertStrContains(out, "guard closed")
end

function TestLoop.test_stop_ends_run()
  local after = false
  reverb.spawn(function() reverb.sleep(0.01) reverb.stop() end)
  local t = reverb.spawn(function() reverb.sleep(30) after = true end)
  reverb.run()
  lu.assertFalse(after, "run() returned at stop(), before the 30 s sleeper woke")
  -- the sleeper is still there; end it so later tests start clean
  loop.wake(t, false)
  reverb.run()
end

function TestLoop.test_waits_with_a_timeout_reuse_one_timer_per_socket()
  -- regression: each wait with a deadline used to push a heap entry that
  -- stayed until its deadline, millions of them under load
  local p <close> = H.stream_pair { timeout = 30 }
  local x, y = p[1], p[2]
  local before = loop.timers()
  H.within(20, function()
    for i = 1, 2000 do
      x:write(i, "\n")
      lu.assertEquals(y:read_line(), tostring(i))
    end
  end)
  lu.assertTrue(loop.timers() - before <= 2, (loop.timers() - before) .. " timers left")
end

function TestLoop.test_memory_comes_back_after_a_spike_of_connections()
  -- regression: the tables that grow with the connections (the loop's
  -- descriptor-indexed ones, its tasks, a server's client list) kept the
  -- size of the largest spike for good
  local function heap_kib()
    reverb.sleep(0)          -- a turn of the loop, where its tables are rebuilt
    collectgarbage()
    collectgarbage()
    return collectgarbage("count")
  end
  -- Over a unix socket every connection's peer is one string, and the
  -- lines are made before the spikes: hundreds of new short strings grow
  -- Lua's string table, which shrinks only under a quarter full, so it
  -- kept 0, 16 or 32 KiB of the spike by what the process held before
  -- (the tables this is about keep 50-70 KiB).
  local path = H.tmpname()
  local srv <close> = reverb.serve({ unix = path }, H.echo_lines)
  local sent, want = {}, {}
  for i = 1, 400 do want[i] = "ping " .. i; sent[i] = want[i] .. "\n" end
  -- n clients at once, each waiting for its echo in a task; returns the
  -- heap at the height of the spike
  local function spike(n)
    local clients, done = {}, 0
    for i = 1, n do
      -- no timeout: a wait's timer entry stays in the heap until its
      -- deadline (see the next test), which would count here
      local c = reverb.connect { unix = path }
      clients[i] = c
      reverb.spawn(function()
        lu.assertEquals(c:read_line(), want[i])
        done = done + 1
      end)
    end
    while #srv:clients() < n do reverb.sleep(0.001) end
    local peak = heap_kib()
    for i = 1, n do clients[i]:write(sent[i]) end
    while done < n do reverb.sleep(0.001) end
    for i = 1, n do clients[i]:close() end
    while #srv:clients() > 0 do reverb.sleep(0.001) end
    return peak
  end
  local before, peak, after
  H.within(30, function()
    spike(80)                -- fills the pool of finished tasks' coroutines (kept)
    before = heap_kib()
    peak = spike(400)
    after = heap_kib()
    local c <close> = reverb.connect { unix = path }   -- and all still works
    c:settimeout(5 * H.SLOW)
    c:write("after\n")
    lu.assertEquals(c:read_line(), "after")
  end)
  lu.assertTrue(peak - before > 500, "the spike held only " .. (peak - before) .. " KiB")
  lu.assertTrue(after - before < 32, (after - before) .. " KiB still held after the spike")
end

function TestLoop.test_a_closed_stream_is_not_held_by_its_pending_timeout()
  -- regression: the timer entry of a wait with a deadline held its stream
  -- until the deadline, so a busy server with a long idle timeout kept
  -- every connection it closed within that time
  local seen = setmetatable({}, { __mode = "k" })
  H.within(5, function()
    local p = H.stream_pair { timeout = 60 }
    local y = p[2]
    seen[y] = true
    local ended = false
    reverb.spawn(function()                      -- waits, its deadline a minute away
      H.raises("EBADF", y.read_some, y)
      ended = true
    end)
    reverb.sleep(0.01)
    lu.assertTrue(loop.timers() > 0)
    getmetatable(p).__close(p)
    while not ended do reverb.sleep(0.001) end   -- the reader saw the close
  end)                                           -- and nothing else holds the pair
  collectgarbage()
  collectgarbage()
  lu.assertNil(next(seen), "the closed stream is still held")
end

function TestLoop.test_a_moved_deadline_still_times_out()
  local p <close> = H.stream_pair()
  local x, y = p[1], p[2]
  y:settimeout(0.03)
  H.within(5, function()
    x:write("1\n")
    lu.assertEquals(y:read_line(), "1")     -- the timer entry now lags behind
    reverb.sleep(0.02)
    local t0 = reverb.now()
    H.raises("ETIMEDOUT", y.read_line, y)   -- re-armed, then fired
    lu.assertTrue(reverb.now() - t0 >= 0.03)
  end)
end

function TestLoop.test_run_inside_a_task_is_an_error()
  local err, nested
  reverb.spawn(function() err = select(2, pcall(reverb.run)) end)
  -- from a plain coroutine inside a task, too: a loop run there would
  -- never give the outer one back
  reverb.spawn(function() nested = select(2, coroutine.wrap(pcall)(reverb.run)) end)
  reverb.spawn(function()   -- bounds the wait, should a nested run go on
    local deadline = reverb.now() + 5 * H.SLOW
    while not (err and nested) and reverb.now() < deadline do reverb.sleep(0.005) end
    reverb.stop()
  end)
  reverb.run()
  lu.assertStrContains(err, "inside a task")
  lu.assertStrContains(nested, "inside a task")
end

-- A wait inside a C call that cannot yield (a gsub callback) is refused
-- before the task is registered anywhere: the task's next wait is its own.
function TestLoop.test_a_wait_that_cannot_yield_is_refused_and_leaves_nothing()
  local p <close> = H.stream_pair()
  p[2]:settimeout(nil)   -- the parked read
  local err, line
  reverb.spawn(function()
    err = select(2, pcall(string.gsub, "x", ".", function() return p[2]:read_line() end))
    line = p[2]:read_line()
  end)
  reverb.sleep(0.01)
  p[1]:write("after\n")
  H.within(5, function() while not line do reverb.sleep(0.001) end end)
  lu.assertStrContains(err, "cannot wait here: inside a C call")
  lu.assertEquals(line, "after")
end

function TestLoop.test_spawn_checks_its_argument()
  lu.assertErrorMsgContains("function expected", reverb.spawn, 42)
  lu.assertErrorMsgContains("number expected", reverb.sleep, "soon")
end

return { TestLoop = TestLoop }
