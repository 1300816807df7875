#pragma once
// Whole pieces on their way to the verifier. The pieces finished within `linger` of the
// batch's first one leave together as one PieceBatch (sooner once the batch is full), so
// many small pieces cost one message rather than one each: every message wakes a ZeroMQ I/O
// thread on both sides and costs each stage on the way a turn of its loop and a report.
// Batches ZeroMQ would not take yet wait here, in order; while any wait, the worker is
// backpressured.
#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include <asio/io_context.hpp>
#include <asio/steady_timer.hpp>
#include <zmq.hpp>

#include "core/bus/bus.hpp"
#include "core/bus/piece_arena.hpp"
#include "peer_worker/peer_session.hpp"

namespace pw::peer_worker {

struct OutgoingBatch {
    bus::v1::Envelope envelope;          // body: piece_batch
    std::vector<zmq::message_t> frames;  // without an arena: frame i is piece i's bytes
    std::uint64_t frame_bytes = 0;

    std::size_t piece_count() const {
        return static_cast<std::size_t>(envelope.piece_batch().pieces_size());
    }
};

class PieceBatches {
public:
    // Sends one batch without blocking; false when ZeroMQ would block (nothing was sent).
    using Send = std::function<bool(OutgoingBatch&)>;

    // Long enough to gather several 1 MiB pieces at full speed, short beside the lifetime of
    // a slot (it stays taken this much longer).
    static constexpr std::chrono::milliseconds kDefaultLinger{20};

    // `linger` zero: a batch leaves at the end of the loop's current turn.
    PieceBatches(asio::io_context& io, std::string worker, Send send,
                 std::chrono::milliseconds linger = kDefaultLinger);
    PieceBatches(const PieceBatches&) = delete;
    PieceBatches& operator=(const PieceBatches&) = delete;

    // From now on batches name `arena` and carry no frames (null: frames). Must outlive us.
    void use_arena(const bus::ArenaInfo* arena) { arena_ = arena; }

    // Queues a finished piece, which `contributor` sent; `slot` holds its bytes in arena
    // mode, `piece.data` otherwise. It leaves `linger` after the batch's first piece, or at
    // once when the batch is full.
    void add(CompletedPiece&& piece, const std::string& contributor,
             std::optional<std::uint32_t> slot);
    // Closes the batch being filled and sends every waiting batch ZeroMQ takes.
    void flush();

    bool backpressured() const { return !waiting_.empty(); }
    std::size_t waiting() const { return waiting_.size(); }
    std::size_t pieces_filling() const { return filling_.piece_count(); }

private:
    bool full() const;
    void seal();
    void schedule_flush();
    // Keeps a sent batch, emptied, to fill next: its pieces' messages (and their strings)
    // are reused rather than allocated again for every piece.
    void recycle(OutgoingBatch& sent);

    asio::io_context& io_;
    std::string worker_;
    Send send_;
    const bus::ArenaInfo* arena_ = nullptr;
    OutgoingBatch filling_;
    OutgoingBatch spare_;
    std::deque<OutgoingBatch> waiting_;
    std::chrono::milliseconds linger_;
    asio::steady_timer linger_timer_;
    bool flush_scheduled_ = false;
};

}  // namespace pw::peer_worker
