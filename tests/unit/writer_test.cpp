// The writer: the piece store on a temp dir (layout, full-length files, path safety, errors,
// deleting), the download roots, the resume record, and the whole stage serving several
// torrents (durable acknowledgements, checks in slices, verify, removal, refused folders,
// Shutdown and SIGTERM).
#include <algorithm>
#include <chrono>
#include <climits>
#include <csignal>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <future>
#include <iterator>
#include <map>
#include <optional>
#include <set>
#include <span>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>
#include <fcntl.h>
#include <sys/signalfd.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "stage_harness.hpp"
#include "test_torrents.hpp"
#include "core/bus/piece_arena.hpp"
#include "writer/batch_writer.hpp"
#include "writer/download_roots.hpp"
#include "writer/open_file_cache.hpp"
#include "writer/piece_store.hpp"
#include "writer/resume_state.hpp"
#include "writer/safe_open.hpp"
#include "writer/writer_stage.hpp"

namespace pw::writer {
namespace {

namespace fs = std::filesystem;
namespace v1 = ::piecework::v1;
using namespace std::chrono_literals;
using test::make_torrent;
using test::TestFile;
using test::TestTorrent;

class TempDir {
public:
    TempDir() {
        std::string pattern = (fs::temp_directory_path() / "pw-writer-test-XXXXXX").string();
        if (::mkdtemp(pattern.data()) == nullptr) throw std::runtime_error("mkdtemp failed");
        path_ = pattern;
    }
    ~TempDir() {
        std::error_code ignored;
        fs::permissions(path_, fs::perms::owner_all, fs::perm_options::add, ignored);
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

PieceStore open_store(const TestTorrent& t, const fs::path& dir, std::size_t max_open = kDefaultOpenFiles) {
    auto store = PieceStore::open(t.torrent, dir.string(), StoreOptions{.max_open_files = max_open});
    if (!store) throw std::runtime_error(store.error().describe());
    return std::move(store).value();
}

void write_all_pieces(PieceStore& store, const TestTorrent& t) {
    // Backwards, so files are created by their last pieces first.
    for (std::uint32_t i = t.torrent.piece_count(); i-- > 0;) {
        const Status status = store.write_piece(PieceIndex{i}, as_bytes(t.piece(i)));
        ASSERT_TRUE(status.ok()) << status.error().describe();
    }
    const Status synced = store.sync();
    ASSERT_TRUE(synced.ok()) << synced.error().describe();
}

// The content of file `index` of a multi-file test torrent.
std::string file_content(const TestTorrent& t, std::size_t index) {
    const FileEntry& file = t.torrent.files()[index];
    return t.content.substr(file.offset, file.length);
}

TEST(PieceStore, SingleFileWithShortLastPiece) {
    TempDir dir;
    const TestTorrent t = make_torrent("single.bin", 16384, {}, 2 * 16384 + 123);
    ASSERT_EQ(t.torrent.piece_size(PieceIndex{2}), 123u);
    PieceStore store = open_store(t, dir.path() / "downloads");  // made when missing
    write_all_pieces(store, t);
    EXPECT_EQ(read_file(dir.path() / "downloads" / "single.bin"), t.content);
}

TEST(PieceStore, MultiFilePieceSpanningThreeFilesIncludingOneSmallerThanABlock) {
    TempDir dir;
    const TestTorrent t = make_torrent(
        "multi", 32768,
        {{{"a.bin"}, 20000}, {{"sub", "tiny.txt"}, 100}, {{"sub", "deeper", "c.bin"}, 30000}});
    ASSERT_EQ(t.torrent.map_piece(PieceIndex{0}).size(), 3u);
    PieceStore store = open_store(t, dir.path());

    ASSERT_TRUE(store.write_piece(PieceIndex{0}, as_bytes(t.piece(0))).ok());
    ASSERT_TRUE(store.sync().ok());
    EXPECT_EQ(read_file(dir.path() / "multi" / "a.bin"), file_content(t, 0));
    EXPECT_EQ(read_file(dir.path() / "multi" / "sub" / "tiny.txt"), file_content(t, 1));
    // Only the head of c.bin is written yet; the rest reads as zeros.
    const std::string c = read_file(dir.path() / "multi" / "sub" / "deeper" / "c.bin");
    ASSERT_EQ(c.size(), 30000u);
    EXPECT_EQ(c.substr(0, 32768 - 20100), file_content(t, 2).substr(0, 32768 - 20100));
    EXPECT_EQ(c.substr(32768 - 20100), std::string(30000 - (32768 - 20100), '\0'));

    ASSERT_TRUE(store.write_piece(PieceIndex{1}, as_bytes(t.piece(1))).ok());
    ASSERT_TRUE(store.sync().ok());
    EXPECT_EQ(read_file(dir.path() / "multi" / "sub" / "deeper" / "c.bin"), file_content(t, 2));
}

TEST(PieceStore, FilesAreCreatedAtFullLengthOnFirstWrite) {
    TempDir dir;
    const std::uint64_t length = 8ull << 20;
    const TestTorrent t = make_torrent("big.bin", 16384, {}, length);
    PieceStore store = open_store(t, dir.path());
    const std::uint32_t last = t.torrent.piece_count() - 1;
    ASSERT_TRUE(store.write_piece(PieceIndex{last}, as_bytes(t.piece(last))).ok());
    ASSERT_TRUE(store.sync().ok());
    struct stat info {};
    ASSERT_EQ(::stat((dir.path() / "big.bin").c_str(), &info), 0);
    EXPECT_EQ(static_cast<std::uint64_t>(info.st_size), length);
    // Preallocated where the file system can, sparse where not: unwritten pieces read as zeros.
    const std::string content = read_file(dir.path() / "big.bin");
    const std::size_t last_offset = std::size_t{last} * 16384;
    EXPECT_EQ(content.substr(0, last_offset), std::string(last_offset, '\0'));
    EXPECT_EQ(content.substr(last_offset), t.piece(last));
}

TEST(PieceStore, ZeroLengthFilesAreCreatedOnceAtStart) {
    TempDir dir;
    const TestTorrent t = make_torrent(
        "withempty", 1024, {{{"empty.txt"}, 0}, {{"data.bin"}, 1500}, {{"nested", "none"}, 0}});
    PieceStore store = open_store(t, dir.path());
    ASSERT_TRUE(store.create_empty_files().ok());
    EXPECT_TRUE(fs::is_regular_file(dir.path() / "withempty" / "empty.txt"));
    EXPECT_EQ(fs::file_size(dir.path() / "withempty" / "empty.txt"), 0u);
    EXPECT_TRUE(fs::is_regular_file(dir.path() / "withempty" / "nested" / "none"));
    EXPECT_FALSE(fs::exists(dir.path() / "withempty" / "data.bin"));  // made by its first piece
    EXPECT_TRUE(store.create_empty_files().ok());  // existing ones are fine
    write_all_pieces(store, t);
    EXPECT_EQ(read_file(dir.path() / "withempty" / "data.bin"), file_content(t, 1));
}

TEST(PieceStore, PadFilesAreNeverWritten) {
    TempDir dir;
    const TestTorrent t = make_torrent(
        "padded", 512, {{{"a.bin"}, 100}, {{".pad", "412"}, 412, true}, {{"b.bin"}, 600}});
    PieceStore store = open_store(t, dir.path());
    ASSERT_TRUE(store.create_empty_files().ok());
    write_all_pieces(store, t);
    EXPECT_EQ(read_file(dir.path() / "padded" / "a.bin"), file_content(t, 0));
    EXPECT_EQ(read_file(dir.path() / "padded" / "b.bin"), file_content(t, 2));
    EXPECT_FALSE(fs::exists(dir.path() / "padded" / ".pad"));
}

TEST(PieceStore, KeepsAtMostItsBoundOfOpenFiles) {
    TempDir dir;
    std::vector<TestFile> files;
    for (int i = 0; i < 10; ++i) files.push_back({{"f" + std::to_string(i)}, 700});
    const TestTorrent t = make_torrent("many", 1024, files);
    PieceStore store = open_store(t, dir.path(), 3);
    write_all_pieces(store, t);
    EXPECT_LE(store.open_file_count(), 3u);
    for (std::size_t i = 0; i < files.size(); ++i) {
        EXPECT_EQ(read_file(dir.path() / "many" / ("f" + std::to_string(i))), file_content(t, i));
    }
}

TEST(PieceStore, RejectsWrongSizeAndUnknownPieces) {
    TempDir dir;
    const TestTorrent t = make_torrent("single.bin", 1024, {}, 3000);
    PieceStore store = open_store(t, dir.path());
    EXPECT_FALSE(store.write_piece(PieceIndex{0}, as_bytes(t.piece(0) + "x")).ok());
    EXPECT_FALSE(store.write_piece(PieceIndex{2}, as_bytes(t.piece(0))).ok());
    EXPECT_FALSE(store.write_piece(PieceIndex{3}, as_bytes(t.piece(2))).ok());
    EXPECT_FALSE(fs::exists(dir.path() / "single.bin"));
}

TEST(PieceStore, SymlinkedFolderInTheDownloadDirIsRefused) {
    TempDir dir;
    TempDir outside;
    const TestTorrent t = make_torrent("multi", 1024, {{{"a.bin"}, 1000}, {{"b.bin"}, 1000}});
    fs::create_directory_symlink(outside.path(), dir.path() / "multi");
    PieceStore store = open_store(t, dir.path());
    const Status status = store.write_piece(PieceIndex{0}, as_bytes(t.piece(0)));
    ASSERT_FALSE(status.ok());
    EXPECT_NE(status.error().message.find("symbolic link"), std::string::npos)
        << status.error().message;
    EXPECT_TRUE(fs::is_empty(outside.path()));
}

TEST(PieceStore, SymlinkedFileInTheDownloadDirIsRefused) {
    TempDir dir;
    TempDir outside;
    const TestTorrent t = make_torrent("single.bin", 1024, {}, 3000);
    // Dangling: following it would create a file outside.
    fs::create_symlink(outside.path() / "victim", dir.path() / "single.bin");
    PieceStore store = open_store(t, dir.path());
    const Status status = store.write_piece(PieceIndex{0}, as_bytes(t.piece(0)));
    ASSERT_FALSE(status.ok());
    EXPECT_NE(status.error().message.find("symbolic link"), std::string::npos)
        << status.error().message;
    EXPECT_TRUE(fs::is_empty(outside.path()));
}

TEST(PieceStore, HardLinkedFileInTheDownloadDirIsRefused) {
    TempDir dir;
    TempDir outside;
    const TestTorrent t = make_torrent("single.bin", 1024, {}, 3000);
    {
        std::ofstream victim(outside.path() / "victim");
        victim << "precious";
    }
    fs::create_hard_link(outside.path() / "victim", dir.path() / "single.bin");
    PieceStore store = open_store(t, dir.path());
    const Status status = store.write_piece(PieceIndex{0}, as_bytes(t.piece(0)));
    ASSERT_FALSE(status.ok());
    EXPECT_NE(status.error().message.find("hard links"), std::string::npos)
        << status.error().message;
    std::ifstream victim(outside.path() / "victim");
    const std::string content((std::istreambuf_iterator<char>(victim)), {});
    EXPECT_EQ(content, "precious");
}

TEST(PieceStore, SymlinkDeeperDownIsRefused) {
    TempDir dir;
    TempDir outside;
    const TestTorrent t = make_torrent("multi", 1024, {{{"sub", "x", "a.bin"}, 1000}});
    fs::create_directories(dir.path() / "multi" / "sub");
    fs::create_directory_symlink(outside.path(), dir.path() / "multi" / "sub" / "x");
    PieceStore store = open_store(t, dir.path());
    EXPECT_FALSE(store.write_piece(PieceIndex{0}, as_bytes(t.piece(0))).ok());
    EXPECT_TRUE(fs::is_empty(outside.path()));
}

TEST(OpenBelow, RefusesPathsThatCouldLeaveTheRoot) {
    TempDir dir;
    auto root = open_download_dir(dir.path().string());
    ASSERT_TRUE(root.ok());
    for (const char* path : {"../escape", "a/../../escape", "/etc/passwd", "a//b", "./a", "", "a/"}) {
        EXPECT_FALSE(open_below(root->get(), path).ok()) << path;
    }
    EXPECT_TRUE(fs::is_empty(dir.path()));
    EXPECT_TRUE(open_below(root->get(), "ok/fine.txt").ok());
}

TEST(OpenBelow, RefusesWhatIsNotARegularFile) {
    TempDir dir;
    auto root = open_download_dir(dir.path().string());
    ASSERT_TRUE(root.ok());
    ASSERT_EQ(::mkfifo((dir.path() / "fifo").c_str(), 0600), 0);
    EXPECT_FALSE(open_below(root->get(), "fifo").ok());
    fs::create_directory(dir.path() / "adir");
    EXPECT_FALSE(open_below(root->get(), "adir").ok());
}

TEST(PieceStore, WriteErrorsAreReportedWithThePath) {
    TempDir dir;
    const TestTorrent t = make_torrent("single.bin", 1024, {}, 3000);
    // A folder where the file should be: the write fails cleanly, naming the file.
    fs::create_directory(dir.path() / "single.bin");
    PieceStore store = open_store(t, dir.path());
    const Status status = store.write_piece(PieceIndex{0}, as_bytes(t.piece(0)));
    ASSERT_FALSE(status.ok());
    EXPECT_NE(status.error().message.find("single.bin"), std::string::npos) << status.error().message;
}

TEST(PieceStore, FileSizeLimitIsReportedNotFatal) {
    // The kernel refuses writes past RLIMIT_FSIZE with EFBIG, as it refuses a full disk with
    // ENOSPC: the same error path, reachable without root or a tiny filesystem.
    TempDir dir;
    const TestTorrent t = make_torrent("big.bin", 16384, {}, 1 << 20);
    PieceStore store = open_store(t, dir.path());
    rlimit saved {};
    ASSERT_EQ(::getrlimit(RLIMIT_FSIZE, &saved), 0);
    const auto old_handler = std::signal(SIGXFSZ, SIG_IGN);
    rlimit tiny = saved;
    tiny.rlim_cur = 4096;
    ASSERT_EQ(::setrlimit(RLIMIT_FSIZE, &tiny), 0);
    const Status status = store.write_piece(PieceIndex{10}, as_bytes(t.piece(10)));
    ::setrlimit(RLIMIT_FSIZE, &saved);
    std::signal(SIGXFSZ, old_handler);
    ASSERT_FALSE(status.ok());
    EXPECT_NE(status.error().message.find("File too large"), std::string::npos) << status.error().message;
    EXPECT_NE(status.error().message.find("big.bin"), std::string::npos);
    // The store still works once the condition is gone.
    EXPECT_TRUE(store.write_piece(PieceIndex{10}, as_bytes(t.piece(10))).ok());
}

TEST(PieceStore, ReadOnlyDownloadDirIsReportedNotFatal) {
    if (::geteuid() == 0) GTEST_SKIP() << "root ignores directory permissions";
    TempDir dir;
    const TestTorrent t = make_torrent("single.bin", 1024, {}, 3000);
    PieceStore store = open_store(t, dir.path());
    fs::permissions(dir.path(), fs::perms::owner_read | fs::perms::owner_exec);
    const Status status = store.write_piece(PieceIndex{0}, as_bytes(t.piece(0)));
    ASSERT_FALSE(status.ok());
    EXPECT_NE(status.error().message.find("Permission denied"), std::string::npos);
}

TEST(OpenFileCache, EvictsTheLeastRecentlyUsedOfAnyOwner) {
    OpenFileCache cache(2);
    const std::uint64_t one = cache.new_owner();
    const std::uint64_t two = cache.new_owner();
    cache.add(one, 1, UniqueFd(::dup(0)));
    cache.add(two, 1, UniqueFd(::dup(0)));
    EXPECT_EQ(cache.find(one, 2), nullptr);
    ASSERT_NE(cache.find(one, 1), nullptr);  // the other owner's file is now the oldest
    const auto evicted = cache.evict_if_full();
    ASSERT_TRUE(evicted.has_value());
    EXPECT_EQ(evicted->owner, two);
    EXPECT_FALSE(cache.evict_if_full().has_value());
    EXPECT_EQ(cache.find(two, 1), nullptr);
    cache.defer_sync_error(two, "lost");
    EXPECT_EQ(cache.take_sync_errors(one), "");
    EXPECT_EQ(cache.take_sync_errors(two), "lost");
    EXPECT_EQ(cache.take_sync_errors(two), "");
    cache.close_all(one);
    EXPECT_EQ(cache.size(), 0u);
}

std::vector<PieceBytes> pieces_of(const std::vector<std::string>& bytes,
                                  const std::vector<std::uint32_t>& order) {
    std::vector<PieceBytes> pieces;
    for (const std::uint32_t i : order) pieces.push_back(PieceBytes{PieceIndex{i}, as_bytes(bytes[i])});
    return pieces;
}

// Coalesced writes must put every byte where write_piece would: across file boundaries, around
// pad files and tiny files, whatever order the pieces come in.
TEST(PieceStore, WritePiecesAcrossFilesAndPadFilesInAnyOrder) {
    TempDir dir;
    const TestTorrent t = make_torrent(
        "batch", 512,
        {{{"a.bin"}, 700}, {{".pad", "324"}, 324, true}, {{"tiny"}, 3}, {{"b.bin"}, 2000},
         {{".pad", "b"}, 1, true}, {{"c.bin"}, 1537}});
    std::vector<std::string> bytes;
    for (std::uint32_t i = 0; i < t.torrent.piece_count(); ++i) bytes.push_back(t.piece(i));
    std::vector<std::uint32_t> order;
    for (std::uint32_t i = 0; i < t.torrent.piece_count(); ++i) order.push_back((i * 5) % t.torrent.piece_count());
    ASSERT_EQ(std::set<std::uint32_t>(order.begin(), order.end()).size(), order.size());
    PieceStore store = open_store(t, dir.path());
    const std::vector<Status> results = store.write_pieces(pieces_of(bytes, order));
    ASSERT_EQ(results.size(), order.size());
    for (const Status& result : results) EXPECT_TRUE(result.ok()) << result.error().describe();
    ASSERT_TRUE(store.sync().ok());
    for (std::size_t file : {0u, 2u, 3u, 5u}) {
        const std::string name = t.torrent.files()[file].path;
        EXPECT_EQ(read_file(dir.path() / "batch" / name), file_content(t, file)) << name;
    }
    EXPECT_FALSE(fs::exists(dir.path() / "batch" / ".pad"));
}

// More contiguous pieces than one pwritev may carry.
TEST(PieceStore, WritePiecesBeyondIovMax) {
    TempDir dir;
    const TestTorrent t = make_torrent("long.bin", 512, {}, 512ull * (IOV_MAX * 2 + 3) + 17);
    std::vector<std::string> bytes;
    std::vector<std::uint32_t> order;
    for (std::uint32_t i = 0; i < t.torrent.piece_count(); ++i) {
        bytes.push_back(t.piece(i));
        order.push_back(i);
    }
    PieceStore store = open_store(t, dir.path());
    for (const Status& result : store.write_pieces(pieces_of(bytes, order))) {
        EXPECT_TRUE(result.ok()) << result.error().describe();
    }
    ASSERT_TRUE(store.sync().ok());
    EXPECT_EQ(read_file(dir.path() / "long.bin"), t.content);
}

// One bad piece fails alone; its neighbours are still written.
TEST(PieceStore, WritePiecesFailsOnlyTheBadOnes) {
    TempDir dir;
    const TestTorrent t = make_torrent("m", 1024, {{{"a.bin"}, 2048}, {{"b.bin"}, 2048}});
    fs::create_directories(dir.path() / "m");
    TempDir outside;
    fs::create_symlink(outside.path() / "victim", dir.path() / "m" / "b.bin");
    std::vector<std::string> bytes{t.piece(0), t.piece(1) + "x", t.piece(2), t.piece(3)};
    PieceStore store = open_store(t, dir.path());
    const std::vector<Status> results = store.write_pieces(pieces_of(bytes, {0, 1, 2, 3}));
    ASSERT_EQ(results.size(), 4u);
    EXPECT_TRUE(results[0].ok());
    EXPECT_FALSE(results[1].ok());  // wrong size
    EXPECT_FALSE(results[2].ok());  // b.bin is a symbolic link
    EXPECT_FALSE(results[3].ok());
    ASSERT_TRUE(store.sync().ok());
    EXPECT_EQ(read_file(dir.path() / "m" / "a.bin").substr(0, 1024), t.piece(0));
    EXPECT_TRUE(fs::is_empty(outside.path()));
}

// Every piece of `t` in page-aligned memory, as a worker's arena slots hold them.
class AlignedPieces {
public:
    explicit AlignedPieces(const TestTorrent& t) : torrent_(&t) {
        stride_ = (t.torrent.piece_length() + kDirectIoAlignment - 1) / kDirectIoAlignment * kDirectIoAlignment;
        const std::size_t size = stride_ * t.torrent.piece_count();
        memory_ = static_cast<std::uint8_t*>(std::aligned_alloc(kDirectIoAlignment, size));
        for (std::uint32_t i = 0; i < t.torrent.piece_count(); ++i) {
            const std::string bytes = t.piece(i);
            std::copy(bytes.begin(), bytes.end(), memory_ + stride_ * i);
        }
    }
    ~AlignedPieces() { std::free(memory_); }
    AlignedPieces(const AlignedPieces&) = delete;
    AlignedPieces& operator=(const AlignedPieces&) = delete;

    std::vector<PieceBytes> in_order(const std::vector<std::uint32_t>& order) const {
        std::vector<PieceBytes> pieces;
        for (std::uint32_t i : order) {
            pieces.push_back(PieceBytes{PieceIndex{i}, {memory_ + stride_ * i, torrent_->torrent.piece_size(PieceIndex{i})}});
        }
        return pieces;
    }

private:
    const TestTorrent* torrent_;
    std::size_t stride_ = 0;
    std::uint8_t* memory_ = nullptr;
};

// How many of the file's pages the page cache holds.
std::size_t cached_pages(const fs::path& path) {
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) throw std::runtime_error("cannot open " + path.string());
    const auto size = static_cast<std::size_t>(fs::file_size(path));
    void* map = ::mmap(nullptr, size, PROT_READ, MAP_SHARED, fd, 0);
    ::close(fd);
    if (map == MAP_FAILED) throw std::runtime_error("cannot map " + path.string());
    const std::size_t page = static_cast<std::size_t>(::sysconf(_SC_PAGESIZE));
    std::vector<unsigned char> resident((size + page - 1) / page);
    const int error = ::mincore(map, size, resident.data());
    ::munmap(map, size);
    if (error != 0) throw std::runtime_error("mincore failed on " + path.string());
    return static_cast<std::size_t>(std::count_if(resident.begin(), resident.end(),
                                                  [](unsigned char bits) { return bits & 1; }));
}

// Where two contents first differ ("same" when they do not): a failure names an offset instead
// of printing megabytes.
std::string first_difference(const std::string& got, const std::string& want) {
    const auto [at, _] = std::mismatch(got.begin(), got.end(), want.begin(), want.end());
    if (at == got.end() && got.size() == want.size()) return "same";
    return "differs at byte " + std::to_string(at - got.begin()) + " of " + std::to_string(got.size()) +
           " (expected " + std::to_string(want.size()) + ")";
}

bool supports_direct_io(const fs::path& dir) {
    const fs::path probe = dir / "direct-io-probe";
    const int fd = ::open(probe.c_str(), O_RDWR | O_CREAT | O_DIRECT | O_CLOEXEC, 0600);
    if (fd >= 0) ::close(fd);
    fs::remove(probe);
    return fd >= 0;
}

// Every piece once, neighbours seldom together: odd ones up, then even ones down.
std::vector<std::uint32_t> scattered(std::uint32_t count) {
    std::vector<std::uint32_t> order;
    for (std::uint32_t i = 1; i < count; i += 2) order.push_back(i);
    for (std::uint32_t i = (count - 1) / 2 * 2 + 2; i >= 2;) order.push_back(i -= 2);
    return order;
}

// Aligned pieces reach the disk without a copy in the page cache; the short last piece goes
// through it; the file's bytes are the same either way.
TEST(PieceStore, AlignedPiecesBypassThePageCache) {
    TempDir dir;
    if (!supports_direct_io(dir.path())) GTEST_SKIP() << "no O_DIRECT on " << dir.path();
    const TestTorrent t = make_torrent("direct.bin", 16384, {}, 20 * 16384 + 100);
    const AlignedPieces pieces(t);
    PieceStore store = open_store(t, dir.path());
    for (const Status& result : store.write_pieces(pieces.in_order(scattered(t.torrent.piece_count())))) {
        EXPECT_TRUE(result.ok()) << result.error().describe();
    }
    ASSERT_TRUE(store.sync().ok());
    EXPECT_TRUE(store.direct_io());
    // At most the last piece's page.
    EXPECT_LE(cached_pages(dir.path() / "direct.bin"), 1u);
    EXPECT_EQ(first_difference(read_file(dir.path() / "direct.bin"), t.content), "same");
}

TEST(PieceStore, WithoutDirectIoEveryPieceGoesThroughThePageCache) {
    TempDir dir;
    const TestTorrent t = make_torrent("cached.bin", 16384, {}, 4 * 16384);
    const AlignedPieces pieces(t);
    auto store = PieceStore::open(t.torrent, dir.path().string(), StoreOptions{.direct_io = false});
    ASSERT_TRUE(store.ok());
    for (const Status& result : store->write_pieces(pieces.in_order({0, 1, 2, 3}))) {
        EXPECT_TRUE(result.ok()) << result.error().describe();
    }
    ASSERT_TRUE(store->sync().ok());
    EXPECT_EQ(cached_pages(dir.path() / "cached.bin"), 4 * 16384 / static_cast<std::size_t>(::sysconf(_SC_PAGESIZE)));
    EXPECT_EQ(first_difference(read_file(dir.path() / "cached.bin"), t.content), "same");
}

// Files that start mid-block, pad files and a tiny file: each run goes the way its alignment
// allows, a file switching between the two, and every byte lands where it belongs.
TEST(PieceStore, MixedAlignmentMultiFileTorrentIsWrittenExactly) {
    TempDir dir;
    const TestTorrent t = make_torrent(
        "mixed", 16384,
        {{{"a.bin"}, 3 * 16384 + 1000}, {{"b.bin"}, 5 * 16384 + 77}, {{".pad", "x"}, 16384 - 1077, true},
         {{"c.bin"}, 4 * 16384 + 5}, {{"tiny"}, 3}});
    const AlignedPieces pieces(t);
    PieceStore store = open_store(t, dir.path());
    for (const Status& result : store.write_pieces(pieces.in_order(scattered(t.torrent.piece_count())))) {
        EXPECT_TRUE(result.ok()) << result.error().describe();
    }
    ASSERT_TRUE(store.sync().ok());
    for (std::size_t file : {0u, 1u, 3u, 4u}) {
        const std::string name = t.torrent.files()[file].path;
        EXPECT_EQ(first_difference(read_file(dir.path() / "mixed" / name), file_content(t, file)), "same")
            << name;
    }
}

// write_batch on its own: the one moment the stage cannot show, a slot reused between the
// first look at its tag and the check after the write. The `already_written` question about
// the next piece comes after the first piece's view, so the test reuses the slot there.
TEST(BatchWriter, ASlotReusedDuringTheWriteDropsThePiece) {
    TempDir dir;
    const TestTorrent t = make_torrent("race.bin", 1024, {}, 2048);
    bus::PieceArena arena(1024, 2);
    const auto& info = arena.info();
    v1::PieceBatch batch;
    batch.mutable_arena()->set_path(info.path);
    batch.mutable_arena()->set_id(info.id);
    batch.mutable_arena()->set_slot_size(info.slot_size);
    batch.mutable_arena()->set_slot_count(info.slot_count);
    std::uint32_t first_slot = 0;
    for (std::uint32_t piece : {0u, 1u}) {
        const std::uint32_t slot = arena.acquire(50 + piece).value();
        if (piece == 0) first_slot = slot;
        const std::string bytes = t.piece(piece);
        std::copy(bytes.begin(), bytes.end(), arena.bytes(slot).begin());
        auto* data = batch.add_pieces();
        data->set_piece(piece);
        data->set_lease_id(50 + piece);
        data->set_slot(slot);
        data->set_size(1024);
    }
    PieceStore store = open_store(t, dir.path());
    bus::ArenaReader reader;
    const BatchOutcome outcome = write_batch(store, reader, batch, {}, [&](PieceIndex piece) {
        if (piece.get() == 1) {
            arena.release(first_slot);
            (void)arena.acquire(66);
        }
        return false;
    });
    EXPECT_EQ(outcome.written, (std::vector<PieceRef>{{PieceIndex{1}, 51}}));
    ASSERT_EQ(outcome.dropped.size(), 1u);
    EXPECT_EQ(outcome.dropped[0].piece, (PieceRef{PieceIndex{0}, 50}));
    EXPECT_TRUE(outcome.failed.empty());
    EXPECT_EQ(outcome.freed_leases, (std::vector<std::uint64_t>{50, 51}));
}

TEST(BatchWriter, AnArenaThatCannotBeMappedDropsItsPieces) {
    TempDir dir;
    const TestTorrent t = make_torrent("gone.bin", 1024, {}, 1024);
    v1::PieceBatch batch;
    batch.set_worker("peer_worker-9");
    batch.mutable_arena()->set_path((dir.path() / "no-such-arena").string());
    batch.mutable_arena()->set_id(1);
    batch.mutable_arena()->set_slot_size(1024);
    batch.mutable_arena()->set_slot_count(1);
    auto* data = batch.add_pieces();
    data->set_lease_id(8);
    data->set_size(1024);
    PieceStore store = open_store(t, dir.path());
    bus::ArenaReader reader;
    const BatchOutcome outcome = write_batch(store, reader, batch, {}, [](PieceIndex) { return false; });
    ASSERT_EQ(outcome.dropped.size(), 1u);
    EXPECT_FALSE(outcome.dropped[0].why.empty());
    EXPECT_TRUE(outcome.written.empty());
    EXPECT_EQ(outcome.freed_leases, (std::vector<std::uint64_t>{8}));
    EXPECT_FALSE(fs::exists(dir.path() / "gone.bin"));
}

// Built field by field, so a new option (with its default) never breaks these tests.
WriterOptions stage_options(const std::string& control, const fs::path& dir, const std::string& name,
                            std::chrono::milliseconds sync_interval, const fs::path& state_dir) {
    WriterOptions options;
    options.control = control;
    options.verified = test::unique_inproc("verified");
    options.dir = dir.string();
    options.name = name;
    options.sync_interval = sync_interval;
    options.timing = bus::Timing{100ms, 5, 3000ms};
    options.state_dir = state_dir.string();
    return options;
}

struct PieceLease {
    std::uint32_t piece = 0;
    std::uint64_t lease_id = 0;
};

// A batch as the verifier sends it across machines: raw frame i holds piece i's bytes.
void send_frame_batch(zmq::socket_t& verifier, const TestTorrent& t, const std::vector<PieceLease>& pieces,
                      TorrentId torrent = test::kTestTorrent) {
    v1::Envelope envelope;
    auto* batch = envelope.mutable_piece_batch();
    batch->set_worker("peer_worker-1");
    batch->set_torrent(torrent.get());
    std::vector<zmq::message_t> frames;
    for (const PieceLease& piece : pieces) {
        auto* data = batch->add_pieces();
        data->set_piece(piece.piece);
        data->set_lease_id(piece.lease_id);
        const std::string bytes = t.piece(piece.piece);
        frames.emplace_back(bytes.data(), bytes.size());
    }
    ASSERT_TRUE(bus::send(verifier, "verifier-1", envelope, frames));
}

// Plays the worker: each piece assembled into a slot of `arena` tagged with its lease, and a
// batch that names the slots.
v1::PieceBatch arena_batch(bus::PieceArena& arena, const TestTorrent& t, const std::vector<PieceLease>& pieces,
                           TorrentId torrent = test::kTestTorrent) {
    v1::PieceBatch batch;
    batch.set_worker("peer_worker-1");
    batch.set_torrent(torrent.get());
    batch.mutable_arena()->set_path(arena.info().path);
    batch.mutable_arena()->set_id(arena.info().id);
    batch.mutable_arena()->set_slot_size(arena.info().slot_size);
    batch.mutable_arena()->set_slot_count(arena.info().slot_count);
    for (const PieceLease& piece : pieces) {
        const std::uint32_t slot = arena.acquire(piece.lease_id).value();
        const std::string bytes = t.piece(piece.piece);
        std::copy(bytes.begin(), bytes.end(), arena.bytes(slot).begin());
        auto* data = batch.add_pieces();
        data->set_piece(piece.piece);
        data->set_lease_id(piece.lease_id);
        data->set_slot(slot);
        data->set_size(static_cast<std::uint32_t>(bytes.size()));
    }
    return batch;
}

void send_batch(zmq::socket_t& verifier, const v1::PieceBatch& batch) {
    v1::Envelope envelope;
    *envelope.mutable_piece_batch() = batch;
    if (batch.torrent() == 0) envelope.mutable_piece_batch()->set_torrent(test::kTestTorrent.get());
    ASSERT_TRUE(bus::send(verifier, "verifier-1", envelope));
}

std::set<std::uint64_t> leases_of(const google::protobuf::RepeatedPtrField<v1::PieceRef>& pieces) {
    std::set<std::uint64_t> leases;
    for (const auto& piece : pieces) leases.insert(piece.lease_id());
    return leases;
}

// The writer on a thread, its orchestrator played by the test, and a verifier's PUSH to it.
// Ready once the writer has answered the torrent's TorrentInfo (pieces sent before that are
// dropped: its files are being checked).
class StageUnderTest {
public:
    StageUnderTest(const TestTorrent& t, const fs::path& dir, std::chrono::milliseconds sync_interval)
        : orchestrator(context, t.bytes),
          options(stage_options(orchestrator.endpoint(), dir / "dl", "writer-test", sync_interval,
                                dir / "state")),
          stage(orchestrator, [this] { return run_writer(context, options); }),
          verifier(context, zmq::socket_type::push) {
        bus::configure(verifier);
        verifier.connect(options.verified);
        resume_state = orchestrator.expect(v1::Envelope::kResumeState);
        if (!resume_state) ADD_FAILURE() << "no ResumeState from the writer";
    }

