#include "peer_worker/peer_session.hpp"

#include <algorithm>
#include <iterator>
#include <tuple>
#include <string>
#include <type_traits>
#include <variant>

namespace pw::peer_worker {

// --- RequestQueue ---

bool RequestQueue::push(const wire::Request& request) {
    if (size_ == capacity_) return false;
    if (ring_.empty()) ring_.resize(capacity_);
    ring_[(head_ + size_) % capacity_] = request;
    ++size_;
    return true;
}

void RequestQueue::pop() {
    if (size_ == 0) return;
    head_ = (head_ + 1) % capacity_;
    --size_;
}

// --- PeerSession ---

PeerSession::PeerSession(const PieceGeometry& geometry, const Sha1Digest& info_hash,
                         const wire::PeerId& our_id, Clock::time_point now, SessionLimits limits,
                         const LocalPieces* ours)
    : geometry_(geometry), info_hash_(info_hash), our_id_(our_id), limits_(limits),
      ours_(ours), choked_since_(now), has_(geometry.piece_count(), false),
      leased_(geometry.piece_count(), false), pipeline_(now),
      last_progress_(now), last_sent_(now), requests_(std::max<std::uint32_t>(1, limits.max_queued_requests)),
      upload_meter_(now), download_meter_(now) {
    // A LocalPieces of another torrent (another piece count) would be read out of range.
    if (ours_ != nullptr && ours_->piece_count() != geometry_.piece_count()) ours_ = nullptr;
}

void PeerSession::send(const wire::Message& message, Clock::time_point now) {
    wire::encode(message, outgoing_);
    last_sent_ = now;
}

void PeerSession::send_reject(const wire::Request& request, Clock::time_point now) {
    send(wire::RejectRequest{request.index, request.offset, request.length}, now);
    ++rejects_sent_;
}

void PeerSession::send_handshake(Clock::time_point now) {
    wire::Handshake ours;
    ours.info_hash = info_hash_;
    ours.peer_id = our_id_;
    ours.set_fast();
    ext::advertise_extension_protocol(ours.reserved);
    if (offer_.dht_port != 0) ours.reserved[7] = static_cast<std::uint8_t>(ours.reserved[7] | 0x01);  // BEP 5
    const auto bytes = wire::encode_handshake(ours);
    outgoing_.insert(outgoing_.end(), bytes.begin(), bytes.end());
    last_sent_ = now;
}

void PeerSession::offer_allowed_fast(std::vector<std::uint32_t> pieces) {
    offered_.clear();
    for (const std::uint32_t piece : pieces) {
        if (geometry_.contains(PieceIndex{piece})) offered_.push_back(Offer{piece, false});
    }
}

Status PeerSession::on_handshake(const wire::Handshake& theirs, Clock::time_point now) {
    if (theirs.info_hash != info_hash_) return make_error("handshake for another torrent");
    if (theirs.peer_id == our_id_) {
        found_ourselves_ = true;
        return make_error("connected to ourselves");
    }
    peer_id_ = theirs.peer_id;
    handshake_done_ = true;
    fast_ = theirs.supports_fast();
    extended_ = theirs.supports_extensions();
    choked_since_ = now;
    last_progress_ = now;
    send_availability(now);
    if (offer_.dht_port != 0 && theirs.supports_dht()) send(wire::Port{offer_.dht_port}, now);
    if (extended_) {
        const bool have_metadata = offer_.metadata != nullptr && !offer_.metadata->empty();
        auto ours = ext::our_handshake(
            "piecework 0.1", limits_.max_queued_requests, offer_.listen_port,
            offer_.their_ip.empty() ? std::nullopt : std::optional<std::string>(offer_.their_ip),
            have_metadata ? std::optional<std::uint32_t>(static_cast<std::uint32_t>(offer_.metadata->size()))
                          : std::nullopt);
        if (!offer_.pex) ours.extensions.erase(std::string(ext::kUtPex));
        send_extended(ext::kHandshakeId, ext::encode_handshake(ours), now);
    }
    return ok_status();
}

void PeerSession::send_extended(std::uint8_t id, std::string_view payload, Clock::time_point now) {
    ext::frame_extended(id, payload, outgoing_);
    last_sent_ = now;
}

std::optional<std::uint32_t> PeerSession::metadata_size_offered() const {
    if (!their_extensions_ || their_extensions_->id_of(ext::kUtMetadata) == 0) return std::nullopt;
    return their_extensions_->metadata_size;
}

bool PeerSession::request_metadata(std::uint32_t piece, Clock::time_point now) {
    if (!their_extensions_) return false;
    const std::uint8_t id = their_extensions_->id_of(ext::kUtMetadata);
    if (id == 0) return false;
    if (std::find(metadata_requested_.begin(), metadata_requested_.end(), piece) != metadata_requested_.end()) {
        return true;
    }
    // The oldest, long given up by the fetch, is forgotten: its late answer is ignored.
    if (metadata_requested_.size() >= limits_.max_metadata_requests) metadata_requested_.erase(metadata_requested_.begin());
    metadata_requested_.push_back(piece);
    send_extended(id, ext::encode_metadata_request(piece), now);
    return true;
}

bool PeerSession::pex_due(Clock::time_point now) const {
    return handshake_done_ && offer_.pex && their_extensions_ && their_extensions_->id_of(ext::kUtPex) != 0 &&
           now >= next_pex_;
}

namespace {
bool address_less(const ext::PexPeer& a, const ext::PexPeer& b) {
    return std::tie(a.address.ip, a.address.port) < std::tie(b.address.ip, b.address.port);
}
}  // namespace

bool PeerSession::tell_pex(const std::vector<ext::PexPeer>& current, Clock::time_point now) {
    if (!pex_due(now)) return false;
    next_pex_ = now + limits_.pex_interval;
    std::vector<ext::PexPeer> sorted = current;
    std::sort(sorted.begin(), sorted.end(), address_less);
    ext::PexMessage message;
    std::set_difference(sorted.begin(), sorted.end(), pex_told_.begin(), pex_told_.end(),
                        std::back_inserter(message.added), address_less);
    std::vector<ext::PexPeer> gone;
    std::set_difference(pex_told_.begin(), pex_told_.end(), sorted.begin(), sorted.end(),
                        std::back_inserter(gone), address_less);
    if (message.added.size() > ext::kMaxPexSent) message.added.resize(ext::kMaxPexSent);
    if (gone.size() > ext::kMaxPexSent) gone.resize(ext::kMaxPexSent);
    if (message.added.empty() && gone.empty()) return false;
    for (const auto& peer : gone) message.dropped.push_back(peer.address);
    auto payload = ext::encode_pex(message);
    if (!payload) return false;
    send_extended(their_extensions_->id_of(ext::kUtPex), *payload, now);
    // What it was told: the old list without the dropped, with the added.
    std::vector<ext::PexPeer> kept;
    std::set_difference(pex_told_.begin(), pex_told_.end(), gone.begin(), gone.end(), std::back_inserter(kept),
                        address_less);
    std::vector<ext::PexPeer> merged;
    std::merge(kept.begin(), kept.end(), message.added.begin(), message.added.end(), std::back_inserter(merged),
               address_less);
    if (merged.size() > limits_.max_pex_told) merged.resize(limits_.max_pex_told);
    pex_told_ = std::move(merged);
    return true;
}

Status PeerSession::on_extended(const wire::Extended& message, Clock::time_point now) {
    const std::string_view body(reinterpret_cast<const char*>(message.body.data()), message.body.size());
    auto incoming = ext::decode_incoming(body);
    if (!incoming) return make_error("bad extended message: " + incoming.error().describe());
    Status status = ok_status();
    std::visit(
        [&](auto& m) {
            using T = std::decay_t<decltype(m)>;
            if constexpr (std::is_same_v<T, ext::ExtendedHandshake>) {
                their_extensions_ = std::move(m);
            } else if constexpr (std::is_same_v<T, ext::MetadataMessage>) {
                const std::uint8_t their_id = their_extensions_ ? their_extensions_->id_of(ext::kUtMetadata) : 0;
                if (m.type == ext::MetadataType::request) {
                    // Answered at once: a 16 KiB piece each, and no more than a few times the
                    // whole per connection.
                    if (their_id == 0) return;  // it cannot read an answer
                    const std::string_view ours =
                        offer_.metadata != nullptr ? std::string_view(*offer_.metadata) : std::string_view{};
                    const std::uint32_t cap =
                        limits_.metadata_serve_factor * std::max<std::uint32_t>(1, ext::metadata_piece_count(
                                                                                       static_cast<std::uint32_t>(ours.size())));
                    if (ours.empty() || metadata_served_ >= cap) {
                        send_extended(their_id, ext::encode_metadata_reject(m.piece), now);
                        return;
                    }
                    ++metadata_served_;
                    send_extended(their_id, ext::answer_metadata_request(ours, m.piece), now);
                } else if (m.type == ext::MetadataType::data || m.type == ext::MetadataType::reject) {
                    // Only answers to our own requests count; anything else is ignored.
                    const auto asked = std::find(metadata_requested_.begin(), metadata_requested_.end(), m.piece);
                    if (asked == metadata_requested_.end()) return;
                    metadata_requested_.erase(asked);
                    MetadataReply reply;
                    reply.rejected = m.type == ext::MetadataType::reject;
                    reply.piece = m.piece;
                    reply.total_size = m.total_size;
                    if (!reply.rejected) reply.data.assign(m.data);
                    metadata_replies_.push_back(std::move(reply));
                }
                // Unknown msg_type: BEP 9 says ignore.
            } else if constexpr (std::is_same_v<T, ext::PexMessage>) {
                // One message's worth is kept until the worker takes it; BEP 11 peers send
                // one a minute, so a newer one replacing an untaken one loses little.
                if (!offer_.pex || (pex_taken_at_ && now - *pex_taken_at_ < limits_.pex_min_gap)) return;
                pex_taken_at_ = now;
                pex_in_ = std::move(m);
            }
            // UnknownExtension: ignored (BEP 10).
        },
        *incoming);
    return status;
}

Status PeerSession::learn_info(const PieceGeometry& geometry, const LocalPieces* ours, Clock::time_point now) {
    if (!awaiting_info()) return ok_status();
    geometry_ = geometry;
    const std::uint32_t pieces = geometry_.piece_count();
    ours_ = ours != nullptr && ours->piece_count() == pieces ? ours : nullptr;
    has_.assign(pieces, false);
    leased_.assign(pieces, false);
    // We said nothing of our pieces (or have_none): each is announced by a have from now on.
    announced_.assign(pieces, false);
    have_count_ = 0;
    if (early_have_all_) {
        std::fill(has_.begin(), has_.end(), true);
        have_count_ = pieces;
    } else if (early_bitfield_) {
        if (!wire::valid_bitfield(*early_bitfield_, pieces)) return make_error("invalid bitfield");
        for (std::uint32_t i = 0; i < pieces; ++i) {
            if ((((*early_bitfield_)[i / 8] >> (7 - i % 8)) & 1) != 0) {
                has_[i] = true;
                ++have_count_;
            }
        }
    }
    for (const std::uint32_t piece : early_haves_) {
        if (piece >= pieces) return make_error("have for piece " + std::to_string(piece) + " out of range");
        if (!has_[piece]) {
            has_[piece] = true;
            ++have_count_;
        }
    }
    early_bitfield_.reset();
    early_haves_ = {};
    if (have_count_ > 0) {
        bitfield_unreported_ = true;
        have_since_answer_ = true;
    }
    recount_lacking();
    update_interest(now);
    return ok_status();
}

Status PeerSession::on_message_awaiting_info(const wire::Message& message, Clock::time_point now) {
    Status status = ok_status();
    std::visit(
        [&](const auto& m) {
            using T = std::decay_t<decltype(m)>;
            if constexpr (std::is_same_v<T, wire::Have>) {
                heard_availability_ = true;
                if (early_haves_.size() < limits_.max_early_haves) early_haves_.push_back(m.index.get());
            } else if constexpr (std::is_same_v<T, wire::Bitfield>) {
                // Out of order (after haves or another bitfield) it adds to what we know, as
                // below; its length is checked once the info says how many pieces there are.
                heard_availability_ = true;
                if (!early_bitfield_ || early_bitfield_->size() != m.bits.size()) {
                    early_bitfield_.emplace(m.bits.begin(), m.bits.end());
                } else {
                    for (std::size_t i = 0; i < m.bits.size(); ++i) (*early_bitfield_)[i] |= m.bits[i];
                }
            } else if constexpr (std::is_same_v<T, wire::HaveAll>) {
                if (status = on_availability_message(now); !status) return;
                early_have_all_ = true;
            } else if constexpr (std::is_same_v<T, wire::HaveNone>) {
                status = on_availability_message(now);
            } else if constexpr (std::is_same_v<T, wire::Request>) {
                // We announced nothing: nothing to serve.
                if (fast_) send_reject(m, now);
            } else if constexpr (std::is_same_v<T, wire::Piece>) {
                status = reject_block("we asked for no block yet");
            } else if constexpr (std::is_same_v<T, wire::Choke>) {
                peer_choking_ = true;
                choked_since_ = now;
            } else if constexpr (std::is_same_v<T, wire::Unchoke>) {
                peer_choking_ = false;
            } else if constexpr (std::is_same_v<T, wire::Interested>) {
                peer_interested_ = true;
            } else if constexpr (std::is_same_v<T, wire::NotInterested>) {
                peer_interested_ = false;
            } else if constexpr (std::is_same_v<T, wire::Extended>) {
                status = on_extended(m, now);
            } else if constexpr (std::is_same_v<T, wire::Port>) {
                if (m.port != 0 && !std::exchange(dht_port_heard_, true)) dht_port_ = m.port;
            }
            // Cancel, reject, allowed fast, suggest: nothing of ours they could name yet.
        },
        message);
    return status;
}

void PeerSession::send_availability(Clock::time_point now) {
    if (awaiting_info()) {
        // We have nothing, and do not know how much there is: BEP 6 has have_none for that.
        if (fast_) send(wire::HaveNone{}, now);
        return;
    }
    const std::uint32_t count = ours_ != nullptr ? ours_->count() : 0;
    const std::uint32_t pieces = geometry_.piece_count();
    if (fast_ && count == pieces) {
        send(wire::HaveAll{}, now);
    } else if (fast_ && count == 0) {
        send(wire::HaveNone{}, now);
    } else if (count > 0) {
        send(wire::Bitfield{ours_->bitfield()}, now);
    }
    // Without the extension and with nothing to say, BEP 3 lets the bitfield be left out.
    announced_.assign(pieces, false);
    if (count > 0) {
        for (std::uint32_t i = 0; i < pieces; ++i) announced_[i] = ours_->has(PieceIndex{i});
    }
    if (!fast_) {
        offered_.clear();
        return;
    }
    for (Offer& offer : offered_) {
        if (ours_has(PieceIndex{offer.piece})) {
            send(wire::AllowedFast{PieceIndex{offer.piece}}, now);
            offer.sent = true;
        }
    }
}

bool PeerSession::offered_to_peer(PieceIndex piece) const {
    return std::any_of(offered_.begin(), offered_.end(),
                       [&](const Offer& offer) { return offer.sent && offer.piece == piece.get(); });
}

void PeerSession::announce(PieceIndex piece, Clock::time_point now) {
    // Nothing is said before our first message (the bitfield holds what we have then).
    if (!handshake_done_ || announced_.empty()) return;
    if (announced_[piece.get()]) return;
    for (Offer& offer : offered_) {
        if (offer.piece == piece.get() && !offer.sent) {
            send(wire::AllowedFast{piece}, now);
            offer.sent = true;
        }
    }
    if (peer_has(piece)) {
        // It has the piece already: BEP 3 allows leaving the have out (it cannot want it).
        announced_[piece.get()] = true;
        return;
    }
    if (haves_held_back_ || outgoing_.size() >= limits_.have_backlog) {
        // The scan of held-back haves may be past this piece already: it goes back for it.
        if (!haves_held_back_ || piece.get() < have_cursor_) have_cursor_ = piece.get();
        haves_held_back_ = true;
        return;
    }
    send(wire::Have{piece}, now);
    announced_[piece.get()] = true;
}

void PeerSession::send_held_back_haves(Clock::time_point now) {
    if (!haves_held_back_ || !handshake_done_) return;
    const std::uint32_t pieces = geometry_.piece_count();
    while (have_cursor_ < pieces) {
        if (outgoing_.size() >= limits_.have_backlog) return;
        const PieceIndex piece{have_cursor_++};
        if (announced_[piece.get()] || !ours_has(piece)) continue;
        announced_[piece.get()] = true;
        if (!peer_has(piece)) send(wire::Have{piece}, now);
    }
    haves_held_back_ = false;
    have_cursor_ = 0;
}

void PeerSession::on_local_piece(PieceIndex piece, Clock::time_point now) {
    if (!geometry_.contains(piece)) return;
    if (has_[piece.get()] && lacking_ > 0) --lacking_;
    announce(piece, now);
    update_interest(now);
}

void PeerSession::on_local_reset(Clock::time_point now) {
    recount_lacking();
    if (handshake_done_ && !announced_.empty()) {
        for (std::uint32_t i = 0; i < geometry_.piece_count(); ++i) {
            if (!announced_[i] && ours_has(PieceIndex{i})) announce(PieceIndex{i}, now);
        }
    }
    update_interest(now);
}

void PeerSession::recount_lacking() {
    lacking_ = 0;
    for (std::uint32_t i = 0; i < has_.size(); ++i) {
        if (has_[i] && !ours_has(PieceIndex{i})) ++lacking_;
    }
}

void PeerSession::update_interest(Clock::time_point now) {
    // Interested exactly while it has a piece we lack (the orchestrator leases only those).
    const bool want = lacking_ > 0;
    if (want == am_interested_ || !handshake_done_) return;
    am_interested_ = want;
    if (want) {
        send(wire::Interested{}, now);
    } else {
        send(wire::NotInterested{}, now);
    }
}

void PeerSession::set_choking(bool choke, Clock::time_point now) {
    if (!handshake_done_ || choke == am_choking_) return;
    am_choking_ = choke;
    if (!choke) {
        send(wire::Unchoke{}, now);
        return;
    }
    send(wire::Choke{}, now);
    // The requests we hold go (BEP 6: each rejected), but those of the pieces it may have
    // while choked; blocks already queued for the socket still leave.
    requests_.remove_if([&](const wire::Request& request) { return !offered_to_peer(request.index); },
                        [&](const wire::Request& request) {
                            if (fast_) send_reject(request, now);
                        });
}

// --- its requests ---

Status PeerSession::refuse(const wire::Request& request, Clock::time_point now, const std::string& why) {
    if (fast_) {
        send_reject(request, now);
        return ok_status();
    }
    return make_error(why);
}

Status PeerSession::on_request(const wire::Request& request, Clock::time_point now) {
    // What we answer (BEP 6 peers get reject_request; others, see docs/architecture.md):
    // a block that is not one (index, offset, length outside the piece or over 16 KiB) and
    // a piece we never announced are dropped; requests while we choke it are ignored; a
    // piece we announced and no longer have (changed on disk) is ignored.
    if (!geometry_.valid_block(request.index, request.offset, request.length)) {
        std::string why = "requested an invalid block: index ";
        why += std::to_string(request.index.get());
        why += " offset ";
        why += std::to_string(request.offset.get());
        why += " length ";
        why += std::to_string(request.length.get());
        return refuse(request, now, why);
    }
    if (!ours_has(request.index)) {
        const bool announced = !announced_.empty() && announced_[request.index.get()];
        if (fast_ || announced) {
            if (fast_) send_reject(request, now);
            return ok_status();
        }
        std::string why = "requested piece ";
        why += std::to_string(request.index.get());
        why += ", which we do not have";
        return make_error(why);
    }
    if (am_choking_ && !offered_to_peer(request.index)) {
        if (fast_) send_reject(request, now);
        return ok_status();
    }
    if (!requests_.push(request)) {
        std::string why = "flooded us with requests: more than ";
        why += std::to_string(requests_.capacity());
        why += " outstanding";
        return make_error(why);
    }
    return ok_status();
}

void PeerSession::on_cancel(const wire::Cancel& cancel, Clock::time_point now) {
    // Only the first match goes; BEP 6 asks for a reject in answer to a cancel (a block
    // already queued for the socket is the other possible answer, the piece).
    bool done = false;
    requests_.remove_if(
        [&](const wire::Request& request) {
            if (done || request.index != cancel.index || request.offset != cancel.offset ||
                request.length != cancel.length) {
                return false;
            }
            done = true;
            return true;
        },
        [&](const wire::Request& request) {
            if (fast_) send_reject(request, now);
        });
}

void PeerSession::refuse_request(Clock::time_point now) {
    if (requests_.empty()) return;
    if (fast_) send_reject(requests_.front(), now);
    requests_.pop();
}

void PeerSession::refuse_requests_for(PieceIndex piece, Clock::time_point now) {
    requests_.remove_if([&](const wire::Request& request) { return request.index == piece; },
                        [&](const wire::Request& request) {
                            if (fast_) send_reject(request, now);
                        });
}

void PeerSession::queue_block(const wire::Request& request, std::span<const std::uint8_t> data,
                              CacheEntry* entry, Clock::time_point now) {
    const auto header = wire::encode_piece_header(request.index, request.offset,
                                                  static_cast<std::uint32_t>(data.size()));
    outgoing_.insert(outgoing_.end(), header.begin(), header.end());
    out_blocks_.push_back(OutBlock{outgoing_.size(), data, entry});
    ++blocks_queued_;
    block_bytes_queued_ += data.size();
    last_sent_ = now;
}

void PeerSession::blocks_done(std::uint32_t count, std::uint64_t bytes, bool sent) {
    blocks_queued_ -= std::min(count, blocks_queued_);
    block_bytes_queued_ -= std::min(bytes, block_bytes_queued_);
    if (sent) uploaded_ += bytes;
}

bool PeerSession::snubbed(Clock::time_point now) const {
    return handshake_done_ && !peer_choking_ && outstanding_ > 0 &&
           now - last_progress_ >= limits_.snub_after;
}

PeerFigures PeerSession::figures(Clock::time_point now) const {
    PeerFigures figures;
    figures.interested = peer_interested_;
    figures.choked = am_choking_;
    figures.download_rate = download_meter_.rate();
    figures.upload_rate = upload_meter_.rate();
    figures.snubbed = snubbed(now);
    figures.seed = peer_is_seed();
    figures.uploaded = uploaded_;
    return figures;
}

// --- what it says of its pieces ---

Status PeerSession::on_availability_message(Clock::time_point) {
    if (heard_availability_) return make_error("bitfield, have all or have none after have or bitfield");
    heard_availability_ = true;
    return ok_status();
}

Status PeerSession::on_reject(const wire::RejectRequest& reject, Clock::time_point now) {
    const auto lease = find_lease(reject.index);
    // Not one of ours outstanding: a request a choke or a cancel of ours voided already.
    if (lease == leases_.end() || !lease->unrequest(reject.offset, reject.length)) return ok_status();
    --outstanding_;
    ++unrequested_blocks_;
    request_cursor_ = std::min<std::size_t>(request_cursor_, static_cast<std::size_t>(lease - leases_.begin()));
    if (peer_choking_) {
        // Choked, it served only allowed-fast pieces, and not this one after all.
        std::erase(allowed_by_peer_, reject.index.get());
        return ok_status();
    }
    // Unchoked and refused: it will not send this piece. The lease goes back to the
    // orchestrator (its other requests are cancelled) rather than be asked for again here.
    if (const auto lease_id = cancel_piece(reject.index, now)) rejected_leases_.push_back(*lease_id);
    return ok_status();
}

bool PeerSession::peer_has(PieceIndex index) const {
    return index.get() < has_.size() && has_[index.get()];
}

Status PeerSession::on_message(const wire::Message& message, Clock::time_point now) {
    if (awaiting_info()) return on_message_awaiting_info(message, now);
    Status status = ok_status();
    std::visit(
        [&](const auto& m) {
            using T = std::decay_t<decltype(m)>;
            if constexpr (std::is_same_v<T, wire::Piece>) {
                status = on_block(m, now);
            } else if constexpr (std::is_same_v<T, wire::Request>) {
                status = on_request(m, now);
            } else if constexpr (std::is_same_v<T, wire::Choke>) {
                if (!peer_choking_) choked_since_ = now;
                peer_choking_ = true;
                // BEP 3: our requests are void. With BEP 6 a choke voids nothing and each
                // request gets its reject or its piece, but those of pieces it allows us while
                // choked are the only ones worth waiting for: the others are asked for again
                // after an unchoke, and a late piece or reject for them is forgiven.
                std::uint32_t voided = 0;
                for (auto& lease : leases_) {
                    const bool allowed = fast_ && std::find(allowed_by_peer_.begin(), allowed_by_peer_.end(),
                                                            lease.piece().get()) != allowed_by_peer_.end();
                    if (!allowed) voided += lease.void_requests();
                }
                forgiven_ += voided;
                unrequested_blocks_ += voided;
                request_cursor_ = 0;
                outstanding_ -= std::min(voided, outstanding_);
            } else if constexpr (std::is_same_v<T, wire::Unchoke>) {
                if (peer_choking_) {
                    last_progress_ = now;
                    unchoked_ = true;
                }
                peer_choking_ = false;
            } else if constexpr (std::is_same_v<T, wire::Interested>) {
                if (!peer_interested_) interest_changed_ = true;
                peer_interested_ = true;
            } else if constexpr (std::is_same_v<T, wire::NotInterested>) {
                if (peer_interested_) interest_changed_ = true;
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
                if (!ours_has(m.index)) ++lacking_;
                pending_haves_.push_back(m.index.get());
                have_since_answer_ = true;
            } else if constexpr (std::is_same_v<T, wire::Bitfield>) {
                // BEP 3 wants it first, but a real client (aria2, seen leeching from us over
                // MSE) sent one after its haves: dropping it ended the download. A late
                // bitfield adds to what we know, as a batch of haves would.
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
                recount_lacking();
                bitfield_unreported_ = true;
                have_since_answer_ = true;
            } else if constexpr (std::is_same_v<T, wire::Cancel>) {
                on_cancel(m, now);
            } else if constexpr (std::is_same_v<T, wire::HaveAll>) {
                if (status = on_availability_message(now); !status) return;
                std::fill(has_.begin(), has_.end(), true);
                have_count_ = geometry_.piece_count();
                recount_lacking();
                bitfield_unreported_ = true;
                have_since_answer_ = true;
            } else if constexpr (std::is_same_v<T, wire::HaveNone>) {
                status = on_availability_message(now);
            } else if constexpr (std::is_same_v<T, wire::RejectRequest>) {
                status = on_reject(m, now);
            } else if constexpr (std::is_same_v<T, wire::AllowedFast>) {
                // Pieces we may request while it chokes us: kept (a few), used for leases we
                // hold when a choke comes.
                if (allowed_by_peer_.size() < limits_.max_allowed_fast_kept &&
                    std::find(allowed_by_peer_.begin(), allowed_by_peer_.end(), m.index.get()) ==
                        allowed_by_peer_.end()) {
                    allowed_by_peer_.push_back(m.index.get());
                }
            } else if constexpr (std::is_same_v<T, wire::Extended>) {
                status = on_extended(m, now);
            } else if constexpr (std::is_same_v<T, wire::Port>) {
                if (m.port != 0 && !std::exchange(dht_port_heard_, true)) dht_port_ = m.port;
            } else {
                // KeepAlive, SuggestPiece (accepted; the orchestrator picks pieces).
            }
        },
        message);
    if (status.ok()) update_interest(now);
    return status;
}

std::deque<PieceAssembly>::iterator PeerSession::find_lease(PieceIndex piece) {
    if (!is_leased(piece)) return leases_.end();
    return std::find_if(leases_.begin(), leases_.end(),
                        [&](const PieceAssembly& a) { return a.piece() == piece; });
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
    const auto lease = find_lease(block.index);
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
    pipeline_.on_block(static_cast<std::uint32_t>(block.data.size()), latency, now);
    // The worker copies it into its other peers' leases of this piece: they touch only their
    // own sessions, so `lease` stays valid.
    if (lease->shared() && block_share_) block_share_(block.index, block.offset, block.data);
    if (lease->complete()) {
        completed_.push_back({lease->piece(), lease->lease_id(), lease->size(), lease->take_buffer(),
                              lease->take_helpers()});
        drop_lease(lease);
    }
    return ok_status();
}

bool PeerSession::share_lease(PieceIndex piece, std::optional<PieceAssembly::Order> order) {
    const auto lease = find_lease(piece);
    if (lease == leases_.end()) return false;
    lease->mark_shared();
    if (order) lease->ask_in(*order);
    return true;
}

std::optional<std::uint64_t> PeerSession::absorb_block(PieceIndex piece, BlockOffset offset,
                                                       std::span<const std::uint8_t> data,
                                                       const std::string& from, Clock::time_point now) {
    const auto lease = find_lease(piece);
    if (lease == leases_.end()) return std::nullopt;
    switch (lease->absorb(offset, data, from)) {
        case PieceAssembly::Absorbed::no: return std::nullopt;
        case PieceAssembly::Absorbed::was_needed: --unrequested_blocks_; break;
        case PieceAssembly::Absorbed::was_requested:
            send(wire::Cancel{piece, offset, BlockLength{static_cast<std::uint32_t>(data.size())}}, now);
            --outstanding_;
            ++forgiven_;  // it may be on the wire already
            break;
    }
    if (!lease->complete()) return std::nullopt;
    const std::uint64_t lease_id = lease->lease_id();
    drop_lease(lease);
    return lease_id;
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
    if (!handshake_done_ || peer_choking_ || lacking_ == 0) return 0;
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
    const std::uint32_t wanted_blocks = leased_blocks_wanted();
    const std::uint32_t held = queued + outstanding_;
    if (held >= wanted_blocks) return 0;
    const std::uint32_t per_piece = blocks_per_piece();
    const std::uint32_t pieces = (wanted_blocks - held + per_piece - 1) / per_piece;
    // A WorkRequest costs the same round trip through the orchestrator (and a turn of three
    // loops) whatever it asks for. Asking for what the pipeline lacks right now would, with
    // one-block pieces, ask for a handful of blocks at a time; at least kMinRequestBlocks'
    // worth keeps the requests per byte those of 1 MiB pieces (and holds no more ahead).
    const std::uint32_t floor = (kMinRequestBlocks + per_piece - 1) / per_piece;
    return std::clamp<std::uint32_t>(std::max(pieces, floor), 1, limits_.max_pieces_per_request);
}

std::uint32_t PeerSession::pieces_held_when_full() const {
    const std::uint32_t per_piece = blocks_per_piece();
    const std::uint32_t wanted_blocks = std::max(leased_blocks_wanted(), kMinRequestBlocks);
    return std::max<std::uint32_t>(2, (wanted_blocks + per_piece - 1) / per_piece + 1);
}

std::uint32_t PeerSession::leased_blocks_wanted() const { return 2 * pipeline_.depth(); }

std::uint32_t PeerSession::blocks_per_piece() const {
    return std::max<std::uint32_t>(1, (geometry_.piece_length() + kBlockSize - 1) / kBlockSize);
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
    const auto lease = find_lease(piece);
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
    if (!handshake_done_ || !allowed) return;
    if (peer_choking_) {
        // BEP 6: the pieces it allows us while choked may still be asked for.
        if (!fast_ || allowed_by_peer_.empty()) return;
        const std::uint32_t depth = pipeline_.depth();
        for (PieceAssembly& lease : leases_) {
            if (outstanding_ >= depth) break;
            if (std::find(allowed_by_peer_.begin(), allowed_by_peer_.end(), lease.piece().get()) ==
                allowed_by_peer_.end()) {
                continue;
            }
            while (outstanding_ < depth) {
                const auto block = lease.request_next(now);
                if (!block) break;
                if (outstanding_ == 0) last_progress_ = now;
                send(wire::Request{lease.piece(), block->offset, block->length}, now);
                ++outstanding_;
                --unrequested_blocks_;
            }
        }
        return;
    }
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
    downloaded_total_ += downloaded_;
    return std::exchange(downloaded_, 0);
}

void PeerSession::on_tick(Clock::time_point now) {
    pipeline_.update(now);
    upload_meter_.sample(uploaded_, now);
    download_meter_.sample(downloaded_total_ + downloaded_, now);
    send_held_back_haves(now);
    if (handshake_done_ && now - last_sent_ >= limits_.keep_alive) send(wire::KeepAlive{}, now);
}

bool PeerSession::stalled(Clock::time_point now) const {
    return outstanding_ > 0 && now - last_progress_ >= limits_.stall_timeout;
}

bool PeerSession::choked_too_long(Clock::time_point now) const {
    if (!peer_choking_ || leases_.empty() || now - choked_since_ < limits_.choked_release) return false;
    // Blocks of allowed-fast pieces still coming: not idle.
    return outstanding_ == 0 || now - last_progress_ >= limits_.choked_release;
}

}  // namespace pw::peer_worker
