#pragma once
// The stages that said Hello, by ROUTER identity: their role, when we last heard from them,
// and the counters of their latest heartbeat.
#include <chrono>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "proto/piecework.pb.h"

namespace pw::orchestrator {

struct Stage {
    std::string identity;
    ::piecework::v1::Role role = ::piecework::v1::ROLE_UNSPECIFIED;
    std::uint32_t pid = 0;
    std::chrono::steady_clock::time_point last_heard;
    ::piecework::v1::Heartbeat counters;
};

class StageRegistry {
public:
    using Clock = std::chrono::steady_clock;

    // Registers (or re-registers, after a restart under the same name) a stage.
    void add(const std::string& identity, ::piecework::v1::Role role, std::uint32_t pid,
             Clock::time_point now);
    Stage* find(const std::string& identity);
    std::optional<Stage> remove(const std::string& identity);
    // Stages silent since before `deadline`: removed and returned.
    std::vector<Stage> take_silent_since(Clock::time_point deadline);
    std::vector<std::string> identities() const;
    std::vector<std::string> identities(::piecework::v1::Role role) const;
    bool has_role(::piecework::v1::Role role) const;
    std::uint32_t peers_connected() const;
    std::uint64_t bytes_uploaded() const;

private:
    std::map<std::string, Stage> stages_;
};

}  // namespace pw::orchestrator
