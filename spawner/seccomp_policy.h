// The seccomp filter every script runs under, compiled once when the spawner
// starts (libseccomp allocates: it must not run between fork and exec).
#ifndef DEX_SPAWNER_SECCOMP_POLICY_H_
#define DEX_SPAWNER_SECCOMP_POLICY_H_

#include <linux/filter.h>

#include <string>
#include <vector>

namespace dex::spawner {

// Builds the policy and exports it as classic BPF into *program. False with
// *error set when libseccomp fails.
bool CompileSeccompPolicy(std::vector<sock_filter>* program,
                          std::string* error);

}  // namespace dex::spawner

#endif  // DEX_SPAWNER_SECCOMP_POLICY_H_
