#pragma once
// The state of one peer connection after TCP is up, without any I/O: handshake checks,
// choke/interest both ways, what the peer has, the pieces leased to it, the requests in
// flight and the pieces it completed; and the upload side: what we told it we have, whether
// we choke it, the requests it made of us that we accepted, and the blocks queued for it.
// The connection feeds it parsed messages and writes out `outgoing()` (with the blocks'
// bytes gathered in, see OutBlock); the worker service moves work and reports between it
// and the orchestrator, and piece bytes between it and the upload cache.
//
// A torrent known only by its info-hash (a magnet) has no geometry yet: its sessions are made
// with an empty one and speak only the extension protocol (BEP 10) to fetch the info
// dictionary (BEP 9). What the peer says of its pieces meanwhile is kept, bounded, and
// replayed by learn_info() once the dictionary is here.
//
// Every method is safe on any remote input: a violation comes back as an Error, which means
// "drop this peer, with this reason".
#include <cstdint>
#include <deque>
#include <functional>
#include <optional>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "core/extension.hpp"
#include "core/geometry.hpp"
#include "core/result.hpp"
#include "core/sha1.hpp"
#include "core/wire.hpp"
#include "peer_worker/local_pieces.hpp"
#include "peer_worker/piece_assembly.hpp"
#include "peer_worker/pipeline.hpp"
#include "peer_worker/rate_limit.hpp"

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

    // --- uploads ---
    // Requests of the peer's we hold (accepted, not yet turned into blocks); one more and the
    // peer is dropped as a flood. libtorrent keeps at most 500 outstanding to a peer.
    std::uint32_t max_queued_requests = 500;
    // It unchoked us, we had requests out, and no block came for this long: snubbed.
    Clock::duration snub_after = std::chrono::seconds(60);
    // Haves wait (and go later, oldest piece first) while this many bytes are already queued
    // for the peer and not written: a peer connected before our pieces were known would
    // otherwise be sent a have per piece at once (2.4 MB for 262,144 pieces).
    std::size_t have_backlog = 256 * 1024;
    // Their allowed-fast pieces we remember (BEP 6 suggests 10; more are ignored).
    std::uint32_t max_allowed_fast_kept = 64;

    // --- peer exchange (BEP 11) ---
    Clock::duration pex_interval = std::chrono::seconds(60);  // ours to it
    Clock::duration pex_min_gap = std::chrono::seconds(30);   // its to us, taken at most
    std::size_t max_pex_told = 1000;  // peers remembered as told to it

    // --- before the info dictionary (magnets) ---
    // Haves kept until the geometry is known; more are left out (a peer that has that many
    // pieces sends a bitfield anyway).
    std::uint32_t max_early_haves = 65536;
    // BEP 9 requests of ours remembered per peer (answers to others are ignored); the
    // worker's fetch asks for fewer at once.
    std::uint32_t max_metadata_requests = 8;
    // Pieces of our metadata we serve one peer per connection before we reject its requests:
    // enough to fetch it a few times over, not a way to make us send megabytes forever.
    std::uint32_t metadata_serve_factor = 4;
};

// What a connection tells peers in its extended handshake (BEP 10), set by the worker.
struct ExtensionOffer {
    std::uint16_t listen_port = 0;  // 0: left out
    std::string their_ip;           // "yourip": the peer's address as we see it
    // The torrent's info dictionary once known (the worker's, outliving the session): its
    // size goes in the handshake and its pieces are served (BEP 9). Null or empty: none.
    const std::string* metadata = nullptr;
    // ut_pex offered (never for a private torrent, BEP 27).
    bool pex = true;
    // The session's DHT node's UDP port: the DHT bit is set and peers that set it too get a
    // port message (BEP 5). 0: no DHT (or a private torrent).
    std::uint16_t dht_port = 0;
};

// A BEP 9 answer to one of our requests, for the worker's metadata fetch.
struct MetadataReply {
    bool rejected = false;
    std::uint32_t piece = 0;
    std::uint32_t total_size = 0;  // data only
    std::string data;              // data only
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
    std::vector<std::string> helpers;  // other peers whose blocks it holds (endgame)
};

