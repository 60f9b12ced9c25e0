#!/usr/bin/env bash
# bench/run.sh -- reverb against the project's C reference, in one run.
#
#   make bench          every scenario, 9 rounds each (about 5 minutes)
#   make bench-quick    three scenarios, 3 rounds each (under a minute)
#
# For each scenario the C reference (bench/build/c_echo, a tight epoll echo
# server) and `reverb serve` are both started afresh, pinned to core 0, and the
# load generator (bench/build/loadgen, pinned to core 1) alternates between
# them round by round, in the order C R R C C R ...  Each round gives a
# ratio reverb / C from two runs a few seconds apart; the table prints the
# median of the rates and the median of the ratios.  On a shared machine
# whose speed drifts by tens of percent from minute to minute, the ratio of
# neighbouring runs is what stays put; compare ratios, not rates, across
# runs.
#
# Results also go to bench/results.txt, the ping-pong figures to
# bench/pingpong.dat and their chart to bench/pingpong.svg (bench/chart.sh,
# full runs only).
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
  ROUNDS=3 DURATION=1.5 WARMUP=0.3
  SCENARIOS=("pingpong 50 64" "pingpong 500 64" "bulk 10 65536")
else
  ROUNDS=9 DURATION=1.2 WARMUP=0.5
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

# start NAME: starts a server pinned to the server core; sets PID_NAME and
# PORT_NAME (NAME: c, reverb, example, workers2).
start() {
  local name=$1 log="$tmp/$1.log" pid port=""
  case $name in
    c)        taskset -c $SERVER_CPU $CECHO 0 >"$log" 2>&1 & ;;
    reverb)   taskset -c $SERVER_CPU bin/reverb serve 0 >"$log" 2>&1 & ;;
    example)  taskset -c $SERVER_CPU bin/reverb run examples/echo_server.lua 0 >"$log" 2>&1 & ;;
    workers2) bin/reverb serve 0 --workers 2 >"$log" 2>&1 & ;;
  esac
  pid=$!
  pids+=("$pid")
  for _ in $(seq 1 200); do
    port=$(grep -oE '(127\.0\.0\.1:|port )[0-9]+' "$log" 2>/dev/null | head -1 |
           grep -oE '[0-9]+$' || true)
    [ -n "$port" ] && break
    sleep 0.02
  done
  [ -n "$port" ] || { echo "bench: $name did not start: $(cat "$log")" >&2; exit 1; }
  printf -v "PID_$name" '%s' "$pid"
  printf -v "PORT_$name" '%s' "$port"
}

stop() {
  local var="PID_$1" p kept=()
  kill -TERM "${!var}" 2>/dev/null || true
  wait "${!var}" 2>/dev/null || true
  for p in "${pids[@]}"; do [ "$p" = "${!var}" ] || kept+=("$p"); done
  pids=("${kept[@]}")   # cleanup must not signal a number the system reuses
}

# measure NAME MODE CONNS SIZE: one run of the load generator against a
# started server; prints its rate (0 when it failed).
measure() {
  local name=$1 mode=$2 conns=$3 size=$4 var="PORT_$1" pin="taskset -c $CLIENT_CPU"
  [ "$name" = workers2 ] && pin=""
  local out
  out=$($pin $LOADGEN --host 127.0.0.1 --port "${!var}" --mode "$mode" --conns "$conns" \
        --size "$size" --duration $DURATION --warmup $WARMUP 2>>"$tmp/loadgen.err" | tail -1) || true
  echo "$name $out" >>"$tmp/raw"
  local rate
  rate=$(echo "$out" | sed -n 's/.* rate=\([0-9.]*\).*/\1/p')
  echo "${rate:-0}"
}

median() { sort -g | awk '{ a[NR] = $1 } END { if (NR) print a[int((NR + 1) / 2)]; else print 0 }'; }

# idle_rss NAME: RSS per held connection, in bytes, above the empty server.
idle_rss() {
  local name=$1 n=10000
  start "$name"
  local var="PID_$name" pvar="PORT_$name"
  local pid=${!var} before after got
  before=$(awk '/VmRSS/ { print $2 }' /proc/"$pid"/status)
  mkfifo "$tmp/hold"
  taskset -c $CLIENT_CPU $LOADGEN --host 127.0.0.1 --port "${!pvar}" --mode idle --conns $n \
    --hold-until-stdin-eof <"$tmp/hold" >"$tmp/idle.out" 2>&1 &
  local lg=$!
  exec 9>"$tmp/hold"
  for _ in $(seq 1 1500); do
    grep -q idle_connected "$tmp/idle.out" && break
    sleep 0.02
  done
  after=$(awk '/VmRSS/ { print $2 }' /proc/"$pid"/status)
  got=$(sed -n 's/.*idle_connected=\([0-9]*\).*/\1/p' "$tmp/idle.out" | head -1)
  exec 9>&-
  wait $lg 2>/dev/null || true
  rm -f "$tmp/hold"
  stop "$name"
  echo $(( (after - before) * 1024 / (${got:-0} > 0 ? got : 1) ))
}

