#pragma once
// The state of one peer connection after TCP is up, without any I/O: handshake checks,
// choke/interest, what the peer has, the pieces leased to it, the requests in flight and the
// pieces it completed. The connection feeds it parsed messages and writes out `outgoing()`;
// the worker service moves work and reports between it and the orchestrator.
//
// Every method is safe on any remote input: a violation comes back as an Error, which means
// "drop this peer, with this reason".
#include <cstdint>
#include <deque>
#include <optional>
#include <vector>

#include "core/geometry.hpp"
#include "core/result.hpp"
#include "core/sha1.hpp"
#include "core/wire.hpp"
#include "peer_worker/piece_assembly.hpp"
#include "peer_worker/pipeline.hpp"

namespace pw::peer_worker {

struct SessionLimits {
    // Requests outstanding and no block for this long: the peer is stalled.
    Clock::duration stall_timeout = std::chrono::seconds(25);
    // Choked this long while holding leases: give them back to the orchestrator.
    Clock::duration choked_release = std::chrono::seconds(30);
    // Nothing sent for this long: send a keep-alive.
    Clock::duration keep_alive = std::chrono::seconds(90);
    // The orchestrator had nothing for this peer: ask again after this long (or on a have).
    Clock::duration empty_lease_retry = std::chrono::milliseconds(500);
    // A WorkRequest that got no answer at all is forgotten after this long.
    Clock::duration work_answer_timeout = std::chrono::seconds(10);
    // Blocks we did not ask for that a peer may send (besides those explained by our
    // cancels and by chokes voiding requests) before we drop it.
    std::uint32_t unrequested_allowance = 8;
    // Most pieces asked for in one WorkRequest (the orchestrator grants up to 256).
    std::uint32_t max_pieces_per_request = 256;
};

// What a peer has, as reported to the orchestrator: the whole bitfield once (or have_all),
// then the haves that came in since.
struct HasReport {
    bool have_all = false;
    std::optional<std::vector<std::uint8_t>> bitfield;
    std::vector<std::uint32_t> haves;
};

struct CompletedPiece {
    PieceIndex piece;
    std::uint64_t lease_id = 0;
    std::uint32_t size = 0;
    PieceBuffer data;  // empty when the piece was assembled in borrowed memory (a slot)
};

class PeerSession {
public:
    // A WorkRequest asks for at least this many blocks' worth of pieces: 1 MiB, one piece of
    // the common size.
    static constexpr std::uint32_t kMinRequestBlocks = 64;

    PeerSession(const PieceGeometry& geometry, const Sha1Digest& info_hash,
                const wire::PeerId& our_id, Clock::time_point now, SessionLimits limits = {});

    // --- handshake ---
    // Queues our handshake. Reserved bits stay zero until BEP 6/10 are implemented.
    void send_handshake(Clock::time_point now);
    // Checks the peer's handshake: same torrent, and not ourselves.
    Status on_handshake(const wire::Handshake& theirs, Clock::time_point now);
    bool handshake_done() const { return handshake_done_; }
    const wire::PeerId& peer_id() const { return peer_id_; }

    // --- the peer's messages ---
    Status on_message(const wire::Message& message, Clock::time_point now);
    bool peer_choking() const { return peer_choking_; }
    bool peer_interested() const { return peer_interested_; }
    bool am_interested() const { return am_interested_; }
    bool peer_has(PieceIndex index) const;
    std::uint32_t pieces_peer_has() const { return have_count_; }
    // The bitfield if not yet reported, else the haves since the last report; nullopt when
    // there is nothing new. `include_haves` false holds back haves (they are batched).
    std::optional<HasReport> take_has_report(bool include_haves);

