#include "holdfast/http_message.hpp"

#include <algorithm>
#include <cstring>

namespace holdfast {

namespace {
HttpParser* self(llhttp_t* p) { return static_cast<HttpParser*>(p->data); }

std::string_view trim_ows(std::string_view s) {
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  return s;
}
}  // namespace

void MessageHead::clear() {
  method.clear();
  target.clear();
  status = 0;
  reason.clear();
  version_major = 1;
  version_minor = 1;
  headers.clear();
  chunked = has_transfer_encoding = has_content_length = false;
  content_length = 0;
  keep_alive = true;
  upgrade = false;
}

const llhttp_settings_t* HttpParser::settings() {
  // One table for every parser: the callbacks find their parser through
  // llhttp_t::data, so nothing per connection needs to live here.
  static const llhttp_settings_t table = [] {
    llhttp_settings_t t;
    llhttp_settings_init(&t);
    t.on_message_begin = &HttpParser::on_message_begin;
    t.on_url = &HttpParser::on_url;
    t.on_status = &HttpParser::on_status;
    t.on_header_field = &HttpParser::on_header_field;
    t.on_header_value = &HttpParser::on_header_value;
    t.on_header_value_complete = &HttpParser::on_header_value_complete;
    t.on_url_complete = &HttpParser::on_url_complete;
    t.on_headers_complete = &HttpParser::on_headers_complete;
    t.on_body = &HttpParser::on_body;
    t.on_message_complete = &HttpParser::on_message_complete;
    return t;
  }();
  return &table;
}

HttpParser::HttpParser(Kind kind, std::size_t max_head_bytes) : kind_(kind), max_head_bytes_(max_head_bytes) {
  // Strict: no lenient flags are ever set, and llhttp is built with
  // LLHTTP_STRICT_MODE. llhttp then refuses CL+TE, differing repeated
  // Content-Length, bad chunk sizes, whitespace before the colon and control
  // characters; the rest is checked below.
  llhttp_init(&parser_, kind == Kind::request ? HTTP_REQUEST : HTTP_RESPONSE, settings());
  parser_.data = this;
}

void HttpParser::reset() {
  llhttp_init(&parser_, kind_ == Kind::request ? HTTP_REQUEST : HTTP_RESPONSE, settings());
  parser_.data = this;
  head_.clear();
  trailers_.clear();
  head_bytes_ = 0;
  in_head_ = true;
  url_done_ = false;
  value_started_ = false;
  last_was_lf_ = false;
  sink_ = nullptr;
  failure_ = Failure::none;
  error_reason_ = nullptr;
}

HttpParser::Result HttpParser::feed(const char* data, std::size_t len) {
  Result r;
  if (failure_ != Failure::none) {
    r.event = Event::error;
    return r;
  }
  std::size_t give = len;
  bool capped = false;
  if (in_head_) {
    std::size_t allowed = max_head_bytes_ > head_bytes_ ? max_head_bytes_ - head_bytes_ : 0;
    if (give > allowed) {
      give = allowed;
      capped = true;
    }
  }
  const bool was_in_head = in_head_;
  llhttp_errno_t err = give ? llhttp_execute(&parser_, data, give) : HPE_OK;
  if (was_in_head && (err == HPE_OK || err == HPE_PAUSED)) {
    std::size_t upto = err == HPE_OK ? give : static_cast<std::size_t>(llhttp_get_error_pos(&parser_) - data);
    if (has_folded_line(data, upto)) {
      failure_ = Failure::bad_message;
      error_reason_ = "obsolete line folding (obs-fold) in a header field";
      r.event = Event::error;
      return r;
    }
  }
  if (err == HPE_OK) {
    r.consumed = give;
    if (in_head_) head_bytes_ += give;
    if (capped) {
      failure_ = (kind_ == Kind::request && !url_done_) ? Failure::uri_too_long : Failure::head_too_large;
      error_reason_ = "head larger than the limit";
      r.event = Event::error;
    }
    return r;
  }
  if (err == HPE_PAUSED) {
    const char* pos = llhttp_get_error_pos(&parser_);
    r.consumed = static_cast<std::size_t>(pos - data);
    if (was_in_head) head_bytes_ += r.consumed;
    llhttp_resume(&parser_);
    if (!in_head_ && sink_ == nullptr) {
      // Paused by on_headers_complete.
      r.event = Event::head_complete;
    } else {
      r.event = Event::message_complete;
    }
    return r;
  }
  failure_ = Failure::bad_message;
  if (!error_reason_) error_reason_ = llhttp_get_error_reason(&parser_);
  if (!error_reason_) error_reason_ = llhttp_errno_name(err);
  r.event = Event::error;
  return r;
}

void HttpParser::resume_chunked_body(BodySink* sink) { sink_ = sink; }

bool HttpParser::has_folded_line(const char* data, std::size_t len) {
  // llhttp, even strict, accepts obs-fold and joins the lines. In a head, a
  // line feed followed by a space or tab can only be a fold (or whitespace
  // before the first field); RFC 9112 5.2 lets a recipient refuse both, and a
  // proxy should: folded lines mean different things to different parsers.
  if (len == 0) return false;
  if (last_was_lf_ && (data[0] == ' ' || data[0] == '\t')) return true;
  const char* p = data;
  const char* end = data + len;
  while ((p = static_cast<const char*>(std::memchr(p, '\n', static_cast<std::size_t>(end - p)))) != nullptr) {
    if (++p == end) break;
    if (*p == ' ' || *p == '\t') return true;
  }
  last_was_lf_ = data[len - 1] == '\n';
  return false;
}

int HttpParser::add_field_bytes(std::string& to, const char* at, std::size_t len) {
  to.append(at, len);
  return 0;
}

int HttpParser::on_message_begin(llhttp_t* p) {
  auto* s = self(p);
  s->head_.clear();
  return 0;
}

int HttpParser::on_url(llhttp_t* p, const char* at, std::size_t len) {
  return self(p)->add_field_bytes(self(p)->head_.target, at, len);
}

int HttpParser::on_url_complete(llhttp_t* p) {
  self(p)->url_done_ = true;
  return 0;
}

int HttpParser::on_status(llhttp_t* p, const char* at, std::size_t len) {
  return self(p)->add_field_bytes(self(p)->head_.reason, at, len);
}

int HttpParser::on_header_field(llhttp_t* p, const char* at, std::size_t len) {
  auto* s = self(p);
  HeaderList& list = s->in_head_ ? s->head_.headers : s->trailers_;
  if (list.capacity() == 0) list.reserve(16);  // one allocation for a typical head
  if (s->value_started_ || list.empty()) {
    list.push_back({});
    s->value_started_ = false;
  }
  list.back().name.append(at, len);
  return 0;
}

int HttpParser::on_header_value(llhttp_t* p, const char* at, std::size_t len) {
  auto* s = self(p);
  HeaderList& list = s->in_head_ ? s->head_.headers : s->trailers_;
  s->value_started_ = true;
  if (list.empty()) return -1;
  list.back().value.append(at, len);
  return 0;
}

int HttpParser::on_header_value_complete(llhttp_t* p) {
  auto* s = self(p);
  HeaderList& list = s->in_head_ ? s->head_.headers : s->trailers_;
  // An empty value produces no on_header_value call; make sure the next
  // field starts a new entry all the same.
  s->value_started_ = true;
  if (!list.empty()) {
    auto& v = list.back().value;
    auto t = trim_ows(v);
    if (t.size() != v.size()) v = std::string(t);
  }
  return 0;
}

int HttpParser::on_headers_complete(llhttp_t* p) {
  auto* s = self(p);
  auto& h = s->head_;
  if (s->kind_ == Kind::request) h.method = llhttp_method_name(static_cast<llhttp_method_t>(p->method));
  else h.status = p->status_code;
  h.version_major = p->http_major;
  h.version_minor = p->http_minor;
  h.chunked = (p->flags & F_CHUNKED) != 0;
  h.has_transfer_encoding = (p->flags & F_TRANSFER_ENCODING) != 0;
  h.has_content_length = (p->flags & F_CONTENT_LENGTH) != 0;
  h.content_length = h.has_content_length ? p->content_length : 0;
  h.keep_alive = llhttp_should_keep_alive(p) != 0;
  h.upgrade = p->upgrade != 0 || (s->kind_ == Kind::request && p->method == HTTP_CONNECT);
  s->in_head_ = false;
  s->value_started_ = false;
  // llhttp makes this check only after the callback; holdfast pauses here, so
  // it is made here (RFC 9112 6.3: a request whose last transfer coding is not
  // chunked cannot be framed).
  if (s->kind_ == Kind::request && h.has_transfer_encoding && !h.chunked) {
    s->error_reason_ = "Transfer-Encoding does not end in chunked";
    return -1;
  }
  return HPE_PAUSED;
}

int HttpParser::on_body(llhttp_t* p, const char* at, std::size_t len) {
  auto* s = self(p);
  if (s->sink_) s->sink_->on_body_data(at, len);
  return 0;
}

int HttpParser::on_message_complete(llhttp_t* p) {
  auto* s = self(p);
  if (s->sink_ && !s->trailers_.empty()) s->sink_->on_trailers(std::move(s->trailers_));
  s->trailers_.clear();
  return HPE_PAUSED;
}

}  // namespace holdfast
