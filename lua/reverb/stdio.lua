--- reverb.stdio: standard input and output for the command line, on the
-- loop: a read of stdin waits like any reverb call, so servers and other
-- tasks run while a person types or a pipe is slow.
--
-- stdin is watched level-triggered only while someone waits on it (an
-- idle stdin at end of file would otherwise wake the loop forever). A
-- regular file cannot be watched by epoll and never blocks: it is read
-- directly.

local core = require "reverb.core"
local loop = require "reverb.loop"

local M = {}
local pollable = true
local stdin = {}

--- The next chunk of stdin (at most max bytes), or nil at end of input.
function M.read(max)
  if pollable then
    local ok, err = pcall(loop.watch, stdin, 0, "read")
    if ok then
      loop.wait(stdin, "read")
      loop.unwatch(stdin)
    elseif core.iserror(err) and err.code == "EPERM" then
      pollable = false
    else
      error(err, 0)
    end
  end
  local data = core.read(0, max or 65536)
  if data == "" then return nil end
  return data
end

--- Writes all of data to stdout (fd 1), unbuffered.
function M.write(data)
  local i = 1
  while i <= #data do
    local n = core.write(1, data, i)
    if n then i = i + n else loop.sleep(0.001) end
  end
end

return M
