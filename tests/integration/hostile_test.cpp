// Issue 4, hostile input through the whole `piecework download`: peers that lie or babble
// (tests/integration/hostile_peer.py), .torrent files with hostile paths or bencode, and
// junk frames thrown at the stages' own sockets. Every case ends with the right bytes in DIR
// and nothing anywhere else, or with a clear refusal.
#include <gtest/gtest.h>
#include <sys/types.h>

#include <filesystem>
#include <fstream>
#include <functional>
#include <sstream>
#include <thread>

#include <zmq.hpp>

#include "core/bencode.hpp"
#include "core/bus/bus.hpp"
#include "core/sha1.hpp"
#include "tests/integration/harness.hpp"

namespace pw::test {
namespace {

namespace fs = std::filesystem;

constexpr auto kDownloadTimeout = 240s;

// Every file and folder below root, relative to it, sorted; without the writer's own state
// folder (.piecework, inside the download folder), which is not torrent content.
std::vector<std::string> list_tree(const std::string& root) {
    std::vector<std::string> names;
    for (const auto& entry : fs::recursive_directory_iterator(root)) {
        const std::string name = fs::relative(entry.path(), root).string();
        if (name.find(".piecework") != std::string::npos) continue;
        names.push_back(name);
    }
    std::sort(names.begin(), names.end());
    return names;
}

std::string joined(const std::vector<std::string>& names) {
    std::string text;
    for (const auto& name : names) text += "  " + name + "\n";
    return text;
}

// hostile_peer.py in one mode, listening on `count` ports of `host`.
class HostilePeer {
public:
    static HostilePeer start(const TempDir& dir, const std::string& torrent,
                             const std::string& payload, const std::string& mode,
                             int count = 1, const std::string& host = "127.0.0.1") {
        HostilePeer peer;
        peer.host_ = host;
        const std::string log = dir / ("hostile_" + mode + "_" + host + ".log");
        peer.process_ = Process::start({"/usr/bin/python3", helper("hostile_peer.py"), torrent, payload,
                                        "--mode", mode, "--host", host, "--count",
                                        std::to_string(count)},
                                       log);
        for (int i = 0; i < 400; ++i) {
            const std::string text = read_text_file(log);
            const auto ready = text.find("READY ");
            const auto end = text.find('\n', ready == std::string::npos ? 0 : ready);
            if (ready != std::string::npos && end != std::string::npos) {
                std::istringstream ports(text.substr(ready + 6, end - ready - 6));
                for (int port = 0; ports >> port;) peer.ports_.push_back(static_cast<std::uint16_t>(port));
                break;
            }
            std::this_thread::sleep_for(50ms);
        }
        return peer;
    }

    std::vector<std::string> peer_args() const {
        std::vector<std::string> args;
        for (const auto port : ports_) {
            args.push_back("--peer");
            args.push_back(host_ + ":" + std::to_string(port));
        }
        return args;
    }
    bool ready() const { return !ports_.empty(); }
    const std::vector<std::uint16_t>& ports() const { return ports_; }
    std::string log() { return read_text_file(process_.log_path()); }

private:
    Process process_;
    std::string host_;
    std::vector<std::uint16_t> ports_;
};

class HostileTest : public ::testing::Test {
protected:
    // Runs piecework download into dir_/top/out; returns its exit code (-1: timed out).
    int download(const std::string& torrent, const std::vector<std::string>& extra,
                 std::function<void(Process&)> meanwhile = {}, const std::string& level = "info") {
        std::vector<std::string> argv = {bin("piecework"), "download", torrent, "-o", out(),
                                         "--log-level", level};
        argv.insert(argv.end(), extra.begin(), extra.end());
        auto client = Process::start(argv, dir_ / "piecework.log");
        if (meanwhile) meanwhile(client);
        const int code = client.wait_for_exit(kDownloadTimeout);
        if (code == -1) client.kill();
        return code;
    }
    std::string out() const { return dir_ / "top/out"; }
    std::string client_log() const { return read_text_file(dir_ / "piecework.log"); }

    // An 8 MiB payload (33 pieces: the bitfield has spare bits) in dir_/data and its
    // trackerless torrent.
    void make_single(std::uint64_t bytes = (8ull << 20) + 100'000) {
        payload_ = make_payload(dir_ / "data", "payload.bin", bytes, 77);
        torrent_ = make_torrent(payload_, 256u << 10, {}, dir_ / "t.torrent");
    }

