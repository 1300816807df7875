#include "orchestrator/rpc_server.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <httplib.h>
#include <nlohmann/json.hpp>

#include "core/rpc.hpp"

namespace pw::orchestrator {
namespace {

using json = nlohmann::json;
using ::testing::HasSubstr;
using namespace std::chrono_literals;

constexpr const char* kSessionHeader = "X-Transmission-Session-Id";

// The orchestrator's loop in miniature: polls wake_fd and serves what is pending.
class TestLoop {
public:
    TestLoop(RpcServer& server, RpcServer::Handler handler)
        : server_(server), handler_(std::move(handler)), thread_([this] { run(); }) {}
    ~TestLoop() { stop(); }
    void stop() {
        done_ = true;
        if (thread_.joinable()) thread_.join();
    }

private:
    void run() {
        while (!done_) {
            pollfd fd{server_.wake_fd(), POLLIN, 0};
            if (::poll(&fd, 1, 20) > 0) server_.serve_pending(handler_);
        }
    }
    RpcServer& server_;
    RpcServer::Handler handler_;
    std::atomic<bool> done_{false};
    std::thread thread_;
};

// Answers every request with its tag echoed and the method's index, so tests can tell.
std::string echo_handler(const std::string& body) {
    auto request = rpc::parse_request(body);
    if (!request) return rpc::render_error(std::nullopt, request.error().message);
    if (!request->method) return rpc::render_error(request->tag, request->method.error().message);
    return rpc::render_success(request->tag, {{"method-index", request->method.value().index()}});
}

RpcServerOptions test_options() {
    RpcServerOptions options;
    options.port = 0;
    options.answer_timeout = 5s;
    return options;
}

std::unique_ptr<RpcServer> started(RpcServerOptions options) {
    auto server = std::make_unique<RpcServer>(std::move(options));
    const auto status = server->start();
    EXPECT_TRUE(status.ok()) << (status.ok() ? "" : status.error().message);
    return server;
}

std::unique_ptr<httplib::Client> client(const RpcServer& server) {
    auto c = std::make_unique<httplib::Client>("127.0.0.1", server.port());
    c->set_connection_timeout(5);
    c->set_read_timeout(20);
    c->set_write_timeout(20);
    return c;
}

httplib::Result post(const RpcServer& server, const std::string& body, const httplib::Headers& headers = {}) {
    return client(server)->Post("/transmission/rpc", headers, body, "application/json");
}

httplib::Headers with_session(const RpcServer& server) { return {{kSessionHeader, server.session_id()}}; }

// Sends raw bytes and returns what comes back until the server closes or stays quiet.
std::string raw_exchange(std::uint16_t port, const std::string& request) {
    const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) return "(socket failed)";
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_port = htons(port);
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    std::string answer;
    if (::connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof address) == 0) {
        (void)::send(fd, request.data(), request.size(), MSG_NOSIGNAL);
        char buffer[4096];
        for (;;) {
            pollfd p{fd, POLLIN, 0};
            if (::poll(&p, 1, 2000) != 1) break;
            const auto got = ::recv(fd, buffer, sizeof buffer, 0);
            if (got <= 0) break;
            answer.append(buffer, static_cast<std::size_t>(got));
        }
    }
    ::close(fd);
    return answer;
}

TEST(RpcServer, SessionIdHandshakeThenSuccess) {
    auto server = started(test_options());
    TestLoop loop(*server, echo_handler);
    ASSERT_NE(server->port(), 0);
    EXPECT_EQ(server->session_id().size(), 48u);

    auto first = post(*server, R"({"method":"session-get","tag":3})");
    ASSERT_TRUE(first);
    EXPECT_EQ(first->status, 409);
    EXPECT_EQ(first->get_header_value(kSessionHeader), server->session_id());
    EXPECT_THAT(first->get_header_value("Content-Type"), HasSubstr("application/json"));
    EXPECT_THAT(json::parse(first->body)["result"].get<std::string>(), HasSubstr(server->session_id()));

    auto wrong = post(*server, R"({"method":"session-get"})", {{kSessionHeader, std::string(48, 'a')}});
    ASSERT_TRUE(wrong);
    EXPECT_EQ(wrong->status, 409);
    auto truncated = post(*server, R"({"method":"session-get"})", {{kSessionHeader, server->session_id().substr(1)}});
    ASSERT_TRUE(truncated);
    EXPECT_EQ(truncated->status, 409);

    auto second = post(*server, R"({"method":"session-get","tag":3})", {{kSessionHeader, first->get_header_value(kSessionHeader)}});
    ASSERT_TRUE(second);
    EXPECT_EQ(second->status, 200);
    EXPECT_THAT(second->get_header_value("Content-Type"), HasSubstr("application/json"));
    const json reply = json::parse(second->body);
    EXPECT_EQ(reply["result"], "success");
    EXPECT_EQ(reply["tag"], 3);

    // The trailing slash transmission-remote uses.
    auto slash = client(*server)->Post("/transmission/rpc/", with_session(*server), R"({"method":"session-stats","tag":1})",
                                       "application/x-www-form-urlencoded");
    ASSERT_TRUE(slash);
    EXPECT_EQ(slash->status, 200);
    EXPECT_EQ(json::parse(slash->body)["tag"], 1);

    // Another server, another id.
    auto other = started(test_options());
    EXPECT_NE(other->session_id(), server->session_id());
}

