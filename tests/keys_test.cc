#include "dex/keys.h"

#include <doctest/doctest.h>

#include "dex/store.h"
#include "libdex/records.h"
#include "tests/store_fixture.h"
#include "tests/test_util.h"

namespace {

struct KeysFixture : dex::test::StoreFixture {
  std::unique_ptr<dex::Keys> keys;

  KeysFixture() {
    dex::KeysOptions key_options;
    key_options.clock = &clock;
    keys = std::make_unique<dex::Keys>(store.get(), key_options);
  }
};

}  // namespace

TEST_CASE_FIXTURE(KeysFixture, "a minted key verifies to its user") {
  auto minted = keys->Mint("user_a", "laptop");
  REQUIRE(minted.ok());
  CHECK(minted->raw_key.rfind("dex_live_", 0) == 0);
  CHECK(minted->raw_key.size() == 9 + 43 + 6);
  CHECK(minted->info.id.rfind("key_", 0) == 0);
  CHECK(minted->info.hint ==
        "dex_live_\u2026" + minted->raw_key.substr(minted->raw_key.size() - 4));
  auto verified = keys->Verify(minted->raw_key);
  REQUIRE(verified.ok());
  CHECK(verified->user_id == "user_a");
}

TEST_CASE_FIXTURE(KeysFixture, "the raw key is never stored") {
  auto minted = keys->Mint("user_a", "laptop");
  REQUIRE(minted.ok());
  auto txn = store->BeginRead();
  bool found = false;
  for (auto table :
       {dex::Table::kKeys, dex::Table::kKeyHashes, dex::Table::kUserKeys}) {
    (void)txn->Scan(table, "", [&](std::string_view k, std::string_view v) {
      found |= k.find(minted->raw_key) != std::string_view::npos ||
               v.find(minted->raw_key) != std::string_view::npos;
      return true;
    });
  }
  CHECK_FALSE(found);
}

TEST_CASE_FIXTURE(KeysFixture, "a typo fails the checksum before any lookup") {
  auto minted = keys->Mint("user_a", "laptop");
  REQUIRE(minted.ok());
  std::string typo = minted->raw_key;
  typo[20] = typo[20] == 'a' ? 'b' : 'a';
  dex::Status s = dex::Keys::CheckFormat(typo);
  CHECK(s.code() == "invalid_token");
  CHECK(s.message().find("checksum") != std::string::npos);
  CHECK(keys->Verify(typo).status().code() == "invalid_token");
}

TEST_CASE("malformed keys are rejected by format") {
  CHECK(dex::Keys::CheckFormat("").code() == "invalid_token");
  CHECK(dex::Keys::CheckFormat("sk_live_abc").code() == "invalid_token");
  CHECK(dex::Keys::CheckFormat(std::string("dex_live_") + std::string(49, '!'))
            .code() == "invalid_token");
}

TEST_CASE_FIXTURE(KeysFixture, "a disabled key answers key_disabled") {
  auto first = keys->Mint("user_a", "one");
  auto second = keys->Mint("user_a", "two");
  REQUIRE(first.ok());
  REQUIRE(second.ok());
  auto disabled = keys->Disable("user_a", first->info.id);
  REQUIRE(disabled.ok());
  CHECK_FALSE(disabled->active);
  CHECK(disabled->disabled_ms == clock.NowMs());
  CHECK(keys->Verify(first->raw_key).status().code() == "key_disabled");
  // Idempotent.
  CHECK(keys->Disable("user_a", first->info.id).ok());
}

// Verify keeps the record it last decoded on this thread; a key disabled
// since must still be refused at once.
TEST_CASE_FIXTURE(KeysFixture, "a key verified, then disabled, is refused") {
  auto first = keys->Mint("user_a", "one");
  auto second = keys->Mint("user_a", "two");
  REQUIRE(first.ok());
  REQUIRE(second.ok());
  for (int i = 0; i < 3; ++i) CHECK(keys->Verify(first->raw_key).ok());
  REQUIRE(keys->Disable("user_a", first->info.id).ok());
  CHECK(keys->Verify(first->raw_key).status().code() == "key_disabled");
  auto other = keys->Verify(second->raw_key);
  REQUIRE(other.ok());
  CHECK(other->id == second->info.id);
}

