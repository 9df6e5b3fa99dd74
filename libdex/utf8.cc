// UTF-8 helpers for run output. The rules are the Unicode ones Python's
// decoder follows: a sequence is cut at the first byte that cannot continue
// it, and each such maximal invalid subsequence becomes one U+FFFD.
#include <cstdint>
#include <string>
#include <string_view>

#include "dex/sandbox.h"

namespace dex {
namespace {

constexpr std::string_view kReplacement = "\xEF\xBF\xBD";

// Length of the sequence `lead` starts, 0 if it can start none.
int SequenceLength(uint8_t lead) {
  if (lead < 0x80) return 1;
  if (lead >= 0xC2 && lead <= 0xDF) return 2;
  if (lead >= 0xE0 && lead <= 0xEF) return 3;
  if (lead >= 0xF0 && lead <= 0xF4) return 4;
  return 0;
}

// Whether `byte` may follow `lead` as the sequence's second byte; the
// narrower ranges exclude overlongs, surrogates and code points > U+10FFFF.
bool ValidSecond(uint8_t lead, uint8_t byte) {
  switch (lead) {
    case 0xE0:
      return byte >= 0xA0 && byte <= 0xBF;
    case 0xED:
      return byte >= 0x80 && byte <= 0x9F;
    case 0xF0:
      return byte >= 0x90 && byte <= 0xBF;
    case 0xF4:
      return byte >= 0x80 && byte <= 0x8F;
    default:
      return byte >= 0x80 && byte <= 0xBF;
  }
}

// How many bytes at `bytes[pos]` form a valid prefix of one character
// (complete or cut off by the end), and whether it is complete.
size_t ValidPrefix(std::string_view bytes, size_t pos, bool* complete) {
  uint8_t lead = static_cast<uint8_t>(bytes[pos]);
  int length = SequenceLength(lead);
  *complete = false;
  if (length == 0) return 0;
  size_t taken = 1;
  while (taken < static_cast<size_t>(length) && pos + taken < bytes.size()) {
    uint8_t next = static_cast<uint8_t>(bytes[pos + taken]);
    bool ok = taken == 1 ? ValidSecond(lead, next) : (next & 0xC0) == 0x80;
    if (!ok) return taken;
    ++taken;
  }
  *complete = taken == static_cast<size_t>(length);
  return taken;
}

}  // namespace

bool TruncateUtf8(std::string* bytes, size_t cap) {
  bool cut = false;
  if (bytes->size() > cap) {
    bytes->resize(cap);
    cut = true;
  }
  // A character starts at most 3 bytes before the end; drop it if the end
  // cut it short. Invalid bytes are kept: SanitizeUtf8 replaces them.
  size_t size = bytes->size();
  size_t first = size >= 3 ? size - 3 : 0;
  for (size_t pos = first; pos < size; ++pos) {
    bool complete;
    size_t taken = ValidPrefix(*bytes, pos, &complete);
    if (!complete && taken > 0 && pos + taken == size) {
      bytes->resize(pos);
      return true;
    }
  }
  return cut;
}

std::string SanitizeUtf8(std::string_view bytes) {
  std::string out;
  out.reserve(bytes.size());
  size_t pos = 0;
  while (pos < bytes.size()) {
    bool complete;
    size_t taken = ValidPrefix(bytes, pos, &complete);
    if (complete) {
      out.append(bytes.substr(pos, taken));
      pos += taken;
    } else {
      out.append(kReplacement);
      pos += taken > 0 ? taken : 1;
    }
  }
  return out;
}

}  // namespace dex
