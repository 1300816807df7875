#include "core/bus/stage_cli.hpp"

#include <cstdio>
#include <exception>
#include <memory>

#include <malloc.h>
#include <unistd.h>

#include "core/bus/log.hpp"
#include "core/bus/stage.hpp"
#include "core/bus/trace.hpp"

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
    app.add_option("--curve-key", common.curve_key,
                   "this stage's CURVE secret key file (from `piecework keygen`); with "
                   "--curve-allow, every socket is encrypted and authenticated")
        ->envname("PW_CURVE_KEY");
    app.add_option("--curve-allow", common.curve_allow,
                   "allow-list: one public key per line ('KEY NAME'); bound sockets admit only "
                   "these, and the orchestrator/verifier/writer lines are the servers' keys")
        ->envname("PW_CURVE_ALLOW");
    app.add_flag("--trace", common.trace,
                 "log every message crossing a socket, one line each, bulk data as sizes only "
                 "(independent of --log-level)")
        ->envname("PW_TRACE");
    app.add_option("--trace-endpoint", common.trace_endpoint,
                   "also publish the trace lines on this endpoint (bound; read with "
                   "`piecework tap ENDPOINT`)")
        ->envname("PW_TRACE_ENDPOINT");
    app.add_option("--metrics-port", common.metrics_port,
                   "serve Prometheus metrics on http://ADDRESS:PORT/metrics (0 = off)")
        ->envname("PW_METRICS_PORT")
        ->check(CLI::Range(0u, 65535u))
        ->capture_default_str();
    app.add_option("--metrics-address", common.metrics_address,
                   "IPv4 address the metrics port listens on")
        ->envname("PW_METRICS_ADDRESS")
        ->capture_default_str();
}

std::string default_instance_name(const std::string& role) {
    char host[256] = {};
    if (::gethostname(host, sizeof host - 1) != 0 || host[0] == '\0') {
        return role + "-" + std::to_string(::getpid());
    }
    return role + "-" + host + "-" + std::to_string(::getpid());
}

int run_stage(CLI::App& app, int argc, char** argv, StageCommon& common,
              const std::function<int()>& body) {
    // Piece-sized buffers are allocated in ZeroMQ's I/O thread and freed in ours, thousands a
    // second. glibc's defaults hand such memory back to the kernel (trim, per-thread arenas,
    // mmap above an adaptive threshold) and fault it in again for the next piece: on the
    // bench that churn cost more CPU than hashing. One arena that keeps what it freed holds
    // no more than the stage's bounded queues ever did at their peak.
    ::mallopt(M_ARENA_MAX, 1);
    ::mallopt(M_MMAP_THRESHOLD, 32 << 20);  // glibc's largest
    ::mallopt(M_TRIM_THRESHOLD, 256 << 20);
    try {
        app.parse(argc, argv);
    } catch (const CLI::ParseError& error) {
        return app.exit(error);
    }
    try {
        // First: every thread started from here on (ZeroMQ's, the metrics exporter's) must
        // inherit the blocked signals, or one of them would take SIGTERM's default action.
        TerminationSignals signals;
        common.signal_fd = signals.fd();
        init_logging(common.name, common.log_level);
        spdlog::info("started (pid {}), control {}", ::getpid(), common.control);
        // Counting costs a registry lookup per message: only when someone can read the counts.
        metrics::Registry registry(common.name);
        common.metrics = nullptr;
        std::unique_ptr<metrics::HttpExporter> exporter;
        if (common.metrics_port != 0) {
            common.metrics = &registry;
            exporter = std::make_unique<metrics::HttpExporter>(
                registry, static_cast<std::uint16_t>(common.metrics_port), common.metrics_address);
            spdlog::info("metrics on http://{}:{}/metrics", common.metrics_address, exporter->port());
        }
        if (common.trace || !common.trace_endpoint.empty()) {
            trace::start(common.name, common.trace, common.trace_endpoint);
            if (!common.trace_endpoint.empty()) spdlog::info("trace lines published on {}", common.trace_endpoint);
        }
        const int status = body();
        trace::stop();
        common.metrics = nullptr;
        return status;
    } catch (const std::exception& error) {
        std::fprintf(stderr, "%s: %s\n", common.name.c_str(), error.what());
        return 1;
    }
}

}  // namespace pw::bus
