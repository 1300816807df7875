#pragma once
// CurveZMQ between stages on different machines: every socket a stage binds is a CURVE server
// whose handshakes a ZAP handler (the Gatekeeper) admits only for the public keys on the
// deployment's allow-list; every socket a stage connects is a CURVE client that checks the
// binding stage's public key, found on the same list by that stage's name.
//
// Without keys nothing changes: the local mode (ipc://, `piecework download`) stays plain.
#include <atomic>
#include <chrono>
#include <map>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include <zmq.hpp>

#include "core/result.hpp"

namespace pw::bus {

// Keys in ZeroMQ's Z85 text form: 40 characters for 32 bytes.
inline constexpr std::size_t kZ85KeyLength = 40;

struct CurveKeyPair {
    std::string public_key;
    std::string secret_key;
};

// One allow-list line: "KEY [NAME]". The names of the binding stages ("orchestrator",
// "verifier", "writer") tell the connecting stages which key each server must prove it has.
struct AllowedKey {
    std::string key;
    std::string name;
};

struct CurveConfig {
    std::optional<CurveKeyPair> own;  // none: plain ZeroMQ, as in local mode
    std::vector<AllowedKey> allowed;

    bool enabled() const { return own.has_value(); }
    const AllowedKey* find_key(std::string_view key) const;
    const AllowedKey* find_name(std::string_view name) const;
};

// Name of the stage that binds each shared endpoint: its key is what clients expect.
inline constexpr std::string_view kControlServer = "orchestrator";
inline constexpr std::string_view kPiecesServer = "verifier";
inline constexpr std::string_view kVerifiedServer = "writer";
inline constexpr std::string_view kReadsServer = "writer";  // the workers' reads (--reads)

// A fresh pair from libzmq (fails when libzmq was built without CURVE).
Result<CurveKeyPair> make_key_pair();
// A secret key file's text (the Z85 key, surrounding whitespace ignored); the public half is
// derived from it.
Result<CurveKeyPair> parse_secret_key(std::string_view text);
// One key per line, an optional name after it, '#' starts a comment; blank lines ignored.
Result<std::vector<AllowedKey>> parse_allow_list(std::string_view text);

// Reads --curve-key and --curve-allow. Both empty: plain ZeroMQ. One without the other, an
// unreadable file or a bad key: throws (a start-up failure).
CurveConfig load_curve_config(const std::string& key_path, const std::string& allow_path);

// Makes a socket we connect a CURVE client that accepts only the server named `server_name`
// on the allow-list. Call before connect. Does nothing when `config` is not enabled; throws
// when the list has no such name.
void secure_client(zmq::socket_t& socket, const CurveConfig& config, std::string_view server_name);

// The server side of CURVE in one process (one ZeroMQ context): a ZAP handler on its own
// thread, which owns only the ZAP socket and the monitors of the secured sockets, admits the
// allow-listed keys and logs each refusal. Construct it before the sockets it secures and
// keep it alive until they are closed: a CURVE server with no ZAP handler admits anyone.
class Gatekeeper {
public:
    // Does nothing (no thread) when `config` is not enabled. Throws when the process's
    // context already has a ZAP handler.
    Gatekeeper(zmq::context_t& context, const CurveConfig& config);
    ~Gatekeeper();
    Gatekeeper(const Gatekeeper&) = delete;
    Gatekeeper& operator=(const Gatekeeper&) = delete;

    // Makes a socket we bind a CURVE server in ZAP domain `socket_name` (the name the refusal
    // lines give) and watches it for clients that fail the handshake without reaching ZAP
    // (no CURVE at all). Call before bind. Does nothing when not enabled.
    void secure(zmq::socket_t& socket, const std::string& socket_name);

    std::uint64_t admitted() const { return admitted_.load(); }
    std::uint64_t refused() const { return refused_.load(); }

private:
    struct Watched {
        zmq::socket_t monitor;
        std::string socket_name;
    };

    struct RepeatedRefusal {
        std::chrono::steady_clock::time_point last_logged;
        std::uint64_t unlogged = 0;
    };
    static constexpr std::chrono::seconds kRefusalLogPeriod{30};
    static constexpr std::size_t kMaxRememberedRefusals = 1024;

    void run();
    void answer_zap();
    void read_monitor(Watched& watched);
    // A refused client retries every few hundred ms: one line per client and socket per
    // kRefusalLogPeriod, carrying how many were not logged. nullopt: stay quiet; else the
    // suffix for the line.
    std::optional<std::string> should_log(const std::string& what);

    zmq::context_t* context_;
    CurveConfig config_;
    std::optional<zmq::socket_t> zap_;
    std::mutex handoff_mutex_;
    std::vector<Watched> handoff_;  // monitors made by secure(), not yet taken by the thread
    std::vector<Watched> watched_;  // the thread's own
    std::map<std::string, RepeatedRefusal> recent_refusals_;  // the thread's own
    std::atomic<bool> stop_{false};
    std::atomic<std::uint64_t> admitted_{0};
    std::atomic<std::uint64_t> refused_{0};
    unsigned next_monitor_ = 0;
    std::thread thread_;
};

}  // namespace pw::bus
