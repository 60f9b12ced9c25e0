--- spec/misuse_spec.lua: random misuse of reverb.core never crashes.
--
-- Thousands of calls of every function and method with arguments drawn
-- from wrong types, closed sockets, huge and negative sizes. Each call
-- may raise (an argument error or an error object); none may crash the
-- process, and under make check none may touch memory it should not.
-- Unix sockets get their own branch, whose paths all lie in a scratch
-- directory: a random string bound as a path would litter the checkout.
local lu = require "luaunit"
local core = require "reverb.core"
local H = require "helper"

local VALUES = {
  nil, true, false, 0, -1, 1, 65536, math.maxinteger, math.mininteger, 1e308, -1e308, 0 / 0,
  "", "x", "127.0.0.1", "::1", "*", "/tmp/reverb-misuse-nowhere", string.rep("h", 300),
  "inet", "inet6", "stream", "dgram", "read", "write", "both", "edge", "nodelay",
  "linger", "error", "rcvbuf", {}, { on = true, timeout = -5 }, print, coroutine.create(type),
}

local function any()
  return VALUES[math.random(1, #VALUES + 1)]   -- +1: sometimes nil
end

local TestMisuse = H.class()

function TestMisuse.test_random_calls_never_crash()
  math.randomseed(20261124)
  local names = {}
  for name in pairs(core.methods) do names[#names + 1] = name end
  table.sort(names)
  local funcs = { "socket", "socketpair", "error", "iserror", "poller", "now", "isatty",
                  "getrlimit" }   -- not setrlimit: it would lower this runner's own limits
  local p = core.poller()
  -- core.read and core.write get only descriptors of this pair, never the
  -- test runner's own stdin or stdout
  local mine1, mine2 = core.socketpair()
  mine1:setblocking(false)
  mine2:setblocking(false)
  local socks = {}
  local dir = os.tmpname()
  os.remove(dir)
  assert(os.execute("mkdir " .. dir))
  local paths = { dir .. "/a", dir .. "/b", "", string.rep("p", 200), dir .. "/no/such/dir" }
  local outcomes = { ok = 0, raised = 0 }
  local function tally(ok)
    local k = ok and "ok" or "raised"
    outcomes[k] = outcomes[k] + 1
  end
  for i = 1, 20000 do
    local r = math.random()
    if r < 0.1 or #socks == 0 then
      local ok, s = pcall(core.socket, any(), any())
      -- never block: every socket here is non-blocking
      if ok then s:setblocking(false) socks[#socks + 1] = s end
      tally(ok)
    elseif r < 0.2 then
      socks[math.random(#socks)]:close()
    elseif r < 0.25 then
      tally(pcall(core[funcs[math.random(#funcs)]], any(), any()))
    elseif r < 0.3 then
      local fd = (math.random() < 0.5 and mine1 or mine2):fileno()
      tally(pcall(math.random() < 0.5 and core.read or core.write, fd, any(), any()))
    elseif r < 0.4 then
      local u = core.socket("unix", math.random() < 0.5 and "stream" or "dgram")
      u:setblocking(false)
      local m = core.methods[names[math.random(#names)]]
      if m ~= core.methods.setblocking then
        tally(pcall(m, u, paths[math.random(#paths)], any(), any()))
      end
      u:close()
    elseif r < 0.45 then
      tally(pcall(p[({ "add", "mod", "del" })[math.random(3)]], p, any(), any()))
      tally(pcall(p.wait, p, 0, math.random() < 0.5 and {} or any()))   -- 0: never blocks
    else
      local m = core.methods[names[math.random(#names)]]
      if m ~= core.methods.setblocking then
        local target = math.random() < 0.9 and socks[math.random(#socks)] or any()
        tally(pcall(m, target, any(), any(), any()))
      end
    end
    if i % 1000 == 0 then
      for _, x in ipairs(socks) do x:close() end
      socks = {}
      collectgarbage()
    end
  end
  for _, x in ipairs(socks) do x:close() end
  p:close()
  mine1:close()
  mine2:close()
  os.execute("rm -rf " .. dir)
  lu.assertTrue(outcomes.ok > 100 and outcomes.raised > 100,
    outcomes.ok .. " calls succeeded, " .. outcomes.raised .. " raised")
end

-- The stream's C functions check what they are given as self: only a
-- stream's state (a userdata of its own size and tag) in slot 1 will do.
function TestMisuse.test_stream_methods_refuse_what_is_not_a_stream()
  local Stream = require("reverb.stream").Stream
  local sock <close> = core.socket()
  -- fakes[0], absent, is nil
  local fakes = { {}, { 1 }, { io.stdout }, { sock }, { {} }, "x", 5, sock,
                  setmetatable({ io.stdout }, Stream) }
  for _, name in ipairs { "read_some", "read_line", "read_until", "read", "read_all",
                          "write", "pipe", "settimeout", "getstats" } do
    for i = 0, #fakes do
      local ok, err = pcall(Stream[name], fakes[i], any(), any())
      lu.assertFalse(ok, name .. " accepted fake self #" .. i)
      lu.assertStrContains(tostring(err), "bad argument")
    end
  end
  lu.assertErrorMsgContains("reverb.stream expected, got no value", Stream.read_some)
  lu.assertErrorMsgContains("reverb.stream expected", Stream.read_line, { io.stdout })
  lu.assertErrorMsgContains("reverb.stream expected", Stream.write, { sock }, "x")
end

-- The loop's C half is reachable too (core.scheduler): wrong arguments,
-- dead and running coroutines, tasks that park on anything.
function TestMisuse.test_scheduler_misuse_never_crashes()
  math.randomseed(20261125)
  local sched = core.scheduler()
  local p <close> = core.poller()
  local function parker(...) return sched.park(...) end
  for _ = 1, 5000 do
    local r = math.random()
    if r < 0.3 then
      pcall(sched.resume, coroutine.create(parker), any(), any())
    elseif r < 0.5 then
      pcall(sched.resume, any(), any())
    elseif r < 0.6 then
      pcall(sched.resume, coroutine.running())
    elseif r < 0.8 then
      lu.assertEquals(select("#", sched.park(any(), any())), 0, "park outside a task")
    else
      -- never a wait: the real poller gets timeout 0
      pcall(sched.dispatch, math.random() < 0.5 and p or any(), 0, any(), any(), any(), any())
    end
  end
  local ok, msg = sched.resume(coroutine.running())
  lu.assertEquals({ ok, msg }, { false, "cannot resume non-suspended coroutine" })
end

-- A stream's state made by a scheduler that is then dropped keeps what
-- it points into (the scheduler, the receive buffer): reads after the
-- collector ran land in live memory (under make check, AddressSanitizer
-- sees any that does not).
function TestMisuse.test_a_stream_outlives_its_scheduler()
  local Stream = require("reverb.stream").Stream
  local a, b = core.socketpair()
  a:setblocking(false)
  local state = (function()
    local sched = core.scheduler()
    return sched.streams({}, print, print, print).new(a)
  end)()
  collectgarbage()
  collectgarbage()
  local junk = {}
  for i = 1, 2000 do junk[i] = { i, tostring(i) } end   -- takes the freed memory, if any
  local chunk = string.rep("\255", 100000)
  lu.assertEquals(b:send(chunk), #chunk)
  lu.assertTrue(Stream.read_some({ state }) == chunk, "bytes differ")   -- one recv takes it all
  for i = 1, #junk do lu.assertEquals(junk[i][2], tostring(i)) end
  a:close()
  b:close()
end

-- The stream API's rebind replaces an upvalue of its own functions only:
-- given another C closure (string.gmatch's iterator), it replaced that
-- one's state and the next call crashed.
function TestMisuse.test_rebind_touches_only_its_own_functions()
  local api = core.scheduler().streams({}, print, print, print)
  local it = string.gmatch("abc", ".")
  api.rebind({ it, print, function() end }, {})
  lu.assertEquals(it(), "a")
  lu.assertEquals(it(), "b")
end

-- A task parked in a read, resumed by hand with no value (or with
-- several): the read sees a bad wake, not its own state taken for the
-- wake value and then a null pointer.
function TestMisuse.test_a_parked_read_resumed_by_hand()
  local sched = core.scheduler()
  local readers = {}
  local api = sched.streams(readers, function() return false end, print, print)
  local a, b = core.socketpair()
  a:setblocking(false)
  local state = { api.new(a) }
  for _, wake in ipairs { {}, { true, "extra", "values" } } do
    local co = coroutine.create(function() return api.read_some(state) end)
    lu.assertEquals(select("#", sched.resume(co)), 2, "parked")
    readers[a:fileno()] = nil   -- as dispatch does before it wakes a task
    local ok, err = sched.resume(co, table.unpack(wake))
    if #wake == 0 then
      lu.assertFalse(ok)
      lu.assertEquals(err.code, "EBADF")
    else   -- woken as ready: reads again, parks again
      lu.assertTrue(ok)
      lu.assertEquals(coroutine.status(co), "suspended")
      b:send("x")
      readers[a:fileno()] = nil
      lu.assertEquals({ sched.resume(co, true) }, { true, "x" })
    end
  end
  a:close()
  b:close()
end

-- dispatch resumes parked tasks only: the running thread put in its
-- readers table is left alone (it was resumed: "attempt to call a string").
function TestMisuse.test_dispatch_resumes_only_parked_tasks()
  local sched, p = core.scheduler(), core.poller()
  local a, b = core.socketpair()
  a:setblocking(false)
  p:add(a:fileno(), "edge")
  b:send("x")
  local readers = { [a:fileno()] = coroutine.running() }
  lu.assertEquals({ sched.dispatch(p, 0, {}, readers, {}, print) }, { 1, false })
  p:close()
  a:close()
  b:close()
end

return { TestMisuse = TestMisuse }
