// core/mse against a real client: python3-libtorrent with MSE/PE forced (lt_seeder.py,
// LT_ENC). The test plays the peer over a plain TCP socket: it runs our initiator against a
// libtorrent seeder and fetches a block through the RC4 streams, and runs our responder for
// a connection libtorrent opens to it.
#include "core/mse.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <fstream>
#include <functional>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <variant>
#include <vector>

#include <gtest/gtest.h>

#include "core/metainfo.hpp"
#include "core/wire.hpp"
#include "tests/integration/harness.hpp"

namespace pw {
namespace {

using namespace std::chrono_literals;
using Bytes = std::vector<std::uint8_t>;
using Clock = std::chrono::steady_clock;

constexpr std::uint32_t kPieceBytes = 16384;
constexpr std::uint64_t kPayloadBytes = 5 * kPieceBytes + 1234;

// A payload, its .torrent, and a libtorrent seeder for it with an MSE policy.
struct Seeded {
    test::TempDir dir{"pw-mse-itest-"};
    std::string payload;
    std::string torrent_path;
    std::optional<Torrent> torrent;
    test::Process seeder;
    std::uint16_t port = 0;
};

bool wait_ready(const test::Process& process, std::chrono::milliseconds timeout) {
    const auto deadline = Clock::now() + timeout;
    while (Clock::now() < deadline) {
        if (test::read_text_file(process.log_path()).find("READY ") != std::string::npos) return true;
        std::this_thread::sleep_for(50ms);
    }
    return false;
}

// LT_ENC = "forced" (RC4 only) or "plaintext" (MSE with the plaintext method only).
void seed(Seeded& s, const std::string& lt_enc, const std::vector<std::string>& extra = {}) {
    s.payload = test::make_payload(s.dir.path(), "content.bin", kPayloadBytes, 77);
    s.torrent_path = test::make_torrent(s.payload, kPieceBytes, {}, s.dir / "content.torrent");
    auto parsed = Torrent::parse(test::read_text_file(s.torrent_path));
    ASSERT_TRUE(parsed.ok()) << parsed.error().describe();
    s.torrent.emplace(std::move(parsed).value());
    s.port = test::free_port();
    std::vector<std::string> argv = {"/usr/bin/python3", test::helper("lt_seeder.py"),
                                     s.torrent_path, s.dir.path(), "--port", std::to_string(s.port)};
    argv.insert(argv.end(), extra.begin(), extra.end());
    s.seeder = test::Process::start(argv, s.dir / "lt_seeder.log", {{"LT_ENC", lt_enc}});
    ASSERT_TRUE(wait_ready(s.seeder, 60s)) << s.seeder.log_tail();
}

class Socket {
public:
    explicit Socket(int fd = -1) : fd_(fd) {}
    ~Socket() {
        if (fd_ >= 0) ::close(fd_);
    }
    Socket(Socket&& other) noexcept : fd_(std::exchange(other.fd_, -1)) {}
    Socket(const Socket&) = delete;
    Socket& operator=(const Socket&) = delete;
    Socket& operator=(Socket&&) = delete;
    int fd() const { return fd_; }

