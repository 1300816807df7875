#include "orchestrator/web_page.hpp"

namespace pw::orchestrator {
namespace {

std::string content_type_of(std::string_view path) {
    const auto ends_with = [&](std::string_view suffix) {
        return path.size() >= suffix.size() && path.substr(path.size() - suffix.size()) == suffix;
    };
    if (ends_with(".html")) return "text/html; charset=utf-8";
    if (ends_with(".js")) return "text/javascript; charset=utf-8";
    if (ends_with(".css")) return "text/css; charset=utf-8";
    if (ends_with(".svg")) return "image/svg+xml";
    return "application/octet-stream";
}

}  // namespace

std::vector<std::pair<std::string, std::string>> web_headers() {
    return {
        {"Content-Security-Policy",
         "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
         "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"},
        {"X-Content-Type-Options", "nosniff"},
        {"X-Frame-Options", "DENY"},
        {"Referrer-Policy", "no-referrer"},
        // A daemon upgraded in place serves its new page at once.
        {"Cache-Control", "no-cache"},
    };
}

void add_web_page(RpcServer& server) {
    for (const auto& [path, bytes] : web_files()) {
        RpcAsset asset{std::string(bytes), content_type_of(path), web_headers()};
        if (path == "/index.html") {
            server.add_asset("/", asset);
            server.add_asset("/transmission/web/", asset);
        }
        server.add_asset(std::string(path), std::move(asset));
    }
}

}  // namespace pw::orchestrator
