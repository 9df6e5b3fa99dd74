// Everything of libdex's public API.
#ifndef DEX_DEX_H_
#define DEX_DEX_H_

#include "dex/env.h"
#include "dex/executor.h"
#include "dex/keys.h"
#include "dex/quota.h"
#include "dex/sandbox.h"
#include "dex/service.h"
#include "dex/status.h"
#include "dex/store.h"

#endif  // DEX_DEX_H_
