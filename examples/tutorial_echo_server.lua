-- tutorial_echo_server.lua: the tutorial's echo server, line by line, in
-- blocking reverb.core calls. It accepts one client, prints what it got,
-- echoes it back and exits.
--
-- Run:   bin/reverb run examples/tutorial_echo_server.lua [PORT]      (PORT defaults to 8080;
--        then, in another terminal: bin/reverb run examples/tutorial_echo_client.lua [PORT])
-- PORT 0 takes any free port and prints which.
local core = require "reverb.core"

local port = tonumber(arg and arg[1]) or 8080

-- server_socket = socket(AF_INET, SOCK_STREAM, 0);
local server_socket = core.socket("inet", "stream")

-- bind(server_socket, ...INADDR_ANY, port 8080...); listen(server_socket, 5);
server_socket:setoption("reuseaddr", true)   -- so a quick rerun finds the port free
server_socket:bind("*", port)
server_socket:listen(5)
port = select(2, server_socket:getsockname())

print("Server is listening on port " .. port .. "...")
io.stdout:flush()

-- client_socket = accept(server_socket, &client_address, &client_length);
local client_socket = server_socket:accept()

-- read(client_socket, buffer, sizeof(buffer));
local buffer = client_socket:recv(1024)
print("Received: " .. buffer)

-- send(client_socket, buffer, strlen(buffer), 0);
client_socket:send(buffer)

-- close(client_socket); close(server_socket);
client_socket:close()
server_socket:close()
