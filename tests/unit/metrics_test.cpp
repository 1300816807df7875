// The metrics registry's exposition text, and the HTTP exporter scraped over 127.0.0.1.
#include "core/bus/metrics.hpp"

#include <cstring>
#include <string>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <gtest/gtest.h>

namespace pw::bus::metrics {
namespace {

// Sends `request` to 127.0.0.1:port and returns everything the server answered.
std::string http_exchange(std::uint16_t port, const std::string& request) {
    const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    EXPECT_GE(fd, 0);
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_port = htons(port);
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    EXPECT_EQ(::connect(fd, reinterpret_cast<const sockaddr*>(&address), sizeof address), 0);
    if (!request.empty()) {
        EXPECT_EQ(::send(fd, request.data(), request.size(), MSG_NOSIGNAL),
                  static_cast<ssize_t>(request.size()));
    }
    std::string answer;
    char buffer[4096];
    for (;;) {
        pollfd item{fd, POLLIN, 0};
        if (::poll(&item, 1, 5000) <= 0) break;
        const ssize_t n = ::recv(fd, buffer, sizeof buffer, 0);
        if (n <= 0) break;
        answer.append(buffer, static_cast<std::size_t>(n));
    }
    ::close(fd);
    return answer;
}

TEST(MetricsRegistry, RendersHelpTypeAndStageLabel) {
    Registry registry("verifier-1");
    registry.counter("piecework_pieces_verified_total", "Pieces whose SHA-1 matched").add(3);
    registry.gauge("piecework_queue_depth", "Pieces waiting").set(7);
    const std::string text = registry.render();
    EXPECT_NE(text.find("# HELP piecework_pieces_verified_total Pieces whose SHA-1 matched\n"),
              std::string::npos);
    EXPECT_NE(text.find("# TYPE piecework_pieces_verified_total counter\n"), std::string::npos);
    EXPECT_NE(text.find("piecework_pieces_verified_total{stage=\"verifier-1\"} 3\n"), std::string::npos);
    EXPECT_NE(text.find("# TYPE piecework_queue_depth gauge\n"), std::string::npos);
    EXPECT_NE(text.find("piecework_queue_depth{stage=\"verifier-1\"} 7\n"), std::string::npos);
}

TEST(MetricsRegistry, SameNameAndLabelsIsTheSameSeries) {
    Registry registry("w");
    Metric& first = registry.counter("x_total", "x", {{"type", "Hello"}});
    Metric& again = registry.counter("x_total", "x", {{"type", "Hello"}});
    Metric& other = registry.counter("x_total", "x", {{"type", "Welcome"}});
    EXPECT_EQ(&first, &again);
    EXPECT_NE(&first, &other);
    first.add();
    again.add();
    const std::string text = registry.render();
    EXPECT_NE(text.find("x_total{stage=\"w\",type=\"Hello\"} 2\n"), std::string::npos);
    EXPECT_NE(text.find("x_total{stage=\"w\",type=\"Welcome\"} 0\n"), std::string::npos);
    // HELP and TYPE once per family, not per series.
    EXPECT_EQ(text.find("# TYPE x_total"), text.rfind("# TYPE x_total"));
    EXPECT_THROW(registry.gauge("x_total", "x"), std::logic_error);
}

TEST(MetricsRegistry, EscapesLabelValues) {
    Registry registry("we\"ird\\name\n");
    registry.gauge("g", "help").set(-1);
    EXPECT_NE(registry.render().find("g{stage=\"we\\\"ird\\\\name\\n\"} -1\n"), std::string::npos);
}

TEST(HttpExporter, ServesMetricsOverLoopback) {
    Registry registry("orchestrator");
    Metric& pieces = registry.counter("piecework_pieces_written_total", "Pieces on disk");
    HttpExporter exporter(registry, 0, "127.0.0.1");
    ASSERT_NE(exporter.port(), 0);
    pieces.add(41);
    pieces.add();
    const std::string answer = http_exchange(exporter.port(), "GET /metrics HTTP/1.0\r\n\r\n");
    EXPECT_EQ(answer.rfind("HTTP/1.0 200 OK\r\n", 0), 0u) << answer;
    EXPECT_NE(answer.find("Content-Type: text/plain; version=0.0.4\r\n"), std::string::npos);
    EXPECT_NE(answer.find("\r\n\r\n# HELP piecework_pieces_written_total Pieces on disk\n"),
              std::string::npos);
    EXPECT_NE(answer.find("piecework_pieces_written_total{stage=\"orchestrator\"} 42\n"),
              std::string::npos);
}

TEST(HttpExporter, HealthNotFoundAndWrongMethod) {
    Registry registry("writer");
    HttpExporter exporter(registry, 0, "127.0.0.1");
    EXPECT_EQ(http_exchange(exporter.port(), "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
                  .rfind("HTTP/1.0 200 OK", 0), 0u);
    EXPECT_EQ(http_exchange(exporter.port(), "GET /secret HTTP/1.0\r\n\r\n")
                  .rfind("HTTP/1.0 404", 0), 0u);
    EXPECT_EQ(http_exchange(exporter.port(), "POST /metrics HTTP/1.0\r\n\r\n")
                  .rfind("HTTP/1.0 405", 0), 0u);
    EXPECT_EQ(http_exchange(exporter.port(), "\r\n\r\n").rfind("HTTP/1.0 400", 0), 0u);
}

TEST(HttpExporter, OversizedRequestIsRefusedAndServerKeepsServing) {
    Registry registry("writer");
    HttpExporter exporter(registry, 0, "127.0.0.1");
    const std::string huge = "GET /" + std::string(10000, 'a');
    EXPECT_EQ(http_exchange(exporter.port(), huge).rfind("HTTP/1.0 413", 0), 0u);
    EXPECT_EQ(http_exchange(exporter.port(), "GET /metrics HTTP/1.0\r\n\r\n").rfind("HTTP/1.0 200", 0), 0u);
}

TEST(HttpExporter, BusyPortIsAStartUpError) {
    Registry registry("writer");
    HttpExporter first(registry, 0, "127.0.0.1");
    EXPECT_THROW(HttpExporter(registry, first.port(), "127.0.0.1"), std::runtime_error);
    EXPECT_THROW(HttpExporter(registry, 0, "not-an-address"), std::runtime_error);
}

}  // namespace
}  // namespace pw::bus::metrics
