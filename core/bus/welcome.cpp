#include "core/bus/welcome.hpp"

#include <malloc.h>

#include <algorithm>
#include <stdexcept>
#include <string>

namespace pw::bus {

WelcomeInfo read_welcome(const Incoming& welcome) {
    const auto& body = welcome.envelope.welcome();
    if (body.peer_id().size() != 20) {
        throw std::runtime_error("the Welcome carries a peer id of " +
                                 std::to_string(body.peer_id().size()) + " bytes, not 20");
    }
    if (body.listen_port() > 65535) {
        throw std::runtime_error("the Welcome carries listen port " +
                                 std::to_string(body.listen_port()));
    }
    WelcomeInfo info;
    info.listen_port = static_cast<std::uint16_t>(body.listen_port());
    info.encryption = from_proto(body.encryption());
    std::copy(body.peer_id().begin(), body.peer_id().end(), info.peer_id.begin());
    return info;
}

Encryption from_proto(v1::Encryption encryption) {
    switch (encryption) {
        case v1::ENCRYPTION_REQUIRE: return Encryption::require;
        case v1::ENCRYPTION_OFF: return Encryption::off;
        default: return Encryption::prefer;
    }
}

v1::Encryption to_proto(Encryption encryption) {
    switch (encryption) {
        case Encryption::require: return v1::ENCRYPTION_REQUIRE;
        case Encryption::off: return v1::ENCRYPTION_OFF;
        case Encryption::prefer: break;
    }
    return v1::ENCRYPTION_PREFER;
}

Result<AddedTorrent> read_torrent_added(const v1::TorrentAdded& added) {
    if (added.torrent() == 0) return make_error("a TorrentAdded without a torrent id");
    if (added.info_hash().size() != 20) {
        return make_error("torrent " + std::to_string(added.torrent()) + " has an info-hash of " +
                          std::to_string(added.info_hash().size()) + " bytes, not 20");
    }
    AddedTorrent torrent;
    torrent.id = TorrentId{added.torrent()};
    std::copy(added.info_hash().begin(), added.info_hash().end(), torrent.info_hash.begin());
    torrent.name = added.name();
    for (const auto& tier : added.trackers()) {
        std::vector<std::string> urls;
        for (const auto& url : tier.urls()) {
            if (!url.empty()) urls.push_back(url);
        }
        if (!urls.empty()) torrent.trackers.push_back(std::move(urls));
    }
    torrent.download_dir = added.download_dir();
    torrent.private_torrent = added.private_torrent();
    return torrent;
}

Result<Torrent> read_torrent_info(const Sha1Digest& info_hash, const Incoming& message,
                                  PieceHashes hashes) {
    if (message.frames.empty()) return make_error("the TorrentInfo carries no info dictionary");
    const std::string_view bytes = message.frames.front().to_string_view();
    if (sha1(bytes) != info_hash) {
        return make_error("the info dictionary does not match the torrent's info-hash");
    }
    auto torrent = Torrent::parse_info(bytes, {}, hashes);
    if (!torrent) return make_error("unusable info dictionary: " + torrent.error().describe());
    if (torrent->piece_length() > kMaxPieceBytes) {
        return make_error("pieces of " + std::to_string(torrent->piece_length()) +
                          " bytes are larger than a message between stages may be");
    }
    return torrent;
}

v1::Envelope torrent_added_message(const AddedTorrent& torrent) {
    v1::Envelope envelope;
    auto* added = envelope.mutable_torrent_added();
    added->set_torrent(torrent.id.get());
    added->set_info_hash(std::string(torrent.info_hash.begin(), torrent.info_hash.end()));
    added->set_name(torrent.name);
    for (const auto& tier : torrent.trackers) {
        auto* out = added->add_trackers();
        for (const auto& url : tier) out->add_urls(url);
    }
    added->set_download_dir(torrent.download_dir);
    added->set_private_torrent(torrent.private_torrent);
    return envelope;
}

v1::Envelope torrent_info_message(TorrentId id) {
    v1::Envelope envelope;
    envelope.mutable_torrent_info()->set_torrent(id.get());
    return envelope;
}

v1::Envelope torrent_removed_message(TorrentId id, bool delete_data) {
    v1::Envelope envelope;
    envelope.mutable_torrent_removed()->set_torrent(id.get());
    envelope.mutable_torrent_removed()->set_delete_data(delete_data);
    return envelope;
}

void release_start_up_memory() { ::malloc_trim(0); }

}  // namespace pw::bus
