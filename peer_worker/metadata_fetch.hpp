#pragma once
// Fetching a torrent's info dictionary from its peers (BEP 9), for a torrent known only by
// its info-hash: which peer is asked for which 16 KiB piece, what comes back, and whom to
// believe. Pure: the time is passed in; the worker sends the requests it is given, feeds the
// answers and closes the peers it is told to.
//
// Pieces are spread over the peers that offer metadata of the size first offered, a few at a
// time each, and asked again of others when a peer rejects or is slow. The assembled whole is
// checked against the info-hash (ext::MetadataAssembler). When it does not match and one peer
// sent all of it, that peer lied; when several did, the next attempts are made from one peer
// each, so that a failing attempt names its sender for certain.
#include <chrono>
#include <cstdint>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "core/extension.hpp"
#include "core/result.hpp"
#include "core/sha1.hpp"

namespace pw::peer_worker {

class MetadataFetch {
public:
    using Clock = std::chrono::steady_clock;

    struct Options {
        std::uint32_t max_size = ext::kMaxMetadataSize;
        std::uint32_t requests_per_peer = 2;
        Clock::duration request_timeout = std::chrono::seconds(15);
        // Peers remembered as refusing or lying (for this torrent); beyond, the oldest go.
        std::size_t max_refused = 4096;
    };

    explicit MetadataFetch(const Sha1Digest& info_hash) : MetadataFetch(info_hash, Options{}) {}
    MetadataFetch(const Sha1Digest& info_hash, Options options);

    // A peer whose extended handshake offers `size` bytes of metadata: the pieces to ask it
    // for now (none when it is refused, the fetch is done, or others hold every piece).
    std::vector<std::uint32_t> pieces_for(const std::string& peer, std::uint32_t size, Clock::time_point now);

    // Its answer to one of our requests. An Error: drop the peer (a size other than the one
    // it offered, data of the wrong length).
    Status on_data(const std::string& peer, std::uint32_t piece, std::uint32_t total_size,
                   std::string_view data);
    // It will not give this piece: it is not asked again.
    void on_reject(const std::string& peer, std::uint32_t piece);
    void peer_gone(const std::string& peer);
    // Requests older than the timeout go back to be asked of others.
    void expire(Clock::time_point now);

    // The verified dictionary, once; then the fetch is spent.
    bool done() const { return done_; }
    std::optional<std::string> take_metadata() { return std::exchange(metadata_, std::nullopt); }
    // Peers that sent pieces of the verified whole.
    const std::vector<std::string>& sources() const { return sources_; }
    // Peers proven to have sent metadata that is not the torrent's, since the last call: the
    // worker drops them.
    std::vector<std::string> take_liars() { return std::exchange(liars_, {}); }
    bool refused(const std::string& peer) const { return refused_.contains(peer); }

private:
    struct InFlight {
        std::string peer;
        Clock::time_point since;
    };
    void start_attempt(std::uint32_t size);
    void finish();
    void refuse(const std::string& peer);
    std::uint32_t in_flight_of(const std::string& peer) const;

    Sha1Digest info_hash_;
    Options options_;
    std::optional<ext::MetadataAssembler> assembler_;
    std::map<std::uint32_t, InFlight> in_flight_;  // by piece
    std::set<std::string> refused_;
    std::vector<std::string> refused_order_;
    // Per piece, peers that rejected it (they are not asked for it again this attempt).
    std::map<std::uint32_t, std::set<std::string>> rejected_;
    // After a failed attempt with several senders: only this peer is asked, until it finishes
    // an attempt alone (proving or disproving itself).
    bool solo_ = false;
    std::optional<std::string> solo_peer_;
    std::set<std::string> contributors_;  // this attempt's senders
    bool done_ = false;
    std::optional<std::string> metadata_;
    std::vector<std::string> sources_;
    std::vector<std::string> liars_;
};

}  // namespace pw::peer_worker
