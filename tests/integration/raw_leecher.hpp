#pragma once
// A scripted BitTorrent peer for the tests that play hostile (or plain) leechers against
// whatever listens on a port of 127.0.0.1: a peer_worker the test drives, or a whole
// `piecework seed`. Header-only, so tests that link only pw_core use it too.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <sstream>
#include <string>
#include <vector>

#include "core/sha1.hpp"
#include "core/wire.hpp"
#include "tests/integration/harness.hpp"

namespace pw::test {

// A scripted peer that connects to the worker's port: sends a handshake (fast or not), then
// whatever the test says, and reads what comes back. Blocking socket, polled with timeouts.
class RawLeecher {
public:
    RawLeecher(std::uint16_t port, const Sha1Digest& info_hash, const std::string& peer_id, bool fast,
               int receive_buffer = 0) {
        fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
        if (receive_buffer > 0) {
            ::setsockopt(fd_, SOL_SOCKET, SO_RCVBUF, &receive_buffer, sizeof receive_buffer);
        }
        sockaddr_in address{};
        address.sin_family = AF_INET;
        address.sin_port = htons(port);
        address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        if (::connect(fd_, reinterpret_cast<const sockaddr*>(&address), sizeof address) != 0) {
            closed_ = true;
            return;
        }
        sockaddr_in local{};
        socklen_t length = sizeof local;
        ::getsockname(fd_, reinterpret_cast<sockaddr*>(&local), &length);
        local_port_ = ntohs(local.sin_port);
        wire::Handshake ours;
        ours.info_hash = info_hash;
        std::copy_n(peer_id.begin(), std::min<std::size_t>(20, peer_id.size()), ours.peer_id.begin());
        if (fast) ours.set_fast();
        const auto bytes = wire::encode_handshake(ours);
        send_bytes(std::vector<std::uint8_t>(bytes.begin(), bytes.end()));
        wire::ParserLimits limits;
        limits.fast = fast;
        limits.check_requests = false;  // the worker's rejects echo whatever was asked
        parser_ = std::make_unique<wire::StreamParser>(limits);
    }
    ~RawLeecher() {
        if (fd_ >= 0) ::close(fd_);
    }
    RawLeecher(const RawLeecher&) = delete;
    RawLeecher& operator=(const RawLeecher&) = delete;

    // The key the worker knows it by (bus::peer_key of an IPv4 peer).
    std::string key() const { return "127.0.0.1:" + std::to_string(local_port_); }
    bool closed() const { return closed_; }
    const std::optional<wire::Handshake>& theirs() const { return theirs_; }

    void send(const wire::Message& message) {
        std::vector<std::uint8_t> bytes;
        wire::encode(message, bytes);
        send_bytes(bytes);
    }
    void send_bytes(const std::vector<std::uint8_t>& bytes) {
        std::size_t sent = 0;
        while (sent < bytes.size() && !closed_) {
            const auto n = ::send(fd_, bytes.data() + sent, bytes.size() - sent, MSG_NOSIGNAL);
            if (n <= 0) {
                closed_ = true;
                break;
            }
            sent += static_cast<std::size_t>(n);
        }
    }

    // Reads until the worker's handshake is in; false when it closed first or time ran out.
    bool read_handshake(std::chrono::milliseconds timeout) {
        const auto deadline = std::chrono::steady_clock::now() + timeout;
        while (!theirs_ && !closed_ && std::chrono::steady_clock::now() < deadline) read_some();
        return theirs_.has_value();
    }
    // Hands each message to `on` until it says true (true), the worker closes (false) or the
    // time runs out (false).
    bool read_until(const std::function<bool(const wire::Message&)>& on, std::chrono::milliseconds timeout) {
        const auto deadline = std::chrono::steady_clock::now() + timeout;
        for (;;) {
            while (parser_) {
                auto next = parser_->next();
                if (!next.ok()) {
                    problem = next.error().describe();
                    closed_ = true;
                    return false;
                }
                if (!*next) break;
                if (on(**next)) return true;
            }
            if (closed_ || std::chrono::steady_clock::now() >= deadline) return false;
            read_some();
        }
    }
    // Reads (and drops) what comes until the worker closes the connection.
    bool wait_closed(std::chrono::milliseconds timeout) {
        read_until([](const wire::Message&) { return false; }, timeout);
        return closed_;
    }

    std::string problem;
    // Called while waiting for bytes (instead of sleeping): the test keeps the worker's
    // orchestrator alive meanwhile.
    std::function<void()> idle;

private:
    void read_some() {
        pollfd item{fd_, POLLIN, 0};
        if (idle) {
            if (::poll(&item, 1, 0) <= 0) {
                idle();
                if (::poll(&item, 1, 0) <= 0) return;
            }
        } else if (::poll(&item, 1, 50) <= 0) {
            return;
        }
        std::uint8_t buffer[65536];
        const auto n = ::read(fd_, buffer, sizeof buffer);
        if (n <= 0) {
            closed_ = true;
            return;
        }
        std::size_t used = 0;
        while (!theirs_ && used < static_cast<std::size_t>(n)) {
            handshake_.push_back(buffer[used++]);
            if (handshake_.size() == wire::kHandshakeSize) {
                std::array<std::uint8_t, wire::kHandshakeSize> bytes{};
                std::copy(handshake_.begin(), handshake_.end(), bytes.begin());
                auto decoded = wire::decode_handshake(bytes);
                if (!decoded.ok()) {
                    problem = decoded.error().describe();
                    closed_ = true;
                    return;
                }
                theirs_ = *decoded;
            }
        }
        if (used < static_cast<std::size_t>(n)) {
            parser_->append(std::span<const std::uint8_t>(buffer + used, static_cast<std::size_t>(n) - used));
        }
    }

    int fd_ = -1;
    std::uint16_t local_port_ = 0;
    bool closed_ = false;
    std::vector<std::uint8_t> handshake_;
    std::optional<wire::Handshake> theirs_;
    std::unique_ptr<wire::StreamParser> parser_;
};

inline std::string peer_id_for(int n) {
    std::string id = "-XX0001-lch";
    id += std::to_string(100000 + n);
    id.resize(20, 'x');
    return id;
}

// Resident memory of a process, from /proc.
inline std::uint64_t resident_kib(pid_t pid) {
    std::istringstream status(read_text_file("/proc/" + std::to_string(pid) + "/status"));
    std::string line;
    while (std::getline(status, line)) {
        if (line.rfind("VmRSS:", 0) == 0) return std::stoull(line.substr(6));
    }
    return 0;
}

}  // namespace pw::test
