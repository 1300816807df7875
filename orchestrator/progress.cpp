#include "orchestrator/progress.hpp"

#include <array>
#include <cstdio>
#include <vector>

namespace pw::orchestrator {

std::string format_bytes(double bytes) {
    static constexpr std::array<const char*, 5> units{"KiB", "MiB", "GiB", "TiB", "PiB"};
    if (bytes < 1024) return std::to_string(static_cast<std::uint64_t>(bytes < 0 ? 0 : bytes)) + " B";
    std::size_t unit = 0;
    bytes /= 1024;
    while (bytes >= 1024 && unit + 1 < units.size()) {
        bytes /= 1024;
        ++unit;
    }
    std::array<char, 32> text{};
    std::snprintf(text.data(), text.size(), "%.1f %s", bytes, units[unit]);
    return text.data();
}

std::string format_duration(std::optional<std::chrono::seconds> duration) {
    if (!duration || duration->count() < 0) return "--:--";
    const long long total = duration->count();
    const long long hours = total / 3600;
    const long long minutes = total / 60 % 60;
    const long long seconds = total % 60;
    std::array<char, 32> text{};
    if (hours > 0) {
        std::snprintf(text.data(), text.size(), "%lld:%02lld:%02lld", hours, minutes, seconds);
    } else {
        std::snprintf(text.data(), text.size(), "%lld:%02lld", minutes, seconds);
    }
    return text.data();
}

std::string format_progress(const ProgressSnapshot& snapshot) {
    const double fraction = snapshot.size_unknown ? 0.0
                            : snapshot.total_bytes == 0
                                ? 1.0
                                : static_cast<double>(snapshot.done_bytes) /
                                      static_cast<double>(snapshot.total_bytes);
    std::optional<std::chrono::seconds> eta;
    if (snapshot.size_unknown) {
        // Left unknown.
    } else if (snapshot.done_bytes >= snapshot.total_bytes) {
        eta = std::chrono::seconds(0);
    } else if (snapshot.bytes_per_second > 0) {
        const double left = static_cast<double>(snapshot.total_bytes - snapshot.done_bytes);
        eta = std::chrono::seconds(static_cast<long long>(left / snapshot.bytes_per_second + 0.5));
    }
    std::array<char, 32> percent{};
    std::snprintf(percent.data(), percent.size(), "%5.1f%%", fraction * 100.0);
    return std::string("  ") + percent.data() + "  " +
           format_bytes(static_cast<double>(snapshot.done_bytes)) + "/" +
           format_bytes(static_cast<double>(snapshot.total_bytes)) + "  " +
           format_bytes(snapshot.bytes_per_second) + "/s  ETA " + format_duration(eta) +
           "  peers " + std::to_string(snapshot.peers) +
           (snapshot.upload_bytes_per_second > 0 ? "  up " + format_bytes(snapshot.upload_bytes_per_second) + "/s" : "") +
           (snapshot.note.empty() ? "" : "  [" + snapshot.note + "]");
}

namespace {

// Whole seconds until `then`, rounded up: "in 30 s" right after a 30 s wait was set.
long long seconds_until(StallWatch::Clock::time_point then, StallWatch::Clock::time_point now) {
    if (then <= now) return 0;
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(then - now).count();
    return (left + 999) / 1000;
}

std::string joined(const std::vector<std::string>& parts, const char* separator) {
    std::string text;
    for (const auto& part : parts) text += (text.empty() ? "" : separator) + part;
    return text;
}

}  // namespace

bool StallWatch::update(const StallInputs& in, Clock::time_point now) {
    const PeerCounts& peers = in.peers;
    const bool waiting_for_tracker = in.has_trackers && !in.tracker_answered && in.tracker_error.empty();
    if (!in.downloading || peers.connected > 0) {
        stalled_ = false;
        gap_ = options_.first_retry;
        reason_.clear();
        summary_.clear();
        return false;
    }
    if (peers.connecting > 0 || peers.ready > 0 || (waiting_for_tracker && peers.banned + peers.given_up + peers.backing_off == 0)) {
        stalled_ = false;
        reason_ = peers.connecting + peers.ready > 0
                      ? "no peers yet: connecting to " + std::to_string(peers.connecting + peers.ready)
                      : "no peers yet: waiting for the tracker";
        summary_ = reason_;
        return false;
    }
    bool due = false;
    if (!stalled_) {
        stalled_ = true;
        next_retry_ = now + gap_;
    } else if (now >= next_retry_) {
        due = true;
        gap_ = std::min(gap_ * 2, options_.max_retry);
        next_retry_ = now + gap_;
    }
    std::vector<std::string> known;
    if (peers.banned > 0) known.push_back(std::to_string(peers.banned) + " banned");
    if (peers.given_up > 0) known.push_back(std::to_string(peers.given_up) + " unreachable");
    if (peers.backing_off > 0) known.push_back(std::to_string(peers.backing_off) + " dropped");
    if (known.empty()) known.push_back("none known");
    std::vector<std::string> doing;
    std::vector<std::string> doing_untimed;
    if (peers.backing_off > 0 && peers.next_retry) {
        doing.push_back("retrying in " + std::to_string(seconds_until(*peers.next_retry, now)) + " s");
        doing_untimed.push_back("retrying with backoff");
    }
    if (!in.tracker_error.empty()) {
        doing.push_back("tracker failing: " + in.tracker_error);
        doing_untimed.push_back(doing.back());
    }
    const std::string in_time = " in " + std::to_string(seconds_until(next_retry_, now)) + " s";
    if (in.has_trackers) {
        doing.push_back("re-announcing" + in_time);
        doing_untimed.push_back("re-announcing with backoff");
    } else {
        doing.push_back("no tracker to ask");
        doing_untimed.push_back(doing.back());
        if (peers.given_up > 0) {
            doing.push_back("trying them again" + in_time);
            doing_untimed.push_back("trying them again with backoff");
        }
    }
    const std::string head = "no peers: " + joined(known, ", ");
    reason_ = head + "; " + joined(doing, "; ");
    summary_ = head + "; " + joined(doing_untimed, "; ");
    return due;
}

void RateMeter::sample(Clock::time_point now, std::uint64_t total_bytes) {
    samples_.emplace_back(now, total_bytes);
    while (samples_.size() > 2 && now - samples_[1].first >= window_) samples_.pop_front();
}

double RateMeter::rate() const {
    if (samples_.size() < 2) return 0;
    const auto& [first_time, first_bytes] = samples_.front();
    const auto& [last_time, last_bytes] = samples_.back();
    const double seconds = std::chrono::duration<double>(last_time - first_time).count();
    if (seconds <= 0 || last_bytes < first_bytes) return 0;
    return static_cast<double>(last_bytes - first_bytes) / seconds;
}

}  // namespace pw::orchestrator
