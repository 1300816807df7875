#include "core/rpc.hpp"

#include <cstdint>
#include <string>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

namespace pw::rpc {
namespace {

using json = nlohmann::json;
using ::testing::HasSubstr;

constexpr std::string_view kHash = "373a052ba104353cb3e3e696249f57a517d226f6";

Sha1Digest hash_of(std::string_view hex) { return sha1_from_hex(hex).value(); }

// A request that is a JSON object; its method parsed (or not).
Request request(std::string_view body) {
    auto parsed = parse_request(body);
    EXPECT_TRUE(parsed.ok()) << body << ": " << (parsed.ok() ? "" : parsed.error().describe());
    EXPECT_EQ(check_request_body(body).ok(), parsed.ok());
    if (!parsed.ok()) return Request{std::nullopt, make_error("not a request")};
    return std::move(parsed).value();
}

template <class T>
T method(std::string_view body) {
    Request parsed = request(body);
    if (!parsed.method.ok()) {
        ADD_FAILURE() << body << ": " << parsed.method.error().message;
        return T{};
    }
    if (!std::holds_alternative<T>(parsed.method.value())) {
        ADD_FAILURE() << body << ": another method (" << parsed.method.value().index() << ")";
        return T{};
    }
    return std::get<T>(std::move(parsed.method).value());
}

// The error message of a request that is JSON but not a usable method.
std::string method_error(std::string_view body) {
    Request parsed = request(body);
    if (parsed.method.ok()) {
        ADD_FAILURE() << body << ": parsed, expected an error";
        return "";
    }
    return parsed.method.error().message;
}

// The error of a body that is not a request at all (HTTP 400).
std::string body_error(std::string_view body, const RequestLimits& limits = {}) {
    auto parsed = parse_request(body, limits);
    EXPECT_FALSE(check_request_body(body, limits).ok());
    if (parsed.ok()) {
        ADD_FAILURE() << body.substr(0, 200) << ": parsed, expected an error";
        return "";
    }
    return parsed.error().message;
}

std::string args(std::string_view method_name, std::string_view arguments) {
    return R"({"method":")" + std::string(method_name) + R"(","arguments":)" + std::string(arguments) + "}";
}

// --- The envelope ---

TEST(RpcRequest, EchoesTheTagAndReadsSessionGetAsTransmissionRemoteSendsIt) {
    const Request parsed = request(R"({"method":"session-get","tag":0})");
    EXPECT_EQ(parsed.tag, 0);
    ASSERT_TRUE(parsed.method.ok());
    EXPECT_TRUE(std::get<SessionGet>(parsed.method.value()).fields.empty());

    const auto get = method<SessionGet>(R"({"method":"session-get","arguments":{"fields":["version","rpc-version"]}})");
    EXPECT_EQ(get.fields, (std::vector<std::string>{"version", "rpc-version"}));
    EXPECT_EQ(request(R"({"method":"session-stats"})").tag, std::nullopt);
    EXPECT_EQ(request(R"({"tag":-7,"method":"session-stats"})").tag, -7);
    EXPECT_EQ(request(R"({"tag":9223372036854775807,"method":"session-stats"})").tag, INT64_MAX);
}

TEST(RpcRequest, ABodyThatIsNotAJsonObjectIsNotARequest) {
    for (const char* body : {"garbage", "", " ", "[1,2]", "123", "\"session-get\"", "null", "{", "{\"method\":",
                             "{\"method\":\"session-get\"} trailing", "{\"a\":NaN}", "{\"a\":Infinity}",
                             "{\"a\":1e400}", "{\"a\":-1e400}", "{'method':'session-get'}", "{\"a\":01}",
                             "{\"a\":\"\xff\xfe\"}", "{\"a\":\"\xc0\xaf\"}", "{\"a\":\"unterminated}",
                             "{\"a\":1,}", "{\"a\" 1}", "{\"a\":\"\\ud800\"}"}) {
        const std::string error = body_error(body);
        EXPECT_FALSE(error.empty()) << body;
    }
    EXPECT_THAT(body_error("[1,2]"), HasSubstr("not a JSON object"));
    EXPECT_THAT(body_error("garbage"), HasSubstr("not JSON"));
    // A syntax error says where.
    const auto parsed = parse_request(R"({"method": x})");
    ASSERT_FALSE(parsed.ok());
    EXPECT_EQ(parsed.error().offset, 11u);
}

TEST(RpcRequest, NestingPastTheLimitIsRefusedBeforeItIsBuilt) {
    // A million-deep array inside and outside an object: refused at the 65th level, never
    // built, never destroyed recursively.
    const std::string deep_inside = "{\"arguments\":" + std::string(1'000'000, '[') + std::string(1'000'000, ']') + "}";
    EXPECT_THAT(body_error(deep_inside), HasSubstr("deeper than 64"));
    EXPECT_THAT(body_error(std::string(1'000'000, '[')), HasSubstr("not a JSON object"));
    EXPECT_THAT(body_error(std::string(1'000'000, '{')), HasSubstr("not JSON"));
    std::string objects = "{";
    for (int i = 0; i < 100'000; ++i) objects += "\"a\":{";
    EXPECT_THAT(body_error(objects), HasSubstr("deeper than 64"));

    // Exactly at the limit: the request object and 63 arrays inside it.
    const std::string at_limit = R"({"method":"session-stats","x":)" + std::string(63, '[') + std::string(63, ']') + "}";
    EXPECT_TRUE(request(at_limit).method.ok());
    const std::string past_limit = R"({"method":"session-stats","x":)" + std::string(64, '[') + std::string(64, ']') + "}";
    EXPECT_THAT(body_error(past_limit), HasSubstr("deeper than 64"));
}

TEST(RpcRequest, BodiesAndValueCountsPastTheLimitsAreRefused) {
    RequestLimits small;
    small.max_body = 100;
    EXPECT_THAT(body_error(std::string(101, ' '), small), HasSubstr("larger than 100 bytes"));

    // Two million zeros in 4 MB would be 32 MB of parsed values.
    std::string zeros = "{\"method\":\"session-stats\",\"x\":[0";
    for (int i = 0; i < 2'000'000; ++i) zeros += ",0";
    zeros += "]}";
    EXPECT_THAT(body_error(zeros), HasSubstr("more than 1000000 JSON values"));
    std::string keys = "{\"method\":\"session-stats\"";
    for (int i = 0; i < 1'100'000; ++i) keys += ",\"k" + std::to_string(i) + "\":0";
    keys += "}";
    EXPECT_THAT(body_error(keys), HasSubstr("JSON values"));
}

TEST(RpcRequest, MethodAndTagErrorsKeepTheTagWhenThereIsOne) {
    Request parsed = request(R"({"method":"nope","tag":5})");
    EXPECT_EQ(parsed.tag, 5);
    ASSERT_FALSE(parsed.method.ok());
    EXPECT_EQ(parsed.method.error().message, "method name not recognized");

    parsed = request(R"({"tag":5})");
    EXPECT_EQ(parsed.tag, 5);
    EXPECT_THAT(parsed.method.error().message, HasSubstr("no method name"));
    EXPECT_THAT(method_error(R"({"method":5})"), HasSubstr("no method name"));
    EXPECT_THAT(method_error(R"({"method":null})"), HasSubstr("no method name"));
    EXPECT_THAT(method_error(R"({"method":["session-get"]})"), HasSubstr("no method name"));
    EXPECT_THAT(method_error(R"({"method":"session-get","arguments":5})"), HasSubstr("'arguments' must be an object"));
    EXPECT_THAT(method_error(R"({"method":"session-get","arguments":[]})"), HasSubstr("'arguments' must be an object"));

    for (const char* tag : {"\"abc\"", "1.5", "true", "null", "[1]", "{}", "9223372036854775808", "1e3",
                            "99999999999999999999999"}) {
        parsed = request(std::string(R"({"method":"session-stats","tag":)") + tag + "}");
        EXPECT_EQ(parsed.tag, std::nullopt) << tag;
        ASSERT_FALSE(parsed.method.ok()) << tag;
        EXPECT_EQ(parsed.method.error().message, "'tag' must be an integer") << tag;
    }
}

TEST(RpcRequest, UnknownArgumentsAreIgnoredAndListedWhereTheSessionMayCare) {
    EXPECT_TRUE(request(args("session-stats", R"({"future":[1,{"x":2}]})")).method.ok());
    EXPECT_TRUE(request(args("torrent-get", R"({"fields":["id"],"future":true})")).method.ok());
    const auto set = method<SessionSet>(args("session-set", R"({"dht-enabled":true,"blocklist-enabled":true,"x":1})"));
    EXPECT_EQ(set.dht_enabled, true);
    EXPECT_EQ(set.ignored_keys, (std::vector<std::string>{"blocklist-enabled", "x"}));
}

// --- Ids (rpc-spec 3.1) ---

TEST(RpcIds, EveryFormTransmissionRemoteAndTheSpecUse) {
    EXPECT_EQ(method<TorrentAction>(args("torrent-start", "{}")).ids.scope, TorrentIds::Scope::all);
    EXPECT_EQ(method<TorrentAction>(R"({"method":"torrent-start"})").ids.scope, TorrentIds::Scope::all);

    auto ids = method<TorrentAction>(args("torrent-stop", R"({"ids":1})")).ids;
    EXPECT_EQ(ids.scope, TorrentIds::Scope::listed);
    EXPECT_EQ(ids.ids, (std::vector<std::uint32_t>{1}));

    ids = method<TorrentAction>(args("torrent-stop", R"({"ids":[5,1,2,3,5,2]})")).ids;
    EXPECT_EQ(ids.ids, (std::vector<std::uint32_t>{1, 2, 3, 5}));  // sorted, once each

    // -t HASH sends the hash as a plain string; upper case is the same hash.
    ids = method<TorrentAction>(args("torrent-verify", R"({"ids":"373A052BA104353CB3E3E696249F57A517D226F6"})")).ids;
    EXPECT_EQ(ids.scope, TorrentIds::Scope::listed);
    EXPECT_TRUE(ids.ids.empty());
    EXPECT_EQ(ids.hashes, (std::vector<Sha1Digest>{hash_of(kHash)}));

    ids = method<TorrentAction>(args("torrent-verify", R"({"ids":[7,")" + std::string(kHash) + R"("]})")).ids;
    EXPECT_EQ(ids.ids, (std::vector<std::uint32_t>{7}));
    EXPECT_EQ(ids.hashes.size(), 1u);

    EXPECT_EQ(method<TorrentAction>(args("torrent-start", R"({"ids":"recently-active"})")).ids.scope,
              TorrentIds::Scope::recently_active);

    ids = method<TorrentAction>(args("torrent-start", R"({"ids":[]})")).ids;
    EXPECT_EQ(ids.scope, TorrentIds::Scope::listed);  // [] lists none: never "all" by accident
    EXPECT_FALSE(ids.matches(1, hash_of(kHash), true));

    ids = method<TorrentAction>(args("torrent-start", R"({"ids":4294967295})")).ids;
    EXPECT_EQ(ids.ids, (std::vector<std::uint32_t>{4294967295u}));
}

TEST(RpcIds, AnythingElseIsAClearError) {
    for (const char* bad : {"0", "-1", "4294967296", "1.5", "1.0", "true", "null", "{}", "\"abc\"", "\"all\"",
                            "\"373a052ba104353cb3e3e696249f57a517d226f\"", "\"373a052ba104353cb3e3e696249f57a517d226f6x\"",
                            "[1,\"x\"]", "[[1]]", "[1,-1]", "[1.5]", "[true]", "[null]", "99999999999999999999",
                            "18446744073709551615", "-9223372036854775808", "\"Recently-Active\""}) {
        const std::string error = method_error(args("torrent-remove", std::string(R"({"ids":)") + bad + "}"));
        EXPECT_THAT(error, HasSubstr("argument 'ids' must be")) << bad;
    }
    std::string many = "[1";
    for (int i = 2; i <= 100'001; ++i) many.append(",").append(std::to_string(i));
    many += "]";
    EXPECT_THAT(method_error(args("torrent-get", R"({"fields":["id"],"ids":)" + many + "}")),
                HasSubstr("at most 100000 elements"));
}

TEST(RpcIds, Matches) {
    TorrentIds all;
    EXPECT_TRUE(all.matches(3, {}, false));
    const auto listed = method<TorrentAction>(args("torrent-start", R"({"ids":[2,")" + std::string(kHash) + R"("]})")).ids;
    EXPECT_TRUE(listed.matches(2, {}, false));
    EXPECT_TRUE(listed.matches(9, hash_of(kHash), false));
    EXPECT_FALSE(listed.matches(9, {}, true));
    TorrentIds recent;
    recent.scope = TorrentIds::Scope::recently_active;
    EXPECT_TRUE(recent.matches(1, {}, true));
    EXPECT_FALSE(recent.matches(1, {}, false));
}

// --- Methods ---

TEST(RpcSessionSet, TheSettingsTransmissionRemoteSends) {
    // -d 100, -D -U, -w DIR, -er, -gsr 1.5, -pr 30 without -t, -p, -x/-o/-y/--utp/-m.
    auto set = method<SessionSet>(args("session-set", R"({"speed-limit-down":100,"speed-limit-down-enabled":true})"));
    EXPECT_EQ(set.speed_limit_down_kbps, 100);
    EXPECT_EQ(set.speed_limit_down_enabled, true);
    EXPECT_EQ(set.speed_limit_up_kbps, std::nullopt);
    EXPECT_EQ(set.speed_limit_up_enabled, std::nullopt);
    EXPECT_TRUE(set.ignored_keys.empty());

    set = method<SessionSet>(args("session-set", R"({"speed-limit-down-enabled":false,"speed-limit-up-enabled":false})"));
    EXPECT_EQ(set.speed_limit_down_enabled, false);
    EXPECT_EQ(set.speed_limit_up_enabled, false);

    set = method<SessionSet>(args("session-set", R"({"download-dir":"/tmp/x","encryption":"required",
        "seedRatioLimit":1.5000,"seedRatioLimited":true,"peer-limit-global":30,"peer-limit-per-torrent":8,
        "peer-port":51413,"speed-limit-up":20,"speed-limit-up-enabled":true,"alt-speed-down":5,"alt-speed-up":6,
        "alt-speed-enabled":true,"idle-seeding-limit":10,"idle-seeding-limit-enabled":true,
        "start-added-torrents":false,"dht-enabled":false,"pex-enabled":true,"lpd-enabled":false,
        "utp-enabled":true,"port-forwarding-enabled":false})"));
    EXPECT_EQ(set.download_dir, "/tmp/x");
    EXPECT_EQ(set.encryption, Encryption::required);
    EXPECT_EQ(set.seed_ratio_limit, 1.5);
    EXPECT_EQ(set.seed_ratio_limited, true);
    EXPECT_EQ(set.peer_limit_global, 30);
    EXPECT_EQ(set.peer_limit_per_torrent, 8);
    EXPECT_EQ(set.peer_port, 51413);
    EXPECT_EQ(set.speed_limit_up_kbps, 20);
    EXPECT_EQ(set.alt_speed_down_kbps, 5);
    EXPECT_EQ(set.alt_speed_up_kbps, 6);
    EXPECT_EQ(set.alt_speed_enabled, true);
    EXPECT_EQ(set.idle_seeding_limit_minutes, 10);
    EXPECT_EQ(set.idle_seeding_limit_enabled, true);
    EXPECT_EQ(set.start_added_torrents, false);
    EXPECT_EQ(set.dht_enabled, false);
    EXPECT_EQ(set.pex_enabled, true);
    EXPECT_EQ(set.lpd_enabled, false);
    EXPECT_EQ(set.utp_enabled, true);
    EXPECT_EQ(set.port_forwarding_enabled, false);
    EXPECT_TRUE(set.ignored_keys.empty());
    EXPECT_EQ(method<SessionSet>(args("session-set", R"({"encryption":"preferred"})")).encryption, Encryption::preferred);
    EXPECT_EQ(method<SessionSet>(args("session-set", R"({"encryption":"tolerated"})")).encryption, Encryption::tolerated);
    EXPECT_EQ(method<SessionSet>(args("session-set", R"({"seedRatioLimit":2})")).seed_ratio_limit, 2.0);
}

TEST(RpcSessionSet, WrongTypesAndValuesSayWhichArgument) {
    const std::vector<std::pair<std::string, std::string>> cases = {
        {R"({"speed-limit-down":"abc"})", "argument 'speed-limit-down' must be an integer from 0 to 2147483647"},
        {R"({"speed-limit-down":-1})", "'speed-limit-down'"},
        {R"({"speed-limit-down":1.5})", "'speed-limit-down'"},
        {R"({"speed-limit-down":2147483648})", "'speed-limit-down'"},
        {R"({"speed-limit-down":true})", "'speed-limit-down'"},
        {R"({"speed-limit-down-enabled":1})", "argument 'speed-limit-down-enabled' must be true or false"},
        {R"({"speed-limit-up-enabled":"true"})", "'speed-limit-up-enabled'"},
        {R"({"encryption":"bogus"})", R"(argument 'encryption' must be "required", "preferred" or "tolerated")"},
        {R"({"encryption":1})", "'encryption'"},
        {R"({"download-dir":"relative/dir"})", "argument 'download-dir' must be an absolute path"},
        {R"({"download-dir":""})", "'download-dir'"},
        {R"({"download-dir":"/tmp/a\u0000b"})", "'download-dir'"},
        {R"({"download-dir":5})", "argument 'download-dir' must be a string"},
        {R"({"seedRatioLimit":-0.5})", "'seedRatioLimit'"},
        {R"({"seedRatioLimit":"2"})", "'seedRatioLimit'"},
        {R"({"peer-port":0})", "'peer-port'"},
        {R"({"peer-port":65536})", "'peer-port'"},
        {R"({"peer-limit-global":-3})", "'peer-limit-global'"},
        {R"({"peer-limit-per-torrent":70000})", "'peer-limit-per-torrent'"},
        {R"({"dht-enabled":null})", "'dht-enabled'"},
    };
    for (const auto& [arguments, expected] : cases) {
        EXPECT_THAT(method_error(args("session-set", arguments)), HasSubstr(expected)) << arguments;
    }
    const std::string long_dir = "/" + std::string(70'000, 'd');
    EXPECT_THAT(method_error(args("session-set", R"({"download-dir":")" + long_dir + "\"}")),
                HasSubstr("at most 65536 bytes"));
}

TEST(RpcMethods, ArgumentlessOnes) {
    EXPECT_TRUE(std::holds_alternative<SessionStats>(request(R"({"method":"session-stats","tag":1})").method.value()));
    EXPECT_TRUE(std::holds_alternative<SessionClose>(request(R"({"method":"session-close"})").method.value()));
    EXPECT_TRUE(std::holds_alternative<PortTest>(request(R"({"method":"port-test","tag":7})").method.value()));
}

TEST(RpcMethods, FreeSpace) {
    EXPECT_EQ(method<FreeSpace>(args("free-space", R"({"path":"/tmp"})")).path, "/tmp");
    EXPECT_THAT(method_error(args("free-space", "{}")), HasSubstr("argument 'path' is required"));
    EXPECT_THAT(method_error(R"({"method":"free-space"})"), HasSubstr("argument 'path' is required"));
    EXPECT_THAT(method_error(args("free-space", R"({"path":"relative"})")), HasSubstr("absolute path"));
    EXPECT_THAT(method_error(args("free-space", R"({"path":["/tmp"]})")), HasSubstr("'path' must be a string"));
}

TEST(RpcMethods, TorrentActions) {
    using Kind = TorrentAction::Kind;
    const std::vector<std::pair<const char*, Kind>> names = {{"torrent-start", Kind::start},
                                                              {"torrent-start-now", Kind::start_now},
                                                              {"torrent-stop", Kind::stop},
                                                              {"torrent-verify", Kind::verify},
                                                              {"torrent-reannounce", Kind::reannounce}};
    for (const auto& [name, kind] : names) {
        const auto action = method<TorrentAction>(args(name, R"({"ids":[1,2,3,5]})"));
        EXPECT_EQ(action.kind, kind) << name;
        EXPECT_EQ(action.ids.ids, (std::vector<std::uint32_t>{1, 2, 3, 5}));
    }
}

TEST(RpcMethods, TorrentRemoveWithAndWithoutLocalData) {
    // -r and --remove-and-delete.
    auto remove = method<TorrentRemove>(args("torrent-remove", R"({"delete-local-data":false,"ids":1})"));
    EXPECT_FALSE(remove.delete_local_data);
    EXPECT_EQ(remove.ids.ids, (std::vector<std::uint32_t>{1}));
    remove = method<TorrentRemove>(args("torrent-remove", R"({"delete-local-data":true,"ids":1})"));
    EXPECT_TRUE(remove.delete_local_data);
    EXPECT_FALSE(method<TorrentRemove>(args("torrent-remove", R"({"ids":[3]})")).delete_local_data);
    EXPECT_THAT(method_error(args("torrent-remove", R"({"ids":1,"delete-local-data":"yes"})")),
                HasSubstr("argument 'delete-local-data' must be true or false"));
    EXPECT_THAT(method_error(args("torrent-remove", R"({"ids":1,"delete-local-data":1})")),
                HasSubstr("'delete-local-data'"));
}

TEST(RpcMethods, TorrentGetAsTransmissionRemoteListsAndDetails) {
    // -l: every torrent, the list fields, tag 4.
    const Request list = request(R"({"arguments":{"fields":["error","errorString","eta","id","isFinished",)"
                                 R"("leftUntilDone","name","peersGettingFromUs","peersSendingToUs","rateDownload",)"
                                 R"("rateUpload","sizeWhenDone","status","uploadRatio"]},"method":"torrent-get","tag":4})");
    EXPECT_EQ(list.tag, 4);
    const auto& get = std::get<TorrentGet>(list.method.value());
    EXPECT_EQ(get.ids.scope, TorrentIds::Scope::all);
    EXPECT_EQ(get.fields.size(), 14u);
    EXPECT_EQ(get.format, Format::objects);

    // -t 1 -f.
    const auto files = method<TorrentGet>(R"({"arguments":{"fields":["files","name","priorities","wanted"],"ids":1},)"
                                          R"("method":"torrent-get","tag":3})");
    EXPECT_EQ(files.ids.ids, (std::vector<std::uint32_t>{1}));
    EXPECT_EQ(files.fields, (std::vector<std::string>{"files", "name", "priorities", "wanted"}));

    EXPECT_EQ(method<TorrentGet>(args("torrent-get", R"({"fields":["id"],"format":"table"})")).format, Format::table);
    EXPECT_EQ(method<TorrentGet>(args("torrent-get", R"({"fields":["id"],"format":"objects"})")).format, Format::objects);
    EXPECT_EQ(method<TorrentGet>(args("torrent-get", R"({"fields":[]})")).fields.size(), 0u);

    EXPECT_THAT(method_error(args("torrent-get", "{}")), HasSubstr("needs argument 'fields'"));
    EXPECT_THAT(method_error(R"({"method":"torrent-get"})"), HasSubstr("needs argument 'fields'"));
    EXPECT_THAT(method_error(args("torrent-get", R"({"fields":"id"})")), HasSubstr("'fields' must be an array of strings"));
    EXPECT_THAT(method_error(args("torrent-get", R"({"fields":["id",5]})")), HasSubstr("'fields' must be an array of strings"));
    EXPECT_THAT(method_error(args("torrent-get", R"({"fields":["id"],"format":"bogus"})")),
                HasSubstr(R"('format' must be "objects" or "table")"));
    EXPECT_THAT(method_error(args("torrent-get", R"({"fields":["id"],"ids":"abc"})")), HasSubstr("'ids'"));
}

TEST(RpcTorrentAdd, MetainfoAsTransmissionRemoteSendsIt) {
    const std::string torrent = "d8:announce30:http://127.0.0.1:6969/announce4:infod6:lengthi5e4:name1:xee";
    const std::string body = R"({"arguments":{"download-dir":"/tmp/trd-src","metainfo":")" + encode_base64(torrent) +
                             R"(","paused":true},"method":"torrent-add","tag":8})";
    const Request parsed = request(body);
    EXPECT_EQ(parsed.tag, 8);
    const auto& add = std::get<TorrentAdd>(parsed.method.value());
    EXPECT_EQ(add.source, TorrentAdd::Source::metainfo);
    EXPECT_EQ(add.data, torrent);
    EXPECT_EQ(add.paused, true);
    EXPECT_EQ(add.download_dir, "/tmp/trd-src");
    EXPECT_FALSE(add.files_wanted.has_value());
    EXPECT_TRUE(add.ignored_keys.empty());

