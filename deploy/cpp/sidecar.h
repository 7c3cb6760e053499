// Reads what the C++ samples need from the sidecar manifest <engine>.json that `convmlp-deploy build`
// writes next to a plan: the top-level boolean "version_compatible", and the string members of the
// top-level "metadata" object (mean, std, crop_pct, input_size... copied from the ONNX graph).
// A small strict JSON reader (objects, arrays, strings, numbers, true/false/null), no dependencies.
#pragma once

#include <cctype>
#include <fstream>
#include <map>
#include <sstream>
#include <string>

namespace convmlp {

enum class SidecarStatus {
  kMissing,               // no <engine>.json
  kInvalid,               // unreadable, not JSON, or "version_compatible" is not a boolean
  kVersionCompatible,     // "version_compatible": true
  kNotVersionCompatible,  // "version_compatible": false, or no such key
};

struct Sidecar {
  SidecarStatus status;
  std::string detail;  // why, for kInvalid
  std::map<std::string, std::string> metadata;  // "metadata": {"mean": "[...]", ...}, string members only
};

inline std::string sidecar_path(const std::string& engine_path) { return engine_path + ".json"; }

namespace detail {

class JsonReader {
 public:
  explicit JsonReader(const std::string& text) : s_(text) {}

  // Parses the whole text; on success *flag holds the root object's "version_compatible" (-1 if absent)
  // and metadata() the string members of its "metadata" object.
  const std::map<std::string, std::string>& metadata() const { return metadata_; }

  bool read_root(int* flag, std::string* error) {
    flag_ = -1;
    skip_ws();
    if (peek() != '{') return fail("the top level is not a JSON object", error);
    if (!value(0)) return fail(error_, error);
    skip_ws();
    if (pos_ != s_.size()) return fail("unexpected text after the JSON object", error);
    *flag = flag_;
    return true;
  }

 private:
  static constexpr int kMaxDepth = 64;