TEST(RpcServer, BasicAuthIsCheckedBeforeTheSessionId) {
    auto options = test_options();
    options.credentials = RpcCredentials{"alice", "s3cret:with:colons"};
    auto server = started(options);
    TestLoop loop(*server, echo_handler);
    const std::string body = R"({"method":"session-stats","tag":2})";

    auto none = post(*server, body, with_session(*server));
    ASSERT_TRUE(none);
    EXPECT_EQ(none->status, 401);
    EXPECT_EQ(none->get_header_value("WWW-Authenticate"), "Basic realm=\"piecework\"");
    EXPECT_FALSE(none->has_header(kSessionHeader));  // nothing for the unauthenticated

    for (const auto& [user, password] : std::vector<std::pair<std::string, std::string>>{
             {"alice", "wrong"}, {"alice", "s3cret:with:colon"}, {"bob", "s3cret:with:colons"}, {"", ""},
             {"alice", std::string(3000, 'x')}}) {
        auto c = client(*server);
        c->set_basic_auth(user, password);
        auto res = c->Post("/transmission/rpc", with_session(*server), body, "application/json");
        ASSERT_TRUE(res);
        EXPECT_EQ(res->status, 401) << user << ":" << password.substr(0, 20);
    }
    for (const char* header : {"Basic !!!", "Bearer abc", "Basic", "basic"}) {
        auto res = post(*server, body, {{kSessionHeader, server->session_id()}, {"Authorization", header}});
        ASSERT_TRUE(res);
        EXPECT_EQ(res->status, 401) << header;
    }

    auto c = client(*server);
    c->set_basic_auth("alice", "s3cret:with:colons");
    auto handshake = c->Post("/transmission/rpc", body, "application/json");
    ASSERT_TRUE(handshake);
    EXPECT_EQ(handshake->status, 409);
    auto ok = c->Post("/transmission/rpc", with_session(*server), body, "application/json");
    ASSERT_TRUE(ok);
    EXPECT_EQ(ok->status, 200);
    EXPECT_EQ(json::parse(ok->body)["tag"], 2);
    // Lower-case scheme is the same scheme.
    auto lower = post(*server, body, {{kSessionHeader, server->session_id()},
                                      {"Authorization", "basic " + rpc::encode_base64("alice:s3cret:with:colons")}});
    ASSERT_TRUE(lower);
    EXPECT_EQ(lower->status, 200);
}

