#pragma once
// One torrent of the session: what it is (its info-hash, and its info dictionary once known),
// what the user asked of it (its settings), and where it stands (pieces, leases, peers,
// progress, errors). A plain object: no sockets, the time is passed in, and what must reach
// the stages comes back as values (cancels, bans, peer assignments) for the session to send.
//
// Phases:
//   stopped  -- the stages know nothing of it; nothing moves.
//   metadata -- started while known by its info-hash alone (a magnet): its peers fetch the
//               info dictionary (BEP 9); then it goes on to checking, its peers kept.
//   checking -- started: the stages were told, and the writer's ResumeState (what is on disk)
//               is awaited before any piece is leased, so a piece on disk is never fetched.
//   verifying -- the writer hashes every piece again (torrent-verify); nothing is leased.
//   downloading, seeding (every piece on disk).
//   failed   -- stopped by an error the user must see (the disk refused our writes).
#include <chrono>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "core/metainfo.hpp"
#include "core/result.hpp"
#include "core/sha1.hpp"
#include "core/units.hpp"
#include "orchestrator/choker.hpp"
#include "orchestrator/peer_directory.hpp"
#include "orchestrator/progress.hpp"
#include "orchestrator/scheduler.hpp"

namespace pw::orchestrator {

enum class TorrentPhase { stopped, metadata, checking, verifying, downloading, seeding, failed };

const char* phase_name(TorrentPhase phase);

// What the user chose, and what outlives a run: saved in the session's state folder.
struct TorrentSettings {
    std::string download_dir;  // absolute
    bool paused = false;
    std::int64_t added_date = 0;  // unix seconds
    std::int64_t done_date = 0;   // unix seconds; 0: never completed
    std::int64_t activity_date = 0;
    std::uint64_t downloaded_ever = 0;  // payload bytes from peers, over every run
    std::uint64_t uploaded_ever = 0;
    std::uint64_t corrupt_ever = 0;     // bytes of pieces that failed their hash check
    // Bandwidth: kept and reported over the RPC now; the rate limiter comes with uploads.
    std::uint32_t download_limit_kbps = 100;
    bool download_limited = false;
    std::uint32_t upload_limit_kbps = 100;
    bool upload_limited = false;
    bool honors_session_limits = true;
    double seed_ratio_limit = 2.0;
    int seed_ratio_mode = 0;  // 0: the session's, 1: this torrent's, 2: unlimited
    std::uint32_t peer_limit = 50;
    int bandwidth_priority = 0;
    // The user's choice of files, by their number as `inspect` and the RPC list them (pad
    // files left out). Empty: every file wanted; a shorter list: the rest are wanted.
    std::vector<bool> file_unwanted;
    // -1 low, 0 normal, 1 high, by the same numbers; empty or shorter: normal.
    std::vector<std::int8_t> file_priority;
    bool sequential = false;  // pieces in order, with a readahead window (piece_picker.hpp)
};

struct TorrentOptions {
    SchedulerOptions scheduler;
    PeerDirectoryOptions directory;
    GrantCounter* grants = nullptr;  // the session's: lease ids unique across torrents
    unsigned max_write_failures_in_a_row = 10;
    std::uint32_t upload_slots = 4;  // regular upload slots (the choker adds one optimistic)
    std::chrono::milliseconds write_retry_delay{1'000};
};

// A tracker's latest outcome, for the RPC's trackerStats.
struct TrackerReport {
    std::string url;
    std::uint32_t tier = 0;
    bool answered = false;      // an announce has been answered at least once
    bool last_ok = false;
    std::string last_result;    // "Success" or the tracker's (or our) message
    std::int64_t last_time = 0; // unix seconds
    std::int64_t next_time = 0;
    std::uint32_t last_peers = 0;
};

// `--select-file`'s list ("1,3-5": numbers from 1 as `inspect` lists the files, ranges
// inclusive, like aria2c's) to the unwanted flag of each of `files` files.
Result<std::vector<bool>> parse_file_selection(std::string_view spec, std::size_t files);

class TorrentState {
public:
    using Clock = std::chrono::steady_clock;

