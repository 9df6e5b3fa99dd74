#include "dex/store.h"

#include <lmdb.h>
#include <sys/stat.h>

#include <atomic>
#include <cerrno>
#include <filesystem>
#include <mutex>
#include <shared_mutex>

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

}  // namespace

struct Store::Rep {
  StoreOptions options;
  MDB_env* env = nullptr;
  MDB_dbi dbis[kTableCount] = {};
  // Held shared by every transaction and exclusively while the map is
  // resized: LMDB requires that no transaction of this process is active
  // then.
  std::shared_mutex resize_mu;
  // Serialises map growth decisions.
  std::mutex grow_mu;

  ~Rep() {
    if (env) mdb_env_close(env);
  }
};

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
  int rc = mdb_env_create(&rep->env);
  if (rc != 0) return LmdbError("store: mdb_env_create", rc);
  mdb_env_set_maxdbs(rep->env, kTableCount + 4);
  mdb_env_set_maxreaders(rep->env, 512);
  // The map may already be larger (another process grew it); LMDB adopts
  // the larger of the two.
  mdb_env_set_mapsize(rep->env, options.map_bytes);
  // MDB_NOTLS: read transactions are not tied to threads, so workers and
  // HTTP threads each hold their own without limit of one per thread.
  unsigned flags = MDB_NOTLS | (options.durable ? 0 : MDB_NOMETASYNC);
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
  rep_->resize_mu.lock_shared();
  MDB_txn* txn = nullptr;
  int rc = mdb_txn_begin(rep_->env, nullptr, MDB_RDONLY, &txn);
  if (rc == MDB_MAP_RESIZED) {
    // Another process grew the map: adopt its size, then begin again.
    rep_->resize_mu.unlock_shared();
    {
      std::unique_lock<std::shared_mutex> lock(rep_->resize_mu);
      mdb_env_set_mapsize(rep_->env, 0);
    }
    rep_->resize_mu.lock_shared();
    rc = mdb_txn_begin(rep_->env, nullptr, MDB_RDONLY, &txn);
  }
  if (rc != 0) {
    rep_->resize_mu.unlock_shared();
    return LmdbError("store: beginning a read", rc);
  }
  return Txn(this, txn, false);
}

Result<Txn> Store::BeginWrite() {
  rep_->resize_mu.lock_shared();
  MDB_txn* txn = nullptr;
  int rc = mdb_txn_begin(rep_->env, nullptr, 0, &txn);
  if (rc == MDB_MAP_RESIZED) {
    rep_->resize_mu.unlock_shared();
    {
      std::unique_lock<std::shared_mutex> lock(rep_->resize_mu);
      mdb_env_set_mapsize(rep_->env, 0);
    }
    rep_->resize_mu.lock_shared();
    rc = mdb_txn_begin(rep_->env, nullptr, 0, &txn);
  }
  if (rc != 0) {
    rep_->resize_mu.unlock_shared();
    return LmdbError("store: beginning a write", rc);
  }
  return Txn(this, txn, true);
}

Status Store::Update(const std::function<Status(Txn&)>& fn) {
  for (int attempt = 0; attempt < 8; ++attempt) {
    Status status;
    {
      auto txn = BeginWrite();
      if (!txn.ok()) return txn.status();
      status = fn(*txn);
      if (status.ok()) status = txn->Commit();
    }
    if (status.code() != "store_full") return status;
    // Grow by doubling while under the ceiling; the transaction above has
    // aborted, so this thread holds none.
    std::lock_guard<std::mutex> grow(rep_->grow_mu);
    std::unique_lock<std::shared_mutex> lock(rep_->resize_mu);
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

Status Store::Sync() {
  int rc = mdb_env_sync(rep_->env, 1);
  if (rc != 0) return LmdbError("store: sync", rc);
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
  mdb_txn_abort(static_cast<MDB_txn*>(txn_));
  txn_ = nullptr;
  store_->rep_->resize_mu.unlock_shared();
}

Status Txn::Get(Table table, std::string_view key, std::string* value) {
  MDB_val k = Val(key), v;
  int rc = mdb_get(static_cast<MDB_txn*>(txn_),
                   store_->rep_->dbis[static_cast<int>(table)], &k, &v);
  if (rc != 0) return LmdbError("store: get", rc);
  value->assign(View(v));
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
  store_->rep_->resize_mu.unlock_shared();
  if (rc != 0) return LmdbError("store: commit", rc);
  return Status::Ok();
}

}  // namespace dex