TEST(RpcServer, MalformedBodiesGet400AndNeverReachTheLoop) {
    auto server = started(test_options());
    std::atomic<int> calls{0};
    TestLoop loop(*server, [&](const std::string& body) {
        ++calls;
        return echo_handler(body);
    });
    for (const std::string& body : {std::string("garbage"), std::string(""), std::string("[1,2]"),
                                   std::string(100'000, '['), "{\"a\":" + std::string(1000, '[')}) {
        auto res = post(*server, body, with_session(*server));
        ASSERT_TRUE(res);
        EXPECT_EQ(res->status, 400) << body.substr(0, 20);
        const json reply = json::parse(res->body);
        EXPECT_TRUE(reply["arguments"].is_object());
        EXPECT_FALSE(reply["result"].get<std::string>().empty());
    }
    EXPECT_EQ(calls, 0);

    // JSON but not a usable request: Transmission's error shape, HTTP 200, tag kept.
    auto unknown = post(*server, R"({"method":"nope","tag":9})", with_session(*server));
    ASSERT_TRUE(unknown);
    EXPECT_EQ(unknown->status, 200);
    EXPECT_EQ(json::parse(unknown->body), json::parse(R"({"arguments":{},"result":"method name not recognized","tag":9})"));
    EXPECT_EQ(calls, 1);
}

TEST(RpcServer, FormEncodedBodiesAreReadWhole) {
    // transmission-remote declares application/x-www-form-urlencoded; Debian's cpp-httplib
    // would refuse such a body over 8 KiB if it read it itself.
    auto server = started(test_options());
    std::size_t seen = 0;
    TestLoop loop(*server, [&](const std::string& body) {
        seen = body.size();
        return echo_handler(body);
    });
    const std::string body = R"({"method":"torrent-add","tag":8,"arguments":{"metainfo":")" +
                             rpc::encode_base64(std::string(600'000, 'm')) + "\"}}";
    auto res = client(*server)->Post("/transmission/rpc/", with_session(*server), body,
                                     "application/x-www-form-urlencoded");
    ASSERT_TRUE(res);
    EXPECT_EQ(res->status, 200);
    EXPECT_EQ(json::parse(res->body)["tag"], 8);
    EXPECT_EQ(seen, body.size());
    // A refused request's body is read too (and dropped), so the client gets the refusal.
    auto refused = client(*server)->Post("/transmission/rpc", body, "application/x-www-form-urlencoded");
    ASSERT_TRUE(refused) << httplib::to_string(refused.error());
    EXPECT_EQ(refused->status, 409);
    auto multipart = client(*server)->Post("/transmission/rpc", with_session(*server),
                                           httplib::MultipartFormDataItems{{"a", "{}", "", ""}});
    ASSERT_TRUE(multipart);
    EXPECT_EQ(multipart->status, 415);
}

TEST(RpcServer, BodiesOverTheLimitGet413AndTheServerKeepsServing) {
    auto options = test_options();
    options.limits.max_body = 1u << 20;
    auto server = started(options);
    TestLoop loop(*server, echo_handler);

    // Up to twice the limit the body is read and dropped, so the client reads the 413.
    const std::string big = R"({"method":"session-stats","x":")" + std::string(3u << 19, 'x') + "\"}";
    auto res = post(*server, big, with_session(*server));
    ASSERT_TRUE(res) << httplib::to_string(res.error());
    EXPECT_EQ(res->status, 413);
    EXPECT_THAT(json::parse(res->body)["result"].get<std::string>(), HasSubstr("larger than 1048576 bytes"));

    // A client announcing 10 GB: refused from the header alone.
    const std::string head = "POST /transmission/rpc HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n" +
                             std::string(kSessionHeader) + ": " + server->session_id() + "\r\n";
    EXPECT_THAT(raw_exchange(server->port(), head + "Content-Length: 10000000000\r\n\r\n{\"method\":"),
                HasSubstr("HTTP/1.1 413"));
    // curl asks first for a large body ("Expect: 100-continue") and gets the 413 before sending it.
    const std::string expect = raw_exchange(server->port(), head + "Content-Length: 3000000\r\nExpect: 100-continue\r\n\r\n");
    EXPECT_THAT(expect, HasSubstr("HTTP/1.1 413"));
    EXPECT_THAT(expect, ::testing::Not(HasSubstr("100 Continue")));
    EXPECT_THAT(raw_exchange(server->port(), "POST /transmission/rpc HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
                                             "Content-Length: 3000\r\nExpect: 100-continue\r\n\r\n"),
                HasSubstr("HTTP/1.1 409"));
    // Chunked: no length to refuse up front, so the reading stops at the limit.
    std::string chunked = head + "Transfer-Encoding: chunked\r\n\r\n";
    const std::string chunk(64 * 1024, 'x');
    for (int i = 0; i < 20; ++i) chunked += "10000\r\n" + chunk + "\r\n";
    chunked += "0\r\n\r\n";
    EXPECT_THAT(raw_exchange(server->port(), chunked), HasSubstr("HTTP/1.1 413"));
    // A gzipped body is inflated by cpp-httplib: what counts is the inflated size (3 MiB of
    // 'x' is a few KiB compressed).
    auto compressing = client(*server);
    compressing->set_compress(true);
    const std::string inflates = R"({"method":"session-stats","x":")" + std::string(3u << 20, 'x') + "\"}";
    auto bomb = compressing->Post("/transmission/rpc", with_session(*server), inflates, "application/json");
    ASSERT_TRUE(bomb);
    EXPECT_EQ(bomb->status, 413);
    auto small = compressing->Post("/transmission/rpc", with_session(*server), R"({"method":"session-stats","tag":4})",
                                   "application/json");
    ASSERT_TRUE(small);
    EXPECT_EQ(small->status, 200);

    auto after = post(*server, R"({"method":"session-stats","tag":6})", with_session(*server));
    ASSERT_TRUE(after);
    EXPECT_EQ(after->status, 200);
    EXPECT_EQ(json::parse(after->body)["tag"], 6);
}

TEST(RpcServer, OtherMethodsAndPaths) {
    auto server = started(test_options());
    TestLoop loop(*server, echo_handler);
    auto c = client(*server);

    auto get = c->Get("/transmission/rpc");  // a browser: the 409 explains the handshake
    ASSERT_TRUE(get);
    EXPECT_EQ(get->status, 409);
    auto get_with_id = c->Get("/transmission/rpc", with_session(*server));
    ASSERT_TRUE(get_with_id);
    EXPECT_EQ(get_with_id->status, 405);
    EXPECT_EQ(get_with_id->get_header_value("Allow"), "POST");
    EXPECT_THAT(json::parse(get_with_id->body)["result"].get<std::string>(), HasSubstr("POST"));
    auto put = c->Put("/transmission/rpc", with_session(*server), "{}", "application/json");
    ASSERT_TRUE(put);
    EXPECT_EQ(put->status, 405);
    auto del = c->Delete("/transmission/rpc", with_session(*server));
    ASSERT_TRUE(del);
    EXPECT_EQ(del->status, 405);

    auto missing = c->Get("/");
    ASSERT_TRUE(missing);
    EXPECT_EQ(missing->status, 404);
    EXPECT_TRUE(json::parse(missing->body).is_object());
    auto post_elsewhere = c->Post("/transmission/rpcx", with_session(*server), "{}", "application/json");
    ASSERT_TRUE(post_elsewhere);
    EXPECT_EQ(post_elsewhere->status, 404);
}

TEST(RpcServer, AssetsAreServedUnderTheSameCredentials) {
    auto options = test_options();
    options.credentials = RpcCredentials{"u", "p"};
    RpcServer server(options);
    server.add_asset("/", RpcAsset{"<html>hi</html>", "text/html; charset=UTF-8",
                                   {{"Content-Security-Policy", "default-src 'self'"}}});
    ASSERT_TRUE(server.start().ok());
    EXPECT_THROW(server.add_asset("/late", RpcAsset{}), std::logic_error);
    auto c = client(server);
    auto anonymous = c->Get("/");
    ASSERT_TRUE(anonymous);
    EXPECT_EQ(anonymous->status, 401);
    c->set_basic_auth("u", "p");
    auto page = c->Get("/");
    ASSERT_TRUE(page);
    EXPECT_EQ(page->status, 200);
    EXPECT_EQ(page->body, "<html>hi</html>");
    EXPECT_EQ(page->get_header_value("Content-Security-Policy"), "default-src 'self'");
    EXPECT_THAT(page->get_header_value("Content-Type"), HasSubstr("text/html"));
}

TEST(RpcServer, HostHeaderGuardsAgainstDnsRebinding) {
    auto options = test_options();
    options.allowed_hosts = {"my-box.lan"};
    auto server = started(options);
    TestLoop loop(*server, echo_handler);
    const std::string body = R"({"method":"session-stats"})";
    const auto status_for = [&](const std::string& host) {
        auto res = post(*server, body, {{kSessionHeader, server->session_id()}, {"Host", host}});
        return res ? res->status : -1;
    };
    EXPECT_EQ(status_for("evil.example.com"), 421);
    EXPECT_EQ(status_for("evil.example.com:9091"), 421);
    EXPECT_EQ(status_for("localhost.evil.example.com"), 421);
    EXPECT_EQ(status_for("localhost"), 200);
    EXPECT_EQ(status_for("LOCALHOST:9091"), 200);
    EXPECT_EQ(status_for("127.0.0.1:9091"), 200);
    EXPECT_EQ(status_for("[::1]:9091"), 200);
    EXPECT_EQ(status_for("192.168.1.9"), 200);
    EXPECT_EQ(status_for("My-Box.lan:9091"), 200);

    auto with_credentials = test_options();
    with_credentials.credentials = RpcCredentials{"u", "p"};
    auto guarded = started(with_credentials);
    auto c = client(*guarded);
    c->set_basic_auth("u", "p");
    auto res = c->Post("/transmission/rpc", {{"Host", "evil.example.com"}}, body, "application/json");
    ASSERT_TRUE(res);
    EXPECT_EQ(res->status, 409);  // past the host check: credentials guard it
}

TEST(RpcServer, ALoopThatNeverAnswersGets503WithinTheBound) {
    auto options = test_options();
    options.answer_timeout = 300ms;
    auto server = started(options);  // and no loop at all
    const auto start = std::chrono::steady_clock::now();
    auto res = post(*server, R"({"method":"session-stats"})", with_session(*server));
    const auto elapsed = std::chrono::steady_clock::now() - start;
    ASSERT_TRUE(res);
    EXPECT_EQ(res->status, 503);
    EXPECT_THAT(json::parse(res->body)["result"].get<std::string>(), HasSubstr("did not answer in time"));
    EXPECT_GE(elapsed, 300ms);
    EXPECT_LT(elapsed, 3s);

    // What the loop picks up late is skipped: its client already has its answer.
    int calls = 0;
    server->serve_pending([&](const std::string&) {
        ++calls;
        return rpc::render_success(std::nullopt);
    });
    EXPECT_EQ(calls, 0);
}

TEST(RpcServer, AFullQueueGets503AtOnce) {
    auto options = test_options();
    options.max_pending = 1;
    options.answer_timeout = 3s;
    auto server = started(options);  // nobody serves: the first request fills the queue
    std::thread waiting([&] { (void)post(*server, R"({"method":"session-stats"})", with_session(*server)); });
    pollfd fd{server->wake_fd(), POLLIN, 0};
    ASSERT_EQ(::poll(&fd, 1, 3000), 1);  // the first one is queued
    const auto start = std::chrono::steady_clock::now();
    auto res = post(*server, R"({"method":"session-stats"})", with_session(*server));
    ASSERT_TRUE(res);
    EXPECT_EQ(res->status, 503);
    EXPECT_EQ(res->get_header_value("Retry-After"), "1");
    EXPECT_THAT(json::parse(res->body)["result"].get<std::string>(), HasSubstr("busy"));
    EXPECT_LT(std::chrono::steady_clock::now() - start, 2s);
    server->serve_pending(echo_handler);
    waiting.join();
}

TEST(RpcServer, AHandlerThatThrowsGets500) {
    auto server = started(test_options());
    TestLoop loop(*server, [](const std::string&) -> std::string { throw std::runtime_error("boom"); });
    auto res = post(*server, R"({"method":"session-stats"})", with_session(*server));
    ASSERT_TRUE(res);
    EXPECT_EQ(res->status, 500);
    EXPECT_THAT(json::parse(res->body)["result"].get<std::string>(), HasSubstr("boom"));
}

TEST(RpcServer, ManyConcurrentClientsEachGetTheirOwnAnswer) {
    auto options = test_options();
    options.threads = 4;
    auto server = started(options);
    std::atomic<int> on_loop_thread{0};
    const auto loop_id = std::make_shared<std::thread::id>();
    std::mutex id_mutex;
    TestLoop loop(*server, [&](const std::string& body) {
        {
            std::lock_guard lock(id_mutex);
            if (*loop_id == std::thread::id{}) *loop_id = std::this_thread::get_id();
            if (*loop_id == std::this_thread::get_id()) ++on_loop_thread;
        }
        return echo_handler(body);
    });
    constexpr int kClients = 16;
    constexpr int kRequests = 25;
    std::atomic<int> good{0};
    std::vector<std::string> failures;
    std::vector<std::thread> clients;
    for (int c = 0; c < kClients; ++c) {
        clients.emplace_back([&, c] {
            auto http = client(*server);
            for (int r = 0; r < kRequests; ++r) {
                const int tag = c * 1000 + r;
                auto res = http->Post("/transmission/rpc", with_session(*server),
                                      R"({"method":"session-stats","tag":)" + std::to_string(tag) + "}",
                                      "application/json");
                if (res && res->status == 200 && json::parse(res->body)["tag"] == tag) {
                    ++good;
                } else {
                    std::lock_guard lock(id_mutex);
                    failures.push_back(res ? std::to_string(res->status) + " " + res->body
                                           : "error " + httplib::to_string(res.error()));
                }
            }
        });
    }
    for (auto& t : clients) t.join();
    EXPECT_EQ(good, kClients * kRequests) << ::testing::PrintToString(failures);
    EXPECT_EQ(on_loop_thread, kClients * kRequests);  // every body handled on the one loop thread
}

TEST(RpcServer, StopAnswersWhatIsQueuedAndJoins) {
    auto options = test_options();
    options.answer_timeout = 20s;
    auto server = started(options);  // nobody serves: requests wait in the queue
    constexpr int kInFlight = 4;
    std::atomic<int> shutting_down{0};
    std::vector<std::thread> clients;
    for (int i = 0; i < kInFlight; ++i) {
        clients.emplace_back([&] {
            auto res = post(*server, R"({"method":"session-stats"})", with_session(*server));
            if (res && res->status == 503 &&
                json::parse(res->body)["result"].get<std::string>().find("shutting down") != std::string::npos) {
                ++shutting_down;
            }
        });
    }
    // Wait until all of them are queued (the eventfd counts the submissions).
    std::uint64_t queued = 0;
    for (int i = 0; i < 1000 && queued < kInFlight; ++i) {  // up to 10 s on a loaded machine
        std::uint64_t count = 0;
        pollfd fd{server->wake_fd(), POLLIN, 0};
        if (::poll(&fd, 1, 10) == 1 && ::read(server->wake_fd(), &count, sizeof count) == sizeof count) {
            queued += count;
        }
    }
    EXPECT_EQ(queued, static_cast<std::uint64_t>(kInFlight));
    const auto start = std::chrono::steady_clock::now();
    server->stop();
    EXPECT_LT(std::chrono::steady_clock::now() - start, 5s);
    for (auto& t : clients) t.join();
    EXPECT_EQ(shutting_down, kInFlight);
    server->stop();  // idempotent

    auto refused = client(*server)->Post("/transmission/rpc", with_session(*server), "{}", "application/json");
    EXPECT_FALSE(refused);  // nobody listens any more
}

TEST(RpcServer, StopRightAfterStartAndWithoutStart) {
    for (int i = 0; i < 20; ++i) {
        RpcServer server(test_options());
        ASSERT_TRUE(server.start().ok());
        server.stop();
    }
    RpcServer never_started(test_options());
    never_started.stop();
}

// --- Start-up rules ---

TEST(RpcExposure, OnlyLoopbackWithoutCredentials) {
    for (const char* loopback : {"127.0.0.1", "127.1.2.3", "::1", "[::1]", "localhost", "LocalHost", "::ffff:127.0.0.1"}) {
        EXPECT_TRUE(is_loopback_address(loopback)) << loopback;
        RpcServerOptions options;
        options.bind_address = loopback;
        EXPECT_TRUE(check_rpc_exposure(options).ok()) << loopback;
    }
    for (const char* exposed : {"0.0.0.0", "::", "192.168.1.2", "10.0.0.1", "example.org", "", "128.0.0.1",
                                "::ffff:10.0.0.1"}) {
        EXPECT_FALSE(is_loopback_address(exposed)) << exposed;
        RpcServerOptions options;
        options.bind_address = exposed;
        const auto refused = check_rpc_exposure(options);
        ASSERT_FALSE(refused.ok()) << exposed;
        EXPECT_THAT(refused.error().message, HasSubstr("--rpc-auth"));
        options.credentials = RpcCredentials{"u", "p"};
        EXPECT_TRUE(check_rpc_exposure(options).ok()) << exposed;
        options.credentials = RpcCredentials{"u", ""};
        EXPECT_FALSE(check_rpc_exposure(options).ok()) << exposed;
    }
    RpcServerOptions everywhere = test_options();
    everywhere.bind_address = "0.0.0.0";
    RpcServer server(everywhere);
    const auto status = server.start();
    ASSERT_FALSE(status.ok());
    EXPECT_THAT(status.error().message, HasSubstr("refusing to serve the RPC on 0.0.0.0 without credentials"));
}

TEST(RpcExposure, BindFailuresAreErrors) {
    auto first = started(test_options());
    auto options = test_options();
    options.port = first->port();
    RpcServer second(options);
    const auto status = second.start();
    ASSERT_FALSE(status.ok());
    EXPECT_THAT(status.error().message, HasSubstr("cannot bind"));
}

class RpcAuthFile : public ::testing::Test {
protected:
    void SetUp() override {
        dir_ = std::filesystem::temp_directory_path() /
               ("pw-rpc-auth-" + std::to_string(::getpid()) + "-" +
                ::testing::UnitTest::GetInstance()->current_test_info()->name());
        std::filesystem::create_directories(dir_);
    }
    void TearDown() override { std::filesystem::remove_all(dir_); }
    std::string write(const std::string& text, mode_t mode = 0600) {
        const auto path = dir_ / "auth";
        std::ofstream(path, std::ios::binary | std::ios::trunc) << text;
        ::chmod(path.c_str(), mode);
        return path.string();
    }
    std::filesystem::path dir_;
};

TEST_F(RpcAuthFile, ReadsOneLine) {
    for (const char* text : {"alice:pw:with:colons", "alice:pw:with:colons\n", "alice:pw:with:colons\r\n"}) {
        const auto credentials = read_rpc_auth_file(write(text));
        ASSERT_TRUE(credentials.ok()) << credentials.error().message;
        EXPECT_EQ(credentials->user, "alice");
        EXPECT_EQ(credentials->password, "pw:with:colons");
    }
    EXPECT_TRUE(read_rpc_auth_file(write("a:b", 0400)).ok());
}

TEST_F(RpcAuthFile, RefusesWhatIsUnsafeOrUnclear) {
    const auto error = [&](const std::string& path) {
        const auto result = read_rpc_auth_file(path);
        return result.ok() ? std::string("(accepted)") : result.error().message;
    };
    EXPECT_THAT(error(write("a:b", 0644)), HasSubstr("chmod 600"));
    EXPECT_THAT(error(write("a:b", 0640)), HasSubstr("mode 640"));
    EXPECT_THAT(error(write("a:b", 0602)), HasSubstr("group or others"));
    EXPECT_THAT(error(write(":b")), HasSubstr("user name"));
    EXPECT_THAT(error(write("a:")), HasSubstr("password"));
    EXPECT_THAT(error(write("a:\n")), HasSubstr("password"));
    EXPECT_THAT(error(write("")), HasSubstr("user:password"));
    EXPECT_THAT(error(write("nocolon")), HasSubstr("no ':'"));
    EXPECT_THAT(error(write("a:b\nc:d\n")), HasSubstr("more than one line"));
    EXPECT_THAT(error(write(std::string(5000, 'a') + ":b")), HasSubstr("larger than 4 KiB"));
    EXPECT_THAT(error((dir_ / "missing").string()), HasSubstr("No such file"));
    EXPECT_THAT(error(dir_.string()), HasSubstr("not a regular file"));
    EXPECT_THAT(error(write("a:b")), HasSubstr("(accepted)"));
}

// A deployment without credentials gets a random password in a 0600 file, never a default;
// an existing file is never replaced.
TEST_F(RpcAuthFile, AGeneratedFileHoldsARandomPasswordAndIsNeverReplaced) {
    const auto path = (dir_ / "generated").string();
    const auto made = create_rpc_auth_file(path);
    ASSERT_TRUE(made.ok()) << made.error().message;
    EXPECT_EQ(made->user, "piecework");
    EXPECT_GE(made->password.size(), 16u);
    const auto read = read_rpc_auth_file(path);
    ASSERT_TRUE(read.ok()) << read.error().message;
    EXPECT_EQ(read->password, made->password);
    EXPECT_FALSE(create_rpc_auth_file(path).ok());
    const auto other = create_rpc_auth_file((dir_ / "other").string());
    ASSERT_TRUE(other.ok());
    EXPECT_NE(other->password, made->password);
}

// --- The real transmission-remote against fixed views ---

std::string run(const std::string& command) {
    std::string output;
    FILE* pipe = ::popen((command + " 2>&1").c_str(), "r");
    if (pipe == nullptr) return "(popen failed)";
    char buffer[4096];
    std::size_t got = 0;
    while ((got = std::fread(buffer, 1, sizeof buffer, pipe)) > 0) output.append(buffer, got);
    ::pclose(pipe);
    return output;
}

struct FixedSession {
    explicit FixedSession(const std::string& session_id);
    rpc::SessionView session;
    rpc::SessionStatsView stats;
    std::vector<rpc::TorrentView> torrents;
    std::mutex mutex;
    std::vector<rpc::Method> seen;  // every parsed method, in order

    std::string handle(const std::string& body) {
        auto request = rpc::parse_request(body);
        if (!request) return rpc::render_error(std::nullopt, request.error().message);
        if (!request->method) return rpc::render_error(request->tag, request->method.error().message);
        const auto tag = request->tag;
        const rpc::Method& method = request->method.value();
        {
            std::lock_guard lock(mutex);
            seen.push_back(method);
        }
        if (const auto* get = std::get_if<rpc::TorrentGet>(&method)) {
            std::vector<rpc::TorrentView> selected;
            for (const auto& t : torrents) {
                if (get->ids.matches(t.id, t.hash, true)) selected.push_back(t);
            }
            return rpc::render_success(tag, rpc::torrent_get_arguments(*get, selected));
        }
        if (const auto* get = std::get_if<rpc::SessionGet>(&method)) {
            return rpc::render_success(tag, rpc::session_arguments(session, get->fields));
        }
        if (std::holds_alternative<rpc::SessionStats>(method)) {
            return rpc::render_success(tag, rpc::session_stats_arguments(stats));
        }
        if (std::holds_alternative<rpc::PortTest>(method)) return rpc::render_success(tag, rpc::port_test_arguments(true));
        if (std::holds_alternative<rpc::TorrentAdd>(method)) {
            return rpc::render_success(tag, rpc::torrent_added_arguments(torrents.front(), false));
        }
        return rpc::render_success(tag);
    }
};

FixedSession::FixedSession(const std::string& session_id) {
    FixedSession& fixed = *this;
    fixed.session.version = "piecework-test";
    fixed.session.session_id = session_id;
    fixed.session.download_dir = "/srv/downloads";
    fixed.session.config_dir = "/etc/piecework";
    fixed.session.speed_limit_down_kbps = 250;
    fixed.session.speed_limit_down_enabled = true;
    fixed.session.peer_limit_global = 120;
    fixed.stats.torrent_count = 1;
    fixed.stats.current = {2'000'000, 4'000'000, 1, 1, 125};
    fixed.stats.cumulative = {3'000'000, 9'000'000, 2, 7, 4000};

    rpc::TorrentView t;
    t.id = 1;
    t.hash = sha1_from_hex("373a052ba104353cb3e3e696249f57a517d226f6").value();
    t.name = "ubuntu.iso";
    t.status = rpc::TorrentStatus::downloading;
    t.size_when_done = 2'000'000;
    t.total_size = 2'000'000;
    t.left_until_done = 1'000'000;
    t.have_valid = 1'000'000;
    t.percent_done = 0.5;
    t.upload_ratio = 0.5;
    t.rate_download = 51'200;
    t.rate_upload = 10'240;
    t.eta = 120;
    t.peers_connected = 3;
    t.peers_sending_to_us = 2;
    t.peers_getting_from_us = 1;
    t.downloaded_ever = 1'000'000;
    t.uploaded_ever = 500'000;
    t.download_dir = "/srv/downloads";
    t.piece_count = 8;
    t.piece_size = 262'144;
    t.comment = "a test torrent";
    t.magnet_link = "magnet:?xt=urn:btih:373a052ba104353cb3e3e696249f57a517d226f6";
    t.added_date = 1'700'000'000;
    t.download_limit_kbps = 75;
    t.download_limited = true;
    t.files = {{"ubuntu.iso/disk.img", 1'500'000, 1'500'000, true, rpc::Priority::high},
               {"ubuntu.iso/readme.txt", 500'000, 0, false, rpc::Priority::normal}};
    fixed.torrents = {t};
}

class TransmissionRemote : public ::testing::Test {
protected:
    void SetUp() override {
        if (run("command -v transmission-remote").find("transmission-remote") == std::string::npos) {
            GTEST_SKIP() << "transmission-remote is not installed (Debian: apt-get install transmission-cli)";
        }
    }
    std::string remote(const RpcServer& server, const std::string& arguments) {
        return run("transmission-remote 127.0.0.1:" + std::to_string(server.port()) + " " + arguments);
    }
};

TEST_F(TransmissionRemote, ListsSessionInfoStatsDetailsAndFiles) {
    auto server = started(test_options());
    FixedSession fixed(server->session_id());
    TestLoop loop(*server, [&](const std::string& body) { return fixed.handle(body); });

    const std::string list = remote(*server, "-l");
    EXPECT_THAT(list, HasSubstr("ID"));
    EXPECT_THAT(list, HasSubstr("    1    50%    1.00 MB  2 min       10.2    51.2    0.5  Up & Down    ubuntu.iso"));
    EXPECT_THAT(list, HasSubstr("Sum:             1.00 MB              10.2    51.2"));

    const std::string info = remote(*server, "-si");
    EXPECT_THAT(info, HasSubstr("Daemon version: piecework-test"));
    EXPECT_THAT(info, HasSubstr("RPC version: 17"));
    EXPECT_THAT(info, HasSubstr("Download directory: /srv/downloads"));
    EXPECT_THAT(info, HasSubstr("Peer limit: 120"));  // the LIMITS block: every field had its type
    EXPECT_THAT(info, HasSubstr("Download speed limit: 250 kB/s"));
    EXPECT_THAT(info, HasSubstr("Encryption: preferred"));

    const std::string stats = remote(*server, "-st");
    EXPECT_THAT(stats, HasSubstr("CURRENT SESSION"));
    EXPECT_THAT(stats, HasSubstr("Downloaded: 4.00 MB"));
    EXPECT_THAT(stats, HasSubstr("Started 7 times"));

    const std::string details = remote(*server, "-t 1 -i");
    EXPECT_THAT(details, HasSubstr("Name: ubuntu.iso"));
    EXPECT_THAT(details, HasSubstr("Hash: 373a052ba104353cb3e3e696249f57a517d226f6"));
    EXPECT_THAT(details, HasSubstr("State: Up & Down"));
    EXPECT_THAT(details, HasSubstr("Percent Done: 50.0%"));
    EXPECT_THAT(details, HasSubstr("Location: /srv/downloads"));
    EXPECT_THAT(details, HasSubstr("Peers: connected to 3, uploading to 1, downloading from 2"));
    EXPECT_THAT(details, HasSubstr("Piece Count: 8"));
    EXPECT_THAT(details, HasSubstr("Download Limit: 75 kB/s"));
    EXPECT_THAT(details, HasSubstr("Ratio Limit: Default"));
    EXPECT_THAT(details, HasSubstr("Comment: a test torrent"));

    const std::string by_hash = remote(*server, "-t 373a052ba104353cb3e3e696249f57a517d226f6 -i");
    EXPECT_THAT(by_hash, HasSubstr("Name: ubuntu.iso"));

    const std::string files = remote(*server, "-t 1 -f");
    EXPECT_THAT(files, HasSubstr("ubuntu.iso (2 files):"));
    EXPECT_THAT(files, HasSubstr("  0: 100% High     Yes   1.50 MB  ubuntu.iso/disk.img"));
    EXPECT_THAT(files, HasSubstr("  1:   0% Normal   No   500.0 kB  ubuntu.iso/readme.txt"));

    EXPECT_THAT(remote(*server, "-pt"), HasSubstr("Port is open: Yes"));
}

TEST_F(TransmissionRemote, CommandsArriveAsTypedMethods) {
    auto server = started(test_options());
    FixedSession fixed(server->session_id());
    TestLoop loop(*server, [&](const std::string& body) { return fixed.handle(body); });

    EXPECT_THAT(remote(*server, "-t 1 -d 50 -u 20"), HasSubstr("responded: \"success\""));
    EXPECT_THAT(remote(*server, "-d 100"), HasSubstr("responded: \"success\""));
    EXPECT_THAT(remote(*server, "-t 1-3,5 -S"), HasSubstr("success"));
    EXPECT_THAT(remote(*server, "-t 1 -s"), HasSubstr("success"));
    EXPECT_THAT(remote(*server, "-t 1 -v"), HasSubstr("success"));
    EXPECT_THAT(remote(*server, "-t 1 -r"), HasSubstr("success"));
    EXPECT_THAT(remote(*server, "-t 1 --remove-and-delete"), HasSubstr("success"));
    const std::string magnet = "magnet:?xt=urn:btih:373a052ba104353cb3e3e696249f57a517d226f6";
    EXPECT_THAT(remote(*server, "-a '" + magnet + "' -w /srv/other"), HasSubstr("success"));

    std::lock_guard lock(fixed.mutex);
    ASSERT_EQ(fixed.seen.size(), 8u);
    const auto& set = std::get<rpc::TorrentSet>(fixed.seen[0]);
    EXPECT_EQ(set.ids.ids, (std::vector<std::uint32_t>{1}));
    EXPECT_EQ(set.download_limit_kbps, 50);
    EXPECT_EQ(set.download_limited, true);
    EXPECT_EQ(set.upload_limit_kbps, 20);
    EXPECT_EQ(set.upload_limited, true);
    const auto& session_set = std::get<rpc::SessionSet>(fixed.seen[1]);
    EXPECT_EQ(session_set.speed_limit_down_kbps, 100);
    EXPECT_EQ(session_set.speed_limit_down_enabled, true);
    const auto& stop = std::get<rpc::TorrentAction>(fixed.seen[2]);
    EXPECT_EQ(stop.kind, rpc::TorrentAction::Kind::stop);
    EXPECT_EQ(stop.ids.ids, (std::vector<std::uint32_t>{1, 2, 3, 5}));
    EXPECT_EQ(std::get<rpc::TorrentAction>(fixed.seen[3]).kind, rpc::TorrentAction::Kind::start);
    EXPECT_EQ(std::get<rpc::TorrentAction>(fixed.seen[4]).kind, rpc::TorrentAction::Kind::verify);
    EXPECT_FALSE(std::get<rpc::TorrentRemove>(fixed.seen[5]).delete_local_data);
    EXPECT_TRUE(std::get<rpc::TorrentRemove>(fixed.seen[6]).delete_local_data);
    const auto& add = std::get<rpc::TorrentAdd>(fixed.seen[7]);
    EXPECT_EQ(add.source, rpc::TorrentAdd::Source::magnet);
    EXPECT_EQ(add.data, magnet);
    EXPECT_EQ(add.download_dir, "/srv/other");
}

TEST_F(TransmissionRemote, AddsATorrentFileAsMetainfo) {
    auto server = started(test_options());
    FixedSession fixed(server->session_id());
    TestLoop loop(*server, [&](const std::string& body) { return fixed.handle(body); });
    const auto path = std::filesystem::temp_directory_path() / ("pw-rpc-" + std::to_string(::getpid()) + ".torrent");
    // 2,500 pieces: 50 KB, well past the 8 KiB a form-encoded body could otherwise have.
    const std::string torrent = "d8:announce30:http://127.0.0.1:6969/announce4:infod6:lengthi40960000e4:name1:x"
                                "12:piece lengthi16384e6:pieces50000:" + std::string(50'000, 'a') + "ee";
    std::ofstream(path, std::ios::binary) << torrent;
    EXPECT_THAT(remote(*server, "-a " + path.string() + " --start-paused -S"), HasSubstr("success"));
    std::filesystem::remove(path);
    std::lock_guard lock(fixed.mutex);
    const rpc::TorrentAdd* add = nullptr;
    for (const auto& method : fixed.seen) {
        if (const auto* a = std::get_if<rpc::TorrentAdd>(&method)) add = a;
    }
    ASSERT_NE(add, nullptr);
    EXPECT_EQ(add->source, rpc::TorrentAdd::Source::metainfo);
    EXPECT_EQ(add->data, torrent);
    EXPECT_EQ(add->paused, true);
}

TEST_F(TransmissionRemote, WithCredentials) {
    auto options = test_options();
    options.credentials = RpcCredentials{"alice", "wonder"};
    auto server = started(options);
    FixedSession fixed(server->session_id());
    TestLoop loop(*server, [&](const std::string& body) { return fixed.handle(body); });

    EXPECT_THAT(remote(*server, "-n alice:wonder -l"), HasSubstr("ubuntu.iso"));
    EXPECT_THAT(remote(*server, "-n alice:wonder -si"), HasSubstr("RPC version: 17"));
    const std::string refused = remote(*server, "-n alice:nope -l");
    EXPECT_THAT(refused, HasSubstr("Unexpected response"));
    EXPECT_THAT(refused, HasSubstr("unauthorized"));
    EXPECT_THAT(refused, ::testing::Not(HasSubstr("ubuntu.iso")));
    EXPECT_THAT(remote(*server, "-l"), HasSubstr("unauthorized"));
}

TEST_F(TransmissionRemote, ErrorsArePrintedNotCrashes) {
    auto server = started(test_options());
    FixedSession fixed(server->session_id());
    TestLoop loop(*server, [&](const std::string& body) { return fixed.handle(body); });
    // "-t abc": an id that is neither a number nor a hash.
    EXPECT_THAT(remote(*server, "-t abc -i"), HasSubstr("Error: argument 'ids' must be"));
    EXPECT_THAT(remote(*server, "-t 1 -sr -2"), HasSubstr("Error: argument 'seedRatioLimit' must be a number from 0"));
}

}  // namespace
}  // namespace pw::orchestrator
