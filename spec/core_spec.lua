--- spec/core_spec.lua: reverb.core sockets, blocking and not, over loopback.
local lu = require "luaunit"
local core = require "reverb.core"
local H = require "helper"

-- A listening socket on a free loopback port, and its port.
local function listener(family, host)
  local s = core.socket(family or "inet")
  s:bind(host or "127.0.0.1", 0)
  s:listen()
  local _, port = s:getsockname()
  return s, port
end

-- Closes every socket it holds when it goes out of scope.
local function closing(...)
  return setmetatable({ ... }, { __close = function(t)
    for _, s in ipairs(t) do s:close() end
  end })
end

-- A connected pair over TCP loopback: { client, server side }.
local function tcp_pair()
  local l <close>, port = listener()
  local c = core.socket()
  c:connect("127.0.0.1", port)
  return closing(c, (l:accept()))
end

local TestSocket = H.class()

function TestSocket.test_create_families_and_types()
  for _, fam in ipairs { "inet", "inet6", "unix" } do
    for _, typ in ipairs { "stream", "dgram" } do
      local s <close> = core.socket(fam, typ)
      lu.assertStrContains(tostring(s), fam .. " " .. typ)
    end
  end
  local s <close> = core.socket()
  lu.assertStrContains(tostring(s), "inet stream")
end

function TestSocket.test_bad_arguments_are_argument_errors()
  lu.assertErrorMsgContains("invalid option 'tcp'", core.socket, "tcp")
  lu.assertErrorMsgContains("invalid option 'raw'", core.socket, "inet", "raw")
  local s <close> = core.socket()
  lu.assertErrorMsgContains("bad argument #1 to 'bind'", function() s:bind({}, 1) end)
  lu.assertErrorMsgContains("number expected", s.bind, s, "127.0.0.1", "x")
  lu.assertErrorMsgContains("port out of range", s.bind, s, "127.0.0.1", 70000)
  lu.assertErrorMsgContains("size must be positive", s.recv, s, 0)
  lu.assertErrorMsgContains("reverb.socket expected", s.send, {}, "x")
  lu.assertErrorMsgContains("invalid option 'sideways'", s.shutdown, s, "sideways")
end

function TestSocket.test_blocking_echo_like_the_tutorial()
  local l <close>, port = listener()
  lu.assertTrue(port > 0)
  local c <close> = core.socket()
  lu.assertTrue(c:connect("127.0.0.1", port))
  local a <close>, host, peerport = l:accept()
  lu.assertEquals(host, "127.0.0.1")
  local _, cport = c:getsockname()
  lu.assertEquals(peerport, cport)
  lu.assertEquals(c:send("Hello, Server!"), 14)
  lu.assertEquals(a:recv(1024), "Hello, Server!")
  a:send("Hello, Server!")
  lu.assertEquals(c:recv(), "Hello, Server!")
  lu.assertEquals({ c:getpeername() }, { "127.0.0.1", port })
  lu.assertStrContains(tostring(c), "127.0.0.1:" .. cport .. " -> 127.0.0.1:" .. port)
end

function TestSocket.test_ipv4_addresses_print_as_dotted_decimal()
  -- all of 127/8 is loopback on Linux: digits of every width, zeros
  for _, host in ipairs { "127.0.0.1", "127.10.200.3", "127.255.99.100", "0.0.0.0" } do
    local s <close> = core.socket("inet", "dgram")
    s:bind(host, 0)
    lu.assertEquals((s:getsockname()), host)
  end
  local s <close> = core.socket("inet", "dgram")
  s:bind("*", 0)
  lu.assertEquals((s:getsockname()), "0.0.0.0")
end

function TestSocket.test_recv_returns_empty_string_at_eof()
  local pair <close> = tcp_pair()
  local c, a = pair[1], pair[2]
  c:send("last words")
  c:close()
  lu.assertEquals(a:recv(), "last words")
  lu.assertEquals(a:recv(), "")
  lu.assertEquals(a:recv(), "")
end

function TestSocket.test_recv_at_most_max_bytes()
  local pair <close> = tcp_pair()
  local c, a = pair[1], pair[2]
  c:send("abcdef")
  lu.assertEquals(a:recv(4), "abcd")
  lu.assertEquals(a:recv(4), "ef")
end

function TestSocket.test_send_slices_like_string_sub()
  local pair <close> = tcp_pair()
  local c, a = pair[1], pair[2]
  lu.assertEquals(c:send("0123456789", 3, 5), 3)
  lu.assertEquals(c:send("0123456789", -2), 2)
  lu.assertEquals(c:send("0123456789", 8, 2), 0)
  lu.assertEquals(a:recv(), "23489")
