#pragma once
// The session: the stages that joined, the torrents, and the limits that hold across them.
// It turns what the stages say into changes of state and into messages for the stages, and
// it carries out what users ask (add, start, stop, remove, verify). Pure: no sockets; the
// caller passes the time in, feeds it what arrived, and sends what collects in outbox().
#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include <zmq.hpp>

#include "core/bus/bus.hpp"
#include "core/encryption.hpp"
#include "core/result.hpp"
#include "core/units.hpp"
#include "orchestrator/stage_registry.hpp"
#include "orchestrator/torrent_state.hpp"

namespace pw::orchestrator {

struct SessionConfig {
    std::string name = "orchestrator";
    std::string peer_id;  // 20 bytes; made at random when empty
    std::uint32_t listen_port = 6881;
    Encryption encryption = Encryption::prefer;  // peer connections (--encryption)
    std::chrono::milliseconds heartbeat{1000};
    int missed_heartbeats = 5;
    std::chrono::milliseconds tracker_stats_period{30'000};
    // An info dictionary's bytes are let go this long after they were last sent to a stage,
    // and read again from the torrent's file for a stage that joins later.
    std::chrono::milliseconds keep_info_after_send{2'000};
    // A fast peer's pipeline of 16 KiB pieces wants a few hundred at a time; each request is a
    // round trip through the loop, so a small cap multiplies them (4 MiB of 16 KiB pieces).
    std::uint32_t max_leases_per_request = 256;
    // Peers handed to workers at once, over every torrent; each torrent's own cap is its
    // settings' peer_limit.
    std::size_t max_peers = 200;
    TorrentOptions torrent;  // its grants pointer is the session's own
    std::uint64_t seed = 0;  // scheduler randomness; per torrent it is mixed with the id
    bus::metrics::Registry* metrics = nullptr;
};

// A message for one stage.
struct Outgoing {
    std::string identity;
    bus::v1::Envelope envelope;
    std::vector<zmq::message_t> frames;
};

// A line for the user (the front end prints them, the daemon logs them).
struct Notice {
    enum class Kind { info, warning, error };
    Kind kind = Kind::info;
    TorrentId torrent;  // 0 for the session
    std::string text;
};

// "-PW0001-" and 12 random bytes.
std::string make_peer_id();

class Session {
public:
    using Clock = std::chrono::steady_clock;

    explicit Session(SessionConfig config);

    // --- the stages ---
    void handle(bus::Incoming& in, Clock::time_point now);
    // Heartbeats, silent stages, peer assignment, lease expiry, tracker stats, rates.
    void tick(Clock::time_point now, std::int64_t wall_now);
    // Some torrent fetches, checks or has peers: its timers want turns within a second.
    bool any_busy() const;
    std::vector<Outgoing>& outbox() { return outbox_; }
    std::vector<Notice> take_notices() { return std::exchange(notices_, {}); }
    // Tells every stage to shut down (the session is ending).
    void shutdown_all(const std::string& reason);
    const StageRegistry& stages() const { return stages_; }
    const std::string& peer_id() const { return config_.peer_id; }

    // --- the torrents ---
    struct AddRequest {
        std::string metainfo;        // the .torrent file's bytes, or a magnet link
        std::string metainfo_path;   // where those bytes can be read again (may be empty)
        TorrentSettings settings;    // download_dir must be set (absolute)
        std::optional<TorrentId> id; // a restored torrent keeps its id
    };
    struct Added {
        TorrentId id;
        bool duplicate = false;  // the session had it already: nothing changed
    };
    // Parses and checks the metainfo (the same messages `inspect` gives), then adds the
    // torrent and, unless paused, starts it. A magnet link adds it by info-hash: started, its
    // peers fetch the info dictionary first (see take_fetched).
    Result<Added> add(AddRequest request, Clock::time_point now, std::int64_t wall_now);
    bool start(TorrentId id, Clock::time_point now);
    bool stop(TorrentId id);
    // With delete_data the writer deletes its files (even while it was stopped).
    bool remove(TorrentId id, bool delete_data);
    bool verify(TorrentId id);
    // The torrent's choice of files or their order changed (TorrentState::choose_files):
    // the writer is told which files are wanted, and the choice is saved.
    void files_chosen(TorrentId id, Clock::time_point now);

    TorrentState* find(TorrentId id);
    const TorrentState* find(TorrentId id) const;
    TorrentState* find(const Sha1Digest& info_hash);
    const std::map<TorrentId, TorrentState>& torrents() const { return torrents_; }
    bool all_complete() const;
    // Where the torrent's .torrent file can be read again ("" when nowhere).
    std::string metainfo_path(TorrentId id) const;
    void set_max_peers(std::size_t peers) { config_.max_peers = peers; }
    // --encryption, and the RPC's session-set: the workers that join later have it in their
    // Welcome, the ones running now an EncryptionPolicy (for their new connections).
    void set_encryption(Encryption encryption);
    Encryption encryption() const { return config_.encryption; }
    // The session's rate limits in bytes/s (0: none), split among the workers by use.
    void set_rate_limits(std::uint64_t upload, std::uint64_t download);
    // Seeding stops (the torrent is finished) at this ratio unless a torrent says otherwise.
    void set_seed_ratio(std::optional<double> ratio) { seed_ratio_ = ratio; }
    // The port trackers are told: the one the workers listen on, 0 when none can.
    std::uint16_t announced_port() const;
    // The id the next torrent added gets; ids below `id` are never given again.
    std::uint32_t next_id() const { return next_id_; }
    void reserve_ids_below(std::uint32_t id) { next_id_ = std::max(next_id_, id); }

    // Torrents whose settings changed since the last call (to be saved), and the info-hashes
    // of those removed (whose saved state is to go).
    std::set<TorrentId> take_changed() { return std::exchange(changed_, {}); }
    void mark_changed(TorrentId id) { changed_.insert(id); }
    // The session's own settings changed (session-set): to be saved.
    void mark_session_changed() { session_changed_ = true; }
    bool take_session_changed() { return std::exchange(session_changed_, false); }
    std::vector<Sha1Digest> take_removed() { return std::exchange(removed_, {}); }
    // Info dictionaries fetched from peers since the last call, as .torrent files: the
    // caller saves each (and then says where with set_metainfo_path).
    struct Fetched {
        TorrentId id;
        Sha1Digest info_hash{};
        std::string metainfo;
    };
    std::vector<Fetched> take_fetched() { return std::exchange(fetched_, {}); }
    // Its info dictionary can be read again from `path`: the bytes held may be let go.
    void set_metainfo_path(TorrentId id, std::string path);

    // Totals over every torrent, this run.
    std::uint64_t downloaded_this_run() const { return downloaded_this_run_; }
    std::uint64_t uploaded_this_run() const { return uploaded_this_run_; }
    std::uint32_t peers_connected() const;
    // Why the running torrents that want pieces are not moving, and what is being tried ("" when
    // every one has peers): for the progress line.
    std::string stall_note() const;
    const PeerJudge& judge() const { return judge_; }

private:
    struct InfoBytes {
        zmq::message_t frame;     // empty once let go
        std::string path;         // to read it again; empty: kept for good
        Clock::time_point release_at{};
    };

    void send(const std::string& identity, bus::v1::Envelope envelope,
              std::vector<zmq::message_t> frames = {});
    void send_role(bus::v1::Role role, const bus::v1::Envelope& envelope);
    void send_cancels(TorrentId torrent, const std::vector<Cancel>& cancels);
    void send_tracker_stats(const TorrentState& torrent, bus::v1::TrackerStats::Event event);
    // TorrentAdded (and TorrentInfo for the roles that need it) to one stage.
    void tell_stage(const std::string& identity, bus::v1::Role role, const TorrentState& torrent,
                    Clock::time_point now);
    void tell_all(const TorrentState& torrent, Clock::time_point now);
    static bus::v1::Envelope files_wanted_message(const TorrentState& torrent);
    static std::vector<zmq::message_t> files_wanted_frames(const TorrentState& torrent);
    void tell_removed(TorrentId id, bool delete_data);
    bool info_frame(TorrentId id, zmq::message_t& out, Clock::time_point now);
    void notice(Notice::Kind kind, TorrentId torrent, std::string text);

    Result<Added> add_magnet(AddRequest request, Clock::time_point now, std::int64_t wall_now);
    // The id a new torrent gets (the one asked for, if free), its download folder checked
    // and its added date set.
    Result<TorrentId> take_id(AddRequest& request, std::int64_t wall_now);
    TorrentOptions options_for(TorrentId id) const;
    void on_metadata_found(const bus::v1::MetadataFound& found, std::vector<zmq::message_t>& frames,
                           Clock::time_point now);
    void on_hello(const std::string& identity, const bus::v1::Hello& hello, Clock::time_point now);
    void on_stage_lost(const Stage& stage);
    // The DHT node's UDP port changed (its heartbeat, or it left): the workers are told.
    void set_dht_port(std::uint16_t port);
    void lose_verifier();
    void lose_writer();
    void free_all_delivered_slots();
    void on_heartbeat(Stage& stage, const bus::v1::Heartbeat& beat, Clock::time_point now);
    void on_work_request(const std::string& identity, const bus::v1::WorkRequest& request,
                         Clock::time_point now);
    void on_slots_freed(const Stage& from, bus::v1::Envelope& envelope);
    void on_piece_failed(const bus::v1::PieceFailed& failed, Clock::time_point now);
    void apply_ban(const Ban& ban, TorrentId found_in);
    void check_stalls(Clock::time_point now);
    void on_write_failed(const bus::v1::WriteFailed& failed, Clock::time_point now);
    void on_resume_state(const bus::v1::ResumeState& resume, std::vector<zmq::message_t>& frames,
                         Clock::time_point now);
    void on_tracker_status(const bus::v1::TrackerStatus& status);
    void on_peer_stats(const std::string& worker, const bus::v1::PeerStats& stats, Clock::time_point now);
    void send_choke_changes(TorrentId torrent, const std::vector<ChokeChange>& changes);
    // The whole set of pieces a worker may announce and serve (after a start or a verify).
    bus::v1::Envelope pieces_available_message(const TorrentState& torrent, std::vector<zmq::message_t>& frames) const;
    void send_pieces_available(const TorrentState& torrent, const std::string* only_worker = nullptr);
    void send_rate_budgets();
    void enforce_seed_limits();
    void after_change(TorrentState& torrent, Clock::time_point now);
    // Dials the peers due. `all`: every torrent; otherwise only the busy ones.
    void assign_peers(Clock::time_point now, bool all);
    // Fetching metadata or pieces, checking, or with peers: something may be due within a
    // turn. The others (seeding alone, stopped) are walked once a second.
    static bool busy(const TorrentState& torrent);

    SessionConfig config_;
    GrantCounter grants_;
    PeerJudge judge_;
    StageRegistry stages_;
    std::map<TorrentId, TorrentState> torrents_;
    std::map<TorrentId, InfoBytes> info_;
    std::uint32_t next_id_ = 1;
    std::set<bus::v1::Role> roles_joined_;  // see on_hello
    std::set<std::string> strangers_;       // identities that never said Hello
    // Per worker, its latest per-torrent counters: transfers are counted by their growth.
    std::map<std::string, std::map<TorrentId, bus::v1::TorrentCounters>> worker_counters_;
    std::vector<Outgoing> outbox_;
    std::vector<Notice> notices_;
    std::set<TorrentId> changed_;
    bool session_changed_ = false;
    std::vector<Sha1Digest> removed_;
    std::vector<Fetched> fetched_;
    std::uint16_t dht_port_ = 0;
    std::set<std::string> noticed_;  // warnings and errors: each said once
    std::uint64_t downloaded_this_run_ = 0;
    std::uint64_t uploaded_this_run_ = 0;
    std::int64_t wall_now_ = 0;
    std::optional<double> seed_ratio_;
    std::uint64_t max_upload_rate_ = 0;
    std::uint64_t max_download_rate_ = 0;
    // Per worker: its latest totals and the rates derived from them, for the rate split.
    struct WorkerUse {
        std::uint64_t uploaded = 0;
        std::uint64_t downloaded = 0;
        Clock::time_point at{};
        double upload_rate = 0;
        double download_rate = 0;
        std::uint32_t listen_port = 0;
        bool reported = false;
        std::string last_budget;  // serialized: sent again only when it changes
    };
    std::map<std::string, WorkerUse> worker_use_;
    Clock::time_point next_budget_{};
    Clock::time_point next_heartbeat_{};
    Clock::time_point next_tracker_stats_{};
    Clock::time_point next_stall_check_{};
    Clock::time_point next_walk_all_{};
};

}  // namespace pw::orchestrator
