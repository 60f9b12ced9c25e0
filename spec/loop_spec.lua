--- spec/loop_spec.lua: tasks, sleeps, run, stop, top-level waits, signals.
local lu = require "luaunit"
local reverb = require "reverb"
local loop = require "reverb.loop"
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
  lu.assertNotNil(t)
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
  local err
  reverb.spawn(function() err = select(2, pcall(reverb.run)) end)
  reverb.run()
  lu.assertStrContains(err, "inside a task")
end

function TestLoop.test_spawn_checks_its_argument()
  lu.assertErrorMsgContains("function expected", reverb.spawn, 42)
  lu.assertErrorMsgContains("number expected", reverb.sleep, "soon")
end

return { TestLoop = TestLoop }
