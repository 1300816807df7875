#include "core/magnet.hpp"

#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

namespace pw::magnet {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;

// WebTorrent's well-known Sintel link, as its site publishes it.
const std::string kSintel =
    "magnet:?xt=urn:btih:08ada5a7a6183aae1e09d831df6748d566095a10&dn=Sintel"
    "&tr=udp%3A%2F%2Fexplodie.org%3A6969&tr=udp%3A%2F%2Ftracker.coppersurfer.tk%3A6969"
    "&tr=udp%3A%2F%2Ftracker.empire-js.us%3A1337&tr=udp%3A%2F%2Ftracker.leechers-paradise.org%3A6969"
    "&tr=udp%3A%2F%2Ftracker.opentrackr.org%3A1337&tr=wss%3A%2F%2Ftracker.btorrent.xyz"
    "&tr=wss%3A%2F%2Ftracker.fastcast.nz&tr=wss%3A%2F%2Ftracker.openwebtorrent.com"
    "&ws=https%3A%2F%2Fwebtorrent.io%2Ftorrents%2F&xs=https%3A%2F%2Fwebtorrent.io%2Ftorrents%2Fsintel.torrent";
const std::string kSintelHex = "08ada5a7a6183aae1e09d831df6748d566095a10";
const std::string kSintelBase32 = "BCW2LJ5GDA5K4HQJ3AY56Z2I2VTASWQQ";

MagnetLink parsed(const std::string& uri) {
    auto link = parse_magnet(uri);
    EXPECT_TRUE(link.ok()) << uri << ": " << (link.ok() ? "" : link.error().describe());
    return link.ok() ? link.value() : MagnetLink{};
}

std::string refusal(const std::string& uri) {
    auto link = parse_magnet(uri);
    EXPECT_FALSE(link.ok()) << uri << " parsed";
    return link.ok() ? std::string() : link.error().describe();
}

std::string with_hash(const std::string& rest) { return "magnet:?xt=urn:btih:" + kSintelHex + rest; }

TEST(Magnet, RealWorldWebTorrentLink) {
    const MagnetLink link = parsed(kSintel);
    EXPECT_EQ(to_hex(link.info_hash), kSintelHex);
    EXPECT_EQ(link.display_name, "Sintel");
    EXPECT_THAT(link.trackers,
                ElementsAre("udp://explodie.org:6969", "udp://tracker.coppersurfer.tk:6969",
                            "udp://tracker.empire-js.us:1337", "udp://tracker.leechers-paradise.org:6969",
                            "udp://tracker.opentrackr.org:1337"));
    // The wss:// trackers are WebTorrent's: left out, each with a word why.
    ASSERT_EQ(link.warnings.size(), 3u);
    EXPECT_THAT(link.warnings[0], HasSubstr("tr #6: wss:// trackers are not supported"));
    EXPECT_THAT(link.web_seeds, ElementsAre("https://webtorrent.io/torrents/"));
    EXPECT_THAT(link.peers, IsEmpty());
    EXPECT_THAT(link.select_only, IsEmpty());
}

TEST(Magnet, EachTrackerIsATierOfItsOwnInOrder) {
    const MagnetLink link = parsed(with_hash("&tr=http%3A%2F%2Fa%2Fannounce&tr=udp%3A%2F%2Fb%3A80&tr=https://c/x"));
    const std::vector<std::vector<std::string>> tiers{{"http://a/announce"}, {"udp://b:80"}, {"https://c/x"}};
    EXPECT_EQ(link.tracker_tiers(), tiers);
}

TEST(Magnet, HexAndBase32InEitherCase) {
    const Sha1Digest expected = *sha1_from_hex(kSintelHex);
    EXPECT_EQ(parsed("magnet:?xt=urn:btih:" + kSintelHex).info_hash, expected);
    EXPECT_EQ(parsed("magnet:?xt=urn:btih:08ADA5A7A6183AAE1E09D831DF6748D566095A10").info_hash, expected);
    EXPECT_EQ(parsed("magnet:?xt=urn:btih:" + kSintelBase32).info_hash, expected);
    EXPECT_EQ(parsed("magnet:?xt=urn:btih:bcw2lj5gda5k4hqj3ay56z2i2vtaswqq").info_hash, expected);
    // Scheme and URN prefix in any case.
    EXPECT_EQ(parsed("MAGNET:?xt=URN:BTIH:" + kSintelBase32).info_hash, expected);
    // Another well-known pair: the same digest, hex and base32.
    EXPECT_EQ(parsed("magnet:?xt=urn:btih:3WBFL3G4PSSV7MF37AJSHWDQMLNR63I4").info_hash,
              *sha1_from_hex("dd8255ecdc7ca55fb0bbf81323d87062db1f6d1c"));
}

TEST(Magnet, PercentEncodedUtf8DisplayName) {
    const MagnetLink link = parsed(with_hash("&dn=%E6%97%A5%E6%9C%AC%E8%AA%9E+file%2B1"));
    EXPECT_EQ(link.display_name, "\xE6\x97\xA5\xE6\x9C\xAC\xE8\xAA\x9E file+1");
    // Raw UTF-8 in the link, as some sites paste it, is taken too.
    EXPECT_EQ(parsed(with_hash("&dn=caf\xC3\xA9")).display_name, "caf\xC3\xA9");
}

TEST(Magnet, DisplayNameIsSanitizedForDisplay) {
    const std::string replacement = "\xEF\xBF\xBD";
    // Control characters, a right-to-left override and invalid UTF-8 each become U+FFFD.
    EXPECT_EQ(parsed(with_hash("&dn=a%07b%E2%80%AEc%FFd%C0%AFe")).display_name,
              "a" + replacement + "b" + replacement + "c" + replacement + "d" + replacement + replacement + "e");
    // Cut on a character boundary at 1024 bytes.
    std::string long_name;
    for (int i = 0; i < 600; ++i) long_name += "%C3%A9";  // 1200 bytes of 'é'
    const std::string name = parsed(with_hash("&dn=x" + long_name)).display_name;
    EXPECT_EQ(name.size(), 1023u);  // "x" + 511 * 2 bytes
    EXPECT_EQ(name.substr(name.size() - 2), "\xC3\xA9");
    // The first dn wins.
    EXPECT_EQ(parsed(with_hash("&dn=one&dn=two")).display_name, "one");
}

TEST(Magnet, PeersInEveryForm) {
    const MagnetLink link = parsed(with_hash(
        "&x.pe=10.0.0.1%3A6881&x.pe=[2001:DB8::1]:51413&x.pe=%5B%3A%3A1%5D%3A80&x.pe=Seed.Example.org:443"
        "&x.pe=10.0.0.1:6881"));
    EXPECT_THAT(link.peers, ElementsAre(Peer{"10.0.0.1", 6881}, Peer{"2001:db8::1", 51413}, Peer{"::1", 80},
                                        Peer{"seed.example.org", 443}));
}

TEST(Magnet, IndexedKeysAndRepeatsAndFragments) {
    const MagnetLink link = parsed("magnet:?xt.1=urn:btih:" + kSintelHex + "&xt.2=urn:btih:" + kSintelBase32 +
                                   "&xt.3=urn:sha1:ABCDEF&tr.1=http://a/&tr.2=http://b/&tr=http://a/" +
                                   "&xl=10&kt=x&&as=foo#fragment&tr=http://c/");
    EXPECT_EQ(to_hex(link.info_hash), kSintelHex);
    EXPECT_THAT(link.trackers, ElementsAre("http://a/", "http://b/"));
    EXPECT_THAT(link.warnings, IsEmpty());
}

TEST(Magnet, PlusStaysLiteralInUrls) {
    EXPECT_THAT(parsed(with_hash("&tr=http://t/a+b%2Bc")).trackers, ElementsAre("http://t/a+b+c"));
}

TEST(Magnet, HybridLinkIsReadByItsBtih) {
    const MagnetLink link =
        parsed("magnet:?xt=urn:btih:" + kSintelHex +
               "&xt=urn:btmh:1220caf1e1c30e81cb361b9ee167c4aa64228a7fa4fa9f6105232b28ad099f3a302e&dn=hybrid");
    EXPECT_EQ(to_hex(link.info_hash), kSintelHex);
}

TEST(Magnet, SelectOnly) {
    const MagnetLink link = parsed(with_hash("&so=0,2,4-6&so=9%2C10-10"));
    EXPECT_THAT(link.select_only, ElementsAre(FileRange{0, 0}, FileRange{2, 2}, FileRange{4, 6}, FileRange{9, 9},
                                              FileRange{10, 10}));
    EXPECT_THAT(refusal(with_hash("&so=1-")), HasSubstr("so #1 is not a list of file indices"));
    EXPECT_THAT(refusal(with_hash("&so=3-1")), HasSubstr("runs backwards"));
    EXPECT_THAT(refusal(with_hash("&so=1,,2")), HasSubstr("so #1"));
    EXPECT_THAT(refusal(with_hash("&so=a")), HasSubstr("so #1"));
    EXPECT_THAT(refusal(with_hash("&so=1000000")), HasSubstr("over 999999"));
    std::string many = "0";
    for (std::size_t i = 1; i <= kMaxSelectRanges; ++i) many += "," + std::to_string(i);
    EXPECT_THAT(refusal(with_hash("&so=" + many)), HasSubstr("more than 1024 items"));
}

TEST(Magnet, WhatIsNotAMagnetLink) {
    EXPECT_THAT(refusal(""), HasSubstr("not a magnet link"));
    EXPECT_THAT(refusal("http://example.org/x.torrent"), HasSubstr("not a magnet link"));
    EXPECT_THAT(refusal("magnet:"), HasSubstr("not a magnet link"));
    EXPECT_THAT(refusal("magnet:xt=urn:btih:" + kSintelHex), HasSubstr("not a magnet link"));
}

TEST(Magnet, MissingOrMalformedInfoHash) {
    EXPECT_THAT(refusal("magnet:?"), HasSubstr("no xt=urn:btih"));
    EXPECT_THAT(refusal("magnet:?dn=x&tr=http://a/"), HasSubstr("no xt=urn:btih"));
    EXPECT_THAT(refusal("magnet:?xt=urn:sha1:YNCKHTQCWBTRNJIV4WNAE52SJUQCZO5C"), HasSubstr("no xt=urn:btih"));
    EXPECT_THAT(refusal("magnet:?xt"), HasSubstr("no xt=urn:btih"));
    const std::string message = "info-hash is not 40 hex or 32 base32 characters";
    EXPECT_THAT(refusal("magnet:?xt=urn:btih:"), HasSubstr(message));
    EXPECT_THAT(refusal("magnet:?xt=urn:btih:08ada5a7"), HasSubstr(message));
    EXPECT_THAT(refusal("magnet:?xt=urn:btih:" + kSintelHex + "0"), HasSubstr(message));
    EXPECT_THAT(refusal("magnet:?xt=urn:btih:08ada5a7a6183aae1e09d831df6748d566095a1g"), HasSubstr(message));
    // Base32 has no 0, 1, 8 or 9.
    EXPECT_THAT(refusal("magnet:?xt=urn:btih:BCW2LJ5GDA5K4HQJ3AY56Z2I2VTASWQ1"), HasSubstr(message));
    EXPECT_THAT(refusal("magnet:?xt=urn:btih:BCW2LJ5GDA5K4HQJ3AY56Z2I2VTASWQ8"), HasSubstr(message));
}

TEST(Magnet, V2OnlyAndAmbiguousLinks) {
    EXPECT_THAT(refusal("magnet:?xt=urn:btmh:1220caf1e1c30e81cb361b9ee167c4aa64228a7fa4fa9f6105232b28ad099f3a302e"),
                HasSubstr("v2-only magnet link (xt=urn:btmh)"));
    EXPECT_THAT(refusal(with_hash("&xt=urn:btih:dd8255ecdc7ca55fb0bbf81323d87062db1f6d1c")),
                HasSubstr("two different xt=urn:btih"));
    // The same hash twice, in hex and base32, is no ambiguity.
    EXPECT_EQ(to_hex(parsed(with_hash("&xt=urn:btih:" + kSintelBase32)).info_hash), kSintelHex);
}

TEST(Magnet, StrictPercentDecoding) {
    EXPECT_THAT(refusal(with_hash("&dn=%4")), HasSubstr("dn: '%' is not followed by two hex digits"));
    EXPECT_THAT(refusal(with_hash("&dn=%")), HasSubstr("dn: '%'"));
    EXPECT_THAT(refusal(with_hash("&dn=%zz")), HasSubstr("dn: '%'"));
    EXPECT_THAT(refusal(with_hash("&dn=a%00b")), HasSubstr("NUL"));
    EXPECT_THAT(refusal(with_hash("&tr=http://a/%0")), HasSubstr("tr #1: '%'"));
    // A raw control character anywhere.
    EXPECT_THAT(refusal(with_hash("&dn=a\tb")), HasSubstr("control character"));
    EXPECT_THAT(refusal(with_hash("&dn=a\nb")), HasSubstr("control character"));
}

TEST(Magnet, PercentEncodedXtIsDecoded) {
    EXPECT_EQ(to_hex(parsed("magnet:?xt=urn%3Abtih%3A" + kSintelHex).info_hash), kSintelHex);
}

TEST(Magnet, MalformedTrackersAndWebSeeds) {
    EXPECT_THAT(refusal(with_hash("&tr=not-a-url")), HasSubstr("tr #1 is not a URL"));
    EXPECT_THAT(refusal(with_hash("&tr=http://ok/&tr=://x")), HasSubstr("tr #2 is not a URL"));
    EXPECT_THAT(refusal(with_hash("&tr=http%3A%2F%2Fa%20b%2F")), HasSubstr("tr #1 is not a URL: it holds a space"));
    EXPECT_THAT(refusal(with_hash("&tr=1http://x/")), HasSubstr("tr #1 is not a URL"));
    EXPECT_THAT(refusal(with_hash("&tr=http://")), HasSubstr("tr #1 is not a URL"));
    EXPECT_THAT(refusal(with_hash("&ws=ftp:/x")), HasSubstr("ws #1 is not a URL"));
    EXPECT_THAT(refusal(with_hash("&tr=http://x/" + std::string(kMaxUrl, 'a'))), HasSubstr("longer than 2048"));
    // Usable but unsupported: left out, with a warning.
    const MagnetLink link = parsed(with_hash("&tr=&tr=ws://t/&ws=ftp://mirror/x&ws=http://m/"));
    EXPECT_THAT(link.trackers, IsEmpty());
    EXPECT_THAT(link.web_seeds, ElementsAre("http://m/"));
    EXPECT_THAT(link.warnings, ElementsAre("tr #1 is empty: left out", "tr #2: ws:// trackers are not supported: left out",
                                           "ws #1: ftp:// web seeds are not supported: left out"));
}

TEST(Magnet, MalformedPeers) {
    const std::string message = "x.pe #1 is not host:port or [IPv6]:port";
    for (const std::string peer : {"10.0.0.1", "10.0.0.1:", "10.0.0.1:0", "10.0.0.1:65536", "10.0.0.1:123456",
                                   "10.0.0.1:8a", "::1:80", "[::1:80", "[::1]80", "[::1]", "[10.0.0.1]:80",
                                   "[zz::1]:80", "bad_host:80", "-bad.org:80", "bad-.org:80", "a..b:80", ":80",
                                   "a.b.:80"}) {
        EXPECT_THAT(refusal(with_hash("&x.pe=" + peer)), HasSubstr(message)) << peer;
    }
    std::string long_label(64, 'a');
    EXPECT_THAT(refusal(with_hash("&x.pe=" + long_label + ".org:80")), HasSubstr(message));
    std::string long_host;
    for (int i = 0; i < 64; ++i) long_host += "abc.";
    EXPECT_THAT(refusal(with_hash("&x.pe=" + long_host + "org:80")), HasSubstr("at most 253 bytes"));
}

TEST(Magnet, Bounds) {
    std::string huge = with_hash("&dn=");
    huge.append(kMaxLength, 'a');
    EXPECT_THAT(refusal(huge), HasSubstr("longer than 64 KiB"));

    std::string many = with_hash("");
    for (std::size_t i = 0; i < kMaxParameters; ++i) many += "&x=1";
    EXPECT_THAT(refusal(many), HasSubstr("more than 1024 parameters"));

    std::string trackers = with_hash("");
    for (int i = 0; i < 150; ++i) trackers += "&tr=http://t" + std::to_string(i) + "/";
    const MagnetLink link = parsed(trackers);
    EXPECT_EQ(link.trackers.size(), kMaxTrackers);
    EXPECT_EQ(link.trackers.back(), "http://t99/");
    EXPECT_THAT(link.warnings, ElementsAre("50 trackers beyond the first 100 left out"));

    std::string peers = with_hash("");
    for (int i = 1; i <= 120; ++i) peers += "&x.pe=10.0.0." + std::to_string(i % 250) + ":" + std::to_string(i);
    EXPECT_EQ(parsed(peers).peers.size(), kMaxPeers);

    std::string warnings = with_hash("");
    for (int i = 0; i < 40; ++i) warnings += "&tr=wss://t" + std::to_string(i) + "/";
    const MagnetLink warned = parsed(warnings);
    ASSERT_EQ(warned.warnings.size(), kMaxWarnings);
    EXPECT_EQ(warned.warnings.back(), "... and 25 more warnings");
}

TEST(Magnet, MakeMagnetExactly) {
    MagnetLink link;
    link.info_hash = *sha1_from_hex(kSintelHex);
    link.display_name = "a b+c/\xC3\xA9";
    link.trackers = {"http://t.example/announce?x=1&y=2", "udp://u:80"};
    link.web_seeds = {"https://w/"};
    link.peers = {Peer{"10.0.0.1", 6881}, Peer{"::1", 80}};
    link.select_only = {FileRange{0, 0}, FileRange{4, 6}};
    EXPECT_EQ(make_magnet(link),
              "magnet:?xt=urn:btih:" + kSintelHex +
                  "&dn=a%20b%2Bc%2F%C3%A9"
                  "&tr=http%3A%2F%2Ft.example%2Fannounce%3Fx%3D1%26y%3D2&tr=udp%3A%2F%2Fu%3A80"
                  "&ws=https%3A%2F%2Fw%2F&x.pe=10.0.0.1:6881&x.pe=[::1]:80&so=0,4-6");
    EXPECT_EQ(parse_magnet(make_magnet(link)).value(), link);
    EXPECT_EQ(make_magnet(MagnetLink{}), "magnet:?xt=urn:btih:0000000000000000000000000000000000000000");
}

TEST(Magnet, RoundTripsEveryParsedLink) {
    for (const std::string& uri :
         {kSintel, with_hash("&dn=%E6%97%A5+%07%FF&x.pe=[2001:db8::1]:1&so=1,3-5&tr=http://a/%25x"),
          with_hash("&tr=udp://a:1&tr=http://b/&ws=http://c/a%2Bb%7E")}) {
        MagnetLink link = parsed(uri);
        link.warnings.clear();
        auto again = parse_magnet(make_magnet(link));
        ASSERT_TRUE(again.ok()) << make_magnet(link) << ": " << again.error().describe();
        EXPECT_EQ(again.value(), link) << make_magnet(link);
    }
}

TEST(Magnet, PercentEncodeKeepsOnlyUnreserved) {
    EXPECT_EQ(percent_encode("AZaz09-._~ !*'()%"), "AZaz09-._~%20%21%2A%27%28%29%25");
    EXPECT_EQ(percent_encode(std::string("\0\xFF", 2)), "%00%FF");
}

// libtorrent (python3-libtorrent, when installed) reads what make_magnet writes as we do: the
// same info-hash, name, trackers (one tier each, in order), web seeds and peers.
TEST(Magnet, LibtorrentReadsOurLinks) {
    if (std::system("/usr/bin/python3 -c 'import libtorrent' >/dev/null 2>&1") != 0) {
        GTEST_SKIP() << "python3-libtorrent is not installed";
    }
    MagnetLink link = parsed(kSintel);
    link.display_name = "Sintel & friends+1 \xC3\xA9";
    link.trackers.push_back("http://t.example/announce?passkey=a+b&x=%41");
    link.peers = {Peer{"10.1.2.3", 6881}, Peer{"2001:db8::7", 51413}};
    link.warnings.clear();
    const std::string uri = make_magnet(link);
    const std::string script =
        "import sys, libtorrent as lt\n"
        "p = lt.parse_magnet_uri(sys.argv[1])\n"
        "print(str(p.info_hashes.v1))\n"
        "print(p.name)\n"
        "print('|'.join(p.trackers))\n"
        "print('|'.join(str(t) for t in p.tracker_tiers))\n"
        "print('|'.join(p.url_seeds))\n"
        "print('|'.join('%s:%d' % (a, b) for a, b in p.peers))\n";
    char path[] = "/tmp/pw_magnet_interop_XXXXXX";
    const int fd = mkstemp(path);
    ASSERT_GE(fd, 0);
    FILE* file = fdopen(fd, "w");
    ASSERT_NE(file, nullptr);
    std::fputs(script.c_str(), file);
    std::fclose(file);
    const std::string command = std::string("/usr/bin/python3 ") + path + " '" + uri + "'";
    FILE* pipe = popen(command.c_str(), "r");
    ASSERT_NE(pipe, nullptr);
    std::string output;
    char buffer[4096];
    while (std::fgets(buffer, sizeof buffer, pipe) != nullptr) output += buffer;
    EXPECT_EQ(pclose(pipe), 0) << output;
    std::remove(path);

    std::string trackers, tiers;
    for (std::size_t i = 0; i < link.trackers.size(); ++i) {
        trackers += (i > 0 ? "|" : "") + link.trackers[i];
        tiers += (i > 0 ? "|" : "") + std::to_string(i);
    }
    const std::string expected = kSintelHex + "\n" + link.display_name + "\n" + trackers + "\n" + tiers + "\n" +
                                 "https://webtorrent.io/torrents/\n" + "10.1.2.3:6881|2001:db8::7:51413\n";
    EXPECT_EQ(output, expected) << uri;
}

}  // namespace
}  // namespace pw::magnet
