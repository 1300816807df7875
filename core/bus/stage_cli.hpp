#pragma once
// What every stage's command line shares, so the five thin mains say only what is theirs.
#include <functional>
#include <string>

#include <CLI/CLI.hpp>

namespace pw::bus {

struct StageCommon {
    std::string control;  // the orchestrator binds it, every other stage connects to it
    std::string name;     // instance name: the identity on the control socket, the log prefix
    std::string log_level = "info";
};

// Adds --control (PW_CONTROL, required), --name (PW_NAME) and --log-level (PW_LOG_LEVEL).
// `default_name` is used when --name is not given.
void add_common_options(CLI::App& app, StageCommon& common, std::string default_name);

// Parses the command line, sets up logging and runs `body`, turning any exception into one
// line on stderr ("STAGE: what went wrong") and exit code 1.
int run_stage(CLI::App& app, int argc, char** argv, const StageCommon& common,
              const std::function<int()>& body);

}  // namespace pw::bus
