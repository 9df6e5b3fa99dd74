// Opens a dex::Service (store, keys and quota; no sandboxes) in the folder
// given as argv[1], creates a user, and prints its plan. Exits 1 on error.
#include <dex/dex.h>

#include <cstdio>
#include <memory>

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: dex_consumer DATA_DIR\n");
    return 2;
  }
  dex::ServiceOptions options;
  options.data_dir = argv[1];
  options.run_executions = false;
  dex::Result<std::unique_ptr<dex::Service>> service =
      dex::Service::Open(options);
  if (!service.ok()) {
    std::fprintf(stderr, "%s\n", service.status().ToString().c_str());
    return 1;
  }
  dex::Result<dex::NewUser> user = (*service)->CreateUser("free");
  if (!user.ok()) {
    std::fprintf(stderr, "%s\n", user.status().ToString().c_str());
    return 1;
  }
  dex::Result<dex::UsageView> me = (*service)->Me(user->user.id);
  if (!me.ok()) {
    std::fprintf(stderr, "%s\n", me.status().ToString().c_str());
    return 1;
  }
  std::printf("dex consumer ok: plan %s, quota %lld\n",
              me->effective_plan.name.c_str(),
              static_cast<long long>(me->effective_plan.quota_monthly));
  return 0;
}
