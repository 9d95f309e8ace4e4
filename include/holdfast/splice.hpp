// Zero-copy body relay: bytes move socket to socket with splice(2) through a
// pipe, never through user-space buffers.
//
// A SplicePump moves one body (a known length, or everything until EOF) from
// a source Stream to a destination Stream. It reads the source's socket
// itself (the source is put in raw-input mode, see Stream::set_raw_input) and
// writes into the destination's socket only while the destination's own
// output buffer is empty, so bytes queued there before (the head, and body
// bytes that came with it) always go first. It never asks the source for more
// than the bytes left, so whatever follows the body (a pipelined request, the
// next response) stays in the socket for the buffered path.
//
// Backpressure is the pipe: the pump stops reading the source while the pipe
// holds bytes the destination cannot take (sink_blocked); the owner then
// stops the source's reading (which also stops its read timeout) and calls
// run() again once the destination is writable (on_stream_drained). Memory per
// pump is one pipe (kernel memory, bounded by its size).
//
// Pipes come from a pool per worker thread: a pipe goes back to the pool only
// when empty and is closed otherwise. Once the kernel refuses splice
// (EINVAL/ENOSYS) on a worker, that worker never tries again.
//
// Ownership: the owner of the exchange leg (UpstreamRequest) owns each pump;
// the Streams are borrowed and must outlive it. Destroying a pump takes the
// source out of raw-input mode and returns or closes the pipe.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>

#include "holdfast/stream.hpp"

namespace holdfast {

// False once splice has been refused on this worker thread.
bool splice_available() noexcept;

// A body switches to splice only while at least this much of it is left
// (after the bytes read with the head went the buffered way): below it, the
// pipe's extra syscalls cost more than the copy they save.
inline constexpr std::uint64_t kSpliceMinRemainder = 32 * 1024;

// While a response head is awaited and its body may be spliced, the
// backend's socket is read at most this much at a time: a head (and a small
// response whole) fits in one recv, and a large Content-Length body stays in
// the socket for the pump instead of being copied up with the head.
inline constexpr std::uint32_t kHeadReadSize = 4 * 1024;

class SplicePump {
 public:
  enum class Status {
    waiting,       // nothing to do until the source is readable (or a loop turn: the pump kicked it)
    sink_blocked,  // the destination cannot take more: stop reading the source until it drains
    done,          // the whole length was read and written
    source_eof,    // the source ended (recv 0) and every byte read was written
    source_error,  // error(): reading the source failed
    sink_error,    // writing failed; the destination reports it from the loop
    unsupported,   // splice refused before any byte moved: relay through buffers instead
  };

  // nullptr when splice is unavailable on this worker or no pipe could be had.
  // `length`: bytes to move; nullopt: until the source's EOF.
  static std::unique_ptr<SplicePump> start(Stream& source, Stream& sink, std::optional<std::uint64_t> length);
  ~SplicePump();
  SplicePump(const SplicePump&) = delete;
  SplicePump& operator=(const SplicePump&) = delete;

  // Moves what it can (bounded per call; it yields to the loop by kicking the source).
  Status run();
  std::uint64_t taken() const noexcept { return taken_; }          // read from the source
  std::uint64_t delivered() const noexcept { return delivered_; }  // written to the sink
  std::size_t in_pipe() const noexcept { return in_pipe_; }
  // Every byte of the length has been read (the rest is in the pipe).
  bool source_done() const noexcept { return length_ && taken_ == *length_; }
  int error() const noexcept { return error_; }

 private:
  struct Pipe {
    int read_end = -1;
    int write_end = -1;
  };
  SplicePump(Stream& source, Stream& sink, std::optional<std::uint64_t> length, Pipe pipe);
  // Pipe -> sink until the pipe is empty; false with `status` set when it stopped short.
  bool drain_pipe(Status& status);
  static Pipe acquire_pipe();
  static void release_pipe(Pipe pipe, bool empty);

  Stream& source_;
  Stream& sink_;
  std::optional<std::uint64_t> length_;
  Pipe pipe_;
  std::uint64_t taken_ = 0;
  std::uint64_t delivered_ = 0;
  std::size_t in_pipe_ = 0;
  bool source_eof_ = false;
  int error_ = 0;
};

}  // namespace holdfast
