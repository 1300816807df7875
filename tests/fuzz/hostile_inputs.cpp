// Hand-made hostile inputs for every remote-input decoder, run under AddressSanitizer and
// UndefinedBehaviorSanitizer in the fuzz side build (issue 4): bencode nested a million deep,
// a 100 MB string length in a 1 KB input, integers that overflow, wire streams with absurd
// length prefixes and out-of-range messages, tracker bodies with broken peer lists and silly
// intervals. Each must come back as an error (or a sanitized value), never a crash, and
// memory must stay bounded (peak RSS checked at the end). Exits non-zero on any failure.
#include <sys/resource.h>

#include <array>
#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

#include "core/bencode.hpp"
#include "core/metainfo.hpp"
#include "core/rpc.hpp"
#include "core/tracker_codec.hpp"
#include "core/wire.hpp"

namespace {

int failures = 0;

void check(bool condition, const char* what) {
    if (!condition) {
        std::fprintf(stderr, "FAILED: %s\n", what);
        ++failures;
    }
}

std::string deep_list(std::size_t depth) { return std::string(depth, 'l') + std::string(depth, 'e'); }

std::string torrent_with_info(const std::string& info_body) {
    return "d4:infod" + info_body + "ee";
}

void hostile_bencode() {
    using pw::bencode::decode;
    check(!decode(deep_list(1'000'000)).ok(), "bencode: a million nested lists");
    check(!decode(std::string(1'000'000, 'd')).ok(), "bencode: a million open dicts");
    check(!decode("100000000:" + std::string(1000, 'x')).ok(), "bencode: 100 MB string length in 1 KB");
    check(!decode("99999999999999999999999:x").ok(), "bencode: string length overflows");
    check(!decode("i99999999999999999999999e").ok(), "bencode: integer overflows");
    check(!decode("i-99999999999999999999999e").ok(), "bencode: negative integer overflows");
    check(!decode("i9223372036854775808e").ok(), "bencode: INT64_MAX + 1");
    check(decode("i-9223372036854775808e").ok(), "bencode: INT64_MIN is fine");
    check(!decode("i-0e").ok(), "bencode: -0");
    check(!decode("i03e").ok(), "bencode: leading zero");
    check(!decode("ie").ok(), "bencode: empty integer");
    check(!decode("").ok(), "bencode: empty input");
}

void hostile_torrents() {
    using pw::Torrent;
    const std::string pieces = "6:pieces20:" + std::string(20, 'a');
    check(!Torrent::parse(deep_list(1'000'000)).ok(), "torrent: a million nested lists");
    check(!Torrent::parse(torrent_with_info("4:name100000000:" + std::string(1000, 'x'))).ok(),
          "torrent: 100 MB name length");
    check(!Torrent::parse(torrent_with_info("6:lengthi99999999999999999999999e4:name1:x12:piece lengthi16384e" +
                                            pieces))
               .ok(),
          "torrent: length overflows int64");
    // Two files whose lengths are each valid but whose sum overflows.
    check(!Torrent::parse(torrent_with_info("5:filesld6:lengthi4611686018427387904e4:pathl1:aeed6:lengthi"
                                            "4611686018427387904e4:pathl1:beed6:lengthi4611686018427387904e"
                                            "4:pathl1:ceee4:name1:x12:piece lengthi16384e" + pieces))
               .ok(),
          "torrent: file lengths sum past int64");
    check(!Torrent::parse(torrent_with_info("6:lengthi16384e4:name1:x12:piece lengthi-16384e" + pieces)).ok(),
          "torrent: negative piece length");
    check(!Torrent::parse(torrent_with_info("6:lengthi16384e4:name1:x12:piece lengthi18446744073709551616e" +
                                            pieces))
               .ok(),
          "torrent: piece length overflows");
    // Hostile paths parse (sanitized) or are refused; never a path that leaves the folder.
    const auto parsed = Torrent::parse(torrent_with_info(
        "5:filesld6:lengthi5e4:pathl2:..2:..3:etceed6:lengthi5e4:pathl5:/abs/0:1:.eee"
        "4:name2:..12:piece lengthi16384e" + pieces));
    if (parsed.ok()) {
        for (const auto& file : parsed.value().files()) {
            const std::string& path = file.path;
            check(path.find("..") == std::string::npos && !path.empty() && path[0] != '/',
                  "torrent: a sanitized path stays relative and inside");
        }
    }
}

std::vector<std::uint8_t> bytes(std::initializer_list<int> values) {
    std::vector<std::uint8_t> out;
    for (int v : values) out.push_back(static_cast<std::uint8_t>(v));
    return out;
}

// Feeds `stream` to a parser for a 10-piece torrent of 16 KiB pieces: true when it errors.
bool wire_refuses(const std::vector<std::uint8_t>& stream) {
    pw::wire::ParserLimits limits;
    limits.geometry = pw::PieceGeometry(10 * 16384, 16384);
    pw::wire::StreamParser parser(limits);
    parser.append(stream);
    for (int i = 0; i < 100; ++i) {
        auto next = parser.next();
        if (!next.ok()) return true;
        if (!next.value()) return false;
    }
    return false;
}

void hostile_wire() {
    std::vector<std::uint8_t> huge = bytes({0xff, 0xff, 0xff, 0xff});
    huge.resize(70000, 0x41);
    check(wire_refuses(huge), "wire: length prefix 0xFFFFFFFF then junk");
    std::vector<std::uint8_t> two_million = bytes({0x00, 0x1e, 0x84, 0x80});
    two_million.resize(70000, 0x42);
    check(wire_refuses(two_million), "wire: length prefix 2,000,000 then junk");
    check(wire_refuses(bytes({0, 0, 0, 1, 99})), "wire: unknown message id");
    check(wire_refuses(bytes({0, 0, 0, 5, 4, 0, 0, 0, 10})), "wire: have out of range");
    check(wire_refuses(bytes({0, 0, 0, 4, 5, 0xff, 0xc0, 0})), "wire: bitfield of the wrong size");
    check(wire_refuses(bytes({0, 0, 0, 3, 5, 0xff, 0xff})), "wire: bitfield with spare bits set");
    std::vector<std::uint8_t> big_piece = bytes({0, 0, 0x80, 0x09, 7, 0, 0, 0, 0, 0, 0, 0, 0});
    big_piece.resize(13 + 32768, 0);
    check(wire_refuses(big_piece), "wire: piece larger than 16 KiB");
    std::vector<std::uint8_t> far_piece = bytes({0, 0, 0x40, 0x09, 7, 0, 0, 0, 50, 0, 0, 0, 0});
    far_piece.resize(13 + 16384, 0);
    check(wire_refuses(far_piece), "wire: piece out of range");
    std::array<std::uint8_t, pw::wire::kHandshakeSize> junk_handshake{};
    junk_handshake.fill(0xee);
    check(!pw::wire::decode_handshake(junk_handshake).ok(), "wire: junk handshake");
}

void hostile_trackers() {
    using pw::tracker::parse_http_response;
    using namespace std::string_literals;  // the body holds NUL bytes
    const auto seven = parse_http_response("d8:intervali1800e5:peers7:\x7f\x00\x00\x01\x1a\xe1Xe"s);
    check(seven.ok() && seven.value().peers.size() == 1, "tracker: 7-byte compact peers keep the whole one");
    for (const char* body : {"d8:intervali0e5:peers0:e", "d8:intervali-5e5:peers0:e",
                             "d8:intervali-99999999999999e5:peers0:e"}) {
        const auto response = parse_http_response(body);
        check(response.ok(), "tracker: a silly interval still parses");
        if (response.ok()) {
            const auto seconds = pw::tracker::clamp_interval(response.value());
            check(seconds >= 30 && seconds <= 3600, "tracker: interval clamped");
        }
    }
    check(!parse_http_response(deep_list(1'000'000)).ok(), "tracker: a million nested lists");
    check(!parse_http_response("d5:peers100000000:" + std::string(1000, 'x') + "e").ok(),
          "tracker: 100 MB peers length");
    check(!parse_http_response("d8:intervali99999999999999999999999ee").ok(), "tracker: interval overflows");
    const std::vector<std::uint8_t> short_packet = bytes({0, 0, 0, 1, 0, 0});
    check(!pw::tracker::parse_udp_announce(short_packet, 0, false).ok(), "tracker: short UDP packet");
}

// An RPC body that parses as JSON but whose method is refused: the error the reply carries.
bool rpc_refuses_method(const std::string& body) {
    const auto parsed = pw::rpc::parse_request(body);
    return parsed.ok() && !parsed.value().method.ok();
}

void hostile_rpc() {
    using pw::rpc::check_request_body;
    using pw::rpc::parse_request;
    const std::string deep(1'000'000, '[');
    check(!parse_request(deep).ok() && !check_request_body(deep).ok(), "rpc: a million nested arrays");
    check(!parse_request("{\"a\":" + deep + std::string(1'000'000, ']') + "}").ok(),
          "rpc: a million nested arrays inside the request");
    std::string objects = "{";
    for (int i = 0; i < 200'000; ++i) objects += "\"a\":{";
    check(!parse_request(objects).ok(), "rpc: 200,000 nested objects");
    std::string zeros = "{\"method\":\"session-stats\",\"x\":[0";
    for (int i = 0; i < 2'000'000; ++i) zeros += ",0";
    check(!parse_request(zeros + "]}").ok(), "rpc: two million values");
    check(!parse_request(std::string(33u << 20, ' ')).ok(), "rpc: a body over 32 MiB");
    for (const char* body : {"", "garbage", "{\"a\":1e400}", "{\"a\":NaN}", "{\"a\":\"\xff\"}", "[]", "{"}) {
        check(!parse_request(body).ok(), "rpc: not a JSON object");
    }
    check(rpc_refuses_method("{\"method\":\"session-stats\",\"tag\":99999999999999999999}"), "rpc: tag overflows");
    check(rpc_refuses_method("{\"method\":\"torrent-start\",\"arguments\":{\"ids\":[18446744073709551616]}}"),
          "rpc: id overflows");
    check(rpc_refuses_method("{\"method\":\"torrent-start\",\"arguments\":{\"ids\":-1}}"), "rpc: negative id");
    check(rpc_refuses_method("{\"method\":\"session-set\",\"arguments\":{\"speed-limit-down\":1e300}}"),
          "rpc: a speed that is not an integer");
    check(rpc_refuses_method("{\"method\":\"torrent-add\",\"arguments\":{\"metainfo\":\"" +
                             std::string(1u << 20, '!') + "\"}}"),
          "rpc: a megabyte of bad base64");
    std::string ids = "{\"method\":\"torrent-stop\",\"arguments\":{\"ids\":[1";
    for (int i = 0; i < 200'000; ++i) ids += ",1";
    check(rpc_refuses_method(ids + "]}}"), "rpc: 200,001 ids");
}

}  // namespace

int main() {
    hostile_bencode();
    hostile_torrents();
    hostile_wire();
    hostile_trackers();
    hostile_rpc();
    rusage usage{};
    getrusage(RUSAGE_SELF, &usage);
    const long max_rss_mib = usage.ru_maxrss / 1024;
    std::printf("peak RSS %ld MiB\n", max_rss_mib);
    // ASan's shadow memory and quarantine count too; the inputs themselves are a few MB.
    check(max_rss_mib < 400, "memory stayed bounded");
    if (failures != 0) {
        std::fprintf(stderr, "%d hostile input checks failed\n", failures);
        return 1;
    }
    std::printf("all hostile inputs refused cleanly\n");
    return 0;
}
