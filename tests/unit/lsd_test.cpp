// Local Service Discovery announces (BEP 14): what we send, and what we take from the LAN.
#include <gtest/gtest.h>

#include <string>

#include "core/lsd.hpp"

namespace pw::lsd {
namespace {

Sha1Digest digest_of(std::uint8_t fill) {
    Sha1Digest d{};
    d.fill(fill);
    return d;
}

TEST(Lsd, OurAnnounceIsBep14sAndReadsBack) {
    Announce announce{6881, {digest_of(0xAB), digest_of(0x01)}, "pw42"};
    const std::string datagram = encode_announce(announce);
    EXPECT_EQ(datagram,
              "BT-SEARCH * HTTP/1.1\r\nHost: 239.192.152.143:6771\r\nPort: 6881\r\n"
              "Infohash: abababababababababababababababababababab\r\n"
              "Infohash: 0101010101010101010101010101010101010101\r\ncookie: pw42\r\n\r\n\r\n");
    auto decoded = decode_announce(datagram);
    ASSERT_TRUE(decoded.ok()) << decoded.error().describe();
    EXPECT_EQ(*decoded, announce);
}

TEST(Lsd, OtherClientsFormsAreTaken) {
    // libtorrent's: LF line ends are tolerated, header names in any case, upper-case hex.
    auto decoded = decode_announce(
        "BT-SEARCH * HTTP/1.1\nHost: 239.192.152.143:6771\nPORT: 51413\n"
        "infohash: ABABABABABABABABABABABABABABABABABABABAB\n\n\n");
    ASSERT_TRUE(decoded.ok()) << decoded.error().describe();
    EXPECT_EQ(decoded->port, 51413);
    EXPECT_EQ(decoded->info_hashes, std::vector<Sha1Digest>{digest_of(0xAB)});
    EXPECT_TRUE(decoded->cookie.empty());
}

TEST(Lsd, AnythingElseIsRefusedWithWhy) {
    const std::string hash = "Infohash: abababababababababababababababababababab\r\n";
    const auto why = [](const std::string& datagram) {
        auto decoded = decode_announce(datagram);
        return decoded.ok() ? std::string("accepted") : decoded.error().describe();
    };
    EXPECT_EQ(why("M-SEARCH * HTTP/1.1\r\nPort: 1\r\n" + hash), "not an LSD announce (no BT-SEARCH * HTTP/1.1 line)");
    EXPECT_EQ(why("BT-SEARCH * HTTP/1.1\r\n" + hash), "LSD announce without a port");
    EXPECT_EQ(why("BT-SEARCH * HTTP/1.1\r\nPort: 0\r\n" + hash), "LSD announce port 0 out of range");
    EXPECT_EQ(why("BT-SEARCH * HTTP/1.1\r\nPort: 99999\r\n" + hash), "LSD announce port 99999 out of range");
    EXPECT_EQ(why("BT-SEARCH * HTTP/1.1\r\nPort: -1\r\n" + hash), "LSD announce port is not a number");
    EXPECT_EQ(why("BT-SEARCH * HTTP/1.1\r\nPort: 1\r\n"), "LSD announce without an info-hash");
    EXPECT_EQ(why("BT-SEARCH * HTTP/1.1\r\nPort: 1\r\nInfohash: xyz\r\n"),
              "LSD announce info-hash is not 40 hex characters");
    EXPECT_EQ(why("BT-SEARCH * HTTP/1.1\r\nPort: 1\r\nnonsense\r\n" + hash), "LSD announce line without a ':'");
    std::string many = "BT-SEARCH * HTTP/1.1\r\nPort: 1\r\n";
    for (int i = 0; i < 17; ++i) many += hash;
    EXPECT_EQ(why(many), "LSD announce with more than 16 info-hashes");
    EXPECT_EQ(why(std::string(1401, 'x')), "LSD announce over 1400 bytes");
    EXPECT_EQ(why("BT-SEARCH * HTTP/1.1\r\nPort: 1\r\ncookie: a b\r\n" + hash), "LSD announce cookie is malformed");
}

}  // namespace
}  // namespace pw::lsd
