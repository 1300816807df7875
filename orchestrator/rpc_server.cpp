#include "orchestrator/rpc_server.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <map>
#include <mutex>
#include <stdexcept>
#include <thread>

#include <httplib.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

#include <nlohmann/json.hpp>

namespace pw::orchestrator {
namespace {

constexpr const char* kSessionHeader = "X-Transmission-Session-Id";
constexpr const char* kJson = "application/json; charset=UTF-8";
constexpr const char* kRealm = "Basic realm=\"piecework\"";
constexpr int kListenBacklog = 128;

bool is_rpc_path(const std::string& path) { return path == "/transmission/rpc" || path == "/transmission/rpc/"; }

std::string lowercase(std::string_view text) {
    std::string out(text);
    for (char& c : out) {
        if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
    }
    return out;
}

std::string strip_brackets(std::string_view address) {
    if (address.size() >= 2 && address.front() == '[' && address.back() == ']') {
        address = address.substr(1, address.size() - 2);
    }
    return std::string(address);
}

bool is_ip_literal(std::string_view address) {
    const std::string bare = strip_brackets(address);
    in_addr v4{};
    in6_addr v6{};
    return inet_pton(AF_INET, bare.c_str(), &v4) == 1 || inet_pton(AF_INET6, bare.c_str(), &v6) == 1;
}

// The host name of a Host header: without the port, brackets kept off IPv6 literals.
std::string host_name(std::string_view header) {
    if (!header.empty() && header.front() == '[') {
        const auto close = header.find(']');
        return std::string(header.substr(0, close == std::string_view::npos ? header.size() : close + 1));
    }
    const auto colon = header.find(':');
    if (colon != std::string_view::npos && header.find(':', colon + 1) == std::string_view::npos) {
        header = header.substr(0, colon);
    }
    return std::string(header);
}

using Digest = std::array<unsigned char, 32>;

Digest sha256(std::string_view data) {
    Digest digest{};
    unsigned int written = 0;
    if (EVP_Digest(data.data(), data.size(), digest.data(), &written, EVP_sha256(), nullptr) != 1 ||
        written != digest.size()) {
        throw std::runtime_error("OpenSSL SHA-256 failed");
    }
    return digest;
}

std::string random_session_id() {
    std::array<unsigned char, 24> bytes{};
    if (RAND_bytes(bytes.data(), static_cast<int>(bytes.size())) != 1) {
        throw std::runtime_error("OpenSSL could not produce random bytes for the RPC session id");
    }
    return to_hex(std::string_view(reinterpret_cast<const char*>(bytes.data()), bytes.size()));
}

// A JSON reply shaped like Transmission's, for what the HTTP side itself answers.
void reply(httplib::Response& res, int status, std::string_view message) {
    res.status = status;
    res.set_content(rpc::render_error(std::nullopt, message), kJson);
}

// cpp-httplib's own pool takes every accepted connection into an unbounded queue. This one
// holds at most max_waiting connections; past that, enqueue (on the accepting thread) waits,
// so connections queue in the kernel's backlog instead of as open sockets here. It stops
// waiting once the server stops, so the accept loop can finish.
class BoundedPool final : public httplib::TaskQueue {
public:
    BoundedPool(std::size_t threads, std::size_t max_waiting, const std::atomic<bool>& stopping)
        : max_waiting_(std::max<std::size_t>(1, max_waiting)), stopping_(stopping) {
        for (std::size_t i = 0; i < std::max<std::size_t>(1, threads); ++i) {
            threads_.emplace_back([this] { work(); });
        }
    }
    ~BoundedPool() override { shutdown(); }

    void enqueue(std::function<void()> job) override {
        std::unique_lock lock(mutex_);
        while (jobs_.size() >= max_waiting_ && !stopping_.load()) {
            not_full_.wait_for(lock, std::chrono::milliseconds(50));
        }
        jobs_.push_back(std::move(job));
        lock.unlock();
        has_job_.notify_one();
    }

    void shutdown() override {
        {
            std::lock_guard lock(mutex_);
            if (shut_down_) return;
            shut_down_ = true;
        }
        has_job_.notify_all();
        for (auto& thread : threads_) thread.join();
    }

private:
    void work() {
        for (;;) {
            std::function<void()> job;
            {
                std::unique_lock lock(mutex_);
                has_job_.wait(lock, [this] { return !jobs_.empty() || shut_down_; });
                if (jobs_.empty()) return;  // shut down, nothing left
                job = std::move(jobs_.front());
                jobs_.pop_front();
            }
            not_full_.notify_one();
            try {
                job();  // serves one connection and closes it
            } catch (...) {
                // cpp-httplib catches what handlers throw; nothing else should reach here,
                // and a thread must not die with the connection.
            }
        }
    }

