// ClientConnection after an early answer: the backend answered (401, 413,
// nginx's `return`) before the request body had fully arrived. The answer
// has gone out saying keep-alive; the rest of the body is read and dropped
// so that the client's next request finds the connection usable, within
// kDiscardBytes and kDiscardTime (nginx bounds its discarded bodies too).
// The upstream connection is not part of this: it was closed, as its
// request was never completed.
#include <spdlog/spdlog.h>

#include "holdfast/client_connection.hpp"
#include "holdfast/exchange.hpp"
#include "holdfast/loop_clock.hpp"
#include "holdfast/worker.hpp"

namespace holdfast {

bool ClientConnection::can_discard_request_body() const {
  // A client waiting for 100 Continue may answer a final status by not
  // sending the body at all: what it sends next could be a request or the
  // body, so the connection cannot continue.
  if (!exchange_ || exchange_->expects_continue()) return false;
  auto left = exchange_->request_body_left();
  // A chunked body's size is unknown: the byte bound applies as it is read.
  return !left || *left <= kDiscardBytes;
}

void ClientConnection::start_discarding(std::optional<std::uint64_t> left) {
  state_ = State::discarding;
  auto& e = ending();
  e.discard_left = left;
  e.discarded = 0;
  deadline_ = LoopClock::now() + kDiscardTime;
  // A chunked body goes on through the parser, which now drops it.
  if (!left) parser_->resume_chunked_body(&e.discard_sink);
  stream_.set_read_timeout(kDiscardTime);
  if (reading_paused_) {
    reading_paused_ = false;
    stream_.enable_read();
  }
  discard_request_body();
  if (state_ == State::discarding) stream_.kick();
}

void ClientConnection::discard_request_body() {
  auto& e = ending();
  bool done = false;
  while (state_ == State::discarding && !done) {
    std::size_t avail = stream_.input_length();
    if (avail == 0) break;
    if (e.discard_left) {
      auto n = static_cast<std::size_t>(std::min<std::uint64_t>(avail, *e.discard_left));
      stream_.drain_input(n);
      *e.discard_left -= n;
      e.discarded += n;
      done = *e.discard_left == 0;
    } else {
      const std::string_view front = stream_.input_front();
      if (front.empty()) break;
      auto r = parser_->feed(front.data(), front.size());
      stream_.drain_input(r.consumed);
      e.discarded += r.consumed;
      if (r.event == HttpParser::Event::error) {
        // What follows cannot be framed.
        spdlog::info("conn {} {}: malformed request body while discarding it: {}", id_, peer().full(),
                     parser_->error_reason());
        close_after_output(true);
        return;
      }
      done = r.event == HttpParser::Event::message_complete;
      if (!done && r.consumed == 0) break;
    }
    if (!done && (e.discarded > kDiscardBytes || LoopClock::now() >= deadline_)) {
      spdlog::info("conn {} {}: request body after an early answer exceeds the discard bounds; closing", id_, peer().full());
      close_after_output(true);
      return;
    }
  }
  if (!done) return;
  parser_->reset();
  // The parser no longer points at the discard sink: the next early answer
  // makes a new one.
  ending_.reset();
  stream_.set_read_timeout(std::nullopt);
  continue_after_request();
}

}  // namespace holdfast
