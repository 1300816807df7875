#pragma once
// The session's torrents as they outlive a run, in the state folder:
//   torrents/<info-hash hex>.torrent   the metainfo as added (read again by the session when a
//                                      stage must be told a torrent's info dictionary)
//   torrents/<info-hash hex>.magnet    a magnet link added, until its metadata is fetched and
//                                      saved as the .torrent (BEP 9)
//   torrents/<info-hash hex>.state     its id, settings and totals (bencoded)
//   session.state                      the session's own settings and totals
// Every file is replaced atomically, so after SIGTERM or kill -9 the same daemon command finds
// the same list: what the pieces on disk are is the writer's resume records' business.
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "core/result.hpp"
#include "core/sha1.hpp"
#include "core/units.hpp"
#include "orchestrator/torrent_state.hpp"

namespace pw::orchestrator {

// The session's own settings (session-get/session-set) and lifetime totals.
struct SessionSettings {
    std::string download_dir;  // absolute: where torrents go unless told otherwise
    std::uint32_t speed_limit_down_kbps = 100;
    bool speed_limit_down_enabled = false;
    std::uint32_t speed_limit_up_kbps = 100;
    bool speed_limit_up_enabled = false;
    std::uint32_t peer_limit_global = 200;
    std::uint32_t peer_limit_per_torrent = 50;
    double seed_ratio_limit = 2.0;
    bool seed_ratio_limited = false;
    // Totals over every run (session-stats' cumulative-stats).
    std::uint64_t downloaded_ever = 0;
    std::uint64_t uploaded_ever = 0;
    std::uint64_t files_added = 0;
    std::uint64_t seconds_active = 0;
    std::uint64_t session_count = 0;
    // Ids are never given twice within one state folder: a client holding an old id must not
    // reach a new torrent with it.
    std::uint32_t next_torrent_id = 1;
};

// Pure: the saved forms and back. Decoding refuses what is not exactly such a record.
std::string encode_torrent_state(TorrentId id, std::string_view name, const TorrentSettings& settings);
struct SavedTorrentState {
    TorrentId id;
    std::string name;
    TorrentSettings settings;
};
Result<SavedTorrentState> decode_torrent_state(std::string_view bytes);
std::string encode_session_settings(const SessionSettings& settings);
Result<SessionSettings> decode_session_settings(std::string_view bytes);

class SessionStore {
public:
    // Creates the folder (and torrents/ in it) when missing. Throws std::runtime_error when
    // it cannot (a start-up failure).
    explicit SessionStore(std::string state_dir);

    const std::string& dir() const { return dir_; }

    struct Saved {
        TorrentId id;
        std::string metainfo;       // the .torrent's bytes, or the magnet link
        std::string metainfo_path;
        TorrentSettings settings;
    };
    // Every saved torrent, by id. An entry that cannot be read is skipped, with a line in
    // `problems` (never the whole list lost for one bad file).
    std::vector<Saved> load(std::vector<std::string>& problems);

    // The path the metainfo of `info_hash` is (or would be) saved at.
    std::string metainfo_path(const Sha1Digest& info_hash) const;
    // Saves the metainfo bytes (once: they never change for an info-hash), and deletes the
    // magnet saved for it.
    Status save_metainfo(const Sha1Digest& info_hash, std::string_view bytes) const;
    std::string magnet_path(const Sha1Digest& info_hash) const;
    Status save_magnet(const Sha1Digest& info_hash, std::string_view uri) const;
    // Writes (and syncs) the torrent's state file only when its bytes differ from what this
    // store last wrote or read for it: a session of hundreds of idle torrents saves each
    // every period, and a rewrite and fsync of each unchanged file is what kept an idle
    // daemon off its floor of CPU.
    Status save_state(const TorrentState& torrent);
    // Deletes what was saved for the torrent.
    void forget(const Sha1Digest& info_hash);

    std::optional<SessionSettings> load_session(std::string& problem) const;
    Status save_session(const SessionSettings& settings) const;

private:
    std::string dir_;
    std::string torrents_dir_;
    std::unordered_map<std::string, std::string> written_;  // state file name -> its bytes
};

}  // namespace pw::orchestrator
