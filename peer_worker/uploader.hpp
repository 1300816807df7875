#pragma once
// Serving peers' requests: turns the requests a session accepted into blocks queued on its
// connection, from whole pieces the writer reads for us (ReadPiece / PieceRead over the
// --reads socket) and keeps in the upload cache. Bounded everywhere: the cache's bytes, the
// reads in flight, the blocks and bytes queued per peer, the rate limits; a request whose piece
// is not cached waits at the head of its peer's queue (which holds at most 500) for the read.
#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <span>
#include <unordered_map>
#include <utility>

#include "core/bus/bus.hpp"
#include "core/bus/piece_arena.hpp"
#include "peer_worker/peer_connection.hpp"
#include "peer_worker/rate_limit.hpp"
#include "peer_worker/torrent_context.hpp"
#include "peer_worker/upload_cache.hpp"

namespace pw::peer_worker {

struct UploadOptions {
    // A writer answers ReadPiece (--reads); without one every request is refused.
    bool reads = false;
    UploadCacheLimits cache{};
    // ReadPiece messages unanswered at once.
    std::uint32_t max_reads = 16;
    // A read not answered in this long is given up (the writer is gone or stuck).
    Clock::duration read_timeout = std::chrono::seconds(30);
    // After a read failed, the piece is not asked for again for this long; after "busy",
    // briefly, and the requests for it wait rather than being refused.
    Clock::duration failed_backoff = std::chrono::seconds(10);
    Clock::duration busy_backoff = std::chrono::seconds(1);
    // A peer's send queue: blocks queued and not yet written, and their bytes.
    std::uint32_t max_queued_blocks = 128;
    std::uint64_t max_queued_bytes = 2u << 20;
};

class Uploader {
public:
    // Sends one message to the writer's reads socket without blocking; false: it would block.
    using Send = std::function<bool(bus::v1::Envelope&)>;

    Uploader(UploadOptions options, Send send);
    Uploader(const Uploader&) = delete;
    Uploader& operator=(const Uploader&) = delete;

    bool reads_enabled() const { return options_.reads; }

    // Queues blocks for the peer's accepted requests, oldest first, as far as its send queue,
    // the rate limits (the worker's and the torrent's) and the cache allow, and flushes the
    // connection. A request for a piece not cached asks for its read and waits; one that cannot
    // be served (no longer ours, its read failed, no reads at all) is refused.
    void serve(TorrentContext& torrent, PeerConnection& connection, TokenBucket& upload,
               Clock::time_point now);
    // The connection is done with blocks: unpins their pieces. For blocks written, false when
    // an arena slot was taken back while they were (the bytes sent may not be the piece's).
    bool blocks_done(std::span<const OutBlock> blocks, bool sent, Clock::time_point now);

    // A message from the reads socket (PieceRead; anything else is logged and dropped). True
    // when it answered one of our reads: peers waiting on it may be served now.
    bool on_read(bus::Incoming& message, const std::function<TorrentContext*(TorrentId)>& find,
                 Clock::time_point now);
    // Reads timed out, arena entries expired.
    void on_tick(Clock::time_point now);
    void drop_torrent(TorrentId torrent);
    // Sends ReadsDone for the arena slots given back since the last call (kept on a full
    // socket for the next call).
    void send_released();
    bool has_released() { return !cache_.released().empty(); }

    struct Stats {
        std::uint64_t reads = 0;       // ReadPiece sent
        std::uint64_t read_errors = 0; // PieceRead with an error, bad answers, timeouts
        std::uint64_t cache_hits = 0;  // blocks served from the cache
        std::size_t in_flight = 0;
        std::size_t cached_bytes = 0;
        std::size_t cached_pieces = 0;
    };
    Stats stats() const;
    const UploadCache& cache() const { return cache_; }

private:
    using Key = std::pair<std::uint32_t, std::uint32_t>;  // (torrent, piece)
    struct Read {
        TorrentId torrent;
        PieceIndex piece;
        std::uint32_t size = 0;
        Clock::time_point sent{};
    };
    void request_read(TorrentContext& torrent, PieceIndex piece, Clock::time_point now);
    // What an earlier read of the piece left: nothing, "busy" (the writer had too many reads
    // of ours: the peer's requests wait, since a peer without the fast extension cannot be
    // told no and would wait for those blocks for ever), or a failure (refused for a while).
    enum class Note { none, busy, failed };
    Note note_on(TorrentId torrent, PieceIndex piece, Clock::time_point now);
    void read_failed(TorrentId torrent, PieceIndex piece, const std::string& why, Clock::time_point now);
    void give_back_unwanted(const bus::v1::PieceRead& read);

    UploadOptions options_;
    Send send_;
    UploadCache cache_;
    bus::ArenaReader arenas_;
    std::unordered_map<std::uint64_t, Read> reads_;  // by request id
    std::map<Key, std::uint64_t> reading_;           // piece -> request id
    std::size_t in_flight_bytes_ = 0;
    std::uint64_t next_request_ = 0;
    struct FailedNote {
        Clock::time_point until;  // not asked for again before
        bool busy = false;
    };
    std::map<Key, FailedNote> failed_;
    bool said_no_reads_ = false;
    Stats stats_;
};

}  // namespace pw::peer_worker