printf '%-24s %14s %14s %8s  %s\n' scenario "C reference" reverb "reverb/C" unit |
  tee bench/results.txt
declare -A unit=([pingpong]="req/s" [bulk]="MiB/s" [connstorm]="conn/s")
chart="$tmp/chart.dat"
for sc in "${SCENARIOS[@]}"; do
  read -r mode conns size <<<"$sc"
  # Fresh servers for each scenario: what one leaves behind (a heap that
  # held 5,000 connections) is not the next one's measurement.
  start c
  start reverb
  : >"$tmp/c"; : >"$tmp/r"; : >"$tmp/q"
  for i in $(seq 1 $ROUNDS); do
    if [ $((i % 2)) = 1 ]; then
      c=$(measure c "$mode" "$conns" "$size"); r=$(measure reverb "$mode" "$conns" "$size")
    else
      r=$(measure reverb "$mode" "$conns" "$size"); c=$(measure c "$mode" "$conns" "$size")
    fi
    echo "$c" >>"$tmp/c"; echo "$r" >>"$tmp/r"
    awk -v r="$r" -v c="$c" 'BEGIN { print (c > 0 ? r / c : 0) }' >>"$tmp/q"
  done
  { printf '%s:' "$mode $conns"; paste -d/ "$tmp/r" "$tmp/c" | awk '{ printf " %s", $1 }'; echo; } \
    >>"$tmp/rounds"
  c=$(median <"$tmp/c"); r=$(median <"$tmp/r"); q=$(median <"$tmp/q")
  printf '%-24s %14.0f %14.0f %7.2fx  %s\n' "$mode $conns x ${size}B" "$c" "$r" "$q" \
    "${unit[$mode]}" | tee -a bench/results.txt
  [ "$mode" = pingpong ] && echo "$conns $c $r" >>"$chart"
  stop c
  stop reverb
done

# examples/echo_server.lua: the loop behind a handler written in Lua, by
# the same alternation against the C reference.
start c
start example
: >"$tmp/e"; : >"$tmp/q"
for i in $(seq 1 $(( (ROUNDS + 1) / 2 ))); do
  c=$(measure c pingpong 50 64); e=$(measure example pingpong 50 64)
  echo "$e" >>"$tmp/e"
  awk -v r="$e" -v c="$c" 'BEGIN { print (c > 0 ? r / c : 0) }' >>"$tmp/q"
done
printf '%-24s %14s %14.0f %7.2fx  %s\n' "echo_server.lua 50" "" "$(median <"$tmp/e")" \
  "$(median <"$tmp/q")" "req/s" | tee -a bench/results.txt
stop c
stop example

if [ $QUICK = 0 ]; then
  # --workers 2 next to one pinned process: on two cores the workers share
  # them with the load generator, so nothing is pinned here.
  start reverb
  start workers2
  : >"$tmp/w"; : >"$tmp/q"
  for i in $(seq 1 3); do
    r=$(measure reverb pingpong 50 64); w=$(measure workers2 pingpong 50 64)
    echo "$w" >>"$tmp/w"
    awk -v r="$w" -v c="$r" 'BEGIN { print (c > 0 ? r / c : 0) }' >>"$tmp/q"
  done
  printf '%-24s %14s %14.0f %7.2fx  %s\n' "--workers 2, 50 conns" "" "$(median <"$tmp/w")" \
    "$(median <"$tmp/q")" "req/s, ratio to one pinned reverb (unpinned: shares the load generator's core)" |
    tee -a bench/results.txt
  stop reverb
  stop workers2
  cr=$(idle_rss c); rr=$(idle_rss reverb)
  printf '%-24s %14s %14s %8s  %s\n' "idle 10000 conns" "$cr" "$rr" "" \
    "bytes RSS per connection" | tee -a bench/results.txt
fi

errors=$(grep -c 'errors=[1-9]' "$tmp/raw" || true)
{
  echo
  echo "machine: $(nproc) cores, $(awk -F': ' '/model name/ { print $2; exit }' /proc/cpuinfo)"
  echo "rounds: $ROUNDS x ${DURATION}s after ${WARMUP}s warm-up, alternating C R R C ...;" \
       "servers on core $SERVER_CPU, load on core $CLIENT_CPU"
  echo "load generator runs with errors: $errors"
} | tee -a bench/results.txt
{ echo; echo "each round, reverb/C:"; cat "$tmp/rounds"; } >>bench/results.txt
[ -s "$tmp/loadgen.err" ] && sed 's/^/  /' "$tmp/loadgen.err" | sort | uniq -c | head -5

# The chart is the README's: only a full run redraws it.
if [ $QUICK = 0 ] && command -v gnuplot >/dev/null && [ -s "$chart" ]; then
  cp "$chart" bench/pingpong.dat
  bash bench/chart.sh
fi