    static Socket connect_to(std::uint16_t port) {
        Socket s(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
        sockaddr_in address{};
        address.sin_family = AF_INET;
        address.sin_port = htons(port);
        address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        if (::connect(s.fd_, reinterpret_cast<sockaddr*>(&address), sizeof address) != 0) {
            ::close(s.fd_);
            s.fd_ = -1;
        }
        return s;
    }

    bool send_all(const Bytes& bytes) {
        std::size_t at = 0;
        while (at < bytes.size()) {
            const ssize_t n = ::send(fd_, bytes.data() + at, bytes.size() - at, MSG_NOSIGNAL);
            if (n <= 0) return false;
            at += static_cast<std::size_t>(n);
        }
        return true;
    }

    // Whatever arrives within `timeout`; empty on timeout, nullopt once the peer closed.
    std::optional<Bytes> receive(std::chrono::milliseconds timeout) {
        pollfd p{fd_, POLLIN, 0};
        if (::poll(&p, 1, static_cast<int>(timeout.count())) <= 0) return Bytes{};
        Bytes buffer(65536);
        const ssize_t n = ::recv(fd_, buffer.data(), buffer.size(), 0);
        if (n <= 0) return std::nullopt;
        buffer.resize(static_cast<std::size_t>(n));
        return buffer;
    }

private:
    int fd_;
};

struct Handshaken {
    mse::Outcome outcome;
    std::optional<Error> error;
    bool closed = false;  // the peer hung up before the handshake was done
};

// Drives a handshake over the socket until done, an error, the peer closing, or 20 s.
Handshaken run(mse::MseHandshake& hs, Socket& socket, Bytes first = {}) {
    Handshaken result;
    Bytes out;
    auto progress = hs.feed(first, out);
    const auto deadline = Clock::now() + 20s;
    while (true) {
        if (!progress) {
            result.error = progress.error();
            return result;
        }
        if (!out.empty()) {
            EXPECT_TRUE(socket.send_all(out));
            out.clear();
        }
        if (*progress == mse::MseHandshake::Progress::done) {
            result.outcome = hs.take_outcome();
            return result;
        }
        if (Clock::now() > deadline) {
            ADD_FAILURE() << "handshake took more than 20 s";
            return result;
        }
        auto in = socket.receive(200ms);
        if (!in) {
            result.closed = true;
            return result;
        }
        if (in->empty()) continue;
        progress = hs.feed(*in, out);
    }
}

// The stream after the handshake: decrypted when RC4 was selected.
class Stream {
public:
    Stream(Socket& socket, mse::Outcome& outcome, const PieceGeometry& geometry)
        : socket_(socket), outcome_(outcome), geometry_(geometry), pending_(outcome.remainder) {}

    bool send(Bytes bytes) {
        if (outcome_.cipher) outcome_.cipher->encrypt(bytes);
        return socket_.send_all(bytes);
    }
    bool send(const wire::Message& message) {
        Bytes bytes;
        wire::encode(message, bytes);
        return send(std::move(bytes));
    }

    // At least n bytes of the stream (the BitTorrent handshake), nullopt on timeout or close.
    std::optional<Bytes> read_exactly(std::size_t n) {
        const auto deadline = Clock::now() + 20s;
        while (pending_.size() < n) {
            if (Clock::now() > deadline || !more()) return std::nullopt;
        }
        Bytes head(pending_.begin(), pending_.begin() + static_cast<std::ptrdiff_t>(n));
        pending_.erase(pending_.begin(), pending_.begin() + static_cast<std::ptrdiff_t>(n));
        return head;
    }

    // Messages after the handshake, until `want` returns true; false on timeout or close.
    bool read_messages_until(const std::function<bool(const wire::Message&)>& want) {
        if (!parser_) parser_.emplace(wire::ParserLimits{wire::kDefaultMaxMessage, geometry_});
        parser_->append(pending_);
        pending_.clear();
        const auto deadline = Clock::now() + 20s;
        while (Clock::now() < deadline) {
            auto next = parser_->next();
            if (!next.ok()) {
                ADD_FAILURE() << "libtorrent's stream does not parse: " << next.error().describe();
                return false;
            }
            if (next.value()) {
                if (want(*next.value())) return true;
                continue;
            }
            if (!more()) return false;
            parser_->append(pending_);
            pending_.clear();
        }
        return false;
    }

private:
    bool more() {
        auto in = socket_.receive(200ms);
        if (!in) return false;
        if (outcome_.cipher) outcome_.cipher->decrypt(*in);
        pending_.insert(pending_.end(), in->begin(), in->end());
        return true;
    }

