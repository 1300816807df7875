#pragma once
// Transmission's RPC protocol (its docs/rpc-spec.md, rpc-version 17), the pure half: requests
// parsed into typed methods, and what the session knows rendered back as Transmission's JSON
// replies. No I/O; orchestrator/rpc_server does the HTTP side, the session does the work.
//
// Transmission tools are picky about JSON types (transmission-remote drops a row or a whole
// block when an integer arrives as a double), so every field below is rendered with the type
// transmission-daemon 3.00 sends: integers as JSON integers, doubles as JSON doubles, flags as
// booleans (the per-file "wanted" list as 0/1, as 3.00 does).
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "core/result.hpp"
#include "core/sha1.hpp"

namespace pw::rpc {

// --- Requests ---

struct RequestLimits {
    // Largest request body: a base64 .torrent of a few MB fits with room to spare.
    std::size_t max_body = 32u << 20;
    // Arrays and objects nested deeper than this are refused while parsing, before anything
    // deeper is built (so neither parsing nor destroying the value recurses far).
    std::size_t max_depth = 64;
    // JSON values (and object keys) in one request: bounds the memory of the parsed value,
    // whatever the body's shape (16 M one-digit numbers fit in 32 MiB).
    std::size_t max_values = 1'000'000;
    // Elements of one array argument: ids, fields, file indices, labels, trackers.
    std::size_t max_array = 100'000;
    // Bytes of one string argument, but for "metainfo" (bounded by max_body).
    std::size_t max_string = 64u << 10;
};

// Which torrents a request is about (rpc-spec 3.1).
struct TorrentIds {
    enum class Scope : std::uint8_t {
        all,              // "ids" absent
        listed,           // an id, or an array of ids and/or info-hashes ([] lists none)
        recently_active,  // "recently-active": what the session counts as recently active
    };
    Scope scope = Scope::all;
    std::vector<std::uint32_t> ids;    // listed: sorted, no duplicates (ids are never 0)
    std::vector<Sha1Digest> hashes;    // listed: sorted, no duplicates (from 40 hex digits)

