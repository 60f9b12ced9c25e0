#!/usr/bin/env bash
# bench/chart.sh [DATA] -- draws bench/pingpong.svg from bench/pingpong.dat
# (lines "connections c_rate reverb_rate [lua_handler_rate]", written by
# bench/run.sh: the C reference and reverb serve from the same slices, the
# handler in Lua, examples/echo_server.lua, from its own run against C
# right after).  The C and reverb serve lines nearly coincide, so each has
# its own dash and point.
set -euo pipefail
cd "$(dirname "$0")/.."
data=${1:-bench/pingpong.dat}
lua=""
if awk 'NF < 4 { bad = 1 } END { exit bad }' "$data"; then
  lua=", \"$data\" using 1:4 with linespoints dt 3 lw 1.5 pt 4 ps 1.2 lc rgb \"#d95f02\" title \"a handler in Lua (examples/echo_server.lua)\""
fi
gnuplot <<GP
set terminal svg size 640,400 dynamic font "sans,11" background rgb "white"
set output "bench/pingpong.svg"
set termoption noenhanced   # file names keep their underscores
set title "64-byte ping-pong over loopback (server on one core)"
set xlabel "concurrent connections"
set ylabel "round trips per second"
set logscale x
set xrange [0.8:7000]
set yrange [0:*]
set format y "%.0s%c"
set key top right box opaque
set offsets 0, 0, graph 0.3, 0   # room above the lines for the key
set grid
plot "$data" using 1:2 with linespoints dt 1 lw 2 pt 7 ps 0.9 lc rgb "#1b9e77" title "C epoll reference", \\
     "$data" using 1:3 with linespoints dt 2 lw 2 pt 6 ps 1.6 lc rgb "#7570b3" title "reverb serve"$lua
GP
echo "chart: bench/pingpong.svg"
