#pragma once
// A stage's counters in the Prometheus text exposition format, served over HTTP only when
// asked for (--metrics-port). The stage's loop updates plain atomics; the exporter's own
// thread reads them, so the ZeroMQ sockets stay in the one loop that owns them.
#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <utility>
#include <vector>

namespace pw::bus::metrics {

enum class Kind { counter, gauge };

using Labels = std::vector<std::pair<std::string, std::string>>;

// One time series. Counters only go up (add); gauges are set to the current value.
class Metric {
public:
    void add(std::int64_t amount = 1) { value_.fetch_add(amount, std::memory_order_relaxed); }
    void set(std::int64_t value) { value_.store(value, std::memory_order_relaxed); }
    std::int64_t value() const { return value_.load(std::memory_order_relaxed); }

private:
    std::atomic<std::int64_t> value_{0};
};

// Every series of one stage; each carries the label stage="NAME". Registering the same name
// and labels twice returns the same Metric, so a loop may look its series up lazily.
class Registry {
public:
    explicit Registry(std::string stage);

    // The returned reference stays valid for the registry's lifetime. A name registered once
    // as a counter and once as a gauge is a bug: std::logic_error.
    Metric& counter(const std::string& name, const std::string& help, const Labels& labels = {});
    Metric& gauge(const std::string& name, const std::string& help, const Labels& labels = {});

    const std::string& stage() const { return stage_; }
    // The text exposition format (version 0.0.4), families sorted by name.
    std::string render() const;

private:
    struct Family {
        Kind kind;
        std::string help;
        std::map<std::string, std::unique_ptr<Metric>> series;  // by rendered label set
    };
    Metric& find_or_add(Kind kind, const std::string& name, const std::string& help,
                        const Labels& labels);

    std::string stage_;
    mutable std::mutex mutex_;  // guards the maps; values are atomics read without it
    std::map<std::string, Family> families_;
};

// Serves GET /metrics (and GET /healthz, for container health checks) over HTTP/1.0 on its
// own thread, one short connection at a time: requests are capped in size and time, so a
// stuck or hostile client costs at most a couple of seconds and a few KiB.
class HttpExporter {
public:
    // port 0 picks a free port (tests); bind_address is an IPv4 address ("0.0.0.0" in
    // containers, "127.0.0.1" in tests). Throws std::runtime_error when it cannot listen.
    HttpExporter(const Registry& registry, std::uint16_t port,
                 const std::string& bind_address = "0.0.0.0");
    ~HttpExporter();
    HttpExporter(const HttpExporter&) = delete;
    HttpExporter& operator=(const HttpExporter&) = delete;

    std::uint16_t port() const { return port_; }

private:
    void serve();
    void answer(int client) const;

    const Registry& registry_;
    int listen_fd_ = -1;
    int wake_read_ = -1;
    int wake_write_ = -1;
    std::uint16_t port_ = 0;
    std::thread thread_;
};

}  // namespace pw::bus::metrics
