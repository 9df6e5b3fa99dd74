#include "dex/store.h"

#include <doctest/doctest.h>

#include <string>

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

}  // namespace

TEST_CASE("a committed value survives reopening the store") {
  dex::test::TempDir dir;
  {
    auto store = OpenStore(dir.path());
    CHECK(store
              ->Update([](dex::Txn& txn) {
                return txn.Put(dex::Table::kUsers, "u1", "alice");
              })
              .ok());
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
