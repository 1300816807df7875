#pragma once
// `piecework tap ENDPOINT...`: prints the trace lines stages publish on --trace-endpoint.
// Stages bind their PUB socket and the tap connects, so a tap can attach to a running stage
// and leave again; a PUB with nobody listening drops its lines and never slows the stage.
#include <chrono>
#include <cstddef>
#include <functional>
#include <ostream>
#include <string>
#include <vector>

namespace pw::cli {

struct TapOptions {
    std::vector<std::string> endpoints;  // each a stage's --trace-endpoint
    std::size_t count = 0;               // stop after this many lines; 0 = never
    std::chrono::milliseconds timeout{0};  // stop after this long; 0 = never
};

// Prints one line per trace message until `stop()`, count or timeout. Returns 0.
// Throws std::runtime_error on a malformed endpoint.
int run_tap(const TapOptions& options, std::ostream& out, const std::function<bool()>& stop);

}  // namespace pw::cli
