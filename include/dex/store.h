// Store: one LMDB environment with named tables and RAII transactions.
//
// Knows nothing of HTTP or JSON: keys and values are bytes. Several
// processes may open the same directory at once (the admin command line
// works while the server runs); LMDB serialises writers across them.
#ifndef DEX_STORE_H_
#define DEX_STORE_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>

#include "dex/env.h"
#include "dex/export.h"
#include "dex/status.h"

namespace dex {

// The named sub-databases. Their meaning belongs to the layer that uses
// them; the store only keeps bytes.
enum class Table {
  kMeta,         // schema version and similar
  kUsers,        // user_id -> user record
  kPlans,        // plan name -> plan record
  kKeys,         // key_id -> key record
  kKeyHashes,    // sha256(raw key) -> key_id
  kUserKeys,     // user_id '/' key_id -> ""
  kUsage,        // user_id '/' YYYY-MM -> decimal count
  kExecutions,   // exec_id -> execution record
  kQueue,        // zero-padded sequence -> exec_id (queued work, in order)
  kScripts,      // exec_id -> script and stdin of a run not yet finished
  kIdempotency,  // user_id '/' idempotency key -> record
  kExpiry,       // zero-padded finish time '/' exec_id -> "" (retention)
};

struct StoreOptions {
  // Folder of the LMDB environment; created if missing. No default.
  std::string path;
  // Initial map size in bytes. The store grows the map by doubling when a
  // write finds it full, up to max_map_bytes; past that, writes answer
  // kUnavailable "store_full" and reads keep working. Default 64 MiB.
  uint64_t map_bytes = 64ull << 20;
  // Upper bound for map growth. Default 16 GiB.
  uint64_t max_map_bytes = 16ull << 30;
  // When true, every commit is flushed to disk before Commit() returns
  // (MDB default). When false (MDB_NOMETASYNC), a crash of the machine,
  // never of the process, may lose the last commits. Default true.
  bool durable = true;
  Logger* logger = NullLogger();
};

class Store;

// A transaction. Move-only; an uncommitted transaction aborts when
// destroyed. Not safe to share between threads; at most one write
// transaction exists at a time per process (others block in Begin).
class DEX_EXPORT Txn {
 public:
  Txn(Txn&& other) noexcept;
  Txn& operator=(Txn&& other) noexcept;
  Txn(const Txn&) = delete;
  Txn& operator=(const Txn&) = delete;
  ~Txn();

  // kNotFound (code "not_found") when the key is absent.
  Status Get(Table table, std::string_view key, std::string* value);
  // REQUIRES: a write transaction.
  Status Put(Table table, std::string_view key, std::string_view value);
  // Deleting an absent key is ok.
  Status Delete(Table table, std::string_view key);
  // Calls fn(key, value) for keys starting with prefix, in key order,
  // while fn returns true.
  Status Scan(Table table, std::string_view prefix,
              const std::function<bool(std::string_view key,
                                       std::string_view value)>& fn);
  // Number of entries in the table.
  Result<uint64_t> Count(Table table);
  Status Commit();
  bool writable() const { return writable_; }

 private:
  friend class Store;
  Txn(Store* store, void* txn, bool writable);
  void Abort();

  Store* store_ = nullptr;  // borrowed; outlives the transaction
  void* txn_ = nullptr;     // MDB_txn*
  bool writable_ = false;
};

// Safe to share between threads.
class DEX_EXPORT Store {
 public:
  static Result<std::unique_ptr<Store>> Open(const StoreOptions& options);
  ~Store();
  Store(const Store&) = delete;
  Store& operator=(const Store&) = delete;

  Result<Txn> BeginRead();
  Result<Txn> BeginWrite();

  // Runs fn in a write transaction and commits it. When the map is full,
  // grows it and runs fn again (fn must be repeatable), or answers
  // kUnavailable "store_full" at max_map_bytes.
  Status Update(const std::function<Status(Txn&)>& fn);

  // Current map size in bytes.
  uint64_t map_bytes() const;
  // Flushes buffers to disk (useful when durable is false).
  Status Sync();

 private:
  friend class Txn;
  struct Rep;
  explicit Store(std::unique_ptr<Rep> rep);
  std::unique_ptr<Rep> rep_;
};

}  // namespace dex

#endif  // DEX_STORE_H_
