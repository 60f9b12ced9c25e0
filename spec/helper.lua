--- spec/helper.lua: what every spec shares.
--
-- * H.class(): a test class whose tearDown checks that the test closed
--   every descriptor it opened (after a full garbage collection).
-- * H.within(seconds, fn, ...): runs fn in a task and the loop until it
--   ends, failing the test after `seconds`: no wait in a spec is unbounded.
--   REVERB_SLOW=1 (make check-valgrind) stretches every bound tenfold.
-- * H.sh(cmd), H.start(cmd), H.stop(pid): subprocesses for end-to-end specs;
--   H.tmpname(): a path for their files.

local lu = require "luaunit"
local reverb = require "reverb"
local core = require "reverb.core"

local H = {}
H.SLOW = os.getenv("REVERB_SLOW") and 10 or 1
H.LUA = os.getenv("LUA") or "lua5.4"

-- Descriptors that live as long as the process exist before any count:
-- the loop's poller and the signal self-pipe.
reverb.sleep(0)
core.signal_catch("WINCH")
core.signal_default("WINCH")

--- Open descriptors of this process, listed by `ls` into a file. Not
-- through io.popen: its `ls` may run before this process has closed the
-- child's end of the pipe and count it, so a reading could be one too
-- many (a test failed about one run in twenty that way). os.execute
-- opens nothing here while `ls` looks.
local listing = os.tmpname()
H._remove_listing = setmetatable({}, { __gc = function() os.remove(listing) end })
function H.fds()
  assert(os.execute("ls /proc/" .. core.getpid() .. "/fd > " .. listing))
  local n = 0
  for _ in io.lines(listing) do n = n + 1 end
  return n
end

-- Processes a test started and has not stopped: its tearDown stops them,
-- so a failing test leaves no server running.
local started = {}

function H.class()
  local C = {}
  -- A stream an earlier test left to the collector would close its
  -- descriptor during this one: collect before counting.
  function C.setUp()
    collectgarbage()
    collectgarbage()
    C._fds = H.fds()
  end
  -- Peers' handlers may still be closing their ends: give the loop a
  -- bounded moment to settle before counting.
  function C.tearDown()
    for pid in pairs(started) do H.stop(pid) end
    local deadline = reverb.now() + 2 * H.SLOW
    repeat
      collectgarbage()
      collectgarbage()
      if H.fds() == C._fds then return end
      reverb.sleep(0.005)
    until reverb.now() > deadline
    lu.assertEquals(H.fds(), C._fds, "descriptors leaked by this test")
  end
  return C
end

function H.within(seconds, fn, ...)
  local res
  reverb.spawn(function(...) res = table.pack(pcall(fn, ...)) end, ...)
  local deadline = reverb.now() + seconds * H.SLOW
  while not res and reverb.now() < deadline do reverb.sleep(0.005) end
  if not res then error("did not finish within " .. seconds * H.SLOW .. " s", 2) end
  if not res[1] then error(res[2], 0) end
  return table.unpack(res, 2, res.n)
end

-- Every wait in a spec is bounded: streams and datagram sockets made
-- through these raise ETIMEDOUT instead of hanging when a peer misbehaves.
local BOUND = 10

--- reverb.connect with a timeout unless the spec sets one.
function H.connect(host, port, opts)
  if type(host) == "table" then host, port, opts = nil, nil, host end
  opts = setmetatable({}, { __index = opts or {} })
  if opts.timeout == nil then opts.timeout = BOUND * H.SLOW end
  if host then return reverb.connect(host, port, opts) end
  return reverb.connect(opts)
end

--- reverb.udp with a timeout.
function H.udp(...)
  return reverb.udp(...):settimeout(BOUND * H.SLOW)
end

--- The handler most specs serve: each line back.
function H.echo_lines(conn)
  for line in conn:lines() do conn:write(line, "\n") end
end

--- Two streams joined by a unix socketpair, closed when the pair goes
-- out of scope (`local p <close> = H.stream_pair()`); opts as stream.new.
function H.stream_pair(opts)
  local stream = require "reverb.stream"
  local a, b = core.socketpair()
  a:setblocking(false)
  b:setblocking(false)
  local p = { stream.new(a, "a", opts), stream.new(b, "b", opts) }
  return setmetatable(p, { __close = function(t) t[1]:close() t[2]:close() end })
end

--- Whether a file of any kind (a socket's too, which io.open cannot
-- open) exists at path.
function H.exists(path)
  return os.rename(path, path) ~= nil
