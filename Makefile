# reverb -- build, test, check, bench, install.
#
#   make            build reverb.core (build/reverb/core.so)
#   make run        the echo server on 127.0.0.1:8080
#   make test       every spec (luaunit), installing what is missing first
#   make check      the suite under AddressSanitizer+UBSan, then valgrind,
#                   then luacheck and cppcheck
#   make bench      the benchmarks against the C reference (bench-quick: < 1 min)
#   make install    PREFIX=/usr/local (DESTDIR honoured)
#   make clean
#
# On Debian or Ubuntu the targets install what they miss (tools/deps.sh);
# elsewhere they say what to install.

LUA        ?= lua5.4
LUA_INCDIR ?= /usr/include/lua5.4
CC         ?= cc
PREFIX     ?= /usr/local
LUA_LIBDIR ?= $(PREFIX)/lib/lua/5.4
LUA_SHAREDIR ?= $(PREFIX)/share/lua/5.4
BINDIR     ?= $(PREFIX)/bin

WARN    = -Wall -Wextra -Werror -Wshadow -Wpointer-arith -Wmissing-prototypes \
          -Wstrict-prototypes -Wundef -Wformat=2
CFLAGS  ?= -O2 -g
ALL_CFLAGS = $(CFLAGS) $(WARN) -std=gnu11 -fPIC -fvisibility=hidden -I$(LUA_INCDIR) -Ibuild
LIBFLAG ?= -shared

SRC  = $(wildcard csrc/*.c)
HDR  = csrc/reverb.h csrc/stream.h build/errnames.h
OBJ  = $(SRC:csrc/%.c=build/obj/%.o)
AOBJ = $(SRC:csrc/%.c=build/asan/obj/%.o)
SAN  = -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined

TESTENV = LUA_PATH='./lua/?.lua;./lua/?/init.lua;./spec/?.lua;;' LUA_CPATH='./build/?.so;;'
ASANENV = LUA_PATH='./lua/?.lua;./lua/?/init.lua;./spec/?.lua;;' LUA_CPATH='./build/asan/?.so;;' \
          REVERB_BUILD=build/asan \
          LD_PRELOAD="$$($(CC) -print-file-name=libasan.so)" \
          ASAN_OPTIONS=detect_leaks=0:abort_on_error=0:exitcode=86 \
          UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1

.PHONY: all build deps run test check check-asan check-valgrind lint bench bench-quick \
        install install-rock clean

all: build

build: build/reverb/core.so

deps-%:
	@LUA_INCDIR=$(LUA_INCDIR) LUA=$(LUA) sh tools/deps.sh $*

# Errno names come from the system's own headers: every E* macro, a
# number or (flagged 1: EWOULDBLOCK, ENOTSUP) another name's alias.
build/errnames.h: Makefile | deps-build
	@mkdir -p build
	echo '#include <errno.h>' | $(CC) -E -dM - \
	  | awk '$$1 == "#define" && $$2 ~ /^E[A-Z0-9]+$$/ && $$3 ~ /^([0-9]+|E[A-Z0-9]+)$$/ \
	         { printf "  { \"%s\", %s, %d },\n", $$2, $$2, $$3 !~ /^[0-9]/ }' \
	  | sort > $@.tmp && mv $@.tmp $@

build/obj/%.o: csrc/%.c $(HDR)
	@mkdir -p build/obj
	$(CC) $(ALL_CFLAGS) -c $< -o $@

build/reverb/core.so: $(OBJ)
	@mkdir -p build/reverb
	$(CC) $(LIBFLAG) $(CFLAGS) -o $@ $(OBJ) -lm

build/asan/obj/%.o: csrc/%.c $(HDR)
	@mkdir -p build/asan/obj
	$(CC) $(ALL_CFLAGS) -O1 $(SAN) -c $< -o $@

build/asan/reverb/core.so: $(AOBJ)
	@mkdir -p build/asan/reverb
	$(CC) $(LIBFLAG) $(SAN) -o $@ $(AOBJ) -lm

run: build deps-test
	$(TESTENV) $(LUA) bin/reverb serve

# Every wait in a spec is bounded; this bounds the run as a whole too, so
# that a regression that hangs fails CI instead of stalling it.
SPEC_LIMIT = timeout -k 10 600

test: deps-test build
	$(TESTENV) $(SPEC_LIMIT) $(LUA) spec/run.lua

check: deps-test deps-check check-asan check-valgrind lint

check-asan: build/asan/reverb/core.so
	$(ASANENV) $(SPEC_LIMIT) $(LUA) spec/run.lua

# valgrind runs the whole suite against the plain build; waits in the specs
# are bounded generously enough for its slowdown.
check-valgrind: build
	$(TESTENV) REVERB_SLOW=1 $(SPEC_LIMIT) valgrind -q --error-exitcode=99 --leak-check=full \
	  --errors-for-leak-kinds=definite --show-leak-kinds=definite $(LUA) spec/run.lua

lint: deps-check
	luacheck -q --no-color lua bin spec examples bench
	cppcheck -q --error-exitcode=1 --enable=warning,style,performance,portability \
	  --inline-suppr --suppress=missingIncludeSystem --suppress=toomanyconfigs -Ibuild -Icsrc \
	  -I$(LUA_INCDIR) --std=c11 csrc

-include bench/Makefile.inc

bench: build deps-bench bench/build/c_echo bench/build/loadgen
	bash bench/run.sh

bench-quick: build deps-bench bench/build/c_echo bench/build/loadgen
	bash bench/run.sh --quick

install: build
	install -d $(DESTDIR)$(LUA_LIBDIR)/reverb $(DESTDIR)$(LUA_SHAREDIR)/reverb $(DESTDIR)$(BINDIR)
	install -m 755 build/reverb/core.so $(DESTDIR)$(LUA_LIBDIR)/reverb/core.so
	install -m 644 lua/reverb/*.lua $(DESTDIR)$(LUA_SHAREDIR)/reverb/
	sed -e '1s|.*|#!/usr/bin/env $(LUA)|' \
	    -e 's|^local INSTALLED = nil|local INSTALLED = { "$(LUA_SHAREDIR)", "$(LUA_LIBDIR)" }|' \
	    bin/reverb > $(DESTDIR)$(BINDIR)/reverb
	chmod 755 $(DESTDIR)$(BINDIR)/reverb

clean:
	rm -rf build bench/build
