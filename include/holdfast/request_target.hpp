// The request target (RFC 9112 3.2) as holdfast forwards and routes it. Pure
// functions: they touch nothing but their arguments.
#pragma once

#include <string>
#include <string_view>

#include "holdfast/http_message.hpp"

namespace holdfast {

// Brings a request head to the one form the rest of holdfast handles, before
// Host is checked and the request routed.
// - absolute-form ("http://a.example/x?q"): the authority replaces Host
//   (RFC 9112 3.2.2): the first Host field takes its value, or a Host field is
//   added first when there is none (further Host fields are left for the caller
//   to refuse); the target becomes origin-form ("/x?q"; "/" for an empty
//   path, the query kept). Only http and https are accepted, and an authority
//   with userinfo or without a host is refused (RFC 9110 4.2.1, 4.2.4).
// - asterisk-form ("*") is accepted only with OPTIONS (RFC 9112 3.2.4).
// - origin- and authority-form are left alone.
// Returns nullptr when the request may go on, or a static text saying why it
// must be answered 400; `head` is then unchanged.
const char* rewrite_request_target(MessageHead& head);

// RFC 3986 5.2.4 on a path without query: "." and ".." segments resolved,
// never above the root ("/a/../../b" gives "/b").
std::string remove_dot_segments(std::string_view path);

// RFC 3986 6.2.2 on a path without query: percent-encoded unreserved
// characters decoded, the hex digits of other escapes upper-cased, then
// dot-segments removed. An escape that is not '%' and two hex digits is kept.
std::string normalize_path(std::string_view path);

// The path of `target` as routes compare it: RFC 3986 6.2.2 normalisation of
// the path alone, as normalize_path does (the query and any fragment are not
// part of it). "*" gives "/"; an
// absolute-form target gives its path. Returns a view of `target` when it
// needs no change, else of `scratch`, which it overwrites. Routing only: the
// target forwarded upstream stays byte for byte as received.
std::string_view normalized_path(std::string_view target, std::string& scratch);

}  // namespace holdfast