    const std::size_t max_waiting_;
    const std::atomic<bool>& stopping_;
    std::mutex mutex_;
    std::condition_variable has_job_;
    std::condition_variable not_full_;
    std::deque<std::function<void()>> jobs_;
    bool shut_down_ = false;
    std::vector<std::thread> threads_;
};

struct Answer {
    int status = 200;
    std::string body;
};

// One request body on its way to the loop and its answer on the way back.
struct Exchange {
    explicit Exchange(std::string request_body) : body(std::move(request_body)) {}
    const std::string body;
    std::mutex mutex;
    std::condition_variable answered;
    std::optional<Answer> answer;
    bool abandoned = false;  // the HTTP thread gave up waiting (it replied 503)

    void give(Answer a) {
        {
            std::lock_guard lock(mutex);
            if (answer) return;
            answer = std::move(a);
        }
        answered.notify_all();
    }
    std::optional<Answer> await(std::chrono::milliseconds timeout) {
        std::unique_lock lock(mutex);
        if (!answered.wait_for(lock, timeout, [this] { return answer.has_value(); })) {
            abandoned = true;
            return std::nullopt;
        }
        return std::move(answer);
    }
    bool is_abandoned() {
        std::lock_guard lock(mutex);
        return abandoned;
    }
};

// The queue between the HTTP threads and the loop, with the eventfd that wakes the loop.
class Bridge {
public:
    enum class Submitted { queued, full, closed };

    explicit Bridge(std::size_t max_pending) : max_pending_(std::max<std::size_t>(1, max_pending)) {
        fd_ = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
        if (fd_ < 0) throw std::runtime_error(std::string("eventfd for the RPC: ") + std::strerror(errno));
    }
    ~Bridge() { ::close(fd_); }
    Bridge(const Bridge&) = delete;
    Bridge& operator=(const Bridge&) = delete;

    int fd() const { return fd_; }

    Submitted submit(std::shared_ptr<Exchange> exchange) {
        {
            std::lock_guard lock(mutex_);
            if (closed_) return Submitted::closed;
            if (queue_.size() >= max_pending_) return Submitted::full;
            queue_.push_back(std::move(exchange));
        }
        const std::uint64_t one = 1;
        // Fails only when the counter would overflow (it is far from that): the loop is
        // already woken.
        [[maybe_unused]] const auto written = ::write(fd_, &one, sizeof one);
        return Submitted::queued;
    }

    // Takes what is queued now (the eventfd is reset first, so anything queued after this
    // wakes the loop again).
    std::deque<std::shared_ptr<Exchange>> take() {
        std::uint64_t count = 0;
        [[maybe_unused]] const auto read_bytes = ::read(fd_, &count, sizeof count);
        std::lock_guard lock(mutex_);
        return std::exchange(queue_, {});
    }

    // Refuses what comes next and hands back what is still queued.
    std::deque<std::shared_ptr<Exchange>> close() {
        std::lock_guard lock(mutex_);
        closed_ = true;
        return std::exchange(queue_, {});
    }

private:
    const std::size_t max_pending_;
    int fd_ = -1;
    std::mutex mutex_;
    std::deque<std::shared_ptr<Exchange>> queue_;
    bool closed_ = false;
};

}  // namespace

// --- Start-up helpers ---

Result<RpcCredentials> create_rpc_auth_file(const std::string& path) {
    std::array<unsigned char, 18> random{};
    if (RAND_bytes(random.data(), static_cast<int>(random.size())) != 1) {
        return make_error("--rpc-auth " + path + ": no random bytes for a password");
    }
    RpcCredentials credentials{"piecework", {}};
    static constexpr char kAlphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    for (const unsigned char byte : random) credentials.password += kAlphabet[byte & 63];
    const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd < 0) return make_error("--rpc-auth " + path + ": " + std::strerror(errno));
    const std::string line = credentials.user + ":" + credentials.password + "\n";
    const bool written = ::write(fd, line.data(), line.size()) == static_cast<ssize_t>(line.size()) && ::fsync(fd) == 0;
    ::close(fd);
    if (!written) {
        ::unlink(path.c_str());
        return make_error("--rpc-auth " + path + ": cannot write it");
    }
    return credentials;
}