// The peer's requests we accepted and have not yet turned into blocks, oldest first: a ring
// over one allocation made at the first request, none per request after it.
class RequestQueue {
public:
    explicit RequestQueue(std::uint32_t capacity) : capacity_(capacity) {}
    bool empty() const { return size_ == 0; }
    std::uint32_t size() const { return size_; }
    std::uint32_t capacity() const { return capacity_; }
    const wire::Request& front() const { return ring_[head_]; }
    const wire::Request& at(std::uint32_t i) const { return ring_[(head_ + i) % capacity_]; }
    // False when full.
    bool push(const wire::Request& request);
    void pop();
    // Removes every request `drop(request)` says, keeping the others in order; calls
    // `removed(request)` for each one removed.
    template <class Drop, class Removed>
    void remove_if(Drop&& drop, Removed&& removed) {
        std::uint32_t kept = 0;
        for (std::uint32_t i = 0; i < size_; ++i) {
            const wire::Request request = at(i);
            if (drop(request)) {
                removed(request);
            } else {
                ring_[(head_ + kept++) % capacity_] = request;
            }
        }
        size_ = kept;
    }

private:
    std::uint32_t capacity_;
    std::vector<wire::Request> ring_;
    std::uint32_t head_ = 0;
    std::uint32_t size_ = 0;
};

// A piece whose bytes blocks point into, pinned while they do (the upload cache's).
struct CacheEntry;

// A block queued for the peer: its 13-byte header is in the control bytes (`outgoing()`),
// and its data, where it lies (a cached piece, never copied), goes on the wire right after
// that header, at offset `at` of the control bytes.
struct OutBlock {
    std::size_t at = 0;
    std::span<const std::uint8_t> data;
    CacheEntry* entry = nullptr;
};

// What the choker needs to know of a peer (PeerStat).
struct PeerFigures {
    bool interested = false;  // in us
    bool choked = true;       // by us
    std::uint32_t download_rate = 0;
    std::uint32_t upload_rate = 0;
    bool snubbed = false;
    bool seed = false;
    std::uint64_t uploaded = 0;
};

class PeerSession {
public:
    // A WorkRequest asks for at least this many blocks' worth of pieces: 1 MiB, one piece of
    // the common size.
    static constexpr std::uint32_t kMinRequestBlocks = 64;

    // `ours` (the torrent's, outliving the session; null: we have nothing) says what we may
    // announce and serve.
    PeerSession(const PieceGeometry& geometry, const Sha1Digest& info_hash,
                const wire::PeerId& our_id, Clock::time_point now, SessionLimits limits = {},
                const LocalPieces* ours = nullptr);

    // --- handshake ---
    // Queues our handshake, with the fast (BEP 6) and extension protocol (BEP 10) bits set.
    void send_handshake(Clock::time_point now);
    // What our extended handshake says; before on_handshake.
    void set_extension_offer(ExtensionOffer offer) { offer_ = std::move(offer); }
    // Checks the peer's handshake: same torrent, and not ourselves. Then queues what we have
    // (bitfield, or have_all/have_none with the fast extension; nothing when we have nothing
    // and it lacks the extension) and the allowed-fast pieces offered (see offer_allowed_fast).
    Status on_handshake(const wire::Handshake& theirs, Clock::time_point now);
    bool handshake_done() const { return handshake_done_; }
    const wire::PeerId& peer_id() const { return peer_id_; }
    // The peer was ourselves (our own peer id came back).
    bool found_ourselves() const { return found_ourselves_; }
    // Both sides set the fast bit.
    bool fast() const { return fast_; }
    // Both sides set the extension protocol bit: extended messages (id 20) are part of the
    // stream.
    bool extended() const { return extended_; }
    // The pieces it may request while we choke it (BEP 6's set for its address), offered
    // with allowed_fast once we have them. Call before on_handshake.
    void offer_allowed_fast(std::vector<std::uint32_t> pieces);

