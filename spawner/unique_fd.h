// The spawner's and init's name for libdex's header-only fd owner.
#ifndef DEX_SPAWNER_UNIQUE_FD_H_
#define DEX_SPAWNER_UNIQUE_FD_H_

#include "libdex/unique_fd.h"

namespace dex::spawner {
using internal::UniqueFd;
}  // namespace dex::spawner

#endif  // DEX_SPAWNER_UNIQUE_FD_H_
