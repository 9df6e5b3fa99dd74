// `--config FILE`: a JSON object whose member names are a command's flags
// without the dashes, '-' written as '_' ({"data": "...", "listen":
// "127.0.0.1:8080", "workers": 4, "log_level": "info"}). Flags on the
// command line override the file.
#ifndef DEX_SHIM_CONFIG_H_
#define DEX_SHIM_CONFIG_H_

#include <string>
#include <string_view>
#include <vector>

#include "dex/status.h"
#include "shim/admin.h"

namespace dex::shim {

// Adds each member of the JSON object in `path` to `flags` as the flag
// "--" + name (with '_' as '-'), unless `flags` already has it. `allowed`
// is the command's flag table; a member naming no flag in it, a value that
// is not a string, integer or boolean, or a file that is not a JSON object
// answers kInvalidArgument "usage" naming the file and the member.
Status MergeConfigFile(const std::string& path,
                       const std::vector<std::string_view>& allowed,
                       Flags* flags);

}  // namespace dex::shim

#endif  // DEX_SHIM_CONFIG_H_