end

function TestSocket.test_partial_send_then_resume_with_i()
  local pair <close> = tcp_pair()
  local c, a = pair[1], pair[2]
  c:setoption("sndbuf", 4096)
  a:setoption("rcvbuf", 4096)
  c:setblocking(false)
  local data = string.rep("0123456789abcdef", 1 << 16)   -- 1 MiB
  local n = c:send(data)
  lu.assertTrue(n > 0 and n < #data, "the kernel should take part of 1 MiB")
  -- keep sending from where the kernel stopped until it would block
  local sent = n
  while sent < #data do
    local k = c:send(data, sent + 1)
    if not k then break end
    sent = sent + k
  end
  lu.assertTrue(sent < #data, "a full buffer would block before 1 MiB")
  -- drain and resume where the kernel stopped
  local got = {}
  while sent < #data do
    local k = c:send(data, sent + 1)
    if k then sent = sent + k end
    got[#got + 1] = a:recv(1 << 20)
  end
  c:shutdown("write")
  while true do
    local chunk = a:recv(1 << 20)
    if chunk == "" then break end
    got[#got + 1] = chunk
  end
  lu.assertEquals(#table.concat(got), #data)
  lu.assertTrue(table.concat(got) == data)
end

function TestSocket.test_would_block_is_nil_not_an_error()
  local l <close>, port = listener()
  l:setblocking(false)
  lu.assertNil(l:accept())
  local c <close> = core.socket()
  c:setblocking(false)
  local r = c:connect("127.0.0.1", port)
  lu.assertEquals(type(r), "boolean")
  local p <close> = core.poller()
  p:add(l:fileno(), "read")
  lu.assertEquals(p:wait(5 * H.SLOW, {}), 1, "the listener becomes readable")
  local a = l:accept()
  lu.assertNotNil(a, "accept after connect")
  lu.assertNil(a:recv(), "accepted socket is non-blocking like its listener")
  lu.assertNil(c:getoption("error"))
  a:close()
end

function TestSocket.test_closed_socket_raises_ebadf_and_close_is_idempotent()
  local s = core.socket()
  lu.assertTrue(s:close())
  lu.assertTrue(s:close())
  lu.assertEquals(tostring(s), "reverb.socket: closed")
  for _, m in ipairs { "send", "recv", "accept", "listen", "fileno", "getsockname" } do
    local err = H.raises("EBADF", s[m], s, "x")
    lu.assertEquals(err.message, "socket is closed")
    lu.assertEquals(err.op, m)
  end
end

-- close() of an owned socket calls its owner's close first, once (the
-- loop makes each stream, server and UDP socket the owner of its socket,
-- so that closing the socket itself wakes whoever waits on it).
function TestSocket.test_an_owned_socket_closes_through_its_owner()
  local s = core.socket()
  local calls = 0
  local owner = { close = function() calls = calls + 1 s:close() end }
  lu.assertEquals(s:setowner(owner), s)
  lu.assertTrue(s:close())
  lu.assertEquals(calls, 1)
  lu.assertEquals(tostring(s), "reverb.socket: closed")
  lu.assertTrue(s:close())
  lu.assertEquals(calls, 1, "the owner's close ran once")
  local t = core.socket()
  t:setowner(owner)
  t:setowner(nil)
  t:close()
  lu.assertEquals(calls, 1, "setowner(nil) disowns")
  lu.assertErrorMsgContains("table expected", t.setowner, t, 5)
  -- through <close> (which passes an error value too) and close(x) alike
  for _, how in ipairs { "close", "tbc" } do
    local v = core.socket()
    local closed = 0
    v:setowner({ close = function() closed = closed + 1 v:close() end })
    if how == "close" then
      v:close(true)
    else
      local _ <close> = v
    end
    lu.assertEquals({ how, closed, tostring(v) }, { how, 1, "reverb.socket: closed" })
  end
  local u = core.socket()
  u:setowner({})   -- an owner with no close: the socket closes all the same
  lu.assertTrue(u:close())
  lu.assertEquals(tostring(u), "reverb.socket: closed")
end

-- A light userdata given the socket metatable (debug can do that) is no
-- socket: its methods raise an argument error, not read its address.
function TestSocket.test_a_light_userdata_is_no_socket()
  local light = core.scheduler().WAIT
  local saved = debug.getmetatable(light)
  debug.setmetatable(light, debug.getmetatable(core.socket()))
  local ok, err = pcall(core.methods.fileno, light)
  debug.setmetatable(light, saved)
  lu.assertFalse(ok)
  lu.assertStrContains(err, "reverb.socket expected")
end

-- Whether descriptor fd is open in this process: /proc's entry for it
-- is a symlink (test -L: a socket's cannot be followed, so not test -e).
local function fd_open(fd)
  return os.execute("test -L /proc/" .. core.getpid() .. "/fd/" .. fd) == true
end

-- A socket whose owner's close raises is closed all the same, and the
-- error reaches the caller (its descriptor stayed open until collected).
function TestSocket.test_close_closes_even_when_the_owner_raises()
  local s = core.socket()
  local fd = s:fileno()
  s:setowner({ close = function() error("owner failed") end })
  lu.assertErrorMsgContains("owner failed", s.close, s)
  lu.assertFalse(fd_open(fd), "the descriptor is closed")
  H.raises("EBADF", s.fileno, s)
end

function TestSocket.test_to_be_closed_and_garbage_collected()
  local fd
  do
    local s <close> = core.socket()
    fd = s:fileno()
    lu.assertTrue(fd_open(fd), "open inside its block")
  end
  lu.assertFalse(fd_open(fd), "closed by <close>")
  fd = (function() return core.socket():fileno() end)()   -- forgotten
  lu.assertTrue(fd_open(fd))
  collectgarbage()
  collectgarbage()
  lu.assertFalse(fd_open(fd), "closed by the collector")
end

function TestSocket.test_forgotten_sockets_never_exhaust_descriptors()
  -- A descriptor limit of 64 and 30,000 sockets never closed by the script.
  local out, status = H.sh("ulimit -n 64; " .. H.LUA .. [[ -e '
    local core = require "reverb.core"
    for i = 1, 30000 do core.socket() end
    for i = 1, 2000 do core.socketpair() end
    print("made them all")']])
  lu.assertEquals(status, 0, out)
  lu.assertStrContains(out, "made them all")
end

function TestSocket.test_descriptors_are_close_on_exec()
  local s <close> = core.socket()
  local out = H.sh("ls /proc/self/fd/")
  lu.assertNotStrContains(" " .. out:gsub("\n", " "), " " .. s:fileno() .. " ")
  -- direct check through /proc/self/fdinfo: flags has O_CLOEXEC (02000000)
  local info = H.slurp("/proc/self/fdinfo/" .. s:fileno())
  local flags = tonumber(info:match("flags:%s*(%d+)"), 8)
  lu.assertTrue(flags & 0x80000 ~= 0, "O_CLOEXEC")
end

function TestSocket.test_shutdown_write_is_a_half_close()
  local pair <close> = tcp_pair()
  local c, a = pair[1], pair[2]
  c:send("req")
  c:shutdown("write")
  lu.assertEquals(a:recv(), "req")
  lu.assertEquals(a:recv(), "")
  a:send("reply")
  lu.assertEquals(c:recv(), "reply")
end

function TestSocket.test_unix_stream_and_dgram()
  local path = os.tmpname()
  os.remove(path)
  local l <close> = core.socket("unix")
  l:bind(path)
  l:listen(4)
  lu.assertEquals(l:getsockname(), path)
  local c <close> = core.socket("unix")
  c:connect(path)
  local a <close> = l:accept()
  c:send("over unix")
  lu.assertEquals(a:recv(), "over unix")
  lu.assertEquals(c:getpeername(), path)
  os.remove(path)

  local pair <close> = closing(core.socketpair("dgram"))
  local d1, d2 = pair[1], pair[2]
  d1:send("one")
  d1:send("two")
  lu.assertEquals(d2:recv(), "one")
  lu.assertEquals(d2:recv(), "two")
end

function TestSocket.test_udp_sendto_recvfrom()
  local u <close> = core.socket("inet", "dgram")
  u:bind("127.0.0.1", 0)
  local _, port = u:getsockname()
  local v <close> = core.socket("inet", "dgram")
  lu.assertEquals(v:sendto("ping", "127.0.0.1", port), 4)
  local data, host, from = u:recvfrom()
  lu.assertEquals(data, "ping")
  lu.assertEquals(host, "127.0.0.1")
  u:sendto("pong", host, from)
  lu.assertEquals(v:recvfrom(), "pong")
  u:setblocking(false)
  lu.assertNil(u:recvfrom())
end

function TestSocket.test_inet6_on_loopback()
  if not H.has_ipv6() then lu.skip("this machine has no ::1") end
  local l <close>, port = listener("inet6", "::1")
  local c <close> = core.socket("inet6")
  c:connect("::1", port)
  local a <close>, host = l:accept()
  lu.assertEquals(host, "::1")
  c:send("v6")
  lu.assertEquals(a:recv(), "v6")
  lu.assertStrContains(tostring(c), "[::1]:" .. port)
end

function TestSocket.test_bind_any_address_and_names()
  local s <close> = core.socket()
  s:bind("*", 0)
  lu.assertEquals((s:getsockname()), "0.0.0.0")
  local t <close> = core.socket()
  t:bind("localhost", 0)
  lu.assertEquals((t:getsockname()), "127.0.0.1")
end

function TestSocket.test_huge_sizes_are_clamped()
  local pair <close> = tcp_pair()
  local c, a = pair[1], pair[2]
  c:send("x")
  lu.assertEquals(a:recv(math.maxinteger), "x")
  lu.assertEquals(c:send("abc", math.mininteger, math.maxinteger), 3)
  lu.assertEquals(a:recv(1 << 40), "abc")
end

-- The open-files limit: lowered, the next socket past it fails with
-- EMFILE (an error object); raised back, sockets open again.  In a
-- process of its own: valgrind (make check) keeps its own count of
-- descriptors, and the limit this one sets would not bind there.
function TestSocket.test_open_files_limit_lowered_gives_emfile_and_raised_again()
  local soft, hard = core.getrlimit("nofile")
  lu.assertTrue(math.type(soft) == "integer" and soft <= hard)
  local script = H.file([[
    local core = require "reverb.core"
    local soft = core.getrlimit("nofile")
    core.setrlimit("nofile", 16)
    local held, ok, err = {}, nil, nil
    ok, err = pcall(function() for i = 1, 20 do held[i] = core.socket() end end)
    print(ok, err.op, err.code, #held < 16)
    for _, s in ipairs(held) do s:close() end
    core.setrlimit("nofile", soft)
    for i = 1, 20 do held[i] = core.socket() end
    print(core.getrlimit("nofile") == soft, held[20]:fileno() >= 16)
  ]], ".lua")
  local out, status = H.sh("bin/reverb run " .. script)
  os.remove(script)
  lu.assertEquals(status, 0, out)
  lu.assertEquals(out, "false\tsocket\tEMFILE\ttrue\ntrue\ttrue\n")
end

function TestSocket.test_limits_checked()
  local soft, hard = core.getrlimit("nofile")
  local err = H.raises("EINVAL", core.setrlimit, "nofile", hard + 1, hard)
  lu.assertEquals(tostring(err), "setrlimit nofile: Invalid argument (EINVAL)")
  lu.assertEquals({ core.getrlimit("nofile") }, { soft, hard })   -- unchanged
  lu.assertErrorMsgContains("invalid option 'files'", core.getrlimit, "files")
  lu.assertErrorMsgContains("limit must be >= 0", core.setrlimit, "nofile", -1)
  lu.assertErrorMsgContains("number has no integer representation", core.setrlimit, "nofile", 1.5)
  lu.assertErrorMsgContains("number expected", core.setrlimit, "core")
  lu.assertErrorMsgContains("no integer representation", core.setrlimit, "core", -math.huge)
end

-- No limit is math.huge both ways: read, written back, read again.  The
-- stack's hard limit is usually unlimited; the soft one is lowered and
-- raised back within it.
function TestSocket.test_no_limit_is_math_huge()
  for _, name in ipairs { "nofile", "core", "nproc", "stack", "as" } do
    local soft, hard = core.getrlimit(name)
    lu.assertTrue(soft >= 0 and soft <= hard, name)
    lu.assertTrue(math.type(soft) == "integer" or soft == math.huge, name)
    lu.assertTrue(math.type(hard) == "integer" or hard == math.huge, name)
  end
  local soft, hard = core.getrlimit("stack")
  if hard ~= math.huge then return lu.skip("the stack's hard limit is " .. hard) end
  local _ <close> = setmetatable({}, { __close = function() core.setrlimit("stack", soft) end })
  lu.assertTrue(core.setrlimit("stack", math.huge))
  lu.assertEquals({ core.getrlimit("stack") }, { math.huge, math.huge })
  lu.assertTrue(core.setrlimit("stack", soft, math.huge))
  lu.assertEquals({ core.getrlimit("stack") }, { soft, hard })
end

return { TestSocket = TestSocket }
