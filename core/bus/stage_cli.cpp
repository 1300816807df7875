#include "core/bus/stage_cli.hpp"

#include <cstdio>
#include <exception>

#include "core/bus/log.hpp"

namespace pw::bus {

void add_common_options(CLI::App& app, StageCommon& common, std::string default_name) {
    common.name = std::move(default_name);
    app.add_option("--control", common.control, "the orchestrator's control endpoint")
        ->envname("PW_CONTROL")
        ->required();
    app.add_option("--name", common.name, "instance name on the control socket and in logs")
        ->envname("PW_NAME")
        ->capture_default_str();
    app.add_option("--log-level", common.log_level,
                   "trace, debug, info, warn, error, critical or off")
        ->envname("PW_LOG_LEVEL")
        ->check(CLI::IsMember({"trace", "debug", "info", "warn", "error", "critical", "off"}))
        ->capture_default_str();
}

int run_stage(CLI::App& app, int argc, char** argv, const StageCommon& common,
              const std::function<int()>& body) {
    try {
        app.parse(argc, argv);
    } catch (const CLI::ParseError& error) {
        return app.exit(error);
    }
    try {
        init_logging(common.name, common.log_level);
        return body();
    } catch (const std::exception& error) {
        std::fprintf(stderr, "%s: %s\n", common.name.c_str(), error.what());
        return 1;
    }
}

}  // namespace pw::bus
