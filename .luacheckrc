-- luacheck: Lua 5.4, no globals anywhere.
std = "lua54"
max_line_length = 100
-- a local named _x is held only for its <close>
ignore = { "211/_.*" }
files["spec"] = { ignore = { "212/self" } }
-- the runner hands luaunit its own options through arg
files["spec/run.lua"] = { globals = { "arg" } }
color = false
