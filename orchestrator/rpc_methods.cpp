#include "orchestrator/rpc_methods.hpp"

#include <sys/statvfs.h>

#include <algorithm>
#include <filesystem>
#include <type_traits>

#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include "core/magnet.hpp"
#include "core/metainfo.hpp"

namespace pw::orchestrator {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

// A torrent counts as recently active this long after bytes last moved (Transmission: 60 s).
constexpr std::int64_t kRecentSeconds = 60;

std::string percent_encode(std::string_view text) {
    static constexpr char kHex[] = "0123456789ABCDEF";
    std::string out;
    for (const char c : text) {
        const auto byte = static_cast<unsigned char>(c);
        if (std::isalnum(byte) != 0 || c == '-' || c == '_' || c == '.' || c == '~') {
            out += c;
        } else {
            out += '%';
            out += kHex[byte >> 4];
            out += kHex[byte & 15];
        }
    }
    return out;
}

std::string magnet_of(const TorrentState& torrent) {
    std::string link = "magnet:?xt=urn:btih:" + to_hex(torrent.info_hash()) + "&dn=" + percent_encode(torrent.name());
    for (const auto& tier : torrent.trackers()) {
        for (const auto& url : tier) link += "&tr=" + percent_encode(url);
    }
    return link;
}

// "scheme://host:port" of an announce URL, as transmission-remote prints it.
std::string host_of(const std::string& url) {
    const auto scheme_end = url.find("://");
    if (scheme_end == std::string::npos) return url;
    const auto host_end = url.find('/', scheme_end + 3);
    return url.substr(0, host_end);
}

rpc::TorrentStatus status_of(TorrentPhase phase) {
    switch (phase) {
        case TorrentPhase::stopped:
        case TorrentPhase::failed: return rpc::TorrentStatus::stopped;
        case TorrentPhase::checking:
        case TorrentPhase::verifying: return rpc::TorrentStatus::checking;
        case TorrentPhase::metadata:
        case TorrentPhase::downloading: return rpc::TorrentStatus::downloading;
        case TorrentPhase::seeding: return rpc::TorrentStatus::seeding;
    }
    return rpc::TorrentStatus::stopped;
}

std::int64_t as_int(std::uint64_t value) { return static_cast<std::int64_t>(std::min<std::uint64_t>(value, INT64_MAX)); }

std::uint32_t clamp_u32(std::int64_t value, std::int64_t low, std::int64_t high) {
    return static_cast<std::uint32_t>(std::clamp(value, low, high));
}

// Applies an RPC request's file choices to `settings` (for `listed` files): false, and an
// error naming the number, when one is past the files. An empty list means every file.
Status choose(TorrentSettings& settings, std::size_t listed, const rpc::FileIndices& wanted,
              const rpc::FileIndices& unwanted, const rpc::FileIndices& high, const rpc::FileIndices& normal,
              const rpc::FileIndices& low) {
    for (const auto* list : {&wanted, &unwanted, &high, &normal, &low}) {
        if (!*list) continue;
        for (const auto index : **list) {
            if (index >= listed) {
                return make_error("file " + std::to_string(index) + " is past the torrent's " +
                                  std::to_string(listed) + " files");
            }
        }
    }
    settings.file_unwanted.resize(listed, false);
    settings.file_priority.resize(listed, 0);
    const auto each = [&](const rpc::FileIndices& list, auto&& apply) {
        if (!list) return;
        if (list->empty()) {
            for (std::size_t i = 0; i < listed; ++i) apply(i);
        }
        for (const auto index : *list) apply(index);
    };
    each(wanted, [&](std::size_t i) { settings.file_unwanted[i] = false; });
    each(unwanted, [&](std::size_t i) { settings.file_unwanted[i] = true; });
    each(high, [&](std::size_t i) { settings.file_priority[i] = 1; });
    each(normal, [&](std::size_t i) { settings.file_priority[i] = 0; });
    each(low, [&](std::size_t i) { settings.file_priority[i] = -1; });
    return ok_status();
}

}  // namespace

