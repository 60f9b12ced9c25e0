-- upper.lua: a handler script for `reverb serve`: answers every line in
-- capitals. A script returns the handler; reverb runs it once per client.
--
-- Run:   bin/reverb serve 8080 examples/upper.lua
-- Try:   echo hello | nc -q1 127.0.0.1 8080       --> HELLO
return function(conn)
  for line in conn:lines() do
    conn:write(line:upper(), "\n")
  end
end
