#!/usr/bin/env bash
# bench/run.sh -- reverb against the project's C reference, in one run.
#
#   make bench          every scenario (about 4 minutes)
#   make bench-quick    three scenarios, fewer slices (under a minute)
#
# For each scenario the C reference (bench/build/c_echo, a tight epoll echo
# server) and `reverb serve` are both started afresh, pinned to core 0, and
# the load generator (bench/build/loadgen, pinned to core 1) alternates
# between them in slices of a fraction of a second, C R C R ... C, each
# slice letting its work in flight finish before the next begins (see
# loadgen --port2).  Each reverb slice gives a ratio to the mean of the C
# slices on either side; the table prints the median slice rates and the
# median of those ratios.  This machine's speed drifts by tens of percent
# from one second to the next, so two runs of several seconds each,
# however many, compare two different machines; neighbouring slices
# compare the same one.  Compare ratios, not rates, across runs.
#
# reverb serve's rows also give their bar (the least ratio to C, or the
# most bytes per idle connection) and whether it holds; the last line
# says how many held.  examples/echo_server.lua's rows are reported only,
# and so, where LuaSocket is installed, are those of the server written
# with it (bench/luasocket_echo.lua, a socket.select loop), for context.
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

# Scenarios: mode, connections, message size, slice length (s), pairs.
# 5,000 connections take tens of milliseconds to start and to drain, so
# their slices are longer.
if [ $QUICK = 1 ]; then
  WARMUP=0.4
  SCENARIOS=("pingpong 50 64 0.2 10" "pingpong 500 64 0.2 10" "bulk 10 65536 0.25 8")
else
  WARMUP=0.8
  SCENARIOS=("pingpong 1 64 0.2 25" "pingpong 50 64 0.2 40" "pingpong 500 64 0.2 50"
             "pingpong 5000 64 0.6 25" "bulk 10 65536 0.25 20" "connstorm 50 64 0.25 20")
fi

# Each connection is a descriptor in the server and, as the load
# generator holds both servers' connections at once, two in it; a
# shell's soft limit is often 1,024: the soft limit goes up to the hard
# one (all three programs raise their own too), and a hard limit below
# what the largest scenario needs goes up where that is allowed (root
# with CAP_SYS_RESOURCE, which not every container grants).
# A scenario that needs more than the hard limit allows is not run, and
# says so, rather than measure a server that stopped accepting.
FDNEED=10100   # 5,000 connections twice in the load generator, or 10,000 idle, and spare
if [ "$(ulimit -Hn)" != unlimited ] && [ "$(ulimit -Hn)" -lt $FDNEED ]; then
  ulimit -Hn $FDNEED 2>/dev/null || true
fi
ulimit -Sn "$(ulimit -Hn)" 2>/dev/null || true
FDMAX=$(ulimit -Hn)
fits() { [ "$FDMAX" = unlimited ] || [ "$FDMAX" -ge $(( $1 + 100 )) ]; }
LIMITNOTE="not run: the open-files hard limit is $FDMAX (ulimit -Hn); raise it (limits.conf, or ulimit -Hn as root)"

tmp=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]:-}"; do [ -n "$p" ] && kill "$p" 2>/dev/null || true; done
  rm -rf "$tmp"
}
trap cleanup EXIT

# start NAME: starts a server pinned to the server core; sets PID_NAME and
# PORT_NAME (NAME: c, reverb, example, workers2, luasocket).
start() {
  local name=$1 log="$tmp/$1.log" pid port=""
  case $name in
    c)        taskset -c $SERVER_CPU $CECHO 0 >"$log" 2>&1 & ;;
    reverb)   taskset -c $SERVER_CPU bin/reverb serve 0 >"$log" 2>&1 & ;;
    example)  taskset -c $SERVER_CPU bin/reverb run examples/echo_server.lua 0 >"$log" 2>&1 & ;;
    workers2) bin/reverb serve 0 --workers 2 >"$log" 2>&1 & ;;
    luasocket) taskset -c $SERVER_CPU lua5.4 bench/luasocket_echo.lua 0 >"$log" 2>&1 & ;;
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

# cputicks PID: the user and system time a process has used, in ticks.
cputicks() { awk '{ print $14 + $15 }' /proc/"$1"/stat 2>/dev/null || echo 0; }

