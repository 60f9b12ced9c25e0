--- reverb.repl: a Lua prompt whose loop keeps running while it waits.
--
-- Reading a line of stdin is a reverb wait at top level, so the loop runs
-- the whole time the prompt is idle: servers started at the prompt answer
-- clients between keystrokes. Input and output follow lua5.4: expressions
-- print their values, an unfinished statement continues with ">>".

local core = require "reverb.core"
local cli = require "reverb.cli"
local stdio = require "reverb.stdio"

-- Lines of stdin, one at a time (a pipe may deliver several at once).
local function line_reader()
  local buf, eof = "", false
  return function()
    while true do
      local nl = buf:find("\n", 1, true)
      if nl then
        local line = buf:sub(1, nl - 1)
        buf = buf:sub(nl + 1)
        return line
      end
      if eof then
        if buf == "" then return nil end
        local line = buf
        buf = ""
        return line
      end
      local data = stdio.read()
      if data then buf = buf .. data else eof = true end
    end
  end
end

local function show(...)
  local n = select("#", ...)
  if n == 0 then return end
  local out = {}
  for i = 1, n do
    -- a __tostring that raises must not take the prompt (and its servers) down
    local ok, text = pcall(tostring, (select(i, ...)))
    if not ok then
      text = "(__tostring failed" .. (type(text) == "string" and ": " .. text or "") .. ")"
    end
    out[i] = text
  end
  io.stdout:write(table.concat(out, "\t"), "\n")
end

-- An error at the prompt as lua5.4 shows it: an object with __tostring
-- (reverb's error objects among them) by its text alone; anything else
-- with the traceback of the line typed, not of the REPL running it.
local function report(err)
  local ok, text = pcall(tostring, err)
  if type(err) ~= "string" and type(err) ~= "number" then
    local mt = getmetatable(err)   -- (a __metatable field may make it anything)
    if ok and type(text) == "string" and type(mt) == "table" and mt.__tostring then
      return text
    end
    text = "(error object is a " .. type(err) .. " value)"
  end
  local tb = debug.traceback(text, 2)
  local cut = tb:find("\n\t%[C%]: in function 'xpcall'")
  return cut and tb:sub(1, cut) .. "\t[C]: in ?" or tb
end

local function main()
  local env = cli.env()
  local tty = core.isatty(0)
  local function prompt(p)
    if tty then io.stdout:write(p) end
    io.stdout:flush()
  end
  if tty then
    io.stdout:write("reverb ", core.version, " (", _VERSION, ") -- the loop runs while you type\n")
  end
  local next_line = line_reader()
  local pending = nil
  prompt("> ")
  while true do
    local line = next_line()
    if not line then break end
    -- "=expr" prints expr, as in lua5.4
    local src = pending and pending .. "\n" .. line or line:gsub("^=", "return ", 1)
    local fn, err = load("return " .. src, "=stdin", "t", env)
    if not fn then fn, err = load(src, "=stdin", "t", env) end
    if not fn and err:match("<eof>$") then
      pending = src
      prompt(">> ")
    else
      pending = nil
      if not fn then
        io.stderr:write(err, "\n")   -- errors to stderr, as lua5.4
      else
        local res = table.pack(xpcall(fn, report))
        if res[1] then show(table.unpack(res, 2, res.n))
        else io.stderr:write(res[2], "\n") end
      end
      prompt("> ")
    end
  end
  if tty then io.stdout:write("\n") end
  return 0
end

return { main = main }