    Socket& socket_;
    mse::Outcome& outcome_;
    PieceGeometry geometry_;
    Bytes pending_;  // received (and decrypted), not yet parsed
    std::optional<wire::StreamParser> parser_;
};

Bytes our_handshake(const Sha1Digest& info_hash) {
    wire::Handshake h;
    h.info_hash = info_hash;
    const std::string id = "-PW0001-mse-itest-01";
    std::copy(id.begin(), id.end(), h.peer_id.begin());
    const auto encoded = wire::encode_handshake(h);
    return Bytes(encoded.begin(), encoded.end());
}

Bytes file_bytes(const std::string& path, std::size_t offset, std::size_t length) {
    std::ifstream file(path, std::ios::binary);
    file.seekg(static_cast<std::streamoff>(offset));
    Bytes out(length);
    file.read(reinterpret_cast<char*>(out.data()), static_cast<std::streamsize>(length));
    return out;
}

// Our initiator against libtorrent; checks its handshake and fetches the last piece's first
// block through the negotiated stream.
void initiate_and_fetch(Seeded& s, mse::Policy policy, mse::Method expected) {
    Socket socket = Socket::connect_to(s.port);
    ASSERT_GE(socket.fd(), 0);
    mse::InitiatorOptions options;
    options.info_hash = s.torrent->info_hash();
    options.policy = policy;
    options.initial_payload = our_handshake(s.torrent->info_hash());
    auto hs = mse::MseHandshake::initiator(options);
    ASSERT_TRUE(hs.ok()) << hs.error().message;
    Handshaken h = run(*hs, socket);
    ASSERT_FALSE(h.error) << h.error->message << "\n" << s.seeder.log_tail();
    ASSERT_FALSE(h.closed) << "libtorrent hung up\n" << s.seeder.log_tail();
    EXPECT_EQ(h.outcome.method, expected);
    EXPECT_EQ(h.outcome.cipher.has_value(), expected == mse::Method::rc4);

    const PieceGeometry geometry(s.torrent->total_size(), s.torrent->piece_length());
    Stream stream(socket, h.outcome, geometry);
    auto theirs = stream.read_exactly(wire::kHandshakeSize);
    ASSERT_TRUE(theirs) << "no BitTorrent handshake from libtorrent\n" << s.seeder.log_tail();
    auto decoded = wire::decode_handshake(std::span<const std::uint8_t, wire::kHandshakeSize>(
        theirs->data(), wire::kHandshakeSize));
    ASSERT_TRUE(decoded.ok()) << decoded.error().describe();
    EXPECT_EQ(decoded->info_hash, s.torrent->info_hash());

    ASSERT_TRUE(stream.send(wire::Interested{}));
    ASSERT_TRUE(stream.read_messages_until(
        [](const wire::Message& m) { return std::holds_alternative<wire::Unchoke>(m); }))
        << "no unchoke\n" << s.seeder.log_tail();
    const PieceIndex last(geometry.piece_count() - 1);
    const std::uint32_t length = std::min<std::uint32_t>(geometry.piece_size(last), 16384);
    ASSERT_TRUE(stream.send(wire::Request{last, BlockOffset(0), BlockLength(length)}));
    Bytes block;
    ASSERT_TRUE(stream.read_messages_until(
        [&](const wire::Message& m) {
            const auto* piece = std::get_if<wire::Piece>(&m);
            if (piece == nullptr) return false;
            block.assign(piece->data.begin(), piece->data.end());
            return true;
        }))
        << "no piece\n" << s.seeder.log_tail();
    EXPECT_EQ(block, file_bytes(s.payload, geometry.piece_offset(last), length));
}

TEST(MseInterop, OurInitiatorToLibtorrentWithRc4Forced) {
    Seeded s;
    ASSERT_NO_FATAL_FAILURE(seed(s, "forced"));
    initiate_and_fetch(s, mse::Policy::require_rc4, mse::Method::rc4);
    initiate_and_fetch(s, mse::Policy::prefer_rc4, mse::Method::rc4);
}

TEST(MseInterop, OurInitiatorToLibtorrentThatSelectsPlaintext) {
    // libtorrent allows only the plaintext method: the IA still goes RC4, everything after
    // it in the clear.
    Seeded s;
    ASSERT_NO_FATAL_FAILURE(seed(s, "plaintext"));
    initiate_and_fetch(s, mse::Policy::prefer_rc4, mse::Method::plaintext);
    initiate_and_fetch(s, mse::Policy::plaintext_only, mse::Method::plaintext);

    // We require RC4, it allows only plaintext: it hangs up rather than select; nothing
    // is spoken in the clear.
    Socket socket = Socket::connect_to(s.port);
    ASSERT_GE(socket.fd(), 0);
    mse::InitiatorOptions options;
    options.info_hash = s.torrent->info_hash();
    options.policy = mse::Policy::require_rc4;
    options.initial_payload = our_handshake(s.torrent->info_hash());
    auto hs = mse::MseHandshake::initiator(options);
    ASSERT_TRUE(hs.ok());
    Handshaken h = run(*hs, socket);
    EXPECT_TRUE(h.closed || h.error.has_value());
    EXPECT_FALSE(hs->done());
}

TEST(MseInterop, LibtorrentInitiatesToOurResponder) {
    test::LoopbackSocket listener = test::open_loopback_socket(SOCK_STREAM);
    Socket listening(listener.fd);
    Seeded s;
    ASSERT_NO_FATAL_FAILURE(
        seed(s, "forced", {"--connect", "127.0.0.1:" + std::to_string(listener.port)}));

    pollfd p{listening.fd(), POLLIN, 0};
    ASSERT_EQ(::poll(&p, 1, 30000), 1) << "libtorrent never connected\n" << s.seeder.log_tail();
    Socket socket(::accept4(listening.fd(), nullptr, nullptr, SOCK_CLOEXEC));
    ASSERT_GE(socket.fd(), 0);

    // Told apart from a plain handshake by its first bytes.
    Bytes first;
    const auto deadline = Clock::now() + 20s;
    while (mse::classify_incoming(first) == mse::Incoming::need_more && Clock::now() < deadline) {
        auto in = socket.receive(200ms);
        ASSERT_TRUE(in) << "libtorrent hung up\n" << s.seeder.log_tail();
        first.insert(first.end(), in->begin(), in->end());
    }
    ASSERT_EQ(mse::classify_incoming(first), mse::Incoming::encrypted);
    EXPECT_FALSE(mse::looks_like_plain_handshake(first));

    mse::ResponderOptions options;
    options.find_info_hash = mse::lookup_among({sha1("another torrent"), s.torrent->info_hash()});
    options.policy = mse::Policy::require_rc4;
    auto hs = mse::MseHandshake::responder(options);
    ASSERT_TRUE(hs.ok()) << hs.error().message;
    Handshaken h = run(*hs, socket, first);
    ASSERT_FALSE(h.error) << h.error->message << "\n" << s.seeder.log_tail();
    ASSERT_FALSE(h.closed) << "libtorrent hung up\n" << s.seeder.log_tail();
    EXPECT_EQ(h.outcome.method, mse::Method::rc4);
    EXPECT_EQ(h.outcome.info_hash, s.torrent->info_hash());

    // Its IA is its BitTorrent handshake.
    ASSERT_EQ(h.outcome.initial_payload.size(), wire::kHandshakeSize);
    auto theirs = wire::decode_handshake(std::span<const std::uint8_t, wire::kHandshakeSize>(
        h.outcome.initial_payload.data(), wire::kHandshakeSize));
    ASSERT_TRUE(theirs.ok()) << theirs.error().describe();
    EXPECT_EQ(theirs->info_hash, s.torrent->info_hash());

    // Our handshake back through RC4; what it sends next (a seed's bitfield, or have_all)
    // must decrypt into messages that parse.
    const PieceGeometry geometry(s.torrent->total_size(), s.torrent->piece_length());
    Stream stream(socket, h.outcome, geometry);
    ASSERT_TRUE(stream.send(our_handshake(s.torrent->info_hash())));
    bool complete = false;
    ASSERT_TRUE(stream.read_messages_until(
        [&](const wire::Message& m) {
            if (const auto* bits = std::get_if<wire::Bitfield>(&m)) {
                complete = wire::valid_bitfield(bits->bits, geometry.piece_count()) &&
                           std::all_of(bits->bits.begin(), bits->bits.end() - 1,
                                       [](std::uint8_t b) { return b == 0xff; });
                return true;
            }
            return false;
        }))
        << "no bitfield\n" << s.seeder.log_tail();
    EXPECT_TRUE(complete);
}

}  // namespace
}  // namespace pw
