#include "peer_worker/peer_session.hpp"

#include <algorithm>
#include <string>
#include <type_traits>

namespace pw::peer_worker {

PeerSession::PeerSession(const PieceGeometry& geometry, const Sha1Digest& info_hash,
                         const wire::PeerId& our_id, Clock::time_point now, SessionLimits limits)
    : geometry_(geometry), info_hash_(info_hash), our_id_(our_id), limits_(limits),
      choked_since_(now), has_(geometry.piece_count(), false),
      leased_(geometry.piece_count(), false), pipeline_(now),
      last_progress_(now), last_sent_(now) {}

void PeerSession::send(const wire::Message& message, Clock::time_point now) {
    wire::encode(message, outgoing_);
    last_sent_ = now;
}

void PeerSession::send_handshake(Clock::time_point now) {
    wire::Handshake ours;
    ours.info_hash = info_hash_;
    ours.peer_id = our_id_;
    const auto bytes = wire::encode_handshake(ours);
    outgoing_.insert(outgoing_.end(), bytes.begin(), bytes.end());
    last_sent_ = now;
}

Status PeerSession::on_handshake(const wire::Handshake& theirs, Clock::time_point now) {
    if (theirs.info_hash != info_hash_) return make_error("handshake for another torrent");
    if (theirs.peer_id == our_id_) return make_error("connected to ourselves");
    peer_id_ = theirs.peer_id;
    handshake_done_ = true;
    choked_since_ = now;
    last_progress_ = now;
    return ok_status();
}

bool PeerSession::peer_has(PieceIndex index) const {
    return index.get() < has_.size() && has_[index.get()];
}

Status PeerSession::on_message(const wire::Message& message, Clock::time_point now) {
    Status status = ok_status();
    std::visit(
        [&](const auto& m) {
            using T = std::decay_t<decltype(m)>;
            if constexpr (std::is_same_v<T, wire::Choke>) {
                if (!peer_choking_) choked_since_ = now;
                peer_choking_ = true;
                std::uint32_t voided = 0;
                for (auto& lease : leases_) voided += lease.void_requests();
                forgiven_ += voided;
                unrequested_blocks_ += voided;
                request_cursor_ = 0;
                outstanding_ = 0;
            } else if constexpr (std::is_same_v<T, wire::Unchoke>) {
                if (peer_choking_) last_progress_ = now;
                peer_choking_ = false;
            } else if constexpr (std::is_same_v<T, wire::Interested>) {
                peer_interested_ = true;
            } else if constexpr (std::is_same_v<T, wire::NotInterested>) {
                peer_interested_ = false;
            } else if constexpr (std::is_same_v<T, wire::Have>) {
                heard_availability_ = true;
                if (!geometry_.contains(m.index)) {
                    status = make_error("have for piece " + std::to_string(m.index.get()) +
                                        " out of range");
                    return;
                }
                if (has_[m.index.get()]) return;
                has_[m.index.get()] = true;
                ++have_count_;
                pending_haves_.push_back(m.index.get());
                have_since_answer_ = true;
            } else if constexpr (std::is_same_v<T, wire::Bitfield>) {
                if (heard_availability_) {
                    status = make_error("bitfield after have or bitfield");
                    return;
                }
                if (!wire::valid_bitfield(m.bits, geometry_.piece_count())) {
                    status = make_error("invalid bitfield");
                    return;
                }
                heard_availability_ = true;
                for (std::uint32_t i = 0; i < geometry_.piece_count(); ++i) {
                    const bool set = ((m.bits[i / 8] >> (7 - i % 8)) & 1) != 0;
                    if (set && !has_[i]) {
                        has_[i] = true;
                        ++have_count_;
                    }
                }
                bitfield_unreported_ = true;
                have_since_answer_ = true;
            } else if constexpr (std::is_same_v<T, wire::Piece>) {
                status = on_block(m, now);
            } else {
                // KeepAlive, Port, and Request/Cancel: we keep the peer choked and do not
                // seed yet, so its requests are ignored. Seeding answers them here.
            }
        },
        message);
    if (status.ok() && !am_interested_ && have_count_ > 0) {
        am_interested_ = true;
        send(wire::Interested{}, now);
    }
    return status;
}

bool PeerSession::is_leased(PieceIndex piece) const {
    return piece.get() < leased_.size() && leased_[piece.get()];
}

void PeerSession::drop_lease(std::deque<PieceAssembly>::iterator lease) {
    leased_[lease->piece().get()] = false;
    unrequested_blocks_ -= lease->blocks_unrequested();
    if (static_cast<std::size_t>(lease - leases_.begin()) < request_cursor_) --request_cursor_;
    leases_.erase(lease);
}

Status PeerSession::reject_block(const char* why) {
    ++unrequested_received_;
    if (unrequested_received_ > limits_.unrequested_allowance + forgiven_) {
        return make_error(std::string("keeps sending blocks we did not request (") + why + ", " +
                          std::to_string(unrequested_received_) + " so far)");
    }
    return ok_status();
}

Status PeerSession::on_block(const wire::Piece& block, Clock::time_point now) {
    if (!is_leased(block.index)) return reject_block("piece not leased here");
    const auto lease = std::find_if(leases_.begin(), leases_.end(),
                                    [&](const PieceAssembly& a) { return a.piece() == block.index; });
    if (lease == leases_.end()) return reject_block("piece not leased here");
    Clock::duration latency{};
    switch (lease->add_block(block.offset, block.data, now, latency)) {
        case PieceAssembly::BlockResult::not_requested: return reject_block("block not requested");
        case PieceAssembly::BlockResult::duplicate: return reject_block("duplicate block");
        case PieceAssembly::BlockResult::wrong_shape: return reject_block("block of the wrong size");
        case PieceAssembly::BlockResult::accepted: break;
    }
    --outstanding_;
    last_progress_ = now;
    downloaded_ += block.data.size();
    pipeline_.on_block(static_cast<std::uint32_t>(block.data.size()), latency);
    if (lease->complete()) {
        completed_.push_back({lease->piece(), lease->lease_id(), lease->size(), lease->take_buffer()});
        drop_lease(lease);
    }
    return ok_status();
}

std::optional<HasReport> PeerSession::take_has_report(bool include_haves) {
    if (bitfield_unreported_) {
        bitfield_unreported_ = false;
        pending_haves_.clear();  // the bitfield below already holds them
        HasReport report;
        if (have_count_ == geometry_.piece_count()) {
            report.have_all = true;
            return report;
        }
        std::vector<std::uint8_t> bits(geometry_.bitfield_bytes(), 0);
        for (std::uint32_t i = 0; i < has_.size(); ++i) {
            if (has_[i]) bits[i / 8] = static_cast<std::uint8_t>(bits[i / 8] | (0x80u >> (i % 8)));
        }
        report.bitfield = std::move(bits);
        return report;
    }
    if (!include_haves || pending_haves_.empty()) return std::nullopt;
    HasReport report;
    report.haves.swap(pending_haves_);
    return report;
}

std::uint32_t PeerSession::pieces_wanted(Clock::time_point now) const {
    if (!handshake_done_ || peer_choking_ || have_count_ == 0) return 0;
    if (awaiting_work_ && now - work_requested_at_ < limits_.work_answer_timeout) return 0;
    if (!have_since_answer_ && now < work_retry_at_) return 0;
    // Asked for once less than half a pipeline is queued behind the blocks in flight, and then
    // up to a whole one: a fast peer's deep pipeline is topped up a few pieces at a time, not
    // one (each WorkRequest is a round trip through the orchestrator; with 1 MiB pieces at
    // 230 MB/s, one per piece was two thirds of the orchestrator's messages). Leased pieces
    // take no arena memory before their bytes come.
    const std::uint32_t depth = pipeline_.depth();
    const std::uint32_t queued = unrequested_blocks_;
    if (queued >= depth / 2) return 0;
    const std::uint32_t wanted_blocks = 2 * depth;
    const std::uint32_t held = queued + outstanding_;
    if (held >= wanted_blocks) return 0;
    const std::uint32_t blocks_per_piece =
        std::max<std::uint32_t>(1, (geometry_.piece_length() + kBlockSize - 1) / kBlockSize);
    const std::uint32_t pieces = (wanted_blocks - held + blocks_per_piece - 1) / blocks_per_piece;
    // A WorkRequest costs the same round trip through the orchestrator (and a turn of three
    // loops) whatever it asks for. Asking for what the pipeline lacks right now would, with
    // one-block pieces, ask for a handful of blocks at a time; at least kMinRequestBlocks'
    // worth keeps the requests per byte those of 1 MiB pieces (and holds no more ahead).
    const std::uint32_t floor = (kMinRequestBlocks + blocks_per_piece - 1) / blocks_per_piece;
    return std::clamp<std::uint32_t>(std::max(pieces, floor), 1, limits_.max_pieces_per_request);
}

void PeerSession::note_work_requested(Clock::time_point now) {
    awaiting_work_ = true;
    have_since_answer_ = false;
    work_requested_at_ = now;
}

void PeerSession::note_work_answer(bool got_any, Clock::time_point now) {
    awaiting_work_ = false;
    work_retry_at_ = got_any ? now : now + limits_.empty_lease_retry;
}

bool PeerSession::add_lease(PieceIndex piece, std::uint64_t lease_id,
                            PieceDestination destination) {
    if (!geometry_.contains(piece) || is_leased(piece)) return false;
    if (destination.size() != geometry_.piece_size(piece)) return false;
    const auto& lease = leases_.emplace_back(piece, lease_id, std::move(destination));
    leased_[piece.get()] = true;
    unrequested_blocks_ += lease.blocks_unrequested();
    return true;
}

std::optional<std::uint64_t> PeerSession::cancel_piece(PieceIndex piece, Clock::time_point now) {
    const auto lease = std::find_if(leases_.begin(), leases_.end(),
                                    [&](const PieceAssembly& a) { return a.piece() == piece; });
    if (lease == leases_.end()) return std::nullopt;
    for (const auto& block : lease->requested_blocks()) {
        send(wire::Cancel{piece, block.offset, block.length}, now);
        --outstanding_;
        ++forgiven_;  // it may be on the wire already
    }
    const std::uint64_t lease_id = lease->lease_id();
    drop_lease(lease);
    return lease_id;
}

std::vector<std::uint64_t> PeerSession::release_leases() {
    std::vector<std::uint64_t> ids;
    for (auto& lease : leases_) {
        forgiven_ += lease.blocks_requested();
        ids.push_back(lease.lease_id());
        leased_[lease.piece().get()] = false;
    }
    leases_.clear();
    unrequested_blocks_ = 0;
    request_cursor_ = 0;
    outstanding_ = 0;
    return ids;
}

std::uint64_t PeerSession::leased_bytes() const {
    std::uint64_t total = 0;
    for (const auto& lease : leases_) total += lease.size();
    return total;
}

void PeerSession::fill_requests(Clock::time_point now, bool allowed) {
    if (!handshake_done_ || peer_choking_ || !allowed) return;
    const std::uint32_t depth = pipeline_.depth();
    // Every turn that queues requests costs a write to the socket: topping the pipeline up
    // once a quarter of it is free sends requests a handful at a time instead of one or two
    // per read, and still keeps three quarters of it in flight.
    if (outstanding_ > 0 && outstanding_ + std::max<std::uint32_t>(1, depth / 4) > depth) return;
    for (; request_cursor_ < leases_.size(); ++request_cursor_) {
        PieceAssembly& lease = leases_[request_cursor_];
        while (outstanding_ < depth) {
            const auto block = lease.request_next(now);
            if (!block) break;
            if (outstanding_ == 0) last_progress_ = now;  // the stall clock starts now
            send(wire::Request{lease.piece(), block->offset, block->length}, now);
            ++outstanding_;
            --unrequested_blocks_;
        }
        if (outstanding_ >= depth) break;
    }
}

std::uint64_t PeerSession::take_downloaded() {
    return std::exchange(downloaded_, 0);
}

void PeerSession::on_tick(Clock::time_point now) {
    pipeline_.update(now);
    if (handshake_done_ && now - last_sent_ >= limits_.keep_alive) send(wire::KeepAlive{}, now);
}

bool PeerSession::stalled(Clock::time_point now) const {
    return outstanding_ > 0 && now - last_progress_ >= limits_.stall_timeout;
}

bool PeerSession::choked_too_long(Clock::time_point now) const {
    return peer_choking_ && !leases_.empty() && now - choked_since_ >= limits_.choked_release;
}

}  // namespace pw::peer_worker
