--- reverb.cli: the `reverb` command: argument parsing, help, exit codes,
-- and the small commands (run, version). serve, connect/send and repl
-- live in their own modules.
--
-- Exit status: 0 success, 1 runtime failure, 2 usage error. An expected
-- failure (an error object: refused, unknown host, port in use) is one
-- line "reverb: ..." on stderr; a bug in a user's script shows its
-- traceback.

local core = require "reverb.core"

local M = {}

local HELP = {}

HELP.main = [[
reverb -- a Lua 5.4 networking toolkit: echo server, client, protocol workbench

Usage:
  reverb serve [PORT] [options] [SCRIPT.lua]   a server: echo, or the handler SCRIPT returns
      --host H  --unix PATH  --udp  --workers N  --idle-timeout S  --max-line N
      -v, --verbose  -q, --quiet
  reverb connect HOST PORT [--udp] [--trace]   an interactive client, like nc
  reverb connect --unix PATH [--trace]
  reverb send HOST PORT [MESSAGE...] [--timeout S]
  reverb send --unix PATH [MESSAGE...] [--timeout S]
                                               send a message (or stdin), print the reply
  reverb run SCRIPT.lua [ARGS...]              run a script, then its servers and tasks
  reverb repl                                  a Lua prompt whose servers keep serving
  reverb                                       the same as reverb repl
  reverb --help | --version
  reverb COMMAND --help                        each option of one command, explained

Options go anywhere after the command; "--" ends them, so that a message
may start with "-".

Ctrl-C ends every command (serve closes its clients first).

Examples:
  reverb serve                                 echo server on 127.0.0.1:8080
  reverb serve 9000 examples/upper.lua         serve the handler upper.lua returns
  reverb connect 127.0.0.1 8080 --trace        talk to it, every byte shown on stderr
  reverb send 127.0.0.1 8080 hello             prints hello
  reverb send 127.0.0.1 8080 -- -n is a flag   sends "-n is a flag"

Exit status: 0 success, 1 runtime failure, 2 usage error.
]]

HELP.serve = [[
Usage: reverb serve [PORT] [options] [SCRIPT.lua]

With no script, an echo server: every byte goes back as soon as it
arrives (binary-safe, no line limit). A script returns the handler,
function(conn, srv), run in its own task for each client:

  return function(conn) for l in conn:lines() do conn:write(l:upper(), "\n") end end

Options:
  PORT                 port to listen on (default 8080; 0 takes any free port)
  --host H             address to listen on (default 127.0.0.1; * for all)
  --unix PATH          listen on a unix socket instead
  --udp                a UDP server: the handler is function(data, host, port, u)
                       and what it returns is sent back (default: the data)
  --workers N          N processes sharing the port (SO_REUSEPORT), forked
                       by a supervisor that restarts any that dies; 1 (the
                       default) serves in this process
  --idle-timeout S     close a client that sends nothing for S seconds
  --max-line N         longest line read_line accepts (default 65536)
  -v, --verbose        log each connection's open and close, with byte counts
  -q, --quiet          print nothing, not even where it listens

SIGINT or SIGTERM: stop accepting, close the clients, exit 0.

Each client takes a descriptor: reverb raises its limit on open files
from the soft limit to the hard one (ulimit -Hn), and at that limit stops
accepting until clients leave; nobody connected is dropped.

Examples:
  reverb serve                         echo on 127.0.0.1:8080
  reverb serve 0 -v                    any free port, log connections
  reverb serve 9000 --host '*' app.lua all interfaces, handler from app.lua
  reverb serve --unix /tmp/echo.sock
]]

HELP.connect = [[
Usage: reverb connect HOST PORT [--udp] [--trace]
       reverb connect --unix PATH [--trace]

Copies stdin to the connection and the connection to stdout, both at
once. End of stdin half-closes the connection; the command exits when the
peer closes. Binary-safe in pipes; line by line at a terminal.

Options:
  --udp                each chunk of stdin is one datagram; replies go to stdout
  --unix PATH          connect to a unix socket
  --trace              show every byte each way on stderr, escaped:
                       "> 00000000 hello\r\n" (sent), "< ..." (received)

Examples:
  reverb connect 127.0.0.1 8080
  printf 'GET / HTTP/1.0\r\n\r\n' | reverb connect example.org 80 --trace
]]

