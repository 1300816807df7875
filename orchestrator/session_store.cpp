#include "orchestrator/session_store.hpp"

#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <stdexcept>

#include "core/atomic_file.hpp"
#include "core/bencode.hpp"
#include "core/metainfo.hpp"

namespace pw::orchestrator {

namespace fs = std::filesystem;
using bencode::Dict;
using bencode::Value;

namespace {

constexpr std::int64_t kVersion = 1;
constexpr std::string_view kTorrentSuffix = ".torrent";
constexpr std::string_view kStateSuffix = ".state";
constexpr std::string_view kMagnetSuffix = ".magnet";

// Ratios are kept in thousandths: bencode has no fractions.
std::int64_t ratio_to_int(double ratio) {
    if (!std::isfinite(ratio) || ratio < 0) return 0;
    return static_cast<std::int64_t>(std::llround(std::min(ratio, 1e9) * 1000));
}
double ratio_from_int(std::int64_t value) { return static_cast<double>(std::max<std::int64_t>(value, 0)) / 1000; }

Value u64(std::uint64_t value) {
    return Value(static_cast<std::int64_t>(std::min<std::uint64_t>(value, INT64_MAX)));
}

// Reads back what the encoders below wrote: every key optional (a newer field missing from an
// older file keeps its default), every present key of the right type.
class Reader {
public:
    explicit Reader(const Value& dict) : dict_(dict) {}