    zmq::context_t context;
    test::FakeOrchestrator orchestrator;
    const WriterOptions options;
    test::StageThread stage;
    zmq::socket_t verifier;
    std::optional<bus::Incoming> resume_state;
};

// The done pieces of the record the stage saved, read back as the next start would.
std::vector<std::uint32_t> saved_done_list(const TestTorrent& t, const WriterOptions& options);

// The whole stage: one PiecesWritten acknowledges a batch, only after the bytes are in the
// file; bad pieces fail alone; Shutdown flushes and exits 0.
TEST(WriterStage, WritesAFrameBatchAndAcknowledgesItInOneMessage) {
    TempDir dir;
    const TestTorrent t = make_torrent("stage", 1024, {{{"a.bin"}, 1500}, {{"b.bin"}, 0}, {{"c.bin"}, 900}});
    StageUnderTest under(t, dir.path(), 50ms);
    ASSERT_TRUE(under.orchestrator.expect(v1::Envelope::kHeartbeat).has_value());
    EXPECT_TRUE(fs::is_regular_file(dir.path() / "dl" / "stage" / "b.bin"));

    // A piece of the wrong size: WriteFailed, and the stage keeps going.
    v1::Envelope wrong;
    wrong.mutable_piece_batch()->set_torrent(test::kTestTorrent.get());
    auto* data = wrong.mutable_piece_batch()->add_pieces();
    data->set_piece(0);
    data->set_lease_id(999);
    std::vector<zmq::message_t> short_frame;
    short_frame.emplace_back(std::string("short"));
    ASSERT_TRUE(bus::send(under.verifier, "verifier-1", wrong, short_frame));
    const auto failed = under.orchestrator.expect(v1::Envelope::kWriteFailed);
    ASSERT_TRUE(failed.has_value());
    EXPECT_EQ(failed->envelope.write_failed().lease_id(), 999u);
    EXPECT_EQ(failed->envelope.write_failed().torrent(), test::kTestTorrent.get());

    send_frame_batch(under.verifier, t, {{0, 100}, {1, 101}, {2, 102}});
    const auto written = under.orchestrator.expect(v1::Envelope::kPiecesWritten);
    ASSERT_TRUE(written.has_value());
    EXPECT_EQ(leases_of(written->envelope.pieces_written().pieces()), (std::set<std::uint64_t>{100, 101, 102}));
    for (const auto& ref : written->envelope.pieces_written().pieces()) EXPECT_EQ(ref.torrent(), test::kTestTorrent.get());
    EXPECT_EQ(read_file(dir.path() / "dl" / "stage" / "a.bin"), file_content(t, 0));
    EXPECT_EQ(read_file(dir.path() / "dl" / "stage" / "c.bin"), file_content(t, 2));
    EXPECT_EQ(under.stage.stop(), 0);
}

TEST(WriterStage, ABatchWithTheWrongNumberOfFramesFailsEveryPiece) {
    TempDir dir;
    const TestTorrent t = make_torrent("frames.bin", 1024, {}, 3000);
    StageUnderTest under(t, dir.path(), 50ms);
    v1::Envelope envelope;
    envelope.mutable_piece_batch()->set_torrent(test::kTestTorrent.get());
    for (std::uint32_t piece : {0u, 1u}) {
        auto* data = envelope.mutable_piece_batch()->add_pieces();
        data->set_piece(piece);
        data->set_lease_id(10 + piece);
    }
    std::vector<zmq::message_t> frames;
    frames.emplace_back(t.piece(0).data(), t.piece(0).size());
    ASSERT_TRUE(bus::send(under.verifier, "verifier-1", envelope, frames));
    std::set<std::uint64_t> failed;
    for (int i = 0; i < 2; ++i) {
        const auto report = under.orchestrator.expect(v1::Envelope::kWriteFailed);
        ASSERT_TRUE(report.has_value());
        EXPECT_NE(report->envelope.write_failed().error().find("2 pieces carries 1 data frames"),
                  std::string::npos) << report->envelope.write_failed().error();
        failed.insert(report->envelope.write_failed().lease_id());
    }
    EXPECT_EQ(failed, (std::set<std::uint64_t>{10, 11}));
    EXPECT_EQ(under.stage.stop(), 0);
}

TEST(WriterStage, ShutdownAcknowledgesWhatIsPending) {
    TempDir dir;
    // One piece more than the test writes: the torrent's last piece is synced at once.
    const TestTorrent t = make_torrent("late.bin", 1024, {}, 3072);
    // A sync interval far beyond the test: only Shutdown can flush the ack.
    StageUnderTest under(t, dir.path(), 3600s);
    // The first piece after a quiet spell is synced at once; the second waits for the interval.
    send_frame_batch(under.verifier, t, {{0, 1}});
    ASSERT_TRUE(under.orchestrator.expect(v1::Envelope::kPiecesWritten).has_value());
    send_frame_batch(under.verifier, t, {{1, 2}});
    // Wait until the writer has taken the second piece (its heartbeat shows it pending).
    bool pending = false;
    for (int i = 0; i < 20 && !pending; ++i) {
        const auto beat = under.orchestrator.expect(v1::Envelope::kHeartbeat);
        pending = beat && beat->envelope.heartbeat().queue_depth() == 1;
    }
    ASSERT_TRUE(pending);
    EXPECT_FALSE(under.orchestrator.expect(v1::Envelope::kPiecesWritten, 200ms).has_value());
    under.orchestrator.shutdown_all();
    const auto written = under.orchestrator.expect(v1::Envelope::kPiecesWritten);
    ASSERT_TRUE(written.has_value());
    EXPECT_EQ(leases_of(written->envelope.pieces_written().pieces()), (std::set<std::uint64_t>{2}));
    EXPECT_EQ(under.stage.stop(), 0);
    EXPECT_EQ(read_file(dir.path() / "dl" / "late.bin"), t.content.substr(0, 2048) + std::string(1024, '\0'));
}

// Nothing more will come after the torrent's last missing piece: its sync and ack are not
// held back for the interval, so the download ends at once.
TEST(WriterStage, TheLastMissingPieceIsAcknowledgedAtOnce) {
    TempDir dir;
    const TestTorrent t = make_torrent("last.bin", 1024, {}, 2048);
    StageUnderTest under(t, dir.path(), 3600s);
    send_frame_batch(under.verifier, t, {{0, 1}});  // the first sync is due at once anyway
    ASSERT_TRUE(under.orchestrator.expect(v1::Envelope::kPiecesWritten).has_value());
    send_frame_batch(under.verifier, t, {{1, 2}});
    const auto written = under.orchestrator.expect(v1::Envelope::kPiecesWritten);
    ASSERT_TRUE(written.has_value());
    EXPECT_EQ(leases_of(written->envelope.pieces_written().pieces()), (std::set<std::uint64_t>{2}));
    EXPECT_EQ(under.stage.stop(), 0);
    EXPECT_EQ(read_file(dir.path() / "dl" / "last.bin"), t.content);
}

// The worker must not wait for the sync (a second here) to get its slots back.
TEST(WriterStage, FreesArenaSlotsRightAfterTheWriteAndAcknowledgesAfterTheSync) {
    TempDir dir;
    const TestTorrent t = make_torrent("arena.bin", 1024, {}, 5000);  // piece 4 never comes
    StageUnderTest under(t, dir.path(), 3600s);
    // Spends the sync that is due at once, so the next waits for Shutdown.
    send_frame_batch(under.verifier, t, {{0, 1}});
    ASSERT_TRUE(under.orchestrator.expect(v1::Envelope::kPiecesWritten).has_value());

    bus::PieceArena arena(1024, 8);
    send_batch(under.verifier, arena_batch(arena, t, {{1, 11}, {2, 12}, {3, 13}}));
    const auto freed = under.orchestrator.expect(v1::Envelope::kSlotsFreed);
    ASSERT_TRUE(freed.has_value());
    const v1::SlotsFreed& slots = freed->envelope.slots_freed();
    EXPECT_EQ(slots.worker(), "peer_worker-1");
    EXPECT_EQ(slots.arena_id(), arena.info().id);
    EXPECT_EQ(std::set<std::uint64_t>(slots.lease_ids().begin(), slots.lease_ids().end()),
              (std::set<std::uint64_t>{11, 12, 13}));
    EXPECT_FALSE(slots.all_delivered());
    // The bytes are in the file already, though not acknowledged before the sync.
    EXPECT_EQ(read_file(dir.path() / "dl" / "arena.bin").substr(0, 4096), t.content.substr(0, 4096));
    EXPECT_FALSE(under.orchestrator.expect(v1::Envelope::kPiecesWritten, 200ms).has_value());

    under.orchestrator.shutdown_all();
    const auto written = under.orchestrator.expect(v1::Envelope::kPiecesWritten);
    ASSERT_TRUE(written.has_value());
    EXPECT_EQ(leases_of(written->envelope.pieces_written().pieces()), (std::set<std::uint64_t>{11, 12, 13}));
    EXPECT_EQ(under.stage.stop(), 0);
    EXPECT_EQ(saved_done_list(t, under.options), (std::vector<std::uint32_t>{0, 1, 2, 3}));
}

// The worker reused a slot (as after a crash elsewhere): the piece is dropped, to be fetched
// again, and neither acknowledged nor recorded as done.
TEST(WriterStage, APieceWhoseSlotWasReusedIsDroppedNotWritten) {
    TempDir dir;
    const TestTorrent t = make_torrent("reused.bin", 1024, {}, 3000);
    StageUnderTest under(t, dir.path(), 50ms);
    bus::PieceArena arena(1024, 4);
    const v1::PieceBatch batch = arena_batch(arena, t, {{0, 20}, {1, 21}});
    const std::uint32_t reused = batch.pieces(1).slot();
    arena.release(reused);
    ASSERT_EQ(arena.acquire(99), std::optional<std::uint32_t>(reused));
    send_batch(under.verifier, batch);

    const auto dropped = under.orchestrator.expect(v1::Envelope::kPiecesDropped);
    ASSERT_TRUE(dropped.has_value());
    EXPECT_EQ(leases_of(dropped->envelope.pieces_dropped().pieces()), (std::set<std::uint64_t>{21}));
    EXPECT_FALSE(dropped->envelope.pieces_dropped().reason().empty());
    const auto written = under.orchestrator.expect(v1::Envelope::kPiecesWritten);
    ASSERT_TRUE(written.has_value());
    EXPECT_EQ(leases_of(written->envelope.pieces_written().pieces()), (std::set<std::uint64_t>{20}));
    EXPECT_EQ(under.stage.stop(), 0);
    EXPECT_EQ(saved_done_list(t, under.options), (std::vector<std::uint32_t>{0}));
}

// A piece already written needs no second write: its copies are acknowledged, their slots
// freed, and a slot reused meanwhile cannot overwrite the good bytes.
TEST(WriterStage, PiecesAlreadyWrittenAreNotWrittenAgain) {
    TempDir dir;
    const TestTorrent t = make_torrent("twice.bin", 1024, {}, 3072);  // piece 2 never comes
    StageUnderTest under(t, dir.path(), 3600s);
    send_frame_batch(under.verifier, t, {{0, 1}, {0, 2}});  // twice in one batch
    const auto first = under.orchestrator.expect(v1::Envelope::kPiecesWritten);
    ASSERT_TRUE(first.has_value());
    EXPECT_EQ(leases_of(first->envelope.pieces_written().pieces()), (std::set<std::uint64_t>{1, 2}));

    // Done in the book now; this copy's slot is already someone else's.
    bus::PieceArena arena(1024, 2);
    v1::PieceBatch again = arena_batch(arena, t, {{0, 3}, {1, 4}});
    const std::uint32_t slot = again.pieces(0).slot();
    arena.release(slot);
    ASSERT_EQ(arena.acquire(77), std::optional<std::uint32_t>(slot));
    std::fill(arena.bytes(slot).begin(), arena.bytes(slot).end(), std::uint8_t{'X'});
    send_batch(under.verifier, again);
    const auto freed = under.orchestrator.expect(v1::Envelope::kSlotsFreed);
    ASSERT_TRUE(freed.has_value());
    EXPECT_EQ(freed->envelope.slots_freed().lease_ids_size(), 2);
    EXPECT_FALSE(under.orchestrator.expect(v1::Envelope::kPiecesDropped, 200ms).has_value());

    under.orchestrator.shutdown_all();
    const auto written = under.orchestrator.expect(v1::Envelope::kPiecesWritten);
    ASSERT_TRUE(written.has_value());
    EXPECT_EQ(leases_of(written->envelope.pieces_written().pieces()), (std::set<std::uint64_t>{3, 4}));
    EXPECT_EQ(under.stage.stop(), 0);
    EXPECT_EQ(read_file(dir.path() / "dl" / "twice.bin").substr(0, 2048), t.content.substr(0, 2048));
}

TEST(WriterStage, DropsWhatIsNotAPieceBatch) {
    TempDir dir;
    const TestTorrent t = make_torrent("other.bin", 1024, {}, 1024);
    StageUnderTest under(t, dir.path(), 50ms);
    v1::Envelope stray;
    stray.mutable_pieces_verified()->add_pieces()->set_piece(0);
    ASSERT_TRUE(bus::send(under.verifier, "verifier-1", stray));
    send_frame_batch(under.verifier, t, {{0, 5}});
    const auto written = under.orchestrator.expect(v1::Envelope::kPiecesWritten);
    ASSERT_TRUE(written.has_value());
    EXPECT_EQ(leases_of(written->envelope.pieces_written().pieces()), (std::set<std::uint64_t>{5}));
    EXPECT_EQ(under.stage.stop(), 0);
}

// --- resume ---

std::vector<std::string> names_in(const fs::path& dir) {
    std::vector<std::string> names;
    for (const auto& entry : fs::directory_iterator(dir)) names.push_back(entry.path().filename().string());
    return names;
}

void write_pieces(PieceStore& store, const TestTorrent& t, const std::vector<std::uint32_t>& pieces) {
    for (const std::uint32_t i : pieces) {
        const Status status = store.write_piece(PieceIndex{i}, as_bytes(t.piece(i)));
        ASSERT_TRUE(status.ok()) << status.error().describe();
    }
    ASSERT_TRUE(store.sync().ok());
}

std::vector<std::uint32_t> done_list(const PieceBits& bits) {
    std::vector<std::uint32_t> list;
    for (std::uint32_t i = 0; i < bits.piece_count(); ++i) {
        if (bits.test(PieceIndex{i})) list.push_back(i);
    }
    return list;
}

const auto kAlways = [] { return true; };

TEST(PieceBits, WireLayoutAndSpareBits) {
    PieceBits bits(10);
    bits.set(PieceIndex{0});
    bits.set(PieceIndex{9});
    bits.set(PieceIndex{9});
    bits.set(PieceIndex{10});  // out of range: ignored
    EXPECT_EQ(bits.count(), 2u);
    EXPECT_EQ(bits.bytes(), std::string("\x80\x40", 2));
    const auto back = PieceBits::from_bytes(10, bits.bytes());
    ASSERT_TRUE(back.has_value());
    EXPECT_EQ(done_list(*back), (std::vector<std::uint32_t>{0, 9}));
    EXPECT_FALSE(PieceBits::from_bytes(10, std::string("\x80\x20", 2)).has_value());  // spare bit
    EXPECT_FALSE(PieceBits::from_bytes(10, std::string("\x80", 1)).has_value());
}

TEST(ResumeRecord, RoundTripAndRefusals) {
    const TestTorrent t = make_torrent("r", 1024, {{{"a.bin"}, 3000}, {{"b.bin"}, 10}});
    const TestTorrent other = make_torrent("other", 1024, {{{"a.bin"}, 3000}, {{"b.bin"}, 10}}, 0);
    ResumeRecord record{PieceBits(t.torrent.piece_count()), {FileStamp{true, 3000, 1234567890123456789}, FileStamp{}}};
    record.done.set(PieceIndex{1});
    const std::string bytes = encode_resume(record, t.torrent);
    auto back = decode_resume(bytes, t.torrent);
    ASSERT_TRUE(back.ok()) << back.error().describe();
    EXPECT_EQ(back->done.bytes(), record.done.bytes());
    EXPECT_EQ(back->files, record.files);

    EXPECT_FALSE(decode_resume(bytes, other.torrent).ok());  // another torrent's record
    EXPECT_FALSE(decode_resume(bytes.substr(0, bytes.size() / 2), t.torrent).ok());
    EXPECT_FALSE(decode_resume("garbage", t.torrent).ok());
    EXPECT_FALSE(decode_resume("de", t.torrent).ok());
}

TEST(ResumeRecord, AtomicReplaceLeavesNoTempFiles) {
    TempDir dir;
    ASSERT_TRUE(replace_file_atomically(dir.path().string(), "x.resume", "first").ok());
    ASSERT_TRUE(replace_file_atomically(dir.path().string(), "x.resume", "second").ok());
    EXPECT_EQ(read_file(dir.path() / "x.resume"), "second");
    EXPECT_EQ(names_in(dir.path()), (std::vector<std::string>{"x.resume"}));
    // A folder that cannot hold it: an error, not an exception.
    EXPECT_FALSE(replace_file_atomically((dir.path() / "missing").string(), "x.resume", "z").ok());
}

TEST(ResumeBook, ChecksFilesWithoutARecordThenTrustsItsOwnRecord) {
    TempDir dir;
    const TestTorrent t = make_torrent("m", 1024, {{{"a.bin"}, 2500}, {{"b.bin"}, 1700}});
    PieceStore store = open_store(t, dir.path() / "dl");
    write_pieces(store, t, {0, 2, 4});
    const std::string state = (dir.path() / "state").string();
    {
        ResumeBook book(t.torrent, store.root_fd(), state);
        const auto start = book.start(kAlways);
        ASSERT_TRUE(start.has_value());
        EXPECT_FALSE(start->trusted);
        EXPECT_EQ(done_list(book.done()), (std::vector<std::uint32_t>{0, 2, 4}));
    }
    // The check saved a record; nothing changed since, so the next start trusts it.
    EXPECT_EQ(names_in(state), (std::vector<std::string>{to_hex(t.torrent.info_hash()) + ".resume"}));
    ResumeBook again(t.torrent, store.root_fd(), state);
    const auto start = again.start(kAlways);
    ASSERT_TRUE(start.has_value());
    EXPECT_TRUE(start->trusted) << start->reason;
    EXPECT_EQ(done_list(again.done()), (std::vector<std::uint32_t>{0, 2, 4}));
}

TEST(ResumeBook, ChangedMtimeMeansTheFilesAreCheckedAgain) {
    TempDir dir;
    const TestTorrent t = make_torrent("one.bin", 1024, {}, 4096);
    PieceStore store = open_store(t, dir.path());
    write_pieces(store, t, {0, 1, 2, 3});
    const std::string state = (dir.path() / ".piecework").string();
    ResumeBook book(t.torrent, store.root_fd(), state);
    for (std::uint32_t i = 0; i < 4; ++i) book.mark_done(PieceIndex{i});
    ASSERT_TRUE(book.save().ok());
    // Garbage in piece 1 behind the record's back, with the size unchanged.
    {
        std::fstream file(dir.path() / "one.bin", std::ios::in | std::ios::out | std::ios::binary);
        file.seekp(1100);
        file << "garbage";
    }
    struct timespec times[2] = {{0, UTIME_OMIT}, {12345, 0}};
    ASSERT_EQ(::utimensat(AT_FDCWD, (dir.path() / "one.bin").c_str(), times, 0), 0);
    ResumeBook next(t.torrent, store.root_fd(), state);
    const auto start = next.start(kAlways);
    ASSERT_TRUE(start.has_value());
    EXPECT_FALSE(start->trusted);
    EXPECT_EQ(done_list(next.done()), (std::vector<std::uint32_t>{0, 2, 3}));
}

TEST(ResumeBook, CorruptRecordMeansTheFilesAreCheckedAgain) {
    TempDir dir;
    const TestTorrent t = make_torrent("one.bin", 1024, {}, 3000);
    PieceStore store = open_store(t, dir.path());
    write_pieces(store, t, {2});
    const fs::path state = dir.path() / "state";
    fs::create_directories(state);
    std::ofstream(state / (to_hex(t.torrent.info_hash()) + ".resume")) << "d7:version";
    ResumeBook book(t.torrent, store.root_fd(), state.string());
    const auto start = book.start(kAlways);
    ASSERT_TRUE(start.has_value());
    EXPECT_FALSE(start->trusted);
    EXPECT_NE(start->reason.find("refused"), std::string::npos) << start->reason;
    EXPECT_EQ(done_list(book.done()), (std::vector<std::uint32_t>{2}));
}

TEST(ResumeBook, ShortFilesKeepTheirGoodPiecesAndLongFilesAreCutToSize) {
    TempDir dir;
    const TestTorrent t = make_torrent("m", 1024, {{{"a.bin"}, 2500}, {{"b.bin"}, 1700}});
    fs::create_directories(dir.path() / "m");
    // a.bin: its first two pieces only; b.bin: complete plus trailing junk.
    std::ofstream(dir.path() / "m" / "a.bin", std::ios::binary) << file_content(t, 0).substr(0, 2048);
    std::ofstream(dir.path() / "m" / "b.bin", std::ios::binary) << file_content(t, 1) << "junk past the end";
    auto root = open_download_dir(dir.path().string());
    ASSERT_TRUE(root.ok());
    ResumeBook book(t.torrent, root->get(), (dir.path() / "state").string());
    const auto start = book.start(kAlways);
    ASSERT_TRUE(start.has_value());
    // Piece 2 spans both files and a.bin ends too early; pieces 3 and 4 lie in b.bin.
    EXPECT_EQ(done_list(book.done()), (std::vector<std::uint32_t>{0, 1, 3, 4}));
    EXPECT_EQ(read_file(dir.path() / "m" / "b.bin"), file_content(t, 1));
    EXPECT_EQ(fs::file_size(dir.path() / "m" / "a.bin"), 2048u);  // never cut shorter
}

TEST(ResumeBook, StopsWhenAskedDuringTheCheck) {
    TempDir dir;
    const TestTorrent t = make_torrent("one.bin", 1024, {}, 8192);
    auto root = open_download_dir(dir.path().string());
    ASSERT_TRUE(root.ok());
    ResumeBook book(t.torrent, root->get(), (dir.path() / "state").string());
    int asked = 0;
    EXPECT_FALSE(book.start([&] { return ++asked < 1; }).has_value());
    EXPECT_EQ(asked, 1);  // before the first piece: nothing was read
}

TEST(WriterStage, SendsResumeStateFirstAndSavesTheRecordAtShutdown) {
    TempDir dir;
    const TestTorrent t = make_torrent("resume.bin", 1024, {}, 3000);
    {
        PieceStore store = open_store(t, dir.path() / "dl");
        write_pieces(store, t, {1});
    }
    zmq::context_t context;
    test::FakeOrchestrator orchestrator(context, t.bytes);
    const WriterOptions options = stage_options(orchestrator.endpoint(), dir.path() / "dl",
                                                "writer-resume-test", 50ms, dir.path() / "state");
    test::StageThread stage(orchestrator, [&context, options] { return run_writer(context, options); });
    const auto resume = orchestrator.expect(v1::Envelope::kResumeState);
    ASSERT_TRUE(resume.has_value());
    EXPECT_EQ(resume->envelope.resume_state().pieces_done(), 1u);
    EXPECT_EQ(resume->envelope.resume_state().torrent(), test::kTestTorrent.get());
    EXPECT_FALSE(resume->envelope.resume_state().checked_all());
    ASSERT_EQ(resume->frames.size(), 1u);
    EXPECT_EQ(resume->frames[0].to_string(), std::string("\x40", 1));

    zmq::socket_t verifier(context, zmq::socket_type::push);
    bus::configure(verifier);
    verifier.connect(options.verified);
    send_frame_batch(verifier, t, {{0, 7}});
    ASSERT_TRUE(orchestrator.expect(v1::Envelope::kPiecesWritten).has_value());
    EXPECT_EQ(stage.stop(), 0);

    auto root = open_download_dir((dir.path() / "dl").string());
    ASSERT_TRUE(root.ok());
    ResumeBook book(t.torrent, root->get(), options.state_dir);
    const auto start = book.start(kAlways);
    ASSERT_TRUE(start.has_value());
    EXPECT_TRUE(start->trusted) << start->reason;
    EXPECT_EQ(done_list(book.done()), (std::vector<std::uint32_t>{0, 1}));
}

std::vector<std::uint32_t> saved_done_list(const TestTorrent& t, const WriterOptions& options) {
    auto root = open_download_dir(options.dir);
    if (!root) {
        ADD_FAILURE() << root.error().describe();
        return {};
    }
    ResumeBook book(t.torrent, root->get(), options.state_dir);
    const auto start = book.start(kAlways);
    if (!start || !start->trusted) {
        ADD_FAILURE() << "the saved record was not trusted";
        return {};
    }
    return done_list(book.done());
}


// --- download roots, deleting, one open-file budget ---

TEST(DownloadRoots, PlacesFoldersAtOrBelowARootAndRefusesTheRest) {
    TempDir dir;
    const std::string main_root = (dir.path() / "dl").string();
    const std::string more = (dir.path() / "more").string();
    auto roots = DownloadRoots::open(main_root, {more, (dir.path() / "more" / "nested").string()});
    ASSERT_TRUE(roots.ok()) << roots.error().describe();
    EXPECT_TRUE(fs::is_directory(dir.path() / "more" / "nested"));  // made when missing

    const auto placed = [&](const std::string& folder) { return roots->place(folder); };
    ASSERT_TRUE(placed("").ok());
    EXPECT_EQ(placed("")->root, 0u);
    EXPECT_EQ(placed("")->relative, "");
    EXPECT_EQ(placed(main_root)->relative, "");
    EXPECT_EQ(placed(main_root + "/")->relative, "");
    EXPECT_EQ(placed(main_root + "/a/b")->relative, "a/b");
    EXPECT_EQ(placed(main_root + "//a/./b/")->relative, "a/b");
    EXPECT_EQ(placed(main_root + "/a/../b")->relative, "b");  // lexically below the root still
    EXPECT_EQ(placed(more + "/x")->root, 1u);
    EXPECT_EQ(placed(more + "/nested/y")->root, 2u);  // the longest root that matches
    EXPECT_EQ(placed(more + "/nested/y")->relative, "y");

    for (const std::string& refused :
         {main_root + "/..", main_root + "/../escape", main_root + "x", main_root + "x/y",
          dir.path().string(), std::string("/etc"), std::string("/"), std::string("relative/dir"),
          std::string("dl"), main_root + std::string("/a\0b", 4)}) {
        EXPECT_FALSE(placed(refused).ok()) << refused;
    }
    EXPECT_NE(placed("/etc").error().message.find("outside the writer's roots"), std::string::npos)
        << placed("/etc").error().message;
    EXPECT_NE(placed("relative/dir").error().message.find("not an absolute path"), std::string::npos);
}

TEST(DownloadRoots, OpensAFolderBelowItsRootWithoutFollowingSymlinks) {
    TempDir dir;
    TempDir outside;
    auto roots = DownloadRoots::open((dir.path() / "dl").string(), {});
    ASSERT_TRUE(roots.ok());
    fs::create_directory_symlink(outside.path(), dir.path() / "dl" / "link");
    const auto through_link = roots->place((dir.path() / "dl" / "link" / "x").string());
    ASSERT_TRUE(through_link.ok());  // lexically below the root...
    const auto opened = roots->open_folder(*through_link);
    ASSERT_FALSE(opened.ok());  // ...but the link is not followed
    EXPECT_NE(opened.error().message.find("symbolic link"), std::string::npos) << opened.error().message;
    EXPECT_TRUE(fs::is_empty(outside.path()));

    const auto fine = roots->place((dir.path() / "dl" / "a" / "b").string());
    ASSERT_TRUE(fine.ok());
    ASSERT_TRUE(roots->open_folder(*fine).ok());
    EXPECT_TRUE(fs::is_directory(dir.path() / "dl" / "a" / "b"));
}

std::set<std::string> tree_of(const fs::path& dir) {
    std::set<std::string> entries;
    for (const auto& entry : fs::recursive_directory_iterator(dir)) {
        entries.insert(entry.path().lexically_relative(dir).string());  // never through a link
    }
    return entries;
}

TEST(PieceStore, DeleteFilesRemovesExactlyTheTorrentsFilesAndTheFoldersLeftEmpty) {
    TempDir dir;
    TempDir outside;
    const TestTorrent t = make_torrent(
        "multi", 1024,
        {{{"a.bin"}, 1500}, {{"sub", "deeper", "b.bin"}, 900}, {{"sub", "c.bin"}, 700},
         {{"kept", "d.bin"}, 300}, {{"linked.bin"}, 200}, {{"empty.txt"}, 0}});
    {
        std::ofstream(outside.path() / "victim") << "precious";
    }
    {
        PieceStore store = open_store(t, dir.path());
        ASSERT_TRUE(store.create_empty_files().ok());
        write_all_pieces(store, t);
    }
    // Someone else's file beside ours, one in a folder of the torrent's, and a symbolic link
    // where one of the torrent's files was.
    std::ofstream(dir.path() / "neighbour.txt") << "mine";
    std::ofstream(dir.path() / "multi" / "kept" / "note.txt") << "mine too";
    fs::remove(dir.path() / "multi" / "linked.bin");
    fs::create_symlink(outside.path() / "victim", dir.path() / "multi" / "linked.bin");

    PieceStore store = open_store(t, dir.path());
    const Status deleted = store.delete_files();
    ASSERT_FALSE(deleted.ok());  // the link is refused, and named
    EXPECT_NE(deleted.error().message.find("linked.bin"), std::string::npos) << deleted.error().message;
    EXPECT_EQ(tree_of(dir.path()), (std::set<std::string>{"neighbour.txt", "multi", "multi/kept",
                                                          "multi/kept/note.txt", "multi/linked.bin"}));
    EXPECT_EQ(read_file(outside.path() / "victim"), "precious");
    EXPECT_EQ(read_file(dir.path() / "neighbour.txt"), "mine");

    // Once the strangers are gone, the torrent's folder goes too; the download folder stays.
    fs::remove(dir.path() / "multi" / "kept" / "note.txt");
    fs::remove(dir.path() / "multi" / "linked.bin");
    EXPECT_TRUE(store.delete_files().ok());
    EXPECT_EQ(tree_of(dir.path()), (std::set<std::string>{"neighbour.txt"}));
    EXPECT_TRUE(fs::is_directory(dir.path()));
}

TEST(PieceStore, DeleteFilesOfASingleFileTorrentLeavesItsFolder) {
    TempDir dir;
    const TestTorrent t = make_torrent("single.bin", 1024, {}, 3000);
    PieceStore store = open_store(t, dir.path() / "dl");
    write_all_pieces(store, t);
    EXPECT_TRUE(store.delete_files().ok());
    EXPECT_TRUE(fs::is_directory(dir.path() / "dl"));
    EXPECT_TRUE(fs::is_empty(dir.path() / "dl"));
    EXPECT_TRUE(store.delete_files().ok());  // nothing left to delete is no error
}

TEST(PieceStore, TwoStoresShareOneOpenFileBudget) {
    TempDir dir;
    std::vector<TestFile> files;
    for (int i = 0; i < 8; ++i) files.push_back({{"f" + std::to_string(i)}, 700});
    const TestTorrent first = make_torrent("first", 1024, files);
    const TestTorrent second = make_torrent("second", 1024, files);
    const auto budget = std::make_shared<OpenFileCache>(3);
    auto one = PieceStore::open(first.torrent, dir.path().string(), StoreOptions{.open_files = budget});
    auto two = PieceStore::open(second.torrent, dir.path().string(), StoreOptions{.open_files = budget});
    ASSERT_TRUE(one.ok());
    ASSERT_TRUE(two.ok());
    for (std::uint32_t i = 0; i < first.torrent.piece_count(); ++i) {
        ASSERT_TRUE(one->write_piece(PieceIndex{i}, as_bytes(first.piece(i))).ok());
        ASSERT_TRUE(two->write_piece(PieceIndex{i}, as_bytes(second.piece(i))).ok());
        EXPECT_LE(budget->size(), 3u);
    }
    ASSERT_TRUE(one->sync().ok());
    ASSERT_TRUE(two->sync().ok());
    EXPECT_LE(one->open_file_count() + two->open_file_count(), 3u);
    for (std::size_t i = 0; i < files.size(); ++i) {
        const std::string name = "f" + std::to_string(i);
        EXPECT_EQ(read_file(dir.path() / "first" / name), file_content(first, i));
        EXPECT_EQ(read_file(dir.path() / "second" / name), file_content(second, i));
    }
    // A store that goes closes its files, and only its own.
    one = PieceStore::open(first.torrent, dir.path().string(), StoreOptions{.open_files = budget});
    EXPECT_EQ(budget->size(), two->open_file_count());
}

TEST(SlicedCheck, HashesAtLeastOnePieceASliceAndEveryPieceInTheEnd) {
    TempDir dir;
    const TestTorrent t = make_torrent("one.bin", 1024, {}, 5000);
    PieceStore store = open_store(t, dir.path());
    write_pieces(store, t, {0, 3, 4});
    const PieceDigests hashes(t.torrent);
    SlicedCheck check(t.torrent, hashes, store.root_fd());
    int slices = 0;
    while (!check.run_until(bus::Clock::now() - 1s)) {  // a deadline already past: one piece
        ++slices;
        EXPECT_EQ(check.checked(), static_cast<std::uint32_t>(slices));
    }
    EXPECT_EQ(slices + 1, 5);
    EXPECT_EQ(done_list(check.verified()), (std::vector<std::uint32_t>{0, 3, 4}));
}

// --- the stage serving several torrents ---

// A torrent of `pieces` pieces that all hold the same bytes: large on disk (a sparse file)
// without its content in memory.
struct UniformTorrent {
    std::string bytes;
    std::string piece;  // every piece's content
    Torrent torrent;
};

UniformTorrent uniform_torrent(const std::string& name, std::uint32_t piece_length, std::uint32_t pieces) {
    using bencode::Dict;
    using bencode::Value;
    std::string piece(piece_length, 'z');
    const Sha1Digest digest = sha1(piece);
    std::string hashes;
    for (std::uint32_t i = 0; i < pieces; ++i) hashes.append(reinterpret_cast<const char*>(digest.data()), 20);
    Dict info{{"length", Value(static_cast<std::int64_t>(piece_length) * pieces)},
              {"name", Value(name)},
              {"piece length", Value(static_cast<std::int64_t>(piece_length))},
              {"pieces", Value(std::move(hashes))}};
    Dict root{{"info", Value(std::move(info))}};
    std::string bytes = bencode::encode(Value(std::move(root)));
    auto parsed = Torrent::parse(bytes);
    if (!parsed) throw std::runtime_error(parsed.error().describe());
    return UniformTorrent{std::move(bytes), std::move(piece), std::move(parsed).value()};
}

// The file of a uniform torrent at full length and all zeros: a check must hash every piece,
// and none verifies.
void make_sparse(const fs::path& path, std::uint64_t length) {
    fs::create_directories(path.parent_path());
    std::ofstream(path).close();
    fs::resize_file(path, length);
}

void send_uniform_piece(zmq::socket_t& verifier, const UniformTorrent& t, std::uint32_t piece,
                        std::uint64_t lease, TorrentId torrent) {
    v1::Envelope envelope;
    auto* batch = envelope.mutable_piece_batch();
    batch->set_worker("peer_worker-1");
    batch->set_torrent(torrent.get());
    auto* data = batch->add_pieces();
    data->set_piece(piece);
    data->set_lease_id(lease);
    std::vector<zmq::message_t> frames;
    frames.emplace_back(t.piece.data(), t.piece.size());
    ASSERT_TRUE(bus::send(verifier, "verifier-1", envelope, frames));
}

// The writer serving the torrents the test adds to its orchestrator (ids 1, 2, ... in order),
// with `dir`/dl its default root and `dir`/state its records.
class Session {
public:
    Session(const fs::path& dir, std::chrono::milliseconds sync_interval)
        : options(stage_options(orchestrator.endpoint(), dir / "dl", "writer-session-test", sync_interval,
                                dir / "state")) {}

