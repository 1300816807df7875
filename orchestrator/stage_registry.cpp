#include "orchestrator/stage_registry.hpp"

namespace pw::orchestrator {

void StageRegistry::add(const std::string& identity, ::piecework::v1::Role role,
                        std::uint32_t pid, Clock::time_point now) {
    stages_[identity] = Stage{identity, role, pid, now, {}};
}

std::optional<Stage> StageRegistry::remove(const std::string& identity) {
    const auto it = stages_.find(identity);
    if (it == stages_.end()) return std::nullopt;
    Stage stage = std::move(it->second);
    stages_.erase(it);
    return stage;
}

Stage* StageRegistry::find(const std::string& identity) {
    const auto it = stages_.find(identity);
    return it == stages_.end() ? nullptr : &it->second;
}

std::vector<Stage> StageRegistry::take_silent_since(Clock::time_point deadline) {
    std::vector<Stage> silent;
    for (auto it = stages_.begin(); it != stages_.end();) {
        if (it->second.last_heard < deadline) {
            silent.push_back(std::move(it->second));
            it = stages_.erase(it);
        } else {
            ++it;
        }
    }
    return silent;
}

std::vector<std::string> StageRegistry::identities() const {
    std::vector<std::string> out;
    for (const auto& entry : stages_) out.push_back(entry.first);
    return out;
}

std::vector<std::string> StageRegistry::identities(::piecework::v1::Role role) const {
    std::vector<std::string> out;
    for (const auto& [identity, stage] : stages_) {
        if (stage.role == role) out.push_back(identity);
    }
    return out;
}

bool StageRegistry::has_role(::piecework::v1::Role role) const {
    for (const auto& entry : stages_) {
        if (entry.second.role == role) return true;
    }
    return false;
}

std::uint32_t StageRegistry::peers_connected() const {
    std::uint32_t total = 0;
    for (const auto& entry : stages_) total += entry.second.counters.peers_connected();
    return total;
}

std::uint64_t StageRegistry::bytes_uploaded() const {
    std::uint64_t total = 0;
    for (const auto& entry : stages_) total += entry.second.counters.bytes_uploaded();
    return total;
}

}  // namespace pw::orchestrator
