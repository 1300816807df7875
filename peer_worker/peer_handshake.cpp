#include "peer_worker/peer_handshake.hpp"

#include <algorithm>

namespace pw::peer_worker {

Result<bool> HandshakeCollector::add(std::span<const std::uint8_t> bytes) {
    if (theirs_) {
        leftover_.insert(leftover_.end(), bytes.begin(), bytes.end());
        return true;
    }
    const std::size_t take = std::min(bytes.size(), bytes_.size() - have_);
    std::copy_n(bytes.begin(), take, bytes_.begin() + static_cast<std::ptrdiff_t>(have_));
    have_ += take;
    if (have_ < bytes_.size()) return false;
    auto decoded = wire::decode_handshake(bytes_);
    if (!decoded) return make_error("bad handshake: " + decoded.error().describe());
    theirs_ = *decoded;
    leftover_.assign(bytes.begin() + static_cast<std::ptrdiff_t>(take), bytes.end());
    return true;
}

// --- outgoing ---

Result<OutgoingHandshake> OutgoingHandshake::make(const std::array<std::uint8_t, wire::kHandshakeSize>& ours,
                                                  const Sha1Digest& info_hash,
                                                  std::optional<mse::Policy> policy) {
    OutgoingHandshake handshake;
    handshake.ours_ = ours;
    if (policy) {
        mse::InitiatorOptions options;
        options.info_hash = info_hash;
        options.policy = *policy;
        // Our handshake rides in the initial payload: no round trip spent on it.
        options.initial_payload.assign(ours.begin(), ours.end());
        auto mse = mse::MseHandshake::initiator(std::move(options));
        if (!mse) return mse.error();
        handshake.mse_.emplace(std::move(*mse));
    }
    return handshake;
}

void OutgoingHandshake::start(std::vector<std::uint8_t>& out) {
    if (!mse_) {
        out.insert(out.end(), ours_.begin(), ours_.end());
        return;
    }
    // The first call only emits Ya and PadA; it cannot fail.
    (void)mse_->feed({}, out);
}

Result<bool> OutgoingHandshake::feed(std::span<const std::uint8_t> in, std::vector<std::uint8_t>& out) {
    if (in_mse()) {
        // A peer that answers Ya with a plain handshake speaks no MSE: said at once, rather
        // than waiting out the deadline for a Yb that never comes (19 "BitTorrent protocol"
        // as the start of a real Yb has odds of 2^-160).
        const std::size_t take = std::min(in.size(), head_.size() - head_bytes_);
        std::copy_n(in.begin(), take, head_.begin() + static_cast<std::ptrdiff_t>(head_bytes_));
        head_bytes_ += take;
        if (take > 0 && head_bytes_ == head_.size() && mse::looks_like_plain_handshake(head_)) {
            return make_error("the peer answered with a plaintext BitTorrent handshake");
        }
        auto progress = mse_->feed(in, out);
        if (!progress) return progress.error();
        if (*progress == mse::MseHandshake::Progress::need_more) return false;
        mse::Outcome outcome = mse_->take_outcome();
        cipher_ = std::move(outcome.cipher);
        return collector_.add(outcome.remainder);  // decrypted by the codec
    }
    if (cipher_) {
        std::vector<std::uint8_t> plain(in.begin(), in.end());
        cipher_->decrypt(plain);
        return collector_.add(plain);
    }
    return collector_.add(in);
}

Handshaken OutgoingHandshake::take() {
    Handshaken done;
    done.theirs = collector_.theirs();
    done.encrypted = mse_.has_value();
    done.cipher = std::move(cipher_);
    done.leftover = std::move(collector_.leftover());
    return done;
}

// --- incoming ---

std::size_t IncomingHandshake::buffered() const {
    return first_.size() + (mse_ ? mse_->buffered() : 0);
}

Result<bool> IncomingHandshake::feed(std::span<const std::uint8_t> in, std::vector<std::uint8_t>& out) {
    if (!decided_) {
        // Kept only while they may still be the 20 bytes of a plain handshake.
        first_.insert(first_.end(), in.begin(), in.end());
        const mse::Incoming kind = mse::classify_incoming(first_);
        if (kind == mse::Incoming::need_more) return false;
        decided_ = true;
        switch (incoming_action(encryption_, kind)) {
            case IncomingAction::refuse: return make_error(std::string(incoming_refusal(encryption_, kind)));
            case IncomingAction::take_plain: {
                auto done = collector_.add(first_);
                first_.clear();
                return done;
            }
            case IncomingAction::run_mse: break;
        }
        mse::ResponderOptions options;
        options.policy = incoming_mse_policy(encryption_);
        options.find_info_hash = lookup_;
        auto mse = mse::MseHandshake::responder(std::move(options));
        if (!mse) return make_error("encrypted handshake, and none is possible here: " + mse.error().describe());
        mse_.emplace(std::move(*mse));
        std::vector<std::uint8_t> bytes;
        bytes.swap(first_);
        auto progress = mse_->feed(bytes, out);
        if (!progress) return make_error("encrypted handshake: " + progress.error().describe());
        if (*progress == mse::MseHandshake::Progress::need_more) return false;
        return after_mse(out);
    }
    if (!mse_) return collector_.add(in);
    if (!mse_->done()) {
        auto progress = mse_->feed(in, out);
        if (!progress) return make_error("encrypted handshake: " + progress.error().describe());
        if (*progress == mse::MseHandshake::Progress::need_more) return false;
        return after_mse(out);
    }
    if (cipher_) {
        std::vector<std::uint8_t> plain(in.begin(), in.end());
        cipher_->decrypt(plain);
        return checked(collector_.add(plain));
    }
    return checked(collector_.add(in));
}

Result<bool> IncomingHandshake::checked(Result<bool> done) const {
    if (!done || !*done || !mse_) return done;
    if (collector_.theirs().info_hash != skey_) {
        return make_error("handshake names torrent " + to_hex(collector_.theirs().info_hash) +
                          ", not the one its encrypted handshake chose");
    }
    return true;
}

Result<bool> IncomingHandshake::after_mse(std::vector<std::uint8_t>&) {
    mse::Outcome outcome = mse_->take_outcome();
    cipher_ = std::move(outcome.cipher);
    skey_ = outcome.info_hash;
    // Their handshake is usually the initial payload, whole; the stream may hold (the rest
    // of) it too.
    auto in_payload = collector_.add(outcome.initial_payload);
    if (!in_payload) return in_payload.error();
    return checked(collector_.add(outcome.remainder));
}

Handshaken IncomingHandshake::take() {
    Handshaken done;
    done.theirs = collector_.theirs();
    done.encrypted = mse_.has_value();
    done.cipher = std::move(cipher_);
    done.leftover = std::move(collector_.leftover());
    return done;
}

}  // namespace pw::peer_worker
