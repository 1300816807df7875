#include "orchestrator/session.hpp"

#include <algorithm>
#include <random>

#include <spdlog/spdlog.h>

#include "core/bus/metrics.hpp"
#include "core/bus/welcome.hpp"
#include "core/magnet.hpp"

namespace pw::orchestrator {

namespace v1 = ::piecework::v1;
using std::chrono::milliseconds;

namespace {

constexpr std::size_t kMaxStrangersRemembered = 1024;
// Every torrent is walked this often (idle ones' timers, lease expiry, seed limits); busy ones
// also on every turn of the loop. 200 seeding torrents walked four times a second were half
// of an idle daemon's CPU.
constexpr milliseconds kWalkAllPeriod{1'000};

std::span<const std::uint8_t> bytes_of(const zmq::message_t& frame) {
    return {static_cast<const std::uint8_t*>(frame.data()), frame.size()};
}

// BEP 27, once the info dictionary says so: no DHT, PEX or local discovery. A torrent known
// by info-hash alone is taken as public until then.
bool is_private(const TorrentState& torrent) { return torrent.info() != nullptr && torrent.info()->is_private(); }

bool needs_info(v1::Role role) {
    return role == v1::ROLE_PEER_WORKER || role == v1::ROLE_VERIFIER || role == v1::ROLE_WRITER;
}

// The info dictionary's bytes as one refcounted frame: every TorrentInfo shares them
// (zmq_msg_copy). ZeroMQ's I/O thread may still be sending one after the session let go,
// and frees the bytes with the last reference.
zmq::message_t frame_of(std::string bytes) {
    auto owned = std::make_unique<std::string>(std::move(bytes));
    zmq::message_t frame(owned->data(), owned->size(),
                         [](void*, void* hint) { delete static_cast<std::string*>(hint); },
                         owned.get());
    owned.release();
    return frame;
}

}  // namespace

std::string make_peer_id() {
    std::random_device entropy;
    std::string id = "-PW0001-";
    while (id.size() < 20) id.push_back(static_cast<char>(entropy() & 0xff));
    return id;
}

Session::Session(SessionConfig config) : config_(std::move(config)) {
    if (config_.peer_id.size() != 20) config_.peer_id = make_peer_id();
    config_.torrent.grants = &grants_;
    config_.torrent.directory.judge = &judge_;
}

// --- sending ---

void Session::send(const std::string& identity, v1::Envelope envelope,
                   std::vector<zmq::message_t> frames) {
    outbox_.push_back(Outgoing{identity, std::move(envelope), std::move(frames)});
}

void Session::send_role(v1::Role role, const v1::Envelope& envelope) {
    for (const auto& identity : stages_.identities(role)) send(identity, envelope);
}

void Session::send_cancels(TorrentId torrent, const std::vector<Cancel>& cancels) {
    for (const Cancel& cancel : cancels) {
        v1::Envelope envelope;
        envelope.mutable_cancel_piece()->set_piece(cancel.piece.get());
        envelope.mutable_cancel_piece()->set_torrent(torrent.get());
        send(cancel.worker, std::move(envelope));
    }
}

namespace {

// What the trackers are told: this run's totals (BEP 3 counts from the `started` announce).
v1::Envelope tracker_stats_message(const TorrentState& torrent, v1::TrackerStats::Event event,
                                   std::uint16_t port, bool announce_now = false) {
    v1::Envelope envelope;
    auto* stats = envelope.mutable_tracker_stats();
    stats->set_torrent(torrent.id().get());
    stats->set_uploaded(torrent.uploaded_this_run());
    stats->set_downloaded(torrent.downloaded_this_run());
    // Before the info dictionary nothing says how much is left, but it is not nothing: a
    // tracker told 0 takes us for a seed and may give us no seeds.
    stats->set_left(torrent.info() != nullptr ? torrent.left() : 16 * 1024);
    stats->set_event(event);
    stats->set_port(port);
    stats->set_announce_now(announce_now);
    return envelope;
}

}  // namespace

void Session::send_tracker_stats(const TorrentState& torrent, v1::TrackerStats::Event event) {
    // Without trackers too: the tracker stage announces on the LAN (BEP 14) with its port,
    // and the DHT node announces to the DHT with it.
    const auto message = tracker_stats_message(torrent, event, announced_port());
    send_role(v1::ROLE_TRACKER, message);
    if (!is_private(torrent)) send_role(v1::ROLE_DHT, message);
}

std::uint16_t Session::announced_port() const {
    // Optimistic until the workers say otherwise: a worker binds right after its Welcome and
    // says so in its first heartbeat, while a torrent's first announce may already be out.
    bool any_reported = false;
    for (const auto& [worker, use] : worker_use_) {
        if (!use.reported) continue;
        any_reported = true;
        if (use.listen_port != 0) return static_cast<std::uint16_t>(use.listen_port);
    }
    return any_reported ? 0 : static_cast<std::uint16_t>(config_.listen_port);
}

v1::Envelope Session::pieces_available_message(const TorrentState& torrent,
                                               std::vector<zmq::message_t>& frames) const {
    v1::Envelope envelope;
    auto* available = envelope.mutable_pieces_available();
    available->set_torrent(torrent.id().get());
    if (torrent.has_all()) {
        available->set_have_all(true);
    } else if (torrent.pieces_done() > 0) {
        available->set_bitfield(true);
        frames.emplace_back(torrent.done_bitfield());
    }
    return envelope;
}

void Session::send_pieces_available(const TorrentState& torrent, const std::string* only_worker) {
    for (const auto& worker : stages_.identities(v1::ROLE_PEER_WORKER)) {
        if (only_worker != nullptr && worker != *only_worker) continue;
        std::vector<zmq::message_t> frames;
        v1::Envelope envelope = pieces_available_message(torrent, frames);
        send(worker, std::move(envelope), std::move(frames));
    }
}

void Session::send_choke_changes(TorrentId torrent, const std::vector<ChokeChange>& changes) {
    std::map<std::string, v1::Envelope> by_worker;
    for (const ChokeChange& change : changes) {
        v1::Envelope& envelope = by_worker[change.worker];
        auto* decision = envelope.mutable_choke_decision();
        decision->set_torrent(torrent.get());
        (change.unchoke ? decision->add_unchoke() : decision->add_choke())->assign(change.peer);
    }
    for (auto& [worker, envelope] : by_worker) send(worker, std::move(envelope));
}

void Session::set_rate_limits(std::uint64_t upload, std::uint64_t download) {
    max_upload_rate_ = upload;
    max_download_rate_ = download;
    next_budget_ = {};
}

void Session::send_rate_budgets() {
    const auto workers = stages_.identities(v1::ROLE_PEER_WORKER);
    if (workers.empty()) return;
    // Each worker's share follows its recent use, with a floor so that an idle worker can
    // start: the shares converge on where the traffic is within a few periods.
    const auto split = [&](std::uint64_t limit, auto use_of, const std::string& worker) -> std::uint64_t {
        if (limit == 0) return 0;
        const double floor = static_cast<double>(limit) / (4.0 * static_cast<double>(workers.size()));
        double total = 0;
        for (const auto& name : workers) total += use_of(name) + floor;
        const double share = (use_of(worker) + floor) / total;
        return std::max<std::uint64_t>(1, static_cast<std::uint64_t>(static_cast<double>(limit) * share));
    };
    const auto up = [&](const std::string& name) { return worker_use_[name].upload_rate; };
    const auto down = [&](const std::string& name) { return worker_use_[name].download_rate; };
    for (const auto& worker : workers) {
        v1::Envelope envelope;
        auto* budget = envelope.mutable_rate_budget();
        budget->set_upload_bytes_per_s(split(max_upload_rate_, up, worker));
        budget->set_download_bytes_per_s(split(max_download_rate_, down, worker));
        for (const auto& [id, torrent] : torrents_) {
            const TorrentSettings& s = torrent.settings();
            if (!torrent.active() || (!s.upload_limited && !s.download_limited)) continue;
            // A torrent's own limit is split evenly: its peers may be on any worker.
            auto* rate = budget->add_torrents();
            rate->set_torrent(id.get());
            const std::uint64_t n = workers.size();
            if (s.upload_limited) rate->set_upload_bytes_per_s(std::max<std::uint64_t>(1, std::uint64_t{s.upload_limit_kbps} * 1000 / n));
            if (s.download_limited) rate->set_download_bytes_per_s(std::max<std::uint64_t>(1, std::uint64_t{s.download_limit_kbps} * 1000 / n));
        }
        std::string serialized = envelope.SerializeAsString();
        WorkerUse& use = worker_use_[worker];
        if (serialized == use.last_budget) continue;
        use.last_budget = std::move(serialized);
        send(worker, std::move(envelope));
    }
}

void Session::enforce_seed_limits() {
    for (auto& [id, torrent] : torrents_) {
        if (torrent.phase() != TorrentPhase::seeding) continue;
        const TorrentSettings& s = torrent.settings();
        std::optional<double> limit;
        if (s.seed_ratio_mode == 1) limit = s.seed_ratio_limit;
        if (s.seed_ratio_mode == 0) limit = seed_ratio_;
        if (!limit || torrent.ratio() < *limit) continue;
        notice(Notice::Kind::info, id,
               "'" + torrent.name() + "' reached its seed ratio of " + std::to_string(*limit) + ": finished");
        tell_removed(id, false);
        torrent.finish();
        torrent.settings().paused = true;
        changed_.insert(id);
    }
}

bool Session::info_frame(TorrentId id, zmq::message_t& out, Clock::time_point now) {
    const auto found = info_.find(id);
    const TorrentState* torrent = find(id);
    if (found == info_.end() || torrent == nullptr) return false;
    InfoBytes& info = found->second;
    if (info.frame.size() == 0) {
        auto bytes = read_torrent_bytes(info.path);
        std::string problem;
        std::optional<Torrent> again;
        if (!bytes) {
            problem = bytes.error().describe();
        } else if (auto parsed = Torrent::parse(*bytes); !parsed || parsed->info_hash() != torrent->info_hash()) {
            problem = "no longer the torrent being downloaded";
        } else {
            again.emplace(std::move(parsed).value());
        }
        if (!again) {
            notice(Notice::Kind::error, id,
                   "cannot tell a stage about '" + torrent->name() + "': " + info.path + ": " + problem);
            return false;
        }
        info.frame = frame_of(again->info_bytes());
    }
    out.copy(info.frame);
    info.release_at = now + config_.keep_info_after_send;
    return true;
}

void Session::tell_stage(const std::string& identity, v1::Role role, const TorrentState& torrent,
                         Clock::time_point now) {
    if (role == v1::ROLE_DHT && is_private(torrent)) return;  // BEP 27: its peers come from its trackers
    bus::AddedTorrent added;
    added.id = torrent.id();
    added.info_hash = torrent.info_hash();
    added.name = torrent.name();
    added.trackers = torrent.trackers();
    added.download_dir = torrent.settings().download_dir;
    added.private_torrent = is_private(torrent);
    send(identity, bus::torrent_added_message(added));
    if (role == v1::ROLE_WRITER && torrent.info() != nullptr) {
        send(identity, files_wanted_message(torrent), files_wanted_frames(torrent));
    }
    if (needs_info(role) && torrent.info() != nullptr) {
        std::vector<zmq::message_t> frames(1);
        if (info_frame(torrent.id(), frames.front(), now)) {
            send(identity, bus::torrent_info_message(torrent.id()), std::move(frames));
        }
    }
    if (role == v1::ROLE_TRACKER || role == v1::ROLE_DHT) {
        send(identity, tracker_stats_message(torrent, v1::TrackerStats::NONE, announced_port()));
    }
    // What we have, once the writer said: before that it is not known yet.
    if (role == v1::ROLE_PEER_WORKER && torrent.info() != nullptr && torrent.resumed()) {
        send_pieces_available(torrent, &identity);
    }
}

v1::Envelope Session::files_wanted_message(const TorrentState& torrent) {
    v1::Envelope envelope;
    envelope.mutable_files_wanted()->set_torrent(torrent.id().get());
    return envelope;
}

std::vector<zmq::message_t> Session::files_wanted_frames(const TorrentState& torrent) {
    std::vector<zmq::message_t> frames;
    const std::string bits = torrent.unwanted_files_bits();
    frames.emplace_back(bits.data(), bits.size());
    return frames;
}

void Session::files_chosen(TorrentId id, Clock::time_point now) {
    TorrentState* torrent = find(id);
    if (torrent == nullptr) return;
    changed_.insert(id);
    if (torrent->info() != nullptr) {
        for (const auto& identity : stages_.identities(v1::ROLE_WRITER)) {
            send(identity, files_wanted_message(*torrent), files_wanted_frames(*torrent));
        }
    }
    after_change(*torrent, now);
}

void Session::tell_all(const TorrentState& torrent, Clock::time_point now) {
    for (const auto& identity : stages_.identities()) {
        tell_stage(identity, stages_.find(identity)->role, torrent, now);
    }
}

void Session::tell_removed(TorrentId id, bool delete_data) {
    for (const auto& identity : stages_.identities()) {
        send(identity, bus::torrent_removed_message(id, delete_data));
    }
}

void Session::notice(Notice::Kind kind, TorrentId torrent, std::string text) {
    // A failing tracker or disk says the same thing again and again: once is enough.
    constexpr std::size_t kMaxRemembered = 4096;
    if (kind != Notice::Kind::info) {
        const std::string key = std::to_string(torrent.get()) + " " + text;
        if (noticed_.contains(key)) return;
        if (noticed_.size() < kMaxRemembered) noticed_.insert(key);
    }
    notices_.push_back(Notice{kind, torrent, std::move(text)});
}

void Session::shutdown_all(const std::string& reason) {
    v1::Envelope envelope;
    envelope.mutable_shutdown()->set_reason(reason);
    for (const auto& identity : stages_.identities()) send(identity, envelope);
}

// --- torrents ---

Result<TorrentId> Session::take_id(AddRequest& request, std::int64_t wall_now) {
    // Empty: the writer's own download folder (--dir).
    if (!request.settings.download_dir.empty() && request.settings.download_dir.front() != '/') {
        return make_error("the download folder must be an absolute path");
    }
    TorrentId id{next_id_};
    if (request.id) {
        if (request.id->get() == 0 || torrents_.contains(*request.id)) {
            return make_error("torrent id " + std::to_string(request.id->get()) + " is taken");
        }
        id = *request.id;
    }
    next_id_ = std::max(next_id_, id.get() + 1);
    wall_now_ = wall_now;
    if (request.settings.added_date == 0) request.settings.added_date = wall_now;
    return id;
}

TorrentOptions Session::options_for(TorrentId id) const {
    TorrentOptions options = config_.torrent;
    options.scheduler.seed = config_.seed ^ (std::uint64_t{id.get()} * 0x9e3779b97f4a7c15ull);
    return options;
}

Result<Session::Added> Session::add_magnet(AddRequest request, Clock::time_point now, std::int64_t wall_now) {
    auto link = magnet::parse_magnet(request.metainfo);
    if (!link) return link.error();
    if (TorrentState* known = find(link->info_hash)) return Added{known->id(), true};
    auto taken = take_id(request, wall_now);
    if (!taken) return taken.error();
    const TorrentId id = *taken;
    TorrentOptions options = options_for(id);
    const bool paused = request.settings.paused;
    std::string name = link->display_name.empty() ? to_hex(link->info_hash) : link->display_name;
    auto [it, inserted] = torrents_.try_emplace(id, id, link->info_hash, std::move(name), link->tracker_tiers(),
                                                std::move(request.settings), options);
    for (const std::string& warning : link->warnings) notice(Notice::Kind::warning, id, "magnet: " + warning);
    for (const magnet::Peer& peer : link->peers) {
        // x.pe names an address; a host name would need a resolver the session does not have.
        if (!peer.host.empty() && (std::isdigit(static_cast<unsigned char>(peer.host.front())) != 0 ||
                                   peer.host.find(':') != std::string::npos)) {
            it->second.offer_peer(PeerAddress{peer.host, peer.port});
        } else {
            notice(Notice::Kind::warning, id, "magnet: x.pe host name " + peer.host + " left out (give an address)");
        }
    }
    changed_.insert(id);
    spdlog::info("torrent {} added from a magnet: '{}' ({}), {} tracker(s), {} peer(s)", id.get(),
                 it->second.name(), to_hex(it->second.info_hash()), link->trackers.size(), link->peers.size());
    if (!paused) start(id, now);
    return Added{id, false};
}

void Session::on_metadata_found(const v1::MetadataFound& found, std::vector<zmq::message_t>& frames,
                                Clock::time_point now) {
    const TorrentId id{found.torrent()};
    TorrentState* torrent = find(id);
    if (torrent == nullptr || torrent->info() != nullptr || frames.empty()) return;
    const std::string_view bytes = frames.front().to_string_view();
    // The worker checked it; the orchestrator owns what the stages are told, so again.
    if (sha1(bytes) != torrent->info_hash()) {
        spdlog::warn("torrent {}: ignored metadata that does not match the info-hash", id.get());
        return;
    }
    // The .torrent it becomes: the trackers we know, and the info dictionary as it came
    // (keys in order: announce, announce-list, info).
    std::string metainfo = "d";
    if (!torrent->trackers().empty() && !torrent->trackers().front().empty()) {
        const std::string& first = torrent->trackers().front().front();
        metainfo += "8:announce" + std::to_string(first.size()) + ":" + first;
        metainfo += "13:announce-listl";
        for (const auto& tier : torrent->trackers()) {
            metainfo += "l";
            for (const auto& url : tier) metainfo += std::to_string(url.size()) + ":" + url;
            metainfo += "e";
        }
        metainfo += "e";
    }
    metainfo += "4:info";
    metainfo.append(bytes);
    metainfo += "e";
    auto parsed = Torrent::parse(metainfo);
    std::string problem;
    if (!parsed) {
        problem = parsed.error().describe();
    } else if (parsed->piece_length() > bus::kMaxPieceBytes) {
        problem = "pieces of " + std::to_string(parsed->piece_length()) + " bytes are larger than the stages can pass on";
    }
    if (!problem.empty()) {
        // The hash matches, so this is the torrent's own dictionary: fetching it again would
        // give the same. The torrent fails with the reason.
        torrent->stop();
        notice(Notice::Kind::error, id, "'" + torrent->name() + "': its info dictionary is unusable: " + problem);
        tell_removed(id, false);
        return;
    }
    InfoBytes info;
    info.frame = frame_of(parsed->info_bytes());
    info.release_at = now + config_.keep_info_after_send;
    info_.insert_or_assign(id, std::move(info));
    fetched_.push_back(Fetched{id, torrent->info_hash(), std::move(metainfo)});
    parsed->forget_piece_hashes();
    const std::uint64_t size = parsed->total_size();
    const std::size_t files = parsed->files().size();
    torrent->got_info(std::move(parsed).value(), now);
    changed_.insert(id);
    notice(Notice::Kind::info, id,
           "'" + torrent->name() + "': metadata received from " + std::to_string(found.sources_size()) +
               " peer(s): " + std::to_string(files) + " file(s), " + std::to_string(size) + " bytes");
    // Stopped meanwhile: the stages forgot it, and hear of it again when it starts.
    if (!torrent->active()) return;
    for (const auto& identity : stages_.identities()) {
        const v1::Role role = stages_.find(identity)->role;
        if (role == v1::ROLE_DHT && is_private(*torrent)) {
            send(identity, bus::torrent_removed_message(id, false));  // BEP 27
        } else if (needs_info(role) || role == v1::ROLE_TRACKER) {
            tell_stage(identity, role, *torrent, now);
        }
    }
}

Result<Session::Added> Session::add(AddRequest request, Clock::time_point now, std::int64_t wall_now) {
    if (magnet::is_magnet(request.metainfo)) return add_magnet(std::move(request), now, wall_now);
    auto parsed = Torrent::parse(request.metainfo);
    if (!parsed) return parsed.error();
    if (parsed->piece_length() > bus::kMaxPieceBytes) {
        return make_error("pieces of " + std::to_string(parsed->piece_length()) +
                          " bytes are larger than the stages can pass on (at most " +
                          std::to_string(bus::kMaxPieceBytes) + ")");
    }
    if (TorrentState* known = find(parsed->info_hash())) return Added{known->id(), true};
    auto taken = take_id(request, wall_now);
    if (!taken) return taken.error();
    const TorrentId id = *taken;
    TorrentOptions options = options_for(id);
    options.scheduler.pieces_per_extent = pieces_per_extent(parsed->piece_length());
    const bool paused = request.settings.paused;
    auto [it, inserted] = torrents_.try_emplace(id, id, parsed->info_hash(), parsed->name(),
                                                parsed->trackers(), std::move(request.settings),
                                                options);
    InfoBytes info;
    info.frame = frame_of(parsed->info_bytes());
    info.path = std::move(request.metainfo_path);
    info.release_at = now + config_.keep_info_after_send;
    info_.insert_or_assign(id, std::move(info));
    parsed->forget_piece_hashes();  // 20 bytes a piece the orchestrator never checks
    it->second.set_info(std::move(parsed).value());
    changed_.insert(id);
    spdlog::info("torrent {} added: '{}' ({})", id.get(), it->second.name(), to_hex(it->second.info_hash()));
    if (!paused) start(id, now);
    return Added{id, false};
}

bool Session::start(TorrentId id, Clock::time_point now) {
    TorrentState* torrent = find(id);
    if (torrent == nullptr || !torrent->start(now)) return false;
    torrent->settings().paused = false;
    changed_.insert(id);
    tell_all(*torrent, now);
    return true;
}

bool Session::stop(TorrentId id) {
    TorrentState* torrent = find(id);
    if (torrent == nullptr) return false;
    torrent->settings().paused = true;
    changed_.insert(id);
    if (!torrent->active()) return true;
    tell_removed(id, false);
    torrent->stop();
    return true;
}

bool Session::remove(TorrentId id, bool delete_data) {
    const auto found = torrents_.find(id);
    if (found == torrents_.end()) return false;
    if (found->second.active()) {
        tell_removed(id, delete_data);
    } else if (delete_data && found->second.info() != nullptr) {
        // The writer knows only running torrents: it is told this one's layout first.
        const auto now = Clock::now();
        for (const auto& identity : stages_.identities(v1::ROLE_WRITER)) {
            tell_stage(identity, v1::ROLE_WRITER, found->second, now);
            send(identity, bus::torrent_removed_message(id, true));
        }
    }
    spdlog::info("torrent {} removed{}", id.get(), delete_data ? " with its data" : "");
    removed_.push_back(found->second.info_hash());
    torrents_.erase(found);
    info_.erase(id);
    changed_.erase(id);
    return true;
}

bool Session::verify(TorrentId id) {
    TorrentState* torrent = find(id);
    if (torrent == nullptr) return false;
    if (!torrent->active() && !start(id, Clock::now())) return false;
    if (!torrent->begin_verify()) return false;
    v1::Envelope envelope;
    envelope.mutable_verify_torrent()->set_torrent(id.get());
    send_role(v1::ROLE_WRITER, envelope);
    return true;
}

TorrentState* Session::find(TorrentId id) {
    const auto found = torrents_.find(id);
    return found == torrents_.end() ? nullptr : &found->second;
}

const TorrentState* Session::find(TorrentId id) const {
    const auto found = torrents_.find(id);
    return found == torrents_.end() ? nullptr : &found->second;
}

TorrentState* Session::find(const Sha1Digest& info_hash) {
    for (auto& [id, torrent] : torrents_) {
        if (torrent.info_hash() == info_hash) return &torrent;
    }
    return nullptr;
}

bool Session::all_complete() const {
    if (torrents_.empty()) return false;
    return std::all_of(torrents_.begin(), torrents_.end(),
                       [](const auto& entry) { return entry.second.complete(); });
}

std::uint32_t Session::peers_connected() const { return stages_.peers_connected(); }

std::string Session::stall_note() const {
    std::string note;
    std::size_t running = 0;
    for (const auto& [id, torrent] : torrents_) running += torrent.active() ? 1 : 0;
    for (const auto& [id, torrent] : torrents_) {
        const bool fetching = torrent.phase() == TorrentPhase::metadata;
        if (!torrent.active() || (torrent.stall().reason().empty() && !fetching)) continue;
        if (!note.empty()) note += " | ";
        if (running > 1) note += "'" + torrent.name() + "': ";
        if (fetching) {
            note += "fetching metadata";
            if (torrent.stall().reason().empty()) {
                note += " from " + std::to_string(torrent.peers_connected()) + " peer(s)";
                continue;
            }
            note += ": ";
        }
        note += torrent.stall().reason();
    }
    return note;
}

void Session::check_stalls(Clock::time_point now) {
    // Counting a torrent's peers is linear in them: once a second is often enough.
    if (now < next_stall_check_) return;
    next_stall_check_ = now + std::chrono::seconds(1);
    for (auto& [id, torrent] : torrents_) {
        const std::string before = torrent.stall().summary();
        const bool due = torrent.update_stall(now);
        const std::string& after = torrent.stall().summary();
        if (after != before && !after.empty()) {
            notice(Notice::Kind::info, id, "'" + torrent.name() + "': " + torrent.stall().reason());
        } else if (after.empty() && !before.empty() && torrent.active()) {
            spdlog::info("torrent {}: peers again", id.get());
        }
        if (!due) continue;
        if (const std::size_t revived = torrent.directory().revive_given_up(now); revived > 0) {
            spdlog::info("torrent {}: trying {} peer(s) given up on again", id.get(), revived);
        }
        const auto ask = tracker_stats_message(torrent, v1::TrackerStats::NONE, announced_port(), true);
        if (!torrent.trackers().empty()) {
            spdlog::info("torrent {}: no peers: asking the trackers for more now", id.get());
            send_role(v1::ROLE_TRACKER, ask);
        }
        if (!is_private(torrent)) send_role(v1::ROLE_DHT, ask);
    }
}

void Session::set_metainfo_path(TorrentId id, std::string path) {
    const auto found = info_.find(id);
    if (found != info_.end()) found->second.path = std::move(path);
}

std::string Session::metainfo_path(TorrentId id) const {
    const auto found = info_.find(id);
    return found == info_.end() ? std::string{} : found->second.path;
}

// --- the stages ---

void Session::on_hello(const std::string& identity, const v1::Hello& hello, Clock::time_point now) {
    const Stage* known = stages_.find(identity);
    // ControlLink repeats Hello until its Welcome arrives: the same process again is no restart.
    const bool repeat = known != nullptr && known->pid == hello.pid() && known->role == hello.role();
    if (!repeat) {
        const bool first_of_its_role = roles_joined_.insert(hello.role()).second;
        if (auto previous = stages_.remove(identity)) {
            spdlog::info("'{}' restarted: releasing what its previous run held", identity);
            if (config_.metrics != nullptr) {
                config_.metrics
                    ->counter("piecework_stage_restarts_total",
                              "Stages that said Hello again under their name with a new pid",
                              {{"role", v1::Role_Name(hello.role())}})
                    .add();
            }
            on_stage_lost(*previous);
        } else if (hello.role() == v1::ROLE_VERIFIER && !first_of_its_role) {
            // A previous verifier may have been declared gone while frozen, then taken
            // deliveries until it exited: whatever is still marked delivered went to a dead
            // process. (A duplicate, if its data does arrive, is harmless.) Not so for the
            // first verifier: pieces delivered before its Hello wait in its socket's queue.
            lose_verifier();
        } else if (hello.role() == v1::ROLE_WRITER && !first_of_its_role) {
            lose_writer();  // the same for pieces verified towards a dead writer
        }
        stages_.add(identity, hello.role(), hello.pid(), now);
        spdlog::info("'{}' joined (role {}, pid {})", identity, v1::Role_Name(hello.role()),
                     hello.pid());
    } else {
        stages_.find(identity)->last_heard = now;
    }
    v1::Envelope envelope;
    auto* welcome = envelope.mutable_welcome();
    welcome->set_peer_id(config_.peer_id);
    welcome->set_heartbeat_ms(static_cast<std::uint32_t>(config_.heartbeat.count()));
    welcome->set_listen_port(config_.listen_port);
    welcome->set_encryption(bus::to_proto(config_.encryption));
    send(identity, std::move(envelope));
    if (hello.role() == v1::ROLE_PEER_WORKER && dht_port_ != 0) {
        v1::Envelope port;
        port.mutable_dht_port()->set_port(dht_port_);
        send(identity, std::move(port));
    }
    if (hello.role() == v1::ROLE_PEER_WORKER) {
        // Its share of the rate limits before its first torrent: waiting for the next round
        // of budgets let a new worker fetch a second at full speed (16 MiB at a 128K limit).
        worker_use_[identity].last_budget.clear();
        send_rate_budgets();
    }
    for (const auto& [id, torrent] : torrents_) {
        if (torrent.active()) tell_stage(identity, hello.role(), torrent, now);
    }
}

void Session::set_dht_port(std::uint16_t port) {
    if (port == dht_port_) return;
    dht_port_ = port;
    v1::Envelope envelope;
    envelope.mutable_dht_port()->set_port(port);
    send_role(v1::ROLE_PEER_WORKER, envelope);
}

void Session::set_encryption(Encryption encryption) {
    if (encryption == config_.encryption) return;
    config_.encryption = encryption;
    v1::Envelope envelope;
    envelope.mutable_encryption_policy()->set_encryption(bus::to_proto(encryption));
    send_role(v1::ROLE_PEER_WORKER, envelope);
}

void Session::on_stage_lost(const Stage& stage) {
    if (config_.metrics != nullptr) {
        config_.metrics
            ->counter("piecework_stages_lost_total", "Stages that went silent, left or were replaced",
                      {{"role", v1::Role_Name(stage.role)}})
            .add();
    }
    switch (stage.role) {
        case v1::ROLE_PEER_WORKER:
            for (auto& [id, torrent] : torrents_) {
                torrent.on_worker_gone(stage.identity);
                torrent.choker().remove_worker(stage.identity);
            }
            worker_counters_.erase(stage.identity);
            worker_use_.erase(stage.identity);
            break;
        case v1::ROLE_WRITER: lose_writer(); break;
        case v1::ROLE_VERIFIER: lose_verifier(); break;
        case v1::ROLE_DHT: set_dht_port(0); break;
        default: break;
    }
}

void Session::lose_verifier() {
    for (auto& [id, torrent] : torrents_) torrent.on_verifier_lost();
    free_all_delivered_slots();
}

void Session::lose_writer() {
    for (auto& [id, torrent] : torrents_) torrent.on_writer_lost();
    free_all_delivered_slots();
}

void Session::free_all_delivered_slots() {
    // Pieces in a worker's arena may have been in the dead stage's hands or queued towards
    // it: nobody would ever free their slots. A piece still in flight whose slot is reused
    // fails the readers' tag check and comes back as PiecesDropped.
    v1::Envelope envelope;
    auto* freed = envelope.mutable_slots_freed();
    freed->set_all_delivered(true);
    for (const auto& worker : stages_.identities(v1::ROLE_PEER_WORKER)) {
        freed->set_worker(worker);
        send(worker, envelope);
    }
}

void Session::handle(bus::Incoming& in, Clock::time_point now) {
    v1::Envelope& envelope = in.envelope;
    bus::count_message(config_.metrics, false, envelope);
    if (envelope.has_hello()) {
        on_hello(in.identity, envelope.hello(), now);
        return;
    }
    Stage* stage = stages_.find(in.identity);
    if (stage == nullptr) {
        if (strangers_.size() < kMaxStrangersRemembered && strangers_.insert(in.identity).second) {
            spdlog::warn("ignoring messages from '{}': it never said Hello", in.identity);
        }
        return;
    }
    stage->last_heard = now;
    std::vector<Cancel> cancels;
    switch (envelope.body_case()) {
        case v1::Envelope::kHeartbeat:
            on_heartbeat(*stage, envelope.heartbeat(), now);
            break;
        case v1::Envelope::kGoodbye: {
            spdlog::info("'{}' is leaving: {}", in.identity, envelope.goodbye().reason());
            if (auto gone = stages_.remove(in.identity)) on_stage_lost(*gone);
            break;
        }
        case v1::Envelope::kPeersFound:
            if (TorrentState* torrent = find(TorrentId{envelope.peers_found().torrent()});
                torrent != nullptr && torrent->active()) {
                for (const auto& peer : envelope.peers_found().peers()) {
                    torrent->offer_peer(PeerAddress{peer.ip(), peer.port()});
                }
            }
            break;
        case v1::Envelope::kTrackerStatus:
            on_tracker_status(envelope.tracker_status());
            break;
        case v1::Envelope::kDhtNodes:
            // Nodes peers named (BEP 5's port message): the DHT node pings them.
            if (stage->role == v1::ROLE_PEER_WORKER) send_role(v1::ROLE_DHT, envelope);
            break;
        case v1::Envelope::kMetadataFound:
            if (stage->role == v1::ROLE_PEER_WORKER) on_metadata_found(envelope.metadata_found(), in.frames, now);
            break;
        case v1::Envelope::kPeerConnected:
            if (TorrentState* torrent = find(TorrentId{envelope.peer_connected().torrent()})) {
                if (envelope.peer_connected().incoming()) {
                    torrent->directory().incoming(envelope.peer_connected().peer(), in.identity);
                }
                torrent->on_peer_connected(envelope.peer_connected().peer(),
                                           envelope.peer_connected().peer_id());
            }
            break;
        case v1::Envelope::kPeerDisconnected:
            if (TorrentState* torrent = find(TorrentId{envelope.peer_disconnected().torrent()})) {
                torrent->on_peer_gone(envelope.peer_disconnected().peer(), now,
                                      envelope.peer_disconnected().seed());
                torrent->choker().remove(envelope.peer_disconnected().peer());
            }
            break;
        case v1::Envelope::kPeerStats:
            on_peer_stats(in.identity, envelope.peer_stats(), now);
            break;
        case v1::Envelope::kPeerHas: {
            const v1::PeerHas& has = envelope.peer_has();
            TorrentState* torrent = find(TorrentId{has.torrent()});
            if (torrent == nullptr) break;
            const auto bits = in.frames.empty() ? std::span<const std::uint8_t>{} : bytes_of(in.frames[0]);
            const std::span<const std::uint32_t> haves(has.haves().data(), static_cast<std::size_t>(has.haves_size()));
            if (!torrent->on_peer_has(has.peer(), has.have_all(), bits, has.bitfield() && !in.frames.empty(), haves) ||
                (has.bitfield() && in.frames.empty())) {
                spdlog::warn("torrent {}: ignored a malformed availability report for peer {}",
                             has.torrent(), has.peer());
            }
            break;
        }
        case v1::Envelope::kWorkRequest:
            on_work_request(in.identity, envelope.work_request(), now);
            break;
        case v1::Envelope::kLeaseReleased:
            if (TorrentState* torrent = find(TorrentId{envelope.lease_released().torrent()})) {
                for (const auto id : envelope.lease_released().lease_ids()) torrent->on_released(id);
            }
            break;
        case v1::Envelope::kPiecesDelivered:
            for (const auto& ref : envelope.pieces_delivered().pieces()) {
                if (TorrentState* torrent = find(TorrentId{ref.torrent()})) torrent->on_delivered(ref.lease_id());
            }
            break;
        case v1::Envelope::kPiecesVerified:
            for (const auto& ref : envelope.pieces_verified().pieces()) {
                TorrentState* torrent = find(TorrentId{ref.torrent()});
                if (torrent == nullptr) continue;
                cancels.clear();
                torrent->on_verified(PieceIndex{ref.piece()}, ref.lease_id(), cancels);
                send_cancels(torrent->id(), cancels);
            }
            break;
        case v1::Envelope::kPieceFailed:
            on_piece_failed(envelope.piece_failed(), now);
            break;
        case v1::Envelope::kPiecesWritten: {
            // What became ours, per torrent: the workers may announce and serve it now.
            std::map<TorrentId, v1::Envelope> available;
            for (const auto& ref : envelope.pieces_written().pieces()) {
                TorrentState* torrent = find(TorrentId{ref.torrent()});
                if (torrent == nullptr) continue;
                const PieceIndex piece{ref.piece()};
                const bool had = torrent->is_done(piece);
                cancels.clear();
                torrent->on_written(piece, cancels, now);
                send_cancels(torrent->id(), cancels);
                if (had || !torrent->is_done(piece)) continue;
                auto* message = available[torrent->id()].mutable_pieces_available();
                message->set_torrent(ref.torrent());
                message->add_pieces(ref.piece());
            }
            for (auto& [id, message] : available) {
                send_role(v1::ROLE_PEER_WORKER, message);
                if (TorrentState* torrent = find(id)) after_change(*torrent, now);
            }
            break;
        }
        case v1::Envelope::kPiecesDropped:
            spdlog::debug("'{}' dropped {} piece(s), fetching them again: {}", in.identity,
                          envelope.pieces_dropped().pieces_size(), envelope.pieces_dropped().reason());
            for (const auto& ref : envelope.pieces_dropped().pieces()) {
                if (TorrentState* torrent = find(TorrentId{ref.torrent()})) {
                    torrent->on_dropped(PieceIndex{ref.piece()}, ref.lease_id());
                }
            }
            break;
        case v1::Envelope::kSlotsFreed:
            on_slots_freed(*stage, envelope);
            break;
        case v1::Envelope::kWriteFailed:
            on_write_failed(envelope.write_failed(), now);
            break;
        case v1::Envelope::kResumeState:
            on_resume_state(envelope.resume_state(), in.frames, now);
            break;
        default:
            spdlog::debug("ignoring a message of type {} from '{}'", bus::body_name(envelope), in.identity);
    }
}

void Session::on_heartbeat(Stage& stage, const v1::Heartbeat& beat, Clock::time_point now) {
    stage.counters = beat;
    if (stage.role == v1::ROLE_DHT) return set_dht_port(static_cast<std::uint16_t>(std::min<std::uint32_t>(beat.listen_port(), 65535)));
    if (stage.role != v1::ROLE_PEER_WORKER) return;
    WorkerUse& use = worker_use_[stage.identity];
    if (use.reported && now > use.at) {
        const double seconds = std::chrono::duration<double>(now - use.at).count();
        const auto grown = [](std::uint64_t value, std::uint64_t before) { return value >= before ? value - before : value; };
        use.upload_rate = static_cast<double>(grown(beat.bytes_uploaded(), use.uploaded)) / seconds;
        use.download_rate = static_cast<double>(grown(beat.bytes_downloaded(), use.downloaded)) / seconds;
    }
    const bool port_changed = use.reported && use.listen_port != beat.listen_port();
    use.uploaded = beat.bytes_uploaded();
    use.downloaded = beat.bytes_downloaded();
    use.at = now;
    use.listen_port = beat.listen_port();
    use.reported = true;
    if (port_changed) {
        for (const auto& [id, torrent] : torrents_) {
            if (torrent.active()) send_tracker_stats(torrent, v1::TrackerStats::NONE);
        }
    }
    auto& latest = worker_counters_[stage.identity];
    for (const v1::TorrentCounters& counters : beat.torrents()) {
        const TorrentId id{counters.torrent()};
        v1::TorrentCounters& before = latest[id];
        // Counters only grow within one run of the worker; a smaller one is a new run.
        const auto grown = [](std::uint64_t now_value, std::uint64_t before_value) {
            return now_value >= before_value ? now_value - before_value : now_value;
        };
        const std::uint64_t down = grown(counters.bytes_downloaded(), before.bytes_downloaded());
        const std::uint64_t up = grown(counters.bytes_uploaded(), before.bytes_uploaded());
        before = counters;
        downloaded_this_run_ += down;
        uploaded_this_run_ += up;
        TorrentState* torrent = find(id);
        if (torrent == nullptr) continue;
        torrent->add_transferred(down, up, now);
        if (down + up > 0) torrent->settings().activity_date = wall_now_;
        std::uint32_t peers = 0;
        for (const auto& [worker, per_torrent] : worker_counters_) {
            const auto found = per_torrent.find(id);
            if (found != per_torrent.end()) peers += found->second.peers_connected();
        }
        torrent->set_peers_connected(peers);
    }
}

void Session::on_work_request(const std::string& identity, const v1::WorkRequest& request,
                              Clock::time_point now) {
    v1::Envelope envelope;
    auto* leases = envelope.mutable_leases();
    leases->set_peer(request.peer());
    leases->set_torrent(request.torrent());
    if (TorrentState* torrent = find(TorrentId{request.torrent()})) {
        const std::size_t count = std::min(request.count(), config_.max_leases_per_request);
        for (const Grant& grant : torrent->request(identity, request.peer(), count, now)) {
            auto* lease = leases->add_leases();
            lease->set_piece(grant.piece.get());
            lease->set_lease_id(grant.lease_id);
            lease->set_endgame(grant.endgame);
        }
    }
    // Always answered, even with nothing: the worker asks again later.
    send(identity, std::move(envelope));
}

void Session::on_slots_freed(const Stage& from, v1::Envelope& envelope) {
    if (from.role != v1::ROLE_VERIFIER && from.role != v1::ROLE_WRITER) {
        spdlog::debug("ignoring SlotsFreed from '{}': only a verifier or a writer frees slots",
                      from.identity);
        return;
    }
    auto* freed = envelope.mutable_slots_freed();
    const Stage* worker = stages_.find(freed->worker());
    if (worker == nullptr || worker->role != v1::ROLE_PEER_WORKER) {
        spdlog::debug("ignoring SlotsFreed from '{}' for '{}': not a worker we know",
                      from.identity, freed->worker());
        return;
    }
    // Freeing everything a worker delivered is only safe when a stage is known to be dead,
    // which only the orchestrator can tell: a live stage may name its own leases only.
    freed->set_all_delivered(false);
    if (freed->lease_ids().empty()) return;
    const std::string identity = freed->worker();
    send(identity, std::move(envelope));
}

namespace {

// A peer id for a log line: its printable bytes (clients put their name and version first),
// the others as '.'.
std::string printable_peer_id(const std::string& id) {
    std::string text;
    for (const char c : id) text.push_back(c >= 0x20 && c < 0x7f ? c : '.');
    return text;
}

std::string describe_ban(const Ban& ban) {
    if (ban.whole_address()) return "address " + ban.ip;
    std::string text = "peer " + bus::peer_key(ban.ip, ban.port);
    if (!ban.peer_id.empty()) text += " (" + printable_peer_id(ban.peer_id) + ")";
    return text;
}

}  // namespace

void Session::on_piece_failed(const v1::PieceFailed& failed, Clock::time_point now) {
    TorrentState* torrent = find(TorrentId{failed.torrent()});
    if (torrent == nullptr) return;
    const std::vector<std::string> contributors(failed.contributors().begin(), failed.contributors().end());
    const auto peers = torrent->on_failed(PieceIndex{failed.piece()}, failed.lease_id(), contributors);
    for (const Ban& ban : judge_.piece_failed(peers, now)) apply_ban(ban, torrent->id());
}

void Session::apply_ban(const Ban& ban, TorrentId found_in) {
    notice(Notice::Kind::warning, found_in, "banning " + describe_ban(ban) + ": " + ban.reason);
    if (config_.metrics != nullptr) {
        config_.metrics
            ->counter("piecework_peers_banned_total", "Peers (or whole addresses) banned for bad data",
                      {{"scope", ban.whole_address() ? "address" : "peer"}})
            .add();
    }
    for (auto& [id, torrent] : torrents_) torrent.ban(ban);
    v1::Envelope envelope;
    auto* message = envelope.mutable_ban_peer();
    message->set_ip(ban.ip);
    message->set_port(ban.port);
    message->set_peer_id(ban.peer_id);
    message->set_reason(ban.reason);
    send_role(v1::ROLE_PEER_WORKER, envelope);
}

void Session::on_write_failed(const v1::WriteFailed& failed, Clock::time_point now) {
    TorrentState* torrent = find(TorrentId{failed.torrent()});
    if (torrent == nullptr || !torrent->active()) return;
    notice(Notice::Kind::error, torrent->id(), "write failed: " + failed.error());
    if (const auto given_up = torrent->on_write_failed(PieceIndex{failed.piece()}, failed.error(), now)) {
        notice(Notice::Kind::error, torrent->id(), "giving up on '" + torrent->name() + "': " + *given_up);
        tell_removed(torrent->id(), false);
        changed_.insert(torrent->id());
    }
}

void Session::on_resume_state(const v1::ResumeState& resume, std::vector<zmq::message_t>& frames,
                              Clock::time_point now) {
    TorrentState* torrent = find(TorrentId{resume.torrent()});
    if (torrent == nullptr) return;
    const bool first = torrent->phase() == TorrentPhase::checking;
    const auto bits = frames.empty() ? std::span<const std::uint8_t>{} : bytes_of(frames[0]);
    std::vector<Cancel> cancels;
    const auto on_disk = torrent->on_resume_state(bits, resume.checked_all(), now, cancels);
    send_cancels(torrent->id(), cancels);
    if (!on_disk) {
        if (torrent->active()) {
            spdlog::warn("torrent {}: ignoring a resume bitfield of the wrong length", resume.torrent());
        }
        return;
    }
    if (first && *on_disk > 0) {
        notice(Notice::Kind::info, torrent->id(),
               "resumed: " + std::to_string(*on_disk) + " of " + std::to_string(torrent->piece_count()) +
                   " pieces already on disk");
    }
    send_pieces_available(*torrent);
    if (resume.checked_all()) {
        notice(Notice::Kind::info, torrent->id(),
               "verified '" + torrent->name() + "': " + std::to_string(*on_disk) + " of " +
                   std::to_string(torrent->piece_count()) + " pieces on disk");
    }
    after_change(*torrent, now);
}

void Session::on_tracker_status(const v1::TrackerStatus& status) {
    TorrentState* torrent = find(TorrentId{status.torrent()});
    if (torrent == nullptr) return;
    torrent->on_tracker_status(status.tracker(), status.ok(), status.message(), status.peers(),
                               status.next_announce_s(), wall_now_);
    if (status.message().empty()) return;
    notice(status.ok() ? Notice::Kind::info : Notice::Kind::warning, torrent->id(),
           "tracker " + status.tracker() + ": " + status.message());
}

void Session::on_peer_stats(const std::string& worker, const v1::PeerStats& stats, Clock::time_point now) {
    TorrentState* torrent = find(TorrentId{stats.torrent()});
    if (torrent == nullptr || !torrent->active()) return;
    std::vector<ChokeChange> changes;
    for (const v1::PeerStat& peer : stats.peers()) {
        ChokePeer state;
        state.worker = worker;
        state.interested = peer.interested();
        state.snubbed = peer.snubbed();
        state.seed = peer.seed();
        state.download_rate = peer.download_rate();
        state.upload_rate = peer.upload_rate();
        auto more = torrent->choker().update(peer.peer(), state, now);
        changes.insert(changes.end(), more.begin(), more.end());
    }
    send_choke_changes(torrent->id(), changes);
}

void Session::after_change(TorrentState& torrent, Clock::time_point /*now*/) {
    if (!torrent.take_completed()) return;
    torrent.settings().done_date = wall_now_;
    changed_.insert(torrent.id());
    spdlog::info("torrent {} complete: '{}'", torrent.id().get(), torrent.name());
    if (!torrent.completion_sent()) {
        torrent.set_completion_sent();
        send_tracker_stats(torrent, v1::TrackerStats::COMPLETED);
    }
}

// --- time ---

bool Session::busy(const TorrentState& torrent) {
    const TorrentPhase phase = torrent.phase();
    return phase == TorrentPhase::metadata || phase == TorrentPhase::checking ||
           phase == TorrentPhase::downloading || torrent.directory().assigned() > 0;
}

bool Session::any_busy() const {
    return std::any_of(torrents_.begin(), torrents_.end(),
                       [](const auto& entry) { return busy(entry.second); });
}

void Session::assign_peers(Clock::time_point now, bool all) {
    if (!all && !any_busy()) return;
    WorkerLoad load;
    for (const auto& worker : stages_.identities(v1::ROLE_PEER_WORKER)) load[worker] = 0;
    if (load.empty()) return;
    std::size_t assigned = 0;
    for (const auto& [id, torrent] : torrents_) {
        for (auto& [worker, count] : load) count += torrent.directory().peers_of(worker);
        assigned += torrent.directory().assigned();
    }
    std::size_t room = config_.max_peers > assigned ? config_.max_peers - assigned : 0;
    for (auto& [id, torrent] : torrents_) {
        if (room == 0) break;
        if (!all && !busy(torrent)) continue;
        // Seeds dial too: a leecher that cannot or will not dial us (behind a NAT, or
        // Transmission refusing loopback addresses) is reached only this way. Two seeds that
        // meet part at once (nothing to trade), and a seed is not dialled again while we seed.
        if (torrent.phase() != TorrentPhase::metadata && torrent.phase() != TorrentPhase::checking &&
            torrent.phase() != TorrentPhase::downloading && torrent.phase() != TorrentPhase::seeding) {
            continue;
        }
        const std::size_t held = torrent.directory().assigned();
        const std::size_t limit = torrent.settings().peer_limit;
        const std::size_t own_room = limit > held ? limit - held : 0;
        const bool we_seed = torrent.phase() == TorrentPhase::seeding;
        for (auto& assignment : torrent.directory().assign(now, load, std::min(room, own_room), we_seed)) {
            v1::Envelope envelope;
            auto* add = envelope.mutable_add_peers();
            add->set_torrent(id.get());
            for (const auto& peer : assignment.peers) {
                auto* added = add->add_peers();
                added->set_ip(peer.ip);
                added->set_port(peer.port);
            }
            room -= std::min(room, assignment.peers.size());
            send(assignment.worker, std::move(envelope));
        }
    }
}

void Session::tick(Clock::time_point now, std::int64_t wall_now) {
    wall_now_ = wall_now;
    const bool walk_all = now >= next_walk_all_;
    if (walk_all) {
        next_walk_all_ = now + kWalkAllPeriod;
        for (auto& [id, info] : info_) {
            if (info.frame.size() > 0 && !info.path.empty() && now >= info.release_at) {
                info.frame.rebuild();  // TorrentInfos still queued keep their reference
            }
        }
    }
    if (now >= next_heartbeat_) {
        next_heartbeat_ = now + config_.heartbeat;
        v1::Envelope beat;
        beat.mutable_heartbeat();
        for (const auto& identity : stages_.identities()) send(identity, beat);
        for (const Stage& stage :
             stages_.take_silent_since(now - config_.heartbeat * config_.missed_heartbeats)) {
            spdlog::warn("'{}' has been silent for {} heartbeats: treating it as gone",
                         stage.identity, config_.missed_heartbeats);
            on_stage_lost(stage);
        }
    }
    assign_peers(now, walk_all);
    if (next_tracker_stats_ == Clock::time_point{}) next_tracker_stats_ = now + config_.tracker_stats_period;
    const bool stats_due = now >= next_tracker_stats_;
    if (stats_due) next_tracker_stats_ = now + config_.tracker_stats_period;
    for (auto& [id, torrent] : torrents_) {
        after_change(torrent, now);  // a completion is told at once, busy or not
        if (!walk_all && !stats_due && !busy(torrent)) continue;
        torrent.tick(now);
        if (walk_all) send_cancels(id, torrent.expire(now));
        if (stats_due && torrent.active()) send_tracker_stats(torrent, v1::TrackerStats::NONE);
        if (torrent.active()) {
            send_choke_changes(id, torrent.choker().tick(now, torrent.phase() == TorrentPhase::seeding));
        }
    }
    if (walk_all) enforce_seed_limits();
    check_stalls(now);
    if (now >= next_budget_) {
        next_budget_ = now + std::chrono::seconds(1);
        send_rate_budgets();
    }
}

}  // namespace pw::orchestrator