    // --- the extension protocol (BEP 10) and metadata (BEP 9) ---
    // Its extended handshake, once it came (a later one replaces it).
    const std::optional<ext::ExtendedHandshake>& their_extensions() const { return their_extensions_; }
    // It takes BEP 9 requests and has metadata of this size to give.
    std::optional<std::uint32_t> metadata_size_offered() const;
    // Asks it for a piece of the metadata; false when it takes no ut_metadata.
    bool request_metadata(std::uint32_t piece, Clock::time_point now);
    // Its answers to our requests, in order; the worker drains them.
    std::vector<MetadataReply>& metadata_replies() { return metadata_replies_; }
    std::uint32_t metadata_pieces_served() const { return metadata_served_; }
    // Peers it told us of (BEP 11) since the last call: at most one message's worth, and one
    // message per pex_min_gap taken (a peer that sends more often is not listened to more).
    std::optional<ext::PexMessage> take_pex() { return std::exchange(pex_in_, std::nullopt); }
    // Peer exchange the other way: `current` is every peer of the torrent we could name now
    // (listen addresses). Once a minute at most (BEP 11's pace), the peer is told who is new
    // and who left since the last message, 50 of each at most; nothing when it takes no
    // ut_pex, or nothing changed. Returns whether a message went out.
    bool tell_pex(const std::vector<ext::PexPeer>& current, Clock::time_point now);
    // Whether tell_pex would consider sending now (the worker gathers `current` only then).
    bool pex_due(Clock::time_point now) const;
    // The UDP port of its DHT node (BEP 5's port message): once, the first time it says.
    std::optional<std::uint16_t> take_dht_port() { return std::exchange(dht_port_, std::nullopt); }

    // --- before the info dictionary ---
    // Made with an empty geometry: the torrent is known by its info-hash alone.
    bool awaiting_info() const { return geometry_.piece_count() == 0; }
    // The info dictionary came: the session takes the torrent's geometry and what we have,
    // then replays what the peer said of its pieces. An Error (a bitfield of the wrong size,
    // a have out of range) means drop it.
    Status learn_info(const PieceGeometry& geometry, const LocalPieces* ours, Clock::time_point now);

    // --- the peer's messages ---
    Status on_message(const wire::Message& message, Clock::time_point now);
    bool peer_choking() const { return peer_choking_; }
    bool peer_interested() const { return peer_interested_; }
    bool am_interested() const { return am_interested_; }
    bool peer_has(PieceIndex index) const;
    std::uint32_t pieces_peer_has() const { return have_count_; }
    bool peer_is_seed() const { return !awaiting_info() && have_count_ == geometry_.piece_count(); }
    // We have every piece and so does the peer: neither has anything for the other, and the
    // connection only holds one of the worker's peer slots (libtorrent and Transmission drop
    // such connections too). A daemon seeding hundreds of torrents it fetched from seeds
    // would otherwise keep a slot per torrent, and the torrents still downloading get none.
    bool both_seeds() const {
        return handshake_done_ && ours_ != nullptr && ours_->all() && peer_is_seed();
    }
    // Its interest in us changed since the last call (the choker wants to know at once).
    bool take_interest_changed() { return std::exchange(interest_changed_, false); }
    // It unchoked us since the last call (the worker's piece budget counts it at once).
    bool take_unchoked() { return std::exchange(unchoked_, false); }
    // Pieces it allowed us to request while it chokes us (BEP 6), as far as we keep them.
    const std::vector<std::uint32_t>& allowed_by_peer() const { return allowed_by_peer_; }
    // Leases given up because the peer rejected our request while unchoking us (it will not
    // send that piece): the caller releases them to the orchestrator.
    std::vector<std::uint64_t>& rejected_leases() { return rejected_leases_; }

    // --- what we have, and whom we choke ---
    // A piece became ours: a have (unless the peer has it), and our interest follows.
    void on_local_piece(PieceIndex piece, Clock::time_point now);
    // Our whole set was replaced: haves for what is new, interest recomputed.
    void on_local_reset(Clock::time_point now);
    bool am_choking() const { return am_choking_; }
    // The choker's decision. Choking drops the requests we hold (but those of allowed-fast
    // pieces), each answered with reject_request under the fast extension.
    void set_choking(bool choke, Clock::time_point now);

