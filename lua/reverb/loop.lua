--- reverb.loop: the scheduler. Tasks are coroutines; the loop resumes them
-- when what they wait for happens: a descriptor is ready, a timer is due,
-- another task wakes them.
--
-- How a wait works. Everything that waits calls `wait(w, dir, deadline)`
-- with a watcher `w` (a table owning a descriptor `w.fd`: a stream, a
-- listener, a datagram socket) and the direction, "read" or "write".
-- Inside a task, the task parks itself in readers[fd] or writers[fd] and
-- yields the private WAIT marker. At top level (a script's main chunk,
-- the REPL) the waiter is MAIN and the loop is run right here until MAIN
-- is woken, so servers and other tasks keep running meanwhile.
--
-- Sockets are registered with epoll once, edge-triggered, for reading;
-- a writer that has to wait re-arms its socket for writing as well, and
-- since epoll_ctl looks at the socket's state again, that wake cannot be
-- missed. So the usual event is "readable", and the usual turn is: find
-- the reader parked on that descriptor, resume it.
--
-- Readiness a waiter has not consumed is kept on the stream: when data
-- comes with no reader waiting the dispatcher marks the stream's state
-- readable (and hung up, on a hang-up); the stream clears it when a short
-- read shows the socket drained, so a call that can complete at once
-- never touches epoll.
--
-- The steps every request takes (resume a task, park it, hand it its
-- epoll event) are in C, csrc/sched.c; what to run when, timers, the run
-- queue and the reporting of failed tasks are here.

local core = require "reverb.core"
local heap = require "reverb.heap"

local create, running, yield, cclose, isyieldable, costatus = coroutine.create,
  coroutine.running, coroutine.yield, coroutine.close, coroutine.isyieldable, coroutine.status
local now = core.now
local traceback = debug.traceback

local sched = core.scheduler()
local resume, park, dispatch = sched.resume, sched.park, sched.dispatch
local WAIT = sched.WAIT                          -- what a parking task yields
local CLOSED = sched.CLOSED   -- dispatch's settle(co, false, CLOSED): a task closed from outside
local DONE, MAIN, START = {}, {}, {}             -- private markers

local poller              -- made on first use, so a fork before it is clean
-- fd -> watcher. Weak: a stream nobody holds is collected and its socket
-- closed by __gc (the kernel then drops it from epoll by itself).
local watchers = setmetatable({}, { __mode = "v" })
-- fd -> the task (or MAIN) waiting to read / to write on it. Indexed by
-- descriptor, so the dispatcher finds a waiter with one array lookup.
local readers, writers = {}, {}
-- Those three grow with the highest descriptor and never shrink by
-- themselves (Lua resizes a table only when a new key does not fit), so
-- after a spike of connections they would keep their size for good, and
-- the collector walk every empty slot on each cycle. When the watchers
-- left are few enough (outgrown, below), the next turn of the loop
-- rebuilds them, and the other tables that grew with the connections, at
-- the size of what is left (compact, below).
local nwatched, most = 0, 0
local compact_due = false
local streams_api         -- stream.c's functions, which hold readers too
local tasks = {}          -- task -> true (daemon tasks: "daemon")
local ntasks = 0          -- live non-daemon tasks: run() returns at 0
local timers = heap.new()
local runq, rargs, qhead, qtail = {}, {}, 1, 0   -- the run queue, a FIFO
local stopping = false
local stepping = false    -- true while the loop runs a step
local main_woken, main_value = false, nil

local M = {}

--- Whether a table that held `most` entries and now holds `left` is worth
-- rebuilding at its new size: an eighth of at least 256 left. (Lua never
-- shrinks a table whose keys are only removed.)
function M.outgrown(left, most_held)
  return most_held >= 256 and left * 8 < most_held
end

local function getpoller()
  if not poller then poller = core.poller() end
  return poller
end

local nfailed = 0   -- tasks that failed, for `reverb run`'s exit status

