#include "dex/store.h"

#include <doctest/doctest.h>

#include <atomic>
#include <chrono>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "tests/test_util.h"

namespace {

std::unique_ptr<dex::Store> OpenStore(const std::string& path,
                                      uint64_t map = 1 << 20,
                                      uint64_t max = 1 << 20) {
  dex::StoreOptions options;
  options.path = path;
  options.map_bytes = map;
  options.max_map_bytes = max;
  auto store = dex::Store::Open(options);
  REQUIRE_MESSAGE(store.ok(), store.status().ToString());
  return std::move(*store);
}

// Puts one user-table entry in a transaction of its own.
dex::Status PutUser(dex::Store& store, const std::string& key,
                    const std::string& value) {
  return store.Update(
      [&](dex::Txn& txn) { return txn.Put(dex::Table::kUsers, key, value); });
}

}  // namespace

TEST_CASE("a committed value survives reopening the store") {
  dex::test::TempDir dir;
  {
    auto store = OpenStore(dir.path());
    CHECK(PutUser(*store, "u1", "alice").ok());
  }
  auto store = OpenStore(dir.path());
  auto txn = store->BeginRead();
  REQUIRE(txn.ok());
  std::string value;
  CHECK(txn->Get(dex::Table::kUsers, "u1", &value).ok());
  CHECK(value == "alice");
}

TEST_CASE("an uncommitted write is rolled back") {
  dex::test::TempDir dir;
  auto store = OpenStore(dir.path());
  {
    auto txn = store->BeginWrite();
    REQUIRE(txn.ok());
    CHECK(txn->Put(dex::Table::kUsers, "u1", "x").ok());
  }
  auto txn = store->BeginRead();
  std::string value;
  CHECK(txn->Get(dex::Table::kUsers, "u1", &value).code() == "not_found");
}

TEST_CASE("scan visits only the prefix, in key order") {
  dex::test::TempDir dir;
  auto store = OpenStore(dir.path());
  CHECK(store
            ->Update([](dex::Txn& txn) {
              for (const char* k : {"a/2", "a/1", "b/1", "a0"}) {
                DEX_RETURN_IF_ERROR(txn.Put(dex::Table::kUserKeys, k, ""));
              }
              return dex::Status::Ok();
            })
            .ok());
  auto txn = store->BeginRead();
  std::string seen;
  CHECK(txn->Scan(dex::Table::kUserKeys, "a/",
                  [&](std::string_view k, std::string_view) {
                    seen += std::string(k) + ";";
                    return true;
                  })
            .ok());
  CHECK(seen == "a/1;a/2;");
}

TEST_CASE("a full map grows until its ceiling, then answers store_full") {
  dex::test::TempDir dir;
  auto store = OpenStore(dir.path(), 256 << 10, 1 << 20);
  std::string big(64 << 10, 'x');
  int written = 0;
  dex::Status last;
  for (int i = 0; i < 64; ++i) {
    last = store->Update([&](dex::Txn& txn) {
      return txn.Put(dex::Table::kExecutions, "k" + std::to_string(i), big);
    });
    if (!last.ok()) break;
    ++written;
  }
  CHECK(written > 4);  // more than fits in the first 256 KiB
  CHECK(last.code() == "store_full");
  CHECK(last.category() == dex::Category::kUnavailable);
  CHECK(store->map_bytes() == (1u << 20));
  // Reads keep working when full.
  auto txn = store->BeginRead();
  REQUIRE(txn.ok());
  std::string value;
  CHECK(txn->Get(dex::Table::kExecutions, "k0", &value).ok());
}

