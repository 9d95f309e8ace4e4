#include "holdfast/http_message.hpp"

#include <algorithm>
#include <cstring>

#if HOLDFAST_LLHTTP_SSE42
// llhttp.c's SSE4.2 build, its names suffixed (CMakeLists.txt). It shares
// llhttp_init's state layout and api.c's callbacks with the baseline build.
extern "C" int llhttp__internal_execute_sse42(llhttp_t* state, const char* p, const char* endp);
#endif

namespace holdfast {

namespace {
HttpParser* self(llhttp_t* p) { return static_cast<HttpParser*>(p->data); }

bool cpu_has_sse42() noexcept {
#if HOLDFAST_LLHTTP_SSE42
  // Run before any constructor may have asked: the CPU model is read first.
  __builtin_cpu_init();
  return __builtin_cpu_supports("sse4.2");
#else
  return false;
#endif
}
// Set while the process starts, before any worker parses; read-only after.
const bool sse42_available = cpu_has_sse42();
bool use_sse42 = sse42_available;

// llhttp_execute, through the build of the state machine this CPU runs best.
llhttp_errno_t run_llhttp(llhttp_t* p, const char* data, std::size_t len) {
#if HOLDFAST_LLHTTP_SSE42
  if (use_sse42) return static_cast<llhttp_errno_t>(llhttp__internal_execute_sse42(p, data, data + len));
#endif
  return llhttp_execute(p, data, len);
}

// A head is copied into its field store and parsed there this many bytes at
// a time, so that of the body bytes that follow a head in the same read at
// most this many are copied (and given back).
constexpr std::size_t kStageSlice = 2048;

// Checks llhttp leaves to its user, made before a byte of the head is acted
// on. `status_digits` is the length of a response's status code as received
// (-1 when unknown). Returns why the head is refused, or nullptr.
const char* invalid_head(bool request, const MessageHead& h, int status_digits) {
  // RFC 9110 15: a three-digit code whose first digit is 1 to 5.
  if (!request && (status_digits != 3 || h.status < 100 || h.status > 599))
    return "status code is not three digits from 100 to 599";
  // Decoding chunked twice means one hop reads the body another way than the
  // next (RFC 9112 6.1: chunked is applied at most once). llhttp refuses most
  // of these shapes in requests, but not in responses.
  if (h.has_transfer_encoding && count_chunked_codings(h.headers) > 1)
    return "Transfer-Encoding names chunked more than once";
  // llhttp makes this check only after the callback; holdfast pauses there, so
  // it is made here (RFC 9112 6.3: a request whose last transfer coding is not
  // chunked cannot be framed).
  if (request && h.has_transfer_encoding && !h.chunked) return "Transfer-Encoding does not end in chunked";
  return nullptr;
}
}  // namespace

#if HOLDFAST_LLHTTP_SSE42
// llhttp.c's SSE4.2 build calls these in place of api.c's llhttp__on_*
// (CMakeLists.txt renames them). api.c looks each callback up in the
// settings table and skips an empty one; every HttpParser uses one table
// (settings()), so here the callbacks it names are called directly and the
// rest do nothing. The results are api.c's: a span callback's -1 becomes
// HPE_USER with api.c's reason. The unit cases that run both builds over the
// same messages compare what each reports.
struct LlhttpHooks {
  static std::size_t length(const char* at, const char* end) { return static_cast<std::size_t>(end - at); }
  static int span(llhttp_t* p, int err, const char* reason) {
    if (err != -1) return err;
    llhttp_set_error_reason(p, reason);
    return HPE_USER;
  }
  static int message_begin(llhttp_t* p, const char*, const char*) { return HttpParser::on_message_begin(p); }
  static int url(llhttp_t* p, const char* at, const char* end) {
    return span(p, HttpParser::on_url(p, at, length(at, end)), "Span callback error in on_url");
  }
  static int url_complete(llhttp_t* p, const char*, const char*) { return HttpParser::on_url_complete(p); }
  static int status(llhttp_t* p, const char* at, const char* end) {
    return span(p, HttpParser::on_status(p, at, length(at, end)), "Span callback error in on_status");
  }
  static int header_field(llhttp_t* p, const char* at, const char* end) {
    return span(p, HttpParser::on_header_field(p, at, length(at, end)), "Span callback error in on_header_field");
  }
  static int header_value(llhttp_t* p, const char* at, const char* end) {
    return span(p, HttpParser::on_header_value(p, at, length(at, end)), "Span callback error in on_header_value");
  }
  static int headers_complete(llhttp_t* p, const char*, const char*) { return HttpParser::on_headers_complete(p); }
  static int message_complete(llhttp_t* p, const char*, const char*) { return HttpParser::on_message_complete(p); }
  static int body(llhttp_t* p, const char* at, const char* end) {
    return span(p, HttpParser::on_body(p, at, length(at, end)), "Span callback error in on_body");
  }
  static int chunk_header(llhttp_t* p, const char*, const char*) { return HttpParser::on_chunk_header(p); }
};

// A hook for a callback the table names, and one for a callback it leaves empty.
#define HOLDFAST_HOOK(name)                                                            \
  int holdfast_llhttp_sse42_on_##name(llhttp_t* p, const char* at, const char* end) { \
    return LlhttpHooks::name(p, at, end);                                              \
  }