    void start() {
        stage.emplace(orchestrator, [this] { return run_writer(context, options); });
        bus::configure(verifier);
        verifier.connect(options.verified);
    }

    // The next `count` ResumeStates, by torrent.
    std::map<std::uint32_t, bus::Incoming> resume_states(std::size_t count) {
        std::map<std::uint32_t, bus::Incoming> states;
        for (std::size_t i = 0; i < count; ++i) {
            auto state = orchestrator.expect(v1::Envelope::kResumeState, 20s);
            if (!state) break;
            const std::uint32_t torrent = state->envelope.resume_state().torrent();
            states.emplace(torrent, std::move(*state));
        }
        return states;
    }

    // PiecesWritten until every lease of `leases` is acknowledged: lease -> torrent.
    std::map<std::uint64_t, std::uint32_t> acknowledged(const std::set<std::uint64_t>& leases) {
        std::map<std::uint64_t, std::uint32_t> acks;
        while (acks.size() < leases.size()) {
            const auto written = orchestrator.expect(v1::Envelope::kPiecesWritten);
            if (!written) break;
            for (const auto& ref : written->envelope.pieces_written().pieces()) acks[ref.lease_id()] = ref.torrent();
        }
        return acks;
    }

    zmq::context_t context;
    test::FakeOrchestrator orchestrator{context, ""};
    WriterOptions options;
    std::optional<test::StageThread> stage;
    zmq::socket_t verifier{context, zmq::socket_type::push};
};

// The done pieces of a torrent's saved record, read back as the next start would.
std::vector<std::uint32_t> record_of(const Torrent& torrent, const fs::path& folder, const fs::path& state) {
    auto root = open_download_dir(folder.string());
    if (!root) {
        ADD_FAILURE() << root.error().describe();
        return {};
    }
    ResumeBook book(torrent, root->get(), state.string());
    const auto loaded = book.load();
    if (!loaded.trusted) {
        ADD_FAILURE() << "the record in '" << state << "' was not trusted: " << loaded.reason;
        return {};
    }
    return done_list(book.done());
}

std::string record_path(const TestTorrent& t, const fs::path& state) {
    return (state / (to_hex(t.torrent.info_hash()) + ".resume")).string();
}

TEST(WriterSession, WritesTwoTorrentsAtOnceIntoTwoFoldersWithTheirOwnRecords) {
    TempDir dir;
    const TestTorrent a = make_torrent("a", 1024, {{{"x.bin"}, 3000}, {{"y.bin"}, 1000}});
    const TestTorrent b = make_torrent("b.bin", 1024, {}, 5000);
    Session session(dir.path(), 50ms);
    session.options.allow_dirs = {(dir.path() / "other").string()};
    const TorrentId first = session.orchestrator.add_torrent(a.bytes);
    const TorrentId second = session.orchestrator.add_torrent(b.bytes, (dir.path() / "other" / "sub").string());
    session.start();
    const auto states = session.resume_states(2);
    ASSERT_EQ(states.size(), 2u);
    EXPECT_EQ(states.at(first.get()).envelope.resume_state().pieces_done(), 0u);
    EXPECT_EQ(states.at(second.get()).envelope.resume_state().pieces_done(), 0u);

    // Interleaved, and the same piece numbers in both.
    send_frame_batch(session.verifier, a, {{0, 1}, {1, 2}}, first);
    send_frame_batch(session.verifier, b, {{0, 11}, {4, 12}}, second);
    send_frame_batch(session.verifier, a, {{2, 3}, {3, 4}}, first);
    send_frame_batch(session.verifier, b, {{1, 13}, {2, 14}, {3, 15}}, second);
    const auto acks = session.acknowledged({1, 2, 3, 4, 11, 12, 13, 14, 15});
    EXPECT_EQ(acks, (std::map<std::uint64_t, std::uint32_t>{{1, 1}, {2, 1}, {3, 1}, {4, 1},
                                                             {11, 2}, {12, 2}, {13, 2}, {14, 2}, {15, 2}}));
    EXPECT_EQ(session.stage->stop(), 0);

    EXPECT_EQ(read_file(dir.path() / "dl" / "a" / "x.bin"), file_content(a, 0));
    EXPECT_EQ(read_file(dir.path() / "dl" / "a" / "y.bin"), file_content(a, 1));
    EXPECT_EQ(read_file(dir.path() / "other" / "sub" / "b.bin"), b.content);
    EXPECT_FALSE(fs::exists(dir.path() / "dl" / "b.bin"));
    EXPECT_EQ(record_of(a.torrent, dir.path() / "dl", dir.path() / "state"),
              (std::vector<std::uint32_t>{0, 1, 2, 3}));
    EXPECT_EQ(record_of(b.torrent, dir.path() / "other" / "sub", dir.path() / "state"),
              (std::vector<std::uint32_t>{0, 1, 2, 3, 4}));
}

// A torrent whose files are being checked does not hold up another's writes: the check runs
// in slices of the loop's turns.
TEST(WriterSession, ACheckRunsInSlicesWhileAnotherTorrentWrites) {
    TempDir dir;
    const TestTorrent small = make_torrent("small.bin", 1024, {}, 4096);
    const UniformTorrent big = uniform_torrent("big.bin", 1 << 20, 512);  // 512 MiB to hash
    make_sparse(dir.path() / "dl" / "big.bin", big.torrent.total_size());
    Session session(dir.path(), 50ms);
    const TorrentId first = session.orchestrator.add_torrent(small.bytes);
    session.start();
    ASSERT_EQ(session.resume_states(1).size(), 1u);

    const auto added = bus::Clock::now();
    const TorrentId second = session.orchestrator.add_torrent(big.bytes);
    send_frame_batch(session.verifier, small, {{0, 1}, {1, 2}}, first);
    const auto next = session.orchestrator.expect_one_of({v1::Envelope::kPiecesWritten, v1::Envelope::kResumeState}, 20s);
    ASSERT_TRUE(next.has_value());
    ASSERT_TRUE(next->envelope.has_pieces_written())
        << "the big torrent's check ended before a piece of the small one was written";
    EXPECT_EQ(next->envelope.pieces_written().pieces(0).torrent(), first.get());
    const auto written_after = bus::Clock::now() - added;

    const auto state = session.orchestrator.expect(v1::Envelope::kResumeState, 60s);
    ASSERT_TRUE(state.has_value());
    EXPECT_EQ(state->envelope.resume_state().torrent(), second.get());
    EXPECT_EQ(state->envelope.resume_state().pieces_done(), 0u);
    EXPECT_GT(bus::Clock::now() - added, written_after);
    EXPECT_EQ(session.stage->stop(), 0);
}

TEST(WriterSession, ATorrentRemovedDuringItsFirstCheckSavesNoRecord) {
    TempDir dir;
    const UniformTorrent big = uniform_torrent("big.bin", 1 << 20, 512);
    make_sparse(dir.path() / "dl" / "big.bin", big.torrent.total_size());
    Session session(dir.path(), 50ms);
    session.start();
    ASSERT_TRUE(session.orchestrator.expect(v1::Envelope::kHeartbeat).has_value());
    const TorrentId id = session.orchestrator.add_torrent(big.bytes);
    std::this_thread::sleep_for(50ms);
    session.orchestrator.remove_torrent(id);
    EXPECT_FALSE(session.orchestrator.expect(v1::Envelope::kResumeState, 1000ms).has_value());
    EXPECT_EQ(session.stage->stop(), 0);
    EXPECT_FALSE(fs::exists(dir.path() / "state" / (to_hex(big.torrent.info_hash()) + ".resume")));
    EXPECT_EQ(fs::file_size(dir.path() / "dl" / "big.bin"), big.torrent.total_size());  // kept
}

TEST(WriterSession, DownloadFoldersOutsideTheRootsAreRefusedAndNothingIsWrittenThere) {
    TempDir dir;
    TempDir outside;
    fs::create_directories(dir.path() / "dl");
    fs::create_directory_symlink(outside.path(), dir.path() / "dl" / "link");
    const TestTorrent t = make_torrent("refused.bin", 1024, {}, 3000);
    Session session(dir.path(), 50ms);
    struct Case {
        std::string folder;
        std::string why;
    };
    const std::vector<Case> cases{
        {outside.path().string(), "outside the writer's roots"},
        {(dir.path() / "dl" / ".." / "escape").string(), "outside the writer's roots"},
        {(dir.path() / "dl" / "link" / "x").string(), "symbolic link"},
        {"relative/folder", "not an absolute path"},
    };
    std::vector<TorrentId> ids;
    for (const Case& refused : cases) ids.push_back(session.orchestrator.add_torrent(t.bytes, refused.folder));
    session.start();
    const auto states = session.resume_states(cases.size());
    ASSERT_EQ(states.size(), cases.size());
    for (const auto& [torrent, state] : states) {
        EXPECT_EQ(state.envelope.resume_state().pieces_done(), 0u) << torrent;
        ASSERT_EQ(state.frames.size(), 1u);
        EXPECT_EQ(state.frames[0].to_string(), std::string(1, '\0'));  // 3 pieces, none done
    }

    bus::PieceArena arena(1024, 4);
    for (std::size_t i = 0; i < cases.size(); ++i) {
        if (i == 0) {
            send_batch(session.verifier, arena_batch(arena, t, {{0, 100}, {1, 101}}, ids[i]));
        } else {
            send_frame_batch(session.verifier, t, {{0, 100 * (i + 1)}, {1, 100 * (i + 1) + 1}}, ids[i]);
        }
        for (int piece = 0; piece < 2; ++piece) {
            const auto failed = session.orchestrator.expect(v1::Envelope::kWriteFailed);
            ASSERT_TRUE(failed.has_value()) << cases[i].folder;
            EXPECT_EQ(failed->envelope.write_failed().torrent(), ids[i].get());
            EXPECT_NE(failed->envelope.write_failed().error().find(cases[i].why), std::string::npos)
                << failed->envelope.write_failed().error();
        }
        if (i == 0) {  // the arena's slots come back too
            const auto freed = session.orchestrator.expect(v1::Envelope::kSlotsFreed);
            ASSERT_TRUE(freed.has_value());
            EXPECT_EQ(std::set<std::uint64_t>(freed->envelope.slots_freed().lease_ids().begin(),
                                              freed->envelope.slots_freed().lease_ids().end()),
                      (std::set<std::uint64_t>{100, 101}));
        }
    }

    // A verify of a refused torrent: nothing of it is here.
    v1::Envelope verify;
    verify.mutable_verify_torrent()->set_torrent(ids[0].get());
    session.orchestrator.send_all(verify);
    const auto verified = session.orchestrator.expect(v1::Envelope::kResumeState);
    ASSERT_TRUE(verified.has_value());
    EXPECT_TRUE(verified->envelope.resume_state().checked_all());
    EXPECT_EQ(verified->envelope.resume_state().pieces_done(), 0u);
    EXPECT_EQ(session.stage->stop(), 0);

    EXPECT_TRUE(fs::is_empty(outside.path()));
    EXPECT_FALSE(fs::exists(dir.path() / "escape"));
    EXPECT_EQ(tree_of(dir.path() / "dl"), (std::set<std::string>{"link"}));
    EXPECT_FALSE(fs::exists(dir.path() / "relative"));
}

// With the default state folder (DIR/.piecework, inside the default root), a torrent named
// ".piecework" would write into, and delete, other torrents' records.
TEST(WriterSession, ATorrentWhoseFilesWouldLieInTheStateFolderIsRefused) {
    TempDir dir;
    const TestTorrent victim = make_torrent("victim.bin", 1024, {}, 2048);
    const std::string record = to_hex(victim.torrent.info_hash()) + ".resume";
    const TestTorrent intruder = make_torrent(".piecework", 1024, {{{record}, 3000}});
    Session session(dir.path(), 50ms);
    session.options.state_dir.clear();  // the default: dl/.piecework
    const TorrentId first = session.orchestrator.add_torrent(victim.bytes);
    (void)session.orchestrator.add_torrent(intruder.bytes);
    session.start();
    ASSERT_EQ(session.resume_states(2).size(), 2u);
    send_frame_batch(session.verifier, victim, {{0, 1}, {1, 2}}, first);
    ASSERT_EQ(session.acknowledged({1, 2}).size(), 2u);
    EXPECT_EQ(session.stage->stop(), 0);
    const std::string saved = read_file(dir.path() / "dl" / ".piecework" / record);
    session.stage.reset();

    Session again(dir.path(), 50ms);
    again.options.state_dir.clear();
    (void)again.orchestrator.add_torrent(victim.bytes);
    const TorrentId intruder_id = again.orchestrator.add_torrent(intruder.bytes);
    again.start();
    const auto states = again.resume_states(2);
    ASSERT_EQ(states.size(), 2u);
    EXPECT_EQ(states.at(1).envelope.resume_state().pieces_done(), 2u);  // the record held
    send_frame_batch(again.verifier, intruder, {{0, 11}}, intruder_id);
    const auto failed = again.orchestrator.expect(v1::Envelope::kWriteFailed);
    ASSERT_TRUE(failed.has_value());
    EXPECT_NE(failed->envelope.write_failed().error().find("state folder"), std::string::npos)
        << failed->envelope.write_failed().error();
    again.orchestrator.remove_torrent(intruder_id, /*delete_data=*/true);
    (void)again.orchestrator.expect(v1::Envelope::kHeartbeat);
    (void)again.orchestrator.expect(v1::Envelope::kHeartbeat);
    EXPECT_EQ(again.stage->stop(), 0);
    EXPECT_EQ(read_file(dir.path() / "dl" / ".piecework" / record), saved);
}

TEST(WriterSession, ARemovedTorrentIsSyncedAndSavedItsFilesKept) {
    TempDir dir;
    const TestTorrent t = make_torrent("m", 1024, {{{"a.bin"}, 2500}, {{"b.bin"}, 1700}});
    StageUnderTest under(t, dir.path(), 3600s);
    send_frame_batch(under.verifier, t, {{0, 1}});  // the first sync is at once
    ASSERT_TRUE(under.orchestrator.expect(v1::Envelope::kPiecesWritten).has_value());
    send_frame_batch(under.verifier, t, {{3, 2}});  // waits for the next
    bool pending = false;
    for (int i = 0; i < 20 && !pending; ++i) {
        const auto beat = under.orchestrator.expect(v1::Envelope::kHeartbeat);
        pending = beat && beat->envelope.heartbeat().queue_depth() == 1;
    }
    ASSERT_TRUE(pending);

    under.orchestrator.remove_torrent(test::kTestTorrent);
    const auto written = under.orchestrator.expect(v1::Envelope::kPiecesWritten);
    ASSERT_TRUE(written.has_value());
    EXPECT_EQ(leases_of(written->envelope.pieces_written().pieces()), (std::set<std::uint64_t>{2}));

    // Its pieces are not taken any more.
    send_frame_batch(under.verifier, t, {{1, 3}});
    const auto dropped = under.orchestrator.expect(v1::Envelope::kPiecesDropped);
    ASSERT_TRUE(dropped.has_value());
    EXPECT_EQ(dropped->envelope.pieces_dropped().pieces(0).torrent(), test::kTestTorrent.get());
    EXPECT_NE(dropped->envelope.pieces_dropped().reason().find("torrent 1 not open here"), std::string::npos)
        << dropped->envelope.pieces_dropped().reason();
    EXPECT_EQ(under.stage.stop(), 0);

    EXPECT_EQ(read_file(dir.path() / "dl" / "m" / "a.bin").substr(0, 1024), t.piece(0));
    EXPECT_EQ(record_of(t.torrent, dir.path() / "dl", dir.path() / "state"), (std::vector<std::uint32_t>{0, 3}));
}

TEST(WriterSession, ATorrentRemovedWithItsDataLeavesNothingOfItAndTouchesNothingElse) {
    TempDir dir;
    const TestTorrent a = make_torrent("a", 1024, {{{"x.bin"}, 1500}, {{"sub", "deep", "y.bin"}, 900},
                                                   {{"sub", "z.bin"}, 700}, {{"e.txt"}, 0}});
    const TestTorrent c = make_torrent("c", 1024, {{{"sub", "w.bin"}, 2000}});
    const TestTorrent b = make_torrent("b.bin", 1024, {}, 2048);
    const fs::path folder = dir.path() / "shared" / "dl";
    Session session(dir.path(), 50ms);
    session.options.allow_dirs = {(dir.path() / "shared").string()};
    const TorrentId ida = session.orchestrator.add_torrent(a.bytes, folder.string());
    const TorrentId idb = session.orchestrator.add_torrent(b.bytes, folder.string());
    const TorrentId idc = session.orchestrator.add_torrent(c.bytes, folder.string());
    session.start();
    ASSERT_EQ(session.resume_states(3).size(), 3u);
    send_frame_batch(session.verifier, a, {{0, 1}, {1, 2}, {2, 3}}, ida);
    send_frame_batch(session.verifier, b, {{0, 11}, {1, 12}}, idb);
    send_frame_batch(session.verifier, c, {{0, 21}, {1, 22}}, idc);
    ASSERT_EQ(session.acknowledged({1, 2, 3, 11, 12, 21, 22}).size(), 7u);
    std::ofstream(folder / "keep.txt") << "mine";
    std::ofstream(folder / "c" / "sub" / "mine.txt") << "mine too";
    ASSERT_TRUE(fs::exists(folder / "a" / "e.txt"));
    // Records are saved after syncs at most every state_save_interval: wait for both.
    for (int i = 0; i < 100 && !(fs::exists(record_path(a, dir.path() / "state")) &&
                                 fs::exists(record_path(c, dir.path() / "state"))); ++i) {
        std::this_thread::sleep_for(20ms);
    }
    ASSERT_TRUE(fs::exists(record_path(a, dir.path() / "state")));

    session.orchestrator.remove_torrent(ida, /*delete_data=*/true);
    session.orchestrator.remove_torrent(idc, /*delete_data=*/true);
    (void)session.orchestrator.expect(v1::Envelope::kHeartbeat);
    (void)session.orchestrator.expect(v1::Envelope::kHeartbeat);  // the removals are in by now
    send_frame_batch(session.verifier, a, {{0, 4}}, ida);
    const auto dropped = session.orchestrator.expect(v1::Envelope::kPiecesDropped);
    ASSERT_TRUE(dropped.has_value());
    EXPECT_EQ(dropped->envelope.pieces_dropped().pieces(0).torrent(), ida.get());
    EXPECT_EQ(session.stage->stop(), 0);

    // a: files and folders gone; c: its file gone, its folders kept for the stranger's file;
    // b and the stranger beside them untouched.
    EXPECT_EQ(tree_of(folder), (std::set<std::string>{"keep.txt", "b.bin", "c", "c/sub", "c/sub/mine.txt"}));
    EXPECT_EQ(read_file(folder / "b.bin"), b.content);
    EXPECT_EQ(read_file(folder / "keep.txt"), "mine");
    EXPECT_FALSE(fs::exists(record_path(a, dir.path() / "state")));
    EXPECT_FALSE(fs::exists(record_path(c, dir.path() / "state")));
    EXPECT_EQ(record_of(b.torrent, folder, dir.path() / "state"), (std::vector<std::uint32_t>{0, 1}));
}

TEST(WriterSession, VerifyFindsAPieceCorruptedOnDisk) {
    TempDir dir;
    const TestTorrent t = make_torrent("verify.bin", 1024, {}, 4096);
    StageUnderTest under(t, dir.path(), 50ms);
    send_frame_batch(under.verifier, t, {{0, 1}, {1, 2}, {2, 3}, {3, 4}});
    ASSERT_TRUE(under.orchestrator.expect(v1::Envelope::kPiecesWritten).has_value());
    {
        std::fstream file(dir.path() / "dl" / "verify.bin", std::ios::in | std::ios::out | std::ios::binary);
        file.seekp(2 * 1024 + 10);
        file << "rot";
    }
    v1::Envelope verify;
    verify.mutable_verify_torrent()->set_torrent(test::kTestTorrent.get());
    under.orchestrator.send_all(verify);
    const auto state = under.orchestrator.expect(v1::Envelope::kResumeState);
    ASSERT_TRUE(state.has_value());
    EXPECT_TRUE(state->envelope.resume_state().checked_all());
    EXPECT_EQ(state->envelope.resume_state().torrent(), test::kTestTorrent.get());
    EXPECT_EQ(state->envelope.resume_state().pieces_done(), 3u);
    ASSERT_EQ(state->frames.size(), 1u);
    EXPECT_EQ(state->frames[0].to_string(), std::string("\xD0", 1));  // 0, 1 and 3

    // The piece is written again when it comes (not skipped as done), and the record says so.
    send_frame_batch(under.verifier, t, {{2, 5}});
    const auto written = under.orchestrator.expect(v1::Envelope::kPiecesWritten);
    ASSERT_TRUE(written.has_value());
    EXPECT_EQ(leases_of(written->envelope.pieces_written().pieces()), (std::set<std::uint64_t>{5}));
    EXPECT_EQ(under.stage.stop(), 0);
    EXPECT_EQ(read_file(dir.path() / "dl" / "verify.bin"), t.content);
    EXPECT_EQ(saved_done_list(t, under.options), (std::vector<std::uint32_t>{0, 1, 2, 3}));
}

// Writing goes on during a verify, and what is acknowledged meanwhile counts as on disk.
TEST(WriterSession, AVerifyCountsPiecesAcknowledgedWhileItRuns) {
    TempDir dir;
    const UniformTorrent big = uniform_torrent("big.bin", 1 << 20, 512);
    make_sparse(dir.path() / "dl" / "big.bin", big.torrent.total_size());
    Session session(dir.path(), 50ms);
    const TorrentId id = session.orchestrator.add_torrent(big.bytes);
    session.start();
    const auto first = session.resume_states(1);
    ASSERT_EQ(first.size(), 1u);
    EXPECT_EQ(first.at(id.get()).envelope.resume_state().pieces_done(), 0u);

    v1::Envelope verify;
    verify.mutable_verify_torrent()->set_torrent(id.get());
    session.orchestrator.send_all(verify);
    std::this_thread::sleep_for(50ms);  // past piece 0, most likely
    send_uniform_piece(session.verifier, big, 0, 1, id);
    const auto next = session.orchestrator.expect_one_of({v1::Envelope::kPiecesWritten, v1::Envelope::kResumeState}, 60s);
    ASSERT_TRUE(next.has_value());
    ASSERT_TRUE(next->envelope.has_pieces_written()) << "no write while the verify ran";
    const auto state = session.orchestrator.expect(v1::Envelope::kResumeState, 60s);
    ASSERT_TRUE(state.has_value());
    EXPECT_TRUE(state->envelope.resume_state().checked_all());
    EXPECT_EQ(state->envelope.resume_state().pieces_done(), 1u);
    ASSERT_EQ(state->frames.size(), 1u);
    EXPECT_EQ(state->frames[0].to_string().substr(0, 1), std::string("\x80", 1));
    EXPECT_EQ(session.stage->stop(), 0);
}

TEST(WriterSession, BatchesOfTorrentsNotOpenHereAreDroppedAndTheirSlotsFreed) {
    TempDir dir;
    const TestTorrent t = make_torrent("known.bin", 1024, {}, 3000);
    StageUnderTest under(t, dir.path(), 50ms);
    // Torrent 9 is known by its info-hash only: no info, so nothing is open for it.
    bus::AddedTorrent added;
    added.id = TorrentId{9};
    added.info_hash = sha1(std::string("not the info"));
    added.name = "nine";
    under.orchestrator.send_all(bus::torrent_added_message(added));

    bus::PieceArena arena(1024, 4);
    for (const std::uint32_t torrent : {7u, 9u}) {
        send_batch(under.verifier, arena_batch(arena, t, {{0, torrent * 10}, {1, torrent * 10 + 1}}, TorrentId{torrent}));
        const auto dropped = under.orchestrator.expect(v1::Envelope::kPiecesDropped);
        ASSERT_TRUE(dropped.has_value());
        const v1::PiecesDropped& report = dropped->envelope.pieces_dropped();
        EXPECT_EQ(leases_of(report.pieces()), (std::set<std::uint64_t>{torrent * 10, torrent * 10 + 1}));
        for (const auto& ref : report.pieces()) EXPECT_EQ(ref.torrent(), torrent);
        EXPECT_EQ(report.reason(), "torrent " + std::to_string(torrent) + " not open here");
        const auto freed = under.orchestrator.expect(v1::Envelope::kSlotsFreed);
        ASSERT_TRUE(freed.has_value());
        EXPECT_EQ(std::set<std::uint64_t>(freed->envelope.slots_freed().lease_ids().begin(),
                                          freed->envelope.slots_freed().lease_ids().end()),
                  (std::set<std::uint64_t>{torrent * 10, torrent * 10 + 1}));
        for (std::uint32_t slot = 0; slot < 4; ++slot) arena.release(slot);
    }
    EXPECT_FALSE(under.orchestrator.expect(v1::Envelope::kWriteFailed, 200ms).has_value());
    EXPECT_FALSE(fs::exists(dir.path() / "dl" / "known.bin"));
    EXPECT_EQ(under.stage.stop(), 0);
}

TEST(WriterSession, TheTorrentsInfoAgainIsIgnored) {
    TempDir dir;
    const TestTorrent t = make_torrent("again.bin", 1024, {}, 3000);
    StageUnderTest under(t, dir.path(), 50ms);
    send_frame_batch(under.verifier, t, {{0, 1}});
    ASSERT_TRUE(under.orchestrator.expect(v1::Envelope::kPiecesWritten).has_value());
    // As after a repeated Hello: TorrentAdded and TorrentInfo once more.
    bus::AddedTorrent added;
    added.id = test::kTestTorrent;
    added.info_hash = t.torrent.info_hash();
    added.name = t.torrent.name();
    under.orchestrator.send_all(bus::torrent_added_message(added));
    under.orchestrator.send_all(bus::torrent_info_message(test::kTestTorrent), {t.torrent.info_bytes()});
    EXPECT_FALSE(under.orchestrator.expect(v1::Envelope::kResumeState, 500ms).has_value());
    send_frame_batch(under.verifier, t, {{1, 2}});  // still open, piece 0 still done
    const auto written = under.orchestrator.expect(v1::Envelope::kPiecesWritten);
    ASSERT_TRUE(written.has_value());
    EXPECT_EQ(leases_of(written->envelope.pieces_written().pieces()), (std::set<std::uint64_t>{2}));
    EXPECT_EQ(under.stage.stop(), 0);
    EXPECT_EQ(saved_done_list(t, under.options), (std::vector<std::uint32_t>{0, 1}));
}

TEST(WriterSession, ATerminationSignalSyncsAndSavesEveryRecordThenExitsZero) {
    TempDir dir;
    const TestTorrent a = make_torrent("a.bin", 1024, {}, 4096);
    const TestTorrent b = make_torrent("b", 1024, {{{"x.bin"}, 2000}, {{"y.bin"}, 2000}});
    Session session(dir.path(), 3600s);  // only the end syncs what follows the first sync
    test::FakeSignals signals;
    session.options.signal_fd = signals.fd();
    const TorrentId ida = session.orchestrator.add_torrent(a.bytes);
    const TorrentId idb = session.orchestrator.add_torrent(b.bytes);
    auto result = std::async(std::launch::async, [&session] { return run_writer(session.context, session.options); });
    bus::configure(session.verifier);
    session.verifier.connect(session.options.verified);
    ASSERT_EQ(session.resume_states(2).size(), 2u);
    send_frame_batch(session.verifier, a, {{0, 1}}, ida);
    send_frame_batch(session.verifier, b, {{0, 11}}, idb);
    ASSERT_EQ(session.acknowledged({1, 11}).size(), 2u);
    send_frame_batch(session.verifier, a, {{1, 2}, {2, 3}}, ida);
    send_frame_batch(session.verifier, b, {{2, 12}}, idb);
    bool pending = false;
    for (int i = 0; i < 20 && !pending; ++i) {
        const auto beat = session.orchestrator.expect(v1::Envelope::kHeartbeat);
        pending = beat && beat->envelope.heartbeat().queue_depth() == 3;
    }
    ASSERT_TRUE(pending);

    ASSERT_TRUE(signals.raise(SIGTERM));
    EXPECT_EQ(session.acknowledged({2, 3, 12}).size(), 3u);
    const auto goodbye = session.orchestrator.expect(v1::Envelope::kGoodbye);
    ASSERT_TRUE(goodbye.has_value());
    EXPECT_EQ(goodbye->envelope.goodbye().reason(), "SIGTERM");
    ASSERT_EQ(result.wait_for(10s), std::future_status::ready);
    EXPECT_EQ(result.get(), 0);
    EXPECT_EQ(record_of(a.torrent, dir.path() / "dl", dir.path() / "state"), (std::vector<std::uint32_t>{0, 1, 2}));
    EXPECT_EQ(record_of(b.torrent, dir.path() / "dl", dir.path() / "state"), (std::vector<std::uint32_t>{0, 2}));
}

// The process's descriptors open on regular files below `dir`.
std::size_t open_files_below(const fs::path& dir) {
    std::size_t count = 0;
    const std::string prefix = fs::canonical(dir).string() + "/";
    for (const auto& entry : fs::directory_iterator("/proc/self/fd")) {
        std::error_code error;
        const fs::path target = fs::read_symlink(entry.path(), error);
        if (error || target.string().rfind(prefix, 0) != 0) continue;
        if (fs::is_regular_file(target, error)) ++count;
    }
    return count;
}

TEST(WriterSession, TheOpenFileBudgetHoldsAcrossTorrents) {
    TempDir dir;
    std::vector<TestFile> files;
    for (int i = 0; i < 8; ++i) files.push_back({{"f" + std::to_string(i)}, 700});
    const TestTorrent a = make_torrent("a", 1024, files);
    const TestTorrent b = make_torrent("b", 1024, files);
    Session session(dir.path(), 20ms);
    session.options.max_open_files = 3;
    const TorrentId ida = session.orchestrator.add_torrent(a.bytes);
    const TorrentId idb = session.orchestrator.add_torrent(b.bytes);
    session.start();
    ASSERT_EQ(session.resume_states(2).size(), 2u);
    std::set<std::uint64_t> leases;
    std::size_t most_open = 0;
    for (std::uint32_t i = 0; i < a.torrent.piece_count(); ++i) {
        send_frame_batch(session.verifier, a, {{i, 100 + i}}, ida);
        send_frame_batch(session.verifier, b, {{i, 200 + i}}, idb);
        leases.insert(100 + i);
        leases.insert(200 + i);
        std::this_thread::sleep_for(5ms);
        most_open = std::max(most_open, open_files_below(dir.path()));
    }
    ASSERT_EQ(session.acknowledged(leases).size(), leases.size());
    most_open = std::max(most_open, open_files_below(dir.path()));
    EXPECT_GT(most_open, 0u);
    EXPECT_LE(most_open, 3u);
    EXPECT_EQ(session.stage->stop(), 0);
    for (std::size_t i = 0; i < files.size(); ++i) {
        const std::string name = "f" + std::to_string(i);
        EXPECT_EQ(read_file(dir.path() / "dl" / "a" / name), file_content(a, i));
        EXPECT_EQ(read_file(dir.path() / "dl" / "b" / name), file_content(b, i));
    }
}


// --- reads for peers (ReadService, --reads) ---

TEST(PieceStore, ReadsPiecesBackAcrossFilesWithPadFilesAsZeros) {
    TempDir dir;
    const TestTorrent t = make_torrent(
        "padded", 512, {{{"a.bin"}, 100}, {{".pad", "412"}, 412, true}, {{"b.bin"}, 600}});
    {
        PieceStore store = open_store(t, dir.path());
        write_all_pieces(store, t);
        for (std::uint32_t i = 0; i < t.torrent.piece_count(); ++i) {
            std::vector<std::uint8_t> out(t.torrent.piece_size(PieceIndex{i}), 0xEE);
            const ReadResult read = store.read_piece(PieceIndex{i}, out);
            ASSERT_EQ(read.status, ReadStatus::ok) << read.why;
            EXPECT_EQ(std::string(out.begin(), out.end()), t.piece(i)) << "piece " << i;
        }
        EXPECT_EQ(store.pieces_read(), t.torrent.piece_count());
        std::vector<std::uint8_t> wrong(10);
        EXPECT_EQ(store.read_piece(PieceIndex{0}, wrong).status, ReadStatus::failed);
    }
    // What was written is gone: a file cut short, a file deleted.
    fs::resize_file(dir.path() / "padded" / "a.bin", 50);
    fs::remove(dir.path() / "padded" / "b.bin");
    PieceStore store = open_store(t, dir.path());
    std::vector<std::uint8_t> out(512);
    const ReadResult short_file = store.read_piece(PieceIndex{0}, out);
    EXPECT_EQ(short_file.status, ReadStatus::missing);
    EXPECT_NE(short_file.why.find("shorter"), std::string::npos) << short_file.why;
    const ReadResult gone = store.read_piece(PieceIndex{1}, out);
    EXPECT_EQ(gone.status, ReadStatus::missing);
    EXPECT_NE(gone.why.find("b.bin' is missing"), std::string::npos) << gone.why;
    EXPECT_FALSE(fs::exists(dir.path() / "padded" / "b.bin"));  // reading creates nothing
}

// A torrent whose pieces span files, with a pad file and a short last piece.
TestTorrent seed_torrent() {
    return make_torrent("seed", 1024,
                        {{{"a.bin"}, 1500}, {{".pad", "548"}, 548, true}, {{"b.bin"}, 3000}, {{"c.bin"}, 10}});
}

// The writer with reads on (--reads), its orchestrator and verifier played by the test, and a
// worker's DEALER to the reads socket.
class ReadsUnderTest {
public:
    ReadsUnderTest(const TestTorrent& t, const fs::path& dir, bool arena,
                   const std::function<void(WriterOptions&)>& tune = {})
        : t_(t), orchestrator(context, t.bytes),
          options(stage_options(orchestrator.endpoint(), dir / "dl", "writer-reads-test", 20ms, dir / "state")) {
        options.reads = test::unique_inproc("reads");
        options.read_arena = arena ? ReadArena::on : ReadArena::off;
        options.metrics = &metrics;
        if (tune) tune(options);
        stage.emplace(orchestrator, [this] { return run_writer(context, options); });
        bus::configure(verifier);
        verifier.connect(options.verified);
        worker = connect_worker("peer_worker-1");
        if (!orchestrator.expect(v1::Envelope::kResumeState)) ADD_FAILURE() << "no ResumeState from the writer";
    }

