// `piecework download --sequential` against a real libtorrent seeder on 127.0.0.1 (issue 17):
// the pieces reach the disk in order, and a player reading the growing file from its start
// always has almost everything that was downloaded in front of it.
//
// Read from the writer's own account (its debug line "torrent T: piece N written", logged
// once the piece's bytes are in the file), not from timing: the order of writes is what it
// is whatever the machine's speed, so the assertions hold on a loaded machine too.
#include <algorithm>
#include <atomic>
#include <cstdint>
#include <fstream>
#include <iostream>
#include <regex>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "tests/integration/harness.hpp"

namespace pw::test {
namespace {

constexpr std::uint32_t kPieceBytes = 256 << 10;
// 81 pieces: more than the 16 MiB readahead window (64 pieces here), so both the window and
// the in-order picks after it are exercised; the last piece is a short one.
constexpr std::uint64_t kPayloadBytes = (20ull << 20) + 100'000;
// How far out of order a piece may reach the disk, and how many downloaded pieces a reader
// at the front may lack in front of it. The picker leases in order; one connection's blocks
// are requested and served in order; what still reorders pieces is the verifier's and the
// writer's batching and a lease handed back and taken again: a few pieces, not the 81 of the
// torrent (a rarest-first download takes 4 MiB extents, 16 pieces, in random order).
constexpr std::uint32_t kSlack = 8;

// The pieces the writer logged as written, in order, from a log that is still growing: only
// whole lines are read, the rest waits for the next poll.
class WriteLog {
public:
    explicit WriteLog(std::string path) : path_(std::move(path)) {}

