/*
 * process.c -- the process around the loop: the monotonic clock, fork and
 * wait for --workers, whether a descriptor is a terminal, and the limits
 * (a server of thousands of clients needs more descriptors than the 1,024
 * a shell's soft limit often gives).
 */
#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "reverb.h"

/* Monotonic seconds: the loop's clock, for timers and deadlines. */
double rv_now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* core.now() -> monotonic seconds, as a float */
static int l_now(lua_State *L) {
  lua_pushnumber(L, (lua_Number)rv_now());
  return 1;
}

/* core.fork([die_with_parent]) -> child pid in the parent, 0 in the child.
   die_with_parent: the child gets SIGTERM when the parent dies, however
   it dies (a supervisor killed with SIGKILL must not leave workers). */
static int l_fork(lua_State *L) {
  pid_t parent = getpid(), pid;
  int tied = lua_toboolean(L, 1), err;
  sigset_t all, old;
  fflush(NULL);   /* or both processes would flush the same buffered output */
  /* Signals wait until the child has its own actions: until then it has
     the parent's handlers, which would write a signal meant for the child
     (a supervisor's TERM) to the parent's pipe, and the child would never
     see it. */
  sigfillset(&all);
  sigprocmask(SIG_SETMASK, &all, &old);
  pid = fork();
  err = errno;
  if (pid == 0) {
    rv_signal_afterfork();
    if (tied) {
      prctl(PR_SET_PDEATHSIG, SIGTERM);
      if (getppid() != parent) raise(SIGTERM);   /* it died before prctl */
    }
  }
  sigprocmask(SIG_SETMASK, &old, NULL);
  if (pid < 0) return rv_fail(L, "fork", err, NULL);
  lua_pushinteger(L, pid);
  return 1;
}

/* core.waitpid([pid [, nohang]]) -> pid, "exit", status | pid, "signal", signo
   | nil when nohang and no child has changed state */
static int l_waitpid(lua_State *L) {
  lua_Integer want = luaL_optinteger(L, 1, -1);
  pid_t pid = (pid_t)want;
  /* out of pid_t's range it would be another pid (2^32: 0, the group) */
  luaL_argcheck(L, (lua_Integer)pid == want, 1, "pid out of range");
  int options = lua_toboolean(L, 2) ? WNOHANG : 0;
  int status = 0;
  pid_t r;
  do r = waitpid(pid, &status, options);
  while (r < 0 && errno == EINTR);
  if (r < 0) return rv_fail(L, "waitpid", errno, NULL);
  if (r == 0) {
    luaL_pushfail(L);
    return 1;
  }
  lua_pushinteger(L, r);
  if (WIFSIGNALED(status)) {
    lua_pushliteral(L, "signal");
    lua_pushinteger(L, WTERMSIG(status));
  } else {
    lua_pushliteral(L, "exit");
    lua_pushinteger(L, WEXITSTATUS(status));
  }
  return 3;
}

static int l_getpid(lua_State *L) {
  lua_pushinteger(L, getpid());
  return 1;
}

static int l_isatty(lua_State *L) {
  lua_pushboolean(L, isatty(rv_checkfd(L, 1)));
  return 1;
}

/* The resources getrlimit and setrlimit name, in luaL_checkoption's order. */
static const char *const limit_names[] = { "nofile", "core", "nproc", "stack", "as", NULL };
static const int limit_ids[] = { RLIMIT_NOFILE, RLIMIT_CORE, RLIMIT_NPROC, RLIMIT_STACK, RLIMIT_AS };

/* A limit as Lua sees it: an integer, or math.huge for RLIM_INFINITY. */
static void pushlimit(lua_State *L, rlim_t v) {
  if (v == RLIM_INFINITY || v > (rlim_t)LUA_MAXINTEGER) lua_pushnumber(L, HUGE_VAL);
  else lua_pushinteger(L, (lua_Integer)v);
}

static rlim_t checklimit(lua_State *L, int idx) {
  lua_Integer v;
  if (lua_type(L, idx) == LUA_TNUMBER && !lua_isinteger(L, idx) && lua_tonumber(L, idx) == HUGE_VAL)
    return RLIM_INFINITY;
  v = luaL_checkinteger(L, idx);
  luaL_argcheck(L, v >= 0, idx, "limit must be >= 0 (math.huge: none)");
  /* beyond rlim_t (were it narrower) it would be another limit */
  luaL_argcheck(L, (lua_Integer)(rlim_t)v == v, idx, "limit out of range (math.huge: none)");
  return (rlim_t)v;
}

/* core.getrlimit(name) -> soft, hard.  name: "nofile", "core", "nproc",
   "stack" or "as"; no limit is math.huge.  (The failures carry the
   name where an error names its address.) */
static int l_getrlimit(lua_State *L) {
  int which = luaL_checkoption(L, 1, NULL, limit_names);
  struct rlimit rl;
  if (getrlimit(limit_ids[which], &rl) < 0) return rv_fail(L, "getrlimit", errno, limit_names[which]);
  pushlimit(L, rl.rlim_cur);
  pushlimit(L, rl.rlim_max);
  return 2;
}

/* core.setrlimit(name, soft [, hard]) -> true.  hard defaults to the
   current hard limit, so setrlimit("nofile", hard) is the raise a server
   makes for itself (EINVAL above the hard limit; EPERM raising that
   without the privilege). */
static int l_setrlimit(lua_State *L) {
  int which = luaL_checkoption(L, 1, NULL, limit_names);
  rlim_t soft = checklimit(L, 2), hard = 0;
  int keep_hard = lua_isnoneornil(L, 3);
  struct rlimit rl;
  if (!keep_hard) hard = checklimit(L, 3);
  if (getrlimit(limit_ids[which], &rl) < 0) return rv_fail(L, "getrlimit", errno, limit_names[which]);
  rl.rlim_cur = soft;
  if (!keep_hard) rl.rlim_max = hard;
  if (setrlimit(limit_ids[which], &rl) < 0) return rv_fail(L, "setrlimit", errno, limit_names[which]);
  lua_pushboolean(L, 1);
  return 1;
}

const luaL_Reg rv_process_funcs[] = {
  { "now", l_now },
  { "fork", l_fork },
  { "waitpid", l_waitpid },
  { "getpid", l_getpid },
  { "isatty", l_isatty },
  { "getrlimit", l_getrlimit },
  { "setrlimit", l_setrlimit },
  { NULL, NULL }
};
