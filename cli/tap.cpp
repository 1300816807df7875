#include "cli/tap.hpp"

#include <stdexcept>

#include <zmq.hpp>

namespace pw::cli {

namespace {

// A trace line is a few KiB at most (the envelope text is capped); anything bigger is not one.
constexpr std::int64_t kMaxLineBytes = 64 * 1024;

}  // namespace

int run_tap(const TapOptions& options, std::ostream& out, const std::function<bool()>& stop) {
    zmq::context_t context(1);
    zmq::socket_t sub(context, zmq::socket_type::sub);
    sub.set(zmq::sockopt::maxmsgsize, kMaxLineBytes);
    sub.set(zmq::sockopt::rcvhwm, 10000);
    sub.set(zmq::sockopt::linger, 0);
    sub.set(zmq::sockopt::subscribe, "");
    for (const auto& endpoint : options.endpoints) {
        try {
            sub.connect(endpoint);
        } catch (const zmq::error_t& error) {
            throw std::runtime_error("tap: cannot connect to " + endpoint + ": " + error.what());
        }
    }
    const auto started = std::chrono::steady_clock::now();
    std::size_t lines = 0;
    while (!stop()) {
        if (options.count != 0 && lines >= options.count) break;
        if (options.timeout.count() != 0 && std::chrono::steady_clock::now() - started >= options.timeout) break;
        zmq::pollitem_t item{sub.handle(), 0, ZMQ_POLLIN, 0};
        zmq::poll(&item, 1, std::chrono::milliseconds(200));
        zmq::message_t line;
        while ((options.count == 0 || lines < options.count) && sub.recv(line, zmq::recv_flags::dontwait)) {
            out << line.to_string_view() << '\n';
            ++lines;
        }
        out.flush();
    }
    return 0;
}

}  // namespace pw::cli
