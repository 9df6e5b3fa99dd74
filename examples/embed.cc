// embed: a host program that uses libdex directly, without the HTTP shim.
// Opens a dex::Service on a folder (argv[1], or a fresh temporary one),
// creates a user and an extra key through the library, runs
// print("hello") in a sandbox, and prints the run's stdout.
//
//   embed [DATA_DIR]
#include <dex/dex.h>
#include <stdlib.h>

#include <cstdio>
#include <filesystem>
#include <memory>
#include <string>

namespace {

int Fail(const char* what, const dex::Status& status) {
  std::fprintf(stderr, "embed: %s: %s\n", what, status.ToString().c_str());
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  std::string data_dir;
  bool temporary = argc < 2;
  if (temporary) {
    std::string tmpl =
        (std::filesystem::temp_directory_path() / "dex-embed-XXXXXX").string();
    if (mkdtemp(tmpl.data()) == nullptr) {
      std::perror("embed: mkdtemp");
      return 1;
    }
    data_dir = tmpl;
  } else {
    data_dir = argv[1];
  }

  dex::ServiceOptions options;
  options.data_dir = data_dir;
  options.logger = dex::StderrLogger(dex::LogLevel::kWarn);
  dex::Result<std::unique_ptr<dex::Service>> opened =
      dex::Service::Open(options);
  if (!opened.ok()) return Fail("opening the service", opened.status());
  dex::Service& service = **opened;

  dex::Result<dex::NewUser> user = service.CreateUser("starter");
  if (!user.ok()) return Fail("creating a user", user.status());
  const std::string& user_id = user->user.id;
  // A host that hands keys to its own users mints them like this; the raw
  // key is returned once and only its hash is stored.
  dex::Result<dex::MintedKey> key = service.CreateKey(user_id, "embed");
  if (!key.ok()) return Fail("creating a key", key.status());
  std::fprintf(stderr, "embed: user %s, key %s\n", user_id.c_str(),
               key->info.hint.c_str());

  dex::RunSpec spec;
  spec.script = "print(\"hello\")";
  dex::Result<dex::SubmitResult> submitted = service.Submit(user_id, spec);
  if (!submitted.ok()) return Fail("submitting", submitted.status());
  dex::Result<dex::Execution> done =
      service.WaitExecution(user_id, submitted->execution.id, 60'000);
  if (!done.ok()) return Fail("waiting", done.status());
  if (done->state != dex::ExecState::kCompleted) {
    std::fprintf(stderr, "embed: run ended %s: %s\n",
                 dex::ExecStateName(done->state), done->detail.c_str());
    return 1;
  }
  std::fputs(done->outcome.stdout_data.c_str(), stdout);

  service.Shutdown(1'000);
  opened->reset();
  if (temporary) std::filesystem::remove_all(data_dir);
  return done->outcome.exit_code;
}
