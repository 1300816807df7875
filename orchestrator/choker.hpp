#pragma once
// Whom one torrent uploads to: the one choker of the client, whatever worker or host holds
// each peer (the workers report their peers, the session runs this per torrent and sends the
// decisions). Pure: the time is passed in.
//
// Every `kRound` (10 s) it re-decides: `slots` regular upload slots (4) and one optimistic.
//  - While downloading, tit-for-tat: the interested peers that give us the most, lately. A
//    snubbed peer (it unchoked us and sent nothing for a while) gets no regular slot.
//  - While seeding, the interested peers we upload to fastest, but a peer that has held a slot
//    for `kSeedTurn` (30 s) while others wait yields it: everyone gets a turn.
//  - The optimistic slot goes to a random choked interested peer, newcomers three times as
//    likely, and moves on every `kOptimisticTurn` (30 s).
// Between rounds a peer that becomes interested while a slot is free is unchoked at once.
#include <chrono>
#include <cstdint>
#include <map>
#include <optional>
#include <random>
#include <string>
#include <vector>

namespace pw::orchestrator {

struct ChokePeer {
    std::string worker;
    bool interested = false;  // it wants pieces we have
    bool snubbed = false;
    bool seed = false;
    std::uint32_t download_rate = 0;  // bytes/s from it
    std::uint32_t upload_rate = 0;    // bytes/s to it
};

// A decision for one peer: unchoke (true) or choke (false).
struct ChokeChange {
    std::string worker;
    std::string peer;
    bool unchoke = false;
    friend bool operator==(const ChokeChange&, const ChokeChange&) = default;
};

class Choker {
public:
    using Clock = std::chrono::steady_clock;
    static constexpr auto kRound = std::chrono::seconds(10);
    static constexpr auto kSeedTurn = std::chrono::seconds(30);
    static constexpr auto kOptimisticTurn = std::chrono::seconds(30);
    static constexpr auto kNewcomer = std::chrono::seconds(60);

    explicit Choker(std::uint32_t slots = 4, std::uint64_t seed = 0) : slots_(slots), rng_(seed) {}

    // A peer's latest state (it is new when unknown): returns the changes to send now, which
    // are none but an immediate unchoke when it just became interested and a slot is free.
    std::vector<ChokeChange> update(const std::string& peer, const ChokePeer& state, Clock::time_point now);
    void remove(const std::string& peer);
    // Every peer of one worker goes (the worker is gone).
    void remove_worker(const std::string& worker);
    void clear() { peers_.clear(); optimistic_.reset(); }

    // Re-decides when a round is due (or `force`); `seeding`: every piece is ours.
    std::vector<ChokeChange> tick(Clock::time_point now, bool seeding, bool force = false);

    void set_slots(std::uint32_t slots) { slots_ = slots; }
    // Peers we upload to (unchoked).
    std::uint32_t unchoked() const;
    bool is_unchoked(const std::string& peer) const;
    std::size_t size() const { return peers_.size(); }

private:
    struct Peer {
        ChokePeer state;
        bool unchoked = false;
        Clock::time_point since{};  // unchoked or choked since
        Clock::time_point joined{};
    };
    std::uint32_t regular_unchoked() const;

    std::uint32_t slots_;
    std::mt19937_64 rng_;
    std::map<std::string, Peer> peers_;
    std::optional<std::string> optimistic_;
    Clock::time_point optimistic_since_{};
    Clock::time_point next_round_{};
};

}  // namespace pw::orchestrator