Result<RpcCredentials> read_rpc_auth_file(const std::string& path) {
    const std::string where = "--rpc-auth " + path + ": ";
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOCTTY);
    if (fd < 0) return make_error(where + std::strerror(errno));
    struct stat info {};
    if (::fstat(fd, &info) != 0) {
        const int error = errno;
        ::close(fd);
        return make_error(where + std::strerror(error));
    }
    if (!S_ISREG(info.st_mode)) {
        ::close(fd);
        return make_error(where + "not a regular file");
    }
    if ((info.st_mode & (S_IRWXG | S_IRWXO)) != 0) {
        ::close(fd);
        char mode[8];
        std::snprintf(mode, sizeof mode, "%03o", static_cast<unsigned>(info.st_mode & 0777));
        return make_error(where + "group or others may access it (mode " + mode +
                          "); it holds a password: chmod 600 it");
    }
    constexpr std::size_t kMaxSize = 4096;
    std::string text(kMaxSize + 1, '\0');
    std::size_t size = 0;
    while (size < text.size()) {
        const auto got = ::read(fd, text.data() + size, text.size() - size);
        if (got < 0 && errno == EINTR) continue;
        if (got < 0) {
            const int error = errno;
            ::close(fd);
            return make_error(where + std::strerror(error));
        }
        if (got == 0) break;
        size += static_cast<std::size_t>(got);
    }
    ::close(fd);
    if (size > kMaxSize) return make_error(where + "larger than 4 KiB; it should hold one line user:password");
    text.resize(size);
    if (text.ends_with('\n')) text.pop_back();
    if (text.ends_with('\r')) text.pop_back();
    if (text.find_first_of("\r\n") != std::string::npos) {
        return make_error(where + "holds more than one line; it should hold one line user:password");
    }
    const auto colon = text.find(':');
    if (colon == std::string::npos) return make_error(where + "should hold one line user:password (no ':' found)");
    RpcCredentials credentials{text.substr(0, colon), text.substr(colon + 1)};
    if (credentials.user.empty()) return make_error(where + "the user name (before ':') is empty");
    if (credentials.password.empty()) return make_error(where + "the password (after ':') is empty");
    return credentials;
}

bool is_loopback_address(std::string_view address) {
    if (lowercase(address) == "localhost") return true;
    const std::string bare = strip_brackets(address);
    in_addr v4{};
    if (inet_pton(AF_INET, bare.c_str(), &v4) == 1) return (ntohl(v4.s_addr) >> 24) == 127;
    in6_addr v6{};
    if (inet_pton(AF_INET6, bare.c_str(), &v6) != 1) return false;
    if (IN6_IS_ADDR_LOOPBACK(&v6)) return true;
    return IN6_IS_ADDR_V4MAPPED(&v6) && v6.s6_addr[12] == 127;
}

Status check_rpc_exposure(const RpcServerOptions& options) {
    if (options.credentials) {
        if (options.credentials->user.empty() || options.credentials->password.empty()) {
            return make_error("RPC credentials need a user name and a password");
        }
        return ok_status();
    }
    if (is_loopback_address(options.bind_address)) return ok_status();
    return make_error("refusing to serve the RPC on " + options.bind_address +
                      " without credentials: anyone who can reach port " + std::to_string(options.port) +
                      " could control the daemon and its files. Give --rpc-auth FILE (one line "
                      "user:password, chmod 600), or bind 127.0.0.1");
}

// --- The server ---

struct RpcServer::Impl {
    explicit Impl(RpcServerOptions opts)
        : options(std::move(opts)), session_id(random_session_id()), bridge(options.max_pending) {
        if (options.credentials) {
            expected_credentials = sha256(options.credentials->user + ":" + options.credentials->password);
        }
        for (const auto& host : options.allowed_hosts) allowed_hosts.push_back(lowercase(host_name(host)));
        allowed_hosts.push_back(lowercase(strip_brackets(options.bind_address)));
    }

