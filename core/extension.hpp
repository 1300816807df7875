#pragma once
// The extension protocol (BEP 10) and the two extensions carried on it: metadata exchange
// (BEP 9, ut_metadata) and peer exchange (BEP 11, ut_pex). Pure codecs and a pure metadata
// assembler; the peer worker does the I/O.
//
// On the wire an extended message is peer wire message id 20, then one byte, the extended id,
// then the payload. Extended id 0 is the handshake; the others are what the *receiver* asked
// for in its own handshake: peers send us ut_metadata and ut_pex under our ids below, and we
// send them under the ids in their handshake ("m"). Remote input never trips an assert: every
// decoder refuses what is malformed, oversized or inconsistent with an Error that says what,
// and the caller drops the peer.
#include <array>
#include <cstddef>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

#include "core/result.hpp"
#include "core/sha1.hpp"
#include "core/tracker_codec.hpp"

namespace pw::ext {

inline constexpr std::uint8_t kExtendedMessageId = 20;  // peer wire message id (BEP 10)
inline constexpr std::uint8_t kHandshakeId = 0;         // extended id of the handshake
// Our extended ids: what peers send us these extensions' messages under.
inline constexpr std::uint8_t kOurUtPexId = 1;
inline constexpr std::uint8_t kOurUtMetadataId = 2;
inline constexpr std::string_view kUtMetadata = "ut_metadata";
inline constexpr std::string_view kUtPex = "ut_pex";

// Sets the BEP 10 bit in a handshake's reserved bytes (reserved[5] & 0x10, what
// wire::Handshake::supports_extensions() reads).
void advertise_extension_protocol(std::array<std::uint8_t, 8>& reserved);

// --- framing ---

// An extended message's body as it follows message id 20: the extended id and the payload
// (a view into the body).
struct Extended {
    std::uint8_t id = 0;
    std::string_view payload;
};
// Refuses an empty body (no extended id).
Result<Extended> split_extended(std::string_view body);
// Appends a whole peer wire message: 4-byte length, 20, `id`, `payload`.
void frame_extended(std::uint8_t id, std::string_view payload, std::vector<std::uint8_t>& out);

// --- the extended handshake (BEP 10) ---

inline constexpr std::size_t kMaxHandshakePayload = 64 * 1024;
inline constexpr std::size_t kMaxExtensionNames = 128;   // entries in "m"
inline constexpr std::size_t kMaxExtensionName = 64;     // bytes of one name
inline constexpr std::size_t kMaxClientName = 128;       // "v", kept printable
inline constexpr std::uint32_t kMaxRequestQueue = 65535; // "reqq" above it is taken as this

// BEP 9: the metadata (the info dictionary) travels in 16 KiB pieces, the last one shorter.
inline constexpr std::uint32_t kMetadataPieceSize = 16 * 1024;
// The most metadata we fetch or take: a 16 MiB info dictionary holds ~800,000 piece hashes.
inline constexpr std::uint32_t kMaxMetadataSize = 16u << 20;

struct ExtendedHandshake {
    // "m": extension name -> the extended id its sender receives it under (1..255; 0: it
    // disabled the extension), sorted by name, names unique, no two names on one non-zero id.
    std::map<std::string, std::uint8_t> extensions;
    std::optional<std::string> client;           // "v", printable ASCII ('?' for the rest), cut
    std::optional<std::uint16_t> listen_port;    // "p" (0 is taken as absent)
    std::optional<std::uint32_t> request_queue;  // "reqq", 1..kMaxRequestQueue
    std::optional<std::string> your_ip;          // "yourip": our address as the peer sees it
    std::optional<std::uint32_t> metadata_size;  // "metadata_size" (BEP 9), 1..the cap
    std::optional<bool> upload_only;             // "upload_only" (BEP 21)
    std::optional<bool> prefers_encryption;      // "e"

    // The id to send `name` under; 0 when the peer does not take it.
    std::uint8_t id_of(std::string_view name) const;