HELP.send = [[
Usage: reverb send HOST PORT [MESSAGE...] [--timeout S]
       reverb send --unix PATH [MESSAGE...] [--timeout S]

Sends MESSAGE (the words joined by spaces, then a newline) or, with no
message, all of stdin; then half-closes. Prints every byte of the reply,
as it comes, until the server closes (or, once all is sent, sends nothing
for S seconds, default 5). A server that closes before taking all of
stdin has its reply printed, then the failed send reported (status 1).

Options:
  --unix PATH          send to a unix socket
  --timeout S          give up on a server silent for S seconds (default 5)
  --                   the rest is the message, even words starting with "-"

Examples:
  reverb send 127.0.0.1 8080 Hello, Server!
  reverb send 127.0.0.1 8080 < request.bin > reply.bin
]]

HELP.run = [[
Usage: reverb run SCRIPT.lua [ARGS...]

Runs SCRIPT with reverb loaded (require "reverb", or the global reverb),
arg set as lua sets it, then runs the loop until no task, server or timer
is left. Every word after SCRIPT goes to it, options too. Ctrl-C ends it,
unless it says otherwise (reverb.on_signal("INT", fn)). A task that fails
is reported and the others go on; the exit status is then 1. As serve
does, it raises its limit on open files to the hard limit.

Example:
  reverb run examples/echo_server.lua 9000
]]

HELP.repl = [[
Usage: reverb repl    (or just: reverb)

A Lua prompt with reverb loaded. Expressions print their values, as in
lua5.4; an unfinished statement continues on the next line. The loop
runs while the prompt waits, so servers started here keep serving:

  > srv = reverb.serve(9000, function(c) for l in c:lines() do c:write(l, "\n") end end)
  > c = reverb.connect("127.0.0.1", 9000)
  > c:write("hi\n"):read_line()
  hi

Ctrl-D (the end of input) or Ctrl-C leaves it, and its servers with it.
]]

--- A usage error: printed with a pointer to the help, exit status 2.
local USAGE = {}

function M.usage(cmd, message)
  error(setmetatable({ cmd = cmd, message = message }, USAGE), 0)
end

