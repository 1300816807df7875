#pragma once
// What every stage learns from the orchestrator: the Welcome, and the torrents it tells the
// stage about (TorrentAdded, TorrentInfo). Checked once here; a bad message is refused with a
// reason, never trusted.
#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "core/bus/bus.hpp"
#include "core/encryption.hpp"
#include "core/metainfo.hpp"
#include "core/result.hpp"
#include "core/units.hpp"

namespace pw::bus {

struct WelcomeInfo {
    std::array<std::uint8_t, 20> peer_id{};
    std::uint16_t listen_port = 0;
    Encryption encryption = Encryption::prefer;
};

// The wire's encryption policy and ours; a value this build does not know reads as prefer.
Encryption from_proto(v1::Encryption encryption);
v1::Encryption to_proto(Encryption encryption);

// Reads the Welcome. Throws std::runtime_error (a start-up failure) when the peer id is not
// 20 bytes or the port is out of range.
WelcomeInfo read_welcome(const Incoming& welcome);

// A torrent as TorrentAdded describes it: known by its info-hash, perhaps nothing more yet.
struct AddedTorrent {
    TorrentId id;
    Sha1Digest info_hash{};
    std::string name;
    std::vector<std::vector<std::string>> trackers;  // BEP 12 tiers, empty ones left out
    std::string download_dir;
    bool private_torrent = false;  // BEP 27
};

// Refuses an id of 0 and an info-hash that is not 20 bytes.
Result<AddedTorrent> read_torrent_added(const v1::TorrentAdded& added);
// The torrent behind a TorrentInfo: its frame parsed as an info dictionary, refused when its
// SHA-1 is not `info_hash`, when it does not parse, or when its pieces are larger than a
// message between stages may be.
Result<Torrent> read_torrent_info(const Sha1Digest& info_hash, const Incoming& message,
                                  PieceHashes hashes);

// The orchestrator's side (and tests'): the messages above.
v1::Envelope torrent_added_message(const AddedTorrent& torrent);
v1::Envelope torrent_info_message(TorrentId id);
v1::Envelope torrent_removed_message(TorrentId id, bool delete_data);

// Gives the heap pages freed since start-up back to the system. Stages keep freed memory for
// reuse (stage_cli.cpp raises glibc's trim threshold), so an info dictionary's frame and the
// parser's transient copies, megabytes for a torrent of many pieces, would otherwise stay
// resident for the whole run. Call once a large message has been read and dropped.
void release_start_up_memory();

}  // namespace pw::bus
