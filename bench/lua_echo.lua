-- bench/lua_echo.lua: the handler of examples/echo_server.lua (a Lua loop,
-- read_some then write) as a `reverb serve` script, without the example's
-- join and leave lines: each lists every client, so at 5,000 clients they
-- would be what the benchmark measures.
--
-- Run:   bin/reverb serve 8080 bench/lua_echo.lua     (bench/run.sh does;
--        spec/server_spec.lua serves it to measure what a client costs)
return function(conn)
  while true do
    local data = conn:read_some()
    if not data then return end
    conn:write(data)
  end
end
