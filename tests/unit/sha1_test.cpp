#include "core/sha1.hpp"

#include <gtest/gtest.h>

#include <string>

namespace {

TEST(Sha1, KnownVectors) {
    // FIPS 180 examples.
    EXPECT_EQ(pw::to_hex(pw::sha1("")), "da39a3ee5e6b4b0d3255bfef95601890afd80709");
    EXPECT_EQ(pw::to_hex(pw::sha1("abc")), "a9993e364706816aba3e25717850c26c9cd0d89d");
    EXPECT_EQ(pw::to_hex(pw::sha1("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq")),
              "84983e441c3bd26ebaae4aa1f95129e5e54670f1");
    EXPECT_EQ(pw::to_hex(pw::sha1(std::string(1000000, 'a'))),
              "34aa973cd4c4daa4f61eeb2bdbad27316534016f");
}

TEST(Sha1, PointerOverloadMatchesStringView) {
    const std::string data("The quick brown fox jumps over the lazy dog");
    EXPECT_EQ(pw::sha1(data.data(), data.size()), pw::sha1(data));
    EXPECT_EQ(pw::to_hex(pw::sha1(data)), "2fd4e1c67a2d28fced849ee1bb76e7391b93eb12");
}

TEST(Sha1, BinaryInputWithNulBytes) {
    const std::string data("a\0b", 3);
    EXPECT_NE(pw::sha1(data), pw::sha1("a"));
}

TEST(Hex, EncodesBytesLowercase) {
    EXPECT_EQ(pw::to_hex(std::string_view("\x00\x7f\x80\xff", 4)), "007f80ff");
    EXPECT_EQ(pw::to_hex(std::string_view()), "");
}

TEST(Hex, RoundTripsDigests) {
    const auto digest = pw::sha1("abc");
    const auto parsed = pw::sha1_from_hex(pw::to_hex(digest));
    ASSERT_TRUE(parsed.has_value());
    EXPECT_EQ(*parsed, digest);
    EXPECT_EQ(pw::sha1_from_hex("A9993E364706816ABA3E25717850C26C9CD0D89D"), digest);
}

TEST(Hex, RejectsMalformed) {
    EXPECT_FALSE(pw::sha1_from_hex("abc").has_value());
    EXPECT_FALSE(pw::sha1_from_hex(std::string(40, 'g')).has_value());
    EXPECT_FALSE(pw::sha1_from_hex(std::string(41, 'a')).has_value());
}

}  // namespace
