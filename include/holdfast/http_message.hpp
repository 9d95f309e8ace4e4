// A thin, incremental wrapper around llhttp (strict mode) for one direction of
// one connection. It stops at the end of every head so that the owner decides
// how the body is framed: bodies with a known length, and bodies delimited by
// the close of the connection, are moved by the owner buffer to buffer without
// passing through the parser; only chunked bodies are decoded here.
#pragma once

#include <llhttp.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "holdfast/free_list.hpp"
#include "holdfast/headers.hpp"

namespace holdfast {

struct MessageHead {
  // Requests
  std::string method;
  std::string target;
  // Responses
  int status = 0;
  std::string reason;
  // Both
  unsigned version_major = 1;
  unsigned version_minor = 1;
  HeaderList headers;
  bool chunked = false;                 // last transfer coding is chunked
  bool has_transfer_encoding = false;
  bool has_content_length = false;
  std::uint64_t content_length = 0;
  bool keep_alive = true;               // llhttp's reading of version + Connection
  bool upgrade = false;                 // Upgrade/CONNECT: holdfast does not tunnel

  void clear();
  // As clear(), but the bytes staged in the field store stay (the parser has
  // copied the head's first bytes there before llhttp begins the message).
  void clear_keeping_staged();
};

// Receives decoded chunked body bytes and the trailer section.
class BodySink {
 public:
  virtual ~BodySink() = default;
  virtual void on_body_data(const char* data, std::size_t len) = 0;
  virtual void on_trailers(HeaderList&& trailers) = 0;
};

// Which build of llhttp's state machine parses: on x86-64 CPUs with SSE4.2,
// the one that scans header values 16 bytes at a time (CMakeLists.txt builds
// both). Chosen once when the process starts; `prefer` lets the unit tests
// run both builds over the same bytes and is called before any parsing.
bool llhttp_sse42_available() noexcept;
bool llhttp_sse42_in_use() noexcept;
void llhttp_prefer_sse42(bool prefer) noexcept;

class HttpParser {
 public:
  // A client connection's parser lives from a request's first byte to its
  // head (and body): the worker reuses the memory of the last ones freed.
  static void* operator new(std::size_t n) { return FreeList<HttpParser>::allocate(n); }
  static void operator delete(void* p, std::size_t n) noexcept { FreeList<HttpParser>::release(p, n); }
  enum class Kind { request, response };
  enum class Event {
    need_more,         // everything given was consumed
    head_complete,     // head() is ready; nothing after the head was consumed
    message_complete,  // the chunked body ended; nothing after it was consumed
    error,
  };
  // Which answer a malformed request deserves. head_too_large also covers a
  // trailer section over the limit, on either leg.
  enum class Failure { none, bad_message, head_too_large, uri_too_long };

  struct Result {
    std::size_t consumed = 0;
    Event event = Event::need_more;
  };

  // `max_head_bytes` bounds the head and, separately, the trailer section of
  // a chunked body: both are held in memory until they end.
  HttpParser(Kind kind, std::size_t max_head_bytes);
  HttpParser(const HttpParser&) = delete;
  HttpParser& operator=(const HttpParser&) = delete;

  // Feeds bytes of the head, or of a chunked body after resume_chunked_body().
  Result feed(const char* data, std::size_t len);

  // After head_complete with head().chunked: continue into the chunked body;
  // decoded bytes go to `sink` (not owned, must outlive the body).
  void resume_chunked_body(BodySink* sink);

  // Ready for the next message on the same connection.
  void reset();

  // A worker keeps a few parsers of each kind between messages, ready, so
  // that a request or a response costs no parser construction: take() one
  // (with this limit), give_back() it when its connection has no message in
  // progress (one given back mid-message is reset first). Per thread; none
  // is kept under AddressSanitizer, so that a use after give_back is caught.
  static std::unique_ptr<HttpParser> take(Kind kind, std::size_t max_head_bytes);
  static void give_back(std::unique_ptr<HttpParser> parser) noexcept;

  const MessageHead& head() const { return head_; }
  MessageHead& head() { return head_; }
  Failure failure() const { return failure_; }
  const char* error_reason() const { return error_reason_; }
  // True once any byte of the current message was seen.
  bool started() const { return head_bytes_ > 0; }
  // Bytes of the current head consumed so far.
  std::size_t head_bytes() const { return head_bytes_; }

 private:
  // The SSE4.2 build's callback hooks (http_message.cpp) call the callbacks below.
  friend struct LlhttpHooks;
  static int on_message_begin(llhttp_t*);
  static int on_url(llhttp_t*, const char*, std::size_t);
  static int on_status(llhttp_t*, const char*, std::size_t);
  static int on_header_field(llhttp_t*, const char*, std::size_t);
  static int on_header_value(llhttp_t*, const char*, std::size_t);
  static int on_url_complete(llhttp_t*);
  static int on_headers_complete(llhttp_t*);
  static int on_body(llhttp_t*, const char*, std::size_t);
  static int on_message_complete(llhttp_t*);
  static int on_chunk_header(llhttp_t*);

  // Why llhttp last paused, so that feed() knows which event it was.
  enum class Pause { none, head, last_chunk, message_end };

  void count_status_digits(const char* data, std::size_t len);
  // Parses head bytes from their copy in the field store; `used`: bytes of
  // `data` that belong to the head.
  llhttp_errno_t execute_head(const char* data, std::size_t len, std::size_t& used);

  int add_field_bytes(std::string& to, const char* at, std::size_t len);
  static bool is_folded(const HeaderField& field, const char* piece, std::size_t len) noexcept;
  int refuse_empty_name();

  static const llhttp_settings_t* settings();

  llhttp_t parser_;
  Kind kind_;
  std::size_t max_head_bytes_;
  std::size_t head_bytes_ = 0;
  std::size_t trailer_bytes_ = 0;
  bool in_head_ = true;
  bool in_trailers_ = false;    // after the last chunk of a chunked body
  Pause pause_ = Pause::none;
  // Digits of a response's status code as received (llhttp accepts "20" and
  // "0200"); -1 while the space before them has not been seen.
  int status_digits_ = -1;
  bool status_counted_ = false;
  bool url_done_ = false;
  bool value_started_ = false;  // a header value is being collected
  MessageHead head_;
  HeaderList trailers_;
  BodySink* sink_ = nullptr;
  bool fed_ = false;            // fed since the last reset: give_back resets it
  Failure failure_ = Failure::none;
  const char* error_reason_ = nullptr;
};

}  // namespace holdfast
