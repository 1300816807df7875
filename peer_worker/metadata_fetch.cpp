#include "peer_worker/metadata_fetch.hpp"

#include <algorithm>

namespace pw::peer_worker {

MetadataFetch::MetadataFetch(const Sha1Digest& info_hash, Options options)
    : info_hash_(info_hash), options_(options) {}

void MetadataFetch::start_attempt(std::uint32_t size) {
    auto made = ext::MetadataAssembler::create(info_hash_, size, options_.max_size);
    if (made) assembler_.emplace(std::move(made).value());
}

std::uint32_t MetadataFetch::in_flight_of(const std::string& peer) const {
    return static_cast<std::uint32_t>(std::count_if(in_flight_.begin(), in_flight_.end(),
                                                    [&](const auto& entry) { return entry.second.peer == peer; }));
}

void MetadataFetch::refuse(const std::string& peer) {
    if (!refused_.insert(peer).second) return;
    refused_order_.push_back(peer);
    if (refused_order_.size() > options_.max_refused) {
        refused_.erase(refused_order_.front());
        refused_order_.erase(refused_order_.begin());
    }
}

std::vector<std::uint32_t> MetadataFetch::pieces_for(const std::string& peer, std::uint32_t size,
                                                     Clock::time_point now) {
    std::vector<std::uint32_t> pieces;
    if (done_ || refused(peer) || size == 0 || size > options_.max_size) return pieces;
    if (!assembler_) start_attempt(size);
    // Another size than the one being fetched: one of the two is wrong, and the first offer
    // is tried first (a failed attempt lets the next offer set the size).
    if (!assembler_ || assembler_->total_size() != size) return pieces;
    if (solo_) {
        if (!solo_peer_) solo_peer_ = peer;
        if (*solo_peer_ != peer) return pieces;
    }
    const std::uint32_t held = in_flight_of(peer);
    std::uint32_t room = options_.requests_per_peer > held ? options_.requests_per_peer - held : 0;
    for (const std::uint32_t piece : assembler_->missing()) {
        if (room == 0) break;
        if (in_flight_.contains(piece)) continue;
        const auto rejected = rejected_.find(piece);
        if (rejected != rejected_.end() && rejected->second.contains(peer)) continue;
        in_flight_.emplace(piece, InFlight{peer, now});
        pieces.push_back(piece);
        --room;
    }
    return pieces;
}

Status MetadataFetch::on_data(const std::string& peer, std::uint32_t piece, std::uint32_t total_size,
                              std::string_view data) {
    if (done_ || !assembler_) return ok_status();
    const auto flight = in_flight_.find(piece);
    if (flight != in_flight_.end() && flight->second.peer == peer) in_flight_.erase(flight);
    if (total_size != assembler_->total_size()) {
        // Its own offer may have been another size: it is simply not one of this attempt's.
        refuse(peer);
        return make_error("sent metadata of " + std::to_string(total_size) + " bytes, not the " +
                          std::to_string(assembler_->total_size()) + " being fetched");
    }
    auto added = assembler_->add(piece, total_size, data, peer);
    if (!added) {
        refuse(peer);
        return added.error();
    }
    if (added->stored) contributors_.insert(peer);
    if (added->complete) finish();
    return ok_status();
}

void MetadataFetch::finish() {
    auto finished = assembler_->finish();
    if (!finished) return;  // not complete: not reached
    for (const auto& liar : finished->liars) {
        refuse(liar);
        liars_.push_back(liar);
    }
    if (finished->verified) {
        done_ = true;
        metadata_ = std::move(finished->metadata);
        sources_.assign(contributors_.begin(), contributors_.end());
        assembler_.reset();
        in_flight_.clear();
        return;
    }
    if (finished->suspects.size() == 1) {
        refuse(finished->suspects.front());
        liars_.push_back(finished->suspects.front());
    } else {
        solo_ = true;
    }
    solo_peer_.reset();
    contributors_.clear();
    in_flight_.clear();
    rejected_.clear();
    // A size that was a lie is not the one to try again: the next offer sets it.
    if (finished->suspects.size() == 1) assembler_.reset();
}

void MetadataFetch::on_reject(const std::string& peer, std::uint32_t piece) {
    const auto flight = in_flight_.find(piece);
    if (flight != in_flight_.end() && flight->second.peer == peer) in_flight_.erase(flight);
    rejected_[piece].insert(peer);
    // A solo peer that will not give a piece cannot finish an attempt alone.
    if (solo_peer_ && *solo_peer_ == peer) solo_peer_.reset();
}

void MetadataFetch::peer_gone(const std::string& peer) {
    std::erase_if(in_flight_, [&](const auto& entry) { return entry.second.peer == peer; });
    if (solo_peer_ && *solo_peer_ == peer) solo_peer_.reset();
}

void MetadataFetch::expire(Clock::time_point now) {
    std::erase_if(in_flight_, [&](const auto& entry) { return now - entry.second.since >= options_.request_timeout; });
}

}  // namespace pw::peer_worker
