#include "core/bus/metrics.hpp"

#include <cerrno>
#include <chrono>
#include <cstring>
#include <stdexcept>

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

namespace pw::bus::metrics {

namespace {

constexpr std::size_t kMaxRequestBytes = 4096;
constexpr auto kClientDeadline = std::chrono::seconds(2);

std::string escape_label_value(const std::string& value) {
    std::string out;
    for (const char c : value) {
        if (c == '\\') out += "\\\\";
        else if (c == '"') out += "\\\"";
        else if (c == '\n') out += "\\n";
        else out += c;
    }
    return out;
}

std::string escape_help(const std::string& help) {
    std::string out;
    for (const char c : help) {
        if (c == '\\') out += "\\\\";
        else if (c == '\n') out += "\\n";
        else out += c;
    }
    return out;
}

int remaining_ms(std::chrono::steady_clock::time_point deadline) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    return left.count() < 0 ? 0 : static_cast<int>(left.count());
}

// Writes all of `text` or gives up at the deadline (a client that stops reading).
void send_all(int fd, const std::string& text, std::chrono::steady_clock::time_point deadline) {
    std::size_t sent = 0;
    while (sent < text.size()) {
        pollfd item{fd, POLLOUT, 0};
        if (::poll(&item, 1, remaining_ms(deadline)) <= 0) return;
        const ssize_t n = ::send(fd, text.data() + sent, text.size() - sent, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) return;
        sent += static_cast<std::size_t>(n);
    }
}

std::string response(const char* status, const char* content_type, const std::string& body) {
    return std::string("HTTP/1.0 ") + status + "\r\nContent-Type: " + content_type +
           "\r\nContent-Length: " + std::to_string(body.size()) +
           "\r\nConnection: close\r\n\r\n" + body;
}

// Closing with unread request bytes would reset the connection and could destroy the answer
// before the client reads it; so stop writing, read until the client hangs up (bounded).
void linger_close(int fd) {
    ::shutdown(fd, SHUT_WR);
    const auto deadline = std::chrono::steady_clock::now() + kClientDeadline;
    char sink[1024];
    std::size_t drained = 0;
    while (drained < 16 * kMaxRequestBytes) {
        pollfd item{fd, POLLIN, 0};
        if (::poll(&item, 1, remaining_ms(deadline)) <= 0) break;
        const ssize_t n = ::recv(fd, sink, sizeof sink, 0);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) break;
        drained += static_cast<std::size_t>(n);
    }
    ::close(fd);
}

}  // namespace

Registry::Registry(std::string stage) : stage_(std::move(stage)) {}

Metric& Registry::counter(const std::string& name, const std::string& help, const Labels& labels) {
    return find_or_add(Kind::counter, name, help, labels);
}

Metric& Registry::gauge(const std::string& name, const std::string& help, const Labels& labels) {
    return find_or_add(Kind::gauge, name, help, labels);
}

Metric& Registry::find_or_add(Kind kind, const std::string& name, const std::string& help,
                              const Labels& labels) {
    std::string label_text = "stage=\"" + escape_label_value(stage_) + "\"";
    for (const auto& [key, value] : labels) {
        label_text += "," + key + "=\"" + escape_label_value(value) + "\"";
    }
    std::lock_guard lock(mutex_);
    auto [family, added] = families_.try_emplace(name, Family{kind, help, {}});
    if (!added && family->second.kind != kind) {
        throw std::logic_error("metric " + name + " registered as both counter and gauge");
    }
    auto& slot = family->second.series[label_text];
    if (!slot) slot = std::make_unique<Metric>();
    return *slot;
}

std::string Registry::render() const {
    std::string out;
    std::lock_guard lock(mutex_);
    for (const auto& [name, family] : families_) {
        out += "# HELP " + name + " " + escape_help(family.help) + "\n";
        out += "# TYPE " + name + (family.kind == Kind::counter ? " counter\n" : " gauge\n");
        for (const auto& [labels, metric] : family.series) {
            out += name + "{" + labels + "} " + std::to_string(metric->value()) + "\n";
        }
    }
    return out;
}