    // Host, credentials, then (on the RPC path) session id, method and declared size: every
    // refusal that does not need the body (see pre_route for when it is answered).
    bool refuse(const httplib::Request& req, httplib::Response& res) const {
        if (!host_allowed(req)) {
            reply(res, 421,
                  "this server does not answer to Host \"" + req.get_header_value("Host") +
                      "\" (DNS rebinding protection): use localhost or an IP address, or add the name "
                      "to the allowed hosts");
            return true;
        }
        if (!authorized(req)) {
            res.set_header("WWW-Authenticate", kRealm);
            reply(res, 401, "unauthorized: this server needs a user name and password (HTTP Basic)");
            return true;
        }
        if (!is_rpc_path(req.path)) return false;
        if (!session_id_matches(req.get_header_value(kSessionHeader))) {
            res.set_header(kSessionHeader, session_id);
            reply(res, 409,
                  std::string("invalid or missing ") + kSessionHeader + " header: resend the request with "
                      "the header of this reply, " + kSessionHeader + ": " + session_id +
                      " (this guards against cross-site request forgery)");
            return true;
        }
        if (req.method != "POST") {
            res.set_header("Allow", "POST");
            reply(res, 405, "POST a JSON request to this path (Transmission's RPC protocol)");
            return true;
        }
        if (declared_length(req) > options.limits.max_body) {
            reply(res, 413, too_large());
            return true;
        }
        return false;
    }

    std::string too_large() const {
        return "request body is larger than " + std::to_string(options.limits.max_body) + " bytes";
    }

    bool host_allowed(const httplib::Request& req) const {
        if (!options.check_host || options.credentials) return true;
        if (!req.has_header("Host")) return true;  // HTTP/1.0; browsers always send Host
        const std::string host = lowercase(host_name(req.get_header_value("Host")));
        if (host == "localhost" || host == "localhost." || is_ip_literal(host)) return true;
        const std::string bare = strip_brackets(host);
        return std::find(allowed_hosts.begin(), allowed_hosts.end(), bare) != allowed_hosts.end();
    }

    bool authorized(const httplib::Request& req) const {
        if (!expected_credentials) return true;
        const std::string header = req.get_header_value("Authorization");
        if (header.size() < 6 || lowercase(header.substr(0, 6)) != "basic ") return false;
        std::string_view encoded(header);
        encoded.remove_prefix(6);
        const auto decoded = rpc::decode_base64(encoded);
        if (!decoded) return false;
        // Fixed-length digests compared in constant time: neither the content nor the
        // length of the credentials shows in the timing.
        const Digest given = sha256(*decoded);
        return CRYPTO_memcmp(given.data(), expected_credentials->data(), given.size()) == 0;
    }

    bool session_id_matches(const std::string& given) const {
        return given.size() == session_id.size() &&
               CRYPTO_memcmp(given.data(), session_id.data(), given.size()) == 0;
    }

    void handle_rpc(std::string body, httplib::Response& res) {
        if (const auto checked = rpc::check_request_body(body, options.limits); !checked) {
            res.status = 400;
            res.set_content(rpc::render_error(std::nullopt, checked.error().describe()), kJson);
            return;
        }
        auto exchange = std::make_shared<Exchange>(std::move(body));
        switch (bridge.submit(exchange)) {
            case Bridge::Submitted::full:
                res.set_header("Retry-After", "1");
                return reply(res, 503, "the daemon is busy: too many requests are waiting; try again");
            case Bridge::Submitted::closed:
                return reply(res, 503, "the daemon is shutting down");
            case Bridge::Submitted::queued:
                break;
        }
        auto answer = exchange->await(options.answer_timeout);
        if (!answer) return reply(res, 503, "the daemon did not answer in time; try again");
        res.status = answer->status;
        res.set_content(std::move(answer->body), kJson);
    }

    // Every request that may carry a body (POST, PUT, PATCH, DELETE) comes here, through
    // cpp-httplib's content reader rather than its own body reading, which Debian's build
    // limits to 8 KiB for "application/x-www-form-urlencoded" (what transmission-remote
    // declares) and does not limit at all for chunked bodies. The body is read (at most
    // max_body bytes, kept only when it will be used) before anything is refused, so that the
    // client reads the answer instead of a reset connection.
    void handle_body(const httplib::Request& req, httplib::Response& res, const httplib::ContentReader& read) {
        httplib::Response probe;
        const bool multipart = req.is_multipart_form_data();
        const bool keep = !refuse(req, probe) && is_rpc_path(req.path) && !multipart;
        const std::size_t max = options.limits.max_body;
        std::string body;
        if (keep) body.reserve(static_cast<std::size_t>(std::min<std::uint64_t>(declared_length(req), max)));
        std::size_t received = 0;
        bool over_limit = false;
        const auto receive = [&](const char* data, std::size_t size) {
            if (size > max - received) {
                over_limit = true;
                return false;
            }
            received += size;
            if (keep) body.append(data, size);
            return true;
        };
        const bool complete =
            multipart ? read([](const httplib::MultipartFormData&) { return true; }, receive) : read(receive);
        if (over_limit || res.status == 413) return reply(res, 413, too_large());
        if (!complete) return reply(res, 400, "the request body could not be read");
        if (refuse(req, res)) return;
        if (!is_rpc_path(req.path)) return reply(res, 404, "no such page: " + req.path);
        if (multipart) return reply(res, 415, "send the JSON request itself as the body, not multipart/form-data");
        handle_rpc(std::move(body), res);
    }

