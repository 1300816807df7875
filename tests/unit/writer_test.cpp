// The writer: the piece store on a temp dir (layout, sparse files, path safety, errors) and
// the whole stage loop (durable acknowledgements, Shutdown).
#include <chrono>
#include <csignal>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <future>
#include <iterator>
#include <set>
#include <span>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "stage_harness.hpp"
#include "test_torrents.hpp"
#include "writer/open_file_cache.hpp"
#include "writer/piece_store.hpp"
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
    auto store = PieceStore::open(t.torrent, dir.string(), max_open);
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

TEST(PieceStore, FilesAreCreatedSparseAtFullLength) {
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
    // One 16 KiB piece written: far fewer blocks than the file's length.
    EXPECT_LT(static_cast<std::uint64_t>(info.st_blocks) * 512, length / 4);
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

TEST(OpenFileCache, EvictsTheLeastRecentlyUsed) {
    OpenFileCache cache(2);
    cache.add(1, UniqueFd(::dup(0)));
    cache.add(2, UniqueFd(::dup(0)));
    ASSERT_NE(cache.find(1), nullptr);  // 2 is now the oldest
    const auto evicted = cache.evict_if_full();
    ASSERT_TRUE(evicted.has_value());
    EXPECT_EQ(evicted->file_index, 2u);
    EXPECT_FALSE(cache.evict_if_full().has_value());
    EXPECT_EQ(cache.find(2), nullptr);
}

// The whole stage: acknowledgements come only after the bytes are in the file, Shutdown
// flushes and exits 0.
TEST(WriterStage, WritesAcknowledgesAndShutsDown) {
    TempDir dir;
    const TestTorrent t = make_torrent("stage", 1024, {{{"a.bin"}, 1500}, {{"b.bin"}, 0}, {{"c.bin"}, 900}});
    zmq::context_t context;
    test::FakeOrchestrator orchestrator(context, t.bytes);
    const WriterOptions options{orchestrator.endpoint(), test::unique_inproc("verified"),
                                (dir.path() / "dl").string(), "writer-stage-test", 50ms,
                                bus::Timing{100ms, 5, 3000ms}};
    test::StageThread stage(orchestrator, [&context, options] { return run_writer(context, options); });
    ASSERT_TRUE(orchestrator.expect(v1::Envelope::kHeartbeat).has_value());
    EXPECT_TRUE(fs::is_regular_file(dir.path() / "dl" / "stage" / "b.bin"));

    zmq::socket_t verifier(context, zmq::socket_type::push);
    bus::configure(verifier);
    verifier.connect(options.verified);
    for (std::uint32_t i = 0; i < t.torrent.piece_count(); ++i) {
        v1::Envelope envelope;
        envelope.mutable_piece_data()->set_piece(i);
        envelope.mutable_piece_data()->set_lease_id(100 + i);
        const std::string bytes = t.piece(i);
        std::vector<zmq::message_t> frames;
        frames.emplace_back(bytes.data(), bytes.size());
        ASSERT_TRUE(bus::send(verifier, "verifier-1", envelope, frames));
    }
    v1::Envelope wrong;  // a piece of the wrong size: WriteFailed, and the stage keeps going
    wrong.mutable_piece_data()->set_piece(0);
    wrong.mutable_piece_data()->set_lease_id(999);
    std::vector<zmq::message_t> short_frame;
    short_frame.emplace_back(std::string("short"));
    ASSERT_TRUE(bus::send(verifier, "verifier-1", wrong, short_frame));

    std::set<std::uint64_t> acked;
    for (std::uint32_t i = 0; i < t.torrent.piece_count(); ++i) {
        const auto written = orchestrator.expect(v1::Envelope::kPieceWritten);
        ASSERT_TRUE(written.has_value());
        acked.insert(written->envelope.piece_written().lease_id());
    }
    EXPECT_EQ(acked, (std::set<std::uint64_t>{100, 101, 102}));
    EXPECT_EQ(read_file(dir.path() / "dl" / "stage" / "a.bin"), file_content(t, 0));
    EXPECT_EQ(read_file(dir.path() / "dl" / "stage" / "c.bin"), file_content(t, 2));
    EXPECT_EQ(stage.stop(), 0);
}

TEST(WriterStage, ShutdownAcknowledgesWhatIsPending) {
    TempDir dir;
    const TestTorrent t = make_torrent("late.bin", 1024, {}, 1024);
    zmq::context_t context;
    test::FakeOrchestrator orchestrator(context, t.bytes);
    // A sync interval far beyond the test: only Shutdown can flush the ack.
    const WriterOptions options{orchestrator.endpoint(), test::unique_inproc("verified"),
                                dir.path().string(), "writer-shutdown-test", 3600s,
                                bus::Timing{100ms, 5, 3000ms}};
    test::StageThread stage(orchestrator, [&context, options] { return run_writer(context, options); });
    ASSERT_TRUE(orchestrator.expect(v1::Envelope::kHeartbeat).has_value());

    zmq::socket_t verifier(context, zmq::socket_type::push);
    bus::configure(verifier);
    verifier.connect(options.verified);
    // The first piece after a quiet spell is synced at once; the second waits for the interval.
    for (std::uint64_t lease : {1, 2}) {
        v1::Envelope envelope;
        envelope.mutable_piece_data()->set_piece(0);
        envelope.mutable_piece_data()->set_lease_id(lease);
        const std::string bytes = t.piece(0);
        std::vector<zmq::message_t> frames;
        frames.emplace_back(bytes.data(), bytes.size());
        ASSERT_TRUE(bus::send(verifier, "verifier-1", envelope, frames));
        if (lease == 1) {
            const auto first = orchestrator.expect(v1::Envelope::kPieceWritten);
            ASSERT_TRUE(first.has_value());
        }
    }
    // Wait until the writer has taken the second piece (its heartbeat shows it pending).
    bool pending = false;
    for (int i = 0; i < 20 && !pending; ++i) {
        const auto beat = orchestrator.expect(v1::Envelope::kHeartbeat);
        pending = beat && beat->envelope.heartbeat().queue_depth() == 1;
    }
    ASSERT_TRUE(pending);
    EXPECT_FALSE(orchestrator.expect(v1::Envelope::kPieceWritten, 200ms).has_value());
    orchestrator.shutdown_all();
    const auto written = orchestrator.expect(v1::Envelope::kPieceWritten);
    ASSERT_TRUE(written.has_value());
    EXPECT_EQ(written->envelope.piece_written().lease_id(), 2u);
    EXPECT_EQ(stage.stop(), 0);
    EXPECT_EQ(read_file(dir.path() / "late.bin"), t.content);
}

}  // namespace
}  // namespace pw::writer
