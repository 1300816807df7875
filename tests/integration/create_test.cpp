// `piecework create` against Debian's mktorrent: for the same content, piece size and flags
// the info-hash must be mktorrent's; `piecework inspect --json` and libtorrent must read the
// result alike; the symlink policy and the errors behave as `create --help` says.
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>
#include <utility>
#include <vector>

#include "core/metainfo.hpp"
#include "tests/integration/harness.hpp"

namespace {

namespace fs = std::filesystem;
using pw::test::TempDir;

struct Outcome {
    int code = -1;
    std::string output;  // stdout and stderr together
};

Outcome piecework(std::vector<std::string> args) {
    args.insert(args.begin(), pw::test::bin("piecework"));
    Outcome outcome;
    outcome.code = pw::test::run_command(args, &outcome.output);
    return outcome;
}

// The info-hash `piecework create` printed.
std::string printed_hash(const std::string& output) {
    const auto at = output.find("info-hash ");
    return at == std::string::npos ? std::string() : output.substr(at + 10, 40);
}

struct Flags {
    std::vector<std::string> trackers;
    std::vector<std::string> web_seeds;
    bool is_private = false;
    std::string comment;
};

// Makes the same torrent with both tools (no date, so the runs are reproducible); returns
// {piecework's .torrent, mktorrent's .torrent}.
std::pair<std::string, std::string> make_both(const TempDir& dir, const std::string& content,
                                              std::uint32_t piece_bytes, const Flags& flags = {}) {
    int log2 = 0;
    while ((1u << log2) < piece_bytes) ++log2;
    const std::string ours = dir / "piecework.torrent";
    const std::string theirs = dir / "mktorrent.torrent";
    std::vector<std::string> pw_args = {"create", content, "-o", ours, "--no-date", "--force",
                                        "--piece-size", std::to_string(piece_bytes)};
    std::vector<std::string> mk_args = {"mktorrent", "-d", "-l", std::to_string(log2), "-o", theirs};
    for (const auto& url : flags.trackers) {
        pw_args.insert(pw_args.end(), {"-t", url});
        mk_args.insert(mk_args.end(), {"-a", url});
    }
    for (const auto& url : flags.web_seeds) {
        pw_args.insert(pw_args.end(), {"--web-seed", url});
        mk_args.insert(mk_args.end(), {"-w", url});
    }
    if (flags.is_private) {
        pw_args.push_back("--private");
        mk_args.push_back("-p");
    }
    if (!flags.comment.empty()) {
        pw_args.insert(pw_args.end(), {"--comment", flags.comment});
        mk_args.insert(mk_args.end(), {"-c", flags.comment});
    }
    mk_args.push_back(content);

    const Outcome made = piecework(pw_args);
    EXPECT_EQ(made.code, 0) << made.output;
    std::error_code ignored;
    fs::remove(theirs, ignored);  // mktorrent refuses to overwrite
    std::string mk_output;
    EXPECT_EQ(pw::test::run_command(mk_args, &mk_output), 0) << mk_output;
    if (made.code == 0) {
        EXPECT_EQ(printed_hash(made.output), pw::test::info_hash_hex(ours)) << made.output;
    }
    return {ours, theirs};
}

pw::Torrent load(const std::string& path) {
    auto torrent = pw::read_torrent_file(path);
    if (!torrent) throw std::runtime_error(path + ": " + torrent.error().describe());
    return std::move(torrent).value();
}

// Compares piecework's JSON (argv[1]) with libtorrent's view of the torrent (argv[2]): name,
// info-hash, sizes, piece geometry, files in order, trackers by tier and web seeds. Prints OK
// or both views.
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
    "trackers": [tiers[t] for t in sorted(tiers)],
    "files": [[fs.file_path(i), fs.file_size(i), fs.file_offset(i)] for i in range(fs.num_files())],
}
mine = {k: ours[k] for k in theirs if k != "files"}
mine["files"] = [[f["path"], f["length"], f["offset"]] for f in ours["files"]]
if mine != theirs:
    print("MISMATCH\nours:   " + json.dumps(mine, ensure_ascii=False) +
          "\ntheirs: " + json.dumps(theirs, ensure_ascii=False))
    sys.exit(1)
