// The writer's parts file: the bytes of files nobody wants, outside the download folder.
#include <filesystem>
#include <fstream>
#include <string>

#include <unistd.h>

#include <gtest/gtest.h>

#include "core/metainfo.hpp"
#include "tests/unit/test_torrents.hpp"
#include "writer/piece_store.hpp"
#include "writer/resume_state.hpp"

namespace pw::writer {
namespace {

namespace fs = std::filesystem;
using test::make_torrent;
using test::TestTorrent;

class TempDir {
public:
    TempDir() {
        std::string pattern = (fs::temp_directory_path() / "pw-parts-test-XXXXXX").string();
        if (::mkdtemp(pattern.data()) == nullptr) throw std::runtime_error("mkdtemp failed");
        path_ = pattern;
    }
    ~TempDir() {
        std::error_code ignored;
        fs::remove_all(path_, ignored);
    }
    const fs::path& path() const { return path_; }

private:
    fs::path path_;
};

std::string read_file(const fs::path& path) {
    std::ifstream in(path, std::ios::binary);
    return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

std::span<const std::uint8_t> as_bytes(const std::string& s) {
    return {reinterpret_cast<const std::uint8_t*>(s.data()), s.size()};
}

// a: pieces 0-2, b: 2-3, c: 3-4 (16 KiB pieces); piece 2 straddles a and b.
TestTorrent three_files() {
    return make_torrent("three", 16384, {{{"a"}, 40000}, {{"b"}, 10000}, {{"c"}, 30000}, {{"e"}, 0}});
}

TEST(PartsFile, UnwantedFilesAreNeverCreatedAndTheirBytesComeBack) {
    TempDir dir;
    const fs::path download = dir.path() / "down";
    const fs::path parts = dir.path() / "state.parts";
    const TestTorrent t = three_files();
    auto opened = PieceStore::open(t.torrent, download.string());
    ASSERT_TRUE(opened.ok());
    PieceStore store = std::move(opened).value();
    store.set_parts_path(parts.string());
    // b, c and the empty e not wanted.
    ASSERT_TRUE(store.set_unwanted({false, true, true, true}, [](PieceIndex) { return false; }).ok());
    ASSERT_TRUE(store.create_empty_files().ok());
    for (std::uint32_t piece = 0; piece < 3; ++piece) {
        ASSERT_TRUE(store.write_piece(PieceIndex{piece}, as_bytes(t.piece(piece))).ok());
    }
    ASSERT_TRUE(store.sync().ok());
    EXPECT_TRUE(fs::exists(download / "three" / "a"));
    EXPECT_FALSE(fs::exists(download / "three" / "b"));
    EXPECT_FALSE(fs::exists(download / "three" / "c"));
    EXPECT_FALSE(fs::exists(download / "three" / "e"));
    EXPECT_EQ(read_file(download / "three" / "a"), t.content.substr(0, 40000));
    EXPECT_TRUE(fs::exists(parts));

    // The straddling piece reads back whole, from the file and the parts file.
    std::string back(16384, '\0');
    const ReadResult read = store.read_piece(PieceIndex{2}, {reinterpret_cast<std::uint8_t*>(back.data()), back.size()});
    ASSERT_EQ(read.status, ReadStatus::ok) << read.why;
    EXPECT_EQ(back, t.piece(2));

    // The check reads it from the parts file too.
    PieceDigests hashes(t.torrent);
    PieceChecker checker(t.torrent, hashes, store.root_fd());
    EXPECT_FALSE(checker.check(PieceIndex{2}));  // b is not below the folder
    checker.use_parts(store.parts_fd(), store.parts_files());
    EXPECT_TRUE(checker.check(PieceIndex{2}));

    // b wanted: made, with its bytes of piece 2 from the parts file; the rest comes later.
    ASSERT_TRUE(store.set_unwanted({false, false, true, true}, [](PieceIndex p) { return p.get() <= 2; }).ok());
    ASSERT_TRUE(fs::exists(download / "three" / "b"));
    ASSERT_TRUE(store.write_piece(PieceIndex{3}, as_bytes(t.piece(3))).ok());
    ASSERT_TRUE(store.sync().ok());
    EXPECT_EQ(read_file(download / "three" / "b"), t.content.substr(40000, 10000));
    EXPECT_FALSE(fs::exists(download / "three" / "c"));

    // Everything wanted: c gets piece 3's bytes from the parts file, e is made.
    ASSERT_TRUE(store.set_unwanted({}, [](PieceIndex p) { return p.get() <= 3; }).ok());
    ASSERT_TRUE(store.write_piece(PieceIndex{4}, as_bytes(t.piece(4))).ok());
    ASSERT_TRUE(store.sync().ok());
    EXPECT_EQ(read_file(download / "three" / "c"), t.content.substr(50000, 30000));
    EXPECT_TRUE(fs::exists(download / "three" / "e"));

    // Deleting the data takes the parts file too.
    ASSERT_TRUE(store.delete_files().ok());
    EXPECT_FALSE(fs::exists(parts));
}

TEST(PartsFile, AFileOnDiskAlreadyKeepsItsBytesWhenUnwanted) {
    TempDir dir;
    const fs::path download = dir.path() / "down";
    const TestTorrent t = three_files();
    auto opened = PieceStore::open(t.torrent, download.string());
    ASSERT_TRUE(opened.ok());
    PieceStore store = std::move(opened).value();
    store.set_parts_path((dir.path() / "x.parts").string());
    for (std::uint32_t piece = 0; piece < 5; ++piece) {
        ASSERT_TRUE(store.write_piece(PieceIndex{piece}, as_bytes(t.piece(piece))).ok());
    }
    ASSERT_TRUE(store.sync().ok());
    ASSERT_TRUE(store.set_unwanted({false, true, false, false}, [](PieceIndex) { return true; }).ok());
    EXPECT_FALSE(store.in_parts(1));
    std::string back(16384, '\0');
    const ReadResult read = store.read_piece(PieceIndex{2}, {reinterpret_cast<std::uint8_t*>(back.data()), back.size()});
    ASSERT_EQ(read.status, ReadStatus::ok) << read.why;
    EXPECT_EQ(back, t.piece(2));
    EXPECT_FALSE(fs::exists(dir.path() / "x.parts"));
}

}  // namespace
}  // namespace pw::writer
