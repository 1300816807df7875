// `piecework inspect --json` against libtorrent's reading of the same mktorrent-made torrents:
// the info-hash, sizes, piece geometry, trackers and file list must agree.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "tests/integration/harness.hpp"

namespace {

using pw::test::TempDir;

// Compares piecework's JSON (argv[1]) with libtorrent's view of the torrent (argv[2]); prints
// OK or both views.
constexpr const char* compare_script = R"PY(
import json, sys
import libtorrent as lt
ours = json.load(open(sys.argv[1], encoding="utf-8"))
ti = lt.torrent_info(sys.argv[2])
fs = ti.files()
tiers = {}
for entry in ti.trackers():
    tiers.setdefault(entry.tier, []).append(entry.url)
theirs = {
    "name": ti.name(),
    "info_hash": str(ti.info_hash()),
    "total_size": ti.total_size(),
    "piece_length": ti.piece_length(),
    "piece_count": ti.num_pieces(),
    "private": ti.priv(),
    # libtorrent shuffles URLs inside a tier (BEP 12 allows it): compare tiers as sets.
    "trackers": [sorted(tiers[t]) for t in sorted(tiers)],
    "files": [[fs.file_path(i), fs.file_size(i), fs.file_offset(i)] for i in range(fs.num_files())],
}
mine = {k: ours[k] for k in theirs if k != "files"}
mine["trackers"] = [sorted(tier) for tier in ours["trackers"]]
mine["files"] = [[f["path"], f["length"], f["offset"]] for f in ours["files"]]
if mine != theirs:
    print("MISMATCH\nours:   " + json.dumps(mine, ensure_ascii=False) +
          "\ntheirs: " + json.dumps(theirs, ensure_ascii=False))
    sys.exit(1)
print("OK %d files" % len(mine["files"]))
)PY";

// Runs inspect --json on the torrent, then the libtorrent comparison; returns its verdict.
void expect_agrees_with_libtorrent(const TempDir& dir, const std::string& torrent,
                                   std::size_t expected_files) {
    std::string json;
    const int code = pw::test::run_command(
        {pw::test::bin("piecework"), "inspect", "--json", torrent}, &json);
    ASSERT_EQ(code, 0) << json;
    const std::string json_path = dir / "inspect.json";
    {
        std::FILE* out = std::fopen(json_path.c_str(), "wb");
        ASSERT_NE(out, nullptr);
        std::fwrite(json.data(), 1, json.size(), out);
        std::fclose(out);
    }
    std::string verdict;
    const int compared = pw::test::run_command(
        {"/usr/bin/python3", "-c", compare_script, json_path, torrent}, &verdict);
    EXPECT_EQ(compared, 0) << verdict;
    EXPECT_EQ(verdict, "OK " + std::to_string(expected_files) + " files\n");
}

const std::vector<std::vector<std::string>> two_tiers = {
    {"http://127.0.0.1:6969/announce", "udp://127.0.0.1:6969/announce"},
    {"http://127.0.0.1:7070/announce"}};

TEST(InspectIntegration, SingleFile) {
    TempDir dir("pw-inspect-");
    const std::string payload = pw::test::make_payload(dir.path(), "payload.bin", 1'000'003, 1);
    const std::string torrent =
        pw::test::make_torrent(payload, 32768, two_tiers, dir / "single.torrent");
    expect_agrees_with_libtorrent(dir, torrent, 1);
}

TEST(InspectIntegration, NestedFolders) {
    TempDir dir("pw-inspect-");
    const std::string content = pw::test::make_payload_tree(
        dir.path(), "nested",
        {{"top.txt", 100}, {"a/b/c/deep.bin", 70'000}, {"a/empty.dat", 0}, {"a/b/mid.bin", 40'000},
         {"z/last.txt", 5}},
        2);
    const std::string torrent =
        pw::test::make_torrent(content, 32768, {{"http://127.0.0.1:6969/announce"}},
                               dir / "nested.torrent");
    expect_agrees_with_libtorrent(dir, torrent, 5);
}

TEST(InspectIntegration, ManySmallFiles) {
    TempDir dir("pw-inspect-");
    std::vector<std::pair<std::string, std::uint64_t>> files;
    for (int i = 0; i < 300; ++i) {
        files.emplace_back("dir" + std::to_string(i % 7) + "/file" + std::to_string(i) + ".dat",
                           static_cast<std::uint64_t>(i * 37 % 1000 + 1));
    }
    const std::string content = pw::test::make_payload_tree(dir.path(), "many", files, 3);
    const std::string torrent = pw::test::make_torrent(content, 32768, {}, dir / "many.torrent");
    expect_agrees_with_libtorrent(dir, torrent, 300);
}

TEST(InspectIntegration, OddNames) {
    TempDir dir("pw-inspect-");
    const std::string content = pw::test::make_payload_tree(
        dir.path(), "odd names \xc3\xa9t\xc3\xa9",
        {{"with space.txt", 10},
         {".hidden", 20},
         {".config/.dotted file", 30},
         {"\xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e/\xe3\x83\x95\xe3\x82\xa1\xe3\x82\xa4\xe3\x83\xab.txt", 40},
         {"quote\"and'apostrophe", 50},
         {"emoji \xf0\x9f\x98\x80.bin", 60},
         {"#hash%20percent", 70}},
        4);
    const std::string torrent =
        pw::test::make_torrent(content, 32768, two_tiers, dir / "odd.torrent");
    expect_agrees_with_libtorrent(dir, torrent, 7);
}

TEST(InspectIntegration, HumanSummaryNamesTheEssentials) {
    TempDir dir("pw-inspect-");
    const std::string payload = pw::test::make_payload(dir.path(), "file.bin", 65536, 5);
    const std::string torrent =
        pw::test::make_torrent(payload, 32768, two_tiers, dir / "file.torrent");
    std::string text;
    ASSERT_EQ(pw::test::run_command({pw::test::bin("piecework"), "inspect", torrent}, &text), 0)
        << text;
    EXPECT_NE(text.find("  Hash: " + pw::test::info_hash_hex(torrent)), std::string::npos) << text;
    EXPECT_NE(text.find("Total Size: 64.00 KiB (65536 bytes)"), std::string::npos) << text;
    EXPECT_NE(text.find("Piece Count: 2"), std::string::npos) << text;
    EXPECT_NE(text.find("Tier #2\n  http://127.0.0.1:7070/announce"), std::string::npos) << text;
}

TEST(InspectIntegration, BadTorrentIsOneLineAndExitOne) {
    const std::string bad = std::string(PW_TEST_DATA_DIR) + "/bad_torrents/pieces_count_too_small.torrent";
    std::string output;
    EXPECT_EQ(pw::test::run_command({pw::test::bin("piecework"), "inspect", bad}, &output), 1);
    EXPECT_EQ(output, "piecework: cannot read " + bad + ": pieces has 2 hashes, expected 3 for 40000 bytes\n");
}

}  // namespace
