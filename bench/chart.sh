#!/usr/bin/env bash
# bench/chart.sh [DATA] -- draws bench/pingpong.svg from bench/pingpong.dat
# (lines "connections c_rate reverb_rate", written by bench/run.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
data=${1:-bench/pingpong.dat}
gnuplot <<GP
set terminal svg size 640,400 dynamic font "sans,11" background rgb "white"
set output "bench/pingpong.svg"
set title "64-byte ping-pong over loopback (server on one core)"
set xlabel "concurrent connections"
set ylabel "round trips per second"
set logscale x
set yrange [0:*]
set key bottom left
set grid
plot "$data" using 1:2 with linespoints title "C epoll reference", \\
     "$data" using 1:3 with linespoints title "reverb serve"
GP
echo "chart: bench/pingpong.svg"
