--- spec/cli_spec.lua: the reverb command, run as a real subprocess, with
-- nc and socat as third-party peers.
local lu = require "luaunit"
local reverb = require "reverb"
local core = require "reverb.core"
local H = require "helper"

local R = "bin/reverb"

-- Starts `reverb serve ARGS` (on host, default 127.0.0.1) and returns its
-- pid, port and output file.
local function serve(args, host)
  host = host or "127.0.0.1"
  local pid, out = H.start("exec " .. R .. " serve " .. args .. " --host " .. host)
  local shown = host:find(":", 1, true) and "[" .. host .. "]" or host   -- as it prints it
  local port = H.await_output(out, "listening on " .. shown:gsub("%p", "%%%0") .. ":(%d+)")
  return pid, tonumber(port), out
end

-- Children of a process, from /proc.
local function children(pid)
  local kids = {}
  local ls = io.popen("ls /proc")
  for entry in ls:lines() do
    if entry:match("^%d+$") then
      local f = io.open("/proc/" .. entry .. "/stat")
      local stat = f and f:read("a")
      if f then f:close() end
      if stat and tonumber(stat:match("^%d+ %b() %a (%d+)")) == pid then
        kids[#kids + 1] = tonumber(entry)
      end
    end
  end
  ls:close()
  return kids
end

-- `reverb serve 0 --workers 2`, once both workers run: pid, port, output
-- file, and the workers' pids.
local function serve_workers()
  local pid, port, out = serve("0 --workers 2")
  return pid, port, out, H.within(10, function()
    local kids
    repeat
      kids = children(pid)
      reverb.sleep(0.01)
    until #kids == 2
    return kids
  end)
end

local TestCli = H.class()

function TestCli.test_help_and_version()
  local out, status = H.sh(R .. " --help")
  lu.assertEquals(status, 0)
  for _, cmd in ipairs { "serve", "connect", "send", "run", "repl" } do
    lu.assertStrContains(out, "reverb " .. cmd)
    local sub, substatus = H.sh(R .. " " .. cmd .. " --help")
    lu.assertEquals(substatus, 0)
    lu.assertStrContains(sub, "Usage: reverb " .. cmd)
  end
  -- every option a command takes is in its own help and in reverb --help
  local specs = { serve = require("reverb.cli_serve").SPEC,
                  connect = require("reverb.cli_connect").SPECS.connect,
                  send = require("reverb.cli_connect").SPECS.send }
  for cmd, spec in pairs(specs) do
    local sub = H.sh(R .. " " .. cmd .. " --help")
    for _, kind in ipairs { "values", "flags" } do
      for opt in pairs(spec[kind] or {}) do
        lu.assertStrContains(sub, opt, false, "reverb " .. cmd .. " --help")
        lu.assertStrContains(out, opt, false, "reverb --help, " .. cmd)
      end
    end
  end
  out = H.sh(R .. " --version")
  lu.assertStrMatches(out, "reverb %d+%.%d+%.%d+ %(Lua 5%.4%)\n")
  -- through a symlink elsewhere (~/bin/reverb -> the checkout's), run from elsewhere
  local link = H.tmpname()
  lu.assertEquals(select(2, H.sh("ln -s \"$PWD/" .. R .. "\" " .. link)), 0)
  out = H.sh("cd / && " .. link .. " --version")
  lu.assertStrMatches(out, "reverb %d+%.%d+%.%d+ %(Lua 5%.4%)\n")
  os.remove(link)
end

function TestCli.test_usage_errors_exit_2_in_one_line()
  for _, args in ipairs { "serve --bogus", "serve 99999", "frobnicate", "connect 127.0.0.1",
                          "serve --workers many", "serve --workers 0",
                          "serve --unix /tmp/x --workers 2", "connect --unix /tmp/x --udp",
                          "send 127.0.0.1 1 hi --timeout soon" } do
    local out, status = H.sh(R .. " " .. args)
    lu.assertEquals(status, 2, args)
    lu.assertStrMatches(out, "reverb[^\n]*\n%(see reverb[^\n]*%-%-help%)\n")
  end
  -- the line says what is wrong (a zero --max-line, an empty path, a
  -- negative number and a stray word came out as a traceback, a listening
  -- line with no address, or a message that did not fit)
  for args, line in pairs {
    ["serve 0 --max-line 0"] = "reverb serve: --max-line must be 1 or more",
    ["serve --unix ''"] = "reverb serve: --unix needs a path",
    ["send --unix '' hi"] = "reverb send: --unix needs a path",
    ["send 127.0.0.1 1 hi --timeout -1"] =
      "reverb send: --timeout must be a number, 0 or more, not '-1'",
    ["serve -5"] = "reverb serve: PORT must be 0-65535, not '-5'",
    ["serve abc"] = "reverb serve: 'abc' is neither a PORT nor a script",
  } do
    local out, status = H.sh(R .. " " .. args)
    lu.assertEquals(status, 2, args)
    lu.assertEquals(out:match("^[^\n]*"), line)
  end
end

function TestCli.test_serve_and_send()
  local pid, port, out = serve("0")
  local reply, status = H.sh(R .. " send 127.0.0.1 " .. port .. " Hello, Server!")
  lu.assertEquals(status, 0)
  lu.assertEquals(reply, "Hello, Server!\n")
  -- with no message, send sends stdin, byte for byte
  reply, status = H.sh("printf 'from\\nstdin' | " .. R .. " send 127.0.0.1 " .. port)
  lu.assertEquals(status, 0)
  lu.assertEquals(reply, "from\nstdin")
  -- after "--", words that look like options are the message
  reply, status = H.sh(R .. " send 127.0.0.1 " .. port .. " -- ls -la --help")
  lu.assertEquals(status, 0)
  lu.assertEquals(reply, "ls -la --help\n")
  lu.assertStrMatches(H.slurp(out), "reverb: echo server listening on 127%.0%.0%.1:%d+\n")
  H.stop(pid)
  os.remove(out)
end

-- send reads the reply while it writes: stdin larger than both sockets'
-- buffers comes back whole and in order (written all before any of it
-- was read, the two sides waited on each other until the timeout).
function TestCli.test_send_echoes_stdin_larger_than_the_socket_buffers()
  local pid, port, out = serve("0")
  local data, got = H.tmpname(), H.tmpname()
  H.sh("seq 1 3000000 >" .. data)   -- 21 MB, every line different
  local msg, status = H.sh(R .. " send 127.0.0.1 " .. port .. " <" .. data .. " >" .. got)
  lu.assertEquals(status, 0, msg)
  lu.assertEquals(select(2, H.sh("cmp " .. data .. " " .. got)), 0)
  H.stop(pid)
  os.remove(data)
  os.remove(got)
  os.remove(out)
end

-- send ends when the peer resets, even while stdin goes on, and says so
-- (it waited for the end of stdin, then reported shutdown's ENOTCONN); a
-- reply that comes within --timeout after the end of stdin is printed,
-- however long stdin took (the reader's wait had begun before).
function TestCli.test_send_ends_on_a_reset_and_waits_its_timeout_after_stdin()
  local script = H.file([[
return function(conn)
  if conn:read(3) == "rst" then
    conn.socket:setoption("linger", 0)
    return conn:close()
  end
  conn:read_all()
  reverb.sleep(0.5)
  conn:write("late reply\n")
end]], ".lua")
  local pid, port, out = serve("0 " .. script)
  -- stdin a fifo this shell holds open: it never ends, so send ends on
  -- the reset or not at all (timeout's 124)
  local dir = H.tmpname()
  local reply, status = H.sh(("mkdir %s && mkfifo %s/in && exec 3<>%s/in && printf rst >&3 && " ..
    "timeout %d %s send 127.0.0.1 %d --timeout 60 <%s/in; s=$?; exec 3>&-; rm -r %s; exit $s")
    :format(dir, dir, dir, 20 * H.SLOW, R, port, dir, dir))
  lu.assertEquals(status, 1, reply)
  lu.assertStrMatches(reply, "reverb: [a-z_]+ 127%.0%.0%.1:%d+: Connection reset by peer\n")
  -- the reply comes 1.3 s in, 0.5 s after stdin ends: within the 1 s
  -- counted from there, not from the reader's first wait
  reply, status = H.sh("(printf abc; sleep 0.8) | " .. R .. " send 127.0.0.1 " .. port ..
                       " --timeout " .. H.SLOW)
  lu.assertEquals({ reply, status }, { "late reply\n", 0 })
  H.stop(pid)
  os.remove(script)
  os.remove(out)
end

-- A server that answers before it has read everything, then closes (an
-- upload refused): send prints the answer, then reports that the rest of
-- stdin was cut off, and fails.
function TestCli.test_send_prints_an_early_reply_then_reports_the_cut_off()
  local script = H.file("return function(conn) conn:read_line() conn:write('413 too big\\n') end",
                        ".lua")
  local pid, port, out = serve("0 " .. script)
  local data, err = H.tmpname(), H.tmpname()
  H.sh("seq 1 3000000 >" .. data)
  local reply, status = H.sh(R .. " send 127.0.0.1 " .. port .. " <" .. data .. " 2>" .. err)
  lu.assertEquals(reply, "413 too big\n")
  lu.assertEquals(status, 1)
  lu.assertStrMatches(H.slurp(err), "reverb: send 127%.0%.0%.1:%d+: [^\n]+\n")
  H.stop(pid)
  for _, f in ipairs { script, err, out } do os.remove(f) end
  -- one that answers, half-closes and reads on is sent all of stdin: the
  -- end of its reply is not the end of the command
  script = H.file("return function(conn) conn:write('go on\\n') conn:shutdown('write') " ..
                  "print(#conn:read_all()) io.stdout:flush() end", ".lua")
  pid, port, out = serve("0 " .. script)
  reply, status = H.sh(R .. " send 127.0.0.1 " .. port .. " <" .. data)
  lu.assertEquals({ reply, status }, { "go on\n", 0 })
  H.await_output(out, "\n(%d+)\n")
  lu.assertStrContains(H.slurp(out), "\n" .. #H.slurp(data) .. "\n")
  H.stop(pid)
  for _, f in ipairs { script, data, out } do os.remove(f) end
end

function TestCli.test_serve_answers_nc_and_socat()
  local pid, port, out = serve("0 -v")
  local reply = H.sh("printf 'from nc\\n' | nc -N 127.0.0.1 " .. port)
  lu.assertEquals(reply, "from nc\n")
  reply = H.sh("printf 'from socat' | socat - TCP:127.0.0.1:" .. port)
  lu.assertEquals(reply, "from socat")
  H.await_output(out, "closed, 10 bytes in, 10 bytes out")
  lu.assertStrContains(H.slurp(out), "closed, 8 bytes in, 8 bytes out")
  -- started with stdout closed, connect must not write what it receives
  -- into its socket (the next descriptor made takes number 1)
  H.sh("(printf '7 bytes'; sleep 0.2) | " .. R .. " connect 127.0.0.1 " .. port .. " >&-")
  H.await_output(out, "closed, 7 bytes in, 7 bytes out")
  -- and with stdin closed, send still sends its message
  lu.assertEquals(H.sh(R .. " send 127.0.0.1 " .. port .. " closed stdin <&-"), "closed stdin\n")
  H.stop(pid)
  os.remove(out)
end

function TestCli.test_serve_a_handler_script()
  local pid, port, out = serve("0 examples/upper.lua")
  lu.assertEquals(H.sh(R .. " send 127.0.0.1 " .. port .. " shout"), "SHOUT\n")
  lu.assertStrContains(H.slurp(out), "server examples/upper.lua listening")
  H.stop(pid)
  os.remove(out)
end

function TestCli.test_udp_echo_and_udp_connect()
  local pid, port, out = serve("0 --udp")
  local reply, status = H.sh("printf 'datagram' | " .. R .. " connect 127.0.0.1 " .. port ..
    " --udp")
  lu.assertEquals(status, 0)
  lu.assertEquals(reply, "datagram")
  -- regression: a reply that came before the end of stdin left the reader
  -- waiting with no deadline, forever
  reply, status = H.sh("(printf 'early'; sleep 0.3) | " .. R .. " connect 127.0.0.1 " .. port ..
    " --udp")
  lu.assertEquals(status, 0)
  lu.assertEquals(reply, "early")
  -- more than a datagram holds (65,507 bytes) goes in several
  local input = H.tmpname()
  local f = assert(io.open(input, "wb"))
  f:write(string.rep("0123456789", 10000))
  f:close()
  reply, status = H.sh(R .. " connect 127.0.0.1 " .. port .. " --udp < " .. input)
  lu.assertEquals(status, 0, reply)
  lu.assertEquals(#reply, 100000)
  os.remove(input)
  H.stop(pid)
  os.remove(out)
end

-- An IPv6 address is printed as a client writes it: in brackets.
function TestCli.test_serve_on_ipv6_prints_its_address_in_brackets()
  if not H.has_ipv6() then lu.skip("this machine has no ::1") end
  local pid, port, out = serve("0", "::1")
  lu.assertEquals(H.sh(R .. " send ::1 " .. port .. " six"), "six\n")
  H.stop(pid)
  os.remove(out)
end

-- connect --udp to an IPv6 address sends from an IPv6 socket (it used to
-- send from an IPv4 one: "Address family for hostname not supported").
function TestCli.test_udp_connect_to_ipv6()
  if not H.has_ipv6() then lu.skip("this machine has no ::1") end
  local pid, port, out = serve("0 --udp", "::1")
  local reply, status = H.sh("printf v6 | " .. R .. " connect ::1 " .. port .. " --udp")
  lu.assertEquals(status, 0, reply)
  lu.assertEquals(reply, "v6")
  H.stop(pid)
  os.remove(out)
end

function TestCli.test_unix_socket_serve_and_send()
  local path = H.tmpname()
  local pid, out = H.start("exec " .. R .. " serve --unix " .. path)
  H.await_output(out, "listening on " .. path:gsub("%p", "%%%0"))
  lu.assertEquals(H.sh(R .. " send --unix " .. path .. " via unix"), "via unix\n")
  lu.assertTrue(H.exists(path))
  H.stop(pid)
  lu.assertTrue(H.wait_exit(pid))
  lu.assertFalse(H.exists(path), "the socket file is removed at exit")
  os.remove(out)
end

function TestCli.test_connect_against_a_socat_echo_server_with_trace()
  local path = H.tmpname()
  local spid, sout = H.start("exec socat UNIX-LISTEN:" .. path .. ",fork EXEC:cat")
  H.within(5, function()
    while not os.rename(path, path) do reverb.sleep(0.01) end   -- the socket exists
  end)
  local errfile = os.tmpname()
  local reply, status = H.sh("(printf 'a\\r\\nb\\000c' | " .. R .. " connect --unix " .. path ..
    " --trace 2>" .. errfile .. ")")
  lu.assertEquals(status, 0)
  lu.assertEquals(reply, "a\r\nb\0c")
  local trace = H.slurp(errfile)
  lu.assertStrContains(trace, "> 00000000 a\\r\\nb\\x00c\n")
  lu.assertStrContains(trace, "< 00000000 a\\r\\nb\\x00c\n")
  H.stop(spid)
  os.remove(errfile)
  os.remove(sout)
  os.remove(path)
end

function TestCli.test_three_megabytes_of_random_bytes_through_connect()
  local pid, port, out = serve("0")
  local input, output = os.tmpname(), os.tmpname()
  local parts = {}
  for i = 1, 3 * 1024 do
    local kb = {}
    for k = 1, 1024 do kb[k] = math.random(0, 255) end
    parts[i] = string.char(table.unpack(kb))
  end
  local data = table.concat(parts)
  local f = assert(io.open(input, "wb"))
  f:write(data)
  f:close()
  local msg, status = H.sh("cat " .. input .. " | " .. R .. " connect 127.0.0.1 " .. port ..
    " > " .. output)
  lu.assertEquals(status, 0, msg)
  local got = H.slurp(output)
  lu.assertEquals(#got, #data)
  lu.assertTrue(got == data, "every byte back, in order")
  os.remove(input)
  os.remove(output)
  H.stop(pid)
  os.remove(out)
end

function TestCli.test_repl_through_a_pipe_keeps_its_server_alive()
  local out = os.tmpname()
  -- bounded like H.sh: closing the pipe waits for the REPL to exit
  local repl = io.popen("timeout -k 5 " .. 60 * H.SLOW .. " " .. R .. " repl > " .. out ..
                        " 2>&1", "w")
  repl:write([[srv = reverb.serve(0, function(c)
  for l in c:lines() do c:write(l:upper(), "\n") end
end)
print("port " .. srv.port)
]])
  repl:flush()
  local port = tonumber((H.await_output(out, "port (%d+)")))
  -- the REPL now waits for its next line; its loop must still serve
  H.within(10, function()
    local c <close> = H.connect("127.0.0.1", port)
    c:write("while you type\n")
    lu.assertEquals(c:read_line(), "WHILE YOU TYPE")
  end)
  repl:write("#srv:clients() + 40\nfor i = 1,\n2 do io.write(i) end\nprint()\n")
  repl:write("error('oops')\n")
  -- a value whose __tostring raises, an error that is no string: shown,
  -- and the prompt goes on
  repl:write("setmetatable({}, { __tostring = function() error('no words') end })\n")
  repl:write("error({})\nprint('still ' .. 'here')\n")
  -- as lua5.4 shows them: "=expr"; an object with __tostring by its text
  -- alone; a traceback that ends at the line typed, not in the REPL
  repl:write("=6 * 7\nerror(setmetatable({}, { __tostring = function() return 'OBJ' end }))\n")
  lu.assertTrue(repl:close())
  local text = H.slurp(out)
  lu.assertStrContains(text, "port " .. port .. "\n")
  lu.assertStrMatches(text, ".*\n40\n12\n.*")
  lu.assertStrContains(text, "oops")
  lu.assertStrContains(text, "(__tostring failed: ")
  lu.assertStrContains(text, "(error object is a table value)")
  lu.assertStrContains(text, "still here")
  lu.assertStrContains(text, "\n42\n")
  lu.assertStrContains(text, "\nOBJ\n")
  lu.assertStrContains(text, "stdin:1: oops\nstack traceback:\n\t[C]: in function 'error'\n" ..
                             "\tstdin:1: in main chunk\n\t[C]: in ?\n")
  lu.assertNotStrContains(text, "repl.lua")
  os.remove(out)
end

-- On SIGTERM the clients are closed and their tasks clean up (the -v
-- line, on_close) before the server exits.
function TestCli.test_sigterm_lets_the_clients_clean_up()
  local pid, port, out = serve("0 -v")
  local _c <close> = H.connect("127.0.0.1", port)
  H.await_output(out, "open\n")
  H.stop(pid)
  lu.assertTrue(H.wait_exit(pid))
  lu.assertStrContains(H.slurp(out), "closed, 0 bytes in, 0 bytes out")
  os.remove(out)
end

-- The supervisor compiles a script but does not run it: its top level
-- (here a line printed) runs once per worker, not once more beside them.
function TestCli.test_workers_run_the_script_and_the_supervisor_does_not()
  local script = H.file('io.stderr:write("script loaded\\n")\nreturn function(c) c:pipe(c) end\n',
                        ".lua")
  local pid, out = H.start("exec " .. R .. " serve 0 --workers 2 " .. script)
  local port = H.await_output(out, "listening on 127%.0%.0%.1:(%d+)")
  lu.assertEquals(H.sh(R .. " send 127.0.0.1 " .. port .. " piped"), "piped\n")
  local function loaded() return select(2, H.slurp(out):gsub("script loaded", "")) end
  H.within(10, function() while loaded() < 2 do reverb.sleep(0.01) end end)
  H.stop(pid)
  lu.assertTrue(H.wait_exit(pid))
  lu.assertEquals(loaded(), 2)
  os.remove(out)
  os.remove(script)
end

function TestCli.test_workers_share_the_port_and_stop_with_the_parent()
  local pid, port, out, kids = serve_workers()
  for i = 1, 10 do
    lu.assertEquals(H.sh(R .. " send 127.0.0.1 " .. port .. " req " .. i), "req " .. i .. "\n")
  end
  H.stop(pid)
  lu.assertTrue(H.wait_exit(pid))
  for _, kid in ipairs(kids) do lu.assertTrue(H.wait_exit(kid), "worker " .. kid .. " stopped") end
  lu.assertStrContains(H.slurp(out), "(2 workers)")
  os.remove(out)
end

function TestCli.test_workers_die_with_a_killed_supervisor()
  local pid, _, out, kids = serve_workers()
  require("reverb.core").kill(pid, "KILL")   -- no chance to stop them itself
  for _, kid in ipairs(kids) do lu.assertTrue(H.wait_exit(kid), "worker " .. kid .. " stopped") end
  os.remove(out)
end

-- A worker that ends within a second of its start is replaced after a
-- pause; a TERM during that pause stops the supervisor at once. (It
-- started the replacement anyway, which missed its TERM and was killed
-- after two seconds, its clients never closed.)
function TestCli.test_a_stop_during_the_restart_pause_starts_no_worker()
  local pid, _, out, kids = serve_workers()
  reverb.sleep(1.1)            -- past a second: its end is bad luck, replaced at once
  core.kill(kids[1], "KILL")
  H.await_output(out, "worker " .. kids[1] .. " ended")
  local fresh
  H.within(10, function()
    repeat
      for _, k in ipairs(children(pid)) do if k ~= kids[2] then fresh = k end end
      reverb.sleep(0.01)
    until fresh
  end)
  core.kill(fresh, "KILL")     -- ended within a second: the pause begins
  H.await_output(out, "worker " .. fresh .. " ended")
  core.kill(pid, "TERM")
  -- every child it has until it is gone: none but the one already there
  -- (no wall clock: the replacement it started was seen, then killed)
  local after = {}
  H.within(10, function()
    while H.alive(pid) do
      for _, k in ipairs(children(pid)) do if k ~= kids[2] then after[k] = true end end
      reverb.sleep(0.005)
    end
  end)
  lu.assertEquals(after, {}, "a worker started after the TERM")
  lu.assertTrue(H.wait_exit(pid))
  os.remove(out)
end

function TestCli.test_a_dead_worker_is_restarted()
  local pid, port, out, kids = serve_workers()
  H.stop(kids[1])
  H.await_output(out, "worker " .. kids[1] .. " ended; starting another")
  H.within(10, function()
    repeat kids = children(pid) reverb.sleep(0.01) until #kids == 2
  end)
  lu.assertEquals(H.sh(R .. " send 127.0.0.1 " .. port .. " still"), "still\n")
  H.stop(pid)
  os.remove(out)
end

function TestCli.test_sigterm_and_sigint_exit_0()
  for _, sig in ipairs { "TERM", "INT" } do
    local pid, out = H.start(R .. " serve 0 & echo child=$!; wait $!; echo status=$?")
    local child = tonumber((H.await_output(out, "child=(%d+)")))
    local port = H.await_output(out, "listening on 127%.0%.0%.1:(%d+)")
    -- a client connected at the time of the signal does not hold the exit up
    local c <close> = H.connect("127.0.0.1", tonumber(port))
    require("reverb.core").kill(child, sig)
    lu.assertEquals(H.await_output(out, "status=(%d+)"), "0", sig)
    lu.assertNil(c:read_line(), "the client was closed")
    H.wait_exit(pid)
    os.remove(out)
  end
end

-- Ctrl-C stops a script blocked in a system call (here accept), as it
-- stops a C program: lua5.4's handler alone would wait for the next Lua
-- instruction, which never comes.
function TestCli.test_sigint_stops_a_script_blocked_in_accept()
  local pid, out = H.start(R .. " run examples/tutorial_echo_server.lua 0 & echo child=$!; " ..
                           "wait $!; echo status=$?")
  local child = tonumber((H.await_output(out, "child=(%d+)")))
  -- should the script survive SIGINT (the regression), it is killed all the same
  local _reap <close> = setmetatable({}, { __close = function()
    if H.alive(child) then pcall(require("reverb.core").kill, child, "KILL") end
  end })
  H.await_output(out, "listening on port (%d+)")
  require("reverb.core").kill(child, "INT")
  lu.assertEquals(H.await_output(out, "status=(%d+)"), "130", "killed by SIGINT")
  H.wait_exit(pid)
  os.remove(out)
end

-- Started with a soft limit of 64 open files (a hard one well above),
-- the server raises it and echoes to 200 clients at once, where it would
-- otherwise stop accepting at about 60.
function TestCli.test_serve_raises_its_open_files_limit_for_many_clients()
  local soft, hard = core.getrlimit("nofile")   -- this runner holds the 200 clients
  if soft < H.fds() + 250 or hard < 300 then return lu.skip("open-files limit " .. soft) end
  local pid, out = H.start("ulimit -Sn 64 && exec " .. R .. " serve 0 --host 127.0.0.1")
  local port = H.await_output(out, "listening on 127%.0%.0%.1:(%d+)")
  local clients = setmetatable({}, {
    __close = function(t) for _, c in ipairs(t) do c:close() end end })
  do
    local _ <close> = clients
    H.within(20, function()
      for i = 1, 200 do clients[i] = H.connect("127.0.0.1", port) end
      for i, c in ipairs(clients) do c:write("client ", i, "\n") end
      for i, c in ipairs(clients) do lu.assertEquals(c:read_line(), "client " .. i) end
    end)
  end
  lu.assertNotStrContains(H.slurp(out), "EMFILE")
  H.stop(pid)
  os.remove(out)
end

function TestCli.test_expected_failures_are_one_line_and_exit_1()
  local hold <close> = reverb.serve(0, function() end)
  local not_a_handler = H.file("return 42\n", ".lua")
  local cases = {
    { "send no-such-host.invalid 80 x", "reverb: connect no%-such%-host%.invalid:80: .+\n" },
    { "serve " .. hold.port,
      "reverb: bind 127%.0%.0%.1:" .. hold.port .. ": Address already in use\n" },
    -- SO_REUSEPORT must not let --workers share a port someone else holds
    { "serve " .. hold.port .. " --workers 2",
      "reverb: bind 127%.0%.0%.1:" .. hold.port .. ": Address already in use\n" },
    -- a script that is no handler fails once, not in each worker, forever
    { "serve 0 --workers 2 " .. not_a_handler,
      ".*must return a handler function %(it returned number%)\n.*" ..
      "every worker ended as it started; stopping\n.*" },
    { "run no-such-script.lua", "reverb: cannot open no%-such%-script%.lua[^\n]*\n" },
  }
  for _, case in ipairs(cases) do
    local out, status = H.sh(R .. " " .. case[1])
    lu.assertEquals(status, 1, case[1])
    lu.assertStrMatches(out, case[2])
    lu.assertNotStrContains(out, "traceback")
  end
  local refusing <close> = require("reverb.core").socket()   -- bound, never listening
  refusing:bind("127.0.0.1", 0)
  local port = select(2, refusing:getsockname())
  local out, status = H.sh(R .. " send 127.0.0.1 " .. port .. " x")
  lu.assertEquals(status, 1)
  lu.assertEquals(out, "reverb: connect 127.0.0.1:" .. port .. ": Connection refused\n")
  os.remove(not_a_handler)
end

-- A task that fails with a system call's error is reported in one line,
-- as the command reports its own, and fails the run (it exited 0, after
-- a traceback).
function TestCli.test_run_fails_when_a_task_fails()
  local script = H.file([[
local hold = require("reverb.core").socket()
hold:bind("127.0.0.1", 0)   -- bound, never listening: connects are refused
reverb.spawn(function() reverb.connect("127.0.0.1", select(2, hold:getsockname())) end)
reverb.spawn(function() reverb.sleep(0.01) print("the other task finished") end)
]], ".lua")
  local out, status = H.sh(R .. " run " .. script)
  lu.assertEquals(status, 1)
  lu.assertStrMatches(out, "reverb: task failed: connect 127%.0%.0%.1:%d+: " ..
                           "Connection refused %(ECONNREFUSED%)\nthe other task finished\n")
  os.remove(script)
end

function TestCli.test_a_bug_in_a_script_shows_its_traceback()
  local script = H.file("local function inner() local t = nil; return t.x end\ninner()\n")
  local out, status = H.sh(R .. " run " .. script)
  lu.assertEquals(status, 1)
  lu.assertStrContains(out, "attempt to index a nil value")
  lu.assertStrContains(out, "stack traceback")
  os.remove(script)
end

function TestCli.test_run_sets_arg_like_lua()
  local script = H.file("print(arg[0] == ..., select('#', ...), arg[1], arg[2], reverb ~= nil)\n")
  local out, status = H.sh(R .. " run " .. script .. " one two")
  lu.assertEquals(status, 0)
  lu.assertEquals(out, "false\t2\tone\ttwo\ttrue\n")
  os.remove(script)
end

-- A script's globals are the globals, as under lua5.4: _G has them, and
-- so does code it loads (they went to a table of their own).
function TestCli.test_a_scripts_globals_are_the_globals()
  local script = H.file("answer = 42\n" ..
                        "print(_G.answer, load('return answer')(), _G.reverb ~= nil)\n")
  local out, status = H.sh(R .. " run " .. script)
  lu.assertEquals(status, 0)
  lu.assertEquals(out, "42\t42\ttrue\n")
  os.remove(script)
end

return { TestCli = TestCli }
