#include "core/torrent_builder.hpp"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <memory>
#include <string>
#include <vector>

#include "core/bencode.hpp"
#include "core/metainfo.hpp"
#include "core/sha1.hpp"

namespace {

using pw::NewFile;
using pw::NewTorrent;
using pw::bencode::Value;
using testing::ElementsAre;
using testing::HasSubstr;

// Content of `size` bytes that differs from file to file and piece to piece.
std::string content_of(std::uint64_t size, char seed) {
    std::string bytes(size, '\0');
    for (std::uint64_t i = 0; i < size; ++i) bytes[i] = static_cast<char>(seed + i * 31 % 251);
    return bytes;
}

std::string hashes_of(const std::string& stream, std::uint32_t piece_length) {
    std::string hashes;
    for (std::size_t begin = 0; begin < stream.size(); begin += piece_length) {
        const pw::Sha1Digest digest = pw::sha1(std::string_view(stream).substr(begin, piece_length));
        hashes.append(reinterpret_cast<const char*>(digest.data()), digest.size());
    }
    return hashes;
}

NewTorrent single(std::uint64_t size = 40'000, std::uint32_t piece_length = 16384) {
    NewTorrent t;
    t.name = "file.bin";
    t.single_file = true;
    t.files = {NewFile{{}, size}};
    t.piece_length = piece_length;
    t.piece_hashes = hashes_of(content_of(size, 'a'), piece_length);
    return t;
}

NewTorrent folder() {
    NewTorrent t;
    t.name = "folder";
    t.files = {NewFile{{"a", "b.txt"}, 20'000}, NewFile{{"empty"}, 0}, NewFile{{"z"}, 30'000}};
    t.piece_length = 16384;
    t.piece_hashes = hashes_of(content_of(50'000, 'x'), t.piece_length);
    return t;
}

// A decoded value's strings point into its input: keep the two together.
struct Bencoded {
    std::unique_ptr<const std::string> bytes;
    Value root;
    const Value* find(std::string_view key) const { return root.find(key); }
};

Bencoded decode(std::string bytes) {
    Bencoded out{std::make_unique<const std::string>(std::move(bytes)), Value()};
    auto decoded = pw::bencode::decode(*out.bytes, {100, false});
    EXPECT_TRUE(decoded.ok()) << decoded.error().describe();
    if (decoded.ok()) {
        EXPECT_TRUE(decoded->warnings.empty());
        out.root = decoded->value;
    }
    return out;
}

std::vector<std::string> keys(const Value& dict) {
    std::vector<std::string> out;
    for (const auto& [key, value] : dict.as_dict()) out.push_back(key);
    return out;
}

std::vector<std::string> keys(const Bencoded& dict) { return keys(dict.root); }

std::string built(const NewTorrent& t) {
    auto bytes = pw::build_torrent(t);
    EXPECT_TRUE(bytes.ok()) << bytes.error().describe();
    return bytes.ok() ? *bytes : std::string();
}

pw::Torrent parsed(const std::string& bytes) {
    auto torrent = pw::Torrent::parse(bytes);
    if (!torrent.ok()) throw std::runtime_error(torrent.error().describe());
    return std::move(torrent).value();
}

std::string build_error(const NewTorrent& t) {
    auto bytes = pw::build_torrent(t);
    EXPECT_FALSE(bytes.ok());
    return bytes.ok() ? std::string() : bytes.error().describe();
}

TEST(TorrentBuilder, SingleFileHasLengthAndNothingElseInInfo) {
    const Bencoded root = decode(built(single()));
    EXPECT_THAT(keys(root), ElementsAre("info"));
    const Value& info = *root.find("info");
    EXPECT_THAT(keys(info), ElementsAre("length", "name", "piece length", "pieces"));
    EXPECT_EQ(info.find("length")->as_int(), 40'000);
    EXPECT_EQ(info.find("name")->as_string(), "file.bin");
    EXPECT_EQ(info.find("piece length")->as_int(), 16384);
    EXPECT_EQ(info.find("pieces")->as_string().size(), 3u * 20);
}

TEST(TorrentBuilder, FolderListsFilesWithPathListsInTheOrderGiven) {
    const Bencoded root = decode(built(folder()));
    const Value& info = *root.find("info");
    EXPECT_THAT(keys(info), ElementsAre("files", "name", "piece length", "pieces"));
    const auto& files = info.find("files")->as_list();
    ASSERT_EQ(files.size(), 3u);
    EXPECT_THAT(keys(files[0]), ElementsAre("length", "path"));
    EXPECT_EQ(files[0].find("path")->as_list().size(), 2u);
    EXPECT_EQ(files[0].find("path")->as_list()[1].as_string(), "b.txt");
    EXPECT_EQ(files[1].find("length")->as_int(), 0);  // zero-length files stay, as in mktorrent
    EXPECT_EQ(files[2].find("path")->as_list()[0].as_string(), "z");
}

// The exact bytes mktorrent 1.1 writes for this info dictionary: keys sorted, nothing extra.
TEST(TorrentBuilder, InfoBytesAreMktorrents) {
    NewTorrent t;
    t.name = "root";
    t.files = {NewFile{{"a", "b"}, 2}, NewFile{{"c"}, 1}};
    t.piece_length = 32768;
    t.piece_hashes = std::string(20, 'H');
    t.is_private = true;
    const pw::Torrent torrent = parsed(built(t));
    EXPECT_EQ(torrent.info_bytes(),
              "d5:filesld6:lengthi2e4:pathl1:a1:bee" "d6:lengthi1e4:pathl1:cee" "e"
              "4:name4:root12:piece lengthi32768e6:pieces20:" + std::string(20, 'H') +
                  "7:privatei1ee");
}

TEST(TorrentBuilder, RoundTripThroughTheParserKeepsFilesSizesAndHashes) {
    NewTorrent t = folder();
    t.trackers = {{"http://a.example/announce"}, {"udp://b.example:6969"}};
    t.comment = "a comment";
    t.created_by = "piecework 0.1.0";
    t.creation_date = 1'700'000'000;
    const pw::Torrent torrent = parsed(built(t));
    EXPECT_EQ(torrent.name(), "folder");
    EXPECT_TRUE(torrent.is_multi_file());
    EXPECT_TRUE(torrent.warnings().empty());
    ASSERT_EQ(torrent.files().size(), 3u);
    EXPECT_EQ(torrent.files()[0].path, "a/b.txt");
    EXPECT_EQ(torrent.files()[0].length, 20'000u);
    EXPECT_EQ(torrent.files()[1].path, "empty");
    EXPECT_EQ(torrent.files()[2].path, "z");
    EXPECT_EQ(torrent.files()[2].offset, 20'000u);
    EXPECT_EQ(torrent.total_size(), 50'000u);
    EXPECT_EQ(torrent.piece_length(), 16384u);
    ASSERT_EQ(torrent.piece_count(), 4u);
    for (std::uint32_t i = 0; i < 4; ++i) {
        const pw::Sha1Digest digest = torrent.piece_hash(pw::PieceIndex{i});
        EXPECT_EQ(std::string(reinterpret_cast<const char*>(digest.data()), 20),
                  t.piece_hashes.substr(i * 20, 20));
    }
    EXPECT_THAT(torrent.trackers(), ElementsAre(ElementsAre("http://a.example/announce"),
                                                ElementsAre("udp://b.example:6969")));
    EXPECT_EQ(torrent.comment(), "a comment");
    EXPECT_EQ(torrent.created_by(), "piecework 0.1.0");
    EXPECT_EQ(torrent.creation_date(), 1'700'000'000);
    EXPECT_FALSE(torrent.is_private());

    const pw::Torrent one = parsed(built(single()));
    EXPECT_FALSE(one.is_multi_file());
    EXPECT_EQ(one.total_size(), 40'000u);
    EXPECT_EQ(one.files()[0].path, "file.bin");
}

TEST(TorrentBuilder, OneTrackerIsAnnounceOnly) {
    NewTorrent t = single();
    t.trackers = {{"http://tracker.example/announce"}};
    const Bencoded root = decode(built(t));
    EXPECT_EQ(root.find("announce")->as_string(), "http://tracker.example/announce");
    EXPECT_EQ(root.find("announce-list"), nullptr);
}

TEST(TorrentBuilder, SeveralTrackersAreAnnounceAndAnnounceList) {
    NewTorrent t = single();
    t.trackers = {{"http://one/announce"}, {"http://two/announce", "udp://three:80"}};
    const Bencoded root = decode(built(t));
    EXPECT_EQ(root.find("announce")->as_string(), "http://one/announce");
    const auto& tiers = root.find("announce-list")->as_list();
    ASSERT_EQ(tiers.size(), 2u);
    ASSERT_EQ(tiers[0].as_list().size(), 1u);
    EXPECT_EQ(tiers[0].as_list()[0].as_string(), "http://one/announce");
    ASSERT_EQ(tiers[1].as_list().size(), 2u);
    EXPECT_EQ(tiers[1].as_list()[1].as_string(), "udp://three:80");
}

TEST(TorrentBuilder, NoTrackersNoAnnounce) {
    const Bencoded root = decode(built(single()));
    EXPECT_EQ(root.find("announce"), nullptr);
    EXPECT_EQ(root.find("announce-list"), nullptr);
}

TEST(TorrentBuilder, UrlListIsAStringForOneWebSeedAndAListForSeveral) {
    NewTorrent t = single();
    t.web_seeds = {"http://seed.example/file.bin"};
    EXPECT_EQ(decode(built(t)).find("url-list")->as_string(), "http://seed.example/file.bin");
    t.web_seeds.push_back("https://mirror.example/file.bin");
    const Bencoded root = decode(built(t));
    ASSERT_TRUE(root.find("url-list")->is_list());
    EXPECT_EQ(root.find("url-list")->as_list()[1].as_string(), "https://mirror.example/file.bin");
    // Web seeds stay out of the info dictionary: they do not change the info-hash.
    EXPECT_EQ(parsed(built(t)).info_hash(), parsed(built(single())).info_hash());
}

TEST(TorrentBuilder, PrivateOnlyWhenSet) {
    NewTorrent t = single();
    EXPECT_EQ(decode(built(t)).find("info")->find("private"), nullptr);
    t.is_private = true;
    EXPECT_EQ(decode(built(t)).find("info")->find("private")->as_int(), 1);
    EXPECT_TRUE(parsed(built(t)).is_private());
    EXPECT_NE(parsed(built(t)).info_hash(), parsed(built(single())).info_hash());
}

TEST(TorrentBuilder, DateCommentAndCreatorOnlyWhenGiven) {
    NewTorrent t = single();
    Bencoded root = decode(built(t));
    EXPECT_EQ(root.find("creation date"), nullptr);
    EXPECT_EQ(root.find("comment"), nullptr);
    EXPECT_EQ(root.find("created by"), nullptr);
    t.creation_date = 1234;
    t.comment = "hello";
    t.created_by = "piecework 0.1.0";
    root = decode(built(t));
    EXPECT_EQ(root.find("creation date")->as_int(), 1234);
    EXPECT_EQ(root.find("comment")->as_string(), "hello");
    EXPECT_EQ(root.find("created by")->as_string(), "piecework 0.1.0");
    // None of them is in the info dictionary.
    EXPECT_EQ(parsed(built(t)).info_hash(), parsed(built(single())).info_hash());
}

TEST(TorrentBuilder, RefusesWhatAReaderWouldRefuseOrMisread) {
    NewTorrent t = single();
    t.name = "";
    EXPECT_THAT(build_error(t), HasSubstr("torrent name is empty"));
    t.name = "..";
    EXPECT_THAT(build_error(t), HasSubstr("is not a name"));
    t.name = "a/b";
    EXPECT_THAT(build_error(t), HasSubstr("'/'"));

    t = single();
    t.files.front().path = {"x"};
    EXPECT_THAT(build_error(t), HasSubstr("single-file"));
    t = single();
    t.files.push_back(NewFile{{}, 1});
    EXPECT_THAT(build_error(t), HasSubstr("single-file"));

    t = folder();
    t.files.clear();
    EXPECT_EQ(build_error(t), "no files");
    t = folder();
    t.files[1].path = {"a", "b.txt"};
    EXPECT_THAT(build_error(t), HasSubstr("two files at \"a/b.txt\""));
    t = folder();
    t.files[1].path = {"a"};
    EXPECT_THAT(build_error(t), HasSubstr("\"a\" is both a file and a folder"));
    t = folder();
    t.files[1].path = {"x", "."};
    EXPECT_THAT(build_error(t), HasSubstr("is not a name"));
    t = folder();
    t.files[1].path = {};
    EXPECT_THAT(build_error(t), HasSubstr("no path"));

    t = single(0);
    t.piece_hashes.clear();
    EXPECT_THAT(build_error(t), HasSubstr("nothing to share"));
    t = single();
    t.piece_hashes.resize(40);
    EXPECT_THAT(build_error(t), HasSubstr("40 bytes of piece hashes, expected 60"));
    t = single();
    t.piece_length = 24576;
    EXPECT_THAT(build_error(t), HasSubstr("not a power of two"));
    t = single();
    t.piece_length = 8192;
    EXPECT_THAT(build_error(t), HasSubstr("outside 16 KiB to 64 MiB"));

    t = single();
    t.trackers = {{}};
    EXPECT_EQ(build_error(t), "empty tracker tier");
    t.trackers = {{""}};
    EXPECT_EQ(build_error(t), "empty tracker URL");
    t = single();
    t.web_seeds = {""};
    EXPECT_EQ(build_error(t), "empty web seed URL");
}

TEST(TorrentBuilder, SortsLikeMktorrentByWholePathBytes) {
    // The order mktorrent 1.1 wrote for these very paths.
    std::vector<NewFile> files;
    for (const auto& path : std::vector<std::vector<std::string>>{
             {"zero"}, {"link"}, {"a0"}, {"a", "b", "c"}, {"a.txt"}, {"a-b"}, {"B"}, {".hid", ".dot"}}) {
        files.push_back(NewFile{path, 1});
    }
    pw::sort_like_mktorrent(files);
    std::vector<std::string> order;
    for (const auto& file : files) {
        std::string joined;
        for (const auto& element : file.path) joined += (joined.empty() ? "" : "/") + element;
        order.push_back(joined);
    }
    EXPECT_THAT(order, ElementsAre(".hid/.dot", "B", "a-b", "a.txt", "a/b/c", "a0", "link", "zero"));
    // Bytes above 0x7f sort after ASCII, as unsigned bytes.
    files = {NewFile{{"\xc3\xa9t\xc3\xa9"}, 1}, NewFile{{"z"}, 1}};
    pw::sort_like_mktorrent(files);
    EXPECT_EQ(files[0].path[0], "z");
}

TEST(TorrentBuilder, ChoosesAPowerOfTwoForAtMost2048Pieces) {
    EXPECT_EQ(pw::choose_piece_length(0), 16384u);
    EXPECT_EQ(pw::choose_piece_length(1), 16384u);
    EXPECT_EQ(pw::choose_piece_length(32ull << 20), 16384u);             // 2048 pieces
    EXPECT_EQ(pw::choose_piece_length((32ull << 20) + 1), 32768u);       // 1025 pieces
    EXPECT_EQ(pw::choose_piece_length(700ull << 20), 512u << 10);        // 1400 pieces
    EXPECT_EQ(pw::choose_piece_length(1ull << 30), 512u << 10);          // 2048 pieces
    EXPECT_EQ(pw::choose_piece_length(4ull << 30), 2u << 20);
    EXPECT_EQ(pw::choose_piece_length(32ull << 30), 16u << 20);          // 2048 pieces
    EXPECT_EQ(pw::choose_piece_length(1ull << 40), 16u << 20);           // capped: 65536 pieces
    for (std::uint64_t size = 1; size < (1ull << 42); size = size * 3 + 7) {
        const std::uint32_t length = pw::choose_piece_length(size);
        EXPECT_TRUE(pw::check_piece_length(length).ok()) << size;
        const std::uint64_t pieces = (size + length - 1) / length;
        if (length < pw::kMaxChosenPieceLength) {
            EXPECT_LE(pieces, 2048u) << size;
        }
        if (length > pw::kMinPieceLength) {
            EXPECT_GT(pieces, 1024u) << size;
        }
    }
}

TEST(TorrentBuilder, ParsesPieceSizesWithBinarySuffixes) {
    const auto ok = [](std::string_view text) {
        auto parsed_size = pw::parse_piece_size(text);
        EXPECT_TRUE(parsed_size.ok()) << text << ": " << parsed_size.error().describe();
        return parsed_size.ok() ? *parsed_size : 0u;
    };
    EXPECT_EQ(ok("16384"), 16384u);
    EXPECT_EQ(ok("16K"), 16384u);
    EXPECT_EQ(ok("256k"), 256u << 10);
    EXPECT_EQ(ok("256KiB"), 256u << 10);
    EXPECT_EQ(ok("1M"), 1u << 20);
    EXPECT_EQ(ok("1mb"), 1u << 20);
    EXPECT_EQ(ok("1MiB"), 1u << 20);
    EXPECT_EQ(ok("64M"), 64u << 20);
    EXPECT_EQ(ok("32768B"), 32768u);

    const auto error = [](std::string_view text) {
        auto parsed_size = pw::parse_piece_size(text);
        EXPECT_FALSE(parsed_size.ok()) << text;
        return parsed_size.ok() ? std::string() : parsed_size.error().describe();
    };
    EXPECT_THAT(error("8K"), HasSubstr("8 KiB is outside 16 KiB to 64 MiB"));
    EXPECT_THAT(error("128M"), HasSubstr("outside"));
    EXPECT_THAT(error("1G"), HasSubstr("outside"));
    EXPECT_THAT(error("100000"), HasSubstr("not a power of two"));
    EXPECT_THAT(error("0"), HasSubstr("not a power of two"));
    EXPECT_THAT(error("99999999999999999999999K"), HasSubstr("above 64 MiB"));
    EXPECT_THAT(error("17179869184G"), HasSubstr("above 64 MiB"));
    for (const char* text : {"", "K", "1X", "1KiBB", "-1", " 1M", "1 M", "1.5M", "0x4000", "1Mi"}) {
        EXPECT_THAT(error(text), HasSubstr("is not a number of bytes")) << text;
    }
}

TEST(TorrentBuilder, DescribesSizesInExactBinaryUnits) {
    EXPECT_EQ(pw::describe_size(100), "100 B");
    EXPECT_EQ(pw::describe_size(16384), "16 KiB");
    EXPECT_EQ(pw::describe_size(64u << 20), "64 MiB");
    EXPECT_EQ(pw::describe_size(1536), "1536 B");
}

}  // namespace