    // Whether the torrent with this id and info-hash is selected; the session says whether
    // it counts as recently active (Transmission: active within the last minute).
    bool matches(std::uint32_t id, const Sha1Digest& hash, bool recently_active) const;
};

enum class Encryption : std::uint8_t { required, preferred, tolerated };
std::string_view to_string(Encryption encryption);

// File indices for files-wanted, files-unwanted and priority-*: nullopt when the argument is
// absent; an empty vector means every file (rpc-spec 3.2). Indices are not checked against a
// torrent (the parser knows none): the session refuses those past its file count.
using FileIndices = std::optional<std::vector<std::uint32_t>>;

// tr_priority_t: bandwidthPriority of a torrent, and each file's priority.
enum class Priority : std::int8_t { low = -1, normal = 0, high = 1 };
// tr_ratiolimit and tr_idlelimit: use the session's limit, this torrent's own, or none.
enum class LimitMode : std::uint8_t { global = 0, single = 1, unlimited = 2 };

struct SessionGet {
    std::vector<std::string> fields;  // empty: every field
};

// Every member is set only when the request carries it. Speeds are in kB/s (1000 bytes), as
// Transmission counts them.
struct SessionSet {
    std::optional<std::string> download_dir;  // an absolute path
    std::optional<std::int64_t> speed_limit_down_kbps;
    std::optional<bool> speed_limit_down_enabled;
    std::optional<std::int64_t> speed_limit_up_kbps;
    std::optional<bool> speed_limit_up_enabled;
    std::optional<std::int64_t> alt_speed_down_kbps;
    std::optional<std::int64_t> alt_speed_up_kbps;
    std::optional<bool> alt_speed_enabled;
    std::optional<std::int64_t> peer_limit_global;
    std::optional<std::int64_t> peer_limit_per_torrent;
    std::optional<double> seed_ratio_limit;
    std::optional<bool> seed_ratio_limited;
    std::optional<std::int64_t> idle_seeding_limit_minutes;
    std::optional<bool> idle_seeding_limit_enabled;
    std::optional<Encryption> encryption;
    std::optional<std::uint16_t> peer_port;
    std::optional<bool> start_added_torrents;
    std::optional<bool> dht_enabled;
    std::optional<bool> pex_enabled;
    std::optional<bool> lpd_enabled;
    std::optional<bool> utp_enabled;
    std::optional<bool> port_forwarding_enabled;
    // Argument names this parser does not model (Transmission ignores unknown ones; the
    // session may too, or refuse them rather than claim success). At most 64 are kept.
    std::vector<std::string> ignored_keys;
};

struct SessionStats {};
struct SessionClose {};
struct PortTest {};

struct FreeSpace {
    std::string path;  // absolute
};

struct TorrentAdd {
    enum class Source : std::uint8_t {
        metainfo,  // "metainfo": the .torrent's bytes, base64-decoded into `data`
        path,      // "filename": an absolute path to a .torrent on the daemon's machine
        magnet,    // "filename": a magnet URI ("magnet:?..."), kept as text
        url,       // "filename": an http(s) URL of a .torrent, kept as text
    };
    Source source = Source::metainfo;
    std::string data;  // the decoded bytes, the path, the magnet URI or the URL
    std::optional<bool> paused;
    std::optional<std::string> download_dir;  // an absolute path
    FileIndices files_wanted;
    FileIndices files_unwanted;
    FileIndices priority_high;
    FileIndices priority_normal;
    FileIndices priority_low;
    std::optional<std::int64_t> peer_limit;
    std::optional<Priority> bandwidth_priority;
    // sequentialDownload (Transmission 4.1: sequential_download): pieces in order.
    std::optional<bool> sequential_download;
    std::optional<std::vector<std::string>> labels;
    std::optional<std::string> cookies;
    std::vector<std::string> ignored_keys;
};

enum class Format : std::uint8_t { objects, table };

struct TorrentGet {
    TorrentIds ids;
    std::vector<std::string> fields;  // required by the protocol; unknown names are ignored
    Format format = Format::objects;
};

struct TorrentAction {
    enum class Kind : std::uint8_t { start, start_now, stop, verify, reannounce };
    Kind kind = Kind::start;
    TorrentIds ids;
};

struct TorrentRemove {
    TorrentIds ids;
    bool delete_local_data = false;
};

struct TorrentSet {
    TorrentIds ids;
    std::optional<std::int64_t> download_limit_kbps;
    std::optional<bool> download_limited;
    std::optional<std::int64_t> upload_limit_kbps;
    std::optional<bool> upload_limited;
    std::optional<bool> honors_session_limits;
    std::optional<double> seed_ratio_limit;
    std::optional<LimitMode> seed_ratio_mode;
    std::optional<std::int64_t> seed_idle_limit_minutes;
    std::optional<LimitMode> seed_idle_mode;
    std::optional<std::int64_t> peer_limit;
    std::optional<Priority> bandwidth_priority;
    std::optional<std::int64_t> queue_position;
    FileIndices files_wanted;
    FileIndices files_unwanted;
    FileIndices priority_high;
    FileIndices priority_normal;
    FileIndices priority_low;
    std::optional<bool> sequential_download;  // sequentialDownload / sequential_download
    std::optional<std::vector<std::string>> labels;
    std::optional<std::string> location;  // an absolute path
    std::optional<std::vector<std::string>> tracker_add;
    std::optional<std::vector<std::int64_t>> tracker_remove;
    std::vector<std::string> ignored_keys;
};

using Method = std::variant<SessionGet, SessionSet, SessionStats, SessionClose, PortTest, FreeSpace,
                            TorrentAdd, TorrentGet, TorrentAction, TorrentRemove, TorrentSet>;

// A body that is a JSON object. Its method may still be unusable (an unknown method name, a
// missing or wrongly typed argument, a bad tag): then `method` holds the error whose message
// becomes the reply's "result", sent with the tag when there is one (HTTP 200, as
// Transmission does).
struct Request {
    std::optional<std::int64_t> tag;  // echoed in the reply
    Result<Method> method;
};

// Parses one request body. An Error here means the body is not a request at all: larger than
// limits.max_body, not JSON, not a JSON object, nested deeper than limits.max_depth or holding
// more than limits.max_values values (the server answers those with HTTP 400 before the
// session sees them; see check_request_body). Never throws for any input.
Result<Request> parse_request(std::string_view body, const RequestLimits& limits = {});

// The checks behind parse_request's Error, without building anything: what the HTTP threads
// run before handing a body to the session's loop. ok() exactly when parse_request(body) is.
Status check_request_body(std::string_view body, const RequestLimits& limits = {});

// --- Replies ---

// Transmission's status numbers.
enum class TorrentStatus : std::uint8_t {
    stopped = 0,
    check_wait = 1,
    checking = 2,
    download_wait = 3,
    downloading = 4,
    seed_wait = 5,
    seeding = 6,
};

// tr_stat's error: what errorString is about.
enum class TorrentError : std::uint8_t { none = 0, tracker_warning = 1, tracker_error = 2, local = 3 };

// Transmission's sentinels for uploadRatio and eta.
inline constexpr double kRatioNotAvailable = -1.0;  // nothing downloaded or uploaded yet
inline constexpr double kRatioInfinite = -2.0;      // uploaded without downloading
inline constexpr std::int64_t kEtaNotAvailable = -1;
inline constexpr std::int64_t kEtaUnknown = -2;

struct FileView {
    std::string name;  // path below the download dir, '/'-separated ("Torrent/dir/file")
    std::int64_t length = 0;
    std::int64_t bytes_completed = 0;
    bool wanted = true;
    Priority priority = Priority::normal;
};

// A tracker, with what the session knows about its announces and scrapes (trackerStats).
struct TrackerView {
    std::int64_t id = 0;  // stable within the torrent
    std::string announce;
    std::string scrape;   // "" when the tracker has no scrape URL
    std::string host;     // "scheme://host:port", what transmission-remote -it prints
    std::string sitename;
    std::int64_t tier = 0;
    bool is_backup = false;
    // tr_tracker_state: 0 inactive, 1 waiting, 2 queued, 3 active.
    std::int64_t announce_state = 0;
    std::int64_t scrape_state = 0;
    bool has_announced = false;
    bool has_scraped = false;
    std::int64_t last_announce_peer_count = 0;
    std::string last_announce_result;
    std::int64_t last_announce_start_time = 0;  // unix seconds; 0 = never
    bool last_announce_succeeded = false;
    std::int64_t last_announce_time = 0;
    bool last_announce_timed_out = false;
    std::string last_scrape_result;
    std::int64_t last_scrape_start_time = 0;
    bool last_scrape_succeeded = false;
    std::int64_t last_scrape_time = 0;
    bool last_scrape_timed_out = false;
    std::int64_t next_announce_time = 0;
    std::int64_t next_scrape_time = 0;
    std::int64_t seeder_count = -1;  // -1: unknown
    std::int64_t leecher_count = -1;
    std::int64_t download_count = -1;
};

struct PeerView {
    std::string address;  // IP literal
    std::uint16_t port = 0;
    std::string client_name;
    std::string flag_str;  // Transmission's letters: "D" downloading from, "U" uploading to, ...
    double progress = 0.0;  // 0..1, how much of the torrent the peer has
    std::int64_t rate_to_client = 0;  // B/s
    std::int64_t rate_to_peer = 0;    // B/s
    bool client_is_choked = true;
    bool client_is_interested = false;
    bool peer_is_choked = true;
    bool peer_is_interested = false;
    bool is_downloading_from = false;
    bool is_uploading_to = false;
    bool is_encrypted = false;
    bool is_incoming = false;
    bool is_utp = false;
};

// Where the connected peers came from (peersFrom).
struct PeersFromView {
    std::int64_t from_cache = 0;
    std::int64_t from_dht = 0;
    std::int64_t from_incoming = 0;
    std::int64_t from_lpd = 0;
    std::int64_t from_ltep = 0;
    std::int64_t from_pex = 0;
    std::int64_t from_tracker = 0;
};

// One torrent as torrent-get shows it. Byte counts are bytes, rates B/s, limits kB/s, dates
// unix seconds (0 = never), durations seconds. The comment after each member is its field name.
struct TorrentView {
    std::uint32_t id = 0;                       // id
    Sha1Digest hash{};                          // hashString (40 lowercase hex digits)
    std::string name;                           // name
    TorrentStatus status = TorrentStatus::stopped;  // status
    TorrentError error = TorrentError::none;    // error
    std::string error_string;                   // errorString
    bool is_finished = false;                   // isFinished: done and stopped for good (ratio)
    bool is_stalled = false;                    // isStalled
    bool is_private = false;                    // isPrivate
    double percent_done = 0.0;                  // percentDone: of the wanted bytes, 0..1
    double percent_complete = 0.0;              // percentComplete: of all bytes, 0..1
    double metadata_percent_complete = 1.0;     // metadataPercentComplete (magnets: < 1)
    double recheck_progress = 0.0;              // recheckProgress: 0..1 while checking
    std::int64_t total_size = 0;                // totalSize: every file
    std::int64_t size_when_done = 0;            // sizeWhenDone: the wanted files
    std::int64_t left_until_done = 0;           // leftUntilDone: wanted bytes still missing
    std::int64_t desired_available = 0;         // desiredAvailable: missing bytes peers have
    std::int64_t have_valid = 0;                // haveValid: verified bytes
    std::int64_t have_unchecked = 0;            // haveUnchecked: received, not verified yet
    std::int64_t corrupt_ever = 0;              // corruptEver: bytes that failed their hash
    std::int64_t downloaded_ever = 0;           // downloadedEver
    std::int64_t uploaded_ever = 0;             // uploadedEver
    double upload_ratio = kRatioNotAvailable;   // uploadRatio (or kRatio* sentinels)
    std::int64_t rate_download = 0;             // rateDownload
    std::int64_t rate_upload = 0;               // rateUpload
    std::int64_t eta = kEtaNotAvailable;        // eta: seconds, or kEta* sentinels
    std::int64_t eta_idle = kEtaNotAvailable;   // etaIdle
    std::int64_t peers_connected = 0;           // peersConnected
    std::int64_t peers_sending_to_us = 0;       // peersSendingToUs
    std::int64_t peers_getting_from_us = 0;     // peersGettingFromUs
    std::int64_t webseeds_sending_to_us = 0;    // webseedsSendingToUs
    std::int64_t added_date = 0;                // addedDate
    std::int64_t done_date = 0;                 // doneDate
    std::int64_t start_date = 0;                // startDate
    std::int64_t activity_date = 0;             // activityDate
    std::int64_t edit_date = 0;                 // editDate
    std::int64_t date_created = 0;              // dateCreated (from the .torrent)
    std::int64_t manual_announce_time = -1;     // manualAnnounceTime: -1 = not allowed yet
    std::int64_t seconds_downloading = 0;       // secondsDownloading
    std::int64_t seconds_seeding = 0;           // secondsSeeding
    std::string download_dir;                   // downloadDir
    std::string creator;                        // creator
    std::string comment;                        // comment
    std::string magnet_link;                    // magnetLink
    std::string torrent_file;                   // torrentFile: where the .torrent is kept
    std::int64_t piece_count = 0;               // pieceCount
    std::int64_t piece_size = 0;                // pieceSize
    std::string pieces;                         // pieces: the have-bitfield (wire layout), sent base64
    std::int64_t download_limit_kbps = 0;       // downloadLimit
    bool download_limited = false;              // downloadLimited
    std::int64_t upload_limit_kbps = 0;         // uploadLimit
    bool upload_limited = false;                // uploadLimited
    bool honors_session_limits = true;          // honorsSessionLimits
    double seed_ratio_limit = 2.0;              // seedRatioLimit
    LimitMode seed_ratio_mode = LimitMode::global;  // seedRatioMode
    std::int64_t seed_idle_limit_minutes = 30;  // seedIdleLimit
    LimitMode seed_idle_mode = LimitMode::global;   // seedIdleMode
    Priority bandwidth_priority = Priority::normal; // bandwidthPriority
    std::int64_t peer_limit = 50;               // peer-limit, maxConnectedPeers
    std::int64_t queue_position = 0;            // queuePosition
    std::vector<std::string> labels;            // labels
    std::vector<std::string> webseeds;          // webseeds
    std::vector<FileView> files;                // files, fileStats, priorities, wanted, file-count
    bool sequential_download = false;           // sequentialDownload, sequential_download
    std::vector<TrackerView> trackers;          // trackers, trackerStats
    std::vector<PeerView> peers;                // peers
    PeersFromView peers_from;                   // peersFrom
};

// session-get's fields. Transmission's defaults where piecework has no such setting.
struct SessionView {
    std::string version = "piecework";          // version
    std::int64_t rpc_version = 17;              // rpc-version
    std::int64_t rpc_version_minimum = 14;      // rpc-version-minimum
    std::string rpc_version_semver = "5.3.0";   // rpc-version-semver
    std::string session_id;                     // session-id: the server's X-Transmission-Session-Id
    std::string config_dir;                     // config-dir
    std::string download_dir;                   // download-dir
    std::optional<std::int64_t> download_dir_free_space;  // download-dir-free-space (deprecated)
    std::string incomplete_dir;                 // incomplete-dir
    bool incomplete_dir_enabled = false;        // incomplete-dir-enabled
    std::int64_t peer_port = 51413;             // peer-port
    bool peer_port_random_on_start = false;     // peer-port-random-on-start
    bool port_forwarding_enabled = false;       // port-forwarding-enabled
    bool dht_enabled = false;                   // dht-enabled
    bool pex_enabled = false;                   // pex-enabled
    bool lpd_enabled = false;                   // lpd-enabled
    bool utp_enabled = false;                   // utp-enabled
    Encryption encryption = Encryption::preferred;  // encryption
    std::int64_t cache_size_mb = 0;             // cache-size-mb
    std::int64_t speed_limit_down_kbps = 100;   // speed-limit-down
    bool speed_limit_down_enabled = false;      // speed-limit-down-enabled
    std::int64_t speed_limit_up_kbps = 100;     // speed-limit-up
    bool speed_limit_up_enabled = false;        // speed-limit-up-enabled
    std::int64_t alt_speed_down_kbps = 50;      // alt-speed-down
    std::int64_t alt_speed_up_kbps = 50;        // alt-speed-up
    bool alt_speed_enabled = false;             // alt-speed-enabled
    std::int64_t alt_speed_time_begin = 540;    // alt-speed-time-begin: minutes after midnight
    std::int64_t alt_speed_time_end = 1020;     // alt-speed-time-end
    std::int64_t alt_speed_time_day = 127;      // alt-speed-time-day: tr_sched_day bits
    bool alt_speed_time_enabled = false;        // alt-speed-time-enabled
    std::int64_t peer_limit_global = 200;       // peer-limit-global
    std::int64_t peer_limit_per_torrent = 50;   // peer-limit-per-torrent
    double seed_ratio_limit = 2.0;              // seedRatioLimit
    bool seed_ratio_limited = false;            // seedRatioLimited
    std::int64_t idle_seeding_limit_minutes = 30;  // idle-seeding-limit
    bool idle_seeding_limit_enabled = false;    // idle-seeding-limit-enabled
    bool start_added_torrents = true;           // start-added-torrents
    bool trash_original_torrent_files = false;  // trash-original-torrent-files
    bool rename_partial_files = false;          // rename-partial-files
    bool download_queue_enabled = false;        // download-queue-enabled
    std::int64_t download_queue_size = 5;       // download-queue-size
    bool seed_queue_enabled = false;            // seed-queue-enabled
    std::int64_t seed_queue_size = 10;          // seed-queue-size
    bool queue_stalled_enabled = false;         // queue-stalled-enabled
    std::int64_t queue_stalled_minutes = 30;    // queue-stalled-minutes
    bool blocklist_enabled = false;             // blocklist-enabled
    std::int64_t blocklist_size = 0;            // blocklist-size
    std::string blocklist_url;                  // blocklist-url
    bool script_torrent_done_enabled = false;   // script-torrent-done-enabled
    std::string script_torrent_done_filename;   // script-torrent-done-filename
    bool script_torrent_added_enabled = false;  // script-torrent-added-enabled
    std::string script_torrent_added_filename;  // script-torrent-added-filename
    // units: always kB = 1000 for speeds and sizes, KiB = 1024 for memory.
};

// session-stats: what this run did (current) and all runs together (cumulative).
struct TransferStatsView {
    std::int64_t uploaded_bytes = 0;
    std::int64_t downloaded_bytes = 0;
    std::int64_t files_added = 0;
    std::int64_t session_count = 1;
    std::int64_t seconds_active = 0;
};

struct SessionStatsView {
    std::int64_t active_torrent_count = 0;
    std::int64_t paused_torrent_count = 0;
    std::int64_t torrent_count = 0;
    std::int64_t download_speed = 0;  // B/s
    std::int64_t upload_speed = 0;    // B/s
    TransferStatsView current;
    TransferStatsView cumulative;
};

// Whether torrent-get knows a field name (the others are ignored, as Transmission does).
bool is_torrent_field(std::string_view name);
// Whether session-get knows a field name.
bool is_session_field(std::string_view name);

// One torrent as an object holding exactly the known fields among `fields`.
nlohmann::json torrent_object(const TorrentView& torrent, std::span<const std::string> fields);
// torrent-get's arguments: {"torrents": [...]} in the request's format, holding the request's
// known fields (each once, in the request's order for tables), plus {"removed": [ids]} when
// `removed` is given (the reply to "recently-active").
nlohmann::json torrent_get_arguments(const TorrentGet& request, std::span<const TorrentView> torrents,
                                     const std::vector<std::uint32_t>* removed = nullptr);
// torrent-add's arguments: {"torrent-added": {id, name, hashString}}, or "torrent-duplicate"
// when the torrent was already there.
nlohmann::json torrent_added_arguments(const TorrentView& torrent, bool duplicate);
// session-get's arguments: the known fields among `fields`, or all of them when it is empty.
nlohmann::json session_arguments(const SessionView& session, std::span<const std::string> fields = {});
nlohmann::json session_stats_arguments(const SessionStatsView& stats);
// free-space: the path as asked, its free bytes and (rpc 17) the file system's size.
nlohmann::json free_space_arguments(std::string_view path, std::int64_t size_bytes, std::int64_t total_size);
nlohmann::json port_test_arguments(bool port_is_open);

// The reply bodies: {"arguments": ..., "result": "success", "tag": N} and {"arguments": {},
// "result": message, "tag": N}; no "tag" when the request had none. Strings that are not
// valid UTF-8 (a torrent's file names may be anything) are sent with U+FFFD in their place.
std::string render_success(std::optional<std::int64_t> tag, const nlohmann::json& arguments);
std::string render_success(std::optional<std::int64_t> tag);  // empty arguments
std::string render_error(std::optional<std::int64_t> tag, std::string_view message);

// --- Helpers shared with the HTTP side ---

// RFC 4648 base64 with padding.
std::string encode_base64(std::string_view bytes);
// Decodes base64, skipping ASCII whitespace (line-wrapped encoders) and accepting missing
// padding; nullopt for any other character, misplaced padding or a dangling final symbol.
std::optional<std::string> decode_base64(std::string_view text);

}  // namespace pw::rpc
