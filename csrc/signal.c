/*
 * signal.c -- signal delivery to the loop, through a self-pipe.
 *
 * A caught signal's handler writes one byte (the signal number) to a
 * non-blocking pipe; the loop watches the pipe's read end like any other
 * descriptor and asks for the pending names.  The handler does nothing
 * else, which is all a signal handler may safely do.  Signal dispositions
 * are per process, so the pipe is too; a forked child gets a fresh one.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <string.h>
#include <unistd.h>

#include "reverb.h"

static int sigpipe_fds[2] = { -1, -1 };

static const char *const names[] = {
  "INT", "TERM", "HUP", "QUIT", "USR1", "USR2", "CHLD", "PIPE", "WINCH", "KILL", NULL
};
static const int numbers[] = {
  SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2, SIGCHLD, SIGPIPE, SIGWINCH, SIGKILL
};

static void handler(int signo) {
  int saved = errno;
  unsigned char byte = (unsigned char)signo;
  /* A full pipe already holds a wake-up; dropping this byte is fine. */
  if (write(sigpipe_fds[1], &byte, 1) < 0) { /* nothing to do */ }
  errno = saved;
}

/* The signal named at index 1, one whose action can be set. */
static int checkcatchable(lua_State *L) {
  int signo = numbers[luaL_checkoption(L, 1, NULL, names)];
  /* KILL is in the table for kill(); no process may catch or ignore it. */
  luaL_argcheck(L, signo != SIGKILL, 1, "KILL cannot be caught or ignored");
  return signo;
}

static int setaction(lua_State *L, int signo, void (*fn)(int), const char *op) {
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = fn;
  sa.sa_flags = SA_RESTART;
  sigemptyset(&sa.sa_mask);
  if (sigaction(signo, &sa, NULL) < 0) return rv_fail(L, op, errno, NULL);
  return 0;
}

/* core.signal_catch(name) -> fd of the pipe to watch for reading */
static int l_catch(lua_State *L) {
  int signo = checkcatchable(L);   /* a bad name raises before the pipe is made */
  if (sigpipe_fds[0] < 0 && pipe2(sigpipe_fds, O_NONBLOCK | O_CLOEXEC) < 0)
    return rv_fail(L, "pipe", errno, NULL);
  setaction(L, signo, handler, "sigaction");
  lua_pushinteger(L, sigpipe_fds[0]);
  return 1;
}

/* core.signal_default(name), core.signal_ignore(name) */
static int l_default(lua_State *L) { return setaction(L, checkcatchable(L), SIG_DFL, "sigaction"); }
static int l_ignore(lua_State *L) { return setaction(L, checkcatchable(L), SIG_IGN, "sigaction"); }

/* core.signal_pending() -> { "INT", ... } in arrival order, emptying the pipe */
static int l_pending(lua_State *L) {
  unsigned char buf[64];
  int count = 0;
  ssize_t n, i;
  lua_newtable(L);
  if (sigpipe_fds[0] < 0) return 1;
  while ((n = read(sigpipe_fds[0], buf, sizeof buf)) > 0 || (n < 0 && errno == EINTR)) {
    for (i = 0; i < n; i++)
      for (int k = 0; names[k] != NULL; k++)
        if (numbers[k] == buf[i]) {
          lua_pushstring(L, names[k]);
          lua_rawseti(L, -2, ++count);
        }
  }
  return 1;
}

/* core.kill(pid, name) */
static int l_kill(lua_State *L) {
  lua_Integer pid = luaL_checkinteger(L, 1);
  int signo = numbers[luaL_checkoption(L, 2, "TERM", names)];
  luaL_argcheck(L, pid > 0 && pid <= 0x7fffffff, 1, "not a process id");
  if (kill((pid_t)pid, signo) < 0) return rv_fail(L, "kill", errno, NULL);
  lua_pushboolean(L, 1);
  return 1;
}

/* Called in a freshly forked child: the parent's pipe is not ours. */
void rv_signal_afterfork(void) {
  if (sigpipe_fds[0] >= 0) {
    close(sigpipe_fds[0]);
    close(sigpipe_fds[1]);
    sigpipe_fds[0] = sigpipe_fds[1] = -1;
    for (int k = 0; names[k] != NULL; k++) {
      struct sigaction sa;
      if (sigaction(numbers[k], NULL, &sa) == 0 && sa.sa_handler == handler)
        signal(numbers[k], SIG_DFL);
    }
  }
}

const luaL_Reg rv_signal_funcs[] = {
  { "signal_catch", l_catch },
  { "signal_default", l_default },
  { "signal_ignore", l_ignore },
  { "signal_pending", l_pending },
  { "kill", l_kill },
  { NULL, NULL }
};