seeds = [s["url"] for s in ti.web_seeds()]
print("OK %d files, web seeds %s" % (len(mine["files"]), ",".join(seeds)))
)PY";

// piecework inspect --json and libtorrent agree on the torrent; returns libtorrent's verdict.
std::string compare_with_libtorrent(const TempDir& dir, const std::string& torrent) {
    const Outcome inspected = piecework({"inspect", "--json", torrent});
    EXPECT_EQ(inspected.code, 0) << inspected.output;
    const std::string json_path = dir / "inspect.json";
    std::ofstream(json_path, std::ios::binary) << inspected.output;
    std::string verdict;
    const int code = pw::test::run_command(
        {"/usr/bin/python3", "-c", compare_script, json_path, torrent}, &verdict);
    EXPECT_EQ(code, 0) << verdict;
    return verdict;
}

std::vector<std::string> file_paths(const pw::Torrent& torrent) {
    std::vector<std::string> paths;
    for (const auto& file : torrent.files()) paths.push_back(file.path);
    return paths;
}

// One line, "piecework create: ...", and a non-zero exit.
void expect_one_line_error(const Outcome& outcome, const std::string& wanted) {
    EXPECT_NE(outcome.code, 0) << outcome.output;
    EXPECT_EQ(outcome.output.rfind("piecework create: ", 0), 0u) << outcome.output;
    EXPECT_EQ(std::count(outcome.output.begin(), outcome.output.end(), '\n'), 1) << outcome.output;
    EXPECT_NE(outcome.output.find(wanted), std::string::npos) << outcome.output;
}

TEST(CreateIntegration, SingleFileMatchesMktorrent) {
    TempDir dir("pw-create-");
    const std::string payload = pw::test::make_payload(dir.path(), "payload.bin", 1'000'003, 1);
    Flags flags;
    flags.trackers = {"http://127.0.0.1:6969/announce", "udp://127.0.0.1:6969/announce"};
    flags.web_seeds = {"http://127.0.0.1:8080/payload.bin"};
    flags.is_private = true;
    flags.comment = "made by the create test";
    for (const std::uint32_t piece : {32768u, 262144u}) {
        const auto [ours, theirs] = make_both(dir, payload, piece, flags);
        EXPECT_EQ(pw::test::info_hash_hex(ours), pw::test::info_hash_hex(theirs)) << piece;
        const pw::Torrent torrent = load(ours);
        // Both write the same root apart from "created by".
        const pw::Torrent reference = load(theirs);
        EXPECT_EQ(torrent.trackers(), reference.trackers());
        EXPECT_EQ(torrent.comment(), reference.comment());
        EXPECT_EQ(torrent.creation_date(), 0);
        EXPECT_FALSE(torrent.is_multi_file());
        EXPECT_TRUE(torrent.is_private());
        EXPECT_EQ(compare_with_libtorrent(dir, ours),
                  "OK 1 files, web seeds http://127.0.0.1:8080/payload.bin\n");
    }
}

