#!/usr/bin/env bash
# bench/run.sh -- reverb against the project's C reference, in one run.
#
#   make bench          every scenario, 3 rounds (about 4 minutes)
#   make bench-quick    fewer scenarios, 1 round (under a minute)
#
# Each figure is measured against bench/build/c_echo (a tight epoll echo
# server in C) and `reverb serve` in the same run, alternating A/B round by
# round; the server is pinned to core 0 and the load generator to core 1.
# The table gives the median of the rounds and the ratio reverb / C.
# Results also go to bench/results.txt, the ping-pong figures to
# bench/pingpong.dat and their chart to bench/pingpong.svg (bench/chart.sh).
set -euo pipefail
cd "$(dirname "$0")/.."

QUICK=0
[ "${1:-}" = "--quick" ] && QUICK=1

LOADGEN=bench/build/loadgen
CECHO=bench/build/c_echo
SERVER_CPU=0
CLIENT_CPU=1
if [ "$(nproc)" -lt 2 ]; then SERVER_CPU=0; CLIENT_CPU=0; fi

if [ $QUICK = 1 ]; then
  ROUNDS=1 DURATION=2 WARMUP=0.5
  SCENARIOS=("pingpong 50 64" "pingpong 500 64" "bulk 10 65536")
else
  ROUNDS=3 DURATION=3 WARMUP=1
  SCENARIOS=("pingpong 1 64" "pingpong 50 64" "pingpong 500 64" "pingpong 5000 64"
             "bulk 10 65536" "connstorm 50 64")
fi

tmp=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]:-}"; do [ -n "$p" ] && kill "$p" 2>/dev/null || true; done
  rm -rf "$tmp"
}
trap cleanup EXIT

# start_server NAME: starts it pinned, sets SPID and SPORT.
start_server() {
  local name=$1 log="$tmp/$1.log"
  case $name in
    c)      taskset -c $SERVER_CPU $CECHO 0 >"$log" 2>&1 & ;;
    reverb) taskset -c $SERVER_CPU bin/reverb serve 0 >"$log" 2>&1 & ;;
    example) taskset -c $SERVER_CPU bin/reverb run examples/echo_server.lua 0 >"$log" 2>&1 & ;;
    workers2) bin/reverb serve 0 --workers 2 >"$log" 2>&1 & ;;
  esac
  SPID=$!
  pids+=("$SPID")
  SPORT=""
  for _ in $(seq 1 200); do
    SPORT=$(grep -oE '(127\.0\.0\.1:|port )[0-9]+' "$log" 2>/dev/null | head -1 |
            grep -oE '[0-9]+$' || true)
    [ -n "$SPORT" ] && break
    sleep 0.02
  done
  [ -n "$SPORT" ] || { echo "bench: $name did not start: $(cat "$log")" >&2; exit 1; }
}

stop_server() {
  kill -TERM "$SPID" 2>/dev/null || true
  wait "$SPID" 2>/dev/null || true
}

# measure NAME MODE CONNS SIZE: prints the rate (and keeps the RESULT line).
measure() {
  local name=$1 mode=$2 conns=$3 size=$4 pin="taskset -c $CLIENT_CPU"
  start_server "$name"
  [ "$name" = workers2 ] && pin=""
  local out
  out=$($pin $LOADGEN --host 127.0.0.1 --port "$SPORT" --mode "$mode" --conns "$conns" \
        --size "$size" --duration $DURATION --warmup $WARMUP 2>"$tmp/loadgen.err" | tail -1) || true
  stop_server
  echo "$name $out" >>"$tmp/raw"
  echo "$out" | sed -n 's/.* rate=\([0-9.]*\).*/\1/p'
}

median() { sort -g | awk '{ a[NR] = $1 } END { if (NR) print a[int((NR + 1) / 2)]; else print 0 }'; }

