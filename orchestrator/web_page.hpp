#pragma once
// The session's web page (web/ in the source tree, built into the binary): served by the RPC
// server at "/" under the RPC's own Host check and credentials, and driving the session through
// the same RPC, so that its state-changing requests need the session id (the CSRF guard).
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "orchestrator/rpc_server.hpp"

namespace pw::orchestrator {

// The page's files by URL path, as built in (cmake/EmbedFiles.cmake writes this function).
std::vector<std::pair<std::string_view, std::string_view>> web_files();

// What every file of the page is sent with: no script, style or connection but the daemon's
// own, no inline script, no framing, no sniffing.
std::vector<std::pair<std::string, std::string>> web_headers();

// Adds the page's files to `server` (before start()): "/" and "/transmission/web/" are the page.
void add_web_page(RpcServer& server);

}  // namespace pw::orchestrator
