#!/bin/sh
# tools/deps.sh NEED... -- make sure what a make target needs is installed.
#
# NEED is build, test, check, rock or bench.  On Debian or Ubuntu whatever is
# missing is installed with apt-get (through sudo when not root); elsewhere
# one line says what to install, and the exit status is 1.
set -u
LUA_INCDIR=${LUA_INCDIR:-/usr/include/lua5.4}
LUA=${LUA:-lua5.4}
missing=""

want() { missing="$missing $1"; }
have() { command -v "$1" >/dev/null 2>&1; }

for need in "$@"; do
  case $need in
  build)
    have cc || want gcc
    [ -f "$LUA_INCDIR/lua.h" ] || want liblua5.4-dev ;;
  test)
    have "$LUA" || want lua5.4
    [ -f "$LUA_INCDIR/lua.h" ] || want liblua5.4-dev
    "$LUA" -e 'require "luaunit"' >/dev/null 2>&1 || want lua-unit
    have nc || want netcat-openbsd
    have socat || want socat
    have strace || want strace ;;
  check)
    have valgrind || want valgrind
    have cppcheck || want cppcheck
    have luacheck || want lua-check ;;
  rock)
    have luarocks || want luarocks ;;
  bench)
    have "$LUA" || want lua5.4   # bin/reverb runs on it; build needs only the headers
    have taskset || want util-linux
    have gnuplot || want gnuplot-nox ;;
  *) echo "deps.sh: unknown need '$need'" >&2; exit 2 ;;
  esac
done

[ -z "$missing" ] && exit 0

if have apt-get; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  echo "reverb: installing$missing" >&2
  export DEBIAN_FRONTEND=noninteractive
  # A fresh machine has no package lists yet: update once, then install.
  $sudo apt-get install -y -q $missing >/dev/null 2>&1 ||
    { $sudo apt-get update -q >/dev/null 2>&1 && $sudo apt-get install -y -q $missing; } ||
    { echo "reverb: could not install:$missing" >&2; exit 1; }
  exit 0
fi

echo "reverb: missing$missing -- install Lua 5.4 with its headers, luaunit, netcat, socat, strace (and valgrind, cppcheck, luacheck for 'make check') with your package manager" >&2
exit 1
