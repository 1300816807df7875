#pragma once
// The RPC's HTTP side: Transmission's transport (JSON POSTed to /transmission/rpc, the
// X-Transmission-Session-Id handshake, HTTP Basic auth) on cpp-httplib's threads, handing each
// request body over to the orchestrator's loop, which owns the session and answers it.
//
// The loop polls wake_fd() with its sockets and calls serve_pending(handle) when it is
// readable; handle runs on the loop's thread (parse with pw::rpc::parse_request, act, render)
// and its string is the reply's body. The server itself never touches the session.
//
// Before a body reaches the loop, on the HTTP threads: the Host header (DNS rebinding), the
// credentials, the session id, the method, the size and the JSON syntax are checked. Replies:
//   200  whatever handle returned (Transmission's errors, too, are 200 with their "result")
//   400  the body is not a JSON object within the limits (pw::rpc::check_request_body)
//   401  credentials configured and missing or wrong (WWW-Authenticate: Basic)
//   404  no such path; 405 not a POST to the RPC path (after the session id check, as
//        Transmission does, so a browser's GET gets the 409 with its explanation)
//   409  missing or wrong X-Transmission-Session-Id; the reply's header carries the right one
//   413  body over the limit; 421 Host header not allowed
//   503  the loop's queue is full, the loop did not answer within answer_timeout, or the
//        server is stopping; 500 handle threw
// Every reply on the RPC path is JSON shaped like Transmission's ({"arguments": {}, "result":
// "<what happened>"}).
//
// Bodies are read through cpp-httplib's content reader, not its own body reading: Debian's
// build refuses form-encoded bodies over 8 KiB (transmission-remote declares that type for its
// JSON) and does not bound chunked ones. Constructing an RpcServer makes the process ignore
// SIGPIPE (cpp-httplib's Server does so, process-wide).
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "core/result.hpp"
#include "core/rpc.hpp"

namespace pw::orchestrator {

struct RpcCredentials {
    std::string user;
    std::string password;
};

// A file served by GET/HEAD at an exact path, under the same Host check and credentials as the
// RPC (for the web page a later issue adds: its Content-Security-Policy goes in `headers`).
struct RpcAsset {
    std::string body;
    std::string content_type;
    std::vector<std::pair<std::string, std::string>> headers;
};

struct RpcServerOptions {
    std::string bind_address = "127.0.0.1";
    std::uint16_t port = 9091;  // 0: any free port (RpcServer::port() says which)
    // HTTP Basic credentials; required when bind_address is not a loopback address.
    std::optional<RpcCredentials> credentials;
    // Body size (max_body: over it, 413), nesting and value counts checked on the HTTP
    // threads; the session should parse with the same (RpcServer::limits()).
    rpc::RequestLimits limits;
    std::chrono::seconds read_timeout{10};  // per read of the request (cpp-httplib)
    std::chrono::seconds write_timeout{10};
    // How long a connection may stay idle waiting for its next request, and for its first one
    // too (cpp-httplib); it holds a thread meanwhile, and stop() may wait that long for it.
    std::chrono::seconds keep_alive_timeout{5};
    // How long an HTTP thread waits for the loop to answer before replying 503.
    std::chrono::milliseconds answer_timeout{10'000};
    std::size_t threads = 4;                   // HTTP threads (each serves one connection)
    std::size_t max_waiting_connections = 64;  // accepted, waiting for a thread; then accept waits
    std::size_t max_pending = 64;              // bodies waiting for the loop; then 503
    // DNS rebinding: without credentials, only these Host names are served, besides localhost,
    // IP literals and the bind address (Transmission's rpc-host-whitelist). Credentials allow
    // any Host, as in Transmission: a rebound page cannot know them.
    bool check_host = true;
    std::vector<std::string> allowed_hosts;
};

// Reads an --rpc-auth file: one line "user:password" (a trailing newline is fine; the password
// may hold ':'). Refused: not a regular file, readable or writable by group or others, empty
// user or password, more than one line.
Result<RpcCredentials> read_rpc_auth_file(const std::string& path);

// Creates an --rpc-auth file that does not exist yet (never replacing one): user "piecework"
// and a random password, mode 0600. For a deployment that must serve the RPC beyond loopback
// (a container's published port) and has no credentials yet: the password is then read from
// the file, never a default everyone knows.
Result<RpcCredentials> create_rpc_auth_file(const std::string& path);

// 127.0.0.0/8, ::1, ::ffff:127.x.y.z (brackets allowed) and "localhost".
bool is_loopback_address(std::string_view address);

// The start-up rule: serving anything but a loopback address needs credentials. The error
// says what to do. RpcServer::start() applies it too.
Status check_rpc_exposure(const RpcServerOptions& options);

class RpcServer {
public:
    // Runs on the loop's thread; its string is the reply body (HTTP 200).
    using Handler = std::function<std::string(const std::string& body)>;

    explicit RpcServer(RpcServerOptions options);
    ~RpcServer();  // stop()
    RpcServer(const RpcServer&) = delete;
    RpcServer& operator=(const RpcServer&) = delete;

    // Before start(): serve `asset` at `path` (e.g. "/", "/app.js").
    void add_asset(std::string path, RpcAsset asset);

    // Binds and starts serving. Errors: the exposure rule, an address that cannot be bound.
    Status start();
    std::uint16_t port() const;
    // This run's X-Transmission-Session-Id (random, new for every RpcServer); session-get
    // reports it as "session-id".
    const std::string& session_id() const;
    const rpc::RequestLimits& limits() const;

    // Readable (an eventfd) while bodies wait for serve_pending.
    int wake_fd() const;
    // On the loop's thread: answers every body queued so far with handle (an exception from it
    // becomes a 500), then returns; bodies arriving meanwhile make wake_fd readable again.
    void serve_pending(const Handler& handle);

    // Refuses new requests, answers the queued ones with 503, waits for the HTTP threads and
    // joins them. Idempotent; from the loop's thread or any other, but not from inside handle
    // (the request being handled waits for its answer until answer_timeout): for
    // session-close, answer it, then stop once serve_pending has returned.
    void stop();

private:
    struct Impl;
    std::unique_ptr<Impl> impl_;
};

}  // namespace pw::orchestrator
