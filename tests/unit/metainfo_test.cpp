#include "core/metainfo.hpp"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <set>

namespace pw {
void PrintTo(const FileSpan& s, std::ostream* out) {
    *out << "{file " << s.file_index << " @" << s.file_offset << " +" << s.length << "}";
}
}  // namespace pw

namespace {

using pw::PieceIndex;
using pw::Torrent;
using pw::bencode::Dict;
using pw::bencode::List;
using pw::bencode::Value;

Value str(std::string s) { return Value(std::move(s)); }
Value num(std::int64_t n) { return Value(n); }

struct FileSpec {
    std::vector<std::string> path;
    std::int64_t length;
};

// A multi-file torrent with the right number of (fake) piece hashes.
std::string make_multi(const std::vector<FileSpec>& files, std::int64_t piece_length,
                       Dict extra_root = {}) {
    List file_list;
    std::int64_t total = 0;
    for (const auto& spec : files) {
        List path;
        for (const auto& element : spec.path) path.push_back(str(element));
        file_list.push_back(Value(Dict{{"length", num(spec.length)}, {"path", Value(path)}}));
        total += spec.length;
    }
    const auto count = static_cast<std::size_t>((total + piece_length - 1) / piece_length);
    std::string pieces;
    for (std::size_t i = 0; i < count; ++i) pieces += std::string(20, static_cast<char>('A' + i % 26));
    Dict info{{"files", Value(file_list)},
              {"name", str("root")},
              {"piece length", num(piece_length)},
              {"pieces", str(pieces)}};
    Dict root = std::move(extra_root);
    root.emplace_back("info", Value(info));
    return pw::bencode::encode(Value(root));
}

Torrent parse_ok(std::string_view bytes) {
    auto result = Torrent::parse(bytes);
    if (!result.ok()) {
        ADD_FAILURE() << result.error().describe();
        return *Torrent::parse(make_multi({{{"x"}, 1}}, 1));
    }
    return std::move(result).value();
}

std::string data_path(const std::string& name) {
    return std::string(PW_TEST_DATA_DIR) + "/bad_torrents/" + name + ".torrent";
}

std::vector<std::string> file_paths(const Torrent& t) {
    std::vector<std::string> out;
    for (const auto& file : t.files()) out.push_back(file.path);
    return out;
}

TEST(Metainfo, MultiFileOffsetsAndSpansAcrossBoundaries) {
    // total 18, piece length 4: five pieces, the last one 2 bytes.
    const Torrent t = parse_ok(make_multi({{{"a"}, 5}, {{"empty"}, 0}, {{"d", "b"}, 10}, {{"c"}, 3}}, 4));
    EXPECT_TRUE(t.is_multi_file());
    EXPECT_EQ(t.total_size(), 18u);
    EXPECT_EQ(t.piece_count(), 5u);
    EXPECT_EQ(t.piece_length(), 4u);
    EXPECT_EQ(t.piece_size(PieceIndex(0)), 4u);
    EXPECT_EQ(t.piece_size(PieceIndex(4)), 2u);
    EXPECT_EQ(t.piece_size(PieceIndex(5)), 0u);
    ASSERT_EQ(t.files().size(), 4u);
    EXPECT_EQ(t.files()[0].offset, 0u);
    EXPECT_EQ(t.files()[1].offset, 5u);
    EXPECT_EQ(t.files()[2].offset, 5u);
    EXPECT_EQ(t.files()[3].offset, 15u);
    EXPECT_EQ(t.files()[2].path, "d/b");
    EXPECT_EQ(t.relative_path(2), "root/d/b");
    EXPECT_EQ(t.piece_hash(PieceIndex(1))[0], 'B');

    using S = pw::FileSpan;
    EXPECT_THAT(t.map_piece(PieceIndex(0)), testing::ElementsAre(S{0, 0, 4}));
    // Crosses from "a" into "d/b", skipping the zero-length file between them.
    EXPECT_THAT(t.map_piece(PieceIndex(1)), testing::ElementsAre(S{0, 4, 1}, S{2, 0, 3}));
    EXPECT_THAT(t.map_piece(PieceIndex(3)), testing::ElementsAre(S{2, 7, 3}, S{3, 0, 1}));
    EXPECT_THAT(t.map_piece(PieceIndex(4)), testing::ElementsAre(S{3, 1, 2}));
    EXPECT_TRUE(t.map_piece(PieceIndex(5)).empty());
    EXPECT_THAT(t.map_range(0, 18), testing::ElementsAre(S{0, 0, 5}, S{2, 0, 10}, S{3, 0, 3}));
    EXPECT_THAT(t.map_range(5, 1), testing::ElementsAre(S{2, 0, 1}));
    // Out-of-range requests are clamped, never read past the end.
    EXPECT_THAT(t.map_range(17, 100), testing::ElementsAre(S{3, 2, 1}));
    EXPECT_TRUE(t.map_range(18, 1).empty());
}

TEST(Metainfo, ForgettingPieceHashesKeepsTheLayout) {
    const auto bytes = make_multi({{{"a"}, 5}, {{"d", "b"}, 10}}, 4);
    Torrent t = parse_ok(bytes);
    const auto hash = t.info_hash();
    const auto spans = t.map_piece(PieceIndex(1));
    ASSERT_TRUE(t.has_piece_hashes());
    t.forget_piece_hashes();
    EXPECT_FALSE(t.has_piece_hashes());
    EXPECT_TRUE(t.info_bytes().empty());
    EXPECT_EQ(t.info_hash(), hash);
    EXPECT_EQ(t.piece_count(), 4u);
    EXPECT_EQ(t.piece_size(PieceIndex(3)), 3u);
    EXPECT_EQ(t.map_piece(PieceIndex(1)), spans);
    EXPECT_EQ(t.relative_path(1), "root/d/b");
    // A stage that forgot them and still asks has a bug: it must not get a digest that fails
    // every piece.
    EXPECT_THROW((void)t.piece_hash(PieceIndex(0)), std::logic_error);

    auto never_kept = Torrent::parse(bytes, {}, pw::PieceHashes::forget);
    ASSERT_TRUE(never_kept.ok());
    EXPECT_FALSE(never_kept->has_piece_hashes());
    EXPECT_EQ(never_kept->info_hash(), hash);
    EXPECT_EQ(never_kept->map_piece(PieceIndex(1)), spans);
}

// What stages receive (and what BEP 9 fetches) is the info dictionary alone: parsed from it,
// a torrent has the same info-hash, layout and hashes as parsed from the whole .torrent.
TEST(Metainfo, TheInfoDictionaryAloneGivesTheSameTorrent) {
    const auto bytes = make_multi({{{"a"}, 5}, {{"d", "b"}, 10}}, 4, Dict{{"announce", str("http://t/a")}});
    const Torrent whole = parse_ok(bytes);
    auto alone = Torrent::parse_info(whole.info_bytes());
    ASSERT_TRUE(alone.ok()) << alone.error().describe();
    EXPECT_EQ(alone->info_hash(), whole.info_hash());
    EXPECT_EQ(alone->info_bytes(), whole.info_bytes());
    EXPECT_EQ(file_paths(*alone), file_paths(whole));
    EXPECT_EQ(alone->piece_count(), whole.piece_count());
    for (std::uint32_t i = 0; i < whole.piece_count(); ++i) {
        EXPECT_EQ(alone->piece_hash(PieceIndex(i)), whole.piece_hash(PieceIndex(i)));
    }
    EXPECT_TRUE(alone->trackers().empty());  // they live outside the info dictionary
    EXPECT_FALSE(Torrent::parse_info("le").ok());
    EXPECT_FALSE(Torrent::parse_info("d4:name1:xe").ok());
    EXPECT_FALSE(Torrent::parse_info(bytes).ok());  // a whole .torrent is not an info dictionary
}

TEST(Metainfo, SingleFile) {
    Dict info{{"length", num(100)},
              {"name", str("payload.bin")},
              {"piece length", num(64)},
              {"pieces", str(std::string(40, 'x'))},
              {"private", num(1)}};
    const std::string bytes = pw::bencode::encode(Value(Dict{
        {"announce", str("http://t/announce")},
        {"comment", str("hello")},
        {"created by", str("mktorrent")},
        {"creation date", num(1700000000)},
        {"info", Value(info)}}));
    const Torrent single = parse_ok(bytes);
    EXPECT_FALSE(single.is_multi_file());
    EXPECT_EQ(single.name(), "payload.bin");
    EXPECT_EQ(single.relative_path(0), "payload.bin");
    EXPECT_EQ(single.files()[0].path, "payload.bin");
    EXPECT_EQ(single.total_size(), 100u);
    EXPECT_EQ(single.piece_size(PieceIndex(1)), 36u);
    EXPECT_TRUE(single.is_private());
    EXPECT_EQ(single.comment(), "hello");
    EXPECT_EQ(single.created_by(), "mktorrent");
    EXPECT_EQ(single.creation_date(), 1700000000);
    EXPECT_THAT(single.trackers(), testing::ElementsAre(testing::ElementsAre("http://t/announce")));
    using S = pw::FileSpan;
    EXPECT_THAT(single.map_piece(PieceIndex(1)), testing::ElementsAre(S{0, 64, 36}));
}

TEST(Metainfo, InfoHashIsOfTheExactBytesNeverReencoded) {
    // Unsorted keys inside info: a re-encoding would sort them and change the hash.
    const std::string info = "d6:lengthi5e4:name1:x6:pieces20:aaaaaaaaaaaaaaaaaaaa12:piece lengthi16384ee";
    const std::string bytes = "d4:info" + info + "e";
    auto t = Torrent::parse(bytes);
    ASSERT_TRUE(t.ok()) << t.error().describe();
    EXPECT_EQ(t->info_bytes(), info);
    EXPECT_EQ(t->info_hash(), pw::sha1(info));
    auto decoded = pw::bencode::decode(info);
    ASSERT_TRUE(decoded.ok());
    EXPECT_NE(t->info_hash(), pw::sha1(pw::bencode::encode(decoded->value)));
    EXPECT_THAT(t->warnings(), testing::Contains(testing::HasSubstr("not sorted")));
}

TEST(Metainfo, AnnounceListWinsIsDedupedAndSkipsJunk) {
    Dict root{{"announce", str("http://lone/announce")},
              {"announce-list",
               Value(List{Value(List{str("http://a"), str("http://b"), num(3), str("http://a")}),
                          Value(List{str("http://b")}),  // duplicate only: tier dropped
                          str("not a tier"),
                          Value(List{str("udp://c")})})}};
    const Torrent t = parse_ok(make_multi({{{"f"}, 1}}, 16, root));
    EXPECT_THAT(t.trackers(), testing::ElementsAre(testing::ElementsAre("http://a", "http://b"),
                                                   testing::ElementsAre("udp://c")));

    Dict empty_list{{"announce", str("http://lone/announce")}, {"announce-list", Value(List{})}};
    EXPECT_THAT(parse_ok(make_multi({{{"f"}, 1}}, 16, empty_list)).trackers(),
                testing::ElementsAre(testing::ElementsAre("http://lone/announce")));
    EXPECT_TRUE(parse_ok(make_multi({{{"f"}, 1}}, 16)).trackers().empty());
}

TEST(Metainfo, PrefersUtf8Names) {
    Dict info{{"length", num(1)},
              {"name", str("latin")},
              {"name.utf-8", str("\xc3\xa9t\xc3\xa9")},
              {"piece length", num(16)},
              {"pieces", str(std::string(20, 'x'))}};
    const Torrent t = parse_ok(pw::bencode::encode(Value(Dict{{"info", Value(info)}})));
    EXPECT_EQ(t.name(), "\xc3\xa9t\xc3\xa9");
}

// Every crafted bad torrent and the error it must produce.
const std::map<std::string, std::string>& expected_errors() {
    static const std::map<std::string, std::string> table{
        {"piece_length_zero", "piece length 0 is not positive"},
        {"piece_length_negative", "piece length -16384 is not positive"},
        {"piece_length_too_large", "piece length 1073741824 above the limit"},
        {"piece_length_missing", "no piece length"},
        {"pieces_missing", "no pieces"},
        {"pieces_not_multiple_of_20", "pieces length 30 is not a multiple of 20"},
        {"pieces_count_too_small", "pieces has 2 hashes, expected 3"},
        {"pieces_count_too_large", "pieces has 2 hashes, expected 1"},
        {"length_negative", "file length -1 is negative"},
        {"file_length_negative", "file 1 length -5 is negative"},
        {"file_length_not_int", "file 1 length is not an integer"},
        {"file_too_large", "file 0 length 281474976710657 above the limit"},
        {"neither_length_nor_files", "neither length nor files"},
        {"both_length_and_files", "both length and files"},
        {"total_size_zero", "total size 0"},
        {"single_file_empty", "total size 0"},
        {"too_many_files", "too many files: 4"},  // with max_files = 3, below
        {"file_without_path", "file 0 has no path"},
        {"file_path_not_strings", "file 0 has a non-string path element"},
        {"file_not_a_dict", "file 1 is not a dictionary"},
        {"files_not_a_list", "files is not a list"},
        {"info_missing", "no info dictionary"},
        {"info_not_a_dict", "no info dictionary"},
        {"not_a_dict", "not a dictionary"},
        {"truncated", "truncated input"},
        {"trailing_garbage", "trailing bytes"},
        {"duplicate_keys", "duplicate dict key \"length\""},
        {"too_deep", "nesting deeper than 100"},
    };
    return table;
}

// Good torrents with hostile paths and what they must sanitize to.
const std::map<std::string, std::vector<std::string>>& expected_paths() {
    static const std::map<std::string, std::vector<std::string>> table{
        {"paths_traversal", {"etc/passwd", "etc/passwd.1", "a/b", "sub/up"}},
        {"paths_bad_characters", {"back_slash", "ctrl___chars", "nul_byte"}},
        {"paths_long_element", {std::string(251, 'x') + ".txt", std::string(255, 'y')}},
        {"paths_duplicates", {"file.txt", "file.1.txt", "file.2.txt", "file.1.1.txt"}},
        {"paths_prefix_conflict", {"a", "a.1/b", "c/d", "c.1"}},
        {"paths_empty", {"file", "file.1", "file.2"}},
        {"name_with_slash", {".._.._evil"}},
        {"padding_files", {"a", ".pad/384", "b", ".pad/384.1", "c"}},
        {"name_dotdot", {}},  // checked on its own below
    };
    return table;
}

TEST(MetainfoBadTorrents, EachFailsWithItsMessage) {
    for (const auto& [name, message] : expected_errors()) {
        pw::MetainfoLimits limits;
        if (name == "too_many_files") limits.max_files = 3;
        auto result = pw::read_torrent_file(data_path(name), limits);
        ASSERT_FALSE(result.ok()) << name << " was accepted";
        EXPECT_THAT(result.error().describe(), testing::HasSubstr(message)) << name;
    }
}

TEST(MetainfoBadTorrents, EveryFileInTheFolderIsCovered) {
    std::set<std::string> on_disk;
    for (const auto& entry :
         std::filesystem::directory_iterator(std::string(PW_TEST_DATA_DIR) + "/bad_torrents")) {
        if (entry.path().extension() == ".torrent") on_disk.insert(entry.path().stem().string());
    }
    std::set<std::string> covered;
    for (const auto& [name, unused] : expected_errors()) covered.insert(name);
    for (const auto& [name, unused] : expected_paths()) covered.insert(name);
    EXPECT_EQ(on_disk, covered);
}

TEST(MetainfoHostilePaths, SanitizeDeterministically) {
    for (const auto& [name, paths] : expected_paths()) {
        if (name == "name_dotdot") continue;
        auto result = pw::read_torrent_file(data_path(name));
        ASSERT_TRUE(result.ok()) << name << ": " << result.error().describe();
        EXPECT_THAT(file_paths(*result), testing::ElementsAreArray(paths)) << name;
        for (std::size_t i = 0; i < result->files().size(); ++i) {
            const std::filesystem::path rel(result->relative_path(i));
            EXPECT_TRUE(rel.is_relative());
            for (const auto& element : rel) {
                EXPECT_NE(element, "..");
                EXPECT_NE(element, ".");
            }
        }
    }
}

TEST(MetainfoHostilePaths, RenamesAreWarned) {
    auto result = pw::read_torrent_file(data_path("paths_duplicates"));
    ASSERT_TRUE(result.ok());
    EXPECT_THAT(result->warnings(),
                testing::Contains(testing::HasSubstr("\"file.txt\" renamed to \"file.1.txt\"")));
    auto pads = pw::read_torrent_file(data_path("padding_files"));
    ASSERT_TRUE(pads.ok());
    EXPECT_TRUE(pads->warnings().empty());
    EXPECT_TRUE(pads->files()[1].pad);
    EXPECT_TRUE(pads->files()[3].pad);
    EXPECT_FALSE(pads->files()[2].pad);
    EXPECT_EQ(pads->files()[2].offset, 16384u);
}

TEST(MetainfoHostilePaths, RenamedFolderIsSharedBySiblings) {
    const Torrent t = parse_ok(make_multi(
        {{{"a"}, 1}, {{"a", "x"}, 1}, {{"a", "y"}, 1}, {{"a.1"}, 1}, {{"a", "x"}, 1}}, 16));
    EXPECT_THAT(file_paths(t), testing::ElementsAre("a", "a.1/x", "a.1/y", "a.1.1", "a.1/x.1"));
}

TEST(MetainfoHostilePaths, ManyIdenticalNamesStayLinearAndWarningsBounded) {
    std::vector<FileSpec> files(100'000, FileSpec{{"same.txt"}, 1});
    const Torrent t = parse_ok(make_multi(files, 1 << 20));
    ASSERT_EQ(t.files().size(), 100'000u);
    EXPECT_EQ(t.files()[0].path, "same.txt");
    EXPECT_EQ(t.files()[1].path, "same.1.txt");
    EXPECT_EQ(t.files()[99'999].path, "same.99999.txt");
    std::set<std::string> unique;
    for (const auto& file : t.files()) unique.insert(file.path);
    EXPECT_EQ(unique.size(), 100'000u);
    ASSERT_EQ(t.warnings().size(), 101u);
    EXPECT_EQ(t.warnings().back(), "and 99899 more file paths renamed");
}

TEST(MetainfoHostilePaths, UnusableNameFallsBackToInfoHash) {
    auto result = pw::read_torrent_file(data_path("name_dotdot"));
    ASSERT_TRUE(result.ok());
    EXPECT_EQ(result->name(), pw::to_hex(result->info_hash()));
    EXPECT_EQ(result->relative_path(0), result->name());
    EXPECT_FALSE(result->warnings().empty());
}

TEST(SanitizePathElement, Rules) {
    EXPECT_EQ(pw::sanitize_path_element(""), "");
    EXPECT_EQ(pw::sanitize_path_element("."), "");
    EXPECT_EQ(pw::sanitize_path_element(".."), "");
    EXPECT_EQ(pw::sanitize_path_element("..."), "...");
    EXPECT_EQ(pw::sanitize_path_element(".hidden"), ".hidden");
    EXPECT_EQ(pw::sanitize_path_element("a/b\\c"), "a_b_c");
    EXPECT_EQ(pw::sanitize_path_element(std::string_view("a\0b\n", 4)), "a_b_");
    EXPECT_EQ(pw::sanitize_path_element("with space \xc3\xa9"), "with space \xc3\xa9");
    EXPECT_EQ(pw::sanitize_path_element("abcdefgh.txt", 8), "abcd.txt");
    // No extension worth keeping: plain cut.
    EXPECT_EQ(pw::sanitize_path_element("abcdefghij", 4), "abcd");
    // A two-byte UTF-8 character is not split.
    EXPECT_EQ(pw::sanitize_path_element("ab\xc3\xa9zz", 3), "ab");
}

TEST(ReadTorrentFile, RefusesHugeAndMissingFiles) {
    char dir_template[] = "/tmp/pw-metainfo-XXXXXX";
    ASSERT_NE(mkdtemp(dir_template), nullptr);
    const std::filesystem::path dir(dir_template);
    const auto huge = dir / "huge.torrent";
    { std::ofstream(huge).put('d'); }
    std::filesystem::resize_file(huge, (64ull << 20) + 1);  // sparse: costs no disk
    auto result = pw::read_torrent_file(huge.string());
    ASSERT_FALSE(result.ok());
    EXPECT_THAT(result.error().message, testing::HasSubstr("above the limit"));
    auto missing = pw::read_torrent_file((dir / "missing.torrent").string());
    ASSERT_FALSE(missing.ok());
    EXPECT_THAT(missing.error().message, testing::HasSubstr("No such file"));
    auto folder = pw::read_torrent_file(dir.string());
    ASSERT_FALSE(folder.ok());
    const auto fifo = dir / "fifo.torrent";
    ASSERT_EQ(mkfifo(fifo.c_str(), 0600), 0);
    auto from_fifo = pw::read_torrent_file(fifo.string());
    ASSERT_FALSE(from_fifo.ok());
    EXPECT_THAT(from_fifo.error().message, testing::HasSubstr("not a regular file"));
    std::filesystem::remove_all(dir);
}

}  // namespace