# compare A B MODE CONNS SIZE SLICE PAIRS: the load generator alternating
# between the started servers A and B; sets RATE_A, RATE_B, RATIO (B / A),
# RATIOS (each slice's, comma-separated), ERRORS (a load generator that
# printed no result counts as one), and CPU: A's processor time per unit
# of work over B's (the work, all each did; above 1, B costs less).  Where
# the load generator, not the server, is what runs out of processor (bulk
# and connect-storm can be, on two cores: a loopback connection's
# handshake runs on the connecting core), the rates say little about the
# servers and CPU says what each request cost them.
compare() {
  local a=$1 b=$2 mode=$3 conns=$4 size=$5 slice=$6 pairs=$7 out
  local pa="PORT_$a" pb="PORT_$b" ida="PID_$a" idb="PID_$b" ca cb
  ca=$(cputicks "${!ida}"); cb=$(cputicks "${!idb}")
  out=$(taskset -c $CLIENT_CPU $LOADGEN --host 127.0.0.1 --port "${!pa}" --port2 "${!pb}" \
        --mode "$mode" --conns "$conns" --size "$size" --slice "$slice" --warmup $WARMUP \
        --duration "$(awk -v s="$slice" -v p="$pairs" 'BEGIN { print 2 * s * p }')" \
        2>>"$tmp/loadgen.err" | tail -1) || true
  ca=$(( $(cputicks "${!ida}") - ca )); cb=$(( $(cputicks "${!idb}") - cb ))
  echo "$a/$b $out cpu_ticks=$ca cpu_ticks2=$cb" >>"$tmp/raw"
  field() { echo "$out" | sed -n "s/.* $1=\([^ ]*\).*/\1/p"; }
  RATE_A=$(field rate); RATE_B=$(field rate2); RATIO=$(field ratio); RATIOS=$(field ratios)
  ERRORS=$(field errors)
  RATE_A=${RATE_A:-0}; RATE_B=${RATE_B:-0}; RATIO=${RATIO:-0}; ERRORS=${ERRORS:-1}
  CPU=$(awk -v ca="$ca" -v cb="$cb" -v wa="$(field work)" -v wb="$(field work2)" \
        'BEGIN { if (ca > 0 && cb > 0 && wa > 0 && wb > 0) printf "%.2f", (ca / wa) / (cb / wb); else print "-" }')
}

# idle_rss NAME: RSS per held connection, in bytes, above the empty
# server, and the load generator's errors (with the connections it did
# not get among them).
idle_rss() {
  local name=$1 n=10000
  start "$name"
  local var="PID_$name" pvar="PORT_$name"
  local pid=${!var} before after got errs
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
  errs=$(sed -n 's/^RESULT .* errors=\([0-9]*\).*/\1/p' "$tmp/idle.out" | head -1)
  rm -f "$tmp/hold"
  stop "$name"
  echo $(( (after - before) * 1024 / (${got:-0} > 0 ? got : 1) )) $(( ${errs:-1} + n - ${got:-0} ))
}

printf '%-24s %14s %14s %8s %8s  %-12s %s\n' scenario "C reference" reverb "reverb/C" \
  "cpu C/R" bar unit | tee bench/results.txt
declare -A unit=([pingpong]="req/s" [bulk]="MiB/s" [connstorm]="conn/s")
# The issue's bars for reverb serve, as the least ratio to C (the idle
# bar, in bytes, is checked where it is measured).  Other rows report.
declare -A bar=([pingpong 50]=0.90 [pingpong 500]=0.90 [pingpong 5000]=0.90
                [bulk 10]=0.95 [connstorm 50]=0.80)
held=0 missed=() notrun=()
# check LABEL OK BAR: sets the bar column ("<BAR> holds" or "<BAR> MISSED")
# and counts it for the summary.
check() {
  if [ "$2" = 1 ]; then held=$((held + 1)); b="$3 holds"; else missed+=("$1"); b="$3 MISSED"; fi
}
chart="$tmp/chart.dat"
# row LABEL C R RATIO UNIT [BAR]: a line of the table, with CPU beside
# the ratio.  A run in which the load generator counted errors (a refused
# or reset connection, a wrong echo) measured something else: its bar
# does not hold.
row() {
  local u=$5
  b=""
  [ "${ERRORS:-0}" != 0 ] && u="$u; $ERRORS load generator ERRORS"
  [ -n "${6:-}" ] && check "$1" "$(awk -v r="$4" -v b="$6" -v e="${ERRORS:-0}" \
    'BEGIN { print (r >= b && e == 0) }')" ">=$6"
  printf '%-24s %14s %14.0f %7.2fx %8s  %-12s %s\n' "$1" "$2" "$3" "$4" "${CPU:--}" "$b" "$u" |
    tee -a bench/results.txt
}
# skipped LABEL [BAR]: a scenario the descriptor limit does not allow.
skipped() {
  [ -n "${2:-}" ] && notrun+=("$1")
  printf '%-24s %s\n' "$1" "$LIMITNOTE" | tee -a bench/results.txt
}
for sc in "${SCENARIOS[@]}"; do
  read -r mode conns size slice pairs <<<"$sc"
  if ! fits $(( 2 * conns )); then
    skipped "$mode $conns x ${size}B" "${bar[$mode $conns]:-}"
    continue
  fi
  # Fresh servers for each scenario: what one leaves behind (a heap that
  # held 5,000 connections) is not the next one's measurement.
  start c
  start reverb
  compare c reverb "$mode" "$conns" "$size" "$slice" "$pairs"
  row "$mode $conns x ${size}B" "$(printf '%.0f' "$RATE_A")" "$RATE_B" "$RATIO" "${unit[$mode]}" \
    "${bar[$mode $conns]:-}"
  echo "$mode $conns: $RATIOS" | tr ',' ' ' >>"$tmp/rounds"
  point="$conns $RATE_A $RATE_B"
  stop c
  stop reverb
  # examples/echo_server.lua, the same server with its handler a Lua loop
  # (read_some, then write) where reverb serve's is conn:pipe(conn), and a
  # line printed for each join and leave (which connect-storm measures
  # too).  It is reported, not held to a bar, with as many pairs: its
  # ratio moves more from slice to slice than pipe's.
  start c
  start example
  compare c example "$mode" "$conns" "$size" "$slice" "$pairs"
  row "  echo_server.lua" "$(printf '%.0f' "$RATE_A")" "$RATE_B" "$RATIO" "${unit[$mode]}"
  echo "$mode $conns echo_server.lua: $RATIOS" | tr ',' ' ' >>"$tmp/rounds"
  [ "$mode" = pingpong ] && echo "$point $RATE_B" >>"$chart"
  stop c
  stop example