--- Parses args against a spec: spec.values (options taking a value) and
-- spec.flags (switches), each mapping the option to its field; "--" ends
-- the options. Returns options, positionals.
function M.parse(cmd, args, spec)
  local opts, pos = {}, {}
  local i = 1
  while i <= #args do
    local a = args[i]
    if a == "--" then   -- the rest is positional, whatever it looks like
      table.move(args, i + 1, #args, #pos + 1, pos)
      break
    elseif a == "--help" or a == "-h" then
      opts.help = true
    elseif spec.values and spec.values[a] then
      local v = args[i + 1]
      if v == nil then M.usage(cmd, a .. " needs a value") end
      opts[spec.values[a]] = v
      i = i + 1
    elseif spec.flags and spec.flags[a] then
      opts[spec.flags[a]] = true
    elseif a:sub(1, 1) == "-" and a ~= "-" and not tonumber(a) then
      M.usage(cmd, "unknown option " .. a)
    else
      pos[#pos + 1] = a
    end
    i = i + 1
  end
  return opts, pos
end

--- An option's number: a usage error unless v is one, 0 or more (and
-- whole, with integer).
function M.number(cmd, what, v, integer)
  local n = tonumber(v)
  if not n or n < 0 or (integer and math.type(n) ~= "integer") then
    M.usage(cmd, what .. " must be a " .. (integer and "whole " or "") ..
      "number, 0 or more, not '" .. tostring(v) .. "'")
  end
  return n
end

function M.port(cmd, v)
  local p = require("reverb.address").port(v)
  if not p then M.usage(cmd, "PORT must be 0-65535, not '" .. v .. "'") end
  return p
end

--- A --unix path: a usage error for an empty one, which names no file.
function M.path(cmd, v)
  if v == "" then M.usage(cmd, "--unix needs a path") end
  return v
end

--- The environment scripts and the REPL run in: the globals, as under
-- lua5.4 (what a script sets, the modules it requires see), with
-- `reverb` among them.
function M.env()
  _G.reverb = require "reverb"
  return _G
end

--- Loads a script file; a missing or broken file is a runtime failure
-- reported in one line (exit status 1), not a traceback.
function M.load(path, env)
  local fn, err = loadfile(path, "t", env or M.env())
  if not fn then error({ line = err }, 0) end
  return fn
end

-- Errors raised by a script's own code keep their traceback.
local BUG = { __index = { bug = true } }
local function bug(e)
  local mt = getmetatable(e)
  if core.iserror(e) or mt == USAGE or mt == BUG or (type(e) == "table" and e.line) then
    return e
  end
  return setmetatable({ text = debug.traceback(tostring(e), 2) }, BUG)
end
M.bug = bug

local function run_cmd(args)
  if args[1] == "--help" or args[1] == "-h" then
    io.stdout:write(HELP.run)
    return 0
  end
  local script = args[1]
  if not script then M.usage("run", "which script?") end
  local fn = M.load(script)
  -- arg as lua sets it: the script at 0, its arguments from 1
  local sarg = { [0] = script }
  for i = 2, #args do sarg[i - 1] = args[i] end
  _G.arg = sarg
  local reverb = require "reverb"
  local ok, err = xpcall(fn, bug, table.unpack(sarg, 1, #sarg))
  if not ok then error(err, 0) end
  reverb.run()
  -- a task that failed (its report is printed) fails the run
  return require("reverb.loop").failures() > 0 and 1 or 0
end

local COMMANDS = {
  serve = function(args) return require("reverb.cli_serve").main(args) end,
  connect = function(args) return require("reverb.cli_connect").connect(args) end,
  send = function(args) return require("reverb.cli_connect").send(args) end,
  run = run_cmd,
  repl = function(args)
    if args[1] == "--help" or args[1] == "-h" then
      io.stdout:write(HELP.repl)
      return 0
    end
    return require("reverb.repl").main(args)
  end,
}

--- Formats what a command raised as the one line (or traceback) to show,
-- and the exit status that goes with it.
function M.failure(err)
  if getmetatable(err) == USAGE then
    return "reverb" .. (err.cmd and " " .. err.cmd or "") .. ": " .. err.message ..
      "\n(see reverb " .. (err.cmd and err.cmd .. " " or "") .. "--help)", 2
  elseif core.iserror(err) then
    local where = err.address and " " .. err.address or ""
    return "reverb: " .. err.op .. where .. ": " .. err.message, 1
  elseif type(err) == "table" and err.bug then
    return "reverb: " .. err.text, 1
  elseif type(err) == "table" and err.line then
    return "reverb: " .. err.line, 1
  end
  return "reverb: " .. debug.traceback(tostring(err), 2), 1
end

-- /dev/null opened on any of descriptors 0-2 that whoever started us
-- left closed: the next socket would get that number, and what the
-- command prints would go to a peer. (A new descriptor takes the lowest
-- free number, so a socket made and closed finds them.) Kept open.
local placeholders = {}
local function fill_stdio()
  local probe = core.socket()
  while probe:fileno() <= 2 do
    probe:close()
    placeholders[#placeholders + 1] = assert(io.open("/dev/null", "r+"))
    probe = core.socket()
  end
  probe:close()
end

-- A server of thousands of clients needs thousands of descriptors, and
-- a shell's soft limit is often 1,024: the commands that serve (serve,
-- run, repl) raise it to the hard limit (ulimit -Hn), as Go's runtime
-- does. (Go puts it back for the programs it starts; here a script's
-- os.execute and io.popen inherit it.) Where it cannot, the command goes
-- on with the limit it has: at the limit, accepting pauses until
-- descriptors free up (EMFILE).
local SERVING = { serve = true, run = true, repl = true }
local function raise_nofile()
  local soft, hard = core.getrlimit("nofile")
  if soft < hard then core.setrlimit("nofile", hard) end
end

function M.main(args)
  args = args or {}
  pcall(fill_stdio)   -- a guard, not a requirement: no socket to probe with (EMFILE), no guard
  local cmd = args[1] or "repl"
  if SERVING[cmd] then
    pcall(raise_nofile)   -- nor this: a hard limit of "unlimited" is more than Linux allows
  end
  local rest = { table.unpack(args, 2) }
  if cmd == "--help" or cmd == "-h" or cmd == "help" then
    io.stdout:write(HELP.main)
    return 0
  elseif cmd == "--version" or cmd == "-V" then
    io.stdout:write("reverb ", core.version, " (", _VERSION, ")\n")
    return 0
  end
  local fn = COMMANDS[cmd]
  if not fn then
    io.stderr:write("reverb: unknown command '", cmd, "'\n(see reverb --help)\n")
    return 2
  end
  -- Ctrl-C ends a command as it ends nc, a C server or lua5.4 at its
  -- prompt, unless a script asks for it (reverb.on_signal, as serve
  -- does). lua5.4's own handler only asks the next Lua instruction to
  -- raise: a blocking accept or recv, which the kernel restarts after it,
  -- never got there, and the loop's wait raised it with a traceback.
  core.signal_default("INT")
  local ok, status = xpcall(fn, bug, rest)
  if ok then return status or 0 end
  local text, code = M.failure(status)
  io.stderr:write(text, "\n")
  return code
end

M.HELP = HELP

return M
