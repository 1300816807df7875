#include "cli/inspect.hpp"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <sstream>

namespace {

using pw::bencode::Dict;
using pw::bencode::List;
using pw::bencode::Value;

Value str(std::string s) { return Value(std::move(s)); }
Value num(std::int64_t n) { return Value(n); }

pw::Torrent make_torrent(const std::string& name, bool with_extras) {
    List files{Value(Dict{{"length", num(3)}, {"path", Value(List{str("a.txt")})}}),
               Value(Dict{{"length", num(0)}, {"path", Value(List{str("sub"), str("empty")})}}),
               Value(Dict{{"length", num(2000)}, {"path", Value(List{str("sub"), str("b.bin")})}})};
    Dict info{{"files", Value(files)},
              {"name", str(name)},
              {"piece length", num(1024)},
              {"pieces", str(std::string(40, 'p'))}};
    Dict root{{"info", Value(info)}};
    if (with_extras) {
        info.emplace_back("private", num(1));
        root = Dict{{"announce-list", Value(List{Value(List{str("http://a/ann"), str("http://b/ann")}),
                                                 Value(List{str("udp://c:80")})})},
                    {"comment", str("a comment")},
                    {"created by", str("hand")},
                    {"creation date", num(86400)},
                    {"info", Value(info)}};
    }
    auto parsed = pw::Torrent::parse(pw::bencode::encode(Value(root)));
    EXPECT_TRUE(parsed.ok()) << (parsed.ok() ? "" : parsed.error().describe());
    return std::move(parsed).value();
}

TEST(InspectSummary, ShowsEverythingTransmissionShowDoes) {
    const pw::Torrent t = make_torrent("demo", true);
    std::ostringstream out;
    pw::cli::print_summary(t, out);
    const std::string text = out.str();
    EXPECT_THAT(text, testing::HasSubstr("  Name: demo\n"));
    EXPECT_THAT(text, testing::HasSubstr("  Hash: " + pw::to_hex(t.info_hash()) + "\n"));
    EXPECT_THAT(text, testing::HasSubstr("  Created by: hand\n"));
    EXPECT_THAT(text, testing::HasSubstr("  Created on: 1970-01-02 00:00:00 UTC\n"));
    EXPECT_THAT(text, testing::HasSubstr("  Comment: a comment\n"));
    EXPECT_THAT(text, testing::HasSubstr("  Piece Count: 2\n"));
    EXPECT_THAT(text, testing::HasSubstr("  Piece Size: 1.00 KiB (1024 bytes)\n"));
    EXPECT_THAT(text, testing::HasSubstr("  Total Size: 1.96 KiB (2003 bytes)\n"));
    EXPECT_THAT(text, testing::HasSubstr("  Privacy: Private torrent\n"));
    EXPECT_THAT(text, testing::HasSubstr("  Tier #1\n  http://a/ann\n  http://b/ann\n"));
    EXPECT_THAT(text, testing::HasSubstr("  Tier #2\n  udp://c:80\n"));
    EXPECT_THAT(text, testing::HasSubstr("  demo/a.txt (3 B)\n"));
    EXPECT_THAT(text, testing::HasSubstr("  demo/sub/b.bin (1.95 KiB)\n"));
}

TEST(InspectSummary, OmitsAbsentFields) {
    const pw::Torrent t = make_torrent("demo", false);
    std::ostringstream out;
    pw::cli::print_summary(t, out);
    EXPECT_THAT(out.str(), testing::Not(testing::HasSubstr("Comment")));
    EXPECT_THAT(out.str(), testing::Not(testing::HasSubstr("Created")));
    EXPECT_THAT(out.str(), testing::HasSubstr("Public torrent"));
}

TEST(InspectJson, OneObjectWithTheAgreedKeys) {
    const pw::Torrent t = make_torrent("demo", true);
    std::ostringstream out;
    pw::cli::print_json(t, out);
    EXPECT_EQ(out.str(),
              "{\"name\":\"demo\",\"info_hash\":\"" + pw::to_hex(t.info_hash()) +
                  "\",\"total_size\":2003,\"piece_length\":1024,\"piece_count\":2,"
                  "\"private\":true,\"multi_file\":true,\"comment\":\"a comment\","
                  "\"created_by\":\"hand\",\"creation_date\":86400,"
                  "\"trackers\":[[\"http://a/ann\",\"http://b/ann\"],[\"udp://c:80\"]],"
                  "\"files\":[{\"path\":\"demo/a.txt\",\"length\":3,\"offset\":0},"
                  "{\"path\":\"demo/sub/empty\",\"length\":0,\"offset\":3},"
                  "{\"path\":\"demo/sub/b.bin\",\"length\":2000,\"offset\":3}],"
                  "\"warnings\":[]}\n");
}

TEST(InspectJson, EscapesStringsAndReplacesInvalidUtf8) {
    // Quote, backslash-free (sanitized away), a tab, valid UTF-8, and a stray 0xff byte.
    const pw::Torrent t = make_torrent("q\"t\x01\t\xc3\xa9\xff\xe2\x82", false);
    std::ostringstream out;
    pw::cli::print_json(t, out);
    // Control characters were sanitized to '_' in the name; the escaper handles the rest.
    EXPECT_THAT(out.str(), testing::HasSubstr(R"("name":"q\"t__é\ufffd\ufffd\ufffd")"));
}

TEST(InspectRun, ReportsUnreadableFilesOnOneLine) {
    testing::internal::CaptureStderr();
    const int code = pw::cli::run_inspect({"/nonexistent/x.torrent", false});
    const std::string err = testing::internal::GetCapturedStderr();
    EXPECT_EQ(code, 1);
    EXPECT_EQ(err, "piecework: cannot read /nonexistent/x.torrent: No such file or directory\n");
}

}  // namespace
