-- tutorial_echo_client.lua: the tutorial's echo client, line by line, in
-- blocking reverb.core calls. It sends "Hello, Server!" and prints the reply.
--
-- Run:   bin/reverb run examples/tutorial_echo_client.lua [PORT]      (PORT defaults to 8080;
--        start examples/tutorial_echo_server.lua first)
-- A failure (no server, say) ends the script with one line such as
--   reverb: connect 127.0.0.1:8080: Connection refused
-- (under plain lua5.4, the error object's own form:
--   connect 127.0.0.1:8080: Connection refused (ECONNREFUSED))
local core = require "reverb.core"

local port = tonumber(arg and arg[1]) or 8080

-- client_socket = socket(AF_INET, SOCK_STREAM, 0);
local client_socket = core.socket("inet", "stream")

-- connect(client_socket, ...127.0.0.1, port 8080...);
client_socket:connect("127.0.0.1", port)

-- send(client_socket, message, strlen(message), 0);
client_socket:send("Hello, Server!")

-- read(client_socket, buffer, sizeof(buffer));
local buffer = client_socket:recv(1024)
print("Server replied: " .. buffer)

-- close(client_socket);
client_socket:close()
