// Calendar arithmetic on the proleptic Gregorian calendar, in UTC: what
// FormatTime and the quota's monthly periods need, without gmtime_r and
// timegm (glibc's take a process-wide lock, and every request went
// through them).
#ifndef DEX_LIBDEX_CALENDAR_H_
#define DEX_LIBDEX_CALENDAR_H_

#include <algorithm>
#include <cstdint>

namespace dex::internal {

// RFC 3339 has four-digit years: times are clamped to 0000-01-01T00:00:00Z
// through 9999-12-31T23:59:59.999Z.
inline int64_t ClampToFourDigitYears(int64_t unix_ms) {
  return std::clamp<int64_t>(unix_ms, -62'167'219'200'000, 253'402'300'799'999);
}

// Rounds towards negative infinity. REQUIRES: b > 0.
inline int64_t FloorDiv(int64_t a, int64_t b) {
  return a / b - (a % b != 0 && a < 0);
}

struct CivilDate {
  int64_t year;
  int64_t month;  // 1 to 12
  int64_t day;    // 1 to 31
};

// Counts are in days since 0000-03-01, in 400-year eras of 146097 days; a
// year there starts in March, so that February's leap day ends it.
inline CivilDate CivilFromDays(int64_t days_since_epoch) {
  int64_t since_march = days_since_epoch + 719'468;
  int64_t era = FloorDiv(since_march, 146'097);
  int64_t day_of_era = since_march - era * 146'097;
  int64_t year_of_era = (day_of_era - day_of_era / 1'460 + day_of_era / 36'524 -
                         day_of_era / 146'096) /
                        365;
  int64_t day_of_year =
      day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
  int64_t month_from_march = (5 * day_of_year + 2) / 153;
  int64_t day = day_of_year - (153 * month_from_march + 2) / 5 + 1;
  int64_t month =
      month_from_march < 10 ? month_from_march + 3 : month_from_march - 9;
  return {year_of_era + era * 400 + (month <= 2 ? 1 : 0), month, day};
}

// The inverse: days from 1970-01-01 to `date`.
inline int64_t DaysFromCivil(const CivilDate& date) {
  int64_t year = date.month <= 2 ? date.year - 1 : date.year;
  int64_t era = FloorDiv(year, 400);
  int64_t year_of_era = year - era * 400;
  int64_t month_from_march = date.month > 2 ? date.month - 3 : date.month + 9;
  int64_t day_of_year = (153 * month_from_march + 2) / 5 + date.day - 1;
  int64_t day_of_era =
      year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
  return era * 146'097 + day_of_era - 719'468;
}

}  // namespace dex::internal

#endif  // DEX_LIBDEX_CALENDAR_H_
