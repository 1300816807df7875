#pragma once
// What every stage learns from the orchestrator's Welcome, checked once here.
#include <array>
#include <cstdint>

#include "core/bus/bus.hpp"
#include "core/metainfo.hpp"

namespace pw::bus {

struct WelcomeInfo {
    Torrent torrent;
    std::array<std::uint8_t, 20> peer_id{};
    std::uint16_t listen_port = 0;
};

// Reads the Welcome and its .torrent frame. Throws std::runtime_error (a start-up failure)
// when the peer id is not 20 bytes, the port is out of range, the frame is missing, the
// torrent does not parse, or its pieces are larger than a message between stages may be.
WelcomeInfo read_welcome(const Incoming& welcome, PieceHashes hashes);

// Gives the heap pages freed since start-up back to the system. Stages keep freed memory for
// reuse (stage_cli.cpp raises glibc's trim threshold), so the Welcome's .torrent frame and
// the parser's transient copies, megabytes for a torrent of many pieces, would otherwise stay
// resident for the whole run. Call once the Welcome has been read and dropped.
void release_start_up_memory();

}  // namespace pw::bus
