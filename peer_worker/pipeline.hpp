#pragma once
// How many block requests to keep in flight to one peer. One block in flight caps a peer at
// 16 KiB per round trip, so the depth follows the bandwidth-delay product: the peer's
// measured rate times a horizon derived from its round-trip time.
#include <chrono>
#include <cstdint>

namespace pw::peer_worker {

using Clock = std::chrono::steady_clock;

class PipelineSizer {
public:
    // A fresh peer starts with 512 KiB in flight (more when its handshake showed a long round
    // trip: expect_round_trip): it doubles per window from there for a fast
    // peer, halves for a slow one. Each peer leases up to 2 x depth (a request at least 1 MiB),
    // in whole pieces, before anything is measured; the worker's piece cap is shared first
    // come, first served, so deeper starts let the first peers unchoked take it all (starting
    // at 128 blocks and leasing 1.5 x that, 16 peers x 3 MiB against 32 MiB: the last peers
    // got no lease for seconds) and set the worker's peak memory, which it keeps.
    static constexpr std::uint32_t kInitialDepth = 32;
    static constexpr std::uint32_t kMinDepth = 16;
    static constexpr std::uint32_t kMaxDepth = 500;
    // The rate is re-measured over windows this long.
    static constexpr Clock::duration kWindow = std::chrono::seconds(1);
    // During the ramp, windows are two round trips long, at least this, and the rate is each
    // window's own: a peer 200 ms away starting at 32 blocks (2.5 MiB/s) reached 4 MiB/s
    // after 3 s with 1 s windows and a smoothed rate, which cost a tenth of a 16 s download.
    static constexpr Clock::duration kMinRampWindow = std::chrono::milliseconds(250);
    // The ramp doubles the depth after each window whose rate beat the ramp's best by this
    // factor, and ends after kRampFlatWindows windows in a row that did not (a slow peer's
    // windows never deepen it, so it leaves at its initial depth). A rate-limited
    // seeder hands out its quota in bursts (libtorrent: each half second), so one short
    // window says little: ending the ramp at the first window that did not ask for more
    // depth left 4 MiB/s peers 200 ms away at half their rate for 5 s of a 16 s download.
    static constexpr double kRampGrowth = 1.25;
    static constexpr int kRampFlatWindows = 3;

    explicit PipelineSizer(Clock::time_point now) : window_start_(now) {}

    // A round trip seen before any block (our handshake to the peer's first answer) sizes
    // the first requests as kInitialDepth does close by: 2 MiB/s over the horizon. A peer
    // 200 ms away starts at 83 blocks instead of 32, which alone caps it at 2.5 MiB/s: the
    // ramp's first windows, a tenth of a second of rate each from all peers at once, were
    // what start-up cost after the handshakes. Never shallower than kInitialDepth; ignored
    // once a block came.
    void expect_round_trip(Clock::duration round_trip);

    // A requested block arrived at `now`, `latency` after we asked for it (max: unknown, it
    // counts towards the rate only).
    void on_block(std::uint32_t bytes, Clock::duration latency, Clock::time_point now);
    // Re-derives the depth once a window has passed. Windows without any block leave it
    // alone: an idle peer (no leases, choked) says nothing about what it could deliver. A
    // window's first block starts it at the moment it was asked for, so the wait for the
    // handshake, the unchoke or a lease does not count as a slow peer.
    void update(Clock::time_point now);
    bool ramping() const { return ramping_; }

    std::uint32_t depth() const { return depth_; }
    double rate_bytes_per_s() const { return rate_; }
    Clock::duration min_latency() const { return min_latency_; }

    // The depth that keeps a peer of this rate busy: rate x horizon / 16 KiB, clamped. The
    // horizon is what the seeder needs queued, a quarter second, plus twice the smallest
    // latency seen (queueing inflates the others), at most 1 s. A rate-limited seeder hands
    // out its quota in bursts and sizes its send buffer by its rate, but it also saves up
    // quota it could not spend: close by, a quarter second in flight keeps it busy
    // (libtorrent at 2 MiB/s: same throughput as half a second, with half the blocks in
    // flight). Far away, it must come on top of the round trip: with twice the round trip
    // alone, libtorrent seeders 200 ms away, capped at 4 MiB/s, that had no quota saved up
    // settled at 1.5 MiB/s for seconds (their latency, bursts included, stayed above it).
    static std::uint32_t depth_for(double rate_bytes_per_s, Clock::duration min_latency);
    // The same before clamping.
    static double blocks_for(double rate_bytes_per_s, Clock::duration min_latency);

private:
    bool ramp(double sample);

    std::uint32_t depth_ = kInitialDepth;
    double rate_ = 0;
    bool ramping_ = true;
    double ramp_best_ = 0;
    int flat_windows_ = 0;
    Clock::duration min_latency_ = Clock::duration::max();
    Clock::time_point window_start_;
    std::uint64_t window_bytes_ = 0;
};

}  // namespace pw::peer_worker
