--- spec/run.lua: runs the luaunit specs (make test).
--
--   lua5.4 spec/run.lua            every spec/*_spec.lua
--   lua5.4 spec/run.lua core loop  only spec/core_spec.lua and spec/loop_spec.lua
--   lua5.4 spec/run.lua -p Read    luaunit options pass through (-p pattern, -v)
--
-- Each spec file returns a table of test classes. The last line is
-- "N passed, N failed" and the exit status is non-zero on any failure,
-- including a spec that leaves a file behind in the checkout.

local only, luargs = {}, {}
for _, a in ipairs(arg) do
  if a:sub(1, 1) == "-" or luargs[#luargs] == "-p" then luargs[#luargs + 1] = a
  else only[#only + 1] = "spec/" .. a .. "_spec.lua" end
end
-- luaunit reads its options from the global arg when it loads
for i = #arg, 1, -1 do arg[i] = nil end
for i, a in ipairs(luargs) do arg[i] = a end
local lu = require "luaunit"
if #only == 0 then
  local ls = io.popen("ls spec/*_spec.lua")
  for f in ls:lines() do only[#only + 1] = f end
  ls:close()
end

local suites = {}
for _, file in ipairs(only) do
  local classes = dofile(file)
  local names = {}
  for name in pairs(classes) do names[#names + 1] = name end
  table.sort(names)
  for _, name in ipairs(names) do suites[#suites + 1] = { name, classes[name] } end
end

-- Every path in the checkout but build output, so a spec that leaves a
-- file behind fails (find, not git status: git does not show sockets).
local function untracked()
  local p = io.popen("find . -path ./.git -prune -o -path ./build -prune -o " ..
                     "-path ./bench/build -prune -o -print 2>/dev/null")
  local seen = {}
  for line in p:lines() do seen[line] = true end
  p:close()
  return seen
end
local before = untracked()

local runner = lu.LuaUnit.new()
runner:setOutputType("text")
local bad = runner:runSuiteByInstances(suites)
local r = runner.result
for line in pairs(untracked()) do
  if not before[line] then
    print("a spec left this in the checkout: " .. line)
    bad, r.failureCount = bad + 1, r.failureCount + 1
  end
end
print(string.format("%d passed, %d failed, %d skipped",
  r.successCount, r.failureCount + r.errorCount, r.skippedCount))
os.exit(bad == 0 and 0 or 1, true)   -- true: close the state, so finalizers run