    // Known by info-hash; `name` stands in until the info dictionary says otherwise.
    TorrentState(TorrentId id, const Sha1Digest& info_hash, std::string name,
                 std::vector<std::vector<std::string>> trackers, TorrentSettings settings,
                 TorrentOptions options);

    // --- what it is ---
    TorrentId id() const { return id_; }
    const Sha1Digest& info_hash() const { return info_hash_; }
    const std::string& name() const { return name_; }
    const std::vector<std::vector<std::string>>& trackers() const { return trackers_; }
    // The parsed info dictionary (piece hashes forgotten); null while only the hash is known.
    const Torrent* info() const { return info_ ? &*info_ : nullptr; }
    // `info` must have this torrent's info-hash (the session checks it). The layout (files,
    // pieces) comes from here; the caller keeps the dictionary's bytes for the stages.
    void set_info(Torrent info);
    TorrentSettings& settings() { return settings_; }
    const TorrentSettings& settings() const { return settings_; }

    // --- which files, in which order ---
    // The files as the user numbers them (from 0): pad files left out. 0 until the info is known.
    std::size_t listed_file_count() const { return listed_.size(); }
    // The info dictionary's index of listed file `listed`.
    std::size_t info_file_index(std::size_t listed) const { return listed_.at(listed); }
    bool file_wanted(std::size_t listed) const;
    int file_priority(std::size_t listed) const;  // -1, 0, 1
    // Wants (or not) and/or prioritizes the listed files (an empty list: every file). False,
    // and nothing changed, when a number is past the files. Takes effect at once: the picker
    // is told, and a torrent whose wanted pieces are all on disk becomes seeding (or
    // downloading again when more is wanted); the session tells the writer (unwanted_files).
    bool choose_files(const std::vector<std::uint32_t>& listed, std::optional<bool> wanted,
                      std::optional<int> priority, Clock::time_point now);
    void set_sequential(bool on);
    // By the info dictionary's file index: 1 for a file nobody wants (pad files 0). For the
    // writer's FilesWanted.
    std::string unwanted_files_bits() const;
    // Whether any piece touches a wanted file.
    bool piece_wanted(PieceIndex piece) const;

    // --- lifecycle ---
    TorrentPhase phase() const { return phase_; }
    // The stages are being told about it: wait for the writer's ResumeState, or, without an
    // info dictionary, for its peers to fetch one. False (and nothing changes) when it is
    // running already.
    bool start(Clock::time_point now);
    // The info dictionary fetched from peers (the session checked its hash): a torrent in
    // the metadata phase goes on to checking with the peers it has. False when it had one.
    bool got_info(Torrent info, Clock::time_point now);
    // The stages forget it: every lease and peer assignment goes, what is on disk stays.
    void stop();
    // Hash everything on disk again; false when not running.
    bool begin_verify();
    // The error that failed it ("" when none).
    const std::string& error() const { return error_; }
    bool active() const {
        return phase_ != TorrentPhase::stopped && phase_ != TorrentPhase::failed;
    }

    // --- what the writer says ---
    // The pieces on disk. The first ResumeState after a start, and one with `checked_all`,
    // is the truth (pieces counted done and missing from it are fetched again); any other
    // (a restarted writer's) is merged, never un-marking a piece. Returns the number of
    // pieces on disk it named, or nullopt for a bitfield of the wrong length.
    std::optional<std::uint32_t> on_resume_state(std::span<const std::uint8_t> bits,
                                                 bool checked_all, Clock::time_point now,
                                                 std::vector<Cancel>& cancels);
    void on_written(PieceIndex piece, std::vector<Cancel>& cancels, Clock::time_point now);
    // Returns the error line when this failure is the one that makes the torrent give up.
    std::optional<std::string> on_write_failed(PieceIndex piece, const std::string& error,
                                               Clock::time_point now);