TEST_CASE("new work leaves the reserve to finishing work") {
  dex::test::TempDir dir;
  dex::StoreOptions options;
  options.path = dir.path();
  options.map_bytes = 256 << 10;
  options.max_map_bytes = 1 << 20;
  options.reserve_bytes = 256 << 10;
  auto opened = dex::Store::Open(options);
  REQUIRE(opened.ok());
  auto& store = *opened;
  dex::WriteOptions new_work;
  new_work.keep_reserve = true;
  std::string big(32 << 10, 'x');
  int written = 0;
  dex::Status last;
  for (int i = 0; i < 64; ++i) {
    last = store->Update(
        [&](dex::Txn& txn) {
          return txn.Put(dex::Table::kScripts, "s" + std::to_string(i), big);
        },
        new_work);
    if (!last.ok()) break;
    ++written;
  }
  CHECK(written > 8);
  CHECK(last.code() == "store_full");
  CHECK(last.message().find("finishing") != std::string::npos);
  // Finishing work still has room: a result and a deleted script.
  CHECK(store
            ->Update([&](dex::Txn& txn) {
              DEX_RETURN_IF_ERROR(
                  txn.Put(dex::Table::kExecutions, "done", big));
              return txn.Delete(dex::Table::kScripts, "s0");
            })
            .ok());
  // Space freed by purges is taken by new work again.
  CHECK(store
            ->Update([&](dex::Txn& txn) -> dex::Status {
              for (int i = 1; i < written; ++i) {
                DEX_RETURN_IF_ERROR(
                    txn.Delete(dex::Table::kScripts, "s" + std::to_string(i)));
              }
              return dex::Status::Ok();
            })
            .ok());
  CHECK(store
            ->Update(
                [&](dex::Txn& txn) {
                  return txn.Put(dex::Table::kScripts, "again", big);
                },
                new_work)
            .ok());
}

TEST_CASE("concurrent durable writers all commit through the shared flush") {
  dex::test::TempDir dir;
  {
    auto store = OpenStore(dir.path(), 1 << 20, 64 << 20);
    REQUIRE(store->durable());
    std::vector<std::thread> writers;
    std::atomic<int> failures{0};
    for (int t = 0; t < 8; ++t) {
      writers.emplace_back([&, t] {
        for (int i = 0; i < 25; ++i) {
          std::string key = std::to_string(t) + "/" + std::to_string(i);
          dex::Status s = store->Update([&](dex::Txn& txn) {
            return txn.Put(dex::Table::kUsers, key, "v");
          });
          if (!s.ok()) ++failures;
        }
      });
    }
    for (auto& w : writers) w.join();
    CHECK(failures == 0);
    // Nothing new to flush: returns at once.
    CHECK(store->Sync().ok());
    // A lazy write is flushed by the next Sync.
    dex::WriteOptions lazy;
    lazy.sync = false;
    CHECK(store
              ->Update(
                  [](dex::Txn& txn) {
                    return txn.Put(dex::Table::kUsers, "lazy", "v");
                  },
                  lazy)
              .ok());
    CHECK(store->Sync().ok());
  }
  auto store = OpenStore(dir.path(), 1 << 20, 64 << 20);
  auto txn = store->BeginRead();
  REQUIRE(txn.ok());
  auto count = txn->Count(dex::Table::kUsers);
  REQUIRE(count.ok());
  CHECK(*count == 8 * 25 + 1);
}

// Read transactions are reused (reset, then renewed): a renewed one must
// see what was committed since it was last used, not its old snapshot.
TEST_CASE("a reused read transaction sees later commits") {
  dex::test::TempDir dir;
  auto store = OpenStore(dir.path(), 1 << 20, 1 << 20);
  for (int i = 0; i < 3; ++i) {
    REQUIRE(PutUser(*store, "u", std::to_string(i)).ok());
    auto txn = store->BeginRead();
    REQUIRE(txn.ok());
    std::string value;
    CHECK(txn->Get(dex::Table::kUsers, "u", &value).ok());
    CHECK(value == std::to_string(i));
  }
}

// The zero-copy Get answers what the copying one does, and kNotFound.
TEST_CASE("a Get into a view reads the stored bytes in place") {
  dex::test::TempDir dir;
  auto store = OpenStore(dir.path());
  REQUIRE(PutUser(*store, "u", "some bytes").ok());
  auto txn = store->BeginRead();
  REQUIRE(txn.ok());
  std::string_view value;
  REQUIRE(txn->Get(dex::Table::kUsers, "u", &value).ok());
  CHECK(value == "some bytes");
  dex::Status missing = txn->Get(dex::Table::kUsers, "absent", &value);
  CHECK(missing.category() == dex::Category::kNotFound);
}