done

if [ $QUICK = 0 ]; then
  # For context, the server a Lua programmer writes with LuaSocket today
  # (one socket.select loop, bench/luasocket_echo.lua), where it is
  # installed; select's 1,024 descriptors keep it to 500 connections.
  if lua5.4 -e 'require "socket"' 2>/dev/null; then
    for conns in 50 500; do
      start c
      start luasocket
      compare c luasocket pingpong "$conns" 64 0.2 20
      row "LuaSocket select, $conns" "$(printf '%.0f' "$RATE_A")" "$RATE_B" "$RATIO" \
        "req/s (bench/luasocket_echo.lua, for context)"
      stop c
      stop luasocket
    done
  else
    echo "(LuaSocket not installed, its rows skipped; on Debian: apt-get install lua-socket)" |
      tee -a bench/results.txt
  fi
  # --workers 2 against one pinned process: the two workers are not
  # pinned, so one of them shares its core with the load generator.
  start reverb
  start workers2
  compare reverb workers2 pingpong 50 64 0.2 15
  CPU=-   # the supervisor's PID: its workers' time is not in it
  row "--workers 2, 50 conns" "$(printf '%.0f' "$RATE_A")" "$RATE_B" "$RATIO" \
    "req/s; the first column and the ratio: one pinned reverb serve (a worker shares the load generator's core)"
  stop reverb
  stop workers2
  if fits 10000; then
    # idle_rss runs in a subshell, where a server that failed to start
    # only ends that subshell: a figure that is not a number is a failure.
    read -r cr cerr <<<"$(idle_rss c)" || true
    read -r rr rerr <<<"$(idle_rss reverb)" || true
    measured() { [[ ${1:-} =~ ^[0-9]+$ && ${2:-} =~ ^[0-9]+$ ]]; }
    measured "${cr:-}" "${cerr:-}" || { cr=failed; cerr=1; }
    measured "${rr:-}" "${rerr:-}" || { rr=failed; rerr=1; }
    note="bytes RSS per connection"
    [ $(( cerr + rerr )) != 0 ] && note="$note; $(( cerr + rerr )) load generator ERRORS or a failed measurement"
    check "idle 10000 conns" "$( [ "$rr" != failed ] && [ "$rerr" = 0 ] && [ "$rr" -le 3072 ] && echo 1 || echo 0)" "<=3072"
    printf '%-24s %14s %14s %8s %8s  %-12s %s\n' "idle 10000 conns" "$cr" "$rr" "" "" "$b" "$note" |
      tee -a bench/results.txt
  else
    skipped "idle 10000 conns" "<=3072"
  fi
fi

# A run with errors, or one whose load generator printed no result.
errors=$(grep -c -e 'errors=[1-9]' -e '^[^ ]*  *cpu_ticks=' "$tmp/raw" || true)
{
  echo
  echo "machine: $(nproc) cores, $(awk -F': ' '/model name/ { print $2; exit }' /proc/cpuinfo)"
  echo "servers on core $SERVER_CPU, load generator on core $CLIENT_CPU, alternating C R C R ... C" \
       "in slices (${WARMUP}s of them first, not counted)"
  echo "load generator runs with errors: $errors"
  if [ ${#missed[@]} = 0 ] && [ ${#notrun[@]} = 0 ]; then echo "bars: all $held hold"
  else
    echo "bars: $held hold, ${#missed[@]} MISSED${missed[*]:+: $(IFS=,; echo "${missed[*]}")}," \
         "${#notrun[@]} not run${notrun[*]:+: $(IFS=,; echo "${notrun[*]}")}"
  fi
} | tee -a bench/results.txt
{ echo; echo "each reverb slice / the C slices around it:"; cat "$tmp/rounds"; } >>bench/results.txt
[ -s "$tmp/loadgen.err" ] && sed 's/^/  /' "$tmp/loadgen.err" | sort | uniq -c | head -5

# The chart is the README's: only a full run with every scenario
# redraws it.
if [ $QUICK = 0 ] && [ ${#notrun[@]} = 0 ] && command -v gnuplot >/dev/null && [ -s "$chart" ]; then
  cp "$chart" bench/pingpong.dat
  bash bench/chart.sh
fi
