#include "holdfast/request_target.hpp"

#include <optional>

namespace holdfast {

namespace {

struct AbsoluteForm {
  std::string_view scheme;
  std::string_view authority;
  std::string_view rest;  // path, query and fragment as received: empty, or starting with '/', '?' or '#'
};

// llhttp has already checked the characters; this only finds the parts.
std::optional<AbsoluteForm> split_absolute_form(std::string_view target) {
  if (target.empty() || target.front() == '/' || target == "*") return std::nullopt;
  auto sep = target.find("://");
  if (sep == std::string_view::npos || sep == 0) return std::nullopt;  // authority-form (CONNECT)
  AbsoluteForm f;
  f.scheme = target.substr(0, sep);
  auto after = target.substr(sep + 3);
  auto end = after.find_first_of("/?#");
  f.authority = after.substr(0, end);
  if (end != std::string_view::npos) f.rest = after.substr(end);
  return f;
}

bool is_unreserved(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' || c == '.' ||
         c == '_' || c == '~';
}

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

char upper(char c) { return (c >= 'a' && c <= 'z') ? static_cast<char>(c - 32) : c; }

bool has_dot_segment(std::string_view path) {
  for (auto i = path.find('.'); i != std::string_view::npos; i = path.find('.', i + 1)) {
    if (i > 0 && path[i - 1] != '/') continue;
    auto segment = path.substr(i, path.find('/', i) - i);
    if (segment == "." || segment == "..") return true;
  }
  return false;
}

// RFC 3986 6.2.2.2. A '%' not followed by two hex digits is left as it is:
// it names no octet, so there is nothing to compare it as.
std::string normalize_percent_encoding(std::string_view path) {
  std::string out;
  out.reserve(path.size());
  for (std::size_t i = 0; i < path.size(); ++i) {
    int hi = -1, lo = -1;
    if (path[i] == '%' && i + 2 < path.size()) {
      hi = hex_value(path[i + 1]);
      lo = hex_value(path[i + 2]);
    }
    if (hi < 0 || lo < 0) {
      out.push_back(path[i]);
      continue;
    }
    char decoded = static_cast<char>(hi * 16 + lo);
    if (is_unreserved(decoded)) {
      out.push_back(decoded);
    } else {
      out.push_back('%');
      out.push_back(upper(path[i + 1]));
      out.push_back(upper(path[i + 2]));
    }
    i += 2;
  }
  return out;
}

// Drops the last segment of `out` and the '/' before it.
void pop_segment(std::string& out) {
  auto slash = out.rfind('/');
  out.erase(slash == std::string::npos ? 0 : slash);
}

}  // namespace

std::string remove_dot_segments(std::string_view in) {
  // The steps are RFC 3986 5.2.4's, lettered as there.
  std::string out;
  out.reserve(in.size());
  while (!in.empty()) {
    if (in.starts_with("../")) {  // A
      in.remove_prefix(3);
    } else if (in.starts_with("./")) {  // A
      in.remove_prefix(2);
    } else if (in.starts_with("/./")) {  // B
      in.remove_prefix(2);
    } else if (in == "/.") {  // B
      in = "/";
    } else if (in.starts_with("/../")) {  // C
      in.remove_prefix(3);
      pop_segment(out);
    } else if (in == "/..") {  // C
      in = "/";
      pop_segment(out);
    } else if (in == "." || in == "..") {  // D
      in = {};
    } else {  // E
      auto next = in.find('/', 1);
      auto segment = in.substr(0, next);
      out.append(segment);
      in.remove_prefix(segment.size());
    }
  }
  return out;
}

std::string normalize_path(std::string_view path) {
  // 6.2.2: escapes first, so that "%2E%2E" is a dot-segment too.
  return remove_dot_segments(normalize_percent_encoding(path));
}

const char* rewrite_request_target(MessageHead& head) {
  if (std::string_view(head.target) == "*") return std::string_view(head.method) == "OPTIONS" ? nullptr : "asterisk-form target with a method other than OPTIONS";
  auto form = split_absolute_form(head.target);
  if (!form) return nullptr;
  if (!iequals(form->scheme, "http") && !iequals(form->scheme, "https"))
    return "absolute-form target with a scheme other than http or https";
  // userinfo is a known way to make a URI look as if it named another host.
  if (form->authority.find('@') != std::string_view::npos) return "userinfo in the request target";
  if (form->authority.empty() || form->authority.front() == ':') return "absolute-form target without a host";

  std::string authority(form->authority);
  std::string origin;
  origin.reserve(form->rest.size() + 1);
  if (form->rest.empty() || form->rest.front() != '/') origin.push_back('/');
  origin.append(form->rest);
  head.target = std::move(origin);
  for (std::size_t i = 0; i < head.headers.size(); ++i)
    if (iequals(head.headers[i].name, "host")) {
      head.headers.set_value(i, authority);
      return nullptr;
    }
  head.headers.insert_front("Host", authority);
  return nullptr;
}

std::string_view normalized_path(std::string_view target, std::string& scratch) {
  if (target == "*") return "/";  // OPTIONS for the server as a whole
  std::string_view path = target;
  if (auto form = split_absolute_form(target)) path = form->rest;
  // One pass for the end of the path and for the bytes that would need
  // normalizing (string_view::find_first_of costs a memchr per byte).
  std::size_t end = 0;
  bool percent = false, dot = false;
  for (; end < path.size() && path[end] != '?' && path[end] != '#'; ++end) {
    percent = percent || path[end] == '%';
    dot = dot || path[end] == '.';
  }
  path = path.substr(0, end);
  if (path.empty()) return "/";
  if (!percent && !(dot && has_dot_segment(path))) return path;
  scratch = normalize_path(path);
  return scratch;
}

}  // namespace holdfast