    // --- its requests of us ---
    // Accepted requests, oldest first: the uploader turns them into blocks.
    bool has_requests() const { return !requests_.empty(); }
    const wire::Request& next_request() const { return requests_.front(); }
    std::uint32_t requests_queued() const { return requests_.size(); }
    void pop_request() { requests_.pop(); }
    // The oldest request cannot be served (no longer ours, the read failed, we read nothing):
    // reject_request under the fast extension, else dropped without a word.
    void refuse_request(Clock::time_point now);
    // The same for every request of `piece`.
    void refuse_requests_for(PieceIndex piece, Clock::time_point now);
    // Queues the block answering `request` (its header among the control bytes, its data
    // where it lies) and counts it against the send queue.
    void queue_block(const wire::Request& request, std::span<const std::uint8_t> data,
                     CacheEntry* entry, Clock::time_point now);
    std::vector<OutBlock>& out_blocks() { return out_blocks_; }
    // Blocks queued and not yet written (the connection's writes included), and their bytes.
    std::uint32_t blocks_queued() const { return blocks_queued_; }
    std::uint64_t block_bytes_queued() const { return block_bytes_queued_; }
    // The connection is done with `count` blocks of `bytes` (written when `sent`).
    void blocks_done(std::uint32_t count, std::uint64_t bytes, bool sent);
    // Payload bytes sent to it since it connected.
    std::uint64_t uploaded() const { return uploaded_; }
    std::uint64_t rejects_sent() const { return rejects_sent_; }
    PeerFigures figures(Clock::time_point now) const;
    bool snubbed(Clock::time_point now) const;
    // The bitfield if not yet reported, else the haves since the last report; nullopt when
    // there is nothing new. `include_haves` false holds back haves (they are batched).
    std::optional<HasReport> take_has_report(bool include_haves);

    // --- work from the orchestrator ---
    // How many more pieces this peer could use now (0: don't ask).
    std::uint32_t pieces_wanted(Clock::time_point now) const;
    // Pieces leased to it when its pipeline is full: up to twice the depth in blocks, in
    // whole pieces, one more for the piece being finished, and never less than two.
    std::uint32_t pieces_held_when_full() const;
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
    bool holds_lease(PieceIndex piece) const { return is_leased(piece); }

    // --- endgame with the worker's other peers (PieceAssembly::absorb) ---
    // Called with every block accepted for a shared lease, while its bytes are valid.
    using BlockShare = std::function<void(PieceIndex, BlockOffset, std::span<const std::uint8_t>)>;
    void set_block_share(BlockShare share) { block_share_ = std::move(share); }
    bool shares_blocks() const { return static_cast<bool>(block_share_); }
    // Marks the lease of `piece` shared and, given an order, asks for its blocks in it; false
    // if not held.
    bool share_lease(PieceIndex piece, std::optional<PieceAssembly::Order> order = std::nullopt);
    // Calls `f(offset, bytes)` for each block of `piece` received so far.
    template <class F>
    void for_each_received(PieceIndex piece, F&& f) {
        if (const auto lease = find_lease(piece); lease != leases_.end()) lease->for_each_received(f);
    }
    // Takes in a block of `piece` that peer `from` sent, cancelling our request for it. When
    // that completes our copy, the sender's copy is complete too and goes on: ours is dropped
    // and its lease id returned (to hand back).
    std::optional<std::uint64_t> absorb_block(PieceIndex piece, BlockOffset offset,
                                              std::span<const std::uint8_t> data,
                                              const std::string& from, Clock::time_point now);
    // Bytes of piece buffers this session holds.
    std::uint64_t leased_bytes() const;

    // --- requests ---
    // Queues requests up to the pipeline depth. `allowed` false (backpressure from the
    // verifier) sends none.
    void fill_requests(Clock::time_point now, bool allowed);
    std::uint32_t requests_outstanding() const { return outstanding_; }
    std::uint32_t pipeline_depth() const { return pipeline_.depth(); }
    const PipelineSizer& pipeline() const { return pipeline_; }
    void expect_round_trip(Clock::duration round_trip) { pipeline_.expect_round_trip(round_trip); }
    std::uint64_t unrequested_blocks_received() const { return unrequested_received_; }

    // Pieces whose every block arrived, to hand to the verifier; the caller drains it.
    std::vector<CompletedPiece>& completed() { return completed_; }
    // Payload bytes of accepted blocks since the last call.
    std::uint64_t take_downloaded();

    // --- time ---
    // Re-sizes the pipeline, samples the rates, sends haves held back and a keep-alive when
    // we have been quiet.
    void on_tick(Clock::time_point now);
    bool stalled(Clock::time_point now) const;
    bool choked_too_long(Clock::time_point now) const;