// Records decode to what their bytes say, whatever this thread decoded
// before: a kept record is reused only for the very same bytes.
TEST_CASE("decoding follows the bytes, not the last record decoded") {
  dex::internal::KeyRecord a, b, out;
  a.info.id = "key_a";
  a.info.user_id = "user_a";
  a.info.active = true;
  a.hash_hex = "aa";
  b = a;
  b.info.id = "key_b";
  b.info.active = false;
  b.info.disabled_ms = 7;
  std::string bytes_a = dex::internal::EncodeKey(a);
  std::string bytes_b = dex::internal::EncodeKey(b);
  for (int i = 0; i < 2; ++i) {
    REQUIRE(dex::internal::DecodeKey(bytes_a, &out).ok());
    CHECK(out.info.id == "key_a");
    CHECK(out.info.active);
    CHECK_FALSE(out.info.disabled_ms.has_value());
    REQUIRE(dex::internal::DecodeKey(bytes_b, &out).ok());
    CHECK(out.info.id == "key_b");
    CHECK_FALSE(out.info.active);
    CHECK(out.info.disabled_ms == 7);
  }
  CHECK_FALSE(dex::internal::DecodeKey("{not json", &out).ok());
  dex::User user;
  user.id = "user_a";
  user.plan = "pro";
  std::string user_bytes = dex::internal::EncodeUser(user);
  REQUIRE(dex::internal::DecodeUser(user_bytes, &user).ok());
  user.plan = "free";
  REQUIRE(
      dex::internal::DecodeUser(dex::internal::EncodeUser(user), &user).ok());
  CHECK(user.plan == "free");
  REQUIRE(dex::internal::DecodeUser(user_bytes, &user).ok());
  CHECK(user.plan == "pro");
  // A plan record without maxima gets PlanMaxima's defaults, whatever the
  // caller's Plan held (the kept record is handed to later callers).
  const std::string bare_plan = R"({"name":"p","quota_monthly":5})";
  for (int64_t junk : {int64_t{1}, int64_t{2}}) {
    dex::Plan plan;
    plan.max.wall_ms = junk;
    REQUIRE(dex::internal::DecodePlan(bare_plan, &plan).ok());
    CHECK(plan.max.wall_ms == dex::PlanMaxima().wall_ms);
    CHECK(plan.quota_monthly == 5);
  }
}

TEST_CASE_FIXTURE(KeysFixture, "the last active key cannot be disabled") {
  auto only = keys->Mint("user_a", "one");
  REQUIRE(only.ok());
  auto s = keys->Disable("user_a", only->info.id);
  CHECK(s.status().code() == "last_active_key");
  CHECK(keys->Verify(only->raw_key).ok());
}

TEST_CASE_FIXTURE(KeysFixture, "another user's key is not found") {
  auto mine = keys->Mint("user_a", "one");
  (void)keys->Mint("user_a", "two");
  REQUIRE(mine.ok());
  CHECK(keys->Disable("user_b", mine->info.id).status().code() == "not_found");
}

TEST_CASE_FIXTURE(KeysFixture, "keys are listed newest first") {
  (void)keys->Mint("user_a", "old");
  clock.Advance(1000);
  (void)keys->Mint("user_a", "new");
  (void)keys->Mint("user_b", "other");
  auto list = keys->List("user_a");
  REQUIRE(list.ok());
  REQUIRE(list->size() == 2);
  CHECK((*list)[0].name == "new");
  CHECK((*list)[1].name == "old");
}

TEST_CASE_FIXTURE(KeysFixture,
                  "last_used_at is written at most once a minute") {
  auto minted = keys->Mint("user_a", "one");
  REQUIRE(minted.ok());
  int64_t t0 = clock.NowMs();
  CHECK(keys->Verify(minted->raw_key)->last_used_ms == t0);
  clock.Advance(30'000);
  CHECK(keys->Verify(minted->raw_key)->last_used_ms == t0);
  clock.Advance(31'000);
  CHECK(keys->Verify(minted->raw_key)->last_used_ms == t0 + 61'000);
}

TEST_CASE("key names are trimmed and must be 1 to 100 characters") {
  CHECK(*dex::Keys::NormalizeName("  ci  ") == "ci");
  CHECK(dex::Keys::NormalizeName("   ").status().code() == "invalid_request");
  CHECK(dex::Keys::NormalizeName(std::string(101, 'a')).status().code() ==
        "invalid_request");
  // 100 two-byte characters are 100 characters.
  std::string wide;
  for (int i = 0; i < 100; ++i) wide += "\xc3\xa9";
  CHECK(dex::Keys::NormalizeName(wide).ok());
}
