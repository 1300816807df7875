// CurveZMQ between stages: key files, the allow-list, and a Gatekeeper that admits only
// listed keys over real tcp://127.0.0.1 sockets.
#include "core/bus/security.hpp"

#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <memory>
#include <sstream>
#include <thread>

#include <gtest/gtest.h>
#include <spdlog/sinks/ostream_sink.h>
#include <spdlog/spdlog.h>

#include "cli/keygen.hpp"

namespace pw::bus {
namespace {

using namespace std::chrono_literals;

CurveKeyPair fresh_pair() {
    auto pair = make_key_pair();
    EXPECT_TRUE(pair.ok()) << pair.error().describe();
    return pair.value();
}

CurveConfig config_for(const CurveKeyPair& own, std::vector<AllowedKey> allowed) {
    CurveConfig config;
    config.own = own;
    config.allowed = std::move(allowed);
    return config;
}

// Waits for one message on `socket`; empty when none arrives within `wait`.
std::optional<std::string> receive_within(zmq::socket_t& socket, std::chrono::milliseconds wait) {
    zmq::pollitem_t item{socket.handle(), 0, ZMQ_POLLIN, 0};
    zmq::poll(&item, 1, wait);
    zmq::message_t message;
    if (!socket.recv(message, zmq::recv_flags::dontwait)) return std::nullopt;
    return message.to_string();
}

template <class Condition>
bool eventually(Condition condition, std::chrono::milliseconds limit = 5000ms) {
    const auto deadline = std::chrono::steady_clock::now() + limit;
    while (std::chrono::steady_clock::now() < deadline) {
        if (condition()) return true;
        std::this_thread::sleep_for(20ms);
    }
    return condition();
}

// Captures what the Gatekeeper logs (from its own thread) for the length of a test.
class CapturedLog {
public:
    CapturedLog() : previous_(spdlog::default_logger()) {
        auto sink = std::make_shared<spdlog::sinks::ostream_sink_mt>(text_);
        spdlog::set_default_logger(std::make_shared<spdlog::logger>("security_test", sink));
    }
    ~CapturedLog() { spdlog::set_default_logger(previous_); }
    std::string text() {
        spdlog::default_logger()->flush();
        return text_.str();
    }

private:
    std::ostringstream text_;
    std::shared_ptr<spdlog::logger> previous_;
};

// A verifier-like server: a PULL bound on 127.0.0.1 behind a Gatekeeper.
class SecuredServer {
public:
    explicit SecuredServer(std::vector<AllowedKey> allowed)
        : keys_(fresh_pair()),
          config_(config_for(keys_, std::move(allowed))),
          gatekeeper_(context_, config_),
          pull_(context_, zmq::socket_type::pull) {
        pull_.set(zmq::sockopt::linger, 0);
        gatekeeper_.secure(pull_, "pieces");
        pull_.bind("tcp://127.0.0.1:*");
        endpoint_ = pull_.get(zmq::sockopt::last_endpoint);
    }
    const CurveKeyPair& keys() const { return keys_; }
    const std::string& endpoint() const { return endpoint_; }
    zmq::socket_t& socket() { return pull_; }
    const Gatekeeper& gatekeeper() const { return gatekeeper_; }

private:
    CurveKeyPair keys_;
    CurveConfig config_;
    zmq::context_t context_;
    Gatekeeper gatekeeper_;  // before the socket: it must outlive it
    zmq::socket_t pull_;
    std::string endpoint_;
};

// A worker-like client in its own context (as if on another machine).
class Client {
public:
    Client(const std::string& endpoint, const CurveConfig& config)
        : push_(context_, zmq::socket_type::push) {
        push_.set(zmq::sockopt::linger, 0);
        secure_client(push_, config, kPiecesServer);
        push_.connect(endpoint);
    }
    void send(const std::string& text) { push_.send(zmq::buffer(text), zmq::send_flags::dontwait); }

private:
    zmq::context_t context_;
    zmq::socket_t push_;
};

TEST(SecurityTest, AllowListReadsKeysNamesAndComments) {
    const CurveKeyPair a = fresh_pair();
    const CurveKeyPair b = fresh_pair();
    const std::string text = "# the deployment\n\n" + a.public_key + " orchestrator  # host A\n" +
                             "  " + b.public_key + "\r\n";
    auto list = parse_allow_list(text);
    ASSERT_TRUE(list.ok()) << list.error().describe();
    ASSERT_EQ(list->size(), 2u);
    EXPECT_EQ((*list)[0].key, a.public_key);
    EXPECT_EQ((*list)[0].name, "orchestrator");
    EXPECT_EQ((*list)[1].key, b.public_key);
    EXPECT_EQ((*list)[1].name, "");
}

TEST(SecurityTest, AllowListRefusesBadLinesWithTheirNumber) {
    auto short_key = parse_allow_list("# ok\nabc verifier\n");
    ASSERT_FALSE(short_key.ok());
    EXPECT_NE(short_key.error().message.find("line 2"), std::string::npos);
    const CurveKeyPair a = fresh_pair();
    EXPECT_FALSE(parse_allow_list(a.public_key + " two words\n").ok());
    // '~' is not a Z85 character.
    EXPECT_FALSE(parse_allow_list(std::string(kZ85KeyLength, '~') + "\n").ok());
}

TEST(SecurityTest, SecretKeyGivesItsPublicHalf) {
    const CurveKeyPair pair = fresh_pair();
    auto parsed = parse_secret_key("  " + pair.secret_key + "\n");
    ASSERT_TRUE(parsed.ok()) << parsed.error().describe();
    EXPECT_EQ(parsed->public_key, pair.public_key);
    EXPECT_FALSE(parse_secret_key("not a key").ok());
}

TEST(SecurityTest, CurveFlagsGoTogether) {
    EXPECT_FALSE(load_curve_config("", "").enabled());
    EXPECT_THROW(load_curve_config("some.key", ""), std::runtime_error);
    EXPECT_THROW(load_curve_config("", "allow"), std::runtime_error);
    EXPECT_THROW(load_curve_config("/nonexistent/x.key", "/nonexistent/allow"), std::runtime_error);
}

TEST(SecurityTest, ClientNeedsTheServersNameOnTheList) {
    zmq::context_t context;
    zmq::socket_t socket(context, zmq::socket_type::push);
    const CurveConfig config = config_for(fresh_pair(), {});
    EXPECT_THROW(secure_client(socket, config, kPiecesServer), std::runtime_error);
    secure_client(socket, CurveConfig{}, kPiecesServer);  // no keys: plain, nothing to check
}

TEST(SecurityTest, AllowedClientGetsThrough) {
    const CurveKeyPair worker = fresh_pair();
    SecuredServer server({{worker.public_key, "peer_worker"}});
    const CurveConfig client_config =
        config_for(worker, {{server.keys().public_key, "verifier"}, {worker.public_key, "peer_worker"}});
    Client client(server.endpoint(), client_config);
    client.send("piece 7");
    EXPECT_EQ(receive_within(server.socket(), 5000ms), "piece 7");
    EXPECT_EQ(server.gatekeeper().admitted(), 1u);
    EXPECT_EQ(server.gatekeeper().refused(), 0u);
}

TEST(SecurityTest, UnknownKeyIsRefusedAndLogged) {
    CapturedLog log;
    const CurveKeyPair listed = fresh_pair();
    const CurveKeyPair stranger = fresh_pair();
    SecuredServer server({{listed.public_key, "peer_worker"}});
    Client client(server.endpoint(), config_for(stranger, {{server.keys().public_key, "verifier"}}));
    client.send("forged piece");
    ASSERT_TRUE(eventually([&] { return server.gatekeeper().refused() > 0; }));
    EXPECT_EQ(receive_within(server.socket(), 500ms), std::nullopt);
    EXPECT_EQ(server.gatekeeper().admitted(), 0u);
    const std::string text = log.text();
    EXPECT_NE(text.find("refused key " + stranger.public_key), std::string::npos) << text;
    EXPECT_NE(text.find("127.0.0.1"), std::string::npos) << text;
    EXPECT_NE(text.find("on pieces"), std::string::npos) << text;
}

TEST(SecurityTest, ClientWithoutCurveIsRefusedAndLogged) {
    CapturedLog log;
    SecuredServer server({});
    Client client(server.endpoint(), CurveConfig{});
    client.send("plain piece");
    ASSERT_TRUE(eventually([&] { return server.gatekeeper().refused() > 0; }));
    EXPECT_EQ(receive_within(server.socket(), 500ms), std::nullopt);
    EXPECT_NE(log.text().find("refused a client on pieces"), std::string::npos) << log.text();
}

TEST(SecurityTest, ClientRefusesAServerWithTheWrongKey) {
    const CurveKeyPair worker = fresh_pair();
    SecuredServer server({{worker.public_key, "peer_worker"}});
    const CurveKeyPair impostor = fresh_pair();  // the key the client expects: not the server's
    Client client(server.endpoint(), config_for(worker, {{impostor.public_key, "verifier"}}));
    client.send("for the real verifier only");
    EXPECT_EQ(receive_within(server.socket(), 1000ms), std::nullopt);
    EXPECT_EQ(server.gatekeeper().admitted(), 0u);
}

TEST(SecurityTest, GatekeeperWithoutKeysLeavesSocketsPlain) {
    zmq::context_t context;
    Gatekeeper gatekeeper(context, CurveConfig{});
    zmq::socket_t pull(context, zmq::socket_type::pull);
    pull.set(zmq::sockopt::linger, 0);
    gatekeeper.secure(pull, "pieces");
    pull.bind("tcp://127.0.0.1:*");
    Client client(pull.get(zmq::sockopt::last_endpoint), CurveConfig{});
    client.send("local mode");
    EXPECT_EQ(receive_within(pull, 5000ms), "local mode");
}

TEST(SecurityTest, KeygenWritesAUsablePairWithAPrivateSecret) {
    const auto dir = std::filesystem::temp_directory_path() /
                     ("pw-security-test-" + std::to_string(::getpid()));
    std::filesystem::create_directories(dir);
    const std::string out = (dir / "verifier").string();
    auto files = cli::write_key_files(cli::KeygenOptions{out, "", false});
    ASSERT_TRUE(files.ok()) << files.error().describe();

    struct stat info {};
    ASSERT_EQ(::stat(files->secret_path.c_str(), &info), 0);
    EXPECT_EQ(info.st_mode & 0777, 0600u);

    std::ifstream secret_in(files->secret_path);
    std::ifstream public_in(files->public_path);
    std::stringstream secret_text, public_text;
    secret_text << secret_in.rdbuf();
    public_text << public_in.rdbuf();
    auto pair = parse_secret_key(secret_text.str());
    ASSERT_TRUE(pair.ok()) << pair.error().describe();
    auto list = parse_allow_list(public_text.str());
    ASSERT_TRUE(list.ok()) << list.error().describe();
    ASSERT_EQ(list->size(), 1u);
    EXPECT_EQ((*list)[0].key, pair->public_key);
    EXPECT_EQ((*list)[0].name, "verifier");

    // The pair works: a server with this secret key is the "verifier" the list promises.
    const CurveConfig loaded = load_curve_config(files->secret_path, files->public_path);
    EXPECT_EQ(loaded.own->public_key, pair->public_key);

    // An existing key is never silently replaced.
    EXPECT_FALSE(cli::write_key_files(cli::KeygenOptions{out, "", false}).ok());
    EXPECT_TRUE(cli::write_key_files(cli::KeygenOptions{out, "", true}).ok());
    std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace pw::bus
