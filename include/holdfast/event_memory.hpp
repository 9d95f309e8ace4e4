// libevent's memory, kept per thread by size class.
//
// Every read reserves a buffer chain (a 128 KiB block for a 64 KiB read) and
// every write adds one; both are freed as soon as the bytes have moved on, so
// a small request costs four chain allocations and four frees, all of sizes
// that glibc serves from its slow bins. libevent lets a program supply its
// allocator (event_set_mem_functions); this one keeps freed blocks of the
// power-of-two sizes libevent's chains come in (1 KiB to 128 KiB) in
// per-thread lists, so the next chain of that size is a pointer pop. Smaller
// and larger blocks are plain malloc and free.
//
// Bounded: each size class keeps at most kSparesPerClass blocks, enough for
// the alloc-free rhythm of a loop turn (a chain is mostly freed in the
// callback that allocated it), so a worker holds at most 1 MiB of spare
// blocks, mostly untouched pages of read reservations, whatever the traffic
// was; everything else goes back to malloc. Keeping more would show up in
// the memory of idle connections: blocks held here are not reused for
// anything else. A thread's spares are freed when it ends. Under AddressSanitizer nothing is kept (see
// spare_stack.hpp), so a chain used after its free is still caught.
#pragma once

#include <cstddef>

namespace holdfast::event_memory {

// Hands libevent these functions. Must run before anything else calls into
// libevent (libevent's rule: memory from one allocator must not be freed by
// the other).
void install() noexcept;

// The functions themselves, public for the unit test.
void* allocate(std::size_t size) noexcept;
void* reallocate(void* p, std::size_t size) noexcept;
void release(void* p) noexcept;

// Spare blocks this thread holds, and their bytes (for the unit test).
std::size_t spare_blocks() noexcept;
std::size_t spare_bytes() noexcept;

inline constexpr std::size_t kSmallestClass = 1024;  // libevent's smallest chain
inline constexpr std::size_t kLargestClass = 128 * 1024;
inline constexpr std::size_t kSparesPerClass = 4;

}  // namespace holdfast::event_memory
