// UpstreamRequest's splice(2) relays: a large response body from the backend's
// socket to the client's, and a large Content-Length request body from the
// client's socket to the backend's (see splice.hpp). Framing, timeouts and the
// reuse verdict stay the request's own: a pump never reads past the body's
// end, and the connection leaves only after both pumps are gone.
#include <string.h>

#include "holdfast/upstream_pool.hpp"
#include "holdfast/upstream_request.hpp"

namespace holdfast {

void UpstreamRequest::stop_splicing() noexcept {
  response_splice_.reset();
  request_splice_.reset();
  splice_to_ = nullptr;
}

// The backend's socket took what was held back: the request body goes on,
// from the pipe when the client's part is all read, else from the client.
void UpstreamRequest::on_upstream_drained(UpstreamConnection&) {
  if (request_splice_ && request_complete_) continue_request_splice();
  else if (!request_complete_) events_.on_request_drained();
  else if (!head_seen_ && conn_ && conn_->stream().output_length() == 0) arm_timeouts();
}

// While the head is awaited, the backend's socket is read kHeadReadSize at a
// time when the body may be spliced, so that a large body stays in the socket
// for the pump; handle_head() restores full-size reads.
void UpstreamRequest::read_head() {
  const bool small = !options_.head_request && events_.response_may_splice();
  conn_->stream().set_input_limit(small ? kHeadReadSize : Stream::kDefaultInputLimit);
  conn_->stream().enable_read();
}

// The final head is in: whether its body may go by splice, and to where.
void UpstreamRequest::choose_response_splice() {
  if (mode_ == BodyMode::length || mode_ == BodyMode::until_close)
    splice_to_ = events_.response_splice_target(mode_ == BodyMode::length ? std::optional(remaining_) : std::nullopt);
}

// Called by process_response once the buffered part of the body is relayed.
void UpstreamRequest::pump_response_splice() {
  if (!conn_ || failed_ || response_complete_ || paused_) return;
  if (!response_splice_) {
    if (!splice_to_ || (mode_ != BodyMode::length && mode_ != BodyMode::until_close)) return;
    if (mode_ == BodyMode::length && remaining_ < kSpliceMinRemainder) {
      splice_to_ = nullptr;
      return;
    }
    response_splice_ = SplicePump::start(conn_->stream(), *splice_to_,
                                         mode_ == BodyMode::length ? std::optional(remaining_) : std::nullopt);
    if (!response_splice_) {
      splice_to_ = nullptr;
      return;
    }
  }
  auto& pump = *response_splice_;
  std::uint64_t taken = pump.taken(), delivered = pump.delivered();
  auto status = pump.run();
  if (mode_ == BodyMode::length) remaining_ -= pump.taken() - taken;
  if (pump.delivered() > delivered) events_.on_response_spliced(pump.delivered() - delivered);
  switch (status) {
    case SplicePump::Status::waiting:
      return;
    case SplicePump::Status::sink_blocked:
    case SplicePump::Status::sink_error:  // the client's stream reports it from the loop
      // The pipe holds what the client cannot take: reading (and its timeout) pauses.
      conn_->stream().disable_read();
      paused_ = true;
      return;
    case SplicePump::Status::done:
      response_splice_.reset();
      complete_response();
      return;
    case SplicePump::Status::source_eof:
      response_splice_.reset();
      if (mode_ == BodyMode::until_close) complete_response();
      else fail(ProxyError::closed_mid_response, "end of stream");
      return;
    case SplicePump::Status::source_error: {
      int err = pump.error();
      response_splice_.reset();
      fail(ProxyError::closed_mid_response, strerror(err));
      return;
    }
    case SplicePump::Status::unsupported:
      // Nothing moved: the buffered path reads what waits in the socket.
      response_splice_.reset();
      splice_to_ = nullptr;
      conn_->stream().kick();
      return;
  }
}

UpstreamRequest::SpliceStep UpstreamRequest::splice_body(Stream& from, std::uint64_t left) {
  SpliceStep step;
  if (!conn_ || !conn_->connected() || failed_) return step;
  if (!request_splice_) {
    if (left < kSpliceMinRemainder) {
      step.fallback = true;
      return step;
    }
    request_splice_ = SplicePump::start(from, conn_->stream(), left);
    if (!request_splice_) {
      step.fallback = true;
      return step;
    }
    // Spliced bytes cannot be sent again.
    replay_complete_ = false;
    std::string().swap(replay_);
  }
  auto& pump = *request_splice_;
  std::uint64_t taken = pump.taken(), delivered = pump.delivered();
  auto status = pump.run();
  step.taken = pump.taken() - taken;
  queued_ += pump.delivered() - delivered;
  if (pump.delivered() > delivered) events_.on_request_spliced(pump.delivered() - delivered);
  switch (status) {
    case SplicePump::Status::waiting:
      break;
    case SplicePump::Status::sink_blocked:
    case SplicePump::Status::sink_error:  // the backend's stream reports it from the loop
      step.blocked = true;
      break;
    case SplicePump::Status::done:
      request_splice_.reset();
      break;
    case SplicePump::Status::source_eof:
    case SplicePump::Status::source_error: {
      int err = status == SplicePump::Status::source_eof ? 0 : pump.error();
      request_splice_.reset();
      // The client's own stream reports it, as a recv would have.
      from.report_raw_end(err);
      break;
    }
    case SplicePump::Status::unsupported:
      request_splice_.reset();
      step.fallback = true;
      from.kick();
      break;
  }
  return step;
}

// The whole request body was read; the pipe still held some of it when the
// backend's socket was full.
void UpstreamRequest::continue_request_splice() {
  auto& pump = *request_splice_;
  std::uint64_t delivered = pump.delivered();
  auto status = pump.run();
  queued_ += pump.delivered() - delivered;
  if (pump.delivered() > delivered) events_.on_request_spliced(pump.delivered() - delivered);
  if (status != SplicePump::Status::done) return;  // blocked again, or an error the stream reports
  request_splice_.reset();
  // The last request byte just went out: the wait for the answer starts.
  if (conn_ && !head_seen_) arm_timeouts();
}

}  // namespace holdfast