end

--- Asserts that fn(...) raises an error object with this code.
function H.raises(code, fn, ...)
  local ok, err = pcall(fn, ...)
  lu.assertFalse(ok, "expected an error " .. code)
  lu.assertTrue(core.iserror(err), "not an error object: " .. tostring(err))
  lu.assertEquals(err.code, code, tostring(err))
  return err
end

local function quote(cmd)
  return "'" .. cmd:gsub("'", "'\\''") .. "'"
end

--- A fresh path that names no file yet (os.tmpname makes the file: it
-- is removed), for a socket, a script with a suffix, an output.
function H.tmpname()
  local path = os.tmpname()
  os.remove(path)
  return path
end

--- A new file under a fresh name (ending in suffix, if given) holding
-- text: a script for a test to run. Returns its path.
function H.file(text, suffix)
  local path = H.tmpname() .. (suffix or "")
  local f = assert(io.open(path, "w"))
  f:write(text)
  f:close()
  return path
end

--- Runs a shell command to completion, but for at most a minute (status
-- 124 then): its output, and its exit status.
function H.sh(cmd)
  local bound = "timeout -k 5 " .. 60 * H.SLOW .. " sh -c " .. quote(cmd)
  local p = io.popen(bound .. " 2>&1; echo \"exit=$?\"")
  local out = p:read("a")
  p:close()
  local body, status = out:match("^(.-)exit=(%d+)\n$")
  return body, tonumber(status)
end

--- Starts a command in the background, output to a file; returns the pid
-- and the output file's name.
function H.start(cmd)
  local out = os.tmpname()
  local p = io.popen("exec sh -c " .. quote(cmd) .. " >" .. out .. " 2>&1 </dev/null & echo $!")
  local pid = tonumber(p:read("l"))
  p:close()
  started[pid] = true
  return pid, out
end

--- Whether a process runs (a zombie does not). Started processes are
-- the shell's children, not ours, so /proc tells, not waitpid.
function H.alive(pid)
  local f = io.open("/proc/" .. pid .. "/stat")
  if not f then return false end
  local stat = f:read("a")
  f:close()
  return stat:match("^%d+ %b() (%a)") ~= "Z"
end

--- Waits (bounded) until the process has exited; true when it has.
function H.wait_exit(pid, seconds)
  local deadline = reverb.now() + (seconds or 5) * H.SLOW
  while reverb.now() < deadline do
    if not H.alive(pid) then
      started[pid] = nil   -- gone: its number may be reused, never signal it
      return true
    end
    reverb.sleep(0.01)
  end
  return false
end

function H.stop(pid)
  started[pid] = nil
  pcall(core.kill, pid, "TERM")
  if not H.wait_exit(pid, 5) then pcall(core.kill, pid, "KILL") end
end

--- Waits (bounded) until the file holds a line matching pattern; returns
-- the capture.
function H.await_output(file, pattern, seconds)
  local deadline = reverb.now() + (seconds or 5) * H.SLOW
  while reverb.now() < deadline do
    local f = io.open(file)
    local text = f and f:read("a") or ""
    if f then f:close() end
    local cap = text:match(pattern)
    if cap then return cap, text end
    reverb.sleep(0.01)
  end
  local f = io.open(file)
  error("no output matching " .. pattern .. " in: " .. (f and f:read("a") or "?"), 2)
end

function H.slurp(file)
  local f = assert(io.open(file))
  local s = f:read("a")
  f:close()
  return s
end

--- pcall(fn, ...) with lua5.4's Ctrl-C played: its "interrupted!" raised
-- as the loop takes its next turn (in a wait at top level).
function H.interrupted(fn, ...)
  debug.sethook(function()
    if debug.getinfo(2, "n").name == "step" then
      debug.sethook()
      error("interrupted!")
    end
  end, "c")
  local res = table.pack(pcall(fn, ...))
  debug.sethook()
  return table.unpack(res, 1, res.n)
end

--- Whether this machine has ::1.
function H.has_ipv6()
  local ok = pcall(function()
    local s <close> = core.socket("inet6")
    s:bind("::1", 0)
  end)
  return ok
end

--- Whether strace can trace here (ptrace may be refused in a container):
-- the specs that count system calls skip where it cannot.
function H.can_strace()
  local _, status = H.sh("strace -o /dev/null true")
  return status == 0
end

return H
