#include "core/bus/log.hpp"

#include <spdlog/sinks/stdout_color_sinks.h>

namespace pw::bus {

void init_logging(const std::string& stage, const std::string& level) {
    auto logger = spdlog::stderr_color_mt(stage);
    logger->set_pattern("%H:%M:%S.%e %n %^%l%$: %v");
    logger->set_level(spdlog::level::from_str(level));
    spdlog::set_default_logger(logger);
}

}  // namespace pw::bus
