--- reverb.stream: a buffered connection (what handlers and clients get).
--
-- One string buffer per connection (`buf`, read from `pos`). A read that
-- the buffer can answer costs one string.find and one string.sub; a read
-- that spans chunks collects them in a list and joins once, so long lines
-- and large reads stay linear. Every wait goes through the loop, so the
-- same calls work in tasks and at top level.
--
-- Writes send at once when the kernel takes everything (the usual case);
-- otherwise the writer holds the connection's write lock while it waits
-- for room, so bytes of two write calls never interleave and a slow
-- reader slows its writers instead of growing a buffer.

local core = require "reverb.core"
local loop = require "reverb.loop"

local find, sub, byte = string.find, string.sub, string.byte
local concat, remove = table.concat, table.remove
local select, type, tostring, error = select, type, tostring, error
local methods = core.methods
local recv, send, newerror = methods.recv, methods.send, core.error
local wait, park, readers, now = loop.wait, loop.park_task, loop.readers, core.now

-- Each recv asks for up to 256 KiB (what reverb.core receives without an
-- allocation). A read that fills it may leave more behind, and the next one
-- has to ask the kernel; asking for more than a peer usually has queued
-- keeps that extra recv (which says EAGAIN) rare even for bulk transfers.
local RECV = 256 * 1024
local MAX_LINE = 65536

local Stream = {}
Stream.__index = Stream

local function fail(self, op, code, message)
  error(newerror(op, code, message, self.peer))
end

-- Why a wait did not end ready: the deadline passed (false) or the
-- stream was closed under it ("closed").
local function waitfail(self, op, r)
  if r == false then fail(self, op, "ETIMEDOUT", "timed out") end
  fail(self, op, "EBADF", "socket is closed")
end

-- Waits for the direction `field`, raising on timeout or close.
local function await(self, field, op)
  local t = self.timeout
  local r = wait(self, field, t and now() + t)
  if r ~= true then waitfail(self, op, r) end
end

-- The next chunk from the socket, or nil at end of stream. A read shorter
-- than asked means the socket is drained: the next one waits for epoll
-- first instead of paying a recv that says EAGAIN. After a hang-up the
-- short-read rule is off, so the end of stream is always read. A reader
-- woken by the loop knows the socket is readable: it reads at once.
--
-- Waiting without a deadline, a task parks itself on the loop's readers
-- table directly, as loop.wait's own fast path does: this is the one wait
-- that every request makes, and a call less per request is worth it.
local function fill(self, op)
  if self.eof then return nil end
  local sock, ready = self.socket, self.rready
  while true do
    if ready then
      local data = recv(sock, RECV)
      if data then
        local n = #data
        if n == 0 then
          self.eof = true
          return nil
        end
        self.rready = n >= RECV or self.hup
        self.bytes_in = self.bytes_in + n
        return data
      end
    end
    local t, fd, r = self.timeout, self.fd, nil
    if not t and fd and not readers[fd] then r = park(readers, fd) end
    if r == nil then r = wait(self, "read", t and now() + t) end
    if r ~= true then waitfail(self, op, r) end
    ready = true
  end
end

--- Whatever is there (at least one byte, at most max); nil at EOF.
function Stream:read_some(max)
  local buf, pos = self.buf, self.pos
  if pos > #buf then
    local data = fill(self, "read")
    if not data or not max or #data <= max then return data end
    buf, pos = data, 1
  end
  local e = max and pos + max - 1 or #buf
  if e >= #buf then
    self.buf, self.pos = "", 1
    return pos == 1 and buf or sub(buf, pos)
  end
  self.buf, self.pos = buf, e + 1
  return sub(buf, pos, e)
end

local function toolong(self, op, limit)
  fail(self, op, "EMSGSIZE", "line longer than " .. limit .. " bytes")
end