bool lies_below(const std::string& path, const std::vector<std::string>& roots) {
    const fs::path wanted = fs::path(path).lexically_normal();
    if (!wanted.is_absolute()) return false;
    for (const auto& root_text : roots) {
        if (root_text.empty()) continue;
        const fs::path root = fs::path(root_text).lexically_normal();
        const fs::path relative = wanted.lexically_relative(root);
        if (relative.empty()) continue;
        const std::string first = relative.begin()->string();
        if (first != ".." ) return true;
    }
    return false;
}

RpcMethods::RpcMethods(Session& session, SessionSettings& settings, const SessionStore* store,
                       RpcContext context)
    : session_(session), settings_(settings), store_(store), context_(std::move(context)) {}

std::vector<std::string> RpcMethods::roots() const {
    std::vector<std::string> all = context_.allowed_dirs;
    all.push_back(settings_.download_dir);
    return all;
}

std::string RpcMethods::handle(const std::string& body, Clock::time_point now, std::int64_t wall_now) {
    auto request = rpc::parse_request(body, context_.limits);
    if (!request) return rpc::render_error(std::nullopt, request.error().describe());
    if (!request->method) return rpc::render_error(request->tag, request->method.error().message);
    auto result = dispatch(request->method.value(), now, wall_now);
    if (!result) return rpc::render_error(request->tag, result.error().message);
    return rpc::render_success(request->tag, *result);
}

Result<std::vector<TorrentId>> RpcMethods::select(const rpc::TorrentIds& ids, std::int64_t wall_now) const {
    std::vector<TorrentId> selected;
    for (const auto& [id, torrent] : session_.torrents()) {
        const bool recent = torrent.active() && wall_now - torrent.settings().activity_date <= kRecentSeconds;
        if (ids.matches(id.get(), torrent.info_hash(), recent || torrent.phase() == TorrentPhase::downloading)) {
            selected.push_back(id);
        }
    }
    if (ids.scope == rpc::TorrentIds::Scope::listed) {
        for (const auto id : ids.ids) {
            if (session_.find(TorrentId{id}) == nullptr) return make_error("no torrent with id " + std::to_string(id));
        }
        if (selected.size() < ids.ids.size() + ids.hashes.size()) {
            for (const auto& hash : ids.hashes) {
                bool known = false;
                for (const auto& [id, torrent] : session_.torrents()) known = known || torrent.info_hash() == hash;
                if (!known) return make_error("no torrent with hash " + to_hex(hash));
            }
        }
    }
    return selected;
}

