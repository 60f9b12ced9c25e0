--- spec/stream_spec.lua: buffered reads and writes, over socketpairs.
local lu = require "luaunit"
local reverb = require "reverb"
local core = require "reverb.core"
local H = require "helper"

local pair = H.stream_pair

local TestStream = H.class()

function TestStream.test_read_line_strips_newline_and_cr()
  local p <close> = pair()
  p[1]:write("one\ntwo\r\n\nlast")
  p[1]:shutdown("write")
  H.within(5, function()
    lu.assertEquals(p[2]:read_line(), "one")
    lu.assertEquals(p[2]:read_line(), "two")
    lu.assertEquals(p[2]:read_line(), "")
    lu.assertEquals(p[2]:read_line(), "last", "a last line without \\n")
    lu.assertNil(p[2]:read_line())
    lu.assertNil(p[2]:read_line())
  end)
end

function TestStream.test_bytes_arriving_one_at_a_time()
  local p <close> = pair()
  local text = "hello world\r\nsecond line\nxyz"
  reverb.spawn(function()
    for i = 1, #text do
      p[1]:write(text:sub(i, i))
      reverb.sleep(0)
    end
    p[1]:shutdown("write")
  end)
  H.within(5, function()
    lu.assertEquals(p[2]:read_line(), "hello world")
    lu.assertEquals(p[2]:read_until("line"), "second ")
    lu.assertEquals(p[2]:read(2), "\nx")
    local none, partial = p[2]:read(5)
    lu.assertNil(none)
    lu.assertEquals(partial, "yz")
  end)
end

--- A task parked in a read has its call frames and its stream table's
--- parts prefetched when the loop wakes it, addresses only Lua's own
--- structs tell (csrc/peek.c), whose layout is checked against the
--- running Lua. Off, everything works, only slower at thousands of
--- connections: this says when a new Lua has turned it off.
function TestStream.test_this_lua_lets_dispatch_prefetch_parked_frames()
  lu.assertTrue(core.scheduler().peeking,
    "csrc/peek.c's offsets do not match this Lua: parked frames are not prefetched")
end

--- Reads park from any frame, in a stream of any shape, and wake with
--- their data: from the task's own function, from a Lua function fifty
--- calls deep, in a stream with a hash part of a thousand fields.
function TestStream.test_reads_parked_from_any_frame_wake_with_their_data()
  local p <close> = pair()
  for i = 1, 1000 do p[2]["field" .. i] = i end
  local function deep(n)
    if n == 0 then return p[2]:read_line() end
    return (deep(n - 1))   -- (not a tail call: the frames stay)
  end
  reverb.spawn(function()
    for _, piece in ipairs { "one\n", "two\n", "three" } do
      reverb.sleep(0.01)   -- each read parks before its data comes
      p[1]:write(piece)
    end
  end)
  lu.assertEquals({ H.within(5, function()
    return p[2]:read_line(), deep(50), p[2]:read_some()
  end) }, { "one", "two", "three" })
end

--- A read that paused to let the loop have a turn (after 64 calls in a
--- row; 1,000 here, whatever the number becomes) learns nothing about
--- its socket from the pause: once the buffer is empty it waits for
--- epoll, as any read after a short receive does. (The pause's wake
--- marked the socket readable, and the next read paid a recv that said
--- EAGAIN.) Counted with strace, in a script of its own.
function TestStream.test_a_paused_read_makes_no_recv_that_says_eagain()
  if not H.can_strace() then return lu.skip("strace cannot trace here") end
  local script = H.file([[
local reverb = require "reverb"
local core = require "reverb.core"
local stream = require "reverb.stream"
local a, b = core.socketpair()
a:setblocking(false)
b:setblocking(false)
local w, r = stream.new(a, "a"), stream.new(b, "b")
w:write(string.rep("line\n", 1000))   -- 1,000 reads from one receive: pauses among them
reverb.spawn(function()
  for _ = 1, 1000 do assert(r:read_line() == "line") end
  io.write(r:read_line(), "\n")
end)
reverb.spawn(function() reverb.sleep(0.05) w:write("late\n") end)
reverb.run()
]], ".lua")
  local trace = H.tmpname()
  local out, status = H.sh(("strace -f -e trace=recvfrom -o %s %s %s"):format(trace, H.LUA, script))
  lu.assertEquals({ out, status }, { "late\n", 0 })
  local calls = H.slurp(trace)
  lu.assertStrContains(calls, '"late')   -- (the trace is of the right reads)
  lu.assertNotStrContains(calls, "EAGAIN")
  os.remove(trace)
  os.remove(script)
