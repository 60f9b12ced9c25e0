--- reverb.cli_serve: `reverb serve`, the echo server out of the box, a
-- handler script's server, UDP, unix sockets and --workers.
--
-- Workers: the parent binds the port first (SO_REUSEPORT, not listening),
-- so port 0 resolves to one port for all; each forked child listens on it
-- with SO_REUSEPORT and the kernel spreads connections among them. The
-- parent only supervises: it restarts a worker that dies and, on SIGINT
-- or SIGTERM, stops them all.

local reverb = require "reverb"
local core = require "reverb.core"
local loop = require "reverb.loop"
local cli = require "reverb.cli"
local address = require "reverb.address"
local hostport = address.hostport

local SPEC = {
  values = { ["--host"] = "host", ["--unix"] = "unix", ["--workers"] = "workers",
             ["--idle-timeout"] = "idle_timeout", ["--max-line"] = "max_line" },
  flags = { ["--udp"] = "udp", ["-v"] = "verbose", ["--verbose"] = "verbose",
            ["-q"] = "quiet", ["--quiet"] = "quiet" },
}

local function say(...)   -- one write: workers and their supervisor share stderr
  io.stderr:write(table.concat({ "reverb: ", ... }) .. "\n")
end

-- The echo handler: each chunk back as it arrives, binary-safe. The
-- stream's pipe is the loop `local d = conn:read_some() ... conn:write(d)`
-- in C (examples/echo_server.lua is that loop in Lua).
local function echo(conn)
  conn:pipe(conn)
end

local function load_handler(script)
  if not script then return nil end
  local ok, handler = xpcall(cli.load(script), cli.bug)
  if not ok then error(handler, 0) end
  if type(handler) ~= "function" then
    error({ line = script .. " must return a handler function (it returned " ..
      type(handler) .. ")" }, 0)
  end
  return handler
end

-- Stops on SIGINT/SIGTERM: no more accepting, clients closed, run() ends
-- once their tasks have cleaned up (on_close, the -v log line), or after
-- a second for whatever does not end by itself. A worker of --workers
-- stops on SIGTERM only: Ctrl-C reaches the whole process group, and
-- its supervisor, not the worker, decides (else a worker stopped by it
-- would be restarted while the supervisor was about to stop).
local function stop_on_signals(close, worker)
  local stopping = false
  local function stop()
    if stopping then return end   -- a second signal while the first one's stop waits
    stopping = true
    close()
    local deadline = reverb.now() + 1
    while loop.count() > 1 and reverb.now() < deadline do reverb.sleep(0.005) end
    reverb.stop()
  end
  if worker then core.signal_ignore("INT") else reverb.on_signal("INT", stop) end
  reverb.on_signal("TERM", stop)
end

local function serve_udp(o, handler)
  local u = reverb.udp(o.host, o.port)
  handler = handler or function(data) return data end
  if not o.quiet then say("udp ", o.what, " listening on ", hostport(o.host, u.port)) end
  reverb.spawn(function()
    while not u.closed do
      local ok, err = pcall(function()
        local data, host, port = u:recvfrom()
        local reply = handler(data, host, port, u)
        if reply then u:sendto(reply, host, port) end
      end)
      if not ok and not u.closed then say("udp handler: ", tostring(err)) end
    end
  end)
  stop_on_signals(function() u:close() end)
end

local function serve_stream(o, handler)
  local opts = {
    host = o.host, port = o.port, unix = o.unix, reuseport = o.reuseport,
    idle_timeout = o.idle_timeout, max_line = o.max_line,
  }
  if o.verbose then
    opts.on_open = function(conn) say(conn.peer, " open") end
    opts.on_close = function(conn)
      local bytes_in, bytes_out = conn:getstats()
      say(conn.peer, " closed, ", bytes_in, " bytes in, ", bytes_out, " bytes out")
    end
  end
  local srv = reverb.serve(opts, handler or echo)
  if not o.quiet and not o.worker then
    say(o.what, " listening on ", o.unix or hostport(srv.host, srv.port))
  end
  stop_on_signals(function()
    srv:close()
    for _, conn in ipairs(srv:clients()) do conn:close() end
  end, o.worker)
  return srv
end

