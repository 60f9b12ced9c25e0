--- reverb: the public table.
--
--   local reverb = require "reverb"
--   reverb.serve(8080, function(conn) for l in conn:lines() do conn:write(l, "\n") end end)
--   reverb.run()
--
-- The loop (spawn, sleep, now, run, stop, fork), signals, servers, clients and
-- datagrams, each from its own module; `reverb.core` is the C layer.

local core = require "reverb.core"
local loop = require "reverb.loop"

return {
  version = core.version,
  core = core,
  spawn = loop.spawn,
  sleep = loop.sleep,
  now = loop.now,
  run = loop.run,
  stop = loop.stop,
  fork = loop.fork,
  on_signal = require("reverb.signal").on_signal,
  serve = require("reverb.server").serve,
  connect = require("reverb.client").connect,
  udp = require("reverb.udp").udp,
  iserror = core.iserror,
}