-- A failed task's report: a system call's failure (an error object) in
-- one line, as the command prints one; anything else, a bug, with the
-- task's traceback.
local function report(co, err)
  nfailed = nfailed + 1
  if core.iserror(err) then
    local ok, msg = pcall(tostring, err)
    if ok and type(msg) == "string" then
      io.stderr:write("reverb: task failed: ", msg, "\n")
      return
    end
  end
  local ok, msg = true, err
  if type(err) ~= "string" then ok, msg = pcall(tostring, err) end   -- a __tostring may raise
  if not ok then   -- and what it raised may be no string either
    local why = type(msg) == "string" and ": " .. msg or ""
    msg = "(an error whose __tostring failed" .. why .. ")"
  end
  io.stderr:write("reverb: task failed: ", traceback(co, msg), "\n")
end

-- Coroutines of finished pooled tasks (spawn_pooled), to run the next.
local pool, npool, POOL_MAX = {}, 0, 64

-- A task is over; a pooled one that ended normally (reusable) waits in
-- the pool for the next spawn_pooled.
local function finish(co, reusable)
  local kind = tasks[co]
  if kind ~= "daemon" then ntasks = ntasks - 1 end
  tasks[co] = nil
  if reusable and kind == "pooled" and npool < POOL_MAX then
    npool = npool + 1
    pool[npool] = co
  end
end

-- Settles what a resume of task co returned: parked again (WAIT),
-- finished (DONE), raised, or yielded something of its own.
local function settle(co, ok, r)
  if r == WAIT then return end
  if r == DONE then return finish(co, true) end
  if r == CLOSED then
    -- closed from outside (coroutine.close) while it waited: it is gone,
    -- which is no failure; one that was never a task is not ours
    if tasks[co] then finish(co) end
    return
  end
  if not ok then
    report(co, r)
  else
    report(co, "coroutine.yield() inside a reverb task: only reverb calls may wait here")
  end
  cclose(co)
  finish(co)
end

-- Resumes a task from the loop with one value: the hot path of every wake.
local function run_task(co, a)
  local ok, r = resume(co, a)   -- (a dead one: false, CLOSED)
  if r ~= WAIT then settle(co, ok, r) end
end

-- A task's body. spawn resumes it at once, as far as its first yield:
-- the coroutine then holds fn and its arguments itself, until the run
-- queue gives it its first turn. (Packing them in a table instead cost a
-- table, its resize and an unpack: a tenth of an accepted connection.)
local function body(fn, ...)
  yield(START)
  fn(...)
  return DONE
end

local function enqueue(co, value)
  qtail = qtail + 1
  runq[qtail], rargs[qtail] = co, value
end

--- Starts fn(...) as a task on the next turn of the loop.
function M.spawn(fn, ...)
  if type(fn) ~= "function" then
    error("bad argument #1 to 'spawn' (function expected, got " .. type(fn) .. ")", 2)
  end
  local co = create(body)
  resume(co, fn, ...)
  tasks[co] = true
  ntasks = ntasks + 1
  enqueue(co, START)
  return co
end

