#include "dex/keys.h"

#include <openssl/evp.h>
#include <openssl/rand.h>
#include <openssl/sha.h>

#include <algorithm>
#include <array>
#include <memory>
#include <utility>

#include "libdex/records.h"

namespace dex {
namespace {

constexpr std::string_view kPrefix = "dex_live_";
constexpr size_t kRandomChars = 43;  // 43 * log2(62) ~ 256 bits
constexpr size_t kCheckChars = 6;    // 62^6 > 2^32
constexpr size_t kKeyLength = kPrefix.size() + kRandomChars + kCheckChars;
constexpr char kBase62[] =
    "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

void KernelRandom(unsigned char* out, size_t n) {
  // RAND_bytes draws from OpenSSL's DRBG, seeded by the kernel's CSPRNG.
  if (RAND_bytes(out, static_cast<int>(n)) != 1) abort();
}

// Uniform base62 characters by rejection: bytes >= 248 (4 * 62) are
// dropped so that every character is equally likely.
std::string RandomBase62(size_t count,
                         void (*random_bytes)(unsigned char*, size_t)) {
  std::string out;
  out.reserve(count);
  unsigned char buf[64];
  while (out.size() < count) {
    random_bytes(buf, sizeof buf);
    for (unsigned char b : buf) {
      if (b >= 248) continue;
      out.push_back(kBase62[b % 62]);
      if (out.size() == count) break;
    }
  }
  return out;
}

uint32_t Crc32(std::string_view data) {
  static const std::array<uint32_t, 256> table = [] {
    std::array<uint32_t, 256> t{};
    for (uint32_t i = 0; i < 256; ++i) {
      uint32_t c = i;
      for (int k = 0; k < 8; ++k) c = (c & 1) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
      t[i] = c;
    }
    return t;
  }();
  uint32_t crc = 0xFFFFFFFFu;
  for (unsigned char ch : data) crc = table[(crc ^ ch) & 0xFF] ^ (crc >> 8);
  return crc ^ 0xFFFFFFFFu;
}

std::string Checksum(std::string_view body) {
  uint64_t value = Crc32(body);
  std::string out(kCheckChars, '0');
  for (size_t i = kCheckChars; i-- > 0;) {
    out[i] = kBase62[value % 62];
    value /= 62;
  }
  return out;
}

std::string Sha256Hex(std::string_view data) {
  // Fetched once: SHA256() looks the algorithm up again on every call,
  // which cost as much as hashing a key. Each thread keeps one context:
  // making and freeing one per call (as EVP_Digest does) cost as much
  // again.
  static EVP_MD* const kSha256 = EVP_MD_fetch(nullptr, "SHA256", nullptr);
  struct CtxFree {
    void operator()(EVP_MD_CTX* ctx) const { EVP_MD_CTX_free(ctx); }
  };
  thread_local std::unique_ptr<EVP_MD_CTX, CtxFree> ctx(EVP_MD_CTX_new());
  unsigned char digest[SHA256_DIGEST_LENGTH];
  if (kSha256 == nullptr || ctx == nullptr ||
      EVP_DigestInit_ex2(ctx.get(), kSha256, nullptr) != 1 ||
      EVP_DigestUpdate(ctx.get(), data.data(), data.size()) != 1 ||
      EVP_DigestFinal_ex(ctx.get(), digest, nullptr) != 1) {
    SHA256(reinterpret_cast<const unsigned char*>(data.data()), data.size(),
           digest);
  }
  static const char kHex[] = "0123456789abcdef";
  std::string out(2 * SHA256_DIGEST_LENGTH, '\0');
  for (size_t i = 0; i < SHA256_DIGEST_LENGTH; ++i) {
    out[2 * i] = kHex[digest[i] >> 4];
    out[2 * i + 1] = kHex[digest[i] & 15];
  }
  return out;
}

bool IsBase62(char c) {
  return (c >= '0' && c <= '9') || (c >= 'A' && c <= 'Z') ||
         (c >= 'a' && c <= 'z');
}

Status InvalidToken(const std::string& why) {
  return Status(Category::kUnauthenticated, "invalid_token",
                "authenticating: " + why);
}

Result<internal::KeyRecord> LoadKey(Txn& txn, std::string_view key_id) {
  std::string_view bytes;
  DEX_RETURN_IF_ERROR(txn.Get(Table::kKeys, key_id, &bytes));
  internal::KeyRecord record;
  DEX_RETURN_IF_ERROR(internal::DecodeKey(bytes, &record));
  return record;
}

}  // namespace

std::string RandomId(std::string_view prefix) {
  return std::string(prefix) + RandomBase62(24, KernelRandom);
}

Keys::Keys(Store* store, const KeysOptions& options)
    : store_(store), options_(options) {
  if (!options_.random_bytes) options_.random_bytes = KernelRandom;
}

std::string Keys::NewId(std::string_view prefix) {
  return std::string(prefix) + RandomBase62(24, options_.random_bytes);
}

Status Keys::CheckFormat(std::string_view raw_key) {
  if (raw_key.substr(0, kPrefix.size()) != kPrefix) {
    return InvalidToken("the key does not start with dex_live_");
  }
  if (raw_key.size() != kKeyLength) {
    return InvalidToken("the key has the wrong length");
  }
  std::string_view rest = raw_key.substr(kPrefix.size());
  if (!std::all_of(rest.begin(), rest.end(), IsBase62)) {
    return InvalidToken("the key has characters outside base62");
  }
  std::string_view body = raw_key.substr(0, kKeyLength - kCheckChars);
  if (Checksum(body) != raw_key.substr(kKeyLength - kCheckChars)) {
    return InvalidToken("the key's checksum does not match");
  }
  return Status::Ok();
}

Result<std::string> Keys::NormalizeName(std::string_view name) {
  auto is_space = [](char c) {
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' ||
           c == '\v';
  };
  while (!name.empty() && is_space(name.front())) name.remove_prefix(1);
  while (!name.empty() && is_space(name.back())) name.remove_suffix(1);
  size_t code_points = 0;
  for (unsigned char c : name) {
    if ((c & 0xC0) != 0x80) ++code_points;
    if (c < 0x20 || c == 0x7F) {
      return Status::Error(Category::kInvalidArgument,
                           "name: control characters are not allowed");
    }
  }
  if (code_points == 0 || code_points > 100) {
    return Status::Error(
        Category::kInvalidArgument,
        "name: must be 1 to 100 characters after trimming, got " +
            std::to_string(code_points));
  }
  return std::string(name);
}

Result<MintedKey> Keys::Mint(const std::string& user_id,
                             std::string_view name) {
  Result<MintedKey> minted = Status::Error(Category::kInternal, "not run");
  Status status = store_->Update([&](Txn& txn) {
    minted = Mint(txn, user_id, name);
    return minted.status();
  });
  if (!status.ok()) return status;
  return minted;
}

Result<MintedKey> Keys::Mint(Txn& txn, const std::string& user_id,
                             std::string_view name) {
  auto normalized = NormalizeName(name);
  if (!normalized.ok()) return normalized.status();
  std::string body =
      std::string(kPrefix) + RandomBase62(kRandomChars, options_.random_bytes);
  MintedKey minted;
  minted.raw_key = body + Checksum(body);
  internal::KeyRecord record;
  record.info.id = NewId("key_");
  record.info.user_id = user_id;
  record.info.name = *normalized;
  record.info.hint = std::string(kPrefix) + "\u2026" +
                     minted.raw_key.substr(minted.raw_key.size() - 4);
  record.info.active = true;
  record.info.created_ms = options_.clock->NowMs();
  record.hash_hex = Sha256Hex(minted.raw_key);
  DEX_RETURN_IF_ERROR(
      txn.Put(Table::kKeys, record.info.id, internal::EncodeKey(record)));
  DEX_RETURN_IF_ERROR(
      txn.Put(Table::kKeyHashes, record.hash_hex, record.info.id));
  DEX_RETURN_IF_ERROR(
      txn.Put(Table::kUserKeys, user_id + "/" + record.info.id, ""));
  minted.info = record.info;
  return minted;
}

Result<KeyInfo> Keys::Verify(std::string_view raw_key) {
  DEX_RETURN_IF_ERROR(CheckFormat(raw_key));
  std::string hash = Sha256Hex(raw_key);
  internal::KeyRecord record;
  {
    auto txn = store_->BeginRead();
    if (!txn.ok()) return txn.status();
    std::string_view key_id;
    Status s = txn->Get(Table::kKeyHashes, hash, &key_id);
    if (s.category() == Category::kNotFound) {
      return InvalidToken("unknown key");
    }
    DEX_RETURN_IF_ERROR(s);
    auto loaded = LoadKey(*txn, key_id);
    if (!loaded.ok()) return loaded.status();
    record = std::move(*loaded);
  }
  if (!record.info.active) {
    return Status(Category::kUnauthenticated, "key_disabled",
                  "authenticating: the key " + record.info.id + " is disabled");
  }
  int64_t now = options_.clock->NowMs();
  if (record.info.last_used_ms &&
      now - *record.info.last_used_ms < options_.last_used_granularity_ms) {
    return std::move(record.info);
  }
  // Coalesced: at most one write per key per granularity period. A failed
  // touch is not worth failing the request for.
  Status touched = store_->Update([&](Txn& txn) {
    auto fresh = LoadKey(txn, record.info.id);
    if (!fresh.ok()) return fresh.status();
    fresh->info.last_used_ms = now;
    record = *fresh;
    return txn.Put(Table::kKeys, record.info.id, internal::EncodeKey(*fresh));
  });
  (void)touched;
  return record.info;
}

Result<std::vector<KeyInfo>> Keys::List(const std::string& user_id) {
  auto txn = store_->BeginRead();
  if (!txn.ok()) return txn.status();
  std::vector<std::string> ids;
  DEX_RETURN_IF_ERROR(txn->Scan(Table::kUserKeys, user_id + "/",
                                [&](std::string_view key, std::string_view) {
                                  ids.emplace_back(
                                      key.substr(user_id.size() + 1));
                                  return true;
                                }));
  std::vector<KeyInfo> keys;
  for (const auto& id : ids) {
    auto record = LoadKey(*txn, id);
    if (!record.ok()) return record.status();
    keys.push_back(record->info);
  }
  std::sort(keys.begin(), keys.end(), [](const KeyInfo& a, const KeyInfo& b) {
    if (a.created_ms != b.created_ms) return a.created_ms > b.created_ms;
    return a.id > b.id;
  });
  return keys;
}

Result<KeyInfo> Keys::Disable(const std::string& user_id,
                              const std::string& key_id) {
  KeyInfo result;
  Status status = store_->Update([&](Txn& txn) -> Status {
    auto record = LoadKey(txn, key_id);
    if (!record.ok() || record->info.user_id != user_id) {
      return Status(Category::kNotFound, "not_found",
                    "disabling a key: no key " + key_id);
    }
    if (!record->info.active) {
      result = record->info;
      return Status::Ok();
    }
    int active_others = 0;
    Status scan = txn.Scan(Table::kUserKeys, user_id + "/",
                           [&](std::string_view key, std::string_view) {
                             std::string other(key.substr(user_id.size() + 1));
                             if (other == key_id) return true;
                             auto r = LoadKey(txn, other);
                             if (r.ok() && r->info.active) ++active_others;
                             return active_others == 0;
                           });
    DEX_RETURN_IF_ERROR(scan);
    if (active_others == 0) {
      return Status(Category::kFailedPrecondition, "last_active_key",
                    "disabling a key: " + key_id +
                        " is the last active key; create another first");
    }
    record->info.active = false;
    record->info.disabled_ms = options_.clock->NowMs();
    result = record->info;
    return txn.Put(Table::kKeys, key_id, internal::EncodeKey(*record));
  });
  if (!status.ok()) return status;
  return result;
}

}  // namespace dex
