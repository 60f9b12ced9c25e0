--- spec/bench_spec.lua: the benchmark's own programs work, so `make bench`
-- can trust them. Their figures are never asserted here (speed is measured
-- by `make bench`, not by tests); what is checked is that the load
-- generator talks to both servers, checks every echoed byte, and reports
-- what bench/run.sh reads.
local lu = require "luaunit"
local H = require "helper"

local TestBench = H.class()

local function build()
  local out, status = H.sh("make -s bench/build/loadgen bench/build/c_echo")
  lu.assertEquals(status, 0, out)
end

-- The fields of the load generator's last line, "RESULT k=v k=v ...".
local function result(out)
  local line = out:match("RESULT ([^\n]*)")
  lu.assertNotNil(line, out)
  local fields = {}
  for k, v in line:gmatch("([%w_]+)=(%S+)") do fields[k] = v end
  return fields
end

function TestBench.test_loadgen_alternates_between_c_echo_and_reverb_serve()
  build()
  local cpid, cout = H.start("exec bench/build/c_echo 0")
  local cport = H.await_output(cout, "listening 127%.0%.0%.1:(%d+)")
  local rpid, rout = H.start("exec bin/reverb serve 0")
  local rport = H.await_output(rout, "listening on 127%.0%.0%.1:(%d+)")
  for _, mode in ipairs { "pingpong", "bulk", "connstorm" } do
    -- 0.4 s in slices of 0.05 s: four pairs, after one that is not counted
    local out, status = H.sh(("bench/build/loadgen --port %s --port2 %s --mode %s " ..
      "--conns 20 --size %d --slice 0.05 --warmup 0.1 --duration 0.4")
      :format(cport, rport, mode, mode == "bulk" and 65536 or 64))
    lu.assertEquals(status, 0, out)
    local r = result(out)
    lu.assertEquals(r.mode, mode)
    lu.assertEquals(r.errors, "0", out)
    lu.assertTrue(tonumber(r.rate) > 0 and tonumber(r.rate2) > 0, out)
    lu.assertTrue(tonumber(r.ratio) > 0, out)
    -- what each server did in all, which run.sh divides its CPU time by
    lu.assertTrue(tonumber(r.work) > 0 and tonumber(r.work2) > 0, out)
    lu.assertEquals(r.errors2, "0", out)
    if mode ~= "bulk" then   -- round trips: latency for both servers
      lu.assertTrue(tonumber(r.max_us) >= tonumber(r.p99_us), out)
      lu.assertTrue(tonumber(r.max_us2) >= tonumber(r.p99_us2), out)
    else
      lu.assertNil(r.p50_us, out)
    end
    local _, commas = r.ratios:gsub(",", "")
    lu.assertEquals(commas + 1, 4, "one ratio per pair: " .. out)
  end
  H.stop(cpid)
  H.stop(rpid)
  os.remove(cout)
  os.remove(rout)
end

-- The LuaSocket server bench/run.sh measures for context echoes every
-- byte, from each of its clients, and stays up as clients come and go.
-- (Skipped where LuaSocket is not installed, as the bench skips it.)
function TestBench.test_the_luasocket_context_server_echoes_every_byte()
  if not pcall(require, "socket") then
    lu.skip("LuaSocket is not installed (Debian: lua-socket)")
  end
  build()
  local pid, out = H.start("exec lua5.4 bench/luasocket_echo.lua 0")
  local port = H.await_output(out, "listening 127%.0%.0%.1:(%d+)")
  for _, conns in ipairs { 1, 20 } do   -- the second run's clients come after the first's left
    local got, status = H.sh("bench/build/loadgen --port " .. port ..
      " --mode pingpong --conns " .. conns .. " --size 100 --duration 0.3 --warmup 0")
    lu.assertEquals(status, 0, got)
    lu.assertEquals(result(got).errors, "0", got)
    lu.assertTrue(tonumber(result(got).rate) > 0, got)
  end
  H.stop(pid)
  os.remove(out)
end

-- A server that does not echo what it was sent is an error, not a rate.
function TestBench.test_loadgen_counts_a_wrong_echo_as_an_error()
  build()
  local script = H.file([[
return function(conn)
  while true do
    local data = conn:read_some()
    if not data then return end
    conn:write(data:upper())
  end
end
]], ".lua")
  local pid, out = H.start("exec bin/reverb serve 0 " .. script)
  local port = H.await_output(out, "listening on 127%.0%.0%.1:(%d+)")
  local got, status = H.sh("bench/build/loadgen --port " .. port ..
    " --mode pingpong --conns 2 --duration 0.2 --warmup 0")
  lu.assertEquals(status, 1, got)
  lu.assertStrContains(got, "echo differs from what was sent")
  lu.assertNotEquals(result(got).errors, "0")
  H.stop(pid)
  os.remove(out)
  os.remove(script)
end

function TestBench.test_loadgen_refuses_bad_usage()
  build()
  for _, args in ipairs { "--mode pingpong", "--port 1 --port2 2 --threads 2 --conns 4",
                          "--port 1 --port2 2 --mode idle", "--port 1 --port2 2 --slice 0" } do
    local out, status = H.sh("bench/build/loadgen " .. args)
    lu.assertEquals(status, 2, args .. ": " .. out)
    lu.assertStrContains(out, "usage: loadgen")
  end
end

return { TestBench = TestBench }
