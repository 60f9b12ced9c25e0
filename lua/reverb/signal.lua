--- reverb.signal: signals delivered to the loop as tasks.
--
-- reverb.core's handler writes each caught signal to a self-pipe; one
-- daemon task (it does not keep run() going) watches the pipe and starts
-- each registered handler in a task of its own, so a handler may wait,
-- close servers, or stop the loop like any other code.

local core = require "reverb.core"
local loop = require "reverb.loop"

local M = {}
local handlers, watcher = {}, nil

local function signal_task()
  while true do
    loop.wait(watcher, "read")
    for _, name in ipairs(core.signal_pending()) do
      local fn = handlers[name]
      if fn then loop.spawn(fn, name) end
    end
  end
end

--- on_signal(name, fn): run fn(name) in a task when the signal arrives;
-- fn = nil restores the default action.
function M.on_signal(name, fn)
  if fn == nil then
    handlers[name] = nil
    core.signal_default(name)
    return
  end
  if type(fn) ~= "function" then
    -- checked now: when the signal came, spawn would fail in the signal
    -- task, and with it every later handler
    error("bad argument #2 to 'on_signal' (function or nil expected, got " .. type(fn) .. ")", 2)
  end
  local fd = core.signal_catch(name)
  handlers[name] = fn
  if not watcher then
    watcher = {}
    loop.watch(watcher, fd, "read")
    loop.daemon(signal_task)
  end
end

loop.at_fork(function() handlers, watcher = {}, nil end)

return M
