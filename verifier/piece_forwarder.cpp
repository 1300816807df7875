#include "verifier/piece_forwarder.hpp"

#include <span>

#include <spdlog/spdlog.h>

#include "verifier/piece_check.hpp"

namespace pw::verifier {

namespace {

v1::Envelope verified_report(const v1::PieceData& piece) {
    v1::Envelope report;
    report.mutable_piece_verified()->set_piece(piece.piece());
    report.mutable_piece_verified()->set_lease_id(piece.lease_id());
    return report;
}

v1::Envelope failed_report(const v1::PieceData& piece) {
    v1::Envelope report;
    auto* failed = report.mutable_piece_failed();
    failed->set_piece(piece.piece());
    failed->set_lease_id(piece.lease_id());
    *failed->mutable_contributors() = piece.contributors();
    failed->set_worker(piece.worker());
    return report;
}

}  // namespace

PieceForwarder::PieceForwarder(const Torrent& torrent, zmq::socket_t& to_writer, std::string name)
    : torrent_(torrent), to_writer_(to_writer), name_(std::move(name)) {}

bool PieceForwarder::ready() const {
    if (held_) return false;
    return (to_writer_.get(zmq::sockopt::events) & ZMQ_POLLOUT) != 0;
}

std::optional<v1::Envelope> PieceForwarder::take(bus::Incoming&& in) {
    if (!in.envelope.has_piece_data()) {
        spdlog::warn("dropped a message of type {} from '{}': only pieces belong on this socket",
                     static_cast<int>(in.envelope.body_case()), in.envelope.sender());
        return std::nullopt;
    }
    const v1::PieceData& header = in.envelope.piece_data();
    if (in.frames.size() != 1) {
        spdlog::warn("piece {} from '{}' failed: {} data frames instead of 1", header.piece(),
                     in.envelope.sender(), in.frames.size());
        ++stats_.failed;
        return failed_report(header);
    }
    const zmq::message_t& frame = in.frames.front();
    const Status check = check_piece(
        torrent_, header.piece(),
        std::span<const std::uint8_t>(static_cast<const std::uint8_t*>(frame.data()), frame.size()));
    if (!check.ok()) {
        spdlog::warn("piece failed (from '{}', lease {}): {}", header.worker(), header.lease_id(),
                     check.error().describe());
        ++stats_.failed;
        return failed_report(header);
    }
    return forward(HeldPiece{std::move(in.envelope), std::move(in.frames)});
}

std::optional<v1::Envelope> PieceForwarder::retry() {
    if (!held_) return std::nullopt;
    HeldPiece piece = std::move(*held_);
    held_.reset();
    return forward(std::move(piece));
}

std::optional<v1::Envelope> PieceForwarder::forward(HeldPiece&& piece) {
    const std::size_t size = piece.frames.front().size();
    // The same header and the same frame go on: ZeroMQ takes the buffer, nothing is copied.
    if (!bus::send(to_writer_, name_, piece.envelope, piece.frames, nullptr,
                   zmq::send_flags::dontwait)) {
        held_ = std::move(piece);
        return std::nullopt;
    }
    ++stats_.verified;
    stats_.bytes_verified += size;
    return verified_report(piece.envelope.piece_data());
}

}  // namespace pw::verifier
