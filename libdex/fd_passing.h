// Messages with file descriptors attached (SCM_RIGHTS), as the library,
// the spawner, the zygote's host side and the run's init exchange them.
// Header-only: the spawner and init link nothing of libdex. No allocation,
// so init may use it too.
#ifndef DEX_LIBDEX_FD_PASSING_H_
#define DEX_LIBDEX_FD_PASSING_H_

#include <errno.h>
#include <sys/socket.h>
#include <sys/types.h>

#include <cstddef>
#include <cstring>

namespace dex::internal {

// The most fds one message carries.
inline constexpr size_t kMaxPassedFds = 16;

// Sends `size` bytes of `data` with `count` fds attached (none when 0),
// retrying on EINTR, never raising SIGPIPE. Returns sendmsg's result.
// REQUIRES: count <= kMaxPassedFds.
inline ssize_t SendWithFds(int socket, const void* data, size_t size,
                           const int* fds, size_t count) {
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * kMaxPassedFds)] = {};
  iovec iov = {const_cast<void*>(data), size};
  msghdr msg = {};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  if (count > 0) {
    msg.msg_control = control;
    msg.msg_controllen = CMSG_SPACE(sizeof(int) * count);
    cmsghdr* c = CMSG_FIRSTHDR(&msg);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int) * count);
    std::memcpy(CMSG_DATA(c), fds, sizeof(int) * count);
  }
  ssize_t n;
  do {
    n = sendmsg(socket, &msg, MSG_NOSIGNAL);
  } while (n < 0 && errno == EINTR);
  return n;
}

// Receives at most `size` bytes into `data` and at most `max_fds` fds,
// close-on-exec, into `fds`; *received gets how many fds came (the kernel
// closes any beyond max_fds). Retries on EINTR. Returns recvmsg's result.
// REQUIRES: max_fds <= kMaxPassedFds.
inline ssize_t ReceiveWithFds(int socket, void* data, size_t size, int* fds,
                              size_t max_fds, size_t* received) {
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * kMaxPassedFds)];
  iovec iov = {data, size};
  msghdr msg = {};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = control;
  msg.msg_controllen = CMSG_SPACE(sizeof(int) * max_fds);
  ssize_t n;
  do {
    n = recvmsg(socket, &msg, MSG_CMSG_CLOEXEC);
  } while (n < 0 && errno == EINTR);
  *received = 0;
  if (n < 0) return n;
  for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c != nullptr;
       c = CMSG_NXTHDR(&msg, c)) {
    if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
    size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
    for (size_t i = 0; i < count && *received < max_fds; ++i) {
      std::memcpy(&fds[(*received)++], CMSG_DATA(c) + i * sizeof(int),
                  sizeof(int));
    }
  }
  return n;
}

}  // namespace dex::internal

#endif  // DEX_LIBDEX_FD_PASSING_H_