// Byte order of the whole path, as mktorrent sorts: "B" before "a" (a locale sorts them the
// other way), "a.txt" before the folder "a" before "a0"; hidden files and empty files kept,
// empty folders left out.
const std::vector<std::pair<std::string, std::uint64_t>> tree_files = {
    {"a/b/c/deep.bin", 70'000},
    {"a/mid.bin", 40'000},
    {"a.txt", 100},
    {"a0", 33'000},
    {"a-b", 1},
    {"B.txt", 5},
    {"Zeta", 17'000},
    {"alpha", 12'345},
    {"_under", 9},
    {".hidden", 20},
    {".config/.dotted file", 30},
    {"empty.dat", 0},
    {"\xc3\xa9t\xc3\xa9/\xc3\xa9l\xc3\xa8ve.txt", 2'000},
    {"z/last.txt", 65'536},
};

TEST(CreateIntegration, FolderTreeMatchesMktorrent) {
    TempDir dir("pw-create-");
    const std::string content = pw::test::make_payload_tree(dir.path(), "tree", tree_files, 2);
    fs::create_directories(content + "/empty folder/inside");
    const auto [ours, theirs] =
        make_both(dir, content, 32768, Flags{{"http://127.0.0.1:6969/announce"}, {}, false, ""});
    EXPECT_EQ(pw::test::info_hash_hex(ours), pw::test::info_hash_hex(theirs));
    const pw::Torrent torrent = load(ours);
    EXPECT_EQ(file_paths(torrent),
              (std::vector<std::string>{".config/.dotted file", ".hidden", "B.txt", "Zeta", "_under",
                                        "a-b", "a.txt", "a/b/c/deep.bin", "a/mid.bin", "a0", "alpha",
                                        "empty.dat", "z/last.txt",
                                        "\xc3\xa9t\xc3\xa9/\xc3\xa9l\xc3\xa8ve.txt"}));
    EXPECT_EQ(compare_with_libtorrent(dir, ours), "OK 14 files, web seeds \n");
}

TEST(CreateIntegration, ManySmallFilesAcrossPiecesMatchMktorrent) {
    TempDir dir("pw-create-");
    std::vector<std::pair<std::string, std::uint64_t>> files;
    for (int i = 0; i < 300; ++i) {
        files.emplace_back("dir" + std::to_string(i % 7) + "/file" + std::to_string(i) + ".dat",
                           static_cast<std::uint64_t>(i * 7919 % 20'000));
    }
    const std::string content = pw::test::make_payload_tree(dir.path(), "many", files, 3);
    const auto [ours, theirs] = make_both(dir, content, 32768, Flags{{"http://t/announce"}, {}, false, ""});
    EXPECT_EQ(pw::test::info_hash_hex(ours), pw::test::info_hash_hex(theirs));
    EXPECT_EQ(compare_with_libtorrent(dir, ours), "OK 300 files, web seeds \n");
}

TEST(CreateIntegration, PieceSizeIsChosenFromTheTotalSize) {
    TempDir dir("pw-create-");
    // 40 MiB: 16 KiB would make 2560 pieces, so 32 KiB (1280 pieces).
    const std::string payload = pw::test::make_payload(dir.path(), "forty.bin", 40ull << 20, 4);
    const std::string ours = dir / "chosen.torrent";
    const Outcome made = piecework({"create", payload, "-o", ours, "-t", "http://t/announce"});
    ASSERT_EQ(made.code, 0) << made.output;
    EXPECT_NE(made.output.find("1280 pieces of 32 KiB"), std::string::npos) << made.output;
    const pw::Torrent torrent = load(ours);
    EXPECT_EQ(torrent.piece_length(), 32768u);
    EXPECT_NE(torrent.creation_date(), 0);  // without --no-date
    EXPECT_EQ(torrent.created_by(), "piecework 0.1.0");
    const auto [again, theirs] = make_both(dir, payload, 32768, Flags{{"http://t/announce"}, {}, false, ""});
    EXPECT_EQ(pw::test::info_hash_hex(ours), pw::test::info_hash_hex(theirs));
}

TEST(CreateIntegration, SymlinksInsideAreFollowedAsMktorrentDoes) {
    TempDir dir("pw-create-");
    const std::string content = pw::test::make_payload_tree(
        dir.path(), "linked", {{"real/data.bin", 50'000}, {"top.txt", 300}}, 5);
    fs::create_symlink("real/data.bin", content + "/alias.bin");
    fs::create_directory_symlink("real", content + "/mirror");
    const auto [ours, theirs] = make_both(dir, content, 32768, Flags{{"http://t/announce"}, {}, false, ""});
    EXPECT_EQ(pw::test::info_hash_hex(ours), pw::test::info_hash_hex(theirs));
    EXPECT_EQ(file_paths(load(ours)),
              (std::vector<std::string>{"alias.bin", "mirror/data.bin", "real/data.bin", "top.txt"}));

    // PATH itself a symlink: followed, and the torrent is named after the link.
    fs::create_directory_symlink(content, dir / "via-link");
    const std::string via = dir / "via.torrent";
    const Outcome made = piecework({"create", dir / "via-link", "-o", via, "--piece-size", "32K", "--no-date", "-t", "http://t/announce"});
    ASSERT_EQ(made.code, 0) << made.output;
    EXPECT_EQ(load(via).name(), "via-link");
}

TEST(CreateIntegration, SymlinksOutsideDanglingOrLoopingAreRefused) {
    TempDir dir("pw-create-");
    const std::string outside = pw::test::make_payload(dir.path(), "outside.bin", 1000, 6);
    const std::string out = dir / "refused.torrent";
    const auto refused = [&](const std::string& name, const std::string& target,
                             const std::string& wanted) {
        const std::string content =
            pw::test::make_payload_tree(dir.path(), name, {{"sub/file.bin", 1000}}, 7);
        fs::create_symlink(target, content + "/sub/link");
        expect_one_line_error(piecework({"create", content, "-o", out}), content + "/sub/link: " + wanted);
        EXPECT_FALSE(fs::exists(out));
    };
    refused("out", outside, "a symlink to " + outside + ", outside the folder");
    refused("up", "../..", "a symlink to " + dir.path() + ", outside the folder");
    refused("loop", "..", "leads back into a folder that contains it (a loop)");
    refused("dangling", "nowhere", "a symlink to nothing");
}

TEST(CreateIntegration, ErrorsAreOneLineAndNonZero) {
    TempDir dir("pw-create-");
    const std::string payload = pw::test::make_payload(dir.path(), "file.bin", 100'000, 8);
    const std::string out = dir / "out.torrent";

    expect_one_line_error(piecework({"create", dir / "missing", "-o", out}),
                          dir / "missing: No such file or directory");
    fs::create_directories(dir / "empty/inner");
    expect_one_line_error(piecework({"create", dir / "empty", "-o", out}), "nothing to share");
    std::ofstream(dir / "zero.bin").close();
    expect_one_line_error(piecework({"create", dir / "zero.bin", "-o", out}), "empty (0 bytes)");
    expect_one_line_error(piecework({"create", payload, "-o", out, "--piece-size", "1000"}),
                          "piece size 1000 is not a power of two");
    expect_one_line_error(piecework({"create", payload, "-o", out, "--piece-size", "8K"}),
                          "piece size 8 KiB is outside 16 KiB to 64 MiB");
    expect_one_line_error(piecework({"create", payload, "-o", out, "--piece-size", "big"}),
                          "is not a number of bytes");
    expect_one_line_error(piecework({"create", payload, "-o", dir / "nowhere/out.torrent"}),
                          "No such file or directory");
    EXPECT_FALSE(fs::exists(out));

    // An existing output is kept unless --force.
    std::ofstream(out) << "keep me";
    expect_one_line_error(piecework({"create", payload, "-o", out}),
                          out + ": exists (--force replaces it)");
    std::string kept;
    std::getline(std::ifstream(out), kept);
    EXPECT_EQ(kept, "keep me");
    const Outcome forced = piecework({"create", payload, "-o", out, "--force"});
    ASSERT_EQ(forced.code, 0) << forced.output;
    EXPECT_EQ(load(out).total_size(), 100'000u);
    // No temporary file is left beside it.
    std::size_t entries = 0;
    for (const auto& entry : fs::directory_iterator(dir.path())) {
        ++entries;
        EXPECT_EQ(entry.path().filename().string().find(".out.torrent."), std::string::npos);
    }
    EXPECT_EQ(entries, 4u);  // file.bin, empty/, zero.bin, out.torrent
}

TEST(CreateIntegration, SummaryNamesTheOutputAndTheHash) {
    TempDir dir("pw-create-");
    const std::string content = pw::test::make_payload_tree(
        dir.path(), "folder", {{"one.bin", 40'000}, {"two/two.bin", 30'000}}, 9);
    const std::string out = dir / "folder.torrent";
    const Outcome made = piecework({"create", content, "-o", out, "--piece-size", "16K"});
    ASSERT_EQ(made.code, 0) << made.output;
    // Not a terminal: no progress line, just the summary and the hash.
    EXPECT_EQ(made.output, out + ": folder, 2 files, 68.36 KiB in 5 pieces of 16 KiB\ninfo-hash " +
                               pw::test::info_hash_hex(out) + "\n");
}

}  // namespace