    // Line-wrapped base64 (other clients) decodes the same.
    std::string wrapped = encode_base64(torrent);
    wrapped.insert(20, "\\r\\n");
    wrapped.insert(4, "\\n");
    EXPECT_EQ(method<TorrentAdd>(args("torrent-add", R"({"metainfo":")" + wrapped + "\"}")).data, torrent);
}

TEST(RpcTorrentAdd, FilenameIsAPathAMagnetOrAUrl) {
    auto add = method<TorrentAdd>(args("torrent-add", R"({"filename":"/srv/a.torrent"})"));
    EXPECT_EQ(add.source, TorrentAdd::Source::path);
    EXPECT_EQ(add.data, "/srv/a.torrent");
    add = method<TorrentAdd>(args("torrent-add", R"({"filename":"magnet:?xt=urn:btih:0123456789abcdef0123456789abcdef01234567&dn=x"})"));
    EXPECT_EQ(add.source, TorrentAdd::Source::magnet);
    EXPECT_EQ(add.data, "magnet:?xt=urn:btih:0123456789abcdef0123456789abcdef01234567&dn=x");
    EXPECT_EQ(method<TorrentAdd>(args("torrent-add", R"({"filename":"MAGNET:?xt=urn:btih:x"})")).source,
              TorrentAdd::Source::magnet);
    EXPECT_EQ(method<TorrentAdd>(args("torrent-add", R"({"filename":"https://example.org/a.torrent"})")).source,
              TorrentAdd::Source::url);
    EXPECT_EQ(method<TorrentAdd>(args("torrent-add", R"({"filename":"http://example.org/a.torrent"})")).source,
              TorrentAdd::Source::url);

    EXPECT_THAT(method_error(args("torrent-add", R"({"filename":"a.torrent"})")),
                HasSubstr("argument 'filename' must be an absolute path"));
    EXPECT_THAT(method_error(args("torrent-add", R"({"filename":""})")), HasSubstr("'filename'"));
    EXPECT_THAT(method_error(args("torrent-add", R"({"filename":"/a\u0000b"})")), HasSubstr("NUL"));
    EXPECT_THAT(method_error(args("torrent-add", R"({"filename":"magnet:?xt=\u0000"})")), HasSubstr("NUL"));
    EXPECT_THAT(method_error(args("torrent-add", R"({"filename":7})")), HasSubstr("'filename' must be a string"));
}

TEST(RpcTorrentAdd, OptionsForLaterIssuesAreParsedNow) {
    const auto add = method<TorrentAdd>(args("torrent-add", R"({"filename":"/a.torrent","files-wanted":[0,2],
        "files-unwanted":[1],"priority-high":[0],"priority-normal":[],"priority-low":[2],"peer-limit":40,
        "bandwidthPriority":-1,"labels":["x","y"],"cookies":"a=b","future":1})"));
    EXPECT_EQ(add.files_wanted, (std::vector<std::uint32_t>{0, 2}));
    EXPECT_EQ(add.files_unwanted, (std::vector<std::uint32_t>{1}));
    EXPECT_EQ(add.priority_high, (std::vector<std::uint32_t>{0}));
    EXPECT_EQ(add.priority_normal, std::vector<std::uint32_t>{});  // empty: every file
    EXPECT_EQ(add.priority_low, (std::vector<std::uint32_t>{2}));
    EXPECT_EQ(add.peer_limit, 40);
    EXPECT_EQ(add.bandwidth_priority, Priority::low);
    EXPECT_EQ(add.labels, (std::vector<std::string>{"x", "y"}));
    EXPECT_EQ(add.cookies, "a=b");
    EXPECT_EQ(add.ignored_keys, (std::vector<std::string>{"future"}));
}

TEST(RpcTorrentAdd, BadInputIsRefusedWithAReason) {
    EXPECT_THAT(method_error(args("torrent-add", "{}")), HasSubstr("needs argument 'filename'"));
    EXPECT_THAT(method_error(R"({"method":"torrent-add"})"), HasSubstr("needs argument 'filename'"));
    EXPECT_THAT(method_error(args("torrent-add", R"({"filename":"/a","metainfo":"ZDE6YTE6YmU="})")),
                HasSubstr("not both"));
    for (const char* bad : {"!!!!", "ZDE6YTE6YmU=x", "Z", "ZDE6Y===", "ZD=E", "ZDE6YTE6YmU=====", "ZDE=6YTE",
                            "ZDE6YTE6Ym\u00e9"}) {
        EXPECT_THAT(method_error(args("torrent-add", std::string(R"({"metainfo":")") + bad + "\"}")),
                    HasSubstr("not valid base64"))
            << bad;
    }
    EXPECT_THAT(method_error(args("torrent-add", R"({"metainfo":""})")), HasSubstr("empty"));
    EXPECT_THAT(method_error(args("torrent-add", R"({"metainfo":"  \n "})")), HasSubstr("empty"));
    EXPECT_THAT(method_error(args("torrent-add", R"({"metainfo":5})")), HasSubstr("'metainfo' must be a string"));
    const std::string ok = R"({"filename":"/a.torrent",)";
    EXPECT_THAT(method_error(args("torrent-add", ok + R"("paused":"yes"})")), HasSubstr("'paused' must be true or false"));
    EXPECT_THAT(method_error(args("torrent-add", ok + R"("download-dir":"x"})")), HasSubstr("'download-dir'"));
    EXPECT_THAT(method_error(args("torrent-add", ok + R"("files-wanted":[-1]})")),
                HasSubstr("'files-wanted' must be an array of file indices"));
    EXPECT_THAT(method_error(args("torrent-add", ok + R"("files-wanted":3})")), HasSubstr("'files-wanted'"));
    EXPECT_THAT(method_error(args("torrent-add", ok + R"("priority-high":[1.5]})")), HasSubstr("'priority-high'"));
    EXPECT_THAT(method_error(args("torrent-add", ok + R"("priority-low":["0"]})")), HasSubstr("'priority-low'"));
    EXPECT_THAT(method_error(args("torrent-add", ok + R"("bandwidthPriority":2})")),
                HasSubstr("argument 'bandwidthPriority' must be an integer from -1 to 1"));
    EXPECT_THAT(method_error(args("torrent-add", ok + R"("labels":[1]})")), HasSubstr("'labels'"));
}

TEST(RpcTorrentSet, BandwidthAsTransmissionRemoteSendsIt) {
    // -t 1 -d 50 -u 20.
    auto set = method<TorrentSet>(R"({"arguments":{"downloadLimit":50,"downloadLimited":true,"ids":1,)"
                                  R"("uploadLimit":20,"uploadLimited":true},"method":"torrent-set"})");
    EXPECT_EQ(set.ids.ids, (std::vector<std::uint32_t>{1}));
    EXPECT_EQ(set.download_limit_kbps, 50);
    EXPECT_EQ(set.download_limited, true);
    EXPECT_EQ(set.upload_limit_kbps, 20);
    EXPECT_EQ(set.upload_limited, true);
    EXPECT_EQ(set.honors_session_limits, std::nullopt);
    EXPECT_TRUE(set.ignored_keys.empty());

    // -t 1 -sr 1.5 -pr 30 -Bh, -t 1 -G 0 -ph 1, -HL, -srd, -SR, -L, --tracker-add, -tr.
    set = method<TorrentSet>(args("torrent-set", R"({"bandwidthPriority":1,"ids":1,"peer-limit":30,
        "seedRatioLimit":1.5000,"seedRatioMode":1,"files-unwanted":[0],"priority-high":[1],
        "honorsSessionLimits":false,"labels":["a"],"trackerAdd":["http://t/announce"],"trackerRemove":[0],
        "seedIdleLimit":5,"seedIdleMode":2,"queuePosition":3,"location":"/data"})"));
    EXPECT_EQ(set.bandwidth_priority, Priority::high);
    EXPECT_EQ(set.peer_limit, 30);
    EXPECT_EQ(set.seed_ratio_limit, 1.5);
    EXPECT_EQ(set.seed_ratio_mode, LimitMode::single);
    EXPECT_EQ(set.files_unwanted, (std::vector<std::uint32_t>{0}));
    EXPECT_EQ(set.priority_high, (std::vector<std::uint32_t>{1}));
    EXPECT_EQ(set.honors_session_limits, false);
    EXPECT_EQ(set.labels, (std::vector<std::string>{"a"}));
    EXPECT_EQ(set.tracker_add, (std::vector<std::string>{"http://t/announce"}));
    EXPECT_EQ(set.tracker_remove, (std::vector<std::int64_t>{0}));
    EXPECT_EQ(set.seed_idle_limit_minutes, 5);
    EXPECT_EQ(set.seed_idle_mode, LimitMode::unlimited);
    EXPECT_EQ(set.queue_position, 3);
    EXPECT_EQ(set.location, "/data");
    EXPECT_EQ(method<TorrentSet>(args("torrent-set", R"({"seedRatioMode":0})")).seed_ratio_mode, LimitMode::global);
    EXPECT_EQ(method<TorrentSet>(args("torrent-set", R"({"trackerReplace":[0,"x"]})")).ignored_keys,
              (std::vector<std::string>{"trackerReplace"}));
}

TEST(RpcTorrentSet, WrongTypesEverywhere) {
    const std::vector<std::pair<std::string, std::string>> cases = {
        {R"({"downloadLimit":"50"})", "'downloadLimit'"},     {R"({"downloadLimit":-5})", "'downloadLimit'"},
        {R"({"downloadLimited":"true"})", "'downloadLimited'"}, {R"({"uploadLimit":5.5})", "'uploadLimit'"},
        {R"({"uploadLimited":0})", "'uploadLimited'"},        {R"({"honorsSessionLimits":[]})", "'honorsSessionLimits'"},
        {R"({"seedRatioLimit":"1.5"})", "'seedRatioLimit'"},  {R"({"seedRatioMode":3})", "'seedRatioMode'"},
        {R"({"seedRatioMode":-1})", "'seedRatioMode'"},       {R"({"peer-limit":{}})", "'peer-limit'"},
        {R"({"bandwidthPriority":"high"})", "'bandwidthPriority'"}, {R"({"files-wanted":{}})", "'files-wanted'"},
        {R"({"files-unwanted":[4294967296]})", "'files-unwanted'"}, {R"({"labels":"a"})", "'labels'"},
        {R"({"trackerRemove":[-1]})", "'trackerRemove'"},     {R"({"trackerAdd":[null]})", "'trackerAdd'"},
        {R"({"location":"rel"})", "'location'"},              {R"({"queuePosition":-1})", "'queuePosition'"},
        {R"({"ids":{}})", "'ids'"},
    };
    for (const auto& [arguments, expected] : cases) {
        EXPECT_THAT(method_error(args("torrent-set", arguments)), HasSubstr("argument " + expected + " must be"))
            << arguments;
    }
    std::string huge = "[0";
    for (int i = 1; i <= 100'000; ++i) huge += ",0";
    huge += "]";
    EXPECT_THAT(method_error(args("torrent-set", R"({"files-wanted":)" + huge + "}")), HasSubstr("at most 100000"));
    const std::string long_label = std::string(70'000, 'l');
    EXPECT_THAT(method_error(args("torrent-set", R"({"labels":[")" + long_label + "\"]}")), HasSubstr("at most 65536 bytes"));
}

// --- Rendering ---

TorrentView sample_torrent() {
    TorrentView t;
    t.id = 1;
    t.hash = hash_of(kHash);
    t.name = "multi";
    t.status = TorrentStatus::downloading;
    t.error = TorrentError::tracker_warning;
    t.error_string = "tracker said hi";
    t.percent_done = 0.5;
    t.size_when_done = 305000;
    t.total_size = 305000;
    t.left_until_done = 152500;
    t.have_valid = 152500;
    t.upload_ratio = 0.25;
    t.rate_download = 2048;
    t.rate_upload = 1000;
    t.eta = 75;
    t.peers_connected = 3;
    t.peers_sending_to_us = 2;
    t.peers_getting_from_us = 1;
    t.added_date = 1796369687;
    t.download_dir = "/tmp/dl";
    t.piece_count = 10;
    t.piece_size = 32768;
    t.pieces = std::string("\xff\xc0", 2);
    t.comment = "a comment";
    t.creator = "piecework";
    t.magnet_link = "magnet:?xt=urn:btih:373a052ba104353cb3e3e696249f57a517d226f6";
    t.files = {{"multi/a.bin", 300000, 150000, true, Priority::high}, {"multi/b.txt", 5000, 0, false, Priority::low}};
    TrackerView tracker;
    tracker.announce = "http://127.0.0.1:6969/announce";
    tracker.host = "http://127.0.0.1:6969";
    tracker.announce_state = 1;
    t.trackers = {tracker};
    PeerView peer;
    peer.address = "10.0.0.2";
    peer.port = 6881;
    peer.client_name = "libtorrent";
    peer.flag_str = "D";
    peer.progress = 1.0;
    peer.rate_to_client = 4096;
    t.peers = {peer};
    return t;
}

json parse_reply(const std::string& body) {
    json reply = json::parse(body);
    EXPECT_TRUE(reply.is_object());
    return reply;
}

TEST(RpcRender, TheListFieldsWithTheTypesTransmissionRemoteNeeds) {
    TorrentGet get;
    get.fields = {"error", "errorString", "eta",  "id",     "isFinished", "leftUntilDone", "name", "peersGettingFromUs",
                  "peersSendingToUs", "rateDownload", "rateUpload", "sizeWhenDone", "status", "uploadRatio"};
    const std::vector<TorrentView> torrents = {sample_torrent()};
    const json reply = parse_reply(render_success(4, torrent_get_arguments(get, torrents)));
    EXPECT_EQ(reply["result"], "success");
    EXPECT_EQ(reply["tag"], 4);
    const json& t = reply["arguments"]["torrents"][0];
    EXPECT_EQ(t.size(), 14u);
    for (const char* integer : {"error", "eta", "id", "leftUntilDone", "peersGettingFromUs", "peersSendingToUs",
                                "rateDownload", "rateUpload", "sizeWhenDone", "status"}) {
        EXPECT_TRUE(t[integer].is_number_integer()) << integer;
    }
    EXPECT_TRUE(t["uploadRatio"].is_number_float());
    EXPECT_TRUE(t["isFinished"].is_boolean());
    EXPECT_TRUE(t["errorString"].is_string());
    EXPECT_EQ(t["status"], 4);
    EXPECT_EQ(t["error"], 1);
    EXPECT_EQ(t["eta"], 75);
    EXPECT_EQ(t["uploadRatio"], 0.25);
    EXPECT_EQ(t["name"], "multi");
}

TEST(RpcRender, EveryFieldTransmissionRemoteAsksForIsKnown) {
    // -i (details_keys), -l (list_keys), -f (files_keys), -ip, -ic, -it of transmission-remote 3.00.
    for (const char* field :
         {"activityDate", "addedDate", "bandwidthPriority", "comment", "corruptEver", "creator", "dateCreated",
          "desiredAvailable", "doneDate", "downloadDir", "downloadedEver", "downloadLimit", "downloadLimited", "error",
          "errorString", "eta", "hashString", "haveUnchecked", "haveValid", "honorsSessionLimits", "id", "isFinished",
          "isPrivate", "labels", "leftUntilDone", "magnetLink", "name", "peersConnected", "peersGettingFromUs",
          "peersSendingToUs", "peer-limit", "pieceCount", "pieceSize", "rateDownload", "rateUpload", "recheckProgress",
          "secondsDownloading", "secondsSeeding", "seedRatioMode", "seedRatioLimit", "sizeWhenDone", "startDate",
          "status", "totalSize", "uploadedEver", "uploadLimit", "uploadLimited", "webseeds", "webseedsSendingToUs",
          "uploadRatio", "files", "priorities", "wanted", "peers", "pieces", "trackerStats", "fileStats", "trackers",
          "percentDone", "peersFrom", "file-count", "percentComplete"}) {
        EXPECT_TRUE(is_torrent_field(field)) << field;
    }
    EXPECT_FALSE(is_torrent_field("bogus"));
    EXPECT_FALSE(is_torrent_field(""));
}

TEST(RpcRender, DetailsFilesTrackersPeersAndPieces) {
    TorrentGet get;
    get.fields = {"hashString", "files", "fileStats", "priorities", "wanted", "trackerStats", "trackers",
                  "peers", "pieces", "pieceCount", "labels", "webseeds", "isPrivate", "seedRatioLimit",
                  "seedRatioMode", "bandwidthPriority", "downloadLimited", "peersFrom", "file-count"};
    const std::vector<TorrentView> torrents = {sample_torrent()};
    const json t = parse_reply(render_success(2, torrent_get_arguments(get, torrents)))["arguments"]["torrents"][0];
    EXPECT_EQ(t["hashString"], std::string(kHash));
    EXPECT_EQ(t["files"], json::parse(R"([{"bytesCompleted":150000,"length":300000,"name":"multi/a.bin"},
                                         {"bytesCompleted":0,"length":5000,"name":"multi/b.txt"}])"));
    EXPECT_EQ(t["fileStats"], json::parse(R"([{"bytesCompleted":150000,"wanted":true,"priority":1},
                                             {"bytesCompleted":0,"wanted":false,"priority":-1}])"));
    EXPECT_EQ(t["priorities"], json::parse("[1,-1]"));
    EXPECT_EQ(t["wanted"], json::parse("[1,0]"));  // integers, as transmission-daemon 3.00 sends them
    EXPECT_EQ(t["file-count"], 2);
    ASSERT_EQ(t["trackerStats"].size(), 1u);
    const json& tracker = t["trackerStats"][0];
    EXPECT_EQ(tracker["host"], "http://127.0.0.1:6969");
    EXPECT_EQ(tracker["announceState"], 1);
    EXPECT_EQ(tracker["seederCount"], -1);
    for (const char* flag : {"hasAnnounced", "hasScraped", "isBackup", "lastAnnounceSucceeded", "lastAnnounceTimedOut",
                             "lastScrapeSucceeded", "lastScrapeTimedOut"}) {
        EXPECT_TRUE(tracker[flag].is_boolean()) << flag;
    }
    for (const char* number : {"downloadCount", "id", "lastAnnouncePeerCount", "lastAnnounceStartTime",
                               "lastAnnounceTime", "lastScrapeStartTime", "lastScrapeTime", "leecherCount",
                               "nextAnnounceTime", "nextScrapeTime", "scrapeState", "tier"}) {
        EXPECT_TRUE(tracker[number].is_number_integer()) << number;
    }
    EXPECT_EQ(t["trackers"][0]["announce"], "http://127.0.0.1:6969/announce");
    const json& peer = t["peers"][0];
    EXPECT_EQ(peer["address"], "10.0.0.2");
    EXPECT_TRUE(peer["progress"].is_number_float());
    EXPECT_EQ(peer["rateToClient"], 4096);
    EXPECT_EQ(peer["flagStr"], "D");
    EXPECT_EQ(t["pieces"], "/8A=");  // what transmission-daemon sends for 10 of 10 pieces
    EXPECT_EQ(t["labels"], json::array());
    EXPECT_EQ(t["webseeds"], json::array());
    EXPECT_EQ(t["isPrivate"], false);
    EXPECT_TRUE(t["seedRatioLimit"].is_number_float());
    EXPECT_EQ(t["seedRatioMode"], 0);
    EXPECT_EQ(t["bandwidthPriority"], 0);
    EXPECT_EQ(t["peersFrom"]["fromTracker"], 0);
}

TEST(RpcRender, UnknownFieldsAreIgnoredAndRepeatedOnesRenderedOnce) {
    TorrentGet get;
    get.fields = {"name", "bogus", "id", "name", ""};
    const std::vector<TorrentView> torrents = {sample_torrent(), sample_torrent()};
    const json reply = torrent_get_arguments(get, torrents);
    ASSERT_EQ(reply["torrents"].size(), 2u);
    EXPECT_EQ(reply["torrents"][0], json::parse(R"({"id":1,"name":"multi"})"));
    EXPECT_FALSE(reply.contains("removed"));

    get.fields = {"bogus"};
    EXPECT_EQ(torrent_get_arguments(get, torrents)["torrents"][0], json::object());
    EXPECT_EQ(torrent_object(sample_torrent(), std::vector<std::string>{"id"}), json::parse(R"({"id":1})"));
}

TEST(RpcRender, TableFormatHasTheKeysFirst) {
    TorrentGet get;
    get.fields = {"id", "bogus", "name", "id", "uploadRatio"};
    get.format = Format::table;
    std::vector<TorrentView> torrents = {sample_torrent(), sample_torrent()};
    torrents[1].id = 2;
    torrents[1].name = "two";
    const json reply = torrent_get_arguments(get, torrents);
    EXPECT_EQ(reply["torrents"], json::parse(R"([["id","name","uploadRatio"],[1,"multi",0.25],[2,"two",0.25]])"));
    const json empty = torrent_get_arguments(get, {});
    EXPECT_EQ(empty["torrents"], json::parse(R"([["id","name","uploadRatio"]])"));
}

TEST(RpcRender, RecentlyActiveListsTheRemoved) {
    TorrentGet get;
    get.fields = {"id"};
    const std::vector<std::uint32_t> removed = {4, 9};
    const json reply = torrent_get_arguments(get, {}, &removed);
    EXPECT_EQ(reply, json::parse(R"({"torrents":[],"removed":[4,9]})"));
}

TEST(RpcRender, NonFiniteNumbersAndBrokenUtf8NeverBreakTheReply) {
    TorrentView t = sample_torrent();
    t.upload_ratio = std::numeric_limits<double>::infinity();
    t.percent_done = std::numeric_limits<double>::quiet_NaN();
    t.name = "bad \xff\xfe name";
    t.files[0].name = "\xc3";
    TorrentGet get;
    get.fields = {"uploadRatio", "percentDone", "name", "files"};
    const std::vector<TorrentView> torrents = {t};
    const std::string body = render_success(1, torrent_get_arguments(get, torrents));
    const json reply = parse_reply(body);
    const json& rendered = reply["arguments"]["torrents"][0];
    EXPECT_EQ(rendered["uploadRatio"], kRatioInfinite);
    EXPECT_TRUE(rendered["uploadRatio"].is_number_float());
    EXPECT_EQ(rendered["percentDone"], 0.0);
    EXPECT_EQ(rendered["name"], "bad \xef\xbf\xbd\xef\xbf\xbd name");
    t.upload_ratio = std::numeric_limits<double>::quiet_NaN();
    get.fields = {"uploadRatio"};
    const std::vector<TorrentView> nan_ratio = {t};
    EXPECT_EQ(torrent_get_arguments(get, nan_ratio)["torrents"][0]["uploadRatio"], kRatioNotAvailable);
    EXPECT_NO_THROW(parse_reply(render_error(2, "bad \xff message")));
}

TEST(RpcRender, SuccessAndErrorShapes) {
    EXPECT_EQ(render_success(std::nullopt), R"({"arguments":{},"result":"success"})");
    EXPECT_EQ(render_success(3), R"({"arguments":{},"result":"success","tag":3})");
    EXPECT_EQ(render_error(5, "method name not recognized"),
              R"({"arguments":{},"result":"method name not recognized","tag":5})");
    EXPECT_EQ(render_error(std::nullopt, "x \"quoted\""), R"({"arguments":{},"result":"x \"quoted\""})");
    EXPECT_EQ(render_success(-1, port_test_arguments(true)), R"({"arguments":{"port-is-open":true},"result":"success","tag":-1})");
    EXPECT_EQ(free_space_arguments("/tmp", 84263763968, 100000000000),
              json::parse(R"({"path":"/tmp","size-bytes":84263763968,"total_size":100000000000})"));
}

TEST(RpcRender, TorrentAddedAndDuplicate) {
    const TorrentView t = sample_torrent();
    EXPECT_EQ(torrent_added_arguments(t, false),
              json::parse(R"({"torrent-added":{"hashString":"373a052ba104353cb3e3e696249f57a517d226f6","id":1,"name":"multi"}})"));
    EXPECT_EQ(torrent_added_arguments(t, true).begin().key(), "torrent-duplicate");
}

TEST(RpcRender, SessionGetHasEverythingTransmissionRemoteSiPrints) {
    SessionView session;
    session.version = "piecework 0.1.0";
    session.session_id = "abc";
    session.download_dir = "/srv/dl";
    session.config_dir = "/etc/pw";
    session.seed_ratio_limit = 2;
    const json all = session_arguments(session);
    // -si prints its LIMITS block only when all of these are there with these types.
    for (const char* integer : {"alt-speed-down", "alt-speed-time-begin", "alt-speed-time-end", "alt-speed-time-day",
                                "alt-speed-up", "peer-limit-global", "speed-limit-down", "speed-limit-up",
                                "rpc-version", "rpc-version-minimum", "peer-port", "cache-size-mb"}) {
        EXPECT_TRUE(all[integer].is_number_integer()) << integer;
    }
    for (const char* flag : {"alt-speed-enabled", "alt-speed-time-enabled", "speed-limit-down-enabled",
                             "speed-limit-up-enabled", "seedRatioLimited", "port-forwarding-enabled", "utp-enabled",
                             "dht-enabled", "lpd-enabled", "pex-enabled", "start-added-torrents",
                             "trash-original-torrent-files"}) {
        EXPECT_TRUE(all[flag].is_boolean()) << flag;
    }
    EXPECT_TRUE(all["seedRatioLimit"].is_number_float());
    EXPECT_EQ(all["version"], "piecework 0.1.0");
    EXPECT_EQ(all["rpc-version"], 17);
    EXPECT_EQ(all["rpc-version-semver"], "5.3.0");
    EXPECT_EQ(all["session-id"], "abc");
    EXPECT_EQ(all["encryption"], "preferred");
    EXPECT_EQ(all["download-dir"], "/srv/dl");
    EXPECT_EQ(all["config-dir"], "/etc/pw");
    EXPECT_EQ(all["units"]["speed-bytes"], 1000);
    EXPECT_FALSE(all.contains("download-dir-free-space"));
    for (const auto& [name, value] : all.items()) EXPECT_TRUE(is_session_field(name)) << name;

    const std::vector<std::string> fields = {"version", "rpc-version", "bogus", "download-dir-free-space"};
    EXPECT_EQ(session_arguments(session, fields), json::parse(R"({"rpc-version":17,"version":"piecework 0.1.0"})"));
    session.download_dir_free_space = 5;
    EXPECT_EQ(session_arguments(session, fields)["download-dir-free-space"], 5);
    EXPECT_EQ(session_arguments(session)["download-dir-free-space"], 5);
}

TEST(RpcRender, SessionStats) {
    SessionStatsView stats;
    stats.torrent_count = 2;
    stats.active_torrent_count = 1;
    stats.current.uploaded_bytes = 10;
    stats.cumulative.session_count = 4;
    const json rendered = session_stats_arguments(stats);
    EXPECT_EQ(rendered["torrentCount"], 2);
    EXPECT_EQ(rendered["activeTorrentCount"], 1);
    EXPECT_EQ(rendered["current-stats"],
              json::parse(R"({"downloadedBytes":0,"filesAdded":0,"secondsActive":0,"sessionCount":1,"uploadedBytes":10})"));
    EXPECT_EQ(rendered["cumulative-stats"]["sessionCount"], 4);
}

// --- Base64 ---

TEST(RpcBase64, RoundTripsAndRefusesWhatIsNotBase64) {
    for (const std::string& bytes : {std::string(), std::string("f"), std::string("fo"), std::string("foo"),
                                    std::string("foob"), std::string("fooba"), std::string("foobar"),
                                    std::string("\x00\xff\x10", 3)}) {
        EXPECT_EQ(decode_base64(encode_base64(bytes)), bytes);
    }
    EXPECT_EQ(encode_base64("foobar"), "Zm9vYmFy");
    EXPECT_EQ(encode_base64("fo"), "Zm8=");
    EXPECT_EQ(decode_base64("Zm9v\r\nYmFy\n"), "foobar");
    EXPECT_EQ(decode_base64("Zm8"), "fo");  // padding left out
    EXPECT_EQ(decode_base64("Zm8= "), "fo");
    for (const char* bad : {"Z", "Zm9vY", "Zm8==", "Zm=8", "=Zm8", "Zm9v=YmFy", "Zm-8", "Zm_8", "Zm8===",
                            "Zg===", "Z===", "===="}) {
        EXPECT_EQ(decode_base64(bad), std::nullopt) << bad;
    }
}

}  // namespace
}  // namespace pw::rpc