-- The parent of --workers: forks, supervises, restarts, stops them all.
local function supervise(o, n)
  -- A missing or broken script fails here, once (compiled, not run: its
  -- top level is the workers' to run); one that fails as it runs makes
  -- the workers end as they start, and the supervisor gives up below.
  if o.script then cli.load(o.script) end
  local family = address.ipv6(o.host) and "inet6" or "inet"
  if o.port ~= 0 then
    -- The workers share the port through SO_REUSEPORT, which would share
    -- it with anyone else's listener too: a port in use fails here, as
    -- it does without --workers (reuseaddr, as the workers have it: a
    -- TIME_WAIT left by an earlier server is no listener).
    local probe <close> = core.socket(family)
    probe:setoption("reuseaddr", true)
    probe:bind(o.host, o.port)
    probe:listen()
  end
  local reserve = core.socket(family)
  reserve:setoption("reuseport", true)
  reserve:bind(o.host, o.port)
  o.port = select(2, reserve:getsockname())
  o.reuseport, o.worker = true, true
  local workers, stopping, failed = {}, false, false
  local quick = 0   -- workers in a row that ended within a second of their start

  local function start_worker()
    local pid = loop.fork(true)   -- a worker dies with its supervisor
    if pid == 0 then
      reserve:close()
      local ok, err = pcall(function()
        serve_stream(o, load_handler(o.script))
        reverb.run()
      end)
      if not ok then io.stderr:write(cli.failure(err), "\n") end
      os.exit(ok and 0 or 1)
    end
    workers[pid] = reverb.now()
  end

  for _ = 1, n do start_worker() end
  if not o.quiet then
    say(o.what, " listening on ", hostport(o.host, o.port), " (", n, " workers)")
  end
  local function stop() stopping = true end
  reverb.on_signal("INT", stop)
  reverb.on_signal("TERM", stop)
  while not stopping do
    reverb.sleep(0.05)
    -- Every worker that ended since the last look, then their
    -- replacements: how long each lived is read before any back-off.
    local ended = {}
    while true do
      local ok, pid = pcall(core.waitpid, -1, true)
      if not ok or not pid then break end
      local started = workers[pid]
      workers[pid] = nil
      ended[#ended + 1] = pid
      quick = started and reverb.now() - started < 1 and quick + 1 or 0
    end
    if #ended > 0 and not stopping then
      if quick >= n then   -- as many as there are workers: the script, not bad luck
        say("every worker ended as it started; stopping")
        stopping, failed = true, true
      else
        for _, pid in ipairs(ended) do
          if not o.quiet then say("worker ", pid, " ended; starting another") end
        end
        -- ones that cannot even start must not be restarted in a tight loop
        -- (a signal during the pause stops at once: none may start, only
        -- to be killed)
        local resume_at = reverb.now() + (quick > 0 and 1 or 0)
        while not stopping and reverb.now() < resume_at do reverb.sleep(0.05) end
        if not stopping then
          for _ = 1, #ended do start_worker() end
        end
      end
    end
  end
  for pid in pairs(workers) do pcall(core.kill, pid, "TERM") end
  local deadline = reverb.now() + 2
  while next(workers) and reverb.now() < deadline do
    local ok, pid = pcall(core.waitpid, -1, true)
    if ok and pid then workers[pid] = nil else reverb.sleep(0.01) end
  end
  for pid in pairs(workers) do pcall(core.kill, pid, "KILL") end
  reserve:close()
  return failed and 1 or 0
end

local function readable(path)
  local f = io.open(path)
  if f then f:close() end
  return f ~= nil
end

local function main(args)
  local o, pos = cli.parse("serve", args, SPEC)
  if o.help then
    io.stdout:write(cli.HELP.serve)
    return 0
  end
  if #pos > 2 then cli.usage("serve", "too many arguments: " .. table.concat(pos, " ")) end
  for _, p in ipairs(pos) do
    if tonumber(p) and not p:match("%.lua$") then
      o.port = cli.port("serve", p)
    elseif p:match("%.lua$") or readable(p) then   -- a script by another name too
      o.script = p
    else
      cli.usage("serve", "'" .. p .. "' is neither a PORT nor a script")
    end
  end
  o.port = o.port or 8080
  o.host = o.host or "127.0.0.1"
  if o.host == "*" then o.host = "0.0.0.0" end
  if o.workers then
    o.workers = cli.number("serve", "--workers", o.workers, true)
    if o.workers < 1 then cli.usage("serve", "--workers must be 1 or more") end
  end
  if o.idle_timeout then o.idle_timeout = cli.number("serve", "--idle-timeout", o.idle_timeout) end
  if o.max_line then
    o.max_line = cli.number("serve", "--max-line", o.max_line, true)
    if o.max_line < 1 then cli.usage("serve", "--max-line must be 1 or more") end
  end
  if o.unix then cli.path("serve", o.unix) end
  if o.udp and (o.unix or o.workers) then
    cli.usage("serve", "--udp goes with neither --unix nor --workers")
  end
  if o.unix and o.workers then
    cli.usage("serve", "--workers shares a TCP port; it does not go with --unix")
  end
  o.what = o.script and ("server " .. o.script) or "echo server"

  if o.workers and o.workers > 1 then return supervise(o, o.workers) end
  local handler = load_handler(o.script)
  if o.udp then serve_udp(o, handler) else serve_stream(o, handler) end
  reverb.run()
  return 0
end

return { main = main, SPEC = SPEC }