    void handle_asset(const httplib::Request& req, httplib::Response& res) const {
        const auto it = assets.find(req.path);
        if (it == assets.end()) return reply(res, 404, "no such page: " + req.path);
        for (const auto& [name, value] : it->second.headers) res.set_header(name, value);
        res.set_content(it->second.body, it->second.content_type);
    }

    static std::uint64_t declared_length(const httplib::Request& req) {
        return req.has_header("Content-Length")
                   ? std::strtoull(req.get_header_value("Content-Length").c_str(), nullptr, 10)
                   : 0;
    }
    static bool has_body(const httplib::Request& req) {
        return declared_length(req) > 0 ||
               lowercase(req.get_header_value("Transfer-Encoding")).find("chunked") != std::string::npos;
    }

    // Before the body is read. A refused request without a body, or with one far over the
    // limit, is answered now. One with a body is read first and refused by handle_body:
    // answering while the client still sends, then closing with its bytes unread, makes the
    // kernel reset the connection, and the client sees the reset instead of the answer.
    // Clients that send "Expect: 100-continue" (curl, for large bodies) get the refusal before
    // they send anything.
    httplib::Server::HandlerResponse pre_route(const httplib::Request& req, httplib::Response& res) const {
        httplib::Response probe;
        if (!refuse(req, probe)) return httplib::Server::HandlerResponse::Unhandled;
        const bool read_by_route = req.method == "POST" || req.method == "PUT" || req.method == "PATCH" ||
                                   req.method == "DELETE";
        if (read_by_route && has_body(req) && declared_length(req) <= 2 * std::uint64_t{options.limits.max_body}) {
            return httplib::Server::HandlerResponse::Unhandled;
        }
        refuse(req, res);
        return httplib::Server::HandlerResponse::Handled;
    }

    void configure() {
        server.new_task_queue = [this] {
            return new BoundedPool(options.threads, options.max_waiting_connections, stopping);
        };
        // cpp-httplib also sets SO_REUSEPORT by default, which lets a second server bind the
        // same port and take a share of the connections: only SO_REUSEADDR here, so a restart
        // need not wait for TIME_WAIT but a port in use is an error.
        server.set_socket_options([this](socket_t sock) {
            const int yes = 1;
            ::setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof yes);
            listening_socket = sock;  // the last one tried is the one bound
        });
        server.set_tcp_nodelay(true);
        server.set_read_timeout(options.read_timeout);
        server.set_write_timeout(options.write_timeout);
        server.set_keep_alive_timeout(options.keep_alive_timeout.count());
        server.set_payload_max_length(options.limits.max_body);  // a declared length over it: 413
        server.set_expect_100_continue_handler([this](const httplib::Request& req, httplib::Response& res) {
            return refuse(req, res) ? res.status : 100;
        });
        server.set_pre_routing_handler(
            [this](const httplib::Request& req, httplib::Response& res) { return pre_route(req, res); });
        const auto body = [this](const httplib::Request& req, httplib::Response& res,
                                 const httplib::ContentReader& read) { handle_body(req, res, read); };
        server.Post(".*", body);
        server.Put(".*", body);
        server.Patch(".*", body);
        server.Delete(".*", body);
        server.Get(".*", [this](const httplib::Request& req, httplib::Response& res) {
            if (!refuse(req, res)) handle_asset(req, res);
        });
        // What cpp-httplib answers by itself (404, 413 for a body over the limit, 400 for a
        // malformed request) gets a JSON body too.
        server.set_error_handler(httplib::Server::HandlerWithResponse([this](const httplib::Request& req,
                                                                             httplib::Response& res) {
            if (!res.body.empty()) return httplib::Server::HandlerResponse::Unhandled;
            if (res.status == 404) {
                reply(res, 404, "no such page: " + req.path);
            } else if (res.status == 413) {
                reply(res, 413, too_large());
            } else {
                reply(res, res.status, "HTTP " + std::to_string(res.status));
            }
            return httplib::Server::HandlerResponse::Handled;
        }));
        server.set_exception_handler([](const httplib::Request&, httplib::Response& res, std::exception_ptr) {
            reply(res, 500, "internal error");
        });
    }

    void answer_all(std::deque<std::shared_ptr<Exchange>> exchanges, int status, std::string_view message) {
        for (auto& exchange : exchanges) exchange->give(Answer{status, rpc::render_error(std::nullopt, message)});
    }

    RpcServerOptions options;
    const std::string session_id;
    std::optional<Digest> expected_credentials;
    std::vector<std::string> allowed_hosts;
    std::map<std::string, RpcAsset> assets;
    Bridge bridge;
    std::atomic<bool> stopping{false};
    std::mutex lifecycle;  // start() and stop()
    bool started = false;
    bool stopped = false;
    std::uint16_t bound_port = 0;
    int listening_socket = -1;
    httplib::Server server;
    std::thread listener;
};

