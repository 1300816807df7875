#include "tracker_svc/announce_queue.hpp"

#include <algorithm>

namespace pw::tracker {

AnnounceQueue::AnnounceQueue(std::size_t cap) : cap_(std::max<std::size_t>(cap, 1)) {}

void AnnounceQueue::erase_waiting(TorrentId torrent) {
    if (queued_.erase(torrent) == 0) return;
    for (auto* queue : {&urgent_, &regular_}) {
        const auto it = std::find(queue->begin(), queue->end(), torrent);
        if (it != queue->end()) queue->erase(it);
    }
}

void AnnounceQueue::push(TorrentId torrent, bool urgent) {
    if (flying_.contains(torrent)) return;
    if (queued_.contains(torrent)) {
        if (!urgent || std::find(urgent_.begin(), urgent_.end(), torrent) != urgent_.end()) return;
        erase_waiting(torrent);
    }
    queued_.insert(torrent);
    (urgent ? urgent_ : regular_).push_back(torrent);
}

std::optional<TorrentId> AnnounceQueue::start_next() {
    if (flying_.size() >= cap_) return std::nullopt;
    auto& queue = !urgent_.empty() ? urgent_ : regular_;
    if (queue.empty()) return std::nullopt;
    const TorrentId next = queue.front();
    queue.pop_front();
    queued_.erase(next);
    flying_.insert(next);
    return next;
}

void AnnounceQueue::finish(TorrentId torrent) { flying_.erase(torrent); }

void AnnounceQueue::forget(TorrentId torrent) {
    erase_waiting(torrent);
    flying_.erase(torrent);
}

}  // namespace pw::tracker
