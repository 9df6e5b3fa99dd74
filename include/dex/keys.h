// Keys: minting, hashing, lookup, listing and disabling API keys.
//
// A key is "dex_live_" + 43 base62 random characters + 6 base62 characters
// of CRC32 over everything before them. Only SHA-256 of the whole key is
// stored. Knows nothing of sandboxes or quota.
#ifndef DEX_KEYS_H_
#define DEX_KEYS_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "dex/env.h"
#include "dex/export.h"
#include "dex/status.h"
#include "dex/store.h"

namespace dex {

struct KeyInfo {
  std::string id;  // "key_" + random characters
  std::string user_id;
  std::string name;    // 1-100 characters after trimming
  std::string hint;    // "dex_live_…" + last 4 characters
  bool active = true;  // false once disabled
  int64_t created_ms = 0;
  std::optional<int64_t> last_used_ms;  // approximate, see KeysOptions
  std::optional<int64_t> disabled_ms;
};

struct MintedKey {
  KeyInfo info;
  std::string raw_key;  // shown once; never stored
};

struct KeysOptions {
  Clock* clock = SystemClock();
  // last_used_at is written at most once per this many ms per key, so most
  // verifications need no write transaction. Default one minute.
  int64_t last_used_granularity_ms = 60'000;
  // Source of key and id randomness; empty means the kernel's CSPRNG via
  // OpenSSL. A test seam: fills `out` with `n` random bytes.
  void (*random_bytes)(unsigned char* out, size_t n) = nullptr;
};

// Safe to share between threads.
class DEX_EXPORT Keys {
 public:
  // `store` is borrowed and must outlive the Keys.
  Keys(Store* store, const KeysOptions& options);

  // Checks the prefix, length, alphabet and checksum without any lookup.
  // kUnauthenticated "invalid_token" when malformed.
  static Status CheckFormat(std::string_view raw_key);
  // Trims and validates a key name: kInvalidArgument when empty or longer
  // than 100 characters (code points) after trimming.
  static Result<std::string> NormalizeName(std::string_view name);

  // A new active key for the user. The caller makes sure the user exists.
  Result<MintedKey> Mint(const std::string& user_id, std::string_view name);
  // The same, inside the caller's write transaction.
  Result<MintedKey> Mint(Txn& txn, const std::string& user_id,
                         std::string_view name);
  // The key's record: kUnauthenticated "invalid_token" when malformed or
  // unknown, "key_disabled" when disabled. Touches last_used_at.
  Result<KeyInfo> Verify(std::string_view raw_key);
  // The user's keys, newest first.
  Result<std::vector<KeyInfo>> List(const std::string& user_id);
  // Disables one of the user's keys (idempotent). kNotFound for a key of
  // another user; kFailedPrecondition "last_active_key" when it is the
  // user's last active key.
  Result<KeyInfo> Disable(const std::string& user_id,
                          const std::string& key_id);

  // A random identifier: prefix + 24 base62 characters.
  std::string NewId(std::string_view prefix);

 private:
  Store* store_;  // borrowed
  KeysOptions options_;
};

// A random identifier from the kernel's CSPRNG: prefix + 24 base62 chars.
DEX_EXPORT std::string RandomId(std::string_view prefix);

}  // namespace dex

#endif  // DEX_KEYS_H_
