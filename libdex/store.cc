#include "dex/store.h"

#include <lmdb.h>
#include <sys/stat.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <filesystem>
#include <mutex>
#include <shared_mutex>
#include <vector>

namespace dex {
namespace {

constexpr const char* kTableNames[] = {
    "meta",  "users",      "plans", "keys",    "key_hashes",  "user_keys",
    "usage", "executions", "queue", "scripts", "idempotency", "expiry"};
constexpr int kTableCount = sizeof(kTableNames) / sizeof(kTableNames[0]);

Status LmdbError(const std::string& context, int rc) {
  if (rc == MDB_MAP_FULL) {
    return Status(Category::kUnavailable, "store_full",
                  context + ": the store is full");
  }
  if (rc == MDB_NOTFOUND) {
    return Status(Category::kNotFound, "not_found", context + ": not found");
  }
  return Status(Category::kInternal, "internal_error",
                context + ": " + mdb_strerror(rc));
}

MDB_val Val(std::string_view s) {
  return MDB_val{s.size(), const_cast<char*>(s.data())};
}

std::string_view View(const MDB_val& v) {
  return std::string_view(static_cast<const char*>(v.mv_data), v.mv_size);
}

// Transactions of any store this thread holds open; see ResizeGate.
thread_local int t_open_txns = 0;

// The longest a thread waits at a closed ResizeGate before going through.
constexpr auto kMaxGateWait = std::chrono::milliseconds(100);

// A shared lock that every transaction holds, taken exclusively while the
// map is resized (LMDB requires that no transaction of the process is
// active then). glibc's rwlock lets new readers in while a writer waits, so
// under a steady stream of reads the resize could wait forever (a test with
// 40 reading threads stalled a growing write for minutes). Here a waiting
// resize closes the gate: threads that hold no transaction wait for it
// before taking the lock. A thread that holds one goes through, since the
// resize is waiting for it to finish.
//
// The wait is bounded (kMaxGateWait), so the gate can delay but never
// deadlock: a thread that holds a transaction and waits for another thread
// that wants to read, or a transaction ended on another thread than the
// one that began it (which skews t_open_txns), costs at most that long.
// Transactions last microseconds, so the resize gets its turn well within
// it.
class ResizeGate {
 public:
  void LockShared() {
    if (resizers_.load(std::memory_order_acquire) > 0 && t_open_txns <= 0) {
      std::unique_lock<std::mutex> lock(gate_mu_);
      gate_open_.wait_for(lock, kMaxGateWait,
                          [this] { return resizers_.load() == 0; });
    }
    mu_.lock_shared();
    ++t_open_txns;
  }
  void UnlockShared() {
    --t_open_txns;
    mu_.unlock_shared();
  }
  // REQUIRES: this thread holds no transaction.
  void LockExclusive() {
    resizers_.fetch_add(1);
    mu_.lock();
  }
  void UnlockExclusive() {
    mu_.unlock();
    if (resizers_.fetch_sub(1) == 1) {
      std::lock_guard<std::mutex> lock(gate_mu_);
      gate_open_.notify_all();
    }
  }

  // Scoped holds.
  class Shared {
   public:
    explicit Shared(ResizeGate& gate) : gate_(gate) { gate_.LockShared(); }
    ~Shared() { gate_.UnlockShared(); }

   private:
    ResizeGate& gate_;
  };
  class Exclusive {
   public:
    explicit Exclusive(ResizeGate& gate) : gate_(gate) {
      gate_.LockExclusive();
    }
    ~Exclusive() { gate_.UnlockExclusive(); }

   private:
    ResizeGate& gate_;
  };

 private:
  std::shared_mutex mu_;
  std::atomic<int> resizers_{0};
  std::mutex gate_mu_;
  std::condition_variable gate_open_;
};

}  // namespace

struct Store::Rep {
  StoreOptions options;
  MDB_env* env = nullptr;
  MDB_dbi dbis[kTableCount] = {};
  // Held shared by every transaction and exclusively while the map is
  // resized.
  ResizeGate resize_gate;
  // Serialises map growth decisions.
  std::mutex grow_mu;