RpcServer::RpcServer(RpcServerOptions options) : impl_(std::make_unique<Impl>(std::move(options))) {}

RpcServer::~RpcServer() { stop(); }

void RpcServer::add_asset(std::string path, RpcAsset asset) {
    std::lock_guard lock(impl_->lifecycle);
    if (impl_->started) throw std::logic_error("RpcServer::add_asset after start()");
    impl_->assets.insert_or_assign(std::move(path), std::move(asset));
}

Status RpcServer::start() {
    Impl& impl = *impl_;
    std::lock_guard lock(impl.lifecycle);
    if (impl.started) return make_error("the RPC server is already started");
    if (auto exposure = check_rpc_exposure(impl.options); !exposure) return exposure.error();
    impl.configure();
    const std::string& host = impl.options.bind_address;
    int port = impl.options.port;
    if (port == 0) {
        port = impl.server.bind_to_any_port(host);
        if (port < 0) return make_error("RPC: cannot bind " + host + " (any port)");
    } else if (!impl.server.bind_to_port(host, port)) {
        return make_error("RPC: cannot bind " + host + ":" + std::to_string(port) +
                          " (in use, or not an address of this machine)");
    }
    impl.bound_port = static_cast<std::uint16_t>(port);
    // Debian's cpp-httplib listens with a backlog of 5: a burst of clients overflows it, and a
    // connection the kernel dropped and the client sent again may reach a thread after
    // keep_alive_timeout, which cpp-httplib also waits for a first request, and be closed
    // unanswered. Calling listen() again on the bound socket raises the backlog.
    if (impl.listening_socket >= 0) ::listen(impl.listening_socket, kListenBacklog);
    impl.listener = std::thread([&impl] { impl.server.listen_after_bind(); });
    // cpp-httplib's stop() does nothing until the accept loop runs: wait for it, so that a
    // stop() right after start() cannot leave the listener running.
    for (int i = 0; i < 5000 && !impl.server.is_running(); ++i) {
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    impl.started = true;
    return ok_status();
}

std::uint16_t RpcServer::port() const { return impl_->bound_port; }
const std::string& RpcServer::session_id() const { return impl_->session_id; }
const rpc::RequestLimits& RpcServer::limits() const { return impl_->options.limits; }
int RpcServer::wake_fd() const { return impl_->bridge.fd(); }

void RpcServer::serve_pending(const Handler& handle) {
    for (auto& exchange : impl_->bridge.take()) {
        if (exchange->is_abandoned()) continue;  // its client already got a 503
        Answer answer;
        try {
            answer.body = handle(exchange->body);
        } catch (const std::exception& e) {
            answer = Answer{500, rpc::render_error(std::nullopt, std::string("internal error: ") + e.what())};
        } catch (...) {
            answer = Answer{500, rpc::render_error(std::nullopt, "internal error")};
        }
        exchange->give(std::move(answer));
    }
}

void RpcServer::stop() {
    Impl& impl = *impl_;
    std::lock_guard lock(impl.lifecycle);
    if (impl.stopped) return;
    impl.stopped = true;
    impl.stopping = true;
    impl.answer_all(impl.bridge.close(), 503, "the daemon is shutting down");
    if (!impl.started) return;
    impl.server.stop();
    if (impl.listener.joinable()) impl.listener.join();
}

}  // namespace pw::orchestrator