    std::vector<std::uint32_t> poll() {
        std::vector<std::uint32_t> pieces;
        std::ifstream in(path_, std::ios::binary);
        if (!in) return pieces;
        in.seekg(static_cast<std::streamoff>(offset_));
        std::string chunk((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
        const std::size_t end = chunk.rfind('\n');
        if (end == std::string::npos) return pieces;
        offset_ += end + 1;
        std::istringstream lines(chunk.substr(0, end + 1));
        static const std::regex written(R"( writer debug: torrent \d+: piece (\d+) written)");
        std::smatch match;
        for (std::string line; std::getline(lines, line);) {
            if (std::regex_search(line, match, written)) pieces.push_back(static_cast<std::uint32_t>(std::stoul(match[1])));
        }
        return pieces;
    }

private:
    std::string path_;
    std::uint64_t offset_ = 0;
};

std::string show(const std::vector<std::uint32_t>& order) {
    std::string text;
    for (const std::uint32_t piece : order) text += (text.empty() ? "" : " ") + std::to_string(piece);
    return text;
}

TEST(SequentialTest, PiecesReachTheDiskInOrderAndAReaderFromTheStartIsNeverStarved) {
    TempDir dir("pw-sequential-");
    const std::string payload = make_payload(dir / "data", "movie.bin", kPayloadBytes, 91);
    const std::string torrent = make_torrent(payload, kPieceBytes, {}, dir / "movie.torrent");
    const std::uint32_t pieces = piece_count(torrent);
    ASSERT_EQ(pieces, (kPayloadBytes + kPieceBytes - 1) / kPieceBytes);
    const std::uint32_t last = pieces - 1;  // an edge piece: fetched first, for a player's index
    LibtorrentSeeder seeder = LibtorrentSeeder::start(torrent, dir / "data");  // no rate cap: a fast peer
    ASSERT_TRUE(seeder.wait_ready(120s)) << seeder.log();

    const std::string out = dir / "out";
    const std::string log = dir / "piecework.log";
    auto client = Process::start({bin("piecework"), "download", torrent, "-o", out, "--sequential", "--quiet",
                                  "--peer", "127.0.0.1:" + std::to_string(seeder.port()), "--log-level", "debug"},
                                 log);

    // The player: reads the file from its start as far as the writer says it is written, and
    // checks those bytes are the payload's. It notes the most pieces ever downloaded but not
    // yet in front of it (the last piece aside).
    const std::string expected = read_text_file(payload);
    std::atomic<bool> finished{false};
    std::uint32_t read_to = 0;  // pieces read, from the start
    std::size_t worst_seen_backlog = 0;
    std::vector<std::string> bad_reads;
    std::thread player([&] {
        WriteLog writes(log);
        std::vector<bool> written(pieces, false);
        std::size_t count = 0;
        std::vector<char> buffer(kPieceBytes);
        std::ifstream file;
        while (true) {
            const bool last_poll = finished.load();
            for (const std::uint32_t piece : writes.poll()) {
                if (piece < pieces && !written[piece]) {
                    written[piece] = true;
                    ++count;
                }
            }
            if (!file.is_open()) file.open(out + "/movie.bin", std::ios::binary);
            while (file.is_open() && read_to < pieces && written[read_to]) {
                const std::uint64_t at = std::uint64_t{read_to} * kPieceBytes;
                const auto size = static_cast<std::streamsize>(std::min<std::uint64_t>(kPieceBytes, kPayloadBytes - at));
                file.clear();
                file.seekg(static_cast<std::streamoff>(at));
                file.read(buffer.data(), size);
                if (file.gcount() != size || expected.compare(at, static_cast<std::size_t>(size), buffer.data(),
                                                              static_cast<std::size_t>(size)) != 0) {
                    bad_reads.push_back("piece " + std::to_string(read_to) + " was logged as written, but " +
                                        std::to_string(file.gcount()) + " bytes read there are not the payload's");
                }
                ++read_to;
            }
            const std::size_t ahead = count - read_to - (read_to <= last && written[last] ? 1 : 0);
            worst_seen_backlog = std::max(worst_seen_backlog, ahead);
            if (last_poll) return;
            std::this_thread::sleep_for(20ms);
        }
    });
    const int code = client.wait_for_exit(180s);
    if (code == -1) client.kill();
    finished = true;
    player.join();
    ASSERT_EQ(code, 0) << client.log_tail(60) << "\n--- seeder ---\n" << seeder.log();
    std::string why;
    EXPECT_TRUE(same_tree(payload, out + "/movie.bin", &why)) << why;

    // The order of writes, every one of them.
    WriteLog writes(log);
    const std::vector<std::uint32_t> order = writes.poll();
    ASSERT_EQ(order.size(), pieces) << "the writer logged " << order.size() << " writes for " << pieces
                                    << " pieces: " << show(order);
    std::vector<bool> written(pieces, false);
    std::uint32_t prefix = 0;  // pieces 0..prefix-1 are all on disk
    std::size_t count = 0;
    std::size_t worst_backlog = 0;
    std::vector<std::string> early;
    for (const std::uint32_t piece : order) {
        ASSERT_LT(piece, pieces) << show(order);
        ASSERT_FALSE(written[piece]) << "piece " << piece << " written twice: " << show(order);
        // (a) In order: a piece reaches the disk at most kSlack pieces past the first one
        // still missing. The last piece is fetched first on purpose.
        if (piece != last && piece >= prefix + kSlack) {
            early.push_back("piece " + std::to_string(piece) + " while piece " + std::to_string(prefix) +
                            " was missing");
        }
        written[piece] = true;
        ++count;
        while (prefix < pieces && written[prefix]) ++prefix;
        // (b) Not starved: at every write, what was downloaded is readable from the start,
        // all but a few pieces.
        worst_backlog = std::max(worst_backlog, count - prefix - (prefix <= last && written[last] ? 1 : 0));
    }
    EXPECT_TRUE(early.empty()) << early.size() << " piece(s) written more than " << kSlack
                               << " pieces ahead of the first missing one (" << early.front()
                               << "); order of writes: " << show(order);
    EXPECT_LT(worst_backlog, kSlack) << "at one point " << worst_backlog
                                     << " downloaded pieces were not readable from the start; order of writes: "
                                     << show(order);
    EXPECT_EQ(order.front(), 0u) << "the first piece (an edge piece) is not the first written: " << show(order);

    // The player read the whole file as it grew, and every byte it read was the payload's.
    EXPECT_EQ(read_to, pieces);
    EXPECT_TRUE(bad_reads.empty()) << bad_reads.front();
    EXPECT_LE(worst_seen_backlog, worst_backlog);
    std::cout << "order of writes: " << show(order) << "\nmost pieces downloaded but not readable from the start: "
              << worst_backlog << " (of " << pieces << ")\n";
}

}  // namespace
}  // namespace pw::test
