/*
 * reverb.h -- the private header of the reverb.core module.
 *
 * Each .c file owns one concern (errors, addresses, the socket userdata,
 * data transfer, options, the poller, signals, processes) and exports its
 * Lua functions through a luaL_Reg table declared here.  Only
 * luaopen_reverb_core leaves the shared object; everything else is
 * hidden with the visibility attribute below.
 */
#ifndef REVERB_H
#define REVERB_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "lua.h"
#include "lauxlib.h"

#define RV_HIDDEN __attribute__((visibility("hidden")))

#define RV_SOCKET "reverb.socket"   /* metatable name of sockets */
#define RV_ERROR  "reverb.error"    /* metatable name of error objects */

/* Largest single recv/send reverb will do; larger requests are clamped. */
#define RV_MAXIO (1 << 24)

typedef struct rv_socket {
  int fd;        /* -1 once closed: closed is a state, set before close(2) */
  int family;    /* AF_INET, AF_INET6, AF_UNIX */
  int type;      /* SOCK_STREAM, SOCK_DGRAM */
  int blocking;  /* mirrors O_NONBLOCK, so tostring and accept need no fcntl */
} rv_socket;

/* An address as the system wants it, with its printable form. */
typedef struct rv_addr {
  struct sockaddr_storage ss;
  socklen_t len;
} rv_addr;

/* The module's entry point, the one exported symbol. */
__attribute__((visibility("default"))) int luaopen_reverb_core(lua_State *L);

/* error.c: the one way a failure reaches Lua. */
RV_HIDDEN int rv_fail(lua_State *L, const char *op, int err, const char *address);
RV_HIDDEN void rv_pusherror(lua_State *L, const char *op, int err,
                            const char *address);
RV_HIDDEN int rv_fail_gai(lua_State *L, const char *op, int gaierr,
                          const char *address);
RV_HIDDEN int rv_fail_msg(lua_State *L, const char *op, int err,
                          const char *message, const char *address);
RV_HIDDEN void rv_pusherror_msg(lua_State *L, const char *op, int err,
                                const char *message, const char *address);
RV_HIDDEN void rv_error_init(lua_State *L);
RV_HIDDEN const char *rv_errname(int err);
extern RV_HIDDEN const luaL_Reg rv_error_funcs[];

/* address.c: resolution and formatting. */
RV_HIDDEN void rv_addr_format(const struct sockaddr *sa, socklen_t len,
                              char *buf, size_t size);
RV_HIDDEN int rv_push_addr(lua_State *L, const struct sockaddr *sa,
                           socklen_t len);
extern RV_HIDDEN const luaL_Reg rv_address_funcs[];
RV_HIDDEN int rv_getaddr(lua_State *L, rv_socket *s, int argidx,
                         const char *op, rv_addr *out, char *text, size_t size);

/* socket.c: the userdata. */
RV_HIDDEN rv_socket *rv_check(lua_State *L, int idx, const char *op);
RV_HIDDEN void rv_push_sockettag(lua_State *L);
RV_HIDDEN rv_socket *rv_newsocket(lua_State *L, int family, int type);
RV_HIDDEN void rv_socket_init(lua_State *L);
extern RV_HIDDEN const luaL_Reg rv_socket_funcs[];
extern RV_HIDDEN const luaL_Reg rv_socket_methods[];

/* io.c, options.c: more socket methods. */
extern RV_HIDDEN const luaL_Reg rv_io_methods[];
extern RV_HIDDEN const luaL_Reg rv_io_funcs[];
RV_HIDDEN void rv_io_init(lua_State *L);
RV_HIDDEN int rv_checkfd(lua_State *L, int idx);
extern RV_HIDDEN const luaL_Reg rv_option_methods[];

/* poller.c, sched.c, signal.c, process.c: what the loop needs. */
#define RV_READ  1   /* event flags, as the loop sees them */
#define RV_WRITE 2
#define RV_HUP   4
struct epoll_event;
RV_HIDDEN void rv_poller_init(lua_State *L);
RV_HIDDEN int rv_poller_flags(uint32_t events);
RV_HIDDEN int rv_poller_poll(lua_State *L, int idx, const struct epoll_event **events);
extern RV_HIDDEN const luaL_Reg rv_poller_funcs[];
extern RV_HIDDEN const luaL_Reg rv_sched_funcs[];

/* sched.c and stream*.c: the scheduler's record of the running task, the
   marker a task yields to park (its address is the marker), and where the
   objects of the task parked on each descriptor live, so that dispatch
   can prefetch them (rv_sched_hint; addresses only, never dereferenced),
   and, for a task parked in pipe, where its bytes go (see sched.c's
   relayed for when that one is dereferenced). */
typedef struct rv_hint {
  uintptr_t task, state, sock, self;   /* lua_State, stream state, socket, stream table */
  uintptr_t relay;   /* a pipe parked here: its destination's state (rv_stream_relay) */
  /* What only Lua's own structs tell (peek.c; 0 where peeking is off):
     the parked call's frame and its caller's, their stack slots, and
     the stream table's array and hash part. */
  uintptr_t frame, caller, slots, callerslots, array, node, nodeend;
} rv_hint;
typedef struct rv_sched {
  lua_State *current;   /* the task being resumed; NULL at top level */
  rv_hint *hints;       /* indexed by descriptor; nhints of them */
  int nhints;
  unsigned resumes;     /* resumes so far: a stream's calls with none between
                           them are one task's, not letting go (stream.h) */
  int peeking;          /* whether peek.c's offsets hold in this Lua */
} rv_sched;
extern RV_HIDDEN const char rv_sched_wait;
RV_HIDDEN void rv_sched_hint(rv_sched *S, int fd, const rv_hint *h);
/* peek.c: what the API does not tell, for prefetching only. */
RV_HIDDEN int rv_peek_check(lua_State *L);
RV_HIDDEN void rv_peek_task(lua_State *L, const void *table, rv_hint *h);
RV_HIDDEN void rv_stream_mark(lua_State *L, int idx, int hup);
RV_HIDDEN int rv_stream_relay(lua_State *L, uintptr_t src, uintptr_t dst);
RV_HIDDEN int rv_stream_api(lua_State *L);
extern RV_HIDDEN const luaL_Reg rv_signal_funcs[];
RV_HIDDEN void rv_signal_afterfork(void);
extern RV_HIDDEN const luaL_Reg rv_process_funcs[];
RV_HIDDEN double rv_now(void);

#endif
