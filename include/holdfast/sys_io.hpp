// The data path's socket calls, made without glibc's cancellation wrapping.
//
// recv, send, sendmsg and splice are pthread cancellation points: once a
// process has a second thread, glibc brackets each call with two atomic
// updates of the calling thread's cancellation state, which on a small
// request cost as much user time as holdfast's own code around the call.
// holdfast never cancels a thread (a worker stops when its loop exits), so
// these go to the kernel directly, with the same arguments, results and errno.
// Under AddressSanitizer the libc functions are kept, so that its checks of
// the buffers passed still run.
#pragma once

#include <fcntl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <unistd.h>

#include <cstddef>

namespace holdfast::sys {

#if defined(__SANITIZE_ADDRESS__)
inline ssize_t recv(int fd, void* buf, std::size_t len, int flags) noexcept { return ::recv(fd, buf, len, flags); }
inline ssize_t send(int fd, const void* buf, std::size_t len, int flags) noexcept {
  return ::send(fd, buf, len, flags);
}
inline ssize_t sendmsg(int fd, const msghdr* msg, int flags) noexcept { return ::sendmsg(fd, msg, flags); }
inline ssize_t splice(int in, int out, std::size_t len, unsigned flags) noexcept {
  return ::splice(in, nullptr, out, nullptr, len, flags);
}
#else
// Every argument is passed as a long: syscall() reads each as a full register.
inline ssize_t recv(int fd, void* buf, std::size_t len, int flags) noexcept {
  return ::syscall(SYS_recvfrom, static_cast<long>(fd), buf, static_cast<long>(len), static_cast<long>(flags),
                   static_cast<void*>(nullptr), static_cast<void*>(nullptr));
}
inline ssize_t send(int fd, const void* buf, std::size_t len, int flags) noexcept {
  return ::syscall(SYS_sendto, static_cast<long>(fd), buf, static_cast<long>(len), static_cast<long>(flags),
                   static_cast<void*>(nullptr), 0L);
}
inline ssize_t sendmsg(int fd, const msghdr* msg, int flags) noexcept {
  return ::syscall(SYS_sendmsg, static_cast<long>(fd), msg, static_cast<long>(flags));
}
inline ssize_t splice(int in, int out, std::size_t len, unsigned flags) noexcept {
  return ::syscall(SYS_splice, static_cast<long>(in), static_cast<void*>(nullptr), static_cast<long>(out),
                   static_cast<void*>(nullptr), static_cast<long>(len), static_cast<long>(flags));
}
#endif

}  // namespace holdfast::sys