  // Group commit. `commits` counts this process's write commits; a flush
  // that starts when it reads N covers the first N.
  std::atomic<uint64_t> commits{0};
  std::mutex sync_mu;
  std::condition_variable sync_cv;  // a flush ended
  uint64_t synced = 0;              // commits known on disk; sync_mu
  bool syncing = false;             // a flush runs; guarded by sync_mu

  // MDB_NOSYNC: commits are flushed by Sync(), not by LMDB.
  bool lazy_env() const { return !options.durable || options.group_commit; }

  uint64_t reserve_bytes() const {
    if (options.reserve_bytes > 0) return options.reserve_bytes;
    return std::min<uint64_t>(options.max_map_bytes / 8, 64ull << 20);
  }

  Status CheckReserve();

  // Read transactions that ended, kept reset for reuse: renewing one skips
  // LMDB's reader-table lock, which every fresh read transaction takes
  // under MDB_NOTLS. Any thread may renew any of them. They are spread over
  // shards, each thread using the one it is given on first use, so that
  // request threads do not queue on one lock (with one pool and 8 clients,
  // GET /me made about 1.5 futex calls per request, there and at the log's
  // lock).
  static constexpr size_t kIdleShards = 16;
  static constexpr size_t kMaxIdleReadsPerShard = 4;
  struct alignas(64) IdleShard {
    std::mutex mu;
    std::vector<MDB_txn*> txns;  // guarded by mu
  };
  IdleShard idle_shards[kIdleShards];

  static IdleShard& ShardOf(Rep* rep) {
    static std::atomic<size_t> next_thread{0};
    thread_local size_t index = next_thread.fetch_add(1) % kIdleShards;
    return rep->idle_shards[index];
  }

  MDB_txn* TakeIdleRead() {
    IdleShard& shard = ShardOf(this);
    std::lock_guard<std::mutex> lock(shard.mu);
    if (shard.txns.empty()) return nullptr;
    MDB_txn* txn = shard.txns.back();
    shard.txns.pop_back();
    return txn;
  }

  // REQUIRES: txn is a read transaction that was just reset.
  void KeepIdleRead(MDB_txn* txn) {
    IdleShard& shard = ShardOf(this);
    {
      std::lock_guard<std::mutex> lock(shard.mu);
      if (shard.txns.size() < kMaxIdleReadsPerShard) {
        shard.txns.push_back(txn);
        return;
      }
    }
    mdb_txn_abort(txn);
  }