  bool fail(const std::string& why, std::string* error) {
    *error = why + " (at byte " + std::to_string(pos_) + ")";
    return false;
  }
  bool bad(const char* why) {
    if (error_.empty()) error_ = why;
    return false;
  }
  char peek() const { return pos_ < s_.size() ? s_[pos_] : '\0'; }
  void skip_ws() {
    while (pos_ < s_.size() && (s_[pos_] == ' ' || s_[pos_] == '\t' || s_[pos_] == '\n' || s_[pos_] == '\r')) ++pos_;
  }
  bool literal(const char* word) {
    const std::string w(word);
    if (s_.compare(pos_, w.size(), w) != 0) return bad("invalid literal");
    pos_ += w.size();
    return true;
  }
  bool string(std::string* out) {
    if (peek() != '"') return bad("expected a string");
    ++pos_;
    out->clear();
    while (pos_ < s_.size()) {
      const char c = s_[pos_++];
      if (c == '"') return true;
      if (static_cast<unsigned char>(c) < 0x20) return bad("control character in a string");
      if (c != '\\') {
        out->push_back(c);
        continue;
      }
      if (pos_ >= s_.size()) break;
      const char e = s_[pos_++];
      switch (e) {
        case '"': case '\\': case '/': out->push_back(e); break;
        case 'b': out->push_back('\b'); break;
        case 'f': out->push_back('\f'); break;
        case 'n': out->push_back('\n'); break;
        case 'r': out->push_back('\r'); break;
        case 't': out->push_back('\t'); break;
        case 'u':
          for (int i = 0; i < 4; ++i, ++pos_)
            if (pos_ >= s_.size() || !std::isxdigit(static_cast<unsigned char>(s_[pos_])))
              return bad("bad \\u escape");
          out->push_back('?');  // keys we look for are ASCII
          break;
        default: return bad("bad escape in a string");
      }
    }
    return bad("unterminated string");
  }
  bool digits() {
    const size_t start = pos_;
    while (std::isdigit(static_cast<unsigned char>(peek()))) ++pos_;
    return pos_ > start;
  }
  bool number() {
    if (peek() == '-') ++pos_;
    if (peek() == '0') {
      ++pos_;
    } else if (!digits()) {
      return bad("invalid number");
    }
    if (peek() == '.') {
      ++pos_;
      if (!digits()) return bad("invalid number");
    }
    if (peek() == 'e' || peek() == 'E') {
      ++pos_;
      if (peek() == '+' || peek() == '-') ++pos_;
      if (!digits()) return bad("invalid number");
    }
    return true;
  }
  bool value(int depth) {
    if (depth > kMaxDepth) return bad("nested too deeply");
    skip_ws();
    const char c = peek();
    if (c == '{') return object(depth);
    if (c == '[') return array(depth);
    if (c == '"') {
      std::string ignored;
      return string(&ignored);
    }
    if (c == 't') return literal("true");
    if (c == 'f') return literal("false");
    if (c == 'n') return literal("null");
    if (c == '-' || std::isdigit(static_cast<unsigned char>(c))) return number();
    return bad("expected a JSON value");
  }
  bool object(int depth) {
    ++pos_;  // '{'
    skip_ws();
    if (peek() == '}') {
      ++pos_;
      return true;
    }
    while (true) {
      skip_ws();
      std::string key;
      if (!string(&key)) return false;
      skip_ws();
      if (peek() != ':') return bad("expected ':' after a key");
      ++pos_;
      skip_ws();
      if (depth == 0 && key == "version_compatible") {
        if (s_.compare(pos_, 4, "true") == 0) {
          flag_ = 1;
        } else if (s_.compare(pos_, 5, "false") == 0) {
          flag_ = 0;
        } else {
          return bad("\"version_compatible\" is not true or false");
        }
      }
      if (depth == 1 && in_metadata_ && peek() == '"') {
        std::string text;
        if (!string(&text)) return false;
        metadata_[key] = text;
      } else {
        const bool entering = depth == 0 && key == "metadata" && peek() == '{';
        if (entering) in_metadata_ = true;
        const bool ok = value(depth + 1);
        if (entering) in_metadata_ = false;
        if (!ok) return false;
      }
      skip_ws();
      if (peek() == ',') {
        ++pos_;
        continue;
      }
      if (peek() == '}') {
        ++pos_;
        return true;
      }
      return bad("expected ',' or '}' in an object");
    }
  }
  bool array(int depth) {
    ++pos_;  // '['
    skip_ws();
    if (peek() == ']') {
      ++pos_;
      return true;
    }
    while (true) {
      if (!value(depth + 1)) return false;
      skip_ws();
      if (peek() == ',') {
        ++pos_;
        continue;
      }
      if (peek() == ']') {
        ++pos_;
        return true;
      }
      return bad("expected ',' or ']' in an array");
    }
  }

  const std::string& s_;
  size_t pos_ = 0;
  int flag_ = -1;
  bool in_metadata_ = false;
  std::map<std::string, std::string> metadata_;
  std::string error_;
};

}  // namespace detail

// The "version_compatible" flag of a sidecar's JSON text.
inline Sidecar parse_sidecar(const std::string& text) {
  int flag = -1;
  std::string error;
  detail::JsonReader reader(text);
  if (!reader.read_root(&flag, &error)) return {SidecarStatus::kInvalid, error, {}};
  return {flag == 1 ? SidecarStatus::kVersionCompatible : SidecarStatus::kNotVersionCompatible, "", reader.metadata()};
}

// The sidecar at `path` (usually sidecar_path(engine)); kMissing if there is no such file.
inline Sidecar read_sidecar(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) return {SidecarStatus::kMissing, "", {}};
  std::ostringstream text;
  text << f.rdbuf();
  if (f.bad()) return {SidecarStatus::kInvalid, "read error", {}};
  return parse_sidecar(text.str());
}

}  // namespace convmlp