#define HOLDFAST_NO_HOOK(name) \
  int holdfast_llhttp_sse42_on_##name(llhttp_t*, const char*, const char*) { return 0; }
extern "C" {
HOLDFAST_HOOK(message_begin)
HOLDFAST_HOOK(url)
HOLDFAST_HOOK(url_complete)
HOLDFAST_HOOK(status)
HOLDFAST_HOOK(header_field)
HOLDFAST_HOOK(header_value)
HOLDFAST_HOOK(headers_complete)
HOLDFAST_HOOK(message_complete)
HOLDFAST_HOOK(body)
HOLDFAST_HOOK(chunk_header)
HOLDFAST_NO_HOOK(status_complete)
HOLDFAST_NO_HOOK(method)
HOLDFAST_NO_HOOK(method_complete)
HOLDFAST_NO_HOOK(version)
HOLDFAST_NO_HOOK(version_complete)
HOLDFAST_NO_HOOK(header_field_complete)
HOLDFAST_NO_HOOK(header_value_complete)
HOLDFAST_NO_HOOK(chunk_extension_name)
HOLDFAST_NO_HOOK(chunk_extension_name_complete)
HOLDFAST_NO_HOOK(chunk_extension_value)
HOLDFAST_NO_HOOK(chunk_extension_value_complete)
HOLDFAST_NO_HOOK(chunk_complete)
HOLDFAST_NO_HOOK(reset)
}
#undef HOLDFAST_HOOK
#undef HOLDFAST_NO_HOOK
#endif

bool llhttp_sse42_available() noexcept { return sse42_available; }
bool llhttp_sse42_in_use() noexcept { return use_sse42; }
void llhttp_prefer_sse42(bool prefer) noexcept { use_sse42 = prefer && sse42_available; }

void MessageHead::clear() {
  clear_keeping_staged();
  headers.clear();
}

void MessageHead::clear_keeping_staged() {
  method.clear();
  target.clear();
  status = 0;
  reason.clear();
  version_major = 1;
  version_minor = 1;
  headers.clear_fields();
  chunked = has_transfer_encoding = has_content_length = false;
  content_length = 0;
  keep_alive = true;
  upgrade = false;
}

