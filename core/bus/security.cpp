#include "core/bus/security.hpp"

#include <sys/stat.h>

#include <array>
#include <chrono>
#include <cstring>
#include <fstream>
#include <stdexcept>

#include <spdlog/spdlog.h>
#include <zmq.h>

namespace pw::bus {

namespace {

// RFC 27: the ZAP handler of a context listens here.
constexpr const char* kZapEndpoint = "inproc://zeromq.zap.01";
// libzmq's draft option: refuse the handshake when no ZAP handler answers instead of admitting.
constexpr int kZapEnforceDomain = 93;
constexpr std::size_t kMaxKeyFileBytes = 1 << 20;
constexpr std::size_t kMaxZapFrames = 16;
constexpr std::size_t kCurveKeyBytes = 32;
constexpr auto kPollPeriod = std::chrono::milliseconds(100);

std::string_view trim(std::string_view text) {
    const auto first = text.find_first_not_of(" \t\r\n");
    if (first == std::string_view::npos) return {};
    const auto last = text.find_last_not_of(" \t\r\n");
    return text.substr(first, last - first + 1);
}

bool is_z85_key(std::string_view key) {
    if (key.size() != kZ85KeyLength) return false;
    std::array<std::uint8_t, kCurveKeyBytes> decoded{};
    const std::string terminated(key);
    return zmq_z85_decode(decoded.data(), terminated.c_str()) != nullptr;
}

std::string read_small_file(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    if (!in) throw std::runtime_error(path + ": cannot open: " + std::strerror(errno));
    std::string text(kMaxKeyFileBytes + 1, '\0');
    in.read(text.data(), static_cast<std::streamsize>(text.size()));
    text.resize(static_cast<std::size_t>(in.gcount()));
    if (text.size() > kMaxKeyFileBytes) throw std::runtime_error(path + ": too large for a key file");
    return text;
}

std::string frame_text(const zmq::message_t& frame) { return frame.to_string(); }

}  // namespace

const AllowedKey* CurveConfig::find_key(std::string_view key) const {
    for (const auto& entry : allowed) {
        if (entry.key == key) return &entry;
    }
    return nullptr;
}

const AllowedKey* CurveConfig::find_name(std::string_view name) const {
    for (const auto& entry : allowed) {
        if (entry.name == name) return &entry;
    }
    return nullptr;
}

Result<CurveKeyPair> make_key_pair() {
    if (zmq_has("curve") == 0) return make_error("this libzmq was built without CURVE");
    std::array<char, kZ85KeyLength + 1> public_key{};
    std::array<char, kZ85KeyLength + 1> secret_key{};
    if (zmq_curve_keypair(public_key.data(), secret_key.data()) != 0) {
        return make_error(std::string("zmq_curve_keypair: ") + zmq_strerror(zmq_errno()));
    }
    return CurveKeyPair{public_key.data(), secret_key.data()};
}

Result<CurveKeyPair> parse_secret_key(std::string_view text) {
    const std::string_view key = trim(text);
    if (!is_z85_key(key)) {
        return make_error("not a CURVE secret key (expected " + std::to_string(kZ85KeyLength) +
                          " Z85 characters)");
    }
    const std::string secret(key);
    std::array<char, kZ85KeyLength + 1> public_key{};
    if (zmq_curve_public(public_key.data(), secret.c_str()) != 0) {
        return make_error(std::string("zmq_curve_public: ") + zmq_strerror(zmq_errno()));
    }
    return CurveKeyPair{public_key.data(), secret};
}

Result<std::vector<AllowedKey>> parse_allow_list(std::string_view text) {
    // '#' is a Z85 character, so a comment is a word that starts with '#' where no key is.
    const auto next_word = [](std::string_view& rest) {
        rest = trim(rest);
        const auto end = rest.find_first_of(" \t");
        const std::string_view word = rest.substr(0, end);
        rest = end == std::string_view::npos ? std::string_view{} : rest.substr(end);
        return word;
    };
    std::vector<AllowedKey> keys;
    std::size_t line_number = 0;
    while (!text.empty()) {
        ++line_number;
        const auto end = text.find('\n');
        std::string_view rest = text.substr(0, end);
        text = end == std::string_view::npos ? std::string_view{} : text.substr(end + 1);
        const std::string_view key = next_word(rest);
        if (key.empty() || (key.front() == '#' && !is_z85_key(key))) continue;
        const auto where = "line " + std::to_string(line_number) + ": ";
        if (!is_z85_key(key)) return make_error(where + "not a Z85 CURVE public key");
        std::string_view name = next_word(rest);
        if (!name.empty() && name.front() == '#') name = {};
        else if (const auto extra = next_word(rest); !extra.empty() && extra.front() != '#') {
            return make_error(where + "expected 'KEY [NAME] [# comment]', found more words");
        }
        keys.push_back(AllowedKey{std::string(key), std::string(name)});
    }
    return keys;
}

CurveConfig load_curve_config(const std::string& key_path, const std::string& allow_path) {
    CurveConfig config;
    if (key_path.empty() && allow_path.empty()) return config;
    if (key_path.empty() || allow_path.empty()) {
        throw std::runtime_error("--curve-key and --curve-allow go together: give both or neither");
    }
    struct stat info {};
    if (::stat(key_path.c_str(), &info) == 0 && (info.st_mode & (S_IRWXG | S_IRWXO)) != 0) {
        spdlog::warn("{}: the secret key is readable by others (chmod 600 it)", key_path);
    }
    auto own = parse_secret_key(read_small_file(key_path));
    if (!own) throw std::runtime_error(key_path + ": " + own.error().describe());
    auto allowed = parse_allow_list(read_small_file(allow_path));
    if (!allowed) throw std::runtime_error(allow_path + ": " + allowed.error().describe());
    config.own = std::move(own.value());
    config.allowed = std::move(allowed.value());
    return config;
}

void secure_client(zmq::socket_t& socket, const CurveConfig& config, std::string_view server_name) {
    if (!config.enabled()) return;
    const AllowedKey* server = config.find_name(server_name);
    if (server == nullptr) {
        throw std::runtime_error("the allow-list names no '" + std::string(server_name) +
                                 "' key, so its socket cannot be checked");
    }
    socket.set(zmq::sockopt::curve_serverkey, server->key);
    socket.set(zmq::sockopt::curve_publickey, config.own->public_key);
    socket.set(zmq::sockopt::curve_secretkey, config.own->secret_key);
}

Gatekeeper::Gatekeeper(zmq::context_t& context, const CurveConfig& config)
    : context_(&context), config_(config) {
    if (!config_.enabled()) return;
    zap_.emplace(context, zmq::socket_type::router);
    zap_->set(zmq::sockopt::linger, 0);
    try {
        zap_->bind(kZapEndpoint);
    } catch (const zmq::error_t& error) {
        throw std::runtime_error(std::string("cannot start the ZAP handler: ") + error.what());
    }
    thread_ = std::thread([this] { run(); });
}

Gatekeeper::~Gatekeeper() {
    stop_ = true;
    if (thread_.joinable()) thread_.join();
}

void Gatekeeper::secure(zmq::socket_t& socket, const std::string& socket_name) {
    if (!config_.enabled()) return;
    socket.set(zmq::sockopt::curve_server, 1);
    socket.set(zmq::sockopt::curve_secretkey, config_.own->secret_key);
    socket.set(zmq::sockopt::zap_domain, socket_name);
    // Only where libzmq has its draft API; elsewhere the Gatekeeper's lifetime covers it.
    const int enforce = 1;
    zmq_setsockopt(socket.handle(), kZapEnforceDomain, &enforce, sizeof enforce);

    const std::string endpoint = "inproc://pw-gatekeeper-" +
                                 std::to_string(reinterpret_cast<std::uintptr_t>(this)) + "-" +
                                 std::to_string(next_monitor_++);
    // A client that fails before ZAP (no CURVE, garbage) is only visible to a monitor.
    const int events = ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL | ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL;
    if (zmq_socket_monitor(socket.handle(), endpoint.c_str(), events) != 0) {
        throw std::runtime_error(std::string("cannot watch the ") + socket_name +
                                 " socket: " + zmq_strerror(zmq_errno()));
    }
    zmq::socket_t monitor(*context_, zmq::socket_type::pair);
    monitor.set(zmq::sockopt::linger, 0);
    monitor.connect(endpoint);
    const std::lock_guard lock(handoff_mutex_);
    handoff_.push_back(Watched{std::move(monitor), socket_name});
}

void Gatekeeper::run() {
    try {
        while (!stop_) {
            {
                const std::lock_guard lock(handoff_mutex_);
                for (auto& watched : handoff_) watched_.push_back(std::move(watched));
                handoff_.clear();
            }
            std::vector<zmq::pollitem_t> items;
            items.push_back({zap_->handle(), 0, ZMQ_POLLIN, 0});
            for (auto& watched : watched_) items.push_back({watched.monitor.handle(), 0, ZMQ_POLLIN, 0});
            zmq::poll(items.data(), items.size(), kPollPeriod);
            if ((items[0].revents & ZMQ_POLLIN) != 0) answer_zap();
            for (std::size_t i = 0; i < watched_.size(); ++i) {
                if ((items[i + 1].revents & ZMQ_POLLIN) != 0) read_monitor(watched_[i]);
            }
        }
    } catch (const zmq::error_t& error) {
        // ETERM: the context is going away; closing our sockets below lets it finish.
        if (error.num() != ETERM) spdlog::error("ZAP handler stopped: {}", error.what());
    }
    zap_.reset();
    watched_.clear();
}

void Gatekeeper::answer_zap() {
    std::vector<zmq::message_t> frames;
    bool more = true;
    while (more) {
        zmq::message_t frame;
        if (!zap_->recv(frame, zmq::recv_flags::none)) return;
        more = frame.more();
        if (frames.size() < kMaxZapFrames) frames.push_back(std::move(frame));
    }
    // [routing id][empty][version][request id][domain][address][identity][mechanism][credentials]
    if (frames.size() < 8) {
        spdlog::warn("ZAP handler: dropped a request of {} frames", frames.size());
        return;
    }
    const std::string domain = frame_text(frames[4]);
    const std::string address = frame_text(frames[5]);
    const std::string mechanism = frame_text(frames[7]);
    std::string key = "(none)";
    const AllowedKey* allowed = nullptr;
    if (mechanism == "CURVE" && frames.size() >= 9 && frames[8].size() == kCurveKeyBytes) {
        std::array<char, kZ85KeyLength + 1> text{};
        if (zmq_z85_encode(text.data(), frames[8].data<std::uint8_t>(), kCurveKeyBytes) != nullptr) {
            key = text.data();
            allowed = config_.find_key(key);
        }
    }
    if (allowed != nullptr) {
        ++admitted_;
        spdlog::debug("admitted {} ({}) from {} on {}", allowed->name, key, address, domain);
    } else {
        ++refused_;
        if (const auto repeats = should_log(key + " " + address + " " + domain)) {
            spdlog::warn("refused key {} from {} on {}: not on the allow-list{}", key, address,
                         domain, *repeats);
        }
    }
    const bool ok = allowed != nullptr;
    const std::string user_id = ok ? (allowed->name.empty() ? key : allowed->name) : "";
    const std::string status = ok ? "200" : "400";
    const std::string text = ok ? "OK" : "key not allowed";
    const auto more_flag = zmq::send_flags::sndmore;
    zap_->send(frames[0], more_flag);
    zap_->send(zmq::message_t(), more_flag);
    zap_->send(zmq::str_buffer("1.0"), more_flag);
    zap_->send(frames[3], more_flag);
    zap_->send(zmq::buffer(status), more_flag);
    zap_->send(zmq::buffer(text), more_flag);
    zap_->send(zmq::buffer(user_id), more_flag);
    zap_->send(zmq::message_t(), zmq::send_flags::none);
}

void Gatekeeper::read_monitor(Watched& watched) {
    zmq::message_t event_frame;
    if (!watched.monitor.recv(event_frame, zmq::recv_flags::dontwait)) return;
    zmq::message_t endpoint;
    if (event_frame.more() && !watched.monitor.recv(endpoint, zmq::recv_flags::none)) return;
    if (event_frame.size() < 6) return;
    std::uint16_t event = 0;
    std::uint32_t value = 0;
    std::memcpy(&event, event_frame.data(), sizeof event);
    std::memcpy(&value, static_cast<const char*>(event_frame.data()) + sizeof event, sizeof value);
    ++refused_;
    if (const auto repeats = should_log(watched.socket_name + " " + std::to_string(value))) {
        spdlog::warn("refused a client on {} ({}): handshake failed (no CURVE or a bad one, "
                     "event {:#x}, error {:#x}){}",
                     watched.socket_name, endpoint.to_string(), event, value, *repeats);
    }
}

}  // namespace pw::bus

namespace pw::bus {

std::optional<std::string> Gatekeeper::should_log(const std::string& what) {
    const auto now = std::chrono::steady_clock::now();
    // Bounded however many distinct strangers knock: forgetting them only means more lines.
    if (recent_refusals_.size() >= kMaxRememberedRefusals) recent_refusals_.clear();
    auto [entry, fresh] = recent_refusals_.try_emplace(what, RepeatedRefusal{now, 0});
    if (fresh) return std::string();
    if (now - entry->second.last_logged < kRefusalLogPeriod) {
        ++entry->second.unlogged;
        return std::nullopt;
    }
    const std::uint64_t unlogged = entry->second.unlogged;
    entry->second = RepeatedRefusal{now, 0};
    if (unlogged == 0) return std::string();
    return " (" + std::to_string(unlogged) + " more like it since the last line)";
}

}  // namespace pw::bus
