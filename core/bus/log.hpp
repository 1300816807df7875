#pragma once
// One line per notable event, on stderr, with the stage name and a level (spdlog: a
// well-kept logger, so formatting, levels and thread-safety are not ours to get wrong).
#include <string>

#include <spdlog/spdlog.h>

namespace pw::bus {

// Level names as spdlog spells them: trace, debug, info, warn, error, critical, off.
void init_logging(const std::string& stage, const std::string& level = "info");

}  // namespace pw::bus
