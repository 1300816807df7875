#pragma once
// Whole pieces on their way to the verifier. A batch holds pieces of one torrent in one arena
// (or as frames): each (torrent, arena) pair has a lane filling its own batch, and the pieces
// finished within `linger` of the batch's first one leave together as one PieceBatch (sooner
// once the batch is full), so many small pieces cost one message rather than one each: every
// message wakes a ZeroMQ I/O thread on both sides and costs each stage on the way a turn of
// its loop and a report. Batches ZeroMQ would not take yet wait here, in order, whatever their
// torrent; while any wait, the worker is backpressured.
#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include <asio/io_context.hpp>
#include <asio/steady_timer.hpp>
#include <zmq.hpp>

#include "core/bus/bus.hpp"
#include "core/bus/piece_arena.hpp"
#include "core/units.hpp"
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

    // Where the pieces of one torrent in one arena gather. Obtained once (lane()) and kept by
    // the caller, so adding a piece looks nothing up; valid until drop_torrent(its torrent).
    class Lane {
    public:
        TorrentId torrent() const { return torrent_; }
        const bus::ArenaInfo* arena() const { return arena_; }
        std::size_t pieces_filling() const { return filling_.piece_count(); }

    private:
        friend class PieceBatches;
        Lane(asio::io_context& io, TorrentId torrent, const bus::ArenaInfo* arena,
             std::uint64_t serial)
            : torrent_(torrent), arena_(arena), serial_(serial), linger_timer_(io) {}

        TorrentId torrent_;
        const bus::ArenaInfo* arena_;  // null: frames
        std::uint64_t serial_;         // tells a timer of a dropped lane from one of its successor
        OutgoingBatch filling_;
        asio::steady_timer linger_timer_;
        bool flush_scheduled_ = false;
    };

    // `linger` zero: a batch leaves at the end of the loop's current turn.
    PieceBatches(asio::io_context& io, std::string worker, Send send,
                 std::chrono::milliseconds linger = kDefaultLinger);
    ~PieceBatches();
    PieceBatches(const PieceBatches&) = delete;
    PieceBatches& operator=(const PieceBatches&) = delete;

    // The lane of `torrent`'s pieces in `arena` (null: frames), made on first use. `arena`
    // must outlive it.
    Lane& lane(TorrentId torrent, const bus::ArenaInfo* arena);

    // Queues a finished piece, which `contributor` sent; `slot` holds its bytes in arena
    // mode, `piece.data` otherwise. It leaves `linger` after its batch's first piece, or at
    // once when the batch is full.
    void add(Lane& lane, CompletedPiece&& piece, const std::string& contributor,
             std::optional<std::uint32_t> slot);
    // Closes every batch being filled and sends every waiting batch ZeroMQ takes.
    void flush();
    // Forgets `torrent`'s batches not sent yet, filling or waiting, and its lanes; `dropped`
    // gets the lease id of each of their pieces.
    void drop_torrent(TorrentId torrent, const std::function<void(std::uint64_t)>& dropped);

    bool backpressured() const { return !waiting_.empty(); }
    std::size_t waiting() const { return waiting_.size(); }
    std::size_t pieces_filling() const;

private:
    struct Key {
        TorrentId torrent;
        std::uint64_t arena_id = 0;  // 0: frames
        bool operator==(const Key&) const = default;
    };
    struct KeyHash {
        std::size_t operator()(const Key& key) const noexcept {
            return std::hash<std::uint64_t>{}(key.arena_id * 0x9E3779B97F4A7C15ull ^ key.torrent.get());
        }
    };
    static Key key_of(const Lane& lane);

    bool full(const Lane& lane) const;
    void seal(Lane& lane);
    void send_waiting();
    void schedule_flush(Lane& lane);
    // Keeps a sent batch, emptied, to fill next: its pieces' messages (and their strings)
    // are reused rather than allocated again for every piece.
    void recycle(OutgoingBatch& sent);
    OutgoingBatch take_spare();

    asio::io_context& io_;
    std::string worker_;
    Send send_;
    std::unordered_map<Key, std::unique_ptr<Lane>, KeyHash> lanes_;
    std::uint64_t next_serial_ = 1;
    std::vector<OutgoingBatch> spares_;
    std::deque<OutgoingBatch> waiting_;
    std::chrono::milliseconds linger_;
};

}  // namespace pw::peer_worker
