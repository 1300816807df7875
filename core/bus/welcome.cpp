#include "core/bus/welcome.hpp"

#include <malloc.h>

#include <algorithm>
#include <stdexcept>
#include <string>

namespace pw::bus {

WelcomeInfo read_welcome(const Incoming& welcome, PieceHashes hashes) {
    const auto& body = welcome.envelope.welcome();
    if (body.peer_id().size() != 20) {
        throw std::runtime_error("the Welcome carries a peer id of " +
                                 std::to_string(body.peer_id().size()) + " bytes, not 20");
    }
    if (body.listen_port() > 65535) {
        throw std::runtime_error("the Welcome carries listen port " +
                                 std::to_string(body.listen_port()));
    }
    if (welcome.frames.empty()) throw std::runtime_error("the Welcome carried no .torrent");
    auto torrent = Torrent::parse(welcome.frames.front().to_string_view(), {}, hashes);
    if (!torrent) {
        throw std::runtime_error("the orchestrator's .torrent is unusable: " +
                                 torrent.error().describe());
    }
    if (torrent->piece_length() > kMaxPieceBytes) {
        throw std::runtime_error("pieces of " + std::to_string(torrent->piece_length()) +
                                 " bytes are larger than a message between stages may be");
    }
    WelcomeInfo info{std::move(torrent).value(), {}, static_cast<std::uint16_t>(body.listen_port())};
    std::copy(body.peer_id().begin(), body.peer_id().end(), info.peer_id.begin());
    return info;
}

void release_start_up_memory() { ::malloc_trim(0); }

}  // namespace pw::bus