// Idle read transactions are kept per thread group: many threads reading
// while a writer commits each see a committed value, never a torn or
// stale-forever one, and closing the store releases every kept one (the
// sanitizer build would report a leak).
TEST_CASE("many threads reuse read transactions while a writer commits") {
  dex::test::TempDir dir;
  // Readers pin old pages, so the writer grows the map as it goes.
  auto store = OpenStore(dir.path(), 1 << 20, 64 << 20);
  REQUIRE(PutUser(*store, "n", "0").ok());
  std::atomic<bool> done{false};
  std::atomic<int> bad{0};
  std::atomic<int> last_seen{0};
  std::vector<std::thread> readers;
  for (int t = 0; t < 40; ++t) {
    readers.emplace_back([&] {
      while (!done) {
        auto txn = store->BeginRead();
        std::string value;
        if (!txn.ok() || !txn->Get(dex::Table::kUsers, "n", &value).ok()) {
          ++bad;
          continue;
        }
        int n = std::stoi(value);
        if (n < 0 || n > 200) ++bad;
        int seen = last_seen.load();
        while (n > seen && !last_seen.compare_exchange_weak(seen, n)) {
        }
      }
    });
  }
  // Each big value makes the map grow, which needs every transaction of
  // the process closed while the readers keep opening new ones.
  dex::Status written;
  const std::string big(1 << 20, 'b');
  for (int i = 1; i <= 200 && written.ok(); ++i) {
    written = store->Update([&](dex::Txn& txn) {
      if (i % 50 == 0) {
        DEX_RETURN_IF_ERROR(
            txn.Put(dex::Table::kScripts, std::to_string(i), big));
      }
      return txn.Put(dex::Table::kUsers, "n", std::to_string(i));
    });
  }
  // Every reader, on whatever kept transaction, now sees the last commit.
  for (int i = 0; i < 100 && last_seen.load() < 200; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  done = true;
  for (auto& r : readers) r.join();
  REQUIRE_MESSAGE(written.ok(), written.ToString());
  CHECK(bad.load() == 0);
  CHECK(last_seen.load() == 200);
  for (int t = 0; t < 40; ++t) {
    auto txn = store->BeginRead();
    std::string value;
    REQUIRE(txn.ok());
    CHECK(txn->Get(dex::Table::kUsers, "n", &value).ok());
    CHECK(value == "200");
  }
}

// A thread that holds a read transaction and waits for another thread's
// read, while a map resize waits for the first: the gate that holds new
// readers back during a resize must not turn this into a deadlock.
TEST_CASE(
    "a reader waited on by a transaction's holder gets through a resize") {
  dex::test::TempDir dir;
  auto store = OpenStore(dir.path(), 1 << 20, 64 << 20);
  REQUIRE(PutUser(*store, "n", "1").ok());
  std::optional<dex::Txn> held;  // this thread holds a transaction
  {
    auto txn = store->BeginRead();
    REQUIRE(txn.ok());
    held.emplace(std::move(*txn));
  }
  dex::Status grown;
  std::thread writer([&] {
    // Needs the map to grow, so waits for every transaction to end.
    grown = store->Update([](dex::Txn& txn) {
      return txn.Put(dex::Table::kScripts, "big", std::string(2 << 20, 'b'));
    });
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  std::atomic<bool> read{false};
  std::thread helper([&] {
    auto txn = store->BeginRead();
    std::string value;
    read = txn.ok() && txn->Get(dex::Table::kUsers, "n", &value).ok() &&
           value == "1";
  });
  helper.join();  // without a bounded gate this never returns
  CHECK(read.load());
  held.reset();
  writer.join();
  CHECK_MESSAGE(grown.ok(), grown.ToString());
}