-- The slow half of scan: the delimiter is not in what is buffered, so
-- collect chunks until it comes, joining once at the end.
local function gather(self, buf, pos, delim, limit, op)
  local have = #buf - pos + 1
  local acc, n = { pos == 1 and buf or sub(buf, pos) }, 1
  local keep = #delim - 1        -- a delimiter may straddle two chunks
  local tail = keep > 0 and sub(acc[1], -keep) or ""
  self.buf, self.pos = "", 1
  while true do
    if limit and have > limit then toolong(self, op, limit) end
    local chunk = fill(self, op)
    if not chunk then return nil, concat(acc) end
    local hay = tail .. chunk
    local s, e = find(hay, delim, 1, true)
    if s then
      local cut = s - #tail - 1   -- bytes of chunk before the delimiter
      local before
      if cut >= 0 then
        acc[n + 1] = sub(chunk, 1, cut)
        before = concat(acc)
      else
        before = concat(acc)
        before = sub(before, 1, #before + cut)
      end
      self.buf, self.pos = chunk, e - #tail + 1
      if limit and #before > limit then toolong(self, op, limit) end
      return before
    end
    n = n + 1
    acc[n] = chunk
    have = have + #chunk
    if keep > 0 then tail = sub(hay, -keep) end
  end
end

-- The bytes before the next `delim` (consumed), or nil, partial at the
-- end of the stream. More than `limit` bytes without a delimiter raise.
local function scan(self, delim, limit, op)
  local buf, pos = self.buf, self.pos
  local s, e = find(buf, delim, pos, true)
  if not s and pos > #buf then   -- nothing left over: read, without copies
    buf, pos = fill(self, op), 1
    if not buf then return nil, "" end
    self.buf = buf
    s, e = find(buf, delim, 1, true)
  end
  if not s then return gather(self, buf, pos, delim, limit, op) end
  if limit and s - pos > limit then toolong(self, op, limit) end
  self.pos = e + 1
  return sub(buf, pos, s - 1)
end

--- A line without "\n" (and without a trailing "\r"); nil at EOF. A last
-- line without "\n" is returned; one longer than max_line raises.
function Stream:read_line()
  local line, partial = scan(self, "\n", self.max_line, "read_line")
  if not line then
    if partial == "" then return nil end
    line = partial
  end
  if byte(line, -1) == 13 then line = sub(line, 1, -2) end
  return line
end

--- The bytes before delim (delim consumed); nil, partial at EOF.
function Stream:read_until(delim)
  if type(delim) ~= "string" or delim == "" then
    error("bad argument #1 to 'read_until' (non-empty string expected)", 2)
  end
  return scan(self, delim, nil, "read_until")
end

--- Exactly n bytes; nil, partial if the stream ends first.
function Stream:read(n)
  if math.type(n) ~= "integer" or n < 0 then
    error("bad argument #1 to 'read' (non-negative integer expected)", 2)
  end
  local buf, pos = self.buf, self.pos
  local have = #buf - pos + 1
  if have >= n then
    self.pos = pos + n
    return sub(buf, pos, pos + n - 1)
  end
  local acc = { sub(buf, pos) }
  self.buf, self.pos = "", 1
  while true do
    local chunk = fill(self, "read")
    if not chunk then return nil, concat(acc) end
    if have + #chunk >= n then
      local need = n - have
      acc[#acc + 1] = sub(chunk, 1, need)
      self.buf, self.pos = chunk, need + 1
      return concat(acc)
    end
    acc[#acc + 1] = chunk
    have = have + #chunk
  end
end

--- Everything until EOF ("" when the peer sent nothing).
function Stream:read_all()
  local acc = { sub(self.buf, self.pos) }
  self.buf, self.pos = "", 1
  while true do
    local chunk = fill(self, "read_all")
    if not chunk then break end
    acc[#acc + 1] = chunk
  end
  return concat(acc)
end

function Stream:lines()
  return Stream.read_line, self
end

-- Sends data from index i on, waiting for room as needed.
local function send_from(self, data, i)
  local sock, len = self.socket, #data
  while true do
    if self.wready then
      local sent = send(sock, data, i)
      if sent then
        i = i + sent
        if i > len then return end
      end
      self.wready = false   -- a short send means the kernel buffer is full
    end
    await(self, "write", "write")
    self.wready = true      -- woken: there is room again
  end
end

-- Hands the write lock to the next queued writer, or frees it.
local function release(self)
  local q = self.wq
  if q and q[1] then
    loop.wake(remove(q, 1), true)
  else
    self.wlock = false
  end
end

local function slow_write(self, data, i)
  if self.wlock then
    local q = self.wq or {}
    self.wq = q
    local who = loop.current()
    q[#q + 1] = who
    loop.park(who)      -- woken by release(), with the lock handed over
  else
    self.wlock = true
  end
  local ok, err = pcall(send_from, self, data, i)
  release(self)
  if not ok then error(err, 0) end
  return self
end

-- Writes one string, all of it, before returning.
local function write_string(self, data)
  self.bytes_out = self.bytes_out + #data
  if not self.wlock and self.wready and not self.closed then
    local sent = send(self.socket, data)
    if sent == #data then return self end
    self.wready = false
    if sent then return slow_write(self, data, sent + 1) end
  end
  if self.closed then fail(self, "write", "EBADF", "socket is closed") end
  return slow_write(self, data, 1)
end

--- Writes all of its arguments (strings or numbers) before returning.
function Stream:write(...)
  local data = ...
  local n = select("#", ...)
  if n ~= 1 or type(data) ~= "string" then
    local parts = { ... }
    for k = 1, n do
      local t = type(parts[k])
      if t ~= "string" and t ~= "number" then
        error("bad argument #" .. k .. " to 'write' (string expected, got " .. t .. ")", 2)
      end
    end
    data = concat(parts)
  end
  return write_string(self, data)
end

--- Each later wait raises ETIMEDOUT after this many seconds; nil: none.
function Stream:settimeout(seconds)
  if seconds ~= nil and (type(seconds) ~= "number" or seconds < 0) then
    error("bad argument #1 to 'settimeout' (non-negative number or nil expected)", 2)
  end
  self.timeout = seconds or false
  return self
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
local function new(sock, peer, opts)
  -- Every field the hot path reads is present from the start (false, not
  -- nil), so no read of an unset field falls through to Stream.__index.
  local self = setmetatable({
    socket = sock, peer = peer, buf = "", pos = 1,
    rready = true, wready = true, bytes_in = 0, bytes_out = 0,
    max_line = opts and opts.max_line or MAX_LINE,
    timeout = opts and opts.timeout or false,
    eof = false, hup = false, closed = false, wlock = false,
  }, Stream)
  loop.watch(self, sock:fileno(), "edge")
  return self
end

return { new = new, Stream = Stream, write_string = write_string }
