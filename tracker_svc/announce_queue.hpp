#pragma once
// Who may announce now. One set of stages serves hundreds of torrents, and many of them fall
// due together (a session starting, a tracker's common interval): each announce is a socket,
// so at most `cap` are in flight and the rest wait their turn, first come first served.
// `stopped` announces are time-bounded (stop_timeout), so they go ahead of regular ones.
// Pure: no sockets, no clock.
#include <cstddef>
#include <deque>
#include <optional>
#include <set>

#include "core/units.hpp"

namespace pw::tracker {

class AnnounceQueue {
public:
    explicit AnnounceQueue(std::size_t cap);

    // `torrent` wants to make an announce. A torrent waits at most once: pushing it again is a
    // no-op, except that an urgent push moves a waiting torrent ahead. A torrent in flight
    // cannot be pushed (its announce must end first).
    void push(TorrentId torrent, bool urgent = false);
    // The next torrent to announce, when a slot is free; it holds the slot until finish().
    std::optional<TorrentId> start_next();
    // Its announce ended (answered, failed, cancelled): the slot is free again.
    void finish(TorrentId torrent);
    // Out of the queue and out of flight, whichever it was (removal, giving up).
    void forget(TorrentId torrent);

    bool waiting(TorrentId torrent) const { return queued_.contains(torrent); }
    bool in_flight(TorrentId torrent) const { return flying_.contains(torrent); }
    std::size_t waiting_count() const { return queued_.size(); }
    std::size_t in_flight_count() const { return flying_.size(); }
    std::size_t cap() const { return cap_; }

private:
    void erase_waiting(TorrentId torrent);

    std::size_t cap_;
    std::deque<TorrentId> urgent_;
    std::deque<TorrentId> regular_;
    std::set<TorrentId> queued_;  // in urgent_ or regular_
    std::set<TorrentId> flying_;
};

}  // namespace pw::tracker
