#include "core/bencode.hpp"

#include <gtest/gtest.h>

#include <string>

namespace {

using pw::bencode::decode;
using pw::bencode::Dict;
using pw::bencode::encode;
using pw::bencode::List;
using pw::bencode::Value;

Value decode_ok(std::string_view input) {
    auto result = decode(input);
    EXPECT_TRUE(result.ok()) << (result.ok() ? "" : result.error().describe());
    if (!result.ok()) return Value{};
    EXPECT_TRUE(result->warnings.empty());
    return result->value;
}

// Asserts that decoding fails with `message` in the error and at `offset`.
void expect_error(std::string_view input, std::string_view message, std::uint64_t offset) {
    auto result = decode(input);
    ASSERT_FALSE(result.ok()) << "accepted: " << input;
    EXPECT_NE(result.error().message.find(message), std::string::npos)
        << "for " << input << ": " << result.error().describe();
    EXPECT_EQ(result.error().offset, offset) << "for " << input << ": " << result.error().describe();
}

TEST(BencodeDecode, Integers) {
    EXPECT_EQ(decode_ok("i0e").as_int(), 0);
    EXPECT_EQ(decode_ok("i42e").as_int(), 42);
    EXPECT_EQ(decode_ok("i-42e").as_int(), -42);
    EXPECT_EQ(decode_ok("i9223372036854775807e").as_int(), INT64_MAX);
    EXPECT_EQ(decode_ok("i-9223372036854775808e").as_int(), INT64_MIN);
}

TEST(BencodeDecode, Strings) {
    EXPECT_EQ(decode_ok("0:").as_string(), "");
    EXPECT_EQ(decode_ok("4:spam").as_string(), "spam");
    EXPECT_EQ(decode_ok(std::string_view("3:a\0b", 5)).as_string(), std::string("a\0b", 3));
}

TEST(BencodeDecode, ListsAndDicts) {
    const Value list = decode_ok("l4:spami7ee");
    ASSERT_TRUE(list.is_list());
    ASSERT_EQ(list.as_list().size(), 2u);
    EXPECT_EQ(list.as_list()[0].as_string(), "spam");
    EXPECT_EQ(list.as_list()[1].as_int(), 7);

    const Value dict = decode_ok("d3:bar4:spam3:fooi42ee");
    ASSERT_TRUE(dict.is_dict());
    ASSERT_NE(dict.find("foo"), nullptr);
    EXPECT_EQ(dict.find("foo")->as_int(), 42);
    EXPECT_EQ(dict.find("bar")->as_string(), "spam");
    EXPECT_EQ(dict.find("baz"), nullptr);
    EXPECT_EQ(list.find("foo"), nullptr);

    EXPECT_TRUE(decode_ok("le").as_list().empty());
    EXPECT_TRUE(decode_ok("de").as_dict().empty());
    EXPECT_EQ(decode_ok("lllleeee").as_list()[0].as_list()[0].as_list()[0].as_list().size(), 0u);
}

TEST(BencodeDecode, RecordsRawPositions) {
    const std::string input = "d4:infod6:lengthi5eee";
    const Value root = decode_ok(input);
    const Value* info = root.find("info");
    ASSERT_NE(info, nullptr);
    EXPECT_EQ(info->raw(input), "d6:lengthi5ee");
    EXPECT_EQ(info->find("length")->raw(input), "i5e");
    EXPECT_EQ(root.raw(input), input);
}

TEST(BencodeDecode, RejectsMalformedIntegers) {
    expect_error("i03e", "leading zero", 1);
    expect_error("i-03e", "leading zero", 2);
    expect_error("i-0e", "negative zero", 2);
    expect_error("ie", "without digits", 1);
    expect_error("i-e", "without digits", 2);
    expect_error("i9223372036854775808e", "overflows", 1);
    expect_error("i-9223372036854775809e", "overflows", 2);
    expect_error("i99999999999999999999999e", "overflows", 1);
    expect_error("i1x", "unexpected byte 'x'", 2);
    expect_error("i12", "truncated", 3);
}

TEST(BencodeDecode, RejectsMalformedStrings) {
    expect_error("01:a", "leading zero", 0);
    expect_error("5:abc", "larger than the input", 0);
    expect_error("1", "truncated", 1);
    expect_error("1x", "unexpected byte 'x'", 1);
    expect_error("18446744073709551617:a", "larger than the input", 0);
}

TEST(BencodeDecode, HugeLengthFailsBeforeAllocating) {
    // 100 MB announced in a tiny input: the length check comes before any allocation.
    std::string input = "l100000000:";
    input += std::string(1000, 'x');
    input += "e";
    expect_error(input, "larger than the input", 1);
}

TEST(BencodeDecode, RejectsStructuralErrors) {
    expect_error("", "truncated", 0);
    expect_error("l", "truncated", 1);
    expect_error("d3:foo", "truncated", 6);
    expect_error("i1ei2e", "trailing", 3);
    expect_error("4:spamx", "trailing", 6);
    expect_error("e", "unexpected 'e'", 0);
    expect_error("x", "unexpected byte 'x'", 0);
    expect_error("l\x01" "e", "unexpected byte 0x01", 1);
    expect_error("di1ei2ee", "not a string", 1);
    expect_error("dlei2ee", "not a string", 1);
    expect_error("d3:fooe", "without a value", 6);
}

TEST(BencodeDecode, RejectsDuplicateKeys) {
    expect_error("d1:ai1e1:ai2ee", "duplicate dict key \"a\"", 7);
    // A duplicate after the order broke is still found.
    expect_error("d1:bi1e1:ai2e1:bi3ee", "duplicate", 13);
}

TEST(BencodeDecode, ToleratesUnsortedKeysWithAWarning) {
    auto result = decode("d1:bi1e1:ai2ee");
    ASSERT_TRUE(result.ok());
    ASSERT_EQ(result->warnings.size(), 1u);
    EXPECT_NE(result->warnings[0].find("not sorted"), std::string::npos);
    EXPECT_EQ(result->value.find("a")->as_int(), 2);
    // The keys keep their input order; encoding sorts them.
    EXPECT_EQ(result->value.as_dict()[0].first, "b");
    EXPECT_EQ(encode(result->value), "d1:ai2e1:bi1ee");

    pw::bencode::DecodeLimits strict;
    strict.allow_unsorted_keys = false;
    auto rejected = decode("d1:bi1e1:ai2ee", strict);
    ASSERT_FALSE(rejected.ok());
    EXPECT_EQ(rejected.error().offset, 7u);
}

TEST(BencodeDecode, KeysSortAsRawBytes) {
    // 0xff sorts after 'a' as an unsigned byte: canonical, no warning.
    auto result = decode("d1:ai1e1:\xffi2ee");
    ASSERT_TRUE(result.ok());
    EXPECT_TRUE(result->warnings.empty());
}

TEST(BencodeDecode, DepthLimit) {
    const std::string ok_nesting = std::string(100, 'l') + std::string(100, 'e');
    EXPECT_TRUE(decode(ok_nesting).ok());
    const std::string too_deep = std::string(101, 'l') + std::string(101, 'e');
    expect_error(too_deep, "nesting deeper than 100", 100);
    // A million opening brackets fail at the limit without building anything deep.
    const std::string hostile(1'000'000, 'l');
    expect_error(hostile, "nesting deeper", 100);
    const std::string dicts = std::string(200, 'd');
    expect_error(dicts, "not a string", 1);
}

TEST(BencodeDecode, ManySiblingsAreFine) {
    std::string input = "l";
    for (int i = 0; i < 100'000; ++i) input += "le";
    input += "e";
    auto result = decode(input);
    ASSERT_TRUE(result.ok());
    EXPECT_EQ(result->value.as_list().size(), 100'000u);
}

TEST(BencodeEncode, AllTypes) {
    EXPECT_EQ(encode(Value(std::int64_t{-7})), "i-7e");
    EXPECT_EQ(encode(Value(std::string("spam"))), "4:spam");
    EXPECT_EQ(encode(Value(List{Value(std::int64_t{1}), Value(std::string("a"))})), "li1e1:ae");
    Dict dict;
    dict.emplace_back("zeta", Value(std::int64_t{1}));
    dict.emplace_back("alpha", Value(List{}));
    dict.emplace_back("\xff", Value(Dict{}));
    EXPECT_EQ(encode(Value(std::move(dict))), "d5:alphale4:zetai1e1:\xff" "dee");
}

TEST(Bencode, DecodedStringsPointIntoTheInputAndEqualOwnedOnes) {
    const std::string input = "l4:spami7ee";
    auto result = decode(input);
    ASSERT_TRUE(result.ok());
    const std::string_view spam = result->value.as_list()[0].as_string();
    EXPECT_EQ(spam.data(), input.data() + 3);  // no copy of the bytes
    EXPECT_EQ(result->value, Value(List{Value(std::string("spam")), Value(std::int64_t{7})}));
    EXPECT_NE(result->value, Value(List{Value(std::string("spar")), Value(std::int64_t{7})}));
    EXPECT_NE(Value(std::string("7")), Value(std::int64_t{7}));
}

TEST(BencodeRoundTrip, CanonicalInputsEncodeBackExactly) {
    for (std::string_view input :
         {"i0e", "i-1e", "0:", "3:abc", "le", "de", "l1:ai2eli3eee",
          "d1:ad1:bl1:cee1:xi9ee", "d8:announce3:url4:infod6:lengthi1e4:name1:fee"}) {
        auto result = decode(input);
        ASSERT_TRUE(result.ok()) << input;
        EXPECT_EQ(encode(result->value), input);
        const std::string encoded = encode(result->value);  // `again` points into it
        auto again = decode(encoded);
        ASSERT_TRUE(again.ok());
        EXPECT_EQ(again->value, result->value);
    }
}

}  // namespace
