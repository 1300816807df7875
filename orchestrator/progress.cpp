#include "orchestrator/progress.hpp"

#include <array>
#include <cstdio>

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
    const double fraction = snapshot.total_bytes == 0
                                ? 1.0
                                : static_cast<double>(snapshot.done_bytes) /
                                      static_cast<double>(snapshot.total_bytes);
    std::optional<std::chrono::seconds> eta;
    if (snapshot.done_bytes >= snapshot.total_bytes) {
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
           (snapshot.upload_bytes_per_second > 0 ? "  up " + format_bytes(snapshot.upload_bytes_per_second) + "/s" : "");
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
