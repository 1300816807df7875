#include "peer_worker/uploader.hpp"

#include <algorithm>
#include <string>

#include <spdlog/spdlog.h>

namespace pw::peer_worker {

namespace {
// The writer's read arenas mapped at once. Each is one piece length of one writer's run; a
// mapping in use (an entry's bytes point into it) must never be evicted, and entries live
// seconds, so this is far more than will ever be in use.
constexpr std::size_t kMaxReadArenas = 256;
// Failed pieces remembered at once; past it the oldest notes go.
constexpr std::size_t kMaxFailedNotes = 4096;
constexpr std::uint32_t kBlockHeader = 13;
}  // namespace

Uploader::Uploader(UploadOptions options, Send send)
    : options_(options), send_(std::move(send)), cache_(options.cache), arenas_(kMaxReadArenas) {}

void Uploader::serve(TorrentContext& torrent, PeerConnection& connection, TokenBucket& upload,
                     Clock::time_point now) {
    PeerSession& session = connection.session();
    while (session.has_requests() && !connection.closed()) {
        // Room in its send queue: more once what is queued is written.
        if (session.blocks_queued() >= options_.max_queued_blocks ||
            session.block_bytes_queued() >= options_.max_queued_bytes) {
            break;
        }
        const wire::Request request = session.next_request();
        if (!torrent.ours.has(request.index)) {
            session.refuse_request(now);  // announced once, gone since (changed on disk)
            continue;
        }
        if (!options_.reads) {
            if (!said_no_reads_) {
                spdlog::warn("a peer asked for a piece and no --reads endpoint is set: requests are refused");
                said_no_reads_ = true;
            }
            session.refuse_request(now);
            continue;
        }
        CacheEntry* entry = cache_.find(torrent.id, request.index, now);
        if (entry == nullptr) {
            const Note note = note_on(torrent.id, request.index, now);
            if (note == Note::busy) break;  // the writer is busy: asked again on a later tick
            if (note == Note::failed) {
                session.refuse_request(now);
                continue;
            }
            request_read(torrent, request.index, now);
            break;  // the rest wait behind it, in order
        }
        if (!upload.available(now) || !torrent.upload_limit.available(now)) break;  // the tick refills
        if (entry->arena && !arenas_.still_holds(*entry->arena, entry->slot, entry->request)) {
            // The writer took the slot back: never send from it; read the piece again.
            cache_.drop(entry);
            continue;
        }
        const auto data = entry->bytes.subspan(request.offset.get(), request.length.get());
        session.queue_block(request, data, entry, now);
        cache_.pin(entry);
        const std::uint64_t cost = request.length.get() + kBlockHeader;
        upload.take(cost);
        torrent.upload_limit.take(cost);
        session.pop_request();
        ++stats_.cache_hits;
    }
    connection.flush();
}

bool Uploader::blocks_done(std::span<const OutBlock> blocks, bool sent, Clock::time_point now) {
    bool intact = true;
    const CacheEntry* checked = nullptr;
    for (const OutBlock& block : blocks) {
        CacheEntry* entry = block.entry;
        if (entry == nullptr) continue;
        // The entry lives until its last pin goes, so it is safe to look at before unpinning.
        if (sent && entry->arena && entry != checked) {
            checked = entry;
            if (!arenas_.still_holds(*entry->arena, entry->slot, entry->request)) {
                intact = false;
                cache_.drop(entry);
            }
        }
        cache_.unpin(entry, now);
    }
    return intact;
}

void Uploader::request_read(TorrentContext& torrent, PieceIndex piece, Clock::time_point now) {
    const Key key{torrent.id.get(), piece.get()};
    if (reading_.count(key) != 0 || reads_.size() >= options_.max_reads) return;
    const std::uint32_t size = torrent.geometry->piece_size(piece);
    // Within the budget, after freeing unpinned pieces; a piece larger than the whole budget
    // is still read when nothing else is held.
    if (!cache_.make_room(size, in_flight_bytes_) &&
        !(reads_.empty() && cache_.pinned_bytes() == 0)) {
        return;
    }
    bus::v1::Envelope envelope;
    auto* read = envelope.mutable_read_piece();
    read->set_torrent(torrent.id.get());
    read->set_piece(piece.get());
    read->set_request(next_request_ + 1);
    if (!send_(envelope)) return;  // the socket is full: asked again on the next turn
    const std::uint64_t id = ++next_request_;
    reads_.emplace(id, Read{torrent.id, piece, size, now});
    reading_.emplace(key, id);
    in_flight_bytes_ += size;
    ++stats_.reads;
}

Uploader::Note Uploader::note_on(TorrentId torrent, PieceIndex piece, Clock::time_point now) {
    const auto found = failed_.find(Key{torrent.get(), piece.get()});
    if (found == failed_.end()) return Note::none;
    if (now < found->second.until) return found->second.busy ? Note::busy : Note::failed;
    failed_.erase(found);
    return Note::none;
}

void Uploader::read_failed(TorrentId torrent, PieceIndex piece, const std::string& why,
                           Clock::time_point now) {
    ++stats_.read_errors;
    const bool busy = why.find("busy") != std::string::npos;
    spdlog::debug("torrent {}: piece {} not read for peers: {}", torrent.get(), piece.get(), why);
    if (failed_.size() >= kMaxFailedNotes) failed_.erase(failed_.begin());
    failed_[Key{torrent.get(), piece.get()}] =
        FailedNote{now + (busy ? options_.busy_backoff : options_.failed_backoff), busy};
}

void Uploader::give_back_unwanted(const bus::v1::PieceRead& read) {
    // A slot we will not use is still ours to give back.
    if (read.has_arena()) cache_.released().push_back(read.request());
}

bool Uploader::on_read(bus::Incoming& message,
                       const std::function<TorrentContext*(TorrentId)>& find, Clock::time_point now) {
    if (!message.envelope.has_piece_read()) {
        spdlog::debug("reads socket: ignored a {} message", bus::body_name(message.envelope));
        return false;
    }
    const auto& answer = message.envelope.piece_read();
    const auto found = reads_.find(answer.request());
    if (found == reads_.end()) {
        // Timed out, or its torrent went.
        give_back_unwanted(answer);
        return false;
    }
    const Read read = found->second;
    reads_.erase(found);
    reading_.erase(Key{read.torrent.get(), read.piece.get()});
    in_flight_bytes_ -= std::min<std::size_t>(in_flight_bytes_, read.size);
    if (answer.torrent() != read.torrent.get() || answer.piece() != read.piece.get()) {
        give_back_unwanted(answer);
        read_failed(read.torrent, read.piece, "the answer named another piece", now);
        return true;
    }
    TorrentContext* torrent = find(read.torrent);
    if (torrent == nullptr) {
        give_back_unwanted(answer);
        return true;
    }
    if (!answer.error().empty()) {
        give_back_unwanted(answer);
        read_failed(read.torrent, read.piece, answer.error(), now);
        return true;
    }
    if (answer.has_arena()) {
        const bus::ArenaInfo arena{answer.arena().path(), answer.arena().id(), answer.arena().slot_size(),
                                   answer.arena().slot_count()};
        auto bytes = arenas_.view(arena, answer.slot(), read.size, answer.request());
        if (!bytes) {
            give_back_unwanted(answer);
            read_failed(read.torrent, read.piece, bytes.error().describe(), now);
            return true;
        }
        cache_.add_arena(read.torrent, read.piece, *bytes, arena, answer.slot(), answer.request(), now);
        return true;
    }
    if (message.frames.size() != 1 || message.frames.front().size() != read.size) {
        read_failed(read.torrent, read.piece, "the answer did not hold the piece's bytes", now);
        return true;
    }
    // The frame is the entry: no copy.
    cache_.add_frame(read.torrent, read.piece, std::move(message.frames.front()), now);
    return true;
}

void Uploader::on_tick(Clock::time_point now) {
    for (auto it = reads_.begin(); it != reads_.end();) {
        if (now - it->second.sent >= options_.read_timeout) {
            const Read read = it->second;
            reading_.erase(Key{read.torrent.get(), read.piece.get()});
            in_flight_bytes_ -= std::min<std::size_t>(in_flight_bytes_, read.size);
            it = reads_.erase(it);
            read_failed(read.torrent, read.piece, "no answer from the writer", now);
        } else {
            ++it;
        }
    }
    cache_.expire(now);
}

void Uploader::drop_torrent(TorrentId torrent) {
    cache_.drop_torrent(torrent);
    for (auto it = reads_.begin(); it != reads_.end();) {
        if (it->second.torrent == torrent) {
            reading_.erase(Key{torrent.get(), it->second.piece.get()});
            in_flight_bytes_ -= std::min<std::size_t>(in_flight_bytes_, it->second.size);
            it = reads_.erase(it);
        } else {
            ++it;
        }
    }
    std::erase_if(failed_, [&](const auto& note) { return note.first.first == torrent.get(); });
}

void Uploader::send_released() {
    auto& released = cache_.released();
    if (released.empty()) return;
    bus::v1::Envelope envelope;
    auto* done = envelope.mutable_reads_done();
    for (const std::uint64_t request : released) done->add_requests(request);
    if (send_(envelope)) released.clear();
}

Uploader::Stats Uploader::stats() const {
    Stats stats = stats_;
    stats.in_flight = reads_.size();
    stats.cached_bytes = cache_.bytes();
    stats.cached_pieces = cache_.entries();
    return stats;
}

}  // namespace pw::peer_worker