    // Bytes to write to the peer; the connection swaps them out.
    std::vector<std::uint8_t>& outgoing() { return outgoing_; }

private:
    void send(const wire::Message& message, Clock::time_point now);
    void send_reject(const wire::Request& request, Clock::time_point now);
    bool ours_has(PieceIndex piece) const { return ours_ != nullptr && ours_->has(piece); }
    // What a peer leases, queued and in flight, when its pipeline is full: twice its depth.
    std::uint32_t leased_blocks_wanted() const;
    std::uint32_t blocks_per_piece() const;
    void send_availability(Clock::time_point now);
    void announce(PieceIndex piece, Clock::time_point now);
    void send_held_back_haves(Clock::time_point now);
    void update_interest(Clock::time_point now);
    void recount_lacking();
    bool offered_to_peer(PieceIndex piece) const;
    Status on_request(const wire::Request& request, Clock::time_point now);
    Status refuse(const wire::Request& request, Clock::time_point now, const std::string& why);
    void on_cancel(const wire::Cancel& cancel, Clock::time_point now);
    Status on_reject(const wire::RejectRequest& reject, Clock::time_point now);
    Status on_availability_message(Clock::time_point now);
    Status on_block(const wire::Piece& block, Clock::time_point now);
    Status reject_block(const char* why);
    Status on_extended(const wire::Extended& message, Clock::time_point now);
    void send_extended(std::uint8_t id, std::string_view payload, Clock::time_point now);
    // Before the info: what it says of its pieces is kept for learn_info.
    Status on_message_awaiting_info(const wire::Message& message, Clock::time_point now);
    bool is_leased(PieceIndex piece) const;
    // The lease of `piece`, or leases_.end(): the bitmap answers most misses without a walk.
    std::deque<PieceAssembly>::iterator find_lease(PieceIndex piece);
    // Every lease leaves through here, which keeps the counts below in step.
    void drop_lease(std::deque<PieceAssembly>::iterator lease);

    PieceGeometry geometry_;
    Sha1Digest info_hash_;
    wire::PeerId our_id_;
    SessionLimits limits_;
    wire::PeerId peer_id_{};
    bool handshake_done_ = false;
    bool found_ourselves_ = false;
    bool fast_ = false;
    bool extended_ = false;
    const LocalPieces* ours_ = nullptr;

    ExtensionOffer offer_;
    std::optional<ext::ExtendedHandshake> their_extensions_;
    std::vector<std::uint32_t> metadata_requested_;
    std::vector<MetadataReply> metadata_replies_;
    std::uint32_t metadata_served_ = 0;
    std::optional<ext::PexMessage> pex_in_;
    std::optional<Clock::time_point> pex_taken_at_;
    std::vector<ext::PexPeer> pex_told_;  // sorted by address
    Clock::time_point next_pex_{};
    std::optional<std::uint16_t> dht_port_;
    bool dht_port_heard_ = false;  // later port messages are not forwarded again
    // Before the info: the peer's availability, replayed by learn_info.
    std::optional<std::vector<std::uint8_t>> early_bitfield_;
    bool early_have_all_ = false;
    std::vector<std::uint32_t> early_haves_;

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
    BlockShare block_share_;
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

    // --- uploads ---
    bool am_choking_ = true;
    bool interest_changed_ = false;
    bool unchoked_ = false;
    std::uint32_t lacking_ = 0;       // pieces it has that we do not
    std::vector<bool> announced_;     // pieces we told it we have (by piece)
    bool haves_held_back_ = false;    // some piece of ours is not announced yet
    std::uint32_t have_cursor_ = 0;   // where the held-back haves resume
    struct Offer {
        std::uint32_t piece;
        bool sent;
    };
    std::vector<Offer> offered_;      // our allowed-fast set for it
    std::vector<std::uint32_t> allowed_by_peer_;
    std::vector<std::uint64_t> rejected_leases_;
    RequestQueue requests_;
    std::vector<OutBlock> out_blocks_;
    std::uint32_t blocks_queued_ = 0;
    std::uint64_t block_bytes_queued_ = 0;
    std::uint64_t uploaded_ = 0;
    std::uint64_t downloaded_total_ = 0;
    std::uint64_t rejects_sent_ = 0;
    RateMeter upload_meter_;
    RateMeter download_meter_;
};

}  // namespace pw::peer_worker