Result<json> RpcMethods::dispatch(rpc::Method& method, Clock::time_point now, std::int64_t wall_now) {
    return std::visit(
        [&](auto& m) -> Result<json> {
            using M = std::decay_t<decltype(m)>;
            if constexpr (std::is_same_v<M, rpc::SessionGet>) {
                return rpc::session_arguments(session_view(), m.fields);
            } else if constexpr (std::is_same_v<M, rpc::SessionSet>) {
                return session_set(m);
            } else if constexpr (std::is_same_v<M, rpc::SessionStats>) {
                rpc::SessionStatsView stats;
                for (const auto& [id, torrent] : session_.torrents()) {
                    ++stats.torrent_count;
                    if (torrent.active()) {
                        ++stats.active_torrent_count;
                    } else {
                        ++stats.paused_torrent_count;
                    }
                    stats.download_speed += static_cast<std::int64_t>(torrent.download_rate());
                    stats.upload_speed += static_cast<std::int64_t>(torrent.upload_rate());
                }
                stats.current.downloaded_bytes = as_int(session_.downloaded_this_run());
                stats.current.uploaded_bytes = as_int(session_.uploaded_this_run());
                stats.current.session_count = 1;
                stats.current.seconds_active = std::max<std::int64_t>(wall_now - context_.started, 0);
                stats.cumulative.downloaded_bytes = as_int(settings_.downloaded_ever + session_.downloaded_this_run());
                stats.cumulative.uploaded_bytes = as_int(settings_.uploaded_ever + session_.uploaded_this_run());
                stats.cumulative.files_added = as_int(settings_.files_added);
                stats.cumulative.session_count = as_int(std::max<std::uint64_t>(settings_.session_count, 1));
                stats.cumulative.seconds_active = as_int(settings_.seconds_active) + stats.current.seconds_active;
                return rpc::session_stats_arguments(stats);
            } else if constexpr (std::is_same_v<M, rpc::SessionClose>) {
                return make_error("session-close is not supported: stop the daemon with SIGTERM");
            } else if constexpr (std::is_same_v<M, rpc::PortTest>) {
                // Whether the workers listen on it; reachability from outside is the router's.
                return rpc::port_test_arguments(session_.announced_port() != 0);
            } else if constexpr (std::is_same_v<M, rpc::FreeSpace>) {
                struct statvfs info {};
                if (::statvfs(m.path.c_str(), &info) != 0) return make_error("cannot read the free space of " + m.path);
                const auto free = static_cast<std::int64_t>(info.f_bavail) * static_cast<std::int64_t>(info.f_frsize);
                const auto total = static_cast<std::int64_t>(info.f_blocks) * static_cast<std::int64_t>(info.f_frsize);
                return rpc::free_space_arguments(m.path, free, total);
            } else if constexpr (std::is_same_v<M, rpc::TorrentAdd>) {
                return torrent_add(m, now, wall_now);
            } else if constexpr (std::is_same_v<M, rpc::TorrentGet>) {
                return torrent_get(m, wall_now);
            } else if constexpr (std::is_same_v<M, rpc::TorrentAction>) {
                auto ids = select(m.ids, wall_now);
                if (!ids) return ids.error();
                for (const TorrentId id : *ids) {
                    switch (m.kind) {
                        case rpc::TorrentAction::Kind::start:
                        case rpc::TorrentAction::Kind::start_now: session_.start(id, now); break;
                        case rpc::TorrentAction::Kind::stop: session_.stop(id); break;
                        case rpc::TorrentAction::Kind::verify: session_.verify(id); break;
                        case rpc::TorrentAction::Kind::reannounce: break;  // the next announce is due soon enough
                    }
                }
                return json::object();
            } else if constexpr (std::is_same_v<M, rpc::TorrentRemove>) {
                auto ids = select(m.ids, wall_now);
                if (!ids) return ids.error();
                for (const TorrentId id : *ids) {
                    if (session_.remove(id, m.delete_local_data)) removed_.emplace_back(id.get(), wall_now);
                }
                while (!removed_.empty() && wall_now - removed_.front().second > kRecentSeconds) removed_.pop_front();
                return json::object();
            } else if constexpr (std::is_same_v<M, rpc::TorrentSet>) {
                return torrent_set(m, now);
            } else {
                return make_error("method name not recognized");
            }
        },
        method);
}