const llhttp_settings_t* HttpParser::settings() {
  // One table for every parser: the callbacks find their parser through
  // llhttp_t::data, so nothing per connection needs to live here. The SSE4.2
  // build's hooks (LlhttpHooks, above) call these same callbacks: a callback
  // added here is added there too.
  static const llhttp_settings_t table = [] {
    llhttp_settings_t t;
    llhttp_settings_init(&t);
    t.on_message_begin = &HttpParser::on_message_begin;
    t.on_url = &HttpParser::on_url;
    t.on_status = &HttpParser::on_status;
    t.on_header_field = &HttpParser::on_header_field;
    t.on_header_value = &HttpParser::on_header_value;
    t.on_url_complete = &HttpParser::on_url_complete;
    t.on_headers_complete = &HttpParser::on_headers_complete;
    t.on_body = &HttpParser::on_body;
    t.on_message_complete = &HttpParser::on_message_complete;
    t.on_chunk_header = &HttpParser::on_chunk_header;
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
  trailer_bytes_ = 0;
  in_head_ = true;
  in_trailers_ = false;
  pause_ = Pause::none;
  status_digits_ = -1;
  status_counted_ = false;
  url_done_ = false;
  value_started_ = false;
  sink_ = nullptr;
  fed_ = false;
  failure_ = Failure::none;
  error_reason_ = nullptr;
}

namespace {
// A worker's spare parsers of one kind (HttpParser::take, give_back).
struct SpareParsers {
#if defined(__SANITIZE_ADDRESS__)
  static constexpr std::size_t kKeep = 0;
#else
  static constexpr std::size_t kKeep = 8;
#endif
  std::unique_ptr<HttpParser> held[kKeep > 0 ? kKeep : 1];
  std::size_t count = 0;
};
SpareParsers& spare_parsers(HttpParser::Kind kind) noexcept {
  thread_local SpareParsers spares[2];
  return spares[kind == HttpParser::Kind::request ? 0 : 1];
}
}  // namespace

std::unique_ptr<HttpParser> HttpParser::take(Kind kind, std::size_t max_head_bytes) {
  SpareParsers& s = spare_parsers(kind);
  if (s.count == 0) return std::make_unique<HttpParser>(kind, max_head_bytes);
  std::unique_ptr<HttpParser> p = std::move(s.held[--s.count]);
  p->max_head_bytes_ = max_head_bytes;
  return p;
}

void HttpParser::give_back(std::unique_ptr<HttpParser> parser) noexcept {
  if (!parser) return;
  SpareParsers& s = spare_parsers(parser->kind_);
  if (s.count == SpareParsers::kKeep) return;  // destroyed here
  if (parser->fed_) parser->reset();
  s.held[s.count++] = std::move(parser);
}

HttpParser::Result HttpParser::feed(const char* data, std::size_t len) {
  fed_ = true;
  Result r;
  // A pause at the last chunk's size line starts the trailer section, which
  // has a cap of its own: so at most two passes.
  for (int pass = 0; pass < 2; ++pass) {
    if (failure_ != Failure::none) {
      r.event = Event::error;
      return r;
    }
    const char* at = data + r.consumed;
    std::size_t give = len - r.consumed;
    // The head and the trailer section are held in memory until they end;
    // body bytes pass through and are not counted.
    std::size_t* held = in_head_ ? &head_bytes_ : in_trailers_ ? &trailer_bytes_ : nullptr;
    bool capped = false;
    if (held) {
      std::size_t allowed = max_head_bytes_ > *held ? max_head_bytes_ - *held : 0;
      if (give > allowed) {
        give = allowed;
        capped = true;
      }
    }
    const bool was_in_head = in_head_;
    llhttp_errno_t err = HPE_OK;
    std::size_t used = 0;
    if (was_in_head) {
      err = execute_head(at, give, used);
    } else {
      pause_ = Pause::none;
      err = give ? run_llhttp(&parser_, at, give) : HPE_OK;
      if (err == HPE_OK) used = give;
      else if (err == HPE_PAUSED) used = static_cast<std::size_t>(llhttp_get_error_pos(&parser_) - at);
    }
    if (err != HPE_OK && err != HPE_PAUSED) {
      if (failure_ == Failure::none) {
        failure_ = Failure::bad_message;
        if (!error_reason_) error_reason_ = llhttp_get_error_reason(&parser_);
        if (!error_reason_) error_reason_ = llhttp_errno_name(err);
      }
      r.event = Event::error;
      return r;
    }
    r.consumed += used;
    if (held) *held += used;
    if (err == HPE_OK) {
      if (capped) {
        failure_ = (kind_ == Kind::request && !url_done_) ? Failure::uri_too_long : Failure::head_too_large;
        error_reason_ = in_trailers_ ? "trailer section larger than the limit" : "head larger than the limit";
        r.event = Event::error;
      }
      return r;
    }
    llhttp_resume(&parser_);
    if (pause_ == Pause::head) {
      r.event = Event::head_complete;
      return r;
    }
    if (pause_ == Pause::message_end) {
      r.event = Event::message_complete;
      return r;
    }
    // Pause::last_chunk: go on into the trailer section under its own cap.
  }
  return r;
}

llhttp_errno_t HttpParser::execute_head(const char* data, std::size_t len, std::size_t& used) {
  // The head's bytes are parsed from their copy in the field store, so that
  // the fields are views of their own lines (HeaderList::stage): no field is
  // copied again, and a line can be forwarded as one range.
  HeaderList& store = head_.headers;
  used = 0;
  while (used < len) {
    const std::size_t n = std::min(len - used, kStageSlice);
    char* copy = store.stage(n);
    std::memcpy(copy, data + used, n);
    if (kind_ == Kind::response && !status_counted_) count_status_digits(copy, n);
    pause_ = Pause::none;
    llhttp_errno_t err = run_llhttp(&parser_, copy, n);
    if (err != HPE_OK && err != HPE_PAUSED) {
      store.unstage(n);
      return err;
    }
    const std::size_t took = err == HPE_OK ? n : static_cast<std::size_t>(llhttp_get_error_pos(&parser_) - copy);
    used += took;
    if (err == HPE_PAUSED) {
      // What follows the head is not the head's: it leaves the store.
      store.unstage(n - took);
      return err;
    }
  }
  return HPE_OK;
}

void HttpParser::count_status_digits(const char* data, std::size_t len) {
  // The status code follows the first space of the status line (llhttp
  // allows no other); leading empty lines have none.
  for (std::size_t i = 0; i < len && !status_counted_; ++i) {
    char c = data[i];
    if (status_digits_ < 0) {
      if (c == ' ') status_digits_ = 0;
    } else if (c >= '0' && c <= '9' && status_digits_ < 4) {
      ++status_digits_;
    } else {
      status_counted_ = true;
    }
  }
}

void HttpParser::resume_chunked_body(BodySink* sink) { sink_ = sink; }

int HttpParser::add_field_bytes(std::string& to, const char* at, std::size_t len) {
  to.append(at, len);
  return 0;
}

int HttpParser::on_message_begin(llhttp_t* p) {
  // The head's first bytes are staged already (execute_head).
  self(p)->head_.clear_keeping_staged();
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
  if (s->in_head_) s->head_.headers.adopt_name(std::string_view(at, len), s->value_started_);
  else s->trailers_.append_name(std::string_view(at, len), s->value_started_);
  s->value_started_ = false;
  return 0;
}

int HttpParser::on_header_value(llhttp_t* p, const char* at, std::size_t len) {
  // llhttp hands every value over, an empty one as one empty piece where the
  // next line starts, so a field line always reaches this callback: the
  // nameless-field check is made here, and the next name starts a new field.
  // The whitespace around each value is removed once the section ends
  // (trim_values), which spares a callback per field.
  auto* s = self(p);
  HeaderList& list = s->in_head_ ? s->head_.headers : s->trailers_;
  s->value_started_ = true;
  if (list.empty() || list.back().name.empty()) return s->refuse_empty_name();
  if (s->in_head_) {
    if (is_folded(list.back(), at, len)) {
      s->error_reason_ = "obsolete line folding (obs-fold) in a header field";
      return -1;
    }
    list.adopt_value(std::string_view(at, len));
  } else {
    list.append_value(std::string_view(at, len));
  }
  return 0;
}

bool HttpParser::is_folded(const HeaderField& field, const char* piece, std::size_t len) noexcept {
  // llhttp, even strict, accepts obs-fold: it hands the continuation line
  // over as one more piece of the value. RFC 9112 5.2 lets a recipient refuse
  // it, and a proxy should: folded lines mean different things to different
  // parsers. A head is parsed in place (execute_head), so a value's pieces
  // lie one after the other in the store unless a line break came between:
  // a piece that does not start where the value so far ends, or, for the
  // first piece, a line feed between the name and the piece. llhttp hands an
  // empty value over as an empty piece where the next line starts, so that
  // one line feed, right before an empty piece, is the line's own end.
  if (!field.value.empty()) return piece != field.value.data() + field.value.size();
  const char* end = len == 0 ? piece - 1 : piece;
  for (const char* c = field.name.data() + field.name.size(); c < end; ++c)
    if (*c == '\n') return true;
  return false;
}

int HttpParser::refuse_empty_name() {
  // llhttp, even strict, lets a line start with its colon. A field name is a
  // token of at least one character (RFC 9110 5.1); a field without one would
  // go on as ": value", and means different things to different parsers.
  error_reason_ = "field line without a name";
  return -1;
}

int HttpParser::on_headers_complete(llhttp_t* p) {
  auto* s = self(p);
  auto& h = s->head_;
  h.headers.trim_values();
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
  int digits = s->status_counted_ ? s->status_digits_ : -1;
  if (const char* why = invalid_head(s->kind_ == Kind::request, h, digits)) {
    s->error_reason_ = why;
    return -1;
  }
  s->pause_ = Pause::head;
  return HPE_PAUSED;
}

int HttpParser::on_body(llhttp_t* p, const char* at, std::size_t len) {
  auto* s = self(p);
  if (s->sink_) s->sink_->on_body_data(at, len);
  return 0;
}

int HttpParser::on_chunk_header(llhttp_t* p) {
  auto* s = self(p);
  if (p->content_length != 0 || s->sink_ == nullptr) return 0;
  // The last chunk: what follows is the trailer section, counted from here.
  s->in_trailers_ = true;
  s->pause_ = Pause::last_chunk;
  return HPE_PAUSED;
}

int HttpParser::on_message_complete(llhttp_t* p) {
  auto* s = self(p);
  s->pause_ = Pause::message_end;
  s->trailers_.trim_values();
  if (s->sink_ && !s->trailers_.empty()) s->sink_->on_trailers(std::move(s->trailers_));
  s->trailers_.clear();
  return HPE_PAUSED;
}

}  // namespace holdfast
