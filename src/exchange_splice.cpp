// Exchange's part in splice(2) relays: which bodies qualify (the operator's
// splice_min_body, a request read in full before a response is spliced, and
// a request body larger than the replay copy), and the counting. The moving
// itself is the UpstreamRequest's (upstream_splice.cpp).
#include "holdfast/client_connection.hpp"
#include "holdfast/exchange.hpp"
#include "holdfast/upstream_pool.hpp"
#include "holdfast/worker.hpp"

namespace holdfast {

// Backpressure ends: the paused side goes on, buffered or by splice.
void Exchange::on_request_drained() { client_.resume_reading(); }

void Exchange::on_client_drained() {
  if (phase_ == Phase::streaming) upstream_.resume_response();
}

Stream* Exchange::response_splice_target(std::optional<std::uint64_t> length) {
  const std::uint64_t min = worker_.config().splice_min_body;
  // An answer that comes while the request body is still being read shares
  // the client's socket with it: that rare case stays buffered.
  if (min == 0 || !request_.done || !splice_available()) return nullptr;
  if (length && *length < min) return nullptr;
  return sink_.splice_target();
}

// Asked before the response begins, so the sink's framing of the previous
// response says nothing yet; a Content-Length response is never re-framed.
bool Exchange::response_may_splice() { return worker_.config().splice_min_body != 0 && splice_available(); }

void Exchange::on_response_spliced(std::size_t n) {
  sink_.note_spliced(n);
  worker_.stats().add(Counter::spliced_response_bytes, n);
}

void Exchange::on_request_spliced(std::size_t n) { worker_.stats().add(Counter::spliced_request_bytes, n); }

void Exchange::splice_request_body() {
  if (splice_refused_ || request_.mode != BodyMode::length || request_.done || !upstream_.attached()) return;
  const std::uint64_t min = worker_.config().splice_min_body;
  // A body that fits the replay copy stays buffered so that it can be sent
  // again; a spliced one cannot.
  if (min == 0 || head_.content_length < min || head_.content_length <= pool_.config().retry_buffer ||
      !splice_available()) {
    splice_refused_ = true;
    return;
  }
  auto step = upstream_.splice_body(client_.stream(), request_.remaining);
  if (phase_ == Phase::done) return;
  request_.remaining -= step.taken;
  request_.bytes += step.taken;
  if (step.fallback) splice_refused_ = true;
  if (request_.remaining == 0) request_body_done();
  else if (step.blocked) client_.pause_reading();
}

}  // namespace holdfast