HttpExporter::HttpExporter(const Registry& registry, std::uint16_t port,
                           const std::string& bind_address)
    : registry_(registry) {
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_port = htons(port);
    if (::inet_pton(AF_INET, bind_address.c_str(), &address.sin_addr) != 1) {
        throw std::runtime_error("metrics: not an IPv4 address: " + bind_address);
    }
    listen_fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (listen_fd_ < 0) throw std::runtime_error(std::string("metrics: socket: ") + std::strerror(errno));
    const int yes = 1;
    ::setsockopt(listen_fd_, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof yes);
    int wake[2];
    if (::bind(listen_fd_, reinterpret_cast<const sockaddr*>(&address), sizeof address) != 0 ||
        ::listen(listen_fd_, 16) != 0 || ::pipe2(wake, O_CLOEXEC) != 0) {
        const std::string why = std::strerror(errno);
        ::close(listen_fd_);
        throw std::runtime_error("metrics: cannot listen on " + bind_address + ":" +
                                 std::to_string(port) + ": " + why);
    }
    wake_read_ = wake[0];
    wake_write_ = wake[1];
    sockaddr_in bound{};
    socklen_t length = sizeof bound;
    ::getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&bound), &length);
    port_ = ntohs(bound.sin_port);
    thread_ = std::thread([this] { serve(); });
}

HttpExporter::~HttpExporter() {
    const char stop = 'x';
    [[maybe_unused]] const ssize_t ignored = ::write(wake_write_, &stop, 1);
    thread_.join();
    ::close(listen_fd_);
    ::close(wake_read_);
    ::close(wake_write_);
}

void HttpExporter::serve() {
    for (;;) {
        pollfd items[2] = {{listen_fd_, POLLIN, 0}, {wake_read_, POLLIN, 0}};
        if (::poll(items, 2, -1) < 0) {
            if (errno == EINTR) continue;
            return;
        }
        if (items[1].revents != 0) return;
        const int client = ::accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK);
        if (client < 0) continue;
        answer(client);
        linger_close(client);
    }
}

void HttpExporter::answer(int client) const {
    const auto deadline = std::chrono::steady_clock::now() + kClientDeadline;
    std::string request;
    char buffer[1024];
    // Only the request line matters; read until the header ends, the cap, or the deadline.
    while (request.find("\r\n\r\n") == std::string::npos && request.find("\n\n") == std::string::npos) {
        if (request.size() >= kMaxRequestBytes) {
            send_all(client, response("413 Request Entity Too Large", "text/plain", "too large\n"), deadline);
            return;
        }
        pollfd item{client, POLLIN, 0};
        if (::poll(&item, 1, remaining_ms(deadline)) <= 0) return;
        const ssize_t n = ::recv(client, buffer, sizeof buffer, 0);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) break;
        request.append(buffer, static_cast<std::size_t>(n));
    }
    const auto line_end = request.find_first_of("\r\n");
    const std::string line = request.substr(0, line_end);
    const auto first_space = line.find(' ');
    const auto second_space = line.find(' ', first_space == std::string::npos ? 0 : first_space + 1);
    if (first_space == std::string::npos) {
        send_all(client, response("400 Bad Request", "text/plain", "bad request\n"), deadline);
        return;
    }
    const std::string method = line.substr(0, first_space);
    const std::string path = line.substr(first_space + 1, second_space == std::string::npos
                                                              ? std::string::npos
                                                              : second_space - first_space - 1);
    if (method != "GET") {
        send_all(client, response("405 Method Not Allowed", "text/plain", "GET only\n"), deadline);
    } else if (path == "/metrics") {
        send_all(client, response("200 OK", "text/plain; version=0.0.4", registry_.render()), deadline);
    } else if (path == "/healthz") {
        send_all(client, response("200 OK", "text/plain", "ok\n"), deadline);
    } else {
        send_all(client, response("404 Not Found", "text/plain", "try /metrics\n"), deadline);
    }
}

}  // namespace pw::bus::metrics