    zmq::socket_t connect_worker(const std::string& name) {
        zmq::socket_t socket(context, zmq::socket_type::dealer);
        bus::configure(socket);
        socket.set(zmq::sockopt::routing_id, name);
        socket.connect(options.reads);
        return socket;
    }

    // Writes these pieces and waits until they are durable (acknowledged).
    void write(const std::vector<std::uint32_t>& pieces) {
        std::vector<PieceLease> leases;
        std::set<std::uint64_t> waiting;
        for (const std::uint32_t piece : pieces) {
            leases.push_back({piece, ++lease_});
            waiting.insert(lease_);
        }
        send_frame_batch(verifier, t_, leases);
        while (!waiting.empty()) {
            const auto written = orchestrator.expect(v1::Envelope::kPiecesWritten);
            if (!written) {
                ADD_FAILURE() << waiting.size() << " pieces not acknowledged";
                return;
            }
            for (const auto& ref : written->envelope.pieces_written().pieces()) waiting.erase(ref.lease_id());
        }
    }

    void write_all() {
        std::vector<std::uint32_t> pieces;
        for (std::uint32_t i = 0; i < t_.torrent.piece_count(); ++i) pieces.push_back(i);
        write(pieces);
    }

    static void ask(zmq::socket_t& socket, std::uint32_t piece, std::uint64_t request,
                    TorrentId torrent = test::kTestTorrent) {
        v1::Envelope envelope;
        envelope.mutable_read_piece()->set_torrent(torrent.get());
        envelope.mutable_read_piece()->set_piece(piece);
        envelope.mutable_read_piece()->set_request(request);
        ASSERT_TRUE(bus::send(socket, "peer_worker-test", envelope));
    }