    // --- what the verifier says ---
    void on_verified(PieceIndex piece, std::uint64_t lease_id, std::vector<Cancel>& cancels);
    // Returns who sent it, for the judge (see PeerJudge::piece_failed).
    std::vector<PeerIdentity> on_failed(PieceIndex piece, std::uint64_t lease_id,
                                        const std::vector<std::string>& contributors);
    void on_dropped(PieceIndex piece, std::uint64_t lease_id);

    // --- what the workers say ---
    void on_delivered(std::uint64_t lease_id);
    void on_released(std::uint64_t lease_id);
    void on_peer_connected(const std::string& peer, const std::string& peer_id = {});
    void on_peer_gone(const std::string& peer, Clock::time_point now, bool seed = false);
    // False for a malformed bitfield or out-of-range haves (logged by the caller).
    bool on_peer_has(const std::string& peer, bool have_all, std::span<const std::uint8_t> bitfield,
                     bool has_bitfield, std::span<const std::uint32_t> haves);
    // Pieces for `worker` to fetch from `peer`; none while checking or verifying.
    std::vector<Grant> request(const std::string& worker, const std::string& peer,
                               std::size_t count, Clock::time_point now);
    void on_worker_gone(const std::string& worker);
    void on_verifier_lost();
    void on_writer_lost();

    // --- uploads ---
    Choker& choker() { return choker_; }
    const Choker& choker() const { return choker_; }
    // The done pieces in the wire's bitfield layout (piece 0 is the high bit of byte 0).
    std::string done_bitfield() const;
    // The first ResumeState since the start came: the stages may be told what we have.
    bool resumed() const { return resumed_since_start_; }
    double upload_rate() const { return upload_rate_.rate(); }
    std::uint64_t uploaded_this_run() const { return uploaded_this_run_; }
    // Shared: uploaded over every run, against what the torrent cost to get (at least its size).
    double ratio() const;
    // When it became complete in this run (seeding since), if it did.
    std::optional<Clock::time_point> seeding_since() const { return seeding_since_; }
    // Seeding ended by its ratio or time limit (Transmission's "finished"): stopped, and not
    // to be started again by the session on its own.
    bool finished() const { return finished_; }
    void finish();

    // --- peers ---
    PeerDirectory& directory() { return directory_; }
    const PeerDirectory& directory() const { return directory_; }
    void offer_peer(const PeerAddress& peer) { directory_.offer(peer); }
    std::size_t ban(const Ban& ban) { return directory_.ban(ban); }
    // Why it is not moving, if it is not (see StallWatch); true when an early announce is due.
    bool update_stall(Clock::time_point now);
    const StallWatch& stall() const { return stall_; }

    // --- time ---
    // Write retries and rates; call every turn of the loop.
    void tick(Clock::time_point now);
    // Expired leases: their pieces go back, their workers are told to cancel. Linear in the
    // leases outstanding: call about once a second.
    std::vector<Cancel> expire(Clock::time_point now);