# idle NAME: RSS per held connection, in bytes.
idle_rss() {
  local name=$1 n=10000
  start_server "$name"
  local before after
  before=$(awk '/VmRSS/ { print $2 }' /proc/$SPID/status)
  mkfifo "$tmp/hold"
  taskset -c $CLIENT_CPU $LOADGEN --host 127.0.0.1 --port "$SPORT" --mode idle --conns $n \
    --hold-until-stdin-eof <"$tmp/hold" >"$tmp/idle.out" 2>&1 &
  local lg=$!
  exec 9>"$tmp/hold"
  for _ in $(seq 1 1500); do
    grep -q idle_connected "$tmp/idle.out" && break
    sleep 0.02
  done
  after=$(awk '/VmRSS/ { print $2 }' /proc/$SPID/status)
  local got
  got=$(sed -n 's/.*idle_connected=\([0-9]*\).*/\1/p' "$tmp/idle.out" | head -1)
  exec 9>&-
  wait $lg 2>/dev/null || true
  rm -f "$tmp/hold"
  stop_server
  echo $(( (after - before) * 1024 / (got > 0 ? got : 1) ))
}

printf '%-22s %14s %14s %8s %s\n' scenario "C reference" reverb ratio unit | tee bench/results.txt
declare -A unit=([pingpong]="req/s" [bulk]="MiB/s" [connstorm]="conn/s")
chart="$tmp/chart.dat"
for sc in "${SCENARIOS[@]}"; do
  read -r mode conns size <<<"$sc"
  : >"$tmp/c" ; : >"$tmp/r"
  for _ in $(seq 1 $ROUNDS); do
    measure c "$mode" "$conns" "$size" >>"$tmp/c"
    measure reverb "$mode" "$conns" "$size" >>"$tmp/r"
  done
  c=$(median <"$tmp/c"); r=$(median <"$tmp/r")
  ratio=$(awk -v r="$r" -v c="$c" 'BEGIN { printf "%.2f", (c > 0 ? r / c : 0) }')
  printf '%-22s %14.0f %14.0f %7sx %s\n' "$mode $conns x ${size}B" "$c" "$r" "$ratio" \
    "${unit[$mode]}" | tee -a bench/results.txt
  [ "$mode" = pingpong ] && echo "$conns $c $r" >>"$chart"
done

# examples/echo_server.lua, the loop behind a user's own handler
: >"$tmp/e"
for _ in $(seq 1 $ROUNDS); do measure example pingpong 50 64 >>"$tmp/e"; done
e=$(median <"$tmp/e")
printf '%-22s %14s %14.0f %8s %s\n' "echo_server.lua 50" "" "$e" "" "req/s" | tee -a bench/results.txt

if [ $QUICK = 0 ]; then
  : >"$tmp/w"
  for _ in $(seq 1 $ROUNDS); do measure workers2 pingpong 50 64 >>"$tmp/w"; done
  w=$(median <"$tmp/w")
  printf '%-22s %14s %14.0f %8s %s\n' "--workers 2, 50 conns" "" "$w" "" \
    "req/s (unpinned: loadgen shares the 2 cores)" | tee -a bench/results.txt
  cr=$(idle_rss c); rr=$(idle_rss reverb)
  printf '%-22s %14s %14s %8s %s\n' "idle 10000 conns" "$cr" "$rr" "" "bytes RSS per connection" \
    | tee -a bench/results.txt
fi

{
  echo
  echo "machine: $(nproc) cores, $(awk -F': ' '/model name/ { print $2; exit }' /proc/cpuinfo)"
  echo "rounds: $ROUNDS x ${DURATION}s after ${WARMUP}s warm-up; server on core $SERVER_CPU, load on core $CLIENT_CPU"
} | tee -a bench/results.txt

# The chart is the README's: only a full run redraws it.
if [ $QUICK = 0 ] && command -v gnuplot >/dev/null && [ -s "$chart" ]; then
  cp "$chart" bench/pingpong.dat
  bash bench/chart.sh
fi