-- A pooled task's coroutine runs one task after another: run() is one
-- task's life (its frame, holding fn and its arguments, ends with it),
-- and between tasks the coroutine waits in the pool, parked at the
-- yield(DONE) that the loop takes as the end of the task.
--
-- Its frames are kept low on purpose. A coroutine starts with 40 stack
-- slots, and every call into C asks for 20 free ones above its
-- arguments; once the frames under a handler's read reach past that,
-- Lua doubles the stack, which cost each connection 640 bytes (a fifth
-- of its memory) and put its stack away from the rest of it. So fn is
-- a tail call (its frame replaces run's) and takes two arguments, not a
-- vararg, whose frame holds its arguments twice.
local function run(fn, a, b)
  yield(START)
  return fn(a, b)
end

local function pooled_body()
  while true do run(yield(DONE)) end
end

--- spawn for tasks nobody else holds (a server's clients): fn(a, b) may
-- run on the coroutine of one that finished. A new coroutine, its stack
-- and its call frames are a third of the allocations of an accepted
-- connection; a reused one costs none.
function M.spawn_pooled(fn, a, b)
  local co = pool[npool]
  if co then
    pool[npool] = nil
    npool = npool - 1
  else
    co = create(pooled_body)
    resume(co)           -- to its first yield(DONE), where pooled ones wait
  end
  resume(co, fn, a, b)   -- run(fn, a, b), parked until its first turn
  tasks[co] = "pooled"
  ntasks = ntasks + 1
  enqueue(co, START)
  return co
end

--- A daemon task does not keep run() going (the signal watcher).
function M.daemon(fn, ...)
  local co = M.spawn(fn, ...)
  tasks[co] = "daemon"
  ntasks = ntasks - 1
  return co
end

--- The waiter for the running code: its task, or MAIN at top level.
local function current()
  local co = running()
  if tasks[co] then
    -- checked before anyone registers the task as a waiter: a yield
    -- refused later would leave it registered, and its wakes would go
    -- to whatever it waits for next
    if not isyieldable() then
      error("reverb: cannot wait here: inside a C call that cannot yield " ..
            "(a metamethod, or a callback of string.gsub or table.sort)", 3)
    end
    return co
  end
  if stepping then
    error("reverb: cannot wait here: not inside a reverb task " ..
          "(a plain coroutine inside a task?)", 3)
  end
  return MAIN
end
M.current = current

--- Wakes a waiter with a value, from any code: queued for the loop.
local function wake(w, value)
  if w == MAIN then
    main_woken, main_value = true, value
  else
    enqueue(w, value)
  end
end
M.wake = wake

local step

-- Parks the running code until woken; returns the wake value.
local function suspend(who)
  if who ~= MAIN then return yield(WAIT) end
  main_woken, main_value = false, nil
  repeat step() until main_woken
  -- taken: a wake left standing would make every later turn poll
  -- without waiting (run() after a top-level wait spun at full CPU)
  local value = main_value
  main_woken, main_value = false, nil
  return value
end

-- Timers are heap entries { t = when, co = waiter }. A watcher's wait
-- with a deadline reuses the watcher's entry for that direction
-- (w.timer for reads, w.wtimer for writes: a reader and a writer may
-- wait at once) instead of pushing a new one per wait: the entry keeps
-- its place in the heap and only its real deadline `due` moves; when it
-- comes up early it is pushed back to `due`. So a connection with a
-- timeout costs one heap entry per direction, not one per read, however
-- fast it reads.
local function add_timer(t, co)
  local e = { t = t, co = co }
  heap.push(timers, e)
  return e
end

-- Watcher entries dropped (their connection closed) or replaced while in
-- the heap: skipped when they come up, and once they are half the heap
-- (and many), the heap is rebuilt without them. Else a busy server with
-- a long idle timeout would keep an entry per closed connection until
-- its deadline: thousands a second, for as long as the timeout.
local ndead = 0

-- (In the heap, live == false marks only these: a watcher's entry that
-- fires leaves the heap first; a sleep's has no live at all.)
local function dead(e)
  e.live, ndead = false, ndead + 1
  if ndead > 256 and ndead * 2 > timers.size then
    timers = heap.filter(timers, function(x) return x.live ~= false end)
    ndead = 0
  end
end

local function watcher_timer(w, write, who, deadline)
  local key = write and "wtimer" or "timer"
  local e = w[key]
  if e and e.live and e.t <= deadline then
    e.due, e.co = deadline, who
    return e
  end
  if e and e.live then dead(e) end   -- one that would fire too late: replaced
  e = { t = deadline, due = deadline, co = who, w = w, write = write, live = true }
  w[key] = e
  heap.push(timers, e)
  return e
end

-- The top level's wait ends: if not by a wake (an error raised through
-- it, as lua5.4's "interrupted!" on Ctrl-C), it must not stay registered,
-- or every later wait on the socket would be refused as a second waiter
-- and its timer would wake some other wait.
local Unwait = { __close = function(g)
  local q, fd, e = g[1], g[2], g[3]
  if q[fd] == MAIN then q[fd] = nil end
  if e and e.co == MAIN then e.co = nil end
end }

-- wait's body, for the waiters in q; `level` is where the caller of
-- wait is, for the error message.
local function wait_on(q, w, fd, dir, deadline, level)
  local other = q[fd]
  if other and other ~= MAIN and costatus(other) == "dead" then
    -- a task closed from outside while it waited here: not a waiter now
    q[fd] = nil
    if tasks[other] then finish(other) end
  end
  if not deadline and not q[fd] then   -- the hot path: a task parks
    local r = park(q, fd)
    if r ~= nil then return r end
  end
  local who = current()
  if q[fd] then
    error("reverb: two tasks wait to " .. dir .. " on one socket at once", level)
  end
  q[fd] = who
  if who == MAIN then
    local e = deadline and watcher_timer(w, q == writers, who, deadline)
    local _ <close> = setmetatable({ q, fd, e }, Unwait)
    return suspend(who)
  end
  if not deadline then return suspend(who) end
  local e = watcher_timer(w, q == writers, who, deadline)
  local r = suspend(who)
  e.co = nil
  return r
end

local READS_ONLY = { __close = function(g)
  local w, fd = g[1], g[2]
  if w.fd == fd then poller:mod(fd, "edge") end
end }

--- Waits until watcher w is ready to "read" or to "write". Returns true
-- when ready, false when the deadline passed, or "closed" when the
-- watcher is closed (or was closed meanwhile).
function M.wait(w, dir, deadline)
  local fd = w.fd
  if not fd then return "closed" end
  if dir ~= "write" then return wait_on(readers, w, fd, dir, deadline, 3) end
  -- A socket is armed for writing only while a writer waits, however the
  -- wait ends: otherwise every later event would say "writable" too, and
  -- dispatch relays a pipe's bytes only for a plain "readable" (sched.c).
  poller:mod(fd, "edge+write")
  local _ <close> = setmetatable({ w, fd }, READS_ONLY)
  return wait_on(writers, w, fd, dir, deadline, 4)
end

--- Parks waiter `who` (from current()) until something calls wake(who).
M.park = suspend

-- Lets the rest of the loop have a turn before the running code goes on
-- (streams call it after many reads and writes in a row that did not
-- wait: see csrc/stream.c). Returns true, as a wake does.
-- A pause is a courtesy: where the running code cannot wait (inside a
-- C call that cannot yield, a plain coroutine inside a task), it goes on.
local function pause()
  local co = running()
  if tasks[co] then
    if not isyieldable() then return true end
    enqueue(co, true)
    return yield(WAIT)
  end
  if stepping then return true end
  main_woken = true   -- top level: a turn that polls but does not wait
  step()
  main_woken = false
  return true
end

--- The C half of reverb.stream (csrc/stream.c) bound to this loop: its
-- reads park on `readers` as wait() does, wait with a deadline or at top
-- level through wait() itself, and pause as above.
function M.streams(slow_write)
  streams_api = sched.streams(readers, M.wait, slow_write, pause)
  return streams_api
end

-- Rebuilds the tables that grow with the connections (the three indexed
-- by descriptor, the tasks, the run queue) at the size of what they
-- hold. Only between turns: dispatch holds the old ones while it runs.
local function compact()
  local r, wr, ws, ts = {}, {}, setmetatable({}, { __mode = "v" }), {}
  for fd, v in pairs(readers) do r[fd] = v end
  for fd, v in pairs(writers) do wr[fd] = v end
  nwatched = 0
  for fd, v in pairs(watchers) do
    ws[fd] = v
    nwatched = nwatched + 1
  end
  for co, kind in pairs(tasks) do ts[co] = kind end
  local q, a, n = {}, {}, 0
  for i = qhead, qtail do
    n = n + 1
    q[n], a[n] = runq[i], rargs[i]
  end
  readers, writers, watchers, tasks = r, wr, ws, ts
  runq, rargs, qhead, qtail = q, a, 1, n
  if streams_api then streams_api.rebind(streams_api, readers) end
  sched.drop_hints()        -- csrc/sched.c's, one per descriptor: made again as tasks park
  most, compact_due = nwatched, false
end

-- Drops the watcher of fd and wakes its waiters: they see "closed". Its
-- timer entries, which wait in the heap until their deadline, let go of it,
-- or a closed connection would be held for as long as its timeout.
local function drop_timer(w, key)
  local e = w[key]
  if e then
    e.co, e.w, w[key] = nil, nil, nil
    if e.live then dead(e) end
  end
end

local function forget(w, fd)
  drop_timer(w, "timer")   -- (no table to loop over: this runs for every closed connection)
  drop_timer(w, "wtimer")
  w.fd = nil
  watchers[fd] = nil
  nwatched = nwatched - 1
  if M.outgrown(nwatched, most) then compact_due = true end
  local r, wr = readers[fd], writers[fd]
  readers[fd], writers[fd] = nil, nil
  if r then wake(r, "closed") end
  if wr then wake(wr, "closed") end
end

--- Registers a watcher for fd: mode "edge" for sockets, "read" for
-- pipes and terminals (level-triggered).
function M.watch(w, fd, mode)
  getpoller():add(fd, mode)
  -- A watcher still on this number lost its descriptor without being
  -- unwatched (its socket was closed under it): it is closed now.
  local old = watchers[fd]
  if old and old ~= w then forget(old, fd) end
  if old ~= w then
    nwatched = nwatched + 1
    if nwatched > most then most = nwatched end
  end
  w.fd = fd
  -- Closing the socket itself closes its watcher (core's setowner): its
  -- waiters are woken, where epoll would forget the descriptor silently.
  local sock = w.socket
  if sock then sock:setowner(w) end
  -- Only a level-triggered watcher (rare: a pipe, a terminal) has the
  -- field, so a connection's table holds four keys, not eight slots' worth.
  if mode ~= nil and mode ~= "edge" then
    w.mode_level = true
  elseif w.mode_level then
    w.mode_level = nil
  end
  watchers[fd] = w
end

--- Forgets a watcher before its descriptor closes, waking its waiters.
function M.unwatch(w)
  local fd = w.fd
  if fd and watchers[fd] == w then
    if w.mode_level then poller:del(fd) end
    forget(w, fd)
  end
end

--- Closes a watcher that owns w.socket: forgets it, wakes its waiters
-- (they see "closed"), closes the socket. True the first time only.
function M.close(w)
  if w.closed then return false end
  w.closed = true
  M.unwatch(w)
  w.socket:close()
  return true
end

local FORGET_TIMER = { __close = function(g) g[1].co = nil end }

function M.sleep(seconds)
  if type(seconds) ~= "number" then
    error("bad argument #1 to 'sleep' (number expected, got " .. type(seconds) .. ")", 2)
  end
  local who = current()
  local e = add_timer(now() + (seconds > 0 and seconds or 0), who)
  -- at top level, one ended by an error (lua5.4's "interrupted!") must
  -- not wake a later wait when its time comes
  local _ <close> = who == MAIN and setmetatable({ e }, FORGET_TIMER) or nil
  suspend(who)
end

local function resume_waiter(co, value)
  if co == MAIN then
    main_woken, main_value = true, value
  else
    run_task(co, value)
  end
end

local function fire_timers(t)
  while timers.size > 0 do
    local e = timers[1]
    if e.t > t then return end
    heap.pop(timers)
    local w, co = e.w, e.co
    if e.live == false then   -- dead (above)
      ndead = ndead - 1
    elseif not w then
      if co then resume_waiter(co, false) end
    elseif e.live and e.due > t then
      e.t = e.due                -- a watcher's deadline moved on: re-arm
      heap.push(timers, e)
    else
      e.live = false
      local fd, q = w.fd, e.write and writers or readers
      if co and fd and q[fd] == co then
        e.co, q[fd] = nil, nil
        resume_waiter(co, false)
      end
    end
  end
end

--- How many timers the heap holds (for specs).
function M.timers()
  return timers.size
end

local function run_queue()
  local last = qtail
  while qhead <= last do
    local i = qhead
    local co, a = runq[i], rargs[i]
    runq[i], rargs[i] = nil, nil
    qhead = i + 1
    run_task(co, a)   -- a new task's first turn too: a is START
  end
end

--- One turn: queued tasks, then I/O (waiting only when nothing is
-- queued), then due timers. From run(), a turn that leaves no task
-- returns before polling, or it would wait for nothing forever.
-- Whatever a step raises (Ctrl-C's "interrupted!" in lua5.4, a report
-- that fails), it is no longer stepping: run() and top-level waits work
-- again.
local STEP_DONE = setmetatable({}, { __close = function() stepping = false end })

function step(from_run)
  stepping = true
  local _ <close> = STEP_DONE
  run_queue()
  if from_run and (ntasks == 0 or stopping) then return end
  local timeout = -1
  if qhead <= qtail or main_woken then
    timeout = 0
  elseif timers.size > 0 then
    timeout = timers[1].t - now()
    if timeout < 0 then timeout = 0 end
  end
  local _, top = dispatch(getpoller(), timeout, watchers, readers, writers, settle)
  if top then main_woken, main_value = true, true end
  if timers.size > 0 then fire_timers(now()) end
  if compact_due then compact() end
end

--- Runs until no task remains or stop() is called.
function M.run()
  -- stepping: a plain coroutine inside a task is not one of tasks, but
  -- a loop run from there would never return to the one it is inside
  if stepping or tasks[running()] then error("reverb.run() called inside a task", 2) end
  stopping = false
  while ntasks > 0 and not stopping do step(true) end
  stopping = false
end

function M.stop()
  stopping = true
end

function M.now()
  return now()
end

--- How many tasks have failed (raised, or yielded outside reverb).
function M.failures()
  return nfailed
end

--- How many tasks keep the loop alive (for tests and the REPL).
function M.count()
  return ntasks
end

-- Modules with state of their own tied to this loop (reverb.signal)
-- register here what to forget after a fork.
local fork_hooks = {}

function M.at_fork(fn)
  fork_hooks[#fork_hooks + 1] = fn
end

--- In a child just forked: forget the parent's loop. The epoll instance,
-- tasks, timers and signal handlers are the parent's; the child starts
-- from nothing but the streams, servers and datagram sockets it shares
-- with the parent, watched again by its own epoll instance.
function M.after_fork()
  local inherited = {}
  for fd, w in pairs(watchers) do
    inherited[fd] = w
    w.timer, w.wtimer = nil, nil   -- entries of the parent's heap
  end
  if poller then poller:close() end
  poller = nil
  watchers = setmetatable({}, { __mode = "v" })
  nwatched, most, compact_due = 0, 0, false
  for fd in pairs(readers) do readers[fd] = nil end   -- kept: streams hold it
  for fd in pairs(writers) do writers[fd] = nil end
  tasks, ntasks, timers, ndead = {}, 0, heap.new(), 0
  runq, rargs, qhead, qtail = {}, {}, 1, 0
  pool, npool = {}, 0
  stopping, stepping, main_woken, main_value = false, false, false, nil
  for fd, w in pairs(inherited) do
    if w.socket then M.watch(w, fd, "edge") else w.fd = nil end   -- (stdin: watched per read)
  end
  for _, fn in ipairs(fork_hooks) do fn() end
end

--- core.fork, and in the child a loop of its own (M.after_fork): sharing
-- the parent's epoll instance, a child's waits took the parent's events.
function M.fork(die_with_parent)
  -- inside a task, the child would go on in the middle of the parent's
  -- turn of the loop, with tasks it does not have
  if stepping or tasks[running()] then
    error("reverb.fork() called inside a task: fork at top level", 2)
  end
  local pid = core.fork(die_with_parent)
  if pid == 0 then M.after_fork() end
  return pid
end

return M
