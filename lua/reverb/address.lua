--- reverb.address: how reverb writes an address for people to read.
--
-- "127.0.0.1:8080", and an IPv6 address in brackets, "[::1]:8080", as
-- URLs, ncat and the kernel's own messages write it (its colons would
-- otherwise run into the port's). Peers of streams, the command's
-- "listening on" lines and log lines all go through here.

--- Whether host (a numeric address or a name) is an IPv6 address: only
-- those have colons. The socket family to use for it, too.
local function ipv6(host)
  return host:find(":", 1, true) ~= nil
end

--- host and port as "host:port".
local function hostport(host, port)
  return (ipv6(host) and "[" .. host .. "]" or host) .. ":" .. port
end

--- v as a port number, 0-65535 ("8080" and 8080.0 too, as bind takes
-- them), or nil.
local function port(v)
  local n = math.tointeger(tonumber(v))
  if n and n >= 0 and n <= 65535 then return n end
end

--- Raises the argument error of v, given for a port, at the caller of
-- fname (the function that checks it).
local function bad_port(fname, argn, v)
  error(("bad argument #%d to '%s' (port 0-65535 expected, got %s)")
    :format(argn, fname, type(v) == "number" and v or type(v)), 3)
end

return { hostport = hostport, ipv6 = ipv6, port = port, bad_port = bad_port }