    template <class T>
    void integer(std::string_view key, T& out, std::int64_t min, std::int64_t max) {
        const Value* value = dict_.find(key);
        if (value == nullptr) return;
        if (!value->is_int() || value->as_int() < min || value->as_int() > max) {
            bad(key);
            return;
        }
        out = static_cast<T>(value->as_int());
    }
    void flag(std::string_view key, bool& out) {
        std::int64_t value = out ? 1 : 0;
        integer(key, value, 0, 1);
        out = value == 1;
    }
    void ratio(std::string_view key, double& out) {
        std::int64_t value = ratio_to_int(out);
        integer(key, value, 0, INT64_MAX);
        out = ratio_from_int(value);
    }
    void text(std::string_view key, std::string& out) {
        const Value* value = dict_.find(key);
        if (value == nullptr) return;
        if (!value->is_string()) {
            bad(key);
            return;
        }
        out = std::string(value->as_string());
    }
    const std::string& problem() const { return problem_; }

private:
    void bad(std::string_view key) {
        if (!problem_.empty()) return;
        problem_ = std::string(key);  // then quoted: see with_suffix in core/metainfo.cpp (g++ 12, -O3)
        problem_.insert(problem_.begin(), '\'');
        problem_ += "' is not what it should be";
    }
    const Value& dict_;
    std::string problem_;
};

Result<Value> decode_dict(std::string_view bytes) {
    auto decoded = bencode::decode(bytes);
    if (!decoded) return decoded.error();
    if (!decoded->value.is_dict()) return make_error("not a dictionary");
    const Value* version = decoded->value.find("version");
    if (version == nullptr || !version->is_int() || version->as_int() != kVersion) {
        return make_error("not a version " + std::to_string(kVersion) + " record");
    }
    // The strings of the result point into `bytes`; callers copy what they keep.
    return std::move(decoded->value);
}

}  // namespace

namespace {

// The choice of files as text, one character a file: '1' unwanted / '0' wanted, and 'l',
// 'n', 'h' for the priorities. At most one per file the metainfo can list (kMaxFiles).
constexpr std::size_t kMaxChoices = 1u << 20;

std::string unwanted_text(const std::vector<bool>& unwanted) {
    std::string text;
    for (const bool u : unwanted) text += u ? '1' : '0';
    return text;
}

std::string priority_text(const std::vector<std::int8_t>& priorities) {
    std::string text;
    for (const auto p : priorities) text += p < 0 ? 'l' : p > 0 ? 'h' : 'n';
    return text;
}

}  // namespace

std::string encode_torrent_state(TorrentId id, std::string_view name, const TorrentSettings& s) {
    Dict dict{
        {"file-priorities", Value(priority_text(s.file_priority))},
        {"files-unwanted", Value(unwanted_text(s.file_unwanted))},
        {"sequential", Value(std::int64_t{s.sequential})},
        {"activity-date", Value(s.activity_date)},
        {"added-date", Value(s.added_date)},
        {"bandwidth-priority", Value(std::int64_t{s.bandwidth_priority})},
        {"corrupt-ever", u64(s.corrupt_ever)},
        {"done-date", Value(s.done_date)},
        {"download-dir", Value(s.download_dir)},
        {"download-limit", Value(std::int64_t{s.download_limit_kbps})},
        {"download-limited", Value(std::int64_t{s.download_limited})},
        {"downloaded-ever", u64(s.downloaded_ever)},
        {"honors-session-limits", Value(std::int64_t{s.honors_session_limits})},
        {"id", Value(std::int64_t{id.get()})},
        {"name", Value(std::string(name))},
        {"paused", Value(std::int64_t{s.paused})},
        {"peer-limit", Value(std::int64_t{s.peer_limit})},
        {"seed-ratio-limit", Value(ratio_to_int(s.seed_ratio_limit))},
        {"seed-ratio-mode", Value(std::int64_t{s.seed_ratio_mode})},
        {"upload-limit", Value(std::int64_t{s.upload_limit_kbps})},
        {"upload-limited", Value(std::int64_t{s.upload_limited})},
        {"uploaded-ever", u64(s.uploaded_ever)},
        {"version", Value(kVersion)},
    };
    return bencode::encode(Value(std::move(dict)));
}

Result<SavedTorrentState> decode_torrent_state(std::string_view bytes) {
    auto dict = decode_dict(bytes);
    if (!dict) return dict.error();
    SavedTorrentState saved;
    Reader read(*dict);
    std::uint32_t id = 0;
    read.integer("id", id, 1, UINT32_MAX);
    if (id == 0) return make_error("no torrent id");
    saved.id = TorrentId{id};
    read.text("name", saved.name);
    TorrentSettings& s = saved.settings;
    read.text("download-dir", s.download_dir);
    read.flag("paused", s.paused);
    read.integer("added-date", s.added_date, 0, INT64_MAX);
    read.integer("done-date", s.done_date, 0, INT64_MAX);
    read.integer("activity-date", s.activity_date, 0, INT64_MAX);
    read.integer("downloaded-ever", s.downloaded_ever, 0, INT64_MAX);
    read.integer("uploaded-ever", s.uploaded_ever, 0, INT64_MAX);
    read.integer("corrupt-ever", s.corrupt_ever, 0, INT64_MAX);
    read.integer("download-limit", s.download_limit_kbps, 0, UINT32_MAX);
    read.flag("download-limited", s.download_limited);
    read.integer("upload-limit", s.upload_limit_kbps, 0, UINT32_MAX);
    read.flag("upload-limited", s.upload_limited);
    read.flag("honors-session-limits", s.honors_session_limits);
    read.ratio("seed-ratio-limit", s.seed_ratio_limit);
    read.integer("seed-ratio-mode", s.seed_ratio_mode, 0, 2);
    read.integer("peer-limit", s.peer_limit, 1, 10'000);
    read.integer("bandwidth-priority", s.bandwidth_priority, -1, 1);
    read.flag("sequential", s.sequential);
    std::string unwanted, priorities;
    read.text("files-unwanted", unwanted);
    read.text("file-priorities", priorities);
    if (!read.problem().empty()) return make_error(read.problem());
    if (unwanted.size() > kMaxChoices || unwanted.find_first_not_of("01") != std::string::npos) {
        return make_error("'files-unwanted' is not what it should be");
    }
    if (priorities.size() > kMaxChoices || priorities.find_first_not_of("lnh") != std::string::npos) {
        return make_error("'file-priorities' is not what it should be");
    }
    for (const char c : unwanted) s.file_unwanted.push_back(c == '1');
    for (const char c : priorities) s.file_priority.push_back(static_cast<std::int8_t>(c == 'l' ? -1 : c == 'h' ? 1 : 0));
    if (!s.download_dir.empty() && s.download_dir.front() != '/') {
        return make_error("the download folder is not an absolute path");
    }
    return saved;
}

std::string encode_session_settings(const SessionSettings& s) {
    Dict dict{
        {"download-dir", Value(s.download_dir)},
        {"downloaded-ever", u64(s.downloaded_ever)},
        {"files-added", u64(s.files_added)},
        {"next-torrent-id", Value(std::int64_t{s.next_torrent_id})},
        {"peer-limit-global", Value(std::int64_t{s.peer_limit_global})},
        {"peer-limit-per-torrent", Value(std::int64_t{s.peer_limit_per_torrent})},
        {"seconds-active", u64(s.seconds_active)},
        {"seed-ratio-limit", Value(ratio_to_int(s.seed_ratio_limit))},
        {"seed-ratio-limited", Value(std::int64_t{s.seed_ratio_limited})},
        {"session-count", u64(s.session_count)},
        {"speed-limit-down", Value(std::int64_t{s.speed_limit_down_kbps})},
        {"speed-limit-down-enabled", Value(std::int64_t{s.speed_limit_down_enabled})},
        {"speed-limit-up", Value(std::int64_t{s.speed_limit_up_kbps})},
        {"speed-limit-up-enabled", Value(std::int64_t{s.speed_limit_up_enabled})},
        {"uploaded-ever", u64(s.uploaded_ever)},
        {"version", Value(kVersion)},
    };
    return bencode::encode(Value(std::move(dict)));
}

Result<SessionSettings> decode_session_settings(std::string_view bytes) {
    auto dict = decode_dict(bytes);
    if (!dict) return dict.error();
    SessionSettings s;
    Reader read(*dict);
    read.text("download-dir", s.download_dir);
    read.integer("speed-limit-down", s.speed_limit_down_kbps, 0, UINT32_MAX);
    read.flag("speed-limit-down-enabled", s.speed_limit_down_enabled);
    read.integer("speed-limit-up", s.speed_limit_up_kbps, 0, UINT32_MAX);
    read.flag("speed-limit-up-enabled", s.speed_limit_up_enabled);
    read.integer("peer-limit-global", s.peer_limit_global, 1, 100'000);
    read.integer("peer-limit-per-torrent", s.peer_limit_per_torrent, 1, 10'000);
    read.ratio("seed-ratio-limit", s.seed_ratio_limit);
    read.flag("seed-ratio-limited", s.seed_ratio_limited);
    read.integer("downloaded-ever", s.downloaded_ever, 0, INT64_MAX);
    read.integer("uploaded-ever", s.uploaded_ever, 0, INT64_MAX);
    read.integer("files-added", s.files_added, 0, INT64_MAX);
    read.integer("seconds-active", s.seconds_active, 0, INT64_MAX);
    read.integer("session-count", s.session_count, 0, INT64_MAX);
    read.integer("next-torrent-id", s.next_torrent_id, 1, UINT32_MAX);
    if (!read.problem().empty()) return make_error(read.problem());
    return s;
}

SessionStore::SessionStore(std::string state_dir)
    : dir_(std::move(state_dir)), torrents_dir_(dir_ + "/torrents") {
    std::error_code error;
    fs::create_directories(torrents_dir_, error);
    if (error || !fs::is_directory(torrents_dir_)) {
        throw std::runtime_error("cannot use " + dir_ + " as the state folder" +
                                 (error ? ": " + error.message() : std::string{}));
    }
}

std::string SessionStore::metainfo_path(const Sha1Digest& info_hash) const {
    return torrents_dir_ + "/" + to_hex(info_hash) + std::string(kTorrentSuffix);
}

Status SessionStore::save_metainfo(const Sha1Digest& info_hash, std::string_view bytes) const {
    const std::string name = to_hex(info_hash) + std::string(kTorrentSuffix);
    std::error_code error;
    if (fs::exists(torrents_dir_ + "/" + name, error)) return ok_status();
    Status saved = replace_file_atomically(torrents_dir_, name, bytes);
    // The magnet it came from is no longer needed to restore it.
    if (saved.ok()) fs::remove(magnet_path(info_hash), error);
    return saved;
}

std::string SessionStore::magnet_path(const Sha1Digest& info_hash) const {
    return torrents_dir_ + "/" + to_hex(info_hash) + std::string(kMagnetSuffix);
}

Status SessionStore::save_magnet(const Sha1Digest& info_hash, std::string_view uri) const {
    return replace_file_atomically(torrents_dir_, to_hex(info_hash) + std::string(kMagnetSuffix), uri);
}

Status SessionStore::save_state(const TorrentState& torrent) {
    std::string name = to_hex(torrent.info_hash());
    name += kStateSuffix;
    std::string bytes = encode_torrent_state(torrent.id(), torrent.name(), torrent.settings());
    const auto known = written_.find(name);
    if (known != written_.end() && known->second == bytes) return ok_status();
    Status saved = replace_file_atomically(torrents_dir_, name, bytes);
    if (saved.ok()) {
        written_[name] = std::move(bytes);
    } else {
        written_.erase(name);  // unknown on disk now: the next save writes
    }
    return saved;
}

void SessionStore::forget(const Sha1Digest& info_hash) {
    std::error_code ignored;
    std::string name = to_hex(info_hash);
    name += kStateSuffix;
    written_.erase(name);
    const std::string stem = torrents_dir_ + "/" + to_hex(info_hash);
    fs::remove(stem + std::string(kStateSuffix), ignored);
    fs::remove(stem + std::string(kTorrentSuffix), ignored);
    fs::remove(stem + std::string(kMagnetSuffix), ignored);
}

std::vector<SessionStore::Saved> SessionStore::load(std::vector<std::string>& problems) {
    std::vector<Saved> saved;
    std::error_code error;
    for (const auto& entry : fs::directory_iterator(torrents_dir_, error)) {
        const std::string file = entry.path().filename().string();
        if (!file.ends_with(kStateSuffix) || file.size() != 40 + kStateSuffix.size()) continue;
        const std::string hex = file.substr(0, 40);
        const auto hash = sha1_from_hex(hex);
        if (!hash) continue;
        auto state_bytes = read_torrent_bytes(entry.path().string());  // a small regular file
        if (!state_bytes) {
            problems.push_back(entry.path().string() + ": " + state_bytes.error().describe());
            continue;
        }
        auto state = decode_torrent_state(*state_bytes);
        if (!state) {
            problems.push_back(entry.path().string() + ": " + state.error().describe());
            continue;
        }
        written_[file] = std::string(*state_bytes);  // what is on disk: no need to write it again
        std::string path = metainfo_path(*hash);
        std::error_code missing;
        // A magnet whose metadata never came is restored from its link.
        if (!fs::exists(path, missing) && fs::exists(magnet_path(*hash), missing)) path = magnet_path(*hash);
        auto metainfo = read_torrent_bytes(path);
        if (!metainfo) {
            problems.push_back(path + ": " + metainfo.error().describe());
            continue;
        }
        saved.push_back(Saved{state->id, std::move(*metainfo), path, std::move(state->settings)});
    }
    if (error) problems.push_back(torrents_dir_ + ": " + error.message());
    std::sort(saved.begin(), saved.end(), [](const Saved& a, const Saved& b) { return a.id < b.id; });
    return saved;
}

std::optional<SessionSettings> SessionStore::load_session(std::string& problem) const {
    const std::string path = dir_ + "/session.state";
    std::error_code error;
    if (!fs::exists(path, error)) return std::nullopt;
    auto bytes = read_torrent_bytes(path);
    if (!bytes) {
        problem = path + ": " + bytes.error().describe();
        return std::nullopt;
    }
    auto settings = decode_session_settings(*bytes);
    if (!settings) {
        problem = path + ": " + settings.error().describe();
        return std::nullopt;
    }
    return std::move(settings).value();
}

Status SessionStore::save_session(const SessionSettings& settings) const {
    return replace_file_atomically(dir_, "session.state", encode_session_settings(settings));
}

}  // namespace pw::orchestrator
