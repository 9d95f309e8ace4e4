// The client side of an exchange, as the Exchange sees it: where a response
// (or a local error answer) goes. The HTTP/1 ClientConnection implements it
// and owns everything about the client's protocol: head serialisation, chunk
// framing, error pages and the Keep-Alive policy. The Exchange speaks only in
// heads, body bytes and ends, so a second client protocol is a second
// implementation of this interface.
#pragma once

#include <event2/buffer.h>

#include <cstddef>
#include <cstdint>
#include <string_view>

#include <memory>

#include "holdfast/duration.hpp"
#include "holdfast/headers.hpp"
#include "holdfast/http_message.hpp"
#include "holdfast/tunnel.hpp"

namespace holdfast {

class Stream;

class DownstreamSink {
 public:
  // How the body after a head is delimited upstream; the sink picks the
  // client-side framing from it.
  enum class Framing { none, length, unknown };

  virtual ~DownstreamSink() = default;
  // A 1xx answer the client should see.
  virtual void send_interim(const MessageHead& head) = 0;
  // The final head. `request_complete`: the request body was read in full
  // (when not, the client connection cannot be reused after this response).
  virtual void send_head(const MessageHead& head, Framing framing, bool request_complete) = 0;
  // Moves `n` bytes of body out of `from`.
  virtual void send_data(evbuffer* from, std::size_t n) = 0;
  virtual void send_data(const char* data, std::size_t n) = 0;
  // The response is complete (trailers, if any, end it). Like every call
  // here it only queues; flush() writes.
  virtual void end(const HeaderList& trailers) = 0;
  // 101 Switching Protocols: relays `head` and from then on moves bytes
  // between the client and `upstream` (which the sink now owns).
  virtual void start_tunnel(const MessageHead& head, std::unique_ptr<UpstreamConnection> upstream, TunnelOrigin origin,
                            Millis idle_timeout) = 0;
  // Instead of a response: a short local answer. Only before send_head().
  virtual void send_error(int status, std::string_view text, bool request_complete) = 0;
  // Writes what was queued (the sink does not write on every call).
  virtual void flush() = 0;
  // The response cannot be completed: drop the connection so that the client
  // does not take a truncated body for a whole one.
  virtual void abort() = 0;
  // The client's output is above its high mark: stop producing until
  // Exchange::on_client_drained().
  virtual bool congested() = 0;
  // Bytes queued for the client since the current response began.
  virtual std::uint64_t response_bytes() const noexcept = 0;
  // The client's stream, when the body after send_head() may be written to
  // its socket directly (splice(2)) once the sink's output is empty; nullptr
  // when the sink must frame it (chunked toward the client).
  virtual Stream* splice_target() { return nullptr; }
  // `n` body bytes reached the client that way.
  virtual void note_spliced(std::size_t) {}
};

}  // namespace holdfast
