#pragma once
// What the writer tells the orchestrator about pieces, always naming their torrent.
#include <cstdint>
#include <string>
#include <vector>

#include "core/bus/bus.hpp"
#include "core/units.hpp"
#include "writer/batch_writer.hpp"
#include "writer/resume_state.hpp"

namespace pw::writer {

namespace v1 = ::piecework::v1;

// The worker gets its slots back now (within the report linger), not after the sync: the
// bytes are in the file (or will never be taken from the slot), and a worker short of slots
// stops fetching.
void send_slots_freed(bus::ControlLink& link, const v1::PieceBatch& batch,
                      const std::vector<std::uint64_t>& lease_ids);
// Every slot of an arena batch, whatever became of its pieces.
void send_all_slots_freed(bus::ControlLink& link, const v1::PieceBatch& batch);
// One PiecesDropped per distinct reason (nearly always one). Logged at `warn` unless `quiet`.
void send_dropped(bus::ControlLink& link, TorrentId torrent, const std::vector<PieceProblem>& dropped,
                  bool quiet = false);
void send_write_failed(bus::ControlLink& link, TorrentId torrent, const PieceRef& piece,
                       const std::string& why);
// The pieces on disk, the bitfield as a raw frame; sent always, even with none: the
// orchestrator leases nothing of the torrent before it has heard this.
void send_resume_state(bus::ControlLink& link, TorrentId torrent, const PieceBits& done,
                       bool checked_all);

}  // namespace pw::writer
