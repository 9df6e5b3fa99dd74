// Encoding of the library's records as the bytes the Store keeps. Internal.
#ifndef DEX_LIBDEX_RECORDS_H_
#define DEX_LIBDEX_RECORDS_H_

#include <string>
#include <string_view>

#include "dex/executor.h"
#include "dex/keys.h"
#include "dex/quota.h"
#include "dex/status.h"

namespace dex::internal {

// The stored form of a key: its public info and the hash it is found by.
struct KeyRecord {
  KeyInfo info;
  std::string hash_hex;
};

// A script and its stdin, kept until the run ends.
struct ScriptRecord {
  std::string script;
  bool has_stdin = false;
  std::string stdin_data;
};

struct IdempotencyRecord {
  std::string execution_id;
  std::string fingerprint;
  int64_t created_ms = 0;
};

std::string EncodeUser(const User& user);
Status DecodeUser(std::string_view bytes, User* user);
std::string EncodePlan(const Plan& plan);
Status DecodePlan(std::string_view bytes, Plan* plan);
std::string EncodeKey(const KeyRecord& key);
Status DecodeKey(std::string_view bytes, KeyRecord* key);
std::string EncodeExecution(const Execution& execution);
Status DecodeExecution(std::string_view bytes, Execution* execution);
std::string EncodeScript(const ScriptRecord& script);
Status DecodeScript(std::string_view bytes, ScriptRecord* script);
std::string EncodeIdempotency(const IdempotencyRecord& record);
Status DecodeIdempotency(std::string_view bytes, IdempotencyRecord* record);

// Zero-padded decimal, so that keys sort by number.
std::string PadNumber(uint64_t n);

}  // namespace dex::internal

#endif  // DEX_LIBDEX_RECORDS_H_