    static void done(zmq::socket_t& socket, const std::vector<std::uint64_t>& requests) {
        v1::Envelope envelope;
        for (const std::uint64_t request : requests) envelope.mutable_reads_done()->add_requests(request);
        ASSERT_TRUE(bus::send(socket, "peer_worker-test", envelope));
    }

    // The next PieceRead on `socket`; the orchestrator keeps beating meanwhile (what it hears
    // is dropped).
    std::optional<bus::Incoming> answer(zmq::socket_t& socket, std::chrono::milliseconds timeout = 5000ms) {
        const auto deadline = bus::Clock::now() + timeout;
        while (bus::Clock::now() < deadline) {
            bus::Incoming in;
            if (bus::receive(socket, false, in) == bus::RecvStatus::ok) {
                if (in.envelope.has_piece_read()) return in;
                continue;
            }
            keep_orchestrator_alive();
            zmq::pollitem_t item{socket.handle(), 0, ZMQ_POLLIN, 0};
            zmq::poll(&item, 1, 10ms);
        }
        return std::nullopt;
    }
    std::optional<bus::Incoming> answer(std::chrono::milliseconds timeout = 5000ms) {
        return answer(worker, timeout);
    }

    void keep_orchestrator_alive() {
        if (bus::Clock::now() - last_pump_ < 200ms) return;
        last_pump_ = bus::Clock::now();
        (void)orchestrator.expect(v1::Envelope::BODY_NOT_SET, 1ms);
    }

