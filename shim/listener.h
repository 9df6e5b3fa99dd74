// The two steps every cpp-httplib listener of the shim takes around its
// accept loop (the API server and the metrics listener).
#ifndef DEX_SHIM_LISTENER_H_
#define DEX_SHIM_LISTENER_H_

#include <string>
#include <string_view>

#include "dex/status.h"

namespace httplib {
class Server;
}  // namespace httplib

namespace dex::shim {

// Binds `server` to host:port (port 0: any free port) and returns the bound
// port. `what` begins the error's message ("binding", "binding the metrics
// listener").
Result<int> BindListener(httplib::Server& server, const std::string& host,
                         int port, std::string_view what);

// Waits (at most 10 s) until the accept loop, started on another thread,
// runs. `what` names the listener in the error ("the HTTP server").
Status AwaitAcceptLoop(httplib::Server& server, std::string_view what);

}  // namespace dex::shim

#endif  // DEX_SHIM_LISTENER_H_
