--- reverb.stream: a buffered connection (what handlers and clients get).
--
-- A stream is a table (scripts may keep their own fields on it; `peer`
-- and `socket` are reverb's) whose slot 1 holds its state in C: the read
-- buffer, readiness and byte counters. The reads, the writes and their
-- waits are C functions (csrc/stream.c) that park the task and resume
-- where they stopped, so they work in tasks and at top level like any
-- reverb call, and an echoed request costs one call to read and one to
-- write.
--
-- This file keeps what is not on the path of every request: the object,
-- close, and the slow write. Writes send at once when the kernel takes
-- everything (the usual case); otherwise the writer holds the stream's
-- write lock while it waits for room, so bytes of two write calls never
-- interleave and a slow reader slows its writers instead of growing a
-- buffer.

local core = require "reverb.core"
local loop = require "reverb.loop"

local remove = table.remove
local tostring, error, pcall, type = tostring, error, pcall, type

local Stream = {}
Stream.__index = Stream

local C   -- the C half, bound to the loop below

-- Sends data from index i on, waiting for room as needed; on a failure
-- (a reset, a timeout), the error and the index it got to.
local function send_from(self, data, i)
  local len = #data
  while i <= len do
    local ok, sent = pcall(C.send, self, data, i)
    if ok and sent then
      i = i + sent
    elseif ok then
      ok, sent = pcall(C.wait_writable, self)
    end
    if not ok then return sent, i end
  end
end

-- Hands the write lock to the next queued writer, or frees it.
local function release(self)
  local q = self.wq
  if q and q[1] then
    local who = remove(q, 1)
    self.lock_to = who   -- (in case its task is closed before it runs)
    loop.wake(who, true)
  else
    C.lock(self, false)
  end
end

-- However a slow write ends (done, an error, its task closed from
-- outside while it waits, which runs this as any to-be-closed variable of
-- the task's), the lock goes on if it was this writer's, or was handed to
-- it; a writer still queued leaves the queue, and a closed task is woken
-- once more for the loop to let it go.
local UNLOCK = { __close = function(g)
  local self, who = g[1], g[2]
  if g.held or self.lock_to == who then
    self.lock_to = nil
    return release(self)
  end
  local q = self.wq
  for k = #q, 1, -1 do
    if q[k] == who then remove(q, k) end
  end
  -- (a task gets here only closed while queued; the top level, by an
  -- error through its wait)
  if type(who) == "thread" then loop.wake(who, true) end
end }

-- The write that the kernel did not take at once, from index i on (C's
-- write calls it): waits its turn for the lock, then for room.
local function slow_write(self, data, i)
  local who = loop.current()
  local g <close> = setmetatable({ self, who }, UNLOCK)
  if C.lock(self, true) then
    local q = self.wq or {}
    self.wq = q
    q[#q + 1] = who
    loop.park(who)      -- woken by release(), with the lock handed over
    self.lock_to = nil
  end
  g.held = true
  local err, at = send_from(self, data, i)
  if err then
    -- as LuaSocket tells where a send stopped: the bytes of this write
    -- that went out, so that a retry sends only the rest
    if core.iserror(err) then err.sent = at - 1 end
    error(err, 0)
  end
  return self
end

C = loop.streams(slow_write)

--- Whatever is there (at least one byte, at most max); nil at EOF.
Stream.read_some = C.read_some
--- A line without "\n" (and without a trailing "\r"); nil at EOF. A last
-- line without "\n" is returned; one longer than max_line raises EMSGSIZE.
Stream.read_line = C.read_line
--- The bytes before delim (delim consumed); nil, partial at EOF.
Stream.read_until = C.read_until
--- Exactly n bytes; nil, partial if the stream ends first.
Stream.read = C.read
--- Everything until EOF ("" when the peer sent nothing).
Stream.read_all = C.read_all
--- Writes all of its arguments (strings or numbers) before returning.
Stream.write = C.write
--- Writes everything read from this stream to dst (a stream; this one
-- for an echo) until this one ends; returns the byte count. A relay's
-- loop in C: no Lua string per chunk.
Stream.pipe = C.pipe
--- Each later wait raises ETIMEDOUT after this many seconds; nil: none.
Stream.settimeout = C.settimeout
--- Bytes received, bytes written, seconds since the stream was made.
Stream.getstats = C.getstats

function Stream:lines()
  return Stream.read_line, self
end

function Stream:shutdown(how)
  self.socket:shutdown(how or "write")
  return self
end

function Stream:close()
  loop.close(self)
  return true
end
Stream.__close = Stream.close

function Stream:__tostring()
  return "reverb.stream: " .. (self.closed and "closed" or tostring(self.peer))
end

--- Wraps a connected non-blocking socket. opts: max_line, timeout.
-- accepted (the server's): its first read waits for epoll rather than
-- try a recv that would most often say EAGAIN.
local function new(sock, peer, opts, accepted)
  local max_line, timeout
  if opts then max_line, timeout = opts.max_line, opts.timeout end
  local state = C.new(sock, max_line, timeout, accepted)
  -- The fields reverb reads are present from the start (false, not nil):
  -- a read of an unset field would fall through to Stream.__index, and
  -- the table is made at its final size, four keys (loop.watch sets fd).
  local self = setmetatable({
    state, socket = sock, peer = peer, closed = false, fd = false,
  }, Stream)
  loop.watch(self, sock:fileno(), "edge")
  return self
end

return { new = new, Stream = Stream }
