#include "writer/read_service.hpp"

#include <algorithm>
#include <cstring>
#include <stdexcept>

#include <spdlog/spdlog.h>

#include "writer/text.hpp"
#include "writer/torrent_writer.hpp"

namespace pw::writer {

namespace v1 = ::piecework::v1;

namespace {

// How long a reclaimed slot keeps out the tag of the request that held it: its worker may
// still read it with that tag, and must then see another one.
constexpr std::chrono::minutes kStaleLife{10};
// The loop's sleep, at most, while a read waits for memory: frames leave ZeroMQ without
// waking the loop.
constexpr std::chrono::milliseconds kBlockedPoll{10};
constexpr std::chrono::milliseconds kIdle{60'000};
constexpr std::size_t kPage = 4096;

std::size_t round_to_page(std::size_t n) { return (n + kPage - 1) / kPage * kPage; }

std::chrono::milliseconds until(bus::Clock::time_point when, bus::Clock::time_point now) {
    if (when <= now) return std::chrono::milliseconds(0);
    // Rounded up: waking a moment early would only find nothing due yet.
    return std::chrono::ceil<std::chrono::milliseconds>(when - now);
}

// What ZeroMQ holds of a frame of a shared piece until it has sent it.
struct FrameHold {
    std::shared_ptr<const void> owner;
    std::shared_ptr<std::atomic<std::size_t>> in_zeromq;
    std::size_t size = 0;
};

void release_frame(void*, void* hint) {
    auto* hold = static_cast<FrameHold*>(hint);
    hold->in_zeromq->fetch_sub(hold->size, std::memory_order_relaxed);
    delete hold;
}

}  // namespace

ReadService::ReadService(ReadOptions options, Lookup lookup, Send send, bus::metrics::Registry* metrics)
    : options_(options), lookup_(std::move(lookup)), send_(std::move(send)),
      in_zeromq_(std::make_shared<std::atomic<std::size_t>>(0)) {
    if (metrics != nullptr) {
        const std::string help = "reads of pieces for peers answered, by outcome";
        served_metric_ = &metrics->counter("piecework_reads_total", help, {{"outcome", "served"}});
        refused_metric_ = &metrics->counter("piecework_reads_total", help, {{"outcome", "refused"}});
        disk_metric_ = &metrics->counter("piecework_read_pieces_from_disk_total",
                                         "pieces read back from the files (and hashed) for peers");
        hits_metric_ = &metrics->counter("piecework_read_cache_hits_total",
                                         "pieces sent to peers without reading the files again");
    }
}

// The arenas go with their memfds; a worker's mapping of one stays valid (its tags read 0).
ReadService::~ReadService() = default;

// --- requests in ---

void ReadService::take(const bus::Incoming& message) {
    const v1::Envelope& envelope = message.envelope;
    if (envelope.has_reads_done()) {
        for (const std::uint64_t request : envelope.reads_done().requests()) give_back(message.identity, request);
        return;
    }
    if (!envelope.has_read_piece()) {
        spdlog::warn("dropped a message of type {} from '{}' on the reads socket: only ReadPiece and "
                     "ReadsDone belong there",
                     bus::body_name(envelope), envelope.sender());
        return;
    }
    const v1::ReadPiece& read = envelope.read_piece();
    Request request{message.identity, TorrentId{read.torrent()}, PieceIndex{read.piece()}, read.request(),
                    bus::Clock::now()};
    const Key key{request.identity, request.id};
    if (request.id == 0) {
        answer_error(request, "request 0: requests are numbered from 1 (0 is no slot tag)");
        return;
    }
    if (queued_keys_.contains(key)) {
        answer_error(request, cat("request ", request.id, " is already in flight"));
        return;
    }
    if (const auto held = holds_.find(key); held != holds_.end()) {
        // The same number again while its slot is held: a worker restarted under the same
        // identity, most likely. The old slot is taken back as if held too long.
        spdlog::warn("reads: worker '{}' asked request {} again while holding its slot; the slot is "
                     "taken back",
                     request.identity, request.id);
        take_back(held->second, request.received);
    }
    if (const auto load = load_.find(request.identity); load != load_.end() && load->second >= options_.per_worker) {
        answer_error(request, cat("busy: ", options_.per_worker, " reads in flight for this worker"), true);
        return;
    }
    if (queue_.size() >= options_.queue_limit) {
        answer_error(request, "busy: the read queue is full", true);
        return;
    }
    // What can be refused at once is; the rest is looked at again when its turn comes.
    const Target target = lookup_(request.torrent);
    if (target.writer == nullptr) {
        answer_error(request, target.why_not);
        return;
    }
    if (std::string why = target.writer->unreadable(request.piece); !why.empty()) {
        answer_error(request, why);
        return;
    }
    queued_keys_.insert(key);
    loaded(request.identity);
    queue_.push_back(std::move(request));
}

void ReadService::loaded(const std::string& identity) { ++load_[identity]; }

void ReadService::unloaded(const std::string& identity) {
    const auto found = load_.find(identity);
    if (found == load_.end()) return;
    if (--found->second == 0) load_.erase(found);
}

// --- the turn ---

void ReadService::serve() {
    const auto now = bus::Clock::now();
    reclaim(now);
    if (spares_until_ && now >= *spares_until_) give_back_spares();
    blocked_ = false;
    const auto deadline = now + options_.turn_budget;
    std::size_t answered = 0;
    while (!queue_.empty() && answered < options_.reads_per_turn) {
        // Taken out first: answering may find the worker gone, which drops its other reads.
        Request request = std::move(queue_.front());
        queue_.pop_front();
        const Key key{request.identity, request.id};
        queued_keys_.erase(key);
        if (serve_one(request) == Outcome::wait) {
            if (bus::Clock::now() - request.received < options_.queue_wait) {
                // First in, first served: the reads behind it wait too.
                queued_keys_.insert(key);
                queue_.push_front(std::move(request));
                blocked_ = true;
                break;
            }
            answer_error(request, "busy: no memory for reads came free in time", true);
        }
        if (!holds_.contains(key)) unloaded(request.identity);
        ++answered;
        if (bus::Clock::now() >= deadline) break;
    }
}

std::chrono::milliseconds ReadService::timeout() const {
    if (!queue_.empty() && !blocked_) return std::chrono::milliseconds(0);
    const auto now = bus::Clock::now();
    auto timeout = kIdle;
    if (blocked_ && !queue_.empty()) {
        timeout = std::min(timeout, kBlockedPoll);
        timeout = std::min(timeout, until(queue_.front().received + options_.queue_wait, now));
    }
    if (next_reclaim_) timeout = std::min(timeout, until(*next_reclaim_, now));
    if (spares_until_) timeout = std::min(timeout, until(*spares_until_, now));
    return timeout;
}

ReadService::Outcome ReadService::serve_one(const Request& request) {
    const Target target = lookup_(request.torrent);
    if (target.writer == nullptr) {
        answer_error(request, target.why_not);
        return Outcome::answered;
    }
    TorrentWriter& writer = *target.writer;
    if (std::string why = writer.unreadable(request.piece); !why.empty()) {
        answer_error(request, why);
        return Outcome::answered;
    }
    if (writer.piece_size(request.piece) > static_cast<std::uint64_t>(bus::kMaxPieceBytes)) {
        answer_error(request, cat("piece ", request.piece.get(), " is larger than a read may be (",
                                  bus::kMaxPieceBytes, " bytes)"));
        return Outcome::answered;
    }
    if (options_.arena) {
        const std::uint32_t length = writer.torrent().piece_length();
        if (Arena* arena = arena_for(length); arena != nullptr && arena->arena) {
            return serve_from_arena(request, writer, *arena, length);
        }
    }
    return serve_as_frame(request, writer);
}

std::size_t ReadService::limit_for(std::size_t size) const {
    return std::max(options_.memory_bytes, 2 * size);
}

// --- answers ---

void ReadService::answer_error(const Request& request, const std::string& why, bool busy) {
    v1::Envelope envelope;
    auto* answer = envelope.mutable_piece_read();
    answer->set_torrent(request.torrent.get());
    answer->set_piece(request.piece.get());
    answer->set_request(request.id);
    answer->set_error(why);
    spdlog::debug("read {} of '{}' (torrent {} piece {}) refused: {}", request.id, request.identity,
                  request.torrent.get(), request.piece.get(), why);
    ++stats_.refused;
    if (busy) ++stats_.busy;
    if (refused_metric_ != nullptr) refused_metric_->add();
    if (const Delivery delivery = send_(request.identity, envelope, {}); delivery != Delivery::sent) {
        delivery_failed(request, delivery);
    }
}

void ReadService::delivery_failed(const Request& request, Delivery delivery) {
    if (delivery == Delivery::gone) {
        spdlog::info("reads: worker '{}' is gone; its slots are taken back", request.identity);
        worker_gone(request.identity);
        return;
    }
    // Its socket is full: a worker that does not read its answers loses them (it asks again).
    spdlog::warn("reads: worker '{}' is not taking its answers; the one to request {} is dropped",
                 request.identity, request.id);
}

// --- frames (across hosts) ---

std::shared_ptr<const ReadService::Buffer> ReadService::cached_buffer(const PieceKey& key) {
    const auto found = buffer_index_.find(key);
    if (found == buffer_index_.end()) return nullptr;
    buffers_.splice(buffers_.end(), buffers_, found->second);  // the most recently used now
    return found->second->buffer;
}

void ReadService::cache_buffer(const PieceKey& key, std::shared_ptr<const Buffer> buffer) {
    if (buffer->size > options_.cache_bytes || buffer_index_.contains(key)) return;
    while (buffer_bytes_ + buffer->size > options_.cache_bytes && !buffers_.empty()) {
        buffer_bytes_ -= buffers_.front().buffer->size;
        buffer_index_.erase(buffers_.front().key);
        buffers_.pop_front();
    }
    buffer_bytes_ += buffer->size;
    buffers_.push_back(CachedBuffer{key, std::move(buffer)});
    buffer_index_.emplace(key, std::prev(buffers_.end()));
}

ReadService::Outcome ReadService::serve_as_frame(const Request& request, TorrentWriter& writer) {
    const std::uint32_t size = writer.piece_size(request.piece);
    // Whether read now or cached, the frame stays in ZeroMQ's hands until it is sent.
    if (in_zeromq_->load(std::memory_order_relaxed) + size > limit_for(size)) return Outcome::wait;
    const PieceKey key{request.torrent.get(), request.piece.get()};
    std::shared_ptr<const Buffer> buffer = cached_buffer(key);
    if (buffer) {
        ++stats_.cache_hits;
        if (hits_metric_ != nullptr) hits_metric_->add();
    } else {
        auto fresh = std::make_shared<Buffer>();
        fresh->data = std::make_unique_for_overwrite<std::uint8_t[]>(size);
        fresh->size = size;
        ++stats_.from_disk;
        if (disk_metric_ != nullptr) disk_metric_->add();
        if (std::string why = writer.read_verified(request.piece, std::span(fresh->data.get(), size), hasher_);
            !why.empty()) {
            answer_error(request, why);
            return Outcome::answered;
        }
        buffer = fresh;
        cache_buffer(key, buffer);
    }
    v1::Envelope envelope;
    auto* answer = envelope.mutable_piece_read();
    answer->set_torrent(request.torrent.get());
    answer->set_piece(request.piece.get());
    answer->set_request(request.id);
    // The frame points into the shared buffer: no copy on the way to ZeroMQ, which lets the
    // buffer go (and lowers the count) once the bytes are on the wire.
    in_zeromq_->fetch_add(size, std::memory_order_relaxed);
    auto* hold = new FrameHold{buffer, in_zeromq_, size};
    std::vector<zmq::message_t> frames;
    frames.emplace_back(const_cast<std::uint8_t*>(buffer->data.get()), size, release_frame, hold);
    const Delivery delivery = send_(request.identity, envelope, frames);
    if (delivery != Delivery::sent) {
        delivery_failed(request, delivery);
        return Outcome::answered;
    }
    ++stats_.served;
    if (served_metric_ != nullptr) served_metric_->add();
    return Outcome::answered;
}

// --- arenas (same host) ---

ReadService::Arena* ReadService::arena_for(std::uint32_t length) {
    auto [found, made] = arenas_.try_emplace(length);
    Arena& arena = found->second;
    if (!made) return &arena;
    arena.stride = round_to_page(length);
    const std::size_t count = std::clamp<std::size_t>(options_.memory_bytes / arena.stride, 2, 1u << 20);
    try {
        arena.arena = std::make_unique<bus::PieceArena>(length, static_cast<std::uint32_t>(count));
        arena.slots.resize(count);
        spdlog::info("reads: an arena of {} slots of {} bytes (resident only while they hold pieces)",
                     count, length);
    } catch (const std::exception& error) {
        spdlog::warn("reads: no arena for pieces of {} bytes ({}); they go as frames", length, error.what());
    }
    return &arena;
}

ReadService::Outcome ReadService::serve_from_arena(const Request& request, TorrentWriter& writer,
                                                   Arena& arena, std::uint32_t length) {
    const std::uint32_t size = writer.piece_size(request.piece);
    const PieceKey key{request.torrent.get(), request.piece.get()};
    std::optional<SlotRef> source;
    if (const auto copies = index_.find(key); copies != index_.end()) {
        const std::vector<SlotRef> refs = copies->second;  // retag may drop one from the index
        for (const SlotRef& ref : refs) {
            Slot& slot = slot_of(ref);
            if (slot.held) {
                if (!source) source = ref;
                continue;
            }
            if (!retag(ref.length, ref.slot, request.id)) continue;
            lru_remove(slot);
            ++stats_.cache_hits;
            if (hits_metric_ != nullptr) hits_metric_->add();
            answer_slot(request, ref.length, ref.slot);
            return Outcome::answered;
        }
    }
    const auto taken = take_slot(length, request.id);
    if (!taken) return Outcome::wait;
    const std::span<std::uint8_t> into = arena.arena->bytes(*taken).first(size);
    if (!arena.arena->resident(*taken)) bus::fault_in_for_write(into);
    if (source) {
        // Held by another request, whose tag this one cannot share: a copy, but no read and no
        // hash (the bytes were verified when they came in).
        const auto from = arenas_.at(source->length).arena->bytes(source->slot).first(size);
        std::memcpy(into.data(), from.data(), size);
        ++stats_.cache_hits;
        if (hits_metric_ != nullptr) hits_metric_->add();
    } else {
        ++stats_.from_disk;
        if (disk_metric_ != nullptr) disk_metric_->add();
        if (std::string why = writer.read_verified(request.piece, into, hasher_); !why.empty()) {
            free_slot(length, *taken);
            answer_error(request, why);
            return Outcome::answered;
        }
    }
    fill(length, *taken, request.torrent, request.piece);
    answer_slot(request, length, *taken);
    return Outcome::answered;
}

bool ReadService::answer_slot(const Request& request, std::uint32_t length, std::uint32_t slot_index) {
    Arena& arena = arenas_.at(length);
    const bus::ArenaInfo& info = arena.arena->info();
    v1::Envelope envelope;
    auto* answer = envelope.mutable_piece_read();
    answer->set_torrent(request.torrent.get());
    answer->set_piece(request.piece.get());
    answer->set_request(request.id);
    answer->mutable_arena()->set_path(info.path);
    answer->mutable_arena()->set_id(info.id);
    answer->mutable_arena()->set_slot_size(info.slot_size);
    answer->mutable_arena()->set_slot_count(info.slot_count);
    answer->set_slot(slot_index);
    const Delivery delivery = send_(request.identity, envelope, {});
    if (delivery != Delivery::sent) {
        // Nobody knows of this slot: it is a cached piece like any other (or goes).
        unhold(length, slot_index);
        delivery_failed(request, delivery);
        return false;
    }
    Slot& slot = arena.slots.at(slot_index);
    slot.held = true;
    slot.holder = request.identity;
    slot.request = request.id;
    slot.held_since = bus::Clock::now();
    holds_[Key{request.identity, request.id}] = SlotRef{length, slot_index};
    const auto expiry = slot.held_since + options_.hold_timeout;
    if (!next_reclaim_ || expiry < *next_reclaim_) next_reclaim_ = expiry;
    ++stats_.served;
    if (served_metric_ != nullptr) served_metric_->add();
    return true;
}

bool ReadService::stale_for(const Slot& slot, std::uint64_t tag) {
    return std::any_of(slot.stale.begin(), slot.stale.end(), [tag](const Stale& s) { return s.request == tag; });
}

std::optional<std::uint32_t> ReadService::acquire_fresh(Arena& arena, std::uint64_t tag) {
    // Nearly always the first free slot; one whose last holder may still read it under this
    // very tag is put back, and the next is tried.
    std::vector<std::uint32_t> refused;
    std::optional<std::uint32_t> slot;
    while ((slot = arena.arena->acquire(tag)) && stale_for(arena.slots.at(*slot), tag)) {
        refused.push_back(*slot);
        slot.reset();
    }
    for (const std::uint32_t back : refused) arena.arena->release(back, bus::PieceArena::Pages::give_back);
    return slot;
}

std::optional<std::uint32_t> ReadService::take_slot(std::uint32_t length, std::uint64_t tag) {
    Arena& arena = arenas_.at(length);
    for (;;) {
        const std::size_t limit = limit_for(arena.stride);
        // A spare slot of this arena (acquired first) is counted already: nothing grows. Any
        // other slot takes room, which other arenas' spare pages give up first.
        const std::size_t grows = arena.arena->free_resident_slots() > 0 ? 0 : arena.stride;
        while (used_bytes_ + spare_bytes() + grows > limit && used_bytes_ + grows <= limit && give_back_spare()) {
        }
        if (used_bytes_ + spare_bytes() + grows <= limit && arena.arena->free_slots() > 0) {
            if (const auto slot = acquire_fresh(arena, tag)) {
                Slot& taken = arena.slots.at(*slot);
                taken.filled = true;  // counted from now on; fill() names its piece
                taken.orphan = false;
                used_bytes_ += arena.stride;
                return slot;
            }
        }
        // No room: the least recently used cached piece goes. One of this length gives its
        // slot, pages and all; another gives its pages back first.
        if (lru_.empty()) return std::nullopt;
        const SlotRef victim = lru_.front();
        if (victim.length == length && retag(length, victim.slot, tag)) {
            Slot& slot = arena.slots.at(victim.slot);
            lru_remove(slot);
            unindex(length, victim.slot);
            return victim.slot;
        }
        free_slot(victim.length, victim.slot);
    }
}

bool ReadService::retag(std::uint32_t length, std::uint32_t slot_index, std::uint64_t tag) {
    Arena& arena = arenas_.at(length);
    if (stale_for(arena.slots.at(slot_index), tag)) return false;
    // A slot released with its pages is the next one acquired (PieceArena hands out the
    // resident slot freed last first), so this is the same slot under the new tag, its bytes
    // untouched; the tag goes through 0, never straight from one request to another.
    arena.arena->release(slot_index, bus::PieceArena::Pages::keep);
    const auto again = arena.arena->acquire(tag, bus::PieceArena::Prefer::resident);
    if (again == slot_index) return true;
    spdlog::error("reads: the arena gave slot {} rather than {} back; the piece in it is dropped",
                  again ? std::to_string(*again) : std::string("none"), slot_index);
    if (again) arena.arena->release(*again, bus::PieceArena::Pages::give_back);
    free_slot(length, slot_index);
    return false;
}

void ReadService::fill(std::uint32_t length, std::uint32_t slot_index, TorrentId torrent, PieceIndex piece) {
    Slot& slot = arenas_.at(length).slots.at(slot_index);
    slot.torrent = torrent;
    slot.piece = piece;
    index_[PieceKey{torrent.get(), piece.get()}].push_back(SlotRef{length, slot_index});
}

void ReadService::unindex(std::uint32_t length, std::uint32_t slot_index) {
    const Slot& slot = arenas_.at(length).slots.at(slot_index);
    const auto found = index_.find(PieceKey{slot.torrent.get(), slot.piece.get()});
    if (found == index_.end()) return;
    std::erase(found->second, SlotRef{length, slot_index});
    if (found->second.empty()) index_.erase(found);
}

void ReadService::lru_add(std::uint32_t length, std::uint32_t slot_index) {
    Slot& slot = arenas_.at(length).slots.at(slot_index);
    if (slot.lru) return;
    lru_.push_back(SlotRef{length, slot_index});
    slot.lru = std::prev(lru_.end());
    cached_bytes_ += arenas_.at(length).stride;
}

void ReadService::lru_remove(Slot& slot) {
    if (!slot.lru) return;
    cached_bytes_ -= arenas_.at((*slot.lru)->length).stride;
    lru_.erase(*slot.lru);
    slot.lru.reset();
}

void ReadService::free_slot(std::uint32_t length, std::uint32_t slot_index, bus::PieceArena::Pages pages) {
    Arena& arena = arenas_.at(length);
    Slot& slot = arena.slots.at(slot_index);
    if (!slot.filled) return;
    lru_remove(slot);
    if (!slot.orphan) unindex(length, slot_index);
    slot.filled = false;
    slot.orphan = false;
    used_bytes_ -= arena.stride;
    arena.arena->release(slot_index, pages);
}

std::size_t ReadService::spare_bytes() const {
    std::size_t bytes = 0;
    for (const auto& [length, arena] : arenas_) {
        if (arena.arena) bytes += arena.arena->free_resident_slots() * arena.stride;
    }
    return bytes;
}

bool ReadService::give_back_spare() {
    for (auto& [length, arena] : arenas_) {
        if (arena.arena && arena.arena->give_back_free(1) > 0) return true;
    }
    return false;
}

void ReadService::give_back_spares() {
    for (auto& [length, arena] : arenas_) {
        if (arena.arena) arena.arena->give_back_free(arena.arena->free_resident_slots());
    }
    spares_until_.reset();
}

void ReadService::unhold(std::uint32_t length, std::uint32_t slot_index) {
    Slot& slot = arenas_.at(length).slots.at(slot_index);
    if (slot.held) {
        holds_.erase(Key{slot.holder, slot.request});
        unloaded(slot.holder);
        slot.held = false;
        slot.holder.clear();
    }
    if (slot.orphan) {
        free_slot(length, slot_index);
        return;
    }
    lru_add(length, slot_index);
    trim_arena_cache();
}

void ReadService::trim_arena_cache() {
    while (cached_bytes_ > options_.cache_bytes && !lru_.empty()) {
        const SlotRef oldest = lru_.front();
        free_slot(oldest.length, oldest.slot, bus::PieceArena::Pages::keep);
    }
    if (spare_bytes() > 0) spares_until_ = bus::Clock::now() + options_.spare_linger;
}

void ReadService::give_back(const std::string& identity, std::uint64_t request) {
    const Key key{identity, request};
    if (const auto held = holds_.find(key); held != holds_.end()) {
        const SlotRef ref = held->second;
        unhold(ref.length, ref.slot);
        return;
    }
    // A slot reclaimed before its worker was done: now it is, and the tag may come again.
    if (const auto stale = stale_holds_.find(key); stale != stale_holds_.end()) {
        std::erase_if(slot_of(stale->second).stale, [&](const Stale& s) {
            return s.identity == identity && s.request == request;
        });
        stale_holds_.erase(stale);
    }
}

void ReadService::reclaim(bus::Clock::time_point now) {
    if (!next_reclaim_ || now < *next_reclaim_) return;
    next_reclaim_.reset();
    std::vector<SlotRef> expired;
    for (const auto& [key, ref] : holds_) {
        const auto expiry = slot_of(ref).held_since + options_.hold_timeout;
        if (expiry <= now) {
            expired.push_back(ref);
        } else if (!next_reclaim_ || expiry < *next_reclaim_) {
            next_reclaim_ = expiry;
        }
    }
    for (const SlotRef& ref : expired) {
        const Slot& slot = slot_of(ref);
        spdlog::warn("reads: worker '{}' kept the slot of request {} (torrent {} piece {}) past {} s; "
                     "it is taken back",
                     slot.holder, slot.request, slot.torrent.get(), slot.piece.get(),
                     std::chrono::duration_cast<std::chrono::seconds>(options_.hold_timeout).count());
        take_back(ref, now);
    }
    for (auto it = stale_holds_.begin(); it != stale_holds_.end();) {
        Slot& slot = slot_of(it->second);
        std::erase_if(slot.stale, [now](const Stale& s) { return s.until <= now; });
        const bool still = std::any_of(slot.stale.begin(), slot.stale.end(), [&](const Stale& s) {
            return s.identity == it->first.first && s.request == it->first.second;
        });
        if (!still) {
            it = stale_holds_.erase(it);
            continue;
        }
        for (const Stale& s : slot.stale) {
            if (!next_reclaim_ || s.until < *next_reclaim_) next_reclaim_ = s.until;
        }
        ++it;
    }
}

void ReadService::worker_gone(const std::string& identity) {
    // Its queued reads have nobody to go to.
    for (auto it = queue_.begin(); it != queue_.end();) {
        if (it->identity != identity) {
            ++it;
            continue;
        }
        queued_keys_.erase(Key{it->identity, it->id});
        unloaded(identity);
        it = queue_.erase(it);
    }
    // Its slots come back at once; a process that only lost its connection could still read
    // them, so their tags stay out of use for a while, as for a reclaimed slot.
    std::vector<SlotRef> held;
    for (const auto& [key, ref] : holds_) {
        if (key.first == identity) held.push_back(ref);
    }
    const auto now = bus::Clock::now();
    for (const SlotRef& ref : held) take_back(ref, now);
}

void ReadService::take_back(const SlotRef& ref, bus::Clock::time_point now) {
    Slot& slot = slot_of(ref);
    const auto until = now + kStaleLife;
    slot.stale.push_back(Stale{slot.holder, slot.request, until});
    stale_holds_[Key{slot.holder, slot.request}] = ref;
    if (!next_reclaim_ || until < *next_reclaim_) next_reclaim_ = until;
    ++stats_.reclaimed;
    unhold(ref.length, ref.slot);
}

void ReadService::forget(TorrentId torrent) {
    for (auto it = buffers_.begin(); it != buffers_.end();) {
        if (it->key.first != torrent.get()) {
            ++it;
            continue;
        }
        buffer_bytes_ -= it->buffer->size;
        buffer_index_.erase(it->key);
        it = buffers_.erase(it);
    }
    for (auto& [length, arena] : arenas_) {
        for (std::uint32_t i = 0; i < arena.slots.size(); ++i) {
            Slot& slot = arena.slots[i];
            if (!slot.filled || slot.orphan || slot.torrent != torrent) continue;
            if (slot.held) {
                // Its worker is still sending it; it goes when given back.
                unindex(length, i);
                slot.orphan = true;
            } else {
                free_slot(length, i);
            }
        }
    }
}

ReadService::Stats ReadService::stats() const {
    Stats stats = stats_;
    stats.queued = queue_.size();
    stats.held = holds_.size();
    stats.memory = used_bytes_ + in_zeromq_->load(std::memory_order_relaxed);
    stats.cached = cached_bytes_ + buffer_bytes_;
    stats.spare = spare_bytes();
    return stats;
}

}  // namespace pw::writer