    friend bool operator==(const ExtendedHandshake&, const ExtendedHandshake&) = default;
};

// Decodes a handshake payload. Refused: not one bencoded dictionary, over
// kMaxHandshakePayload, "m" not a dictionary or over kMaxExtensionNames, an id outside 0..255
// or not an integer, two names on one non-zero id, "p" outside 0..65535, "reqq" below 1,
// "yourip" not 4 or 16 bytes, metadata_size below 1 or over `max_metadata_size`, and any of
// these of the wrong type. Unknown keys and unknown extension names are ignored (kept in
// `extensions`, which the caller only asks for the names it knows).
Result<ExtendedHandshake> decode_handshake(std::string_view payload,
                                           std::uint32_t max_metadata_size = kMaxMetadataSize);
// The payload of `handshake` (canonical bencoding; a your_ip that is not a literal address is
// left out).
std::string encode_handshake(const ExtendedHandshake& handshake);
// Ours: ut_metadata and ut_pex under our ids, v, reqq, and p, yourip and metadata_size when
// known (metadata_size once we have the info dictionary to serve).
ExtendedHandshake our_handshake(std::string client, std::uint32_t request_queue,
                                std::optional<std::uint16_t> listen_port = std::nullopt,
                                std::optional<std::string> their_ip = std::nullopt,
                                std::optional<std::uint32_t> metadata_size = std::nullopt);

// --- ut_metadata (BEP 9) ---

// A data message is a small dictionary followed by at most one piece.
inline constexpr std::size_t kMaxMetadataMessage = kMetadataPieceSize + 1024;

enum class MetadataType : std::uint8_t { request = 0, data = 1, reject = 2, unknown = 255 };

struct MetadataMessage {
    MetadataType type = MetadataType::request;
    std::uint32_t piece = 0;
    std::uint32_t total_size = 0;  // data only: the whole metadata's size
    std::string_view data;         // data only: the piece's bytes, a view into the payload
};

// How many 16 KiB pieces `total_size` bytes of metadata make, and how long one of them is
// (0 for a piece beyond the end).
std::uint32_t metadata_piece_count(std::uint32_t total_size);
std::uint32_t metadata_piece_size(std::uint32_t total_size, std::uint32_t piece);

// Decodes a ut_metadata payload: the dictionary (split from a data message's bytes where the
// bencoded value ends), msg_type, piece, total_size. Refused: over kMaxMetadataMessage, no
// dictionary, msg_type or piece missing or not integers, a piece index beyond what the cap
// allows, bytes after a request or reject; for data: total_size below 1 or over
// `max_metadata_size`, a piece beyond total_size, and data not exactly that piece's length
// (truncated or oversized). A msg_type this codec does not know decodes as `unknown`, which
// BEP 9 says to ignore.
Result<MetadataMessage> decode_metadata(std::string_view payload,
                                        std::uint32_t max_metadata_size = kMaxMetadataSize);
std::string encode_metadata_request(std::uint32_t piece);
std::string encode_metadata_reject(std::uint32_t piece);
std::string encode_metadata_data(std::uint32_t piece, std::uint32_t total_size, std::string_view data);
// Our answer to a request for `piece` of `metadata` (the info dictionary we have): the data
// message, or a reject for a piece beyond it (or when we have none).
std::string answer_metadata_request(std::string_view metadata, std::uint32_t piece);

// Assembles metadata from several peers' data messages and checks it against the
// info-hash. Bounded: total_size is refused over the cap, and the buffer is allocated when
// the first piece arrives, once. A peer is whatever the caller names it by ("ip:port").
class MetadataAssembler {
public:
    struct Added {
        bool stored = false;    // false: a repeat of a piece already held (ignored)
        bool complete = false;  // every piece is here: call finish()
    };
    struct Finished {
        // Whether the SHA-1 of the whole equals the info-hash.
        bool verified = false;
        // verified: the info dictionary's bytes (the assembler is spent).
        std::string metadata;
        // !verified: every peer that sent a piece of this attempt, sorted; the assembler has
        // forgotten the pieces and starts over. Drop them, or at least ask others.
        std::vector<std::string> suspects;
        // verified: peers whose pieces in an earlier failed attempt differ from the verified
        // metadata, sorted: proven liars.
        std::vector<std::string> liars;
    };

