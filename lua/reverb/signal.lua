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

-- core's call for the signal name, its argument errors told as
-- on_signal's own (not core.signal_catch's, nor "table index is nil").
local function action(f, name)
  if type(name) ~= "string" then
    error("bad argument #1 to 'on_signal' (signal name expected, got " .. type(name) .. ")", 3)
  end
  local ok, r = pcall(f, name)
  if ok then return r end
  if type(r) == "string" then
    r = r:gsub("^bad argument #1 to '[^']*'", "bad argument #1 to 'on_signal'")
    error((r:gsub("%(invalid option '", "(unknown signal '")), 3)
  end
  error(r, 0)
end

--- on_signal(name, fn): run fn(name) in a task when the signal arrives;
-- fn = nil restores the default action.
function M.on_signal(name, fn)
  if fn == nil then
    action(core.signal_default, name)
    handlers[name] = nil
    return
  end
  if type(fn) ~= "function" then
    -- checked now: when the signal came, spawn would fail in the signal
    -- task, and with it every later handler
    error("bad argument #2 to 'on_signal' (function or nil expected, got " .. type(fn) .. ")", 2)
  end
  local fd = action(core.signal_catch, name)
  handlers[name] = fn
  if not watcher then
    watcher = {}
    loop.watch(watcher, fd, "read")
    loop.daemon(signal_task)
  end
end

loop.at_fork(function() handlers, watcher = {}, nil end)

return M