Result<TorrentSettings> RpcMethods::settings_of(const rpc::TorrentAdd& add) const {
    TorrentSettings settings;
    settings.download_dir = settings_.download_dir;
    if (add.download_dir) {
        if (!lies_below(*add.download_dir, roots())) {
            return make_error("download-dir " + *add.download_dir +
                              " is outside the folders torrents may go to (the download folder and --allow-dir)");
        }
        settings.download_dir = fs::path(*add.download_dir).lexically_normal().string();
    }
    settings.paused = add.paused.value_or(false);
    settings.peer_limit = settings_.peer_limit_per_torrent;
    if (add.peer_limit) settings.peer_limit = clamp_u32(*add.peer_limit, 1, 10'000);
    if (add.bandwidth_priority) settings.bandwidth_priority = static_cast<int>(*add.bandwidth_priority);
    if (add.sequential_download) settings.sequential = *add.sequential_download;
    return settings;
}

Result<json> RpcMethods::add_magnet(rpc::TorrentAdd& add, Clock::time_point now, std::int64_t wall_now) {
    auto link = magnet::parse_magnet(add.data);
    if (!link) return make_error("bad magnet link: " + link.error().describe());
    if (TorrentState* known = session_.find(link->info_hash)) {
        return rpc::torrent_added_arguments(view(*known, wall_now), true);
    }
    Session::AddRequest request;
    auto settings = settings_of(add);
    if (!settings) return settings.error();
    request.settings = std::move(settings).value();
    // files-wanted and priorities name files the torrent's metadata has not told us of yet.
    if (store_ != nullptr) {
        if (const Status saved = store_->save_magnet(link->info_hash, add.data); !saved.ok()) {
            return make_error("cannot keep the magnet link: " + saved.error().describe());
        }
        request.metainfo_path = store_->magnet_path(link->info_hash);
    }
    request.metainfo = std::move(add.data);
    auto added = session_.add(std::move(request), now, wall_now);
    if (!added) return added.error();
    ++settings_.files_added;
    return rpc::torrent_added_arguments(view(*session_.find(added->id), wall_now), added->duplicate);
}

Result<json> RpcMethods::torrent_add(rpc::TorrentAdd& add, Clock::time_point now, std::int64_t wall_now) {
    std::string bytes;
    switch (add.source) {
        case rpc::TorrentAdd::Source::metainfo: bytes = std::move(add.data); break;
        case rpc::TorrentAdd::Source::path: {
            auto read = read_torrent_bytes(add.data);
            if (!read) return make_error(add.data + ": " + read.error().describe());
            bytes = std::move(*read);
            break;
        }
        case rpc::TorrentAdd::Source::magnet: return add_magnet(add, now, wall_now);
        case rpc::TorrentAdd::Source::url: return make_error("adding a torrent by URL is not supported: add the .torrent file");
    }
    auto parsed = Torrent::parse(bytes, {}, PieceHashes::forget);
    if (!parsed) return make_error(parsed.error().describe());
    if (TorrentState* known = session_.find(parsed->info_hash())) {
        return rpc::torrent_added_arguments(view(*known, wall_now), true);
    }
    Session::AddRequest request;
    auto settings = settings_of(add);
    if (!settings) return settings.error();
    request.settings = std::move(settings).value();
    {
        // The choice goes in the settings the torrent starts with: no byte of an unwanted
        // file is ever asked for.
        std::size_t listed = 0;
        for (const FileEntry& file : parsed->files()) listed += file.pad ? 0 : 1;
        auto choice = choose(request.settings, listed, add.files_wanted, add.files_unwanted, add.priority_high,
                             add.priority_normal, add.priority_low);
        if (!choice.ok()) return choice.error();
    }
    if (store_ != nullptr) {
        if (const Status saved = store_->save_metainfo(parsed->info_hash(), bytes); !saved.ok()) {
            return make_error("cannot keep the .torrent: " + saved.error().describe());
        }
        request.metainfo_path = store_->metainfo_path(parsed->info_hash());
    }
    request.metainfo = std::move(bytes);
    auto added = session_.add(std::move(request), now, wall_now);
    if (!added) return added.error();
    ++settings_.files_added;
    return rpc::torrent_added_arguments(view(*session_.find(added->id), wall_now), added->duplicate);
}

Result<json> RpcMethods::torrent_get(const rpc::TorrentGet& get, std::int64_t wall_now) {
    auto ids = select(get.ids, wall_now);
    if (!ids) return ids.error();
    std::vector<rpc::TorrentView> views;
    views.reserve(ids->size());
    for (const TorrentId id : *ids) views.push_back(view(*session_.find(id), wall_now));
    if (get.ids.scope != rpc::TorrentIds::Scope::recently_active) return rpc::torrent_get_arguments(get, views);
    std::vector<std::uint32_t> removed;
    for (const auto& [id, when] : removed_) {
        if (wall_now - when <= kRecentSeconds) removed.push_back(id);
    }
    return rpc::torrent_get_arguments(get, views, &removed);
}

Result<json> RpcMethods::torrent_set(const rpc::TorrentSet& set, Clock::time_point now) {
    if (set.location) return make_error("moving a torrent's data is not supported");
    if (set.tracker_add || set.tracker_remove) return make_error("editing trackers is not supported");
    auto ids = select(set.ids, 0);
    if (!ids) return ids.error();
    for (const TorrentId id : *ids) {
        TorrentSettings& s = session_.find(id)->settings();
        if (set.download_limit_kbps) s.download_limit_kbps = clamp_u32(*set.download_limit_kbps, 0, UINT32_MAX);
        if (set.download_limited) s.download_limited = *set.download_limited;
        if (set.upload_limit_kbps) s.upload_limit_kbps = clamp_u32(*set.upload_limit_kbps, 0, UINT32_MAX);
        if (set.upload_limited) s.upload_limited = *set.upload_limited;
        if (set.honors_session_limits) s.honors_session_limits = *set.honors_session_limits;
        if (set.seed_ratio_limit) s.seed_ratio_limit = *set.seed_ratio_limit;
        if (set.seed_ratio_mode) s.seed_ratio_mode = static_cast<int>(*set.seed_ratio_mode);
        if (set.peer_limit) s.peer_limit = clamp_u32(*set.peer_limit, 1, 10'000);
        if (set.bandwidth_priority) s.bandwidth_priority = static_cast<int>(*set.bandwidth_priority);
        session_.mark_changed(id);
    }
    const bool chooses = set.files_wanted || set.files_unwanted || set.priority_high || set.priority_normal ||
                         set.priority_low || set.sequential_download;
    if (!chooses) return json::object();
    for (const TorrentId id : *ids) {
        TorrentState& torrent = *session_.find(id);
        if (torrent.info() == nullptr && (set.files_wanted || set.files_unwanted || set.priority_high ||
                                          set.priority_normal || set.priority_low)) {
            return make_error("torrent " + std::to_string(id.get()) + " has no file list yet");
        }
        // Checked first, then applied: a bad number changes nothing.
        TorrentSettings chosen = torrent.settings();
        auto choice = choose(chosen, torrent.listed_file_count(), set.files_wanted, set.files_unwanted,
                             set.priority_high, set.priority_normal, set.priority_low);
        if (!choice.ok()) return choice.error();
    }
    for (const TorrentId id : *ids) {
        TorrentState& torrent = *session_.find(id);
        const auto apply = [&](const rpc::FileIndices& files, std::optional<bool> wanted, std::optional<int> priority) {
            if (files) torrent.choose_files(*files, wanted, priority, now);
        };
        apply(set.files_wanted, true, std::nullopt);
        apply(set.files_unwanted, false, std::nullopt);
        apply(set.priority_high, std::nullopt, 1);
        apply(set.priority_normal, std::nullopt, 0);
        apply(set.priority_low, std::nullopt, -1);
        if (set.sequential_download) torrent.set_sequential(*set.sequential_download);
        session_.files_chosen(id, now);
    }
    return json::object();
}

Result<json> RpcMethods::session_set(const rpc::SessionSet& set) {
    if (set.download_dir) {
        if (!lies_below(*set.download_dir, context_.allowed_dirs) &&
            fs::path(*set.download_dir).lexically_normal() != fs::path(settings_.download_dir).lexically_normal()) {
            return make_error("download-dir " + *set.download_dir +
                              " is outside the folders torrents may go to (start the daemon with --allow-dir)");
        }
    }
    if (set.encryption) {
        // Transmission's words: "tolerated" takes plaintext first; ours, off, plaintext only.
        switch (*set.encryption) {
            case rpc::Encryption::required: session_.set_encryption(Encryption::require); break;
            case rpc::Encryption::preferred: session_.set_encryption(Encryption::prefer); break;
            case rpc::Encryption::tolerated: session_.set_encryption(Encryption::off); break;
        }
    }
    if (set.download_dir) settings_.download_dir = fs::path(*set.download_dir).lexically_normal().string();
    if (set.speed_limit_down_kbps) settings_.speed_limit_down_kbps = clamp_u32(*set.speed_limit_down_kbps, 0, UINT32_MAX);
    if (set.speed_limit_down_enabled) settings_.speed_limit_down_enabled = *set.speed_limit_down_enabled;
    if (set.speed_limit_up_kbps) settings_.speed_limit_up_kbps = clamp_u32(*set.speed_limit_up_kbps, 0, UINT32_MAX);
    if (set.speed_limit_up_enabled) settings_.speed_limit_up_enabled = *set.speed_limit_up_enabled;
    if (set.peer_limit_global) {
        settings_.peer_limit_global = clamp_u32(*set.peer_limit_global, 1, 100'000);
        session_.set_max_peers(settings_.peer_limit_global);
    }
    if (set.peer_limit_per_torrent) settings_.peer_limit_per_torrent = clamp_u32(*set.peer_limit_per_torrent, 1, 10'000);
    if (set.seed_ratio_limit) settings_.seed_ratio_limit = *set.seed_ratio_limit;
    if (set.seed_ratio_limited) settings_.seed_ratio_limited = *set.seed_ratio_limited;
    session_.mark_session_changed();
    return json::object();
}

rpc::SessionView RpcMethods::session_view() const {
    rpc::SessionView view;
    view.version = "piecework 0.1.0";
    view.session_id = context_.session_id;
    view.config_dir = context_.state_dir;
    view.download_dir = settings_.download_dir;
    struct statvfs info {};
    if (!settings_.download_dir.empty() && ::statvfs(settings_.download_dir.c_str(), &info) == 0) {
        view.download_dir_free_space = static_cast<std::int64_t>(info.f_bavail) * static_cast<std::int64_t>(info.f_frsize);
    }
    view.peer_port = context_.peer_port;
    switch (session_.encryption()) {
        case Encryption::require: view.encryption = rpc::Encryption::required; break;
        case Encryption::prefer: view.encryption = rpc::Encryption::preferred; break;
        case Encryption::off: view.encryption = rpc::Encryption::tolerated; break;
    }
    view.speed_limit_down_kbps = settings_.speed_limit_down_kbps;
    view.speed_limit_down_enabled = settings_.speed_limit_down_enabled;
    view.speed_limit_up_kbps = settings_.speed_limit_up_kbps;
    view.speed_limit_up_enabled = settings_.speed_limit_up_enabled;
    view.peer_limit_global = settings_.peer_limit_global;
    view.peer_limit_per_torrent = settings_.peer_limit_per_torrent;
    view.seed_ratio_limit = settings_.seed_ratio_limit;
    view.seed_ratio_limited = settings_.seed_ratio_limited;
    return view;
}

rpc::TorrentView RpcMethods::view(const TorrentState& torrent, std::int64_t wall_now) const {
    rpc::TorrentView v;
    const TorrentSettings& s = torrent.settings();
    v.id = torrent.id().get();
    v.hash = torrent.info_hash();
    v.name = torrent.name();
    v.status = status_of(torrent.phase());
    if (torrent.phase() == TorrentPhase::failed) {
        v.error = rpc::TorrentError::local;
        v.error_string = torrent.error();
    } else {
        const auto& reports = torrent.tracker_reports();
        const bool any_ok = std::any_of(reports.begin(), reports.end(), [](const TrackerReport& r) { return r.last_ok; });
        for (const TrackerReport& report : reports) {
            if (!any_ok && report.last_time != 0 && !report.last_ok) {
                v.error = rpc::TorrentError::tracker_error;
                v.error_string = report.last_result;
            }
        }
    }
    const std::uint64_t total = torrent.total_size();
    const std::uint64_t done = torrent.done_bytes();
    const std::uint64_t wanted = torrent.size_when_done();
    v.total_size = as_int(total);
    v.size_when_done = as_int(wanted);
    v.left_until_done = as_int(torrent.left());
    v.have_valid = as_int(done);
    v.percent_done = wanted == 0 ? (torrent.info() != nullptr ? 1.0 : 0.0)
                                 : static_cast<double>(torrent.wanted_done_bytes()) / static_cast<double>(wanted);
    v.percent_complete = total == 0 ? 0.0 : static_cast<double>(done) / static_cast<double>(total);
    v.sequential_download = s.sequential;
    v.is_finished = false;
    v.corrupt_ever = as_int(s.corrupt_ever);
    v.downloaded_ever = as_int(s.downloaded_ever);
    v.uploaded_ever = as_int(s.uploaded_ever);
    v.upload_ratio = s.downloaded_ever == 0 ? (s.uploaded_ever == 0 ? rpc::kRatioNotAvailable : rpc::kRatioInfinite)
                                            : static_cast<double>(s.uploaded_ever) / static_cast<double>(s.downloaded_ever);
    const bool running = torrent.active();
    v.rate_download = running ? static_cast<std::int64_t>(torrent.download_rate()) : 0;
    if (torrent.complete()) {
        v.eta = rpc::kEtaNotAvailable;
    } else if (v.rate_download > 0) {
        v.eta = v.left_until_done / v.rate_download;
    } else {
        v.eta = running ? rpc::kEtaUnknown : rpc::kEtaNotAvailable;
    }
    v.peers_connected = running ? torrent.peers_connected() : 0;
    v.peers_sending_to_us = v.rate_download > 0 ? v.peers_connected : 0;
    v.rate_upload = running ? static_cast<std::int64_t>(torrent.upload_rate()) : 0;
    v.peers_getting_from_us = running ? torrent.choker().unchoked() : 0;
    v.is_finished = torrent.finished();
    v.is_stalled = running && !torrent.complete() && v.rate_download == 0;
    v.added_date = s.added_date;
    v.done_date = s.done_date;
    v.activity_date = s.activity_date;
    v.start_date = running ? s.added_date : 0;
    v.download_dir = s.download_dir.empty() ? settings_.download_dir : s.download_dir;
    v.magnet_link = magnet_of(torrent);
    // The workers fetch the metadata; the session knows only whether it is here.
    v.metadata_percent_complete = torrent.info() != nullptr ? 1.0 : 0.0;
    v.torrent_file = session_.metainfo_path(torrent.id());
    v.download_limit_kbps = s.download_limit_kbps;
    v.download_limited = s.download_limited;
    v.upload_limit_kbps = s.upload_limit_kbps;
    v.upload_limited = s.upload_limited;
    v.honors_session_limits = s.honors_session_limits;
    v.seed_ratio_limit = s.seed_ratio_limit;
    v.seed_ratio_mode = static_cast<rpc::LimitMode>(s.seed_ratio_mode);
    v.bandwidth_priority = static_cast<rpc::Priority>(s.bandwidth_priority);
    v.peer_limit = s.peer_limit;
    v.queue_position = v.id;
    if (const Torrent* info = torrent.info()) {
        v.is_private = info->is_private();
        v.creator = info->created_by();
        v.comment = info->comment();
        v.date_created = info->creation_date();
        v.piece_count = info->piece_count();
        v.piece_size = info->piece_length();
        std::string bits((info->piece_count() + 7) / 8, '\0');
        std::vector<std::int64_t> completed(info->files().size(), 0);
        for (std::uint32_t piece = 0; piece < info->piece_count(); ++piece) {
            if (!torrent.is_done(PieceIndex{piece})) continue;
            bits[piece / 8] = static_cast<char>(bits[piece / 8] | (0x80 >> (piece % 8)));
            for (const FileSpan& span : info->map_piece(PieceIndex{piece})) {
                completed[span.file_index] += static_cast<std::int64_t>(span.length);
            }
        }
        v.pieces = std::move(bits);
        for (std::size_t listed = 0; listed < torrent.listed_file_count(); ++listed) {
            const std::size_t i = torrent.info_file_index(listed);
            const FileEntry& file = info->files()[i];
            v.files.push_back(rpc::FileView{info->relative_path(i), as_int(file.length), completed[i],
                                            torrent.file_wanted(listed),
                                            static_cast<rpc::Priority>(torrent.file_priority(listed))});
        }
    }
    std::int64_t tracker_id = 0;
    for (const TrackerReport& report : torrent.tracker_reports()) {
        rpc::TrackerView t;
        t.id = tracker_id++;
        t.announce = report.url;
        t.host = host_of(report.url);
        t.sitename = t.host;
        t.tier = report.tier;
        t.announce_state = running ? 1 : 0;
        t.has_announced = report.last_time != 0;
        t.last_announce_peer_count = report.last_peers;
        t.last_announce_result = report.last_result;
        t.last_announce_start_time = report.last_time;
        t.last_announce_time = report.last_time;
        t.last_announce_succeeded = report.last_ok;
        t.next_announce_time = running ? report.next_time : 0;
        v.trackers.push_back(std::move(t));
    }
    (void)wall_now;
    return v;
}

}  // namespace pw::orchestrator
