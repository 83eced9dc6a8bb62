/* Loaded into a node process with LD_PRELOAD (see launch/loopback/__init__.py).
 *
 * Reverb 0.7 and Launchpad's Courier servers listen on "[::]:<port>", hard-coded in
 * their C++. This bind() turns a wildcard bind into a loopback bind: an IPv6 socket's
 * "::" becomes ::ffff:127.0.0.1 (dual-stack, as gRPC opens them; ::1 where the socket
 * is IPv6-only), an IPv4 socket's 0.0.0.0 becomes 127.0.0.1. A bind to any other
 * address, and every other socket call, goes to the C library unchanged.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/socket.h>

typedef int (*bind_fn)(int, const struct sockaddr *, socklen_t);

static bind_fn next_bind;

__attribute__((constructor)) static void find_next_bind(void) {
  next_bind = (bind_fn)dlsym(RTLD_NEXT, "bind");
}

int bind(int fd, const struct sockaddr *addr, socklen_t len) {
  if (next_bind == NULL) {
    errno = ENOSYS;
    return -1;
  }
  if (addr != NULL && addr->sa_family == AF_INET && len >= sizeof(struct sockaddr_in)) {
    struct sockaddr_in in;
    memcpy(&in, addr, sizeof in);
    if (in.sin_addr.s_addr == htonl(INADDR_ANY)) {
      in.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
      return next_bind(fd, (const struct sockaddr *)&in, sizeof in);
    }
  } else if (addr != NULL && addr->sa_family == AF_INET6 && len >= sizeof(struct sockaddr_in6)) {
    struct sockaddr_in6 in6;
    memcpy(&in6, addr, sizeof in6);
    if (IN6_IS_ADDR_UNSPECIFIED(&in6.sin6_addr)) {
      int v6only = 0;
      socklen_t size = sizeof v6only;
      if (getsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &v6only, &size) == 0 && v6only) {
        in6.sin6_addr = in6addr_loopback;
      } else {
        static const unsigned char mapped[16] = {0, 0, 0, 0, 0, 0, 0, 0,
                                                 0, 0, 0xff, 0xff, 127, 0, 0, 1};
        memcpy(&in6.sin6_addr, mapped, sizeof mapped);
      }
      return next_bind(fd, (const struct sockaddr *)&in6, sizeof in6);
    }
  }
  return next_bind(fd, addr, len);
}