    LibtorrentSeeder& honest_seeder(std::uint32_t rate_kib) {
        LibtorrentSeederOptions options;
        options.rate_kib = rate_kib;
        seeders_.push_back(LibtorrentSeeder::start(torrent_, dir_ / "data", options));
        EXPECT_TRUE(seeders_.back().wait_ready(120s)) << seeders_.back().log();
        return seeders_.back();
    }
    static std::vector<std::string> peer_arg(const LibtorrentSeeder& seeder) {
        return {"--peer", "127.0.0.1:" + std::to_string(seeder.port())};
    }

    void expect_payload_and_nothing_else() {
        std::string why;
        EXPECT_TRUE(same_tree(payload_, out() + "/payload.bin", &why)) << why;
        EXPECT_EQ(list_tree(dir_ / "top"), (std::vector<std::string>{"out", "out/payload.bin"}))
            << joined(list_tree(dir_ / "top"));
    }

    TempDir dir_{"pw-hostile-"};
    std::string payload_;
    std::string torrent_;
    std::vector<LibtorrentSeeder> seeders_;
};

// --- hostile peers ---

// Every kind of protocol abuse at once, each from its own peer, beside one honest seeder
// (rate-capped so the download lasts long enough to meet them all).
TEST_F(HostileTest, ProtocolAbuseBesideAnHonestSeeder) {
    make_single();
    auto& seeder = honest_seeder(2048);
    // Each mode, and a word of the reason the worker gives when it drops that peer.
    const std::vector<std::pair<std::string, std::string>> cases = {
        {"huge_length", "4294967295"},       {"two_million", "2000000"},
        {"unknown_id", "unknown message id"}, {"have_out_of_range", "out of range"},
        {"bitfield_wrong_size", "bitfield"}, {"bitfield_spare_bits", "spare bits"},
        {"unrequested_piece", ""},           {"piece_out_of_range", "out of range"},
        {"piece_too_large", "exceeds"},      {"wrong_infohash", "another torrent"},
        {"trickle", ""},                     {"junk", "handshake"}};
    std::vector<std::string> modes;
    for (const auto& entry : cases) modes.push_back(entry.first);
    std::vector<HostilePeer> peers;
    std::vector<std::string> args = peer_arg(seeder);
    for (const auto& mode : modes) {
        peers.push_back(HostilePeer::start(dir_, torrent_, payload_, mode));
        ASSERT_TRUE(peers.back().ready()) << peers.back().log();
        for (auto& arg : peers.back().peer_args()) args.push_back(arg);
    }
    const int code = download(torrent_, args, {}, "debug");
    std::string logs = "\n--- piecework ---\n" + client_log();
    for (auto& peer : peers) logs += "\n--- hostile ---\n" + peer.log();
    ASSERT_EQ(code, 0) << logs;
    expect_payload_and_nothing_else();
    for (std::size_t i = 0; i < modes.size(); ++i) {
        EXPECT_NE(peers[i].log().find("connection from"), std::string::npos)
            << modes[i] << " was never tried" << logs;
        // The worker drops the peer for what it did, during the download (drops at
        // shutdown are not logged). A trickling handshake may outlast a short download, and
        // an unrequested block earns a strike, not a drop.
        if (cases[i].second.empty()) continue;
        const std::string log = client_log();
        const std::string key = "127.0.0.1:" + std::to_string(peers[i].ports().front()) + " (torrent 1): dropped:";
        const auto at = log.find(key);
        ASSERT_NE(at, std::string::npos) << modes[i] << " was not dropped" << logs;
        const std::string line = log.substr(at, log.find('\n', at) - at);
        EXPECT_NE(line.find(cases[i].second), std::string::npos) << modes[i] << ": " << line;
    }
}

// A peer that corrupts one block of every piece it serves: each such piece fails its hash
// check with that peer as its only contributor, so the peer is banned at once, and the
// pieces come from the honest seeder. Bans are by peer (address and port, and peer id); the
// liar beside the seeder on 127.0.0.1 is tests/integration/ban_test.cpp's case.
TEST_F(HostileTest, LiarIsBannedAndItsPiecesFetchedAgain) {
    make_single();
    auto& seeder = honest_seeder(1024);
    auto liar = HostilePeer::start(dir_, torrent_, payload_, "corrupt", 1, "127.0.0.2");
    ASSERT_TRUE(liar.ready()) << liar.log();
    std::vector<std::string> args = liar.peer_args();
    for (auto& arg : peer_arg(seeder)) args.push_back(arg);
    const int code = download(torrent_, args);
    const std::string logs = "\n--- piecework ---\n" + client_log() + "\n--- liar ---\n" + liar.log();
    ASSERT_EQ(code, 0) << logs;
    expect_payload_and_nothing_else();
    EXPECT_NE(client_log().find("banning peer 127.0.0.2:" + std::to_string(liar.ports().front())),
              std::string::npos)
        << logs;
    EXPECT_EQ(client_log().find("banning address"), std::string::npos) << logs;
}

TEST_F(HostileTest, FiftyJunkPeersBesideOneHonestSeeder) {
    make_single();
    auto& seeder = honest_seeder(4096);
    auto junk = HostilePeer::start(dir_, torrent_, payload_, "junk", 50);
    ASSERT_TRUE(junk.ready()) << junk.log();
    std::vector<std::string> args = junk.peer_args();
    ASSERT_EQ(args.size(), 100u);
    for (auto& arg : peer_arg(seeder)) args.push_back(arg);
    const int code = download(torrent_, args);
    ASSERT_EQ(code, 0) << client_log();
    expect_payload_and_nothing_else();
}

// --- hostile .torrent files ---

struct HostileFile {
    std::vector<std::string> path;
    std::uint64_t length;
};

// A multi-file torrent with these (raw, unsanitized) paths, its pieces hashed over the flat
// byte stream written to `flat`.
std::string hostile_torrent(const TempDir& dir, const std::vector<HostileFile>& files,
                            const std::string& flat) {
    constexpr std::uint32_t kPieceLength = 32u << 10;
    std::uint64_t total = 0;
    for (const auto& file : files) total += file.length;
    std::string bytes(total, '\0');
    for (std::uint64_t i = 0; i < total; ++i) bytes[i] = static_cast<char>((i * 2654435761u) >> 13);
    std::ofstream(flat, std::ios::binary) << bytes;
    std::string pieces;
    for (std::uint64_t at = 0; at < total; at += kPieceLength) {
        const auto digest = sha1(std::string_view(bytes).substr(at, kPieceLength));
        pieces.append(reinterpret_cast<const char*>(digest.data()), digest.size());
    }
    bencode::List list;
    for (const auto& file : files) {
        bencode::List path;
        for (const auto& element : file.path) path.emplace_back(element);
        list.emplace_back(bencode::Dict{{"length", static_cast<std::int64_t>(file.length)},
                                        {"path", std::move(path)}});
    }
    bencode::Dict info{{"files", std::move(list)},
                       {"name", std::string("../../escape")},
                       {"piece length", static_cast<std::int64_t>(kPieceLength)},
                       {"pieces", pieces}};
    const std::string torrent = dir / "hostile.torrent";
    std::ofstream(torrent, std::ios::binary) << bencode::encode(bencode::Dict{{"info", std::move(info)}});
    (void)dir;
    return torrent;
}

TEST_F(HostileTest, HostilePathsStayInsideTheDownloadFolder) {
    const std::string flat = dir_ / "flat.bin";
    const std::string torrent = hostile_torrent(
        dir_,
        {{{"..", "..", "..", "up.txt"}, 40000},
         {{"/etc", "absolute.txt"}, 1000},
         {{"a\\..\\..\\back.txt"}, 5000},
         {{"ctl\x01\x1b[31m\n.txt"}, 300},
         {{"dup.txt"}, 70000},
         {{"dup.txt"}, 1234},
         {{"", "empty", "", "x.txt"}, 17},
         {{"."}, 99},
         {{"a", "..", "..", "b.txt"}, 33333}},
        flat);
    auto seeder = HostilePeer::start(dir_, torrent, flat, "honest");
    ASSERT_TRUE(seeder.ready()) << seeder.log();
    const int code = download(torrent, seeder.peer_args());
    const std::string logs = "\n--- piecework ---\n" + client_log() + "\n--- seeder ---\n" + seeder.log();
    ASSERT_NE(code, -1) << logs;
    // Whatever piecework decides, nothing lands outside top/out.
    for (const auto& name : list_tree(dir_ / "top")) {
        EXPECT_TRUE(name == "out" || name.starts_with("out/")) << "stray: " << name << logs;
    }
    for (const auto& name : list_tree(dir_.path())) {
        EXPECT_TRUE(name.starts_with("top") || name == "flat.bin" || name == "hostile.torrent" ||
                    name == "piecework.log" || name.starts_with("hostile_"))
            << "stray: " << name << logs;
    }
    if (code == 0) {
        // Everything arrived: the files under out/ hold exactly the torrent's bytes.
        std::uint64_t written = 0;
        for (const auto& name : list_tree(out())) {
            if (fs::is_regular_file(out() + "/" + name)) written += fs::file_size(out() + "/" + name);
        }
        EXPECT_EQ(written, fs::file_size(flat)) << joined(list_tree(out()));
    } else {
        EXPECT_NE(client_log().find("piecework"), std::string::npos) << logs;
    }
}

// Bencode built to hurt: each must give one clear line and a non-zero exit, never a crash.
TEST_F(HostileTest, HostileBencodeIsRefusedClearly) {
    const std::vector<std::pair<std::string, std::string>> cases = {
        {"deep", std::string(1'000'000, 'l') + std::string(1'000'000, 'e')},
        {"long_string", "d4:infod4:name100000000:" + std::string(1000, 'x') + "ee"},
        {"int_overflow", "d4:infod6:lengthi99999999999999999999999e4:name1:x12:piece lengthi16384e6:pieces20:" +
                             std::string(20, 'a') + "ee"},
        {"negative_overflow", "d4:infod6:lengthi-99999999999999999999999e4:name1:xee"},
    };
    for (const auto& [name, bytes] : cases) {
        const std::string path = dir_ / (name + ".torrent");
        std::ofstream(path, std::ios::binary) << bytes;
        for (const std::string command : {"inspect", "download"}) {
            std::string output;
            std::vector<std::string> argv = {bin("piecework"), command, path};
            if (command == "download") argv.insert(argv.end(), {"-o", out()});
            const int code = run_command(argv, &output, 60s);
            EXPECT_NE(code, 0) << name << " " << command << ": " << output;
            EXPECT_LT(code, 128) << name << " " << command << " crashed: " << output;
            EXPECT_FALSE(output.empty()) << name << " " << command;
            EXPECT_LT(output.size(), 2000u) << name << " " << command << ": " << output;
        }
    }
    // Nothing written: at most the (empty) download folder.
    if (fs::exists(dir_ / "top")) {
        for (const auto& entry : fs::recursive_directory_iterator(dir_ / "top")) {
            EXPECT_TRUE(entry.is_directory()) << "written: " << entry.path();
        }
    }
}

// --- hostile frames between the stages ---

// The endpoint a running stage (a child of `parent`) was given as its --flag value. Only
// children of our own client count: other downloads may run on the same machine.
std::string stage_endpoint(pid_t parent, const std::string& stage_name, const std::string& flag) {
    for (const auto& child : live_children(parent)) {
        if (child.flag_value("--name") == stage_name) return child.flag_value(flag);
    }
    return {};
}

// Junk sent straight into a running download's sockets: garbage bytes, an envelope of a
// schema version nobody speaks, an envelope with no body, a batch with a piece that does not
// exist, batches whose frames do not match their pieces, one naming an arena that is no
// worker's, an empty one. Each stage logs and drops it; the download completes.
TEST_F(HostileTest, JunkFramesIntoTheStagesSocketsAreDropped) {
    make_single(16ull << 20);
    auto& seeder = honest_seeder(2048);
    const int code = download(torrent_, peer_arg(seeder), [&](Process& client) {
        std::string control;
        std::string pieces;
        std::string verified;
        for (int i = 0; i < 200 && (pieces.empty() || verified.empty() || control.empty()); ++i) {
            std::this_thread::sleep_for(50ms);
            control = stage_endpoint(client.pid(), "verifier", "--control");
            pieces = stage_endpoint(client.pid(), "verifier", "--pieces");
            verified = stage_endpoint(client.pid(), "writer", "--verified");
        }
        ASSERT_FALSE(pieces.empty());
        ASSERT_FALSE(verified.empty());
        std::this_thread::sleep_for(1s);
        zmq::context_t context;
        auto junk_messages = [] {
            std::vector<std::vector<std::string>> messages;
            messages.push_back({"\xff\x00garbage"});
            messages.push_back({std::string(70000, '\x0a')});
            bus::v1::Envelope future;
            future.set_version(99);
            future.mutable_piece_batch()->add_pieces()->set_piece(0);
            messages.push_back({future.SerializeAsString(), std::string(256 << 10, 'z')});
            bus::v1::Envelope empty;
            empty.set_version(bus::kSchemaVersion);
            messages.push_back({empty.SerializeAsString()});
            bus::v1::Envelope bogus;
            bogus.set_version(bus::kSchemaVersion);
            bogus.mutable_piece_batch()->add_pieces()->set_piece(1'000'000);
            messages.push_back({bogus.SerializeAsString(), "tiny"});
            bus::v1::Envelope no_data;
            no_data.set_version(bus::kSchemaVersion);
            no_data.mutable_piece_batch()->add_pieces()->set_piece(3);
            messages.push_back({no_data.SerializeAsString()});
            messages.push_back({no_data.SerializeAsString(), "a", "b", "c", "d", "e", "f"});
            // Bytes said to be in a shared-memory arena that is no worker's.
            bus::v1::Envelope elsewhere = no_data;
            auto* arena = elsewhere.mutable_piece_batch()->mutable_arena();
            arena->set_path("/etc/passwd");
            arena->set_id(1);
            arena->set_slot_size(1 << 20);
            arena->set_slot_count(4);
            elsewhere.mutable_piece_batch()->mutable_pieces(0)->set_lease_id(0x5eed0000beefull);
            elsewhere.mutable_piece_batch()->mutable_pieces(0)->set_size(1 << 18);
            messages.push_back({elsewhere.SerializeAsString()});
            bus::v1::Envelope no_pieces;
            no_pieces.set_version(bus::kSchemaVersion);
            no_pieces.mutable_piece_batch()->set_worker("peer_worker-1");
            messages.push_back({no_pieces.SerializeAsString()});
            return messages;
        };
        auto send_all = [&](zmq::socket_t& socket) {
            for (const auto& parts : junk_messages()) {
                for (std::size_t i = 0; i < parts.size(); ++i) {
                    socket.send(zmq::buffer(parts[i]),
                                i + 1 < parts.size() ? zmq::send_flags::sndmore : zmq::send_flags::none);
                }
            }
        };
        for (const auto& endpoint : {pieces, verified}) {
            zmq::socket_t push(context, zmq::socket_type::push);
            push.set(zmq::sockopt::linger, 2000);
            push.connect(endpoint);
            send_all(push);
            if (endpoint == pieces) {
                // Well-formed, our version, wrong bytes: fails its hash check like a liar's
                // piece. (Not sent to the writer: the verified socket trusts the verifier, and
                // whoever can reach that private ipc folder can write DIR directly anyway.)
                bus::v1::Envelope forged;
                forged.set_version(bus::kSchemaVersion);
                forged.mutable_piece_batch()->add_pieces()->set_piece(0);
                const std::string bytes = forged.SerializeAsString();
                const std::string junk(256 << 10, 'z');
                push.send(zmq::buffer(bytes), zmq::send_flags::sndmore);
                push.send(zmq::buffer(junk), zmq::send_flags::none);
            }
        }
        zmq::socket_t dealer(context, zmq::socket_type::dealer);
        dealer.set(zmq::sockopt::linger, 2000);
        dealer.set(zmq::sockopt::routing_id, "intruder");
        dealer.connect(control);
        send_all(dealer);
        // A stranger's well-formed but unasked-for reports: ignored (it never said Hello).
        bus::v1::Envelope written;
        written.mutable_pieces_written()->add_pieces()->set_piece(0);
        bus::send(dealer, "intruder", written);
    });
    ASSERT_EQ(code, 0) << client_log();
    expect_payload_and_nothing_else();
    // Survived, not restarted: a stage that crashed on the junk would show here.
    EXPECT_EQ(client_log().find("exited (status"), std::string::npos) << client_log();
}

}  // namespace
}  // namespace pw::test
