// MetadataFetch: how a worker spreads BEP 9 requests over peers and whom it believes.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "core/extension.hpp"
#include "core/sha1.hpp"
#include "peer_worker/metadata_fetch.hpp"

namespace pw::peer_worker {
namespace {

using namespace std::chrono_literals;
using Clock = MetadataFetch::Clock;

// Metadata of 40,000 bytes: three pieces, the last 7,232 bytes.
std::string make_metadata() {
    std::string bytes;
    for (int i = 0; bytes.size() < 40'000; ++i) bytes += std::to_string(i) + ",";
    bytes.resize(40'000);
    return bytes;
}

std::string piece_of(const std::string& metadata, std::uint32_t piece) {
    const std::size_t begin = std::size_t{piece} * ext::kMetadataPieceSize;
    return metadata.substr(begin, std::min<std::size_t>(ext::kMetadataPieceSize, metadata.size() - begin));
}

class MetadataFetchTest : public ::testing::Test {
protected:
    const std::string metadata = make_metadata();
    const std::uint32_t size = static_cast<std::uint32_t>(metadata.size());
    const Clock::time_point t0 = Clock::now();
    MetadataFetch fetch{sha1(metadata)};

    // Answers every piece `peer` is given with the true bytes (or `lie` for piece `bad`).
    void serve(const std::string& peer, std::optional<std::uint32_t> bad = std::nullopt) {
        for (int round = 0; round < 8 && !fetch.done(); ++round) {
            const auto pieces = fetch.pieces_for(peer, size, t0);
            if (pieces.empty()) return;
            for (const auto piece : pieces) {
                std::string bytes = piece_of(metadata, piece);
                if (bad && *bad == piece) bytes[0] = static_cast<char>(bytes[0] ^ 0x55);
                ASSERT_TRUE(fetch.on_data(peer, piece, size, bytes).ok());
            }
        }
    }
};

TEST_F(MetadataFetchTest, OnePeerGivesItAllAFewPiecesAtATime) {
    const auto first = fetch.pieces_for("a", size, t0);
    EXPECT_EQ(first, (std::vector<std::uint32_t>{0, 1}));  // two requests at once per peer
    EXPECT_TRUE(fetch.pieces_for("a", size, t0).empty());  // nothing more while they are out
    for (const auto piece : first) ASSERT_TRUE(fetch.on_data("a", piece, size, piece_of(metadata, piece)).ok());
    serve("a");
    ASSERT_TRUE(fetch.done());
    EXPECT_EQ(fetch.take_metadata(), metadata);
    EXPECT_EQ(fetch.sources(), std::vector<std::string>{"a"});
    EXPECT_TRUE(fetch.pieces_for("b", size, t0).empty());  // spent
}

TEST_F(MetadataFetchTest, PiecesAreSpreadOverPeersAndGivenBackWhenOneLeaves) {
    EXPECT_EQ(fetch.pieces_for("a", size, t0), (std::vector<std::uint32_t>{0, 1}));
    EXPECT_EQ(fetch.pieces_for("b", size, t0), (std::vector<std::uint32_t>{2}));
    fetch.peer_gone("a");
    EXPECT_EQ(fetch.pieces_for("b", size, t0), (std::vector<std::uint32_t>{0}));
    EXPECT_EQ(fetch.pieces_for("c", size, t0), (std::vector<std::uint32_t>{1}));
}

TEST_F(MetadataFetchTest, SlowAndRefusingPeersAreWorkedAround) {
    EXPECT_EQ(fetch.pieces_for("a", size, t0), (std::vector<std::uint32_t>{0, 1}));
    fetch.on_reject("a", 0);
    // "a" is not asked for piece 0 again; "b" is.
    EXPECT_EQ(fetch.pieces_for("a", size, t0), (std::vector<std::uint32_t>{2}));
    EXPECT_EQ(fetch.pieces_for("b", size, t0), (std::vector<std::uint32_t>{0}));
    // Requests that outlive the timeout go to whoever asks next.
    fetch.expire(t0 + 20s);
    EXPECT_EQ(fetch.pieces_for("c", size, t0 + 20s), (std::vector<std::uint32_t>{0, 1}));
}

TEST_F(MetadataFetchTest, OtherSizesAndWrongLengthsAreRefused) {
    EXPECT_TRUE(fetch.pieces_for("big", ext::kMaxMetadataSize + 1, t0).empty());
    EXPECT_EQ(fetch.pieces_for("a", size, t0).size(), 2u);
    // Another size than the one being fetched: not asked.
    EXPECT_TRUE(fetch.pieces_for("b", size + 1, t0).empty());
    // Data of the wrong length, or for another total: drop the peer.
    EXPECT_FALSE(fetch.on_data("a", 0, size, "short").ok());
    EXPECT_TRUE(fetch.refused("a"));
    EXPECT_TRUE(fetch.pieces_for("a", size, t0).empty());
    EXPECT_FALSE(fetch.on_data("c", 1, size + 5, piece_of(metadata, 1)).ok());
}

TEST_F(MetadataFetchTest, ALoneSenderOfBadMetadataIsTheLiar) {
    serve("liar", 1);
    EXPECT_FALSE(fetch.done());
    EXPECT_EQ(fetch.take_liars(), std::vector<std::string>{"liar"});
    EXPECT_TRUE(fetch.pieces_for("liar", size, t0).empty());
    serve("honest");
    ASSERT_TRUE(fetch.done());
    EXPECT_EQ(fetch.take_metadata(), metadata);
}

TEST_F(MetadataFetchTest, AmongSeveralSendersOnePeerAtATimeFindsTheLiar) {
    // "honest" sends pieces 0 and 1, "liar" a bad piece 2: the whole fails, and either could
    // be at fault.
    EXPECT_EQ(fetch.pieces_for("honest", size, t0), (std::vector<std::uint32_t>{0, 1}));
    EXPECT_EQ(fetch.pieces_for("liar", size, t0), (std::vector<std::uint32_t>{2}));
    ASSERT_TRUE(fetch.on_data("honest", 0, size, piece_of(metadata, 0)).ok());
    ASSERT_TRUE(fetch.on_data("honest", 1, size, piece_of(metadata, 1)).ok());
    std::string bad = piece_of(metadata, 2);
    bad[0] = static_cast<char>(bad[0] ^ 1);
    ASSERT_TRUE(fetch.on_data("liar", 2, size, bad).ok());
    EXPECT_FALSE(fetch.done());
    EXPECT_TRUE(fetch.take_liars().empty());
    // Next attempt: one peer alone. The liar goes first and proves itself.
    serve("liar", 2);
    EXPECT_EQ(fetch.take_liars(), std::vector<std::string>{"liar"});
    serve("honest");
    ASSERT_TRUE(fetch.done());
    EXPECT_EQ(fetch.take_metadata(), metadata);
}

TEST_F(MetadataFetchTest, TheVerifiedWholeNamesEarlierLiars) {
    // A failed mixed attempt, then the honest peer alone: the liar's earlier piece differs.
    EXPECT_EQ(fetch.pieces_for("honest", size, t0), (std::vector<std::uint32_t>{0, 1}));
    EXPECT_EQ(fetch.pieces_for("liar", size, t0), (std::vector<std::uint32_t>{2}));
    ASSERT_TRUE(fetch.on_data("honest", 0, size, piece_of(metadata, 0)).ok());
    ASSERT_TRUE(fetch.on_data("honest", 1, size, piece_of(metadata, 1)).ok());
    std::string bad = piece_of(metadata, 2);
    bad[5] = static_cast<char>(bad[5] ^ 1);
    ASSERT_TRUE(fetch.on_data("liar", 2, size, bad).ok());
    serve("honest");
    ASSERT_TRUE(fetch.done());
    EXPECT_EQ(fetch.take_liars(), std::vector<std::string>{"liar"});
}

}  // namespace
}  // namespace pw::peer_worker