    // --- work from the orchestrator ---
    // How many more pieces this peer could use now (0: don't ask).
    std::uint32_t pieces_wanted(Clock::time_point now) const;
    void note_work_requested(Clock::time_point now);
    void note_work_answer(bool got_any, Clock::time_point now);
    // The piece is assembled into `destination`. False when the piece is out of range,
    // already leased here, or `destination` is not the piece's size.
    bool add_lease(PieceIndex piece, std::uint64_t lease_id, PieceDestination destination);
    // Drops a piece (won elsewhere) and cancels its outstanding requests; its lease id.
    std::optional<std::uint64_t> cancel_piece(PieceIndex piece, Clock::time_point now);
    // Drops every leased piece (peer gone or choked too long); their lease ids.
    std::vector<std::uint64_t> release_leases();
    std::size_t lease_count() const { return leases_.size(); }
    // Bytes of piece buffers this session holds.
    std::uint64_t leased_bytes() const;

    // --- requests ---
    // Queues requests up to the pipeline depth. `allowed` false (backpressure from the
    // verifier) sends none.
    void fill_requests(Clock::time_point now, bool allowed);
    std::uint32_t requests_outstanding() const { return outstanding_; }
    std::uint32_t pipeline_depth() const { return pipeline_.depth(); }
    const PipelineSizer& pipeline() const { return pipeline_; }
    std::uint64_t unrequested_blocks_received() const { return unrequested_received_; }

    // Pieces whose every block arrived, to hand to the verifier; the caller drains it.
    std::vector<CompletedPiece>& completed() { return completed_; }
    // Payload bytes of accepted blocks since the last call.
    std::uint64_t take_downloaded();

    // --- time ---
    // Re-sizes the pipeline and sends a keep-alive when we have been quiet.
    void on_tick(Clock::time_point now);
    bool stalled(Clock::time_point now) const;
    bool choked_too_long(Clock::time_point now) const;

    // Bytes to write to the peer; the connection swaps them out.
    std::vector<std::uint8_t>& outgoing() { return outgoing_; }

private:
    void send(const wire::Message& message, Clock::time_point now);
    Status on_block(const wire::Piece& block, Clock::time_point now);
    Status reject_block(const char* why);
    bool is_leased(PieceIndex piece) const;
    // Every lease leaves through here, which keeps the counts below in step.
    void drop_lease(std::deque<PieceAssembly>::iterator lease);

    PieceGeometry geometry_;
    Sha1Digest info_hash_;
    wire::PeerId our_id_;
    SessionLimits limits_;
    wire::PeerId peer_id_{};
    bool handshake_done_ = false;

    bool peer_choking_ = true;
    bool peer_interested_ = false;
    bool am_interested_ = false;
    Clock::time_point choked_since_;

    std::vector<bool> has_;
    std::uint32_t have_count_ = 0;
    bool heard_availability_ = false;  // a bitfield or have came in
    bool bitfield_unreported_ = false;
    std::vector<std::uint32_t> pending_haves_;

    bool awaiting_work_ = false;
    bool have_since_answer_ = false;
    Clock::time_point work_requested_at_;
    Clock::time_point work_retry_at_;

    // In the order they were granted, which is the order they finish in, mostly: a deque
    // makes dropping the finished one cheap (with hundreds of small pieces leased, erasing
    // from a vector's front moved every other assembly, per piece).
    std::deque<PieceAssembly> leases_;
    // With one-block pieces hundreds of leases are held at once: what is asked per block or
    // per read must not walk them all.
    std::vector<bool> leased_;              // by piece
    std::uint32_t unrequested_blocks_ = 0;  // over all leases
    std::size_t request_cursor_ = 0;        // no lease before it has a block left to request
    std::vector<CompletedPiece> completed_;
    PipelineSizer pipeline_;
    std::uint32_t outstanding_ = 0;
    Clock::time_point last_progress_;
    std::uint64_t downloaded_ = 0;
    std::uint64_t unrequested_received_ = 0;
    // Late blocks we caused ourselves (cancels, chokes voiding requests) are forgiven.
    std::uint64_t forgiven_ = 0;

    std::vector<std::uint8_t> outgoing_;
    Clock::time_point last_sent_;
};

}  // namespace pw::peer_worker