  ~Rep() {
    for (IdleShard& shard : idle_shards) {
      for (MDB_txn* txn : shard.txns) mdb_txn_abort(txn);
    }
    if (!env) return;
    // MDB_NOSYNC leaves the last commits to the kernel: flush them, so a
    // clean close (the admin commands') is durable.
    if (lazy_env() && commits.load() > synced) mdb_env_sync(env, 1);
    mdb_env_close(env);
  }
};

// Free space is what the map can still grow into plus the pages on
// LMDB's free list; the free list is read only when the first is short,
// which is when the store is nearly full.
Status Store::Rep::CheckReserve() {
  MDB_envinfo info;
  MDB_stat stat;
  mdb_env_info(env, &info);
  mdb_env_stat(env, &stat);
  uint64_t page = stat.ms_psize;
  uint64_t used = (static_cast<uint64_t>(info.me_last_pgno) + 1) * page;
  uint64_t ceiling = std::max<uint64_t>(options.max_map_bytes, info.me_mapsize);
  uint64_t unmapped = ceiling > used ? ceiling - used : 0;
  uint64_t need = reserve_bytes();
  if (unmapped >= need) return Status::Ok();
  uint64_t free_pages = 0;
  {
    ResizeGate::Shared hold(resize_gate);
    MDB_txn* txn = nullptr;
    int rc = mdb_txn_begin(env, nullptr, MDB_RDONLY, &txn);
    if (rc != 0) return LmdbError("store: reading the free list", rc);
    MDB_cursor* cursor = nullptr;
    rc = mdb_cursor_open(txn, 0, &cursor);  // dbi 0: LMDB's free list
    MDB_val k, v;
    while (rc == 0 && (rc = mdb_cursor_get(cursor, &k, &v, MDB_NEXT)) == 0) {
      // Each record is a page-number list whose first word is its length.
      if (v.mv_size >= sizeof(size_t)) {
        free_pages += *static_cast<const size_t*>(v.mv_data);
      }
    }
    if (cursor) mdb_cursor_close(cursor);
    mdb_txn_abort(txn);
  }
  if (unmapped + free_pages * page >= need) return Status::Ok();
  return Status(Category::kUnavailable, "store_full",
                "store: the store is full (" + std::to_string(used >> 10) +
                    " KiB used of " + std::to_string(ceiling >> 10) +
                    " KiB; the rest is kept for finishing accepted work)");
}

Store::Store(std::unique_ptr<Rep> rep) : rep_(std::move(rep)) {}
Store::~Store() = default;

Result<std::unique_ptr<Store>> Store::Open(const StoreOptions& options) {
  if (options.path.empty()) {
    return Status::Error(Category::kInvalidArgument, "store: no path given");
  }
  std::error_code ec;
  std::filesystem::create_directories(options.path, ec);
  if (ec) {
    return Status::Error(
        Category::kUnavailable,
        "store: creating " + options.path + ": " + ec.message());
  }
  auto rep = std::make_unique<Rep>();
  rep->options = options;
  rep->options.map_bytes = std::min(options.map_bytes, options.max_map_bytes);
  int rc = mdb_env_create(&rep->env);
  if (rc != 0) return LmdbError("store: mdb_env_create", rc);
  mdb_env_set_maxdbs(rep->env, kTableCount + 4);
  mdb_env_set_maxreaders(rep->env, 512);
  // LMDB takes this size, or the size of the data already stored if that
  // is larger; a larger size set by another process is adopted when a
  // transaction finds the data beyond this map (MDB_MAP_RESIZED).
  mdb_env_set_mapsize(rep->env, rep->options.map_bytes);
  // MDB_NOTLS: read transactions are not tied to threads, so workers and
  // HTTP threads each hold their own without limit of one per thread.
  unsigned flags = MDB_NOTLS | (rep->lazy_env() ? MDB_NOSYNC : 0);
  rc = mdb_env_open(rep->env, options.path.c_str(), flags, 0600);
  if (rc != 0) {
    return LmdbError("store: opening " + options.path, rc);
  }
  MDB_txn* txn = nullptr;
  rc = mdb_txn_begin(rep->env, nullptr, 0, &txn);
  if (rc != 0) return LmdbError("store: first transaction", rc);
  for (int i = 0; i < kTableCount; ++i) {
    rc = mdb_dbi_open(txn, kTableNames[i], MDB_CREATE, &rep->dbis[i]);
    if (rc != 0) {
      mdb_txn_abort(txn);
      return LmdbError(std::string("store: opening table ") + kTableNames[i],
                       rc);
    }
  }
  rc = mdb_txn_commit(txn);
  if (rc != 0) return LmdbError("store: creating tables", rc);
  options.logger->Log(LogLevel::kInfo, "store: opened " + options.path);
  return std::unique_ptr<Store>(new Store(std::move(rep)));
}

Result<Txn> Store::BeginRead() {
  rep_->resize_gate.LockShared();
  MDB_txn* txn = rep_->TakeIdleRead();
  int rc = MDB_BAD_TXN;
  if (txn != nullptr) {
    rc = mdb_txn_renew(txn);
    if (rc != 0) {
      mdb_txn_abort(txn);
      txn = nullptr;
    }
  }
  if (txn == nullptr) rc = mdb_txn_begin(rep_->env, nullptr, MDB_RDONLY, &txn);
  if (rc == MDB_MAP_RESIZED) {
    // Another process grew the map: adopt its size, then begin again.
    rep_->resize_gate.UnlockShared();
    {
      ResizeGate::Exclusive hold(rep_->resize_gate);
      mdb_env_set_mapsize(rep_->env, 0);
    }
    rep_->resize_gate.LockShared();
    rc = mdb_txn_begin(rep_->env, nullptr, MDB_RDONLY, &txn);
  }
  if (rc != 0) {
    rep_->resize_gate.UnlockShared();
    return LmdbError("store: beginning a read", rc);
  }
  return Txn(this, txn, false);
}

Result<Txn> Store::BeginWrite() {
  rep_->resize_gate.LockShared();
  MDB_txn* txn = nullptr;
  int rc = mdb_txn_begin(rep_->env, nullptr, 0, &txn);
  if (rc == MDB_MAP_RESIZED) {
    rep_->resize_gate.UnlockShared();
    {
      ResizeGate::Exclusive hold(rep_->resize_gate);
      mdb_env_set_mapsize(rep_->env, 0);
    }
    rep_->resize_gate.LockShared();
    rc = mdb_txn_begin(rep_->env, nullptr, 0, &txn);
  }
  if (rc != 0) {
    rep_->resize_gate.UnlockShared();
    return LmdbError("store: beginning a write", rc);
  }
  return Txn(this, txn, true);
}

Status Store::Update(const std::function<Status(Txn&)>& fn) {
  return Update(fn, WriteOptions());
}

Status Store::Update(const std::function<Status(Txn&)>& fn,
                     const WriteOptions& write) {
  if (write.keep_reserve) DEX_RETURN_IF_ERROR(rep_->CheckReserve());
  for (int attempt = 0; attempt < 8; ++attempt) {
    Status status;
    {
      auto txn = BeginWrite();
      if (!txn.ok()) return txn.status();
      status = fn(*txn);
      if (status.ok()) status = txn->Commit();
    }
    if (status.ok() && write.sync && rep_->options.durable &&
        rep_->options.group_commit) {
      return Sync();
    }
    if (status.code() != "store_full") return status;
    // Grow by doubling while under the ceiling; the transaction above has
    // aborted, so this thread holds none.
    std::lock_guard<std::mutex> grow(rep_->grow_mu);
    ResizeGate::Exclusive hold(rep_->resize_gate);
    MDB_envinfo info;
    mdb_env_info(rep_->env, &info);
    uint64_t current = info.me_mapsize;
    if (current >= rep_->options.max_map_bytes) return status;
    uint64_t next =
        std::min<uint64_t>(current * 2, rep_->options.max_map_bytes);
    int rc = mdb_env_set_mapsize(rep_->env, next);
    if (rc != 0) return LmdbError("store: growing the map", rc);
    rep_->options.logger->Log(
        LogLevel::kInfo,
        "store: map grown to " + std::to_string(next >> 20) + " MiB");
  }
  return Status(Category::kUnavailable, "store_full",
                "store: the store is full");
}

uint64_t Store::map_bytes() const {
  MDB_envinfo info;
  mdb_env_info(rep_->env, &info);
  return info.me_mapsize;
}

bool Store::durable() const { return rep_->options.durable; }

Status Store::Sync() {
  Rep& r = *rep_;
  // Without MDB_NOSYNC, LMDB flushed every commit itself.
  if (!r.lazy_env()) return Status::Ok();
  uint64_t target = r.commits.load();
  std::unique_lock<std::mutex> lock(r.sync_mu);
  while (r.synced < target) {
    if (r.syncing) {
      r.sync_cv.wait(lock);
      continue;
    }
    // This caller flushes for everyone who committed before this point;
    // callers arriving meanwhile wait for the next flush.
    r.syncing = true;
    uint64_t covered = r.commits.load();
    lock.unlock();
    int rc = mdb_env_sync(r.env, 1);
    lock.lock();
    r.syncing = false;
    if (rc == 0) r.synced = std::max(r.synced, covered);
    r.sync_cv.notify_all();
    if (rc != 0) return LmdbError("store: flushing to disk", rc);
  }
  return Status::Ok();
}

Txn::Txn(Store* store, void* txn, bool writable)
    : store_(store), txn_(txn), writable_(writable) {}

Txn::Txn(Txn&& other) noexcept
    : store_(other.store_), txn_(other.txn_), writable_(other.writable_) {
  other.txn_ = nullptr;
}

Txn& Txn::operator=(Txn&& other) noexcept {
  if (this != &other) {
    Abort();
    store_ = other.store_;
    txn_ = other.txn_;
    writable_ = other.writable_;
    other.txn_ = nullptr;
  }
  return *this;
}

Txn::~Txn() { Abort(); }

void Txn::Abort() {
  if (!txn_) return;
  auto* txn = static_cast<MDB_txn*>(txn_);
  if (writable_) {
    mdb_txn_abort(txn);
  } else {
    mdb_txn_reset(txn);
    store_->rep_->KeepIdleRead(txn);
  }
  txn_ = nullptr;
  store_->rep_->resize_gate.UnlockShared();
}

Status Txn::Get(Table table, std::string_view key, std::string* value) {
  std::string_view found;
  DEX_RETURN_IF_ERROR(Get(table, key, &found));
  value->assign(found);
  return Status::Ok();
}

Status Txn::Get(Table table, std::string_view key, std::string_view* value) {
  MDB_val k = Val(key), v;
  int rc = mdb_get(static_cast<MDB_txn*>(txn_),
                   store_->rep_->dbis[static_cast<int>(table)], &k, &v);
  if (rc != 0) return LmdbError("store: get", rc);
  *value = View(v);
  return Status::Ok();
}

Status Txn::Put(Table table, std::string_view key, std::string_view value) {
  MDB_val k = Val(key), v = Val(value);
  int rc = mdb_put(static_cast<MDB_txn*>(txn_),
                   store_->rep_->dbis[static_cast<int>(table)], &k, &v, 0);
  if (rc != 0) return LmdbError("store: put", rc);
  return Status::Ok();
}

Status Txn::Delete(Table table, std::string_view key) {
  MDB_val k = Val(key);
  int rc = mdb_del(static_cast<MDB_txn*>(txn_),
                   store_->rep_->dbis[static_cast<int>(table)], &k, nullptr);
  if (rc != 0 && rc != MDB_NOTFOUND) return LmdbError("store: delete", rc);
  return Status::Ok();
}

Status Txn::Scan(
    Table table, std::string_view prefix,
    const std::function<bool(std::string_view, std::string_view)>& fn) {
  MDB_cursor* cursor = nullptr;
  int rc =
      mdb_cursor_open(static_cast<MDB_txn*>(txn_),
                      store_->rep_->dbis[static_cast<int>(table)], &cursor);
  if (rc != 0) return LmdbError("store: opening a cursor", rc);
  MDB_val k = Val(prefix), v;
  rc = mdb_cursor_get(cursor, &k, &v,
                      prefix.empty() ? MDB_FIRST : MDB_SET_RANGE);
  while (rc == 0) {
    std::string_view key = View(k);
    if (key.substr(0, prefix.size()) != prefix) break;
    if (!fn(key, View(v))) break;
    rc = mdb_cursor_get(cursor, &k, &v, MDB_NEXT);
  }
  mdb_cursor_close(cursor);
  if (rc != 0 && rc != MDB_NOTFOUND) return LmdbError("store: scan", rc);
  return Status::Ok();
}

Result<uint64_t> Txn::Count(Table table) {
  MDB_stat stat;
  int rc = mdb_stat(static_cast<MDB_txn*>(txn_),
                    store_->rep_->dbis[static_cast<int>(table)], &stat);
  if (rc != 0) return LmdbError("store: stat", rc);
  return static_cast<uint64_t>(stat.ms_entries);
}

Status Txn::Commit() {
  if (!txn_) return Status::Error(Category::kInternal, "store: no transaction");
  int rc = mdb_txn_commit(static_cast<MDB_txn*>(txn_));
  txn_ = nullptr;
  store_->rep_->resize_gate.UnlockShared();
  if (rc != 0) return LmdbError("store: commit", rc);
  if (writable_) store_->rep_->commits.fetch_add(1);
  return Status::Ok();
}

}  // namespace dex
