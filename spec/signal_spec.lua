--- spec/signal_spec.lua: reverb.on_signal, signals as tasks on the loop.
local lu = require "luaunit"
local reverb = require "reverb"
local core = require "reverb.core"
local loop = require "reverb.loop"
local H = require "helper"

local TestSignal = H.class()

function TestSignal.test_on_signal_runs_a_handler_task()
  local got
  reverb.on_signal("USR2", function(name) got = name end)
  core.kill(core.getpid(), "USR2")
  H.within(5, function()
    while not got do reverb.sleep(0.001) end
  end)
  lu.assertEquals(got, "USR2")
  reverb.on_signal("USR2", nil)
end

-- A handler that is not a function is refused at once: when the signal
-- came it would fail in the signal task, and no later handler would run.
function TestSignal.test_on_signal_checks_its_handler()
  lu.assertErrorMsgContains("bad argument #2 to 'on_signal' (function or nil expected, got number)",
    reverb.on_signal, "USR1", 5)
  local got
  reverb.on_signal("USR1", function(name) got = name end)
  core.kill(core.getpid(), "USR1")
  H.within(5, function() while not got do reverb.sleep(0.001) end end)
  lu.assertEquals(got, "USR1")
  reverb.on_signal("USR1", nil)
end

-- The name is on_signal's first argument, and its errors say so (they
-- said "table index is nil", or named core.signal_catch).
function TestSignal.test_on_signal_checks_its_name()
  for _, case in ipairs {
    { "(signal name expected, got nil)", nil, nil },
    { "(signal name expected, got number)", 0 / 0, print },
    { "(unknown signal 'BOGUS')", "BOGUS", print },
    { "(unknown signal 'BOGUS')", "BOGUS", nil },
    { "(KILL cannot be caught or ignored)", "KILL", print },
  } do
    lu.assertErrorMsgContains("bad argument #1 to 'on_signal' " .. case[1],
      reverb.on_signal, case[2], case[3])
  end
end

function TestSignal.test_signal_watcher_does_not_keep_run_going()
  reverb.on_signal("USR1", function() end)
  reverb.spawn(function() reverb.sleep(0.001) end)
  reverb.run()     -- returns: the signal watcher is a daemon
  reverb.on_signal("USR1", nil)
  lu.assertEquals(loop.count(), 0)
end

function TestSignal.test_sigterm_handler_can_stop_a_server_and_the_loop()
  local out, status = H.sh(H.LUA .. [[ -e '
    local reverb = require "reverb"
    local core = require "reverb.core"
    local srv = reverb.serve(0, function() end)
    reverb.on_signal("TERM", function() srv:close() reverb.stop() end)
    reverb.spawn(function() core.kill(core.getpid(), "TERM") end)
    reverb.run()
    print("stopped cleanly")']])
  lu.assertEquals(status, 0, out)
  lu.assertEquals(out, "stopped cleanly\n")
end

return { TestSignal = TestSignal }