    std::int64_t from_disk() {
        return metrics.counter("piecework_read_pieces_from_disk_total", "").value();
    }

    const TestTorrent& t_;
    zmq::context_t context;
    bus::metrics::Registry metrics{"writer"};
    test::FakeOrchestrator orchestrator;
    WriterOptions options;
    std::optional<test::StageThread> stage;
    zmq::socket_t verifier{context, zmq::socket_type::push};
    zmq::socket_t worker;
    std::uint64_t lease_ = 0;
    bus::Clock::time_point last_pump_{};
};

std::string error_of(const std::optional<bus::Incoming>& answer) {
    return answer ? answer->envelope.piece_read().error() : std::string("(no answer)");
}

bool contains(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }

// The bytes of an arena answer, seen as a worker sees them.
std::optional<std::string> arena_bytes(bus::ArenaReader& reader, const bus::Incoming& answer, std::uint32_t size) {
    const v1::PieceRead& read = answer.envelope.piece_read();
    auto view = reader.view(arena_info(read.arena()), read.slot(), size, read.request());
    if (!view) return std::nullopt;
    return std::string(view->begin(), view->end());
}

TEST(Reads, FramesCarryEveryDonePieceByteForByte) {
    TempDir dir;
    const TestTorrent t = seed_torrent();
    ASSERT_EQ(t.torrent.piece_count(), 5u);
    ReadsUnderTest under(t, dir.path(), false);
    under.write_all();
    for (std::uint32_t i = 0; i < t.torrent.piece_count(); ++i) ReadsUnderTest::ask(under.worker, i, 100 + i);
    std::set<std::uint64_t> answered;
    for (std::uint32_t n = 0; n < t.torrent.piece_count(); ++n) {
        const auto answer = under.answer();
        ASSERT_TRUE(answer.has_value());
        const v1::PieceRead& read = answer->envelope.piece_read();
        EXPECT_EQ(read.torrent(), test::kTestTorrent.get());
        EXPECT_EQ(read.error(), "");
        EXPECT_FALSE(read.has_arena());
        EXPECT_EQ(read.request(), 100 + read.piece());
        ASSERT_EQ(answer->frames.size(), 1u);
        EXPECT_EQ(answer->frames[0].to_string(), t.piece(read.piece())) << "piece " << read.piece();
        answered.insert(read.request());
    }
    EXPECT_EQ(answered.size(), t.torrent.piece_count());
    EXPECT_EQ(under.from_disk(), static_cast<std::int64_t>(t.torrent.piece_count()));
    EXPECT_EQ(under.stage->stop(), 0);
}

TEST(Reads, ArenaSlotsHoldEveryDonePieceForTheWorkerToMapReadOnly) {
    TempDir dir;
    const TestTorrent t = seed_torrent();
    ReadsUnderTest under(t, dir.path(), true);
    under.write_all();
    bus::ArenaReader reader;
    std::vector<bus::Incoming> answers;
    for (std::uint32_t i = 0; i < t.torrent.piece_count(); ++i) {
        ReadsUnderTest::ask(under.worker, i, 100 + i);
        auto answer = under.answer();
        ASSERT_TRUE(answer.has_value());
        const v1::PieceRead& read = answer->envelope.piece_read();
        ASSERT_EQ(read.error(), "");
        ASSERT_TRUE(read.has_arena());
        EXPECT_TRUE(answer->frames.empty());
        EXPECT_EQ(read.arena().slot_size(), 1024u);
        EXPECT_EQ(arena_bytes(reader, *answer, t.torrent.piece_size(PieceIndex{i})), t.piece(i)) << "piece " << i;
        answers.push_back(std::move(*answer));
    }
    // One slot each, each tagged with its request while the worker holds it.
    std::set<std::uint32_t> slots;
    for (const auto& answer : answers) {
        const v1::PieceRead& read = answer.envelope.piece_read();
        slots.insert(read.slot());
        EXPECT_TRUE(reader.still_holds(arena_info(read.arena()), read.slot(), read.request()));
    }
    EXPECT_EQ(slots.size(), answers.size());
    ReadsUnderTest::done(under.worker, {100, 101, 102, 103, 104});
    EXPECT_EQ(under.stage->stop(), 0);
}

TEST(Reads, RefusalsSayWhyAndCarryNoBytes) {
    TempDir dir;
    const TestTorrent t = seed_torrent();
    ReadsUnderTest under(t, dir.path(), true);
    under.write({0, 1});
    const auto refused = [&](std::uint32_t piece, std::uint64_t request, TorrentId torrent) {
        ReadsUnderTest::ask(under.worker, piece, request, torrent);
        auto answer = under.answer();
        if (answer) {
            EXPECT_EQ(answer->envelope.piece_read().request(), request);
            EXPECT_FALSE(answer->envelope.piece_read().has_arena());
            EXPECT_TRUE(answer->frames.empty());
        }
        return error_of(answer);
    };
    EXPECT_EQ(refused(0, 1, TorrentId{9}), "torrent 9 is not known here");
    EXPECT_EQ(refused(3, 2, test::kTestTorrent), "piece 3 is not on disk yet");
    const std::string out_of_range = refused(5, 3, test::kTestTorrent);
    EXPECT_TRUE(contains(out_of_range, "piece 5 is out of range")) << out_of_range;
    const std::string zero = refused(0, 0, test::kTestTorrent);
    EXPECT_TRUE(contains(zero, "request 0")) << zero;

    // A torrent whose files are still being checked (512 MiB of zeros to hash).
    const UniformTorrent big = uniform_torrent("big.bin", 1 << 20, 512);
    make_sparse(dir.path() / "dl" / "big.bin", big.torrent.total_size());
    const TorrentId second = under.orchestrator.add_torrent(big.bytes);
    std::string checking;
    for (int i = 0; i < 100 && !contains(checking, "being checked"); ++i) {
        checking = refused(0, 10 + static_cast<std::uint64_t>(i), second);
        if (contains(checking, "not open here yet") || contains(checking, "not known here")) {
            std::this_thread::sleep_for(10ms);
        }
    }
    EXPECT_EQ(checking, "torrent 2 is still being checked");
    // Pieces that are on disk are served all along.
    ReadsUnderTest::ask(under.worker, 1, 500);
    const auto served = under.answer();
    ASSERT_TRUE(served.has_value());
    EXPECT_EQ(served->envelope.piece_read().error(), "");
    EXPECT_TRUE(served->envelope.piece_read().has_arena());
    EXPECT_EQ(under.stage->stop(), 0);
}

// Never a byte of a piece that no longer hashes right; the record stops calling it done.
TEST(Reads, APieceChangedOnDiskIsRefusedNeverSentAndNoLongerDone) {
    TempDir dir;
    const TestTorrent t = seed_torrent();
    ReadsUnderTest under(t, dir.path(), true);
    under.write_all();
    {
        std::fstream file(dir.path() / "dl" / "seed" / "b.bin", std::ios::in | std::ios::out | std::ios::binary);
        file.seekp(100);  // piece 2 starts at b.bin's byte 0
        file << "rot";
    }
    fs::remove(dir.path() / "dl" / "seed" / "c.bin");  // the tail of piece 4
    ReadsUnderTest::ask(under.worker, 2, 1);
    auto answer = under.answer();
    EXPECT_EQ(error_of(answer), "piece 2 changed on disk");
    ASSERT_TRUE(answer.has_value());
    EXPECT_FALSE(answer->envelope.piece_read().has_arena());
    EXPECT_TRUE(answer->frames.empty());
    ReadsUnderTest::ask(under.worker, 4, 2);
    EXPECT_EQ(error_of(under.answer()), "piece 4 changed on disk");
    // From now on they are not on disk as far as the writer knows; the others are served.
    ReadsUnderTest::ask(under.worker, 2, 3);
    EXPECT_EQ(error_of(under.answer()), "piece 2 is not on disk yet");
    ReadsUnderTest::ask(under.worker, 3, 4);
    EXPECT_EQ(error_of(under.answer()), "");
    EXPECT_EQ(under.stage->stop(), 0);
    EXPECT_EQ(saved_done_list(t, under.options), (std::vector<std::uint32_t>{0, 1, 3}));
}

// The second read of a piece comes from the cache: the file is not read again (a change on
// disk meanwhile does not show), until the piece has left the cache.
TEST(Reads, TheCacheAnswersAgainWithoutReadingTheFiles) {
    TempDir dir;
    const TestTorrent t = make_torrent("cached.bin", 1024, {}, 4096);
    ReadsUnderTest under(t, dir.path(), false, [](WriterOptions& options) { options.read.cache_bytes = 1024; });
    under.write_all();
    ReadsUnderTest::ask(under.worker, 1, 1);
    auto first = under.answer();
    ASSERT_TRUE(first.has_value());
    ASSERT_EQ(first->frames.size(), 1u);
    EXPECT_EQ(first->frames[0].to_string(), t.piece(1));
    EXPECT_EQ(under.from_disk(), 1);
    {
        std::fstream file(dir.path() / "dl" / "cached.bin", std::ios::in | std::ios::out | std::ios::binary);
        file.seekp(1024 + 5);
        file << "rot";
    }
    ReadsUnderTest::ask(under.worker, 1, 2);
    auto second = under.answer();
    ASSERT_TRUE(second.has_value());
    ASSERT_EQ(second->frames.size(), 1u);
    EXPECT_EQ(second->frames[0].to_string(), t.piece(1));  // the verified bytes, from memory
    EXPECT_EQ(under.from_disk(), 1);
    // Piece 0 takes the cache's one place; piece 1 is read again and found changed.
    ReadsUnderTest::ask(under.worker, 0, 3);
    EXPECT_EQ(error_of(under.answer()), "");
    ReadsUnderTest::ask(under.worker, 1, 4);
    EXPECT_EQ(error_of(under.answer()), "piece 1 changed on disk");
    EXPECT_EQ(under.from_disk(), 3);
    EXPECT_EQ(under.stage->stop(), 0);
}

TEST(Reads, AnArenaSlotGivenBackIsTheCacheForTheNextRead) {
    TempDir dir;
    const TestTorrent t = make_torrent("cached.bin", 1024, {}, 4096);
    ReadsUnderTest under(t, dir.path(), true);
    under.write_all();
    bus::ArenaReader reader;
    ReadsUnderTest::ask(under.worker, 1, 1);
    const auto first = under.answer();
    ASSERT_TRUE(first.has_value());
    ASSERT_TRUE(first->envelope.piece_read().has_arena());
    ReadsUnderTest::done(under.worker, {1});
    {
        std::fstream file(dir.path() / "dl" / "cached.bin", std::ios::in | std::ios::out | std::ios::binary);
        file.seekp(1024 + 5);
        file << "rot";
    }
    ReadsUnderTest::ask(under.worker, 1, 2);
    const auto again = under.answer();
    ASSERT_TRUE(again.has_value());
    ASSERT_TRUE(again->envelope.piece_read().has_arena());
    EXPECT_EQ(again->envelope.piece_read().slot(), first->envelope.piece_read().slot());
    EXPECT_EQ(arena_bytes(reader, *again, 1024), t.piece(1));
    EXPECT_FALSE(arena_bytes(reader, *first, 1024).has_value());  // the slot's tag moved on
    EXPECT_EQ(under.from_disk(), 1);
    // Held by request 2, the piece is copied into a slot of its own for request 3.
    ReadsUnderTest::ask(under.worker, 1, 3);
    const auto copy = under.answer();
    ASSERT_TRUE(copy.has_value());
    EXPECT_NE(copy->envelope.piece_read().slot(), again->envelope.piece_read().slot());
    EXPECT_EQ(arena_bytes(reader, *copy, 1024), t.piece(1));
    EXPECT_EQ(arena_bytes(reader, *again, 1024), t.piece(1));
    EXPECT_EQ(under.from_disk(), 1);
    EXPECT_EQ(under.stage->stop(), 0);
}

// A piece evicted from the cache leaves its slot's pages for the next read (no page faults on
// the way), until reads pause for spare_linger: then they go back to the kernel.
TEST(Reads, AnEvictedPieceLeavesItsPagesForTheNextReadUntilReadsPause) {
    TempDir dir;
    const TestTorrent t = make_torrent("spare.bin", 1024, {}, 4096);
    ReadsUnderTest under(t, dir.path(), true, [](WriterOptions& options) {
        options.read.memory_bytes = 8192;  // two 4 KiB slots
        options.read.cache_bytes = 0;      // every piece given back is evicted at once
        options.read.spare_linger = 700ms;
    });
    under.write_all();
    bus::ArenaReader reader;
    ReadsUnderTest::ask(under.worker, 0, 1);
    const auto one = under.answer();
    ASSERT_TRUE(one.has_value());
    ASSERT_TRUE(one->envelope.piece_read().has_arena()) << error_of(one);
    const std::string arena = one->envelope.piece_read().arena().path();
    const std::size_t held = cached_pages(arena);
    ReadsUnderTest::done(under.worker, {1});
    std::this_thread::sleep_for(200ms);
    EXPECT_EQ(cached_pages(arena), held) << "the evicted piece's slot gave its pages back at once";
    ReadsUnderTest::ask(under.worker, 1, 2);
    const auto two = under.answer();
    ASSERT_TRUE(two.has_value());
    EXPECT_EQ(error_of(two), "");
    EXPECT_EQ(two->envelope.piece_read().slot(), one->envelope.piece_read().slot());
    EXPECT_EQ(arena_bytes(reader, *two, 1024), t.piece(1));
    EXPECT_FALSE(arena_bytes(reader, *one, 1024).has_value());
    EXPECT_EQ(cached_pages(arena), held) << "the second read took pages of its own";
    EXPECT_EQ(under.from_disk(), 2);
    ReadsUnderTest::done(under.worker, {2});
    const auto deadline = bus::Clock::now() + 5s;
    while (cached_pages(arena) >= held && bus::Clock::now() < deadline) {
        under.keep_orchestrator_alive();
        std::this_thread::sleep_for(50ms);
    }
    EXPECT_LT(cached_pages(arena), held) << "the spare pages stayed after reads paused";
    EXPECT_EQ(under.stage->stop(), 0);
}

// Two slots of read memory: a third read waits until a slot is given back, and gives up with
// "busy" when none is in time.
TEST(Reads, ReadsDoneFreesSlotsThatReadsWaitFor) {
    TempDir dir;
    const TestTorrent t = make_torrent("two.bin", 1024, {}, 8192);
    ReadsUnderTest under(t, dir.path(), true, [](WriterOptions& options) {
        options.read.memory_bytes = 8192;  // two 4 KiB slots
        options.read.cache_bytes = 0;
        options.read.queue_wait = 1500ms;
    });
    under.write_all();
    bus::ArenaReader reader;
    ReadsUnderTest::ask(under.worker, 0, 1);
    ReadsUnderTest::ask(under.worker, 1, 2);
    const auto one = under.answer();
    const auto two = under.answer();
    ASSERT_TRUE(one && two);
    ASSERT_EQ(error_of(one), "");
    ASSERT_EQ(error_of(two), "");
    ReadsUnderTest::ask(under.worker, 2, 3);
    EXPECT_FALSE(under.answer(300ms).has_value()) << "answered with every slot held";
    ReadsUnderTest::done(under.worker, {1});
    const auto three = under.answer();
    ASSERT_TRUE(three.has_value());
    EXPECT_EQ(error_of(three), "");
    EXPECT_EQ(three->envelope.piece_read().slot(), one->envelope.piece_read().slot());
    EXPECT_EQ(arena_bytes(reader, *three, 1024), t.piece(2));
    EXPECT_FALSE(arena_bytes(reader, *one, 1024).has_value());
    EXPECT_EQ(arena_bytes(reader, *two, 1024), t.piece(1));

    const auto asked = bus::Clock::now();
    ReadsUnderTest::ask(under.worker, 3, 4);
    EXPECT_EQ(error_of(under.answer()), "busy: no memory for reads came free in time");
    EXPECT_GE(bus::Clock::now() - asked, 1400ms);
    EXPECT_EQ(under.stage->stop(), 0);
}

// A worker that keeps its slots past the bound loses them; a slot taken back never carries
// the same tag again while its old holder may still look (not even for another worker).
TEST(Reads, SlotsHeldTooLongAreTakenBackNeverUnderTheSameTag) {
    TempDir dir;
    const TestTorrent t = make_torrent("held.bin", 1024, {}, 8192);
    ReadsUnderTest under(t, dir.path(), true, [](WriterOptions& options) {
        options.read.memory_bytes = 8192;
        options.read.cache_bytes = 0;
        options.read.hold_timeout = 300ms;
    });
    under.write_all();
    bus::ArenaReader reader;
    ReadsUnderTest::ask(under.worker, 0, 1);
    ReadsUnderTest::ask(under.worker, 1, 2);
    const auto one = under.answer();
    const auto two = under.answer();
    ASSERT_TRUE(one && two);
    ASSERT_TRUE(one->envelope.piece_read().has_arena() && two->envelope.piece_read().has_arena());
    const auto asked = bus::Clock::now();
    ReadsUnderTest::ask(under.worker, 2, 3);
    const auto three = under.answer();
    ASSERT_TRUE(three.has_value());
    EXPECT_EQ(error_of(three), "");
    EXPECT_GE(bus::Clock::now() - asked, 250ms);
    EXPECT_EQ(arena_bytes(reader, *three, 1024), t.piece(2));
    EXPECT_FALSE(arena_bytes(reader, *one, 1024).has_value());
    EXPECT_FALSE(arena_bytes(reader, *two, 1024).has_value());

    // Another worker numbers its requests as the first did: its request 1 may not go into the
    // slot the first worker's request 1 held (the only one free): it waits for another.
    const std::uint32_t slot_of_one = one->envelope.piece_read().slot();
    zmq::socket_t other = under.connect_worker("peer_worker-2");
    ReadsUnderTest::ask(other, 3, 1);
    EXPECT_FALSE(under.answer(other, 200ms).has_value());
    ReadsUnderTest::done(under.worker, {3});
    const auto theirs = under.answer(other);
    ASSERT_TRUE(theirs.has_value());
    EXPECT_EQ(error_of(theirs), "");
    EXPECT_NE(theirs->envelope.piece_read().slot(), slot_of_one);
    EXPECT_EQ(arena_bytes(reader, *theirs, 1024), t.piece(3));
    EXPECT_FALSE(arena_bytes(reader, *one, 1024).has_value());
    EXPECT_EQ(under.stage->stop(), 0);
}

TEST(Reads, ReadsInFlightPerWorkerAreBounded) {
    TempDir dir;
    const TestTorrent t = make_torrent("bounded.bin", 1024, {}, 4096);
    ReadsUnderTest under(t, dir.path(), true, [](WriterOptions& options) { options.read.per_worker = 2; });
    under.write_all();
    ReadsUnderTest::ask(under.worker, 0, 1);
    ReadsUnderTest::ask(under.worker, 1, 2);
    EXPECT_EQ(error_of(under.answer()), "");
    EXPECT_EQ(error_of(under.answer()), "");
    ReadsUnderTest::ask(under.worker, 2, 3);
    EXPECT_EQ(error_of(under.answer()), "busy: 2 reads in flight for this worker");
    zmq::socket_t other = under.connect_worker("peer_worker-2");
    ReadsUnderTest::ask(other, 2, 1);
    EXPECT_EQ(error_of(under.answer(other)), "");
    ReadsUnderTest::done(under.worker, {1});
    ReadsUnderTest::ask(under.worker, 2, 4);
    EXPECT_EQ(error_of(under.answer()), "");
    EXPECT_EQ(under.stage->stop(), 0);
}

TEST(Reads, ATorrentRemovedMeanwhileTakesItsCachedPiecesAlongAndItsHeldSlotsWhenGivenBack) {
    TempDir dir;
    const TestTorrent t = make_torrent("removed.bin", 1024, {}, 4096);
    ReadsUnderTest under(t, dir.path(), true);
    under.write_all();
    bus::ArenaReader reader;
    ReadsUnderTest::ask(under.worker, 0, 1);
    const auto held = under.answer();
    ReadsUnderTest::ask(under.worker, 1, 2);
    const auto cached = under.answer();
    ASSERT_TRUE(held && cached);
    ReadsUnderTest::done(under.worker, {2});
    under.orchestrator.remove_torrent(test::kTestTorrent);
    std::string refused;
    for (int i = 0; i < 100 && refused != "torrent 1 is not known here"; ++i) {
        ReadsUnderTest::ask(under.worker, 1, 10 + static_cast<std::uint64_t>(i));
        refused = error_of(under.answer());
    }
    EXPECT_EQ(refused, "torrent 1 is not known here");
    EXPECT_FALSE(arena_bytes(reader, *cached, 1024).has_value());  // gone with the torrent
    EXPECT_EQ(arena_bytes(reader, *held, 1024), t.piece(0));       // still the worker's
    ReadsUnderTest::done(under.worker, {1});
    bool freed = false;
    for (int i = 0; i < 100 && !freed; ++i) {
        freed = !arena_bytes(reader, *held, 1024).has_value();
        if (!freed) std::this_thread::sleep_for(10ms);
    }
    EXPECT_TRUE(freed) << "the slot given back after its torrent went was not freed";
    EXPECT_EQ(under.stage->stop(), 0);
}

// Reads are served a few per turn: pieces keep being written (and acknowledged) meanwhile.
TEST(Reads, WritingGoesOnWhileReadsAreServed) {
    TempDir dir;
    const TestTorrent t = make_torrent("hot.bin", 256 << 10, {}, 64ull << 18);  // 64 pieces of 256 KiB
    const TestTorrent other = make_torrent("other.bin", 1024, {}, 4096);
    ReadsUnderTest under(t, dir.path(), false, [](WriterOptions& options) { options.read.cache_bytes = 0; });
    under.write_all();
    const TorrentId second = under.orchestrator.add_torrent(other.bytes);
    ASSERT_TRUE(under.orchestrator.expect(v1::Envelope::kResumeState).has_value());

    constexpr std::uint64_t kReads = 2048;  // 512 MiB to read and hash
    std::uint64_t sent = 0;
    std::uint64_t answered = 0;
    std::optional<std::uint64_t> answered_when_written;
    bool batch_sent = false;
    auto last_control = bus::Clock::now();
    const auto deadline = bus::Clock::now() + 120s;
    while (answered < kReads && bus::Clock::now() < deadline) {
        while (sent < kReads && sent - answered < 64) {
            ReadsUnderTest::ask(under.worker, static_cast<std::uint32_t>(sent % 64), sent + 1);
            ++sent;
        }
        zmq::pollitem_t item{under.worker.handle(), 0, ZMQ_POLLIN, 0};
        zmq::poll(&item, 1, 10ms);
        bus::Incoming in;
        while (bus::receive(under.worker, false, in) == bus::RecvStatus::ok) {
            ASSERT_TRUE(in.envelope.has_piece_read());
            ASSERT_EQ(in.envelope.piece_read().error(), "");
            ASSERT_EQ(in.frames.size(), 1u);
            ++answered;
        }
        if (!batch_sent && answered >= 64) {
            send_frame_batch(under.verifier, other, {{0, 7001}, {1, 7002}}, second);
            batch_sent = true;
        }
        if (batch_sent && !answered_when_written) {
            if (bus::Clock::now() - last_control > 20ms) {
                last_control = bus::Clock::now();
                if (under.orchestrator.expect(v1::Envelope::kPiecesWritten, 1ms)) answered_when_written = answered;
            }
        } else {
            under.keep_orchestrator_alive();  // nothing it says matters here
        }
    }
    EXPECT_EQ(answered, kReads);
    ASSERT_TRUE(answered_when_written.has_value()) << "nothing was written while reads were served";
    EXPECT_LT(*answered_when_written, kReads / 2);
    EXPECT_EQ(under.stage->stop(), 0);
    EXPECT_EQ(read_file(dir.path() / "dl" / "other.bin").substr(0, 2048), other.content.substr(0, 2048));
}

}  // namespace
}  // namespace pw::writer
