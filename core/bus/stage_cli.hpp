#pragma once
// What every stage's command line shares, so the five thin mains say only what is theirs.
#include <functional>
#include <string>

#include <CLI/CLI.hpp>

#include "core/bus/metrics.hpp"

namespace pw::bus {

struct StageCommon {
    std::string control;  // the orchestrator binds it, every other stage connects to it
    std::string name;     // instance name: the identity on the control socket, the log prefix
    std::string log_level = "info";
    // CurveZMQ across machines (core/bus/security.hpp): both or neither.
    std::string curve_key;    // this stage's secret key file
    std::string curve_allow;  // the deployment's allow-list of public keys
    bool trace = false;              // one line per message crossing a socket, on stderr
    std::string trace_endpoint;      // also PUB those lines here, for `piecework tap`
    unsigned metrics_port = 0;       // Prometheus text on http://ADDRESS:PORT/metrics; 0 = off
    std::string metrics_address = "0.0.0.0";
    // Set by run_stage before `body` runs: the stage's counters (served when metrics_port is
    // set, kept either way so the loops never have to ask).
    metrics::Registry* metrics = nullptr;
    // Set by run_stage: SIGTERM and SIGINT as a descriptor (bus::TerminationSignals).
    int signal_fd = -1;
};

// Adds --control (PW_CONTROL, required), --name (PW_NAME), --log-level (PW_LOG_LEVEL),
// --curve-key (PW_CURVE_KEY), --curve-allow (PW_CURVE_ALLOW),
// --trace (PW_TRACE), --trace-endpoint (PW_TRACE_ENDPOINT), --metrics-port (PW_METRICS_PORT) and
// --metrics-address (PW_METRICS_ADDRESS).
// `default_name` is used when --name is not given.
void add_common_options(CLI::App& app, StageCommon& common, std::string default_name);

// Parses the command line, blocks SIGTERM and SIGINT into common.signal_fd (before any thread
// starts), sets up logging, tracing and metrics, and runs `body`, turning any exception into
// one line on stderr ("STAGE: what went wrong") and exit code 1.
int run_stage(CLI::App& app, int argc, char** argv, StageCommon& common,
              const std::function<int()>& body);

// "ROLE-HOST-PID": unique across containers (where every stage may be pid 1) and across
// processes on one host, so scaled workers never share an identity on the control socket.
std::string default_instance_name(const std::string& role);

}  // namespace pw::bus