    static Result<MetadataAssembler> create(const Sha1Digest& info_hash, std::uint64_t total_size,
                                            std::uint32_t max_metadata_size = kMaxMetadataSize);

    std::uint32_t total_size() const { return total_size_; }
    std::uint32_t piece_count() const { return static_cast<std::uint32_t>(sources_.size()); }
    bool has(std::uint32_t piece) const { return piece < sources_.size() && !sources_[piece].empty(); }
    bool complete() const { return received_ == sources_.size(); }
    std::vector<std::uint32_t> missing() const;

    // A data message from `peer`. Refused (the peer is to be dropped): a total_size other than
    // this metadata's, a piece beyond it, data not exactly the piece's length.
    Result<Added> add(const MetadataMessage& message, std::string_view peer);
    // The same, from its parts.
    Result<Added> add(std::uint32_t piece, std::uint32_t total_size, std::string_view data, std::string_view peer);
    // Once complete(): checks the SHA-1. Refused before that.
    Result<Finished> finish();

private:
    MetadataAssembler(const Sha1Digest& info_hash, std::uint32_t total_size);

    struct FailedPiece {
        Sha1Digest digest{};
        std::string peer;
    };
    static constexpr std::size_t kMaxFailedAttempts = 4;

    Sha1Digest info_hash_{};
    std::uint32_t total_size_ = 0;
    std::string buffer_;
    std::vector<std::string> sources_;  // per piece: who sent it; empty while missing
    std::uint32_t received_ = 0;
    bool spent_ = false;
    // Per failed attempt, each piece's digest and sender: compared with the verified metadata
    // at the end to name who lied.
    std::vector<std::vector<FailedPiece>> failed_attempts_;
};

// --- ut_pex (BEP 11) ---

// Flags of an added peer (added.f, added6.f).
inline constexpr std::uint8_t kPexPrefersEncryption = 0x01;
inline constexpr std::uint8_t kPexSeed = 0x02;
inline constexpr std::uint8_t kPexUtp = 0x04;
inline constexpr std::uint8_t kPexHolepunch = 0x08;
inline constexpr std::uint8_t kPexReachable = 0x10;

// What we take in one message (IPv4 and IPv6 together, per list) and what we send (the
// convention clients agreed on: 50 added and 50 dropped, some drop peers that send more).
inline constexpr std::size_t kMaxPexReceived = 200;
inline constexpr std::size_t kMaxPexSent = 50;
inline constexpr std::size_t kMaxPexPayload = 16 * 1024;

struct PexPeer {
    tracker::PeerAddress address;
    std::uint8_t flags = 0;
    friend bool operator==(const PexPeer&, const PexPeer&) = default;
};

struct PexMessage {
    std::vector<PexPeer> added;                  // IPv4 first, then IPv6
    std::vector<tracker::PeerAddress> dropped;   // IPv4 first, then IPv6
    std::size_t skipped = 0;                     // decoded entries with port 0, left out
    friend bool operator==(const PexMessage&, const PexMessage&) = default;
};

// Refused: not one dictionary, over kMaxPexPayload, a list that is not a string or not a
// whole number of 6-byte (18-byte for the "6" keys) entries, flags whose length is not the
// number of peers they describe, more than kMaxPexReceived added or dropped.
Result<PexMessage> decode_pex(std::string_view payload);
// Refused: more than kMaxPexSent added or dropped, an address that is not a literal IP.
Result<std::string> encode_pex(const PexMessage& message);

// --- any incoming extended message ---

struct UnknownExtension {
    std::uint8_t id = 0;  // not one of ours: ignored (BEP 10)
};
using Incoming = std::variant<ExtendedHandshake, MetadataMessage, PexMessage, UnknownExtension>;

// Decodes the body of a message id 20 by its extended id: 0 the handshake, kOurUtMetadataId
// and kOurUtPexId ours, anything else UnknownExtension. Views in a MetadataMessage point into
// `body`.
Result<Incoming> decode_incoming(std::string_view body, std::uint32_t max_metadata_size = kMaxMetadataSize);

}  // namespace pw::ext
