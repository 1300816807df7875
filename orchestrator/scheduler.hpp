#pragma once
// The torrent's piece state machine: free -> leased (to a worker, for a peer) -> verified ->
// written, with every way back to free (released, expired, failed, lost worker or writer).
// Pure: no sockets, the caller passes the time and sends what the results say.
#include <algorithm>
#include <chrono>
#include <cstdint>
#include <string>
#include <unordered_map>
#include <vector>

#include "core/units.hpp"
#include "orchestrator/lease_book.hpp"
#include "orchestrator/piece_picker.hpp"

namespace pw::orchestrator {

// Pieces in a 4 MiB extent (at least 1): the unit of extent affinity (piece_picker.hpp).
inline std::uint32_t pieces_per_extent(std::uint32_t piece_length) {
    constexpr std::uint32_t kExtentBytes = 4u << 20;
    return piece_length == 0 ? 1 : std::max<std::uint32_t>(kExtentBytes / piece_length, 1);
}

struct SchedulerOptions {
    // Backstop only (see lease_book.hpp): long enough for a 16 MiB piece at ~150 KiB/s.
    std::chrono::milliseconds lease_timeout{120'000};
    // Leases per piece in endgame, the first included. A third goes only to a peer that would
    // otherwise idle (every piece in flight has two): in one worker its peer races the other
    // two for the middle of what is missing (piece_assembly.hpp); near the end of sixteen
    // 2 MiB/s seeders, 13 of them idled for 0.3 s while three drained their pipelines.
    std::size_t max_leases_per_piece = 3;
    std::uint64_t seed = 0;
    // Extent affinity (see piece_picker.hpp); 1 turns it off.
    std::uint32_t pieces_per_extent = 1;
};

struct Grant {
    PieceIndex piece;
    std::uint64_t lease_id = 0;
    bool endgame = false;
};

// Tell `worker` to stop fetching `piece`.
struct Cancel {
    std::string worker;
    PieceIndex piece;
    friend bool operator==(const Cancel&, const Cancel&) = default;
};

class Scheduler {
public:
    // `grants` numbers the leases (unique across the session's torrents); null: its own.
    Scheduler(std::uint32_t piece_count, SchedulerOptions options, GrantCounter* grants = nullptr);

    PiecePicker& pieces() { return picker_; }
    const PiecePicker& pieces() const { return picker_; }
    const LeaseBook& leases() const { return leases_; }

    // Free pieces the peer has first; when none is left, endgame duplicates of pieces other
    // peers are fetching, the least covered and then the most recently leased first.
    std::vector<Grant> request(const std::string& worker, const PeerKey& peer, std::size_t count,
                               Clock::time_point now);
    // A lease handed back: its piece is free again unless another lease still covers it.
    void release(std::uint64_t lease_id);
    // The piece passed its hash check and waits for its write: other leases are cancelled.
    std::vector<Cancel> verified(PieceIndex piece, std::uint64_t lease_id);
    // The piece is on disk: done for good.
    std::vector<Cancel> written(PieceIndex piece);
    // A piece counted done is not on disk after all (a verify found otherwise): fetch it again.
    void missing(PieceIndex piece);
    // The piece failed its hash check.
    void failed(PieceIndex piece, std::uint64_t lease_id);
    // The piece's bytes were lost in transit (PiecesDropped): nobody is to blame. The lease
    // goes, and so does the wait for the writer if this lease's copy is the one it waits for;
    // a copy verified under another lease is still on its way and left alone.
    void dropped(PieceIndex piece, std::uint64_t lease_id);
    // The write failed: the piece waits (busy) until requeue_held, so a failing disk is not
    // hammered in a tight loop.
    void write_failed(PieceIndex piece);
    void requeue_held(PieceIndex piece);
    // A peer is gone: its availability and its leases.
    void peer_gone(const PeerKey& peer);
    void worker_gone(const std::string& worker);
    // Verified pieces the writer never confirmed go back to the queue (writer restarted).
    void writer_lost();
    // The lease's piece left its worker for the verifier.
    void delivered(std::uint64_t lease_id);
    // The verifier died: pieces delivered to it and not yet verified, and verified pieces it
    // may not have passed on to the writer, go back to the queue now (a piece that still
    // turns up later is accepted: done is by piece).
    void verifier_lost();
    // Expired leases: their pieces go back to the queue, their workers are told to stop.
    std::vector<Cancel> expire(Clock::time_point now);

    bool complete() const { return picker_.done_count() == picker_.piece_count(); }
    std::size_t leases_outstanding() const { return leases_.size(); }

private:
    void requeue_if_orphaned(PieceIndex piece);
    std::vector<Cancel> cancel_all(PieceIndex piece);
    bool awaits_write(std::uint32_t piece) const { return awaiting_write_.contains(piece); }

    SchedulerOptions options_;
    PiecePicker picker_;
    LeaseBook leases_;
    // Pieces awaiting the writer, with the lease whose copy each waits for (the latest
    // verified: the last to reach the writer), so a dropped copy under another lease leaves
    // it waiting. A map: a few thousand pieces at most are between verifier and disk, where
    // a slot per piece cost 8 bytes for each of a torrent's 262,144.
    std::unordered_map<std::uint32_t, std::uint64_t> awaiting_write_;
    std::vector<bool> held_;  // write failed, waiting to be retried
};

}  // namespace pw::orchestrator
