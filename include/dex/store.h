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
  // Free space, in bytes, that writes made with WriteOptions::keep_reserve
  // (new work: submissions) leave untouched once the map is at its
  // ceiling, so that finishing work already accepted (results, refunds,
  // deleting scripts) always finds room. 0 means max_map_bytes / 8, at
  // most 64 MiB. A larger reserve turns new work away earlier.
  uint64_t reserve_bytes = 0;
  // Whether Update() waits for its commit to reach the disk. A crash of
  // the process never loses a commit either way (committed pages are in
  // the kernel's page cache); this is about crashes of the machine.
  // When false, nothing is flushed except by Sync() and closing: a
  // machine crash loses the last commits and, should the file system
  // reorder writes, may damage the store. Default true.
  bool durable = true;
  // How durable commits are flushed. When true (the default), the
  // environment is opened with MDB_NOSYNC and Update() commits, then waits
  // at a shared barrier (Sync()) until a flush that began after its commit
  // has finished: concurrent writers share one fdatasync instead of
  // queueing behind each other's, and writes made with WriteOptions::sync
  // false cost no flush at all. When false, LMDB flushes every commit
  // itself (data, then meta: two fdatasyncs per commit, each paid while
  // holding the single write lock). On the project's VM (fdatasync about
  // 2 ms median), group commit took 200 sequential POST /run from 2.3-2.6
  // to 1.3-1.4 ms mean (docs/readme-durability.md).
  // Ignored when durable is false.
  bool group_commit = true;
  Logger* logger = NullLogger();
};

// Per-call options of Store::Update.
struct WriteOptions {
  // Wait until the commit is on disk before returning (when the store is
  // durable). False for writes whose loss in a machine crash is repaired
  // on the next start (a finished run's result comes back as an
  // interrupted, refunded run). Default true.
  bool sync = true;
  // Refuse with kUnavailable "store_full" when the map is at its ceiling
  // and less than StoreOptions::reserve_bytes of it is free. For new work
  // only. Default false.
  bool keep_reserve = false;
};

class Store;

// A transaction. Move-only; an uncommitted transaction aborts when
// destroyed. Not safe to share between threads, and best ended on the
// thread that began it; at most one write transaction exists at a time per
// process (others block in Begin). While the map grows, a thread that
// holds no transaction may wait up to 100 ms in Begin.
class DEX_EXPORT Txn {
 public:
  Txn(Txn&& other) noexcept;
  Txn& operator=(Txn&& other) noexcept;
  Txn(const Txn&) = delete;
  Txn& operator=(const Txn&) = delete;
  ~Txn();

  // kNotFound (code "not_found") when the key is absent.
  Status Get(Table table, std::string_view key, std::string* value);
  // The same without a copy: *value points into the store's map and stays
  // valid until this transaction writes or ends.
  Status Get(Table table, std::string_view key, std::string_view* value);
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

  // Runs fn in a write transaction and commits it; when the store is
  // durable, returns only once the commit is on disk. When the map is
  // full, grows it and runs fn again (fn must be repeatable), or answers
  // kUnavailable "store_full" at max_map_bytes.
  Status Update(const std::function<Status(Txn&)>& fn);
  Status Update(const std::function<Status(Txn&)>& fn,
                const WriteOptions& write);

  // Current map size in bytes.
  uint64_t map_bytes() const;
  // True when Update() waits for the disk (StoreOptions::durable).
  bool durable() const;
  // Returns once every commit this process made before the call is on
  // disk. Concurrent callers share one flush (group commit): a caller
  // waits for a flush that began after its call, and one caller at a
  // time runs it. Returns at once when there is nothing new to flush.
  Status Sync();

 private:
  friend class Txn;
  struct Rep;
  explicit Store(std::unique_ptr<Rep> rep);
  std::unique_ptr<Rep> rep_;
};

}  // namespace dex

#endif  // DEX_STORE_H_
