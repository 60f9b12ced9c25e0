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

return { hostport = hostport, ipv6 = ipv6 }