end

function TestStream.test_line_longer_than_max_line_raises()
  local p <close> = pair { max_line = 100 }
  reverb.spawn(function() p[1]:write(string.rep("x", 1000), "\n") end)
  H.within(5, function()
    local err = H.raises("EMSGSIZE", p[2].read_line, p[2])
    lu.assertStrContains(err.message, "100 bytes")
  end)
end

-- max_line bounds the line read_line returns: a "\r\n" does not count.
function TestStream.test_a_line_of_max_line_bytes_passes_with_crlf()
  local p <close> = pair { max_line = 10 }
  p[1]:write("0123456789\r")   -- its "\n" not here yet
  reverb.spawn(function() reverb.sleep(0.01) p[1]:write("\n0123456789\n01234567890\r\n") end)
  H.within(5, function()
    lu.assertEquals(p[2]:read_line(), "0123456789")
    lu.assertEquals(p[2]:read_line(), "0123456789")
    H.raises("EMSGSIZE", p[2].read_line, p[2])
  end)
end

function TestStream.test_long_line_in_many_chunks_is_linear()
  -- 4 MiB in 4 KiB writes: a quadratic buffer would copy ~2 TB
  local p <close> = pair { max_line = 8 << 20 }
  local piece = string.rep("a", 4096)
  reverb.spawn(function()
    for _ = 1, 1024 do p[1]:write(piece) end
    p[1]:write("\n")
  end)
  local line = H.within(20, p[2].read_line, p[2])
  lu.assertEquals(#line, 4 << 20)
end

function TestStream.test_read_until_delimiter_split_across_chunks()
  local p <close> = pair()
  reverb.spawn(function()
    for _, piece in ipairs { "GET / HTTP/1.0\r", "\n", "Host: x\r\n\r", "\nbody" } do
      p[1]:write(piece)
      reverb.sleep(0.001)
    end
    p[1]:close()
  end)
  H.within(5, function()
    lu.assertEquals(p[2]:read_until("\r\n\r\n"), "GET / HTTP/1.0\r\nHost: x")
    local none, partial = p[2]:read_until("\r\n")
    lu.assertNil(none)
    lu.assertEquals(partial, "body")
  end)
  lu.assertErrorMsgContains("non-empty string", p[2].read_until, p[2], "")
end

function TestStream.test_read_some_read_all_and_lines()
  local p <close> = pair()
  p[1]:write("abcdef")
  H.within(5, function()
    lu.assertEquals(p[2]:read_some(4), "abcd")
    lu.assertEquals(p[2]:read_some(), "ef")
    p[1]:write("l1\nl2\n", 3, "\n")
    local lines = {}
    for l in p[2]:lines() do
      lines[#lines + 1] = l
      if #lines == 3 then break end
    end
    lu.assertEquals(lines, { "l1", "l2", "3" })
    p[1]:write("rest of it")
    p[1]:shutdown("write")
    lu.assertEquals(p[2]:read_all(), "rest of it")
    lu.assertEquals(p[2]:read_all(), "")
    lu.assertNil(p[2]:read_some())
  end)
end

function TestStream.test_getstats_counts_bytes_each_way()
  local p <close> = pair()
  local got, sent = p[1]:getstats()
  lu.assertEquals({ got, sent }, { 0, 0 })
  p[1]:write("hello", 12, "\n")
  p[2]:write("hi")
  H.within(5, function()
    lu.assertEquals(p[2]:read_line(), "hello12")
    lu.assertEquals(p[1]:read(2), "hi")
  end)
  local age
  got, sent, age = p[1]:getstats()
  lu.assertEquals({ got, sent }, { 2, 8 })
  lu.assertTrue(age >= 0 and age < 60, "age " .. age)
  got, sent = p[2]:getstats()
  lu.assertEquals({ got, sent }, { 8, 2 })
  -- what did not go out is not counted: a write to a closed stream
  p[2]:close()
  H.raises("EBADF", p[2].write, p[2], "lost")
  lu.assertEquals(select(2, p[2]:getstats()), 2)
  -- and a write the kernel takes in parts counts every part once
  local q <close> = pair()
  local big = string.rep("x", 1 << 21)
  reverb.spawn(function() q[1]:write(big) end)
  local read = 0
  H.within(10, function()
    while read < #big do read = read + #q[2]:read_some() end
  end)
  lu.assertEquals(select(2, q[1]:getstats()), #big)
end

function TestStream.test_write_checks_its_arguments()
  local p <close> = pair()
  lu.assertErrorMsgContains("bad argument #2 to 'write' (string expected, got table)",
    p[1].write, p[1], "x", {})
  lu.assertErrorMsgContains("non-negative integer", p[1].read, p[1], -1)
  lu.assertErrorMsgContains("non-negative integer", p[1].read, p[1], 1.5)
  -- an integral float counts as the integer, as Lua's own checks take it
  p[1]:write("abcdef")
  H.within(5, function()
    lu.assertEquals(p[2]:read(4 / 2), "ab")
    lu.assertEquals(p[2]:read_some(2.0), "cd")
  end)
end

function TestStream.test_timeouts_raise_etimedout()
  local p <close> = pair()
  p[2]:settimeout(0.02)
  local t0 = reverb.now()
  local err = H.within(5, H.raises, "ETIMEDOUT", p[2].read_line, p[2])
  lu.assertTrue(reverb.now() - t0 >= 0.02)
  lu.assertEquals(err.op, "read_line")
  lu.assertEquals(err.address, "b")
  p[2]:settimeout(nil)
  p[1]:write("still usable\n")
  lu.assertEquals(H.within(5, p[2].read_line, p[2]), "still usable")
  lu.assertErrorMsgContains("non-negative number", p[2].settimeout, p[2], -1)
  lu.assertErrorMsgContains("non-negative number", p[2].settimeout, p[2], 0 / 0)
end

function TestStream.test_concurrent_writers_never_interleave()
  local p <close> = pair()
  local BLOCK = 256 * 1024
  local blocks = { A = string.rep("A", BLOCK), B = string.rep("B", BLOCK) }
  local finished = 0
  for _, who in ipairs { "A", "B" } do
    reverb.spawn(function()
      for _ = 1, 16 do p[1]:write(blocks[who]) end   -- 4 MiB each
      finished = finished + 1
      if finished == 2 then p[1]:shutdown("write") end
    end)
  end
  local all = H.within(30, p[2].read_all, p[2])
  lu.assertEquals(#all, 2 * 16 * BLOCK)
  for run in all:gmatch("A+") do lu.assertEquals(#run % BLOCK, 0, "an A write was split") end
  for run in all:gmatch("B+") do lu.assertEquals(#run % BLOCK, 0, "a B write was split") end
end

function TestStream.test_a_slow_reader_slows_the_writer()
  local p <close> = pair()
  local wrote = false
  reverb.spawn(function()
    p[1]:write(string.rep("x", 16 << 20))
    wrote = true
  end)
  reverb.sleep(0.05)
  lu.assertFalse(wrote, "16 MiB cannot fit in the kernel: write must wait")
  local n = 0
  H.within(20, function()
    while n < 16 << 20 do n = n + #p[2]:read_some() end
  end)
  reverb.sleep(0)
  lu.assertTrue(wrote)
end

function TestStream.test_half_close()
  local p <close> = pair()
  H.within(5, function()
    p[1]:write("question")
    p[1]:shutdown("write")
    lu.assertEquals(p[2]:read_all(), "question")
    p[2]:write("answer")
    p[2]:close()
    lu.assertEquals(p[1]:read_all(), "answer")
  end)
end

function TestStream.test_closed_stream_raises_ebadf()
  local p <close> = pair()
  p[1]:close()
  lu.assertEquals(tostring(p[1]), "reverb.stream: closed")
  H.raises("EBADF", p[1].write, p[1], "x")
  H.raises("EBADF", p[1].read_line, p[1])
  lu.assertTrue(p[1]:close())
end

function TestStream.test_close_wakes_a_waiting_reader()
  local p <close> = pair()
  local err
  reverb.spawn(function() err = select(2, pcall(p[2].read_line, p[2])) end)
  reverb.sleep(0.01)
  p[2]:close()
  reverb.sleep(0.01)
  lu.assertTrue(core.iserror(err))
  lu.assertEquals(err.code, "EBADF")
end

-- Closing the socket itself, not the stream, wakes the stream's reader at
-- once and closes the stream: epoll forgets a closed descriptor without
-- an event, and the reader waited until its number was reused (for ever,
-- and run() with it).
function TestStream.test_closing_the_socket_under_a_waiting_reader_wakes_it()
  local p <close> = pair()
  local err
  reverb.spawn(function() err = select(2, pcall(p[2].read_line, p[2])) end)
  reverb.sleep(0.01)
  p[2].socket:close()
  H.within(5, function() while err == nil do reverb.sleep(0.001) end end)
  lu.assertTrue(core.iserror(err))
  lu.assertEquals(err.code, "EBADF")
  lu.assertTrue(p[2].closed)
end

-- A second reader is refused as it goes to wait, and the search it made
-- first must not cost the parked read_until its delimiter: with "ab"
-- buffered, a refused read_line marked the buffer searched, and "abc"
-- was then looked for only after "ab".
function TestStream.test_a_refused_second_reader_leaves_the_first_its_search()
  local p <close> = pair()
  local got
  reverb.spawn(function() got = { p[2]:read_until("abc") } end)
  p[1]:write("ab")
  reverb.sleep(0.01)
  local err = select(2, pcall(p[2].read_line, p[2]))
  lu.assertStrContains(tostring(err), "two tasks wait to read")
  p[1]:write("cZZ")
  H.within(5, function() while not got do reverb.sleep(0.001) end end)
  lu.assertEquals(got, { "" })
  lu.assertEquals(p[2]:read(2), "ZZ")
end

-- An error raised through a wait at top level (lua5.4 raises
-- "interrupted!" on Ctrl-C; here a hook as the loop takes its turn)
-- leaves the stream usable: the wait used to stay registered, and every
-- later read was refused as a second reader.
function TestStream.test_an_error_through_a_top_level_wait_leaves_it_usable()
  local p <close> = pair({ timeout = 5 * H.SLOW })
  local ok, err = H.interrupted(p[2].read_line, p[2])
  lu.assertFalse(ok)
  lu.assertStrContains(err, "interrupted!")
  p[1]:write("hello\n")
  lu.assertEquals(p[2]:read_line(), "hello")
end

-- A write that fails part-way says how much of it went out (err.sent),
-- as LuaSocket's send tells its last index: the rest can be sent again
-- without sending anything twice.
function TestStream.test_a_failed_write_says_how_much_went_out()
  local p <close> = pair({ timeout = 0.05 })
  local parts = {}
  for i = 1, 200000 do parts[i] = string.format("%09d\n", i) end
  local data = table.concat(parts)   -- 2 MB, every line different
  local err = H.raises("ETIMEDOUT", p[1].write, p[1], data)
  lu.assertTrue(err.sent > 0 and err.sent < #data, "sent " .. tostring(err.sent))
  local got = {}
  reverb.spawn(function() got[#got + 1] = p[2]:read(#data) end)
  p[1]:settimeout(5 * H.SLOW)
  p[1]:write(data:sub(err.sent + 1))
  H.within(5, function() while not got[1] do reverb.sleep(0.001) end end)
  lu.assertTrue(got[1] == data, "every byte once, in order")
  -- one on a closed stream, or that fails at once, sent nothing
  local q = pair()
  q[1]:close()
  lu.assertEquals(H.raises("EBADF", q[1].write, q[1], "x").sent, 0)
  q[2]:close()
  p[2].socket:setoption("linger", 0)
  p[2]:close()
  local gone = select(2, pcall(function() for _ = 1, 100 do p[1]:write("x") end end))
  lu.assertTrue(core.iserror(gone), tostring(gone))
  lu.assertEquals(gone.sent, 0)
end

-- A task closed from outside (coroutine.close) while it waits lets go of
-- the stream: its read, its write lock, its place in the writers' queue.
-- It is no failure, and it keeps no run() going. (Later reads were
-- refused as a second reader, the lock stayed held for good, and run()
-- waited for the closed tasks for ever.)
function TestStream.test_a_task_closed_while_it_waits_lets_go_of_the_stream()
  local loop = require "reverb.loop"
  local failures = loop.failures()
  local p <close> = pair()
  local reader = reverb.spawn(function() p[2]:read_line() end)
  reverb.sleep(0.01)
  lu.assertTrue(coroutine.close(reader))
  p[1]:write("one\n")
  lu.assertEquals(p[2]:read_line(), "one")
  local big = string.rep("y", 8 * 1024 * 1024)
  local holder = reverb.spawn(function() p[1]:write(big) end)        -- waits for room
  reverb.sleep(0.01)
  local queued = reverb.spawn(function() p[1]:write("never\n") end) -- waits for the lock
  reverb.spawn(function() p[1]:write("third\n") end)           -- queued after it
  reverb.sleep(0.01)
  -- the holder first: its lock goes to the queued writer, closed in
  -- turn before it runs, which passes the lock on to the third
  lu.assertTrue(coroutine.close(holder))
  lu.assertTrue(coroutine.close(queued))
  local got = {}
  reverb.spawn(function()
    repeat got[#got + 1] = p[2]:read_some() until got[#got]:find("third\n$")
  end)
  H.within(10, function()
    while not (got[#got] or ""):find("third\n$") do reverb.sleep(0.001) end
  end)
  reverb.sleep(0.01)
  local all = table.concat(got)
  lu.assertNil(all:find("never"))
  lu.assertStrContains(all, "third\n")
  lu.assertEquals(loop.count(), 0)
  lu.assertEquals(loop.failures(), failures)
end

-- The loop's pause after many calls in a row that did not wait is a
-- courtesy: where the code cannot wait (a string.gsub callback, a plain
-- coroutine inside a task), calls that need no wait go on working (the
-- 65th raised "cannot wait here").
function TestStream.test_calls_that_need_no_wait_work_where_no_wait_can_happen()
  local p <close> = pair()
  local done
  reverb.spawn(function()
    (("x"):rep(200)):gsub("x", function() p[1]:write("item\n") end)
    local lines = coroutine.wrap(function()
      for _ = 1, 200 do coroutine.yield(p[2]:read_line()) end
    end)
    for _ = 1, 200 do assert(lines() == "item") end
    done = true
  end)
  H.within(5, function() while not done do reverb.sleep(0.001) end end)
  lu.assertTrue(done)
end

-- settimeout() is settimeout(nil), as in LuaSocket: no timeout.
function TestStream.test_settimeout_with_no_argument_clears_it()
  local p <close> = pair({ timeout = 0.01 })
  H.raises("ETIMEDOUT", p[2].read_line, p[2])
  lu.assertIs(p[2]:settimeout(), p[2])
  reverb.spawn(function() reverb.sleep(0.05) p[1]:write("late\n") end)
  lu.assertEquals(H.within(5, p[2].read_line, p[2]), "late")
end

-- The events an epoll instance of this process (the loop's: the one
-- that watches fd) watches fd for, as the kernel tells them in
-- /proc/PID/fdinfo.
local function epoll_mask(fd)
  local pid = core.getpid()
  local ls = io.popen("ls -l /proc/" .. pid .. "/fd")
  for l in ls:lines() do
    local ep = l:match(" (%d+) %-> anon_inode:%[eventpoll%]")
    for info in ep and io.lines("/proc/" .. pid .. "/fdinfo/" .. ep) or function() end do
      local t, ev = info:match("^tfd:%s+(%d+)%s+events:%s+(%x+)")
      if tonumber(t) == fd then
        ls:close()
        return tonumber(ev, 16)
      end
    end
  end
  ls:close()
  error("no epoll instance watches " .. fd)
end

-- A writer that has to wait arms its socket for writing only while it
-- waits: afterwards the socket is watched for reading alone. (It stayed
-- armed, so every later event said "writable" too, and the loop's relay,
-- which moves a pipe's bytes only for a plain "readable", was off for
-- good on that connection.)
function TestStream.test_a_socket_is_armed_for_writing_only_while_a_writer_waits()
  local p <close> = pair()
  local EPOLLOUT, fd = 0x4, p[1].socket:fileno()
  lu.assertEquals(epoll_mask(fd) & EPOLLOUT, 0)
  local big, wrote = string.rep("x", 8 * 1024 * 1024), false
  reverb.spawn(function() p[1]:write(big) wrote = true end)
  reverb.sleep(0.01)
  lu.assertFalse(wrote, "the writer waits for room")
  lu.assertEquals(epoll_mask(fd) & EPOLLOUT, EPOLLOUT)
  lu.assertEquals(#H.within(5, p[2].read, p[2], #big), #big)
  H.within(5, function() while not wrote do reverb.sleep(0.001) end end)
  lu.assertEquals(epoll_mask(fd) & EPOLLOUT, 0)
  -- and when the wait does not end well: here, its task closed from
  -- outside while it waits for room
  local writer = reverb.spawn(function() p[1]:write(big) end)
  reverb.sleep(0.01)
  lu.assertEquals(epoll_mask(fd) & EPOLLOUT, EPOLLOUT)
  lu.assertTrue(coroutine.close(writer))
  lu.assertEquals(epoll_mask(fd) & EPOLLOUT, 0)
end

-- Readers wait in a table indexed by descriptor: a socket closed under its
-- stream (not through it) must not leave its reader on the number that the
-- next socket gets.
function TestStream.test_a_socket_closed_under_a_waiting_reader()
  -- forgotten sockets closed now, not by a GC step mid-test, which would
  -- free a lower descriptor for the new pair to take instead
  collectgarbage()
  collectgarbage()
  local old <close> = pair()
  local err
  reverb.spawn(function() err = select(2, pcall(old[2].read_line, old[2])) end)
  reverb.sleep(0.01)
  local fd = old[2].socket:fileno()
  old[2].socket:close()
  local new <close> = pair()
  lu.assertTrue(new[1].socket:fileno() == fd or new[2].socket:fileno() == fd,
                "the new pair reuses the descriptor")
  reverb.sleep(0.01)
  lu.assertTrue(core.iserror(err))
  lu.assertEquals(err.code, "EBADF")
  new[1]:write("still here\n")
  new[2]:settimeout(10 * H.SLOW)
  lu.assertEquals(new[2]:read_line(), "still here")
end

-- A reader and a writer may wait on one stream at once, each with its
-- own deadline: neither's wait may take the other's timer away.
function TestStream.test_a_timed_reader_and_writer_wait_at_once()
  local p <close> = pair({ timeout = 0.05 })
  local read_err, write_err
  reverb.spawn(function() read_err = select(2, pcall(p[2].read_line, p[2])) end)
  reverb.spawn(function()   -- to a peer that never reads: the kernel fills
    write_err = select(2, pcall(p[2].write, p[2], string.rep("x", 8 << 20)))
  end)
  H.within(5, function() while not (read_err and write_err) do reverb.sleep(0.005) end end)
  lu.assertEquals({ read_err.code, write_err.code }, { "ETIMEDOUT", "ETIMEDOUT" })
end

-- A search remembers how far it looked only within its own call: the
-- next call may look for another delimiter, one the buffer already holds.
function TestStream.test_a_search_that_raised_hides_no_other_delimiter()
  local p <close> = pair({ max_line = 4 })
  p[1]:write("abcdefgh|rest")
  H.within(5, function()
    H.raises("EMSGSIZE", p[2].read_line, p[2])
    lu.assertEquals(p[2]:read_until("|"), "abcdefgh")
  end)
  local q <close> = pair({ timeout = 0.05 })
  q[1]:write("xyzab")
  H.within(5, function()
    H.raises("ETIMEDOUT", q[2].read_until, q[2], "ba")
    lu.assertEquals(q[2]:read_until("z"), "xy")
  end)
end

-- pipe: a relay a -> b. What a read left buffered goes first, then every
-- chunk in order; 2 MiB through a reader that takes its time fills the
-- destination's socket buffer, so the slow write (a copy of the chunk
-- the kernel did not take) carries part of it.
function TestStream.test_pipe_relays_everything_in_order()
  local src <close> = pair()
  local dst <close> = pair()
  src[2]:settimeout(nil)   -- the parked read, the path of every request
  local chunks = { "first line\nbuffered rest|" }
  for i = 1, 64 do chunks[#chunks + 1] = string.rep(string.char(64 + i % 26), 32768) end
  local want = table.concat(chunks)
  reverb.spawn(function()
    for _, c in ipairs(chunks) do src[1]:write(c) end
    src[1]:shutdown("write")
  end)
  local moved
  reverb.spawn(function()
    lu.assertEquals(src[2]:read_line(), "first line")
    moved = src[2]:pipe(dst[1])
    dst[1]:shutdown("write")
  end)
  local got = H.within(20, function()
    local parts = {}
    while true do
      reverb.sleep(0.001)   -- a slow reader
      local d = dst[2]:read_some(65536)
      if not d then return table.concat(parts) end
      parts[#parts + 1] = d
    end
  end)
  lu.assertEquals(#got, #want - #"first line\n")
  lu.assertTrue(got == want:sub(#"first line\n" + 1), "relayed bytes differ")
  lu.assertEquals(moved, #got)
  local received = src[2]:getstats()
  local _, sent = dst[1]:getstats()
  lu.assertEquals({ received, sent }, { #want, #got })
end

-- pipe into the stream itself is an echo; at top level too, where its
-- waits run the loop (many of them, and without recursion).
function TestStream.test_pipe_to_itself_echoes_at_top_level()
  local p <close> = pair()
  p[2]:settimeout(10 * H.SLOW)   -- each of the top level's waits bounded
  local n, echoed = 300, {}
  reverb.spawn(function()
    for i = 1, n do
      p[1]:write(i, ";")
      echoed[#echoed + 1] = p[1]:read(#tostring(i) + 1)
    end
    p[1]:shutdown("write")
  end)
  lu.assertEquals(p[2]:pipe(p[2]), #table.concat(echoed))
  lu.assertEquals(#echoed, n)
  lu.assertEquals(echoed[n], n .. ";")
end

-- A pipe parked in a task, as reverb serve's echo is, has its bytes
-- moved by the loop's dispatch without being resumed (the relay). The
-- kernel reports a reset once: the send that meets it says ECONNRESET,
-- the next EPIPE. When that send is the relay's, the pipe must still
-- raise ECONNRESET.
function TestStream.test_pipe_reports_a_reset_destination_as_econnreset()
  local stream = require "reverb.stream"
  local src <close> = pair()
  src[2]:settimeout(nil)
  local l <close> = core.socket()
  l:bind("127.0.0.1", 0)
  l:listen()
  local c <close> = core.socket()
  c:connect("127.0.0.1", select(2, l:getsockname()))
  local a = l:accept()
  a:setblocking(false)
  local dst <close> = stream.new(a, "dst")
  local err
  reverb.spawn(function() err = select(2, pcall(src[2].pipe, src[2], dst)) end)
  reverb.sleep(0.01)
  c:setoption("linger", 0)
  c:close()   -- a reset
  reverb.sleep(0.01)
  src[1]:write("x")
  H.within(5, function() while err == nil do reverb.sleep(0.001) end end)
  lu.assertTrue(core.iserror(err), tostring(err))
  lu.assertEquals(err.code, "ECONNRESET")
end

-- The relay's own recv can fail too: epoll said "readable", and by the
-- time dispatch moves the bytes the source was reset. The error must
-- reach the pipe: the recv that met it cleared it in the kernel, and the
-- next would say the stream ended. Two events in one batch make that
-- moment: a task woken by the first drains the source behind the pipe's
-- back and closes the source's peer with bytes unread in it (a reset, on
-- a unix socket); the relay then handles the second, the source's.
function TestStream.test_pipe_reports_a_reset_met_by_the_relay_as_econnreset()
  local src <close> = pair()
  local dst <close> = pair()
  local go <close> = pair()
  src[2]:settimeout(nil)   -- the parked read: the relay's case
  go[2]:settimeout(nil)
  lu.assertEquals(src[2].socket:send("unread"), 6)   -- closing src[1] now resets src[2]
  local ok, err
  reverb.spawn(function() ok, err = pcall(src[2].pipe, src[2], dst[1]) end)
  reverb.spawn(function()
    go[2]:read_some()
    lu.assertEquals(src[2].socket:recv(), "x")
    src[1]:close()
  end)
  reverb.sleep(0.01)   -- both parked
  go[1]:write("go")    -- ready first, so handled first
  src[1]:write("x")
  H.within(5, function() while ok == nil do reverb.sleep(0.001) end end)
  lu.assertFalse(ok, "pipe returned " .. tostring(err))
  lu.assertTrue(core.iserror(err), tostring(err))
  lu.assertEquals(err.code, "ECONNRESET")
end

-- A task parked in read_some (the Lua echo's path): a maximum holds
-- when it wakes, the rest staying buffered in order, and a reset that
-- came after epoll said "readable" (the two-events trick above) raises
-- in the task.
function TestStream.test_a_parked_read_some_gets_at_most_max_and_the_rest_after()
  local p <close> = pair()
  p[2]:settimeout(nil)   -- the parked read
  local got = {}
  reverb.spawn(function()
    got[1] = p[2]:read_some(3)
    got[2] = p[2]:read_some()
  end)
  reverb.sleep(0.01)
  p[1]:write("abcdefgh")
  H.within(5, function() while not got[2] do reverb.sleep(0.001) end end)
  lu.assertEquals(got, { "abc", "defgh" })
end

function TestStream.test_a_reset_met_for_a_parked_read_some_raises_econnreset()
  local p <close> = pair()
  local go <close> = pair()
  p[2]:settimeout(nil)
  go[2]:settimeout(nil)
  lu.assertEquals(p[2].socket:send("unread"), 6)   -- closing p[1] now resets p[2]
  local ok, err
  reverb.spawn(function() ok, err = pcall(p[2].read_some, p[2]) end)
  reverb.spawn(function()
    go[2]:read_some()
    lu.assertEquals(p[2].socket:recv(), "x")
    p[1]:close()
  end)
  reverb.sleep(0.01)
  go[1]:write("go")
  p[1]:write("x")
  H.within(5, function() while ok == nil do reverb.sleep(0.001) end end)
  lu.assertFalse(ok, "read_some returned " .. tostring(err))
  lu.assertEquals({ err.op, err.code, err.address }, { "recv", "ECONNRESET", "b" })
end

-- A send that fails names the peer it was for, as a timeout does.
function TestStream.test_a_failed_send_names_its_peer()
  local p <close> = pair()
  p[2].socket:close()   -- the kernel's socket: the next send meets EPIPE
  local err = H.raises("EPIPE", p[1].write, p[1], "lost")
  lu.assertEquals({ err.op, err.address }, { "send", "a" })
end

function TestStream.test_pipe_errors()
  local p <close> = pair()
  local q <close> = pair()
  lu.assertErrorMsgContains("bad argument #1 to 'pipe' (reverb.stream expected)",
    p[1].pipe, p[1], {})
  lu.assertErrorMsgContains("bad argument #1 to 'pipe' (reverb.stream expected)", p[1].pipe, p[1])
  q[1]:close()
  p[1]:write("x")
  local err = H.within(5, H.raises, "EBADF", p[2].pipe, p[2], q[1])
  lu.assertEquals(err.op, "write")
  p[2]:close()
  err = H.raises("EBADF", p[2].pipe, p[2], p[1])
  lu.assertEquals(err.op, "pipe")
end

return { TestStream = TestStream }
