// A fresh store for library-level tests: a new temporary folder, a real
// LMDB store in it, and a settable clock at 2026-12-04T12:00:00Z. Layer
// fixtures derive from it. Include after doctest.
#ifndef DEX_TESTS_STORE_FIXTURE_H_
#define DEX_TESTS_STORE_FIXTURE_H_

#include <doctest/doctest.h>

#include <memory>

#include "dex/quota.h"
#include "dex/store.h"
#include "tests/test_util.h"

namespace dex::test {

struct StoreFixture {
  TempDir dir;
  FakeClock clock{UtcMs(2026, 12, 4, 12)};
  std::unique_ptr<Store> store;

  StoreFixture() {
    StoreOptions options;
    options.path = dir.path();
    auto opened = Store::Open(options);
    REQUIRE_MESSAGE(opened.ok(), opened.status().ToString());
    store = std::move(*opened);
  }

  // The quota layer over this store, on this clock.
  std::unique_ptr<Quota> OpenQuota() {
    QuotaOptions options;
    options.clock = &clock;
    auto opened = Quota::Open(store.get(), options);
    REQUIRE_MESSAGE(opened.ok(), opened.status().ToString());
    return std::move(*opened);
  }
};

}  // namespace dex::test

#endif  // DEX_TESTS_STORE_FIXTURE_H_