    // --- progress ---
    std::uint32_t piece_count() const { return info_ ? info_->piece_count() : 0; }
    std::uint64_t total_size() const { return info_ ? info_->total_size() : 0; }
    std::uint64_t done_bytes() const { return done_bytes_; }
    // The pieces that touch a wanted file (a piece straddling a wanted and an unwanted file
    // counts whole: it is fetched whole): Transmission's sizeWhenDone, and what is done of it.
    std::uint64_t size_when_done() const { return wanted_bytes_; }
    std::uint64_t wanted_done_bytes() const { return wanted_done_bytes_; }
    // Wanted bytes still missing: the tracker's `left`, leftUntilDone, the ETA.
    std::uint64_t left() const { return wanted_bytes_ - wanted_done_bytes_; }
    std::uint32_t pieces_done() const { return pieces_done_; }
    bool is_done(PieceIndex piece) const;
    // Every wanted piece on disk: "done" (seeding what it has).
    bool complete() const { return info_ && wanted_done_pieces_ == wanted_pieces_; }
    // Every piece on disk, wanted or not.
    bool has_all() const { return info_ && pieces_done_ == info_->piece_count(); }
    // True once after the torrent became complete (every piece on disk): the session dates
    // it and tells the trackers.
    bool take_completed() { return std::exchange(just_completed_, false); }
    // Bytes written this run beyond those on disk at the start: what the progress rate counts.
    std::uint64_t fetched_this_run() const { return done_bytes_ - resumed_bytes_; }
    double progress_rate() const { return progress_rate_.rate(); }
    // Payload from and to peers, as the workers count it.
    void add_transferred(std::uint64_t downloaded, std::uint64_t uploaded, Clock::time_point now);
    std::uint64_t downloaded_this_run() const { return downloaded_this_run_; }
    double download_rate() const { return wire_rate_.rate(); }
    std::uint32_t peers_connected() const { return peers_connected_; }
    void set_peers_connected(std::uint32_t peers) { peers_connected_ = peers; }
    const Scheduler* scheduler() const { return scheduler_ ? &*scheduler_ : nullptr; }

    // --- trackers ---
    // `wall_now`: unix seconds, to date the report.
    void on_tracker_status(const std::string& url, bool ok, const std::string& message,
                           std::uint32_t peers, std::uint32_t next_announce_s,
                           std::int64_t wall_now);
    const std::vector<TrackerReport>& tracker_reports() const { return tracker_reports_; }
    // Completion has been told to the trackers; true once one answered since.
    bool completion_announced() const { return completion_announced_; }
    void set_completion_sent() { completion_sent_ = true; }
    bool completion_sent() const { return completion_sent_; }

private:
    void mark_written(PieceIndex piece, std::vector<Cancel>& cancels, Clock::time_point now);
    void become_complete_if_done(Clock::time_point now);
    // Levels and wanted counts from the settings' choice; the picker told when running.
    void apply_selection(Clock::time_point now);
    void count_done(std::uint32_t piece, bool done);

    TorrentId id_;
    Sha1Digest info_hash_;
    std::string name_;
    std::vector<std::vector<std::string>> trackers_;
    TorrentSettings settings_;
    TorrentOptions options_;
    std::optional<Torrent> info_;

    TorrentPhase phase_ = TorrentPhase::stopped;
    std::string error_;
    std::optional<Scheduler> scheduler_;  // while active
    PeerDirectory directory_;
    bool resumed_since_start_ = false;
    // Done pieces survive a stop: the progress shown while stopped, and what a start counts
    // from until the writer's ResumeState says otherwise.
    std::vector<bool> done_;
    std::uint32_t pieces_done_ = 0;
    std::uint64_t done_bytes_ = 0;
    std::uint64_t resumed_bytes_ = 0;
    std::vector<std::size_t> listed_;       // listed file -> info file index
    std::vector<std::uint8_t> levels_;      // per piece, PiecePicker's levels (0: not wanted)
    std::uint32_t wanted_pieces_ = 0;
    std::uint32_t wanted_done_pieces_ = 0;
    std::uint64_t wanted_bytes_ = 0;
    std::uint64_t wanted_done_bytes_ = 0;
    unsigned write_failures_in_a_row_ = 0;
    std::vector<std::pair<Clock::time_point, PieceIndex>> write_retries_;

    RateMeter progress_rate_;
    RateMeter wire_rate_;
    std::uint64_t downloaded_this_run_ = 0;
    std::uint64_t uploaded_this_run_ = 0;
    RateMeter upload_rate_;
    Choker choker_;
    std::optional<Clock::time_point> seeding_since_;
    bool finished_ = false;
    std::uint32_t peers_connected_ = 0;
    Clock::time_point next_rate_sample_{};

    std::vector<TrackerReport> tracker_reports_;
    StallWatch stall_;
    bool just_completed_ = false;
    bool completion_sent_ = false;
    bool completion_announced_ = false;
};

}  // namespace pw::orchestrator
