#include "orchestrator/torrent_state.hpp"

#include <algorithm>

namespace pw::orchestrator {

namespace {

constexpr auto kRateSamplePeriod = std::chrono::milliseconds(250);
// Sequential order's readahead: what a player reading from the front wants in hand.
constexpr std::uint64_t kReadaheadBytes = 16ull << 20;
constexpr std::uint32_t kMinReadaheadPieces = 4;

}  // namespace

Result<std::vector<bool>> parse_file_selection(std::string_view spec, std::size_t files) {
    std::vector<bool> unwanted(files, true);
    const auto number = [&](std::string_view text) -> Result<std::size_t> {
        std::size_t value = 0;
        if (text.empty() || text.size() > 9 || text.find_first_not_of("0123456789") != std::string_view::npos) {
            std::string message = "'";
            message.append(text).append("' is not a file number");
            return make_error(std::move(message));
        }
        for (const char c : text) value = value * 10 + static_cast<std::size_t>(c - '0');
        if (value == 0 || value > files) {
            std::string message = "there is no file ";
            message.append(text).append(" (the torrent has ").append(std::to_string(files));
            message.append("; see piecework inspect)");
            return make_error(std::move(message));
        }
        return value;
    };
    if (spec.empty()) return make_error("no file numbers");
    while (!spec.empty()) {
        const auto comma = spec.find(',');
        const std::string_view item = spec.substr(0, comma);
        spec = comma == std::string_view::npos ? std::string_view{} : spec.substr(comma + 1);
        const auto dash = item.find('-');
        auto first = number(item.substr(0, dash));
        if (!first) return first.error();
        std::size_t last = *first;
        if (dash != std::string_view::npos) {
            auto end = number(item.substr(dash + 1));
            if (!end) return end.error();
            if (*end < *first) {
                std::string message = "'";
                message.append(item).append("' is a range backwards");
                return make_error(std::move(message));
            }
            last = *end;
        }
        for (std::size_t i = *first; i <= last; ++i) unwanted[i - 1] = false;
    }
    return unwanted;
}

const char* phase_name(TorrentPhase phase) {
    switch (phase) {
        case TorrentPhase::stopped: return "stopped";
        case TorrentPhase::metadata: return "fetching metadata";
        case TorrentPhase::checking: return "checking";
        case TorrentPhase::verifying: return "verifying";
        case TorrentPhase::downloading: return "downloading";
        case TorrentPhase::seeding: return "seeding";
        case TorrentPhase::failed: return "failed";
    }
    return "unknown";
}

TorrentState::TorrentState(TorrentId id, const Sha1Digest& info_hash, std::string name,
                           std::vector<std::vector<std::string>> trackers,
                           TorrentSettings settings, TorrentOptions options)
    : id_(id), info_hash_(info_hash), name_(std::move(name)), trackers_(std::move(trackers)),
      settings_(std::move(settings)), options_(options), directory_(options.directory),
      choker_(options.upload_slots, options.scheduler.seed) {
    std::uint32_t tier = 0;
    for (const auto& urls : trackers_) {
        for (const auto& url : urls) tracker_reports_.push_back(TrackerReport{url, tier, false, false, {}, 0, 0, 0});
        ++tier;
    }
}

void TorrentState::set_info(Torrent info) {
    if (info_) return;
    name_ = info.name();
    done_.assign(info.piece_count(), false);
    info_.emplace(std::move(info));
    listed_.clear();
    for (std::size_t i = 0; i < info_->files().size(); ++i) {
        if (!info_->files()[i].pad) listed_.push_back(i);
    }
    apply_selection(Clock::time_point{});
}

bool TorrentState::file_wanted(std::size_t listed) const {
    return listed >= settings_.file_unwanted.size() || !settings_.file_unwanted[listed];
}

int TorrentState::file_priority(std::size_t listed) const {
    return listed < settings_.file_priority.size() ? std::clamp<int>(settings_.file_priority[listed], -1, 1) : 0;
}

bool TorrentState::piece_wanted(PieceIndex piece) const {
    return piece.get() < levels_.size() && levels_[piece.get()] != PiecePicker::kNotWanted;
}

bool TorrentState::choose_files(const std::vector<std::uint32_t>& listed, std::optional<bool> wanted,
                                std::optional<int> priority, Clock::time_point now) {
    if (!info_) return false;
    for (const auto index : listed) {
        if (index >= listed_.size()) return false;
    }
    std::vector<std::uint32_t> all;
    if (listed.empty()) {
        for (std::uint32_t i = 0; i < listed_.size(); ++i) all.push_back(i);
    }
    settings_.file_unwanted.resize(listed_.size(), false);
    settings_.file_priority.resize(listed_.size(), 0);
    for (const auto index : listed.empty() ? all : listed) {
        if (wanted) settings_.file_unwanted[index] = !*wanted;
        if (priority) settings_.file_priority[index] = static_cast<std::int8_t>(std::clamp(*priority, -1, 1));
    }
    apply_selection(now);
    return true;
}

void TorrentState::set_sequential(bool on) {
    settings_.sequential = on;
    apply_selection(Clock::time_point{});
}

std::string TorrentState::unwanted_files_bits() const {
    if (!info_) return {};
    std::string bits((info_->files().size() + 7) / 8, '\0');
    for (std::size_t i = 0; i < listed_.size(); ++i) {
        if (file_wanted(i)) continue;
        const std::size_t file = listed_[i];
        bits[file / 8] = static_cast<char>(bits[file / 8] | (0x80 >> (file % 8)));
    }
    return bits;
}

void TorrentState::apply_selection(Clock::time_point now) {
    if (!info_) return;
    const std::uint32_t count = info_->piece_count();
    const std::uint64_t piece_length = info_->piece_length();
    levels_.assign(count, PiecePicker::kNotWanted);
    for (std::size_t i = 0; i < listed_.size(); ++i) {
        const FileEntry& file = info_->files()[listed_[i]];
        if (!file_wanted(i) || file.length == 0) continue;
        const int priority = file_priority(i);
        const std::uint8_t base = priority < 0 ? PiecePicker::kLow : priority > 0 ? PiecePicker::kHigh : PiecePicker::kNormal;
        const auto first = static_cast<std::uint32_t>(file.offset / piece_length);
        const auto last = static_cast<std::uint32_t>((file.offset + file.length - 1) / piece_length);
        for (std::uint32_t piece = first; piece <= last && piece < count; ++piece) {
            levels_[piece] = std::max(levels_[piece], base);
        }
        // First and last piece first: a player reads a file's index there.
        const auto edge = static_cast<std::uint8_t>(base + 1);
        levels_[first] = std::max(levels_[first], edge);
        if (last < count) levels_[last] = std::max(levels_[last], edge);
    }
    wanted_pieces_ = wanted_done_pieces_ = 0;
    wanted_bytes_ = wanted_done_bytes_ = 0;
    for (std::uint32_t piece = 0; piece < count; ++piece) {
        if (levels_[piece] == PiecePicker::kNotWanted) continue;
        const std::uint64_t size = info_->piece_size(PieceIndex{piece});
        ++wanted_pieces_;
        wanted_bytes_ += size;
        if (done_[piece]) {
            ++wanted_done_pieces_;
            wanted_done_bytes_ += size;
        }
    }
    if (scheduler_) {
        scheduler_->pieces().set_levels(levels_);
        const auto window = static_cast<std::uint32_t>(
            std::max<std::uint64_t>(kMinReadaheadPieces, kReadaheadBytes / std::max<std::uint64_t>(piece_length, 1)));
        scheduler_->pieces().set_sequential(settings_.sequential, window);
    }
    if (phase_ == TorrentPhase::seeding && !complete()) {
        phase_ = TorrentPhase::downloading;  // more is wanted now
        seeding_since_.reset();
    }
    become_complete_if_done(now);
}

void TorrentState::count_done(std::uint32_t piece, bool done) {
    if (done_[piece] == done) return;
    done_[piece] = done;
    const std::uint64_t size = info_->piece_size(PieceIndex{piece});
    const bool wanted = levels_[piece] != PiecePicker::kNotWanted;
    if (done) {
        ++pieces_done_;
        done_bytes_ += size;
        if (wanted) ++wanted_done_pieces_, wanted_done_bytes_ += size;
    } else {
        --pieces_done_;
        done_bytes_ -= size;
        if (wanted) --wanted_done_pieces_, wanted_done_bytes_ -= size;
    }
}

bool TorrentState::is_done(PieceIndex piece) const {
    return piece.get() < done_.size() && done_[piece.get()];
}

bool TorrentState::start(Clock::time_point now) {
    if (active()) return false;
    if (!info_) {
        phase_ = TorrentPhase::metadata;
        finished_ = false;
        error_.clear();
        return true;
    }
    phase_ = TorrentPhase::checking;
    finished_ = false;
    error_.clear();
    write_failures_in_a_row_ = 0;
    write_retries_.clear();
    resumed_since_start_ = false;
    scheduler_.emplace(info_->piece_count(), options_.scheduler, options_.grants);
    for (std::uint32_t piece = 0; piece < info_->piece_count(); ++piece) {
        if (done_[piece]) scheduler_->written(PieceIndex{piece});
    }
    apply_selection(now);
    resumed_bytes_ = done_bytes_;
    next_rate_sample_ = now;
    return true;
}

bool TorrentState::got_info(Torrent info, Clock::time_point now) {
    if (info_) return false;
    set_info(std::move(info));
    if (phase_ != TorrentPhase::metadata) return true;
    // start() from stopped, without stop(): the peers found so far stay assigned.
    phase_ = TorrentPhase::stopped;
    return start(now);
}

std::string TorrentState::done_bitfield() const {
    std::string bits((done_.size() + 7) / 8, '\0');
    for (std::size_t piece = 0; piece < done_.size(); ++piece) {
        if (done_[piece]) bits[piece / 8] = static_cast<char>(bits[piece / 8] | (0x80 >> (piece % 8)));
    }
    return bits;
}

double TorrentState::ratio() const {
    const std::uint64_t cost = std::max(settings_.downloaded_ever, total_size());
    return cost == 0 ? 0.0 : static_cast<double>(settings_.uploaded_ever) / static_cast<double>(cost);
}

void TorrentState::finish() {
    stop();
    finished_ = true;
}

void TorrentState::stop() {
    if (phase_ == TorrentPhase::stopped) return;
    if (phase_ != TorrentPhase::failed) phase_ = TorrentPhase::stopped;
    scheduler_.reset();
    directory_.release_all();
    choker_.clear();
    peers_connected_ = 0;
    write_retries_.clear();
    seeding_since_.reset();
}

bool TorrentState::begin_verify() {
    if (!active()) return false;
    phase_ = TorrentPhase::verifying;
    return true;
}

std::optional<std::uint32_t> TorrentState::on_resume_state(std::span<const std::uint8_t> bits,
                                                           bool checked_all,
                                                           Clock::time_point now,
                                                           std::vector<Cancel>& cancels) {
    if (!active() || !info_) return std::nullopt;
    const std::uint32_t count = info_->piece_count();
    if (bits.size() != (std::uint64_t{count} + 7) / 8) return std::nullopt;
    const bool truth = checked_all || !resumed_since_start_;
    resumed_since_start_ = true;
    std::uint32_t on_disk = 0;
    for (std::uint32_t piece = 0; piece < count; ++piece) {
        const bool set = ((bits[piece / 8] >> (7 - piece % 8)) & 1u) != 0;
        if (set) {
            ++on_disk;
            mark_written(PieceIndex{piece}, cancels, now);
        } else if (truth && done_[piece]) {
            count_done(piece, false);
            scheduler_->missing(PieceIndex{piece});
        }
    }
    resumed_bytes_ = std::min(resumed_bytes_, done_bytes_);
    if (truth) resumed_bytes_ = done_bytes_;
    // A verify ends with its own ResumeState (checked_all); the start's may come before it.
    if (phase_ == TorrentPhase::checking || (phase_ == TorrentPhase::verifying && checked_all)) {
        phase_ = complete() ? TorrentPhase::seeding : TorrentPhase::downloading;
        if (phase_ == TorrentPhase::seeding && !seeding_since_) seeding_since_ = now;
        progress_rate_ = RateMeter{};
        next_rate_sample_ = now;
    }
    // Everything on disk at the start is completion too, dated the first time.
    if (complete() && settings_.done_date == 0) just_completed_ = true;
    return on_disk;
}

void TorrentState::mark_written(PieceIndex piece, std::vector<Cancel>& cancels, Clock::time_point now) {
    if (!info_ || piece.get() >= info_->piece_count()) return;
    if (scheduler_) {
        auto more = scheduler_->written(piece);
        cancels.insert(cancels.end(), more.begin(), more.end());
    }
    if (done_[piece.get()]) return;
    count_done(piece.get(), true);
    become_complete_if_done(now);
}

void TorrentState::become_complete_if_done(Clock::time_point now) {
    if (!complete()) return;
    if (phase_ == TorrentPhase::downloading) {
        phase_ = TorrentPhase::seeding;
        seeding_since_ = now;
        just_completed_ = true;
    }
}

void TorrentState::on_written(PieceIndex piece, std::vector<Cancel>& cancels, Clock::time_point now) {
    if (!active()) return;
    write_failures_in_a_row_ = 0;
    mark_written(piece, cancels, now);
}

std::optional<std::string> TorrentState::on_write_failed(PieceIndex piece, const std::string& error,
                                                         Clock::time_point now) {
    if (!active() || !info_ || piece.get() >= info_->piece_count()) return std::nullopt;
    scheduler_->write_failed(piece);
    write_retries_.emplace_back(now + options_.write_retry_delay, piece);
    if (++write_failures_in_a_row_ < options_.max_write_failures_in_a_row) return std::nullopt;
    error_ = "write failed: " + error;
    stop();
    phase_ = TorrentPhase::failed;
    return error_;
}

void TorrentState::on_verified(PieceIndex piece, std::uint64_t lease_id, std::vector<Cancel>& cancels) {
    if (!scheduler_) return;
    auto more = scheduler_->verified(piece, lease_id);
    cancels.insert(cancels.end(), more.begin(), more.end());
}

std::vector<PeerIdentity> TorrentState::on_failed(PieceIndex piece, std::uint64_t lease_id,
                                                  const std::vector<std::string>& contributors) {
    if (!scheduler_) return {};
    scheduler_->failed(piece, lease_id);
    if (info_ && piece.get() < info_->piece_count()) settings_.corrupt_ever += info_->piece_size(piece);
    std::vector<PeerIdentity> peers;
    for (const auto& key : contributors) peers.push_back(directory_.identity(key));
    return peers;
}

void TorrentState::on_dropped(PieceIndex piece, std::uint64_t lease_id) {
    if (scheduler_) scheduler_->dropped(piece, lease_id);
}

void TorrentState::on_delivered(std::uint64_t lease_id) {
    if (scheduler_) scheduler_->delivered(lease_id);
}

void TorrentState::on_released(std::uint64_t lease_id) {
    if (scheduler_) scheduler_->release(lease_id);
}

void TorrentState::on_peer_connected(const std::string& peer, const std::string& peer_id) {
    directory_.connected(peer, peer_id);
}

bool TorrentState::update_stall(Clock::time_point now) {
    StallInputs in;
    in.downloading = (phase_ == TorrentPhase::downloading || phase_ == TorrentPhase::metadata) && !complete();
    if (in.downloading) in.peers = directory_.counts(now);
    in.has_trackers = !trackers_.empty();
    bool any_ok = false;
    for (const TrackerReport& report : tracker_reports_) {
        in.tracker_answered = in.tracker_answered || report.answered;
        any_ok = any_ok || report.last_ok;
        if (!report.last_ok && report.last_time != 0 && in.tracker_error.empty()) in.tracker_error = report.last_result;
    }
    if (any_ok) in.tracker_error.clear();
    return stall_.update(in, now);
}

void TorrentState::on_peer_gone(const std::string& peer, Clock::time_point now, bool seed) {
    directory_.disconnected(peer, now, seed);
    if (scheduler_) scheduler_->peer_gone(peer);
}

bool TorrentState::on_peer_has(const std::string& peer, bool have_all,
                               std::span<const std::uint8_t> bitfield, bool has_bitfield,
                               std::span<const std::uint32_t> haves) {
    if (!scheduler_) return true;
    PiecePicker& pieces = scheduler_->pieces();
    bool ok = true;
    if (have_all) {
        pieces.set_have_all(peer);
    } else if (has_bitfield) {
        ok = pieces.set_bitfield(peer, bitfield);
    }
    for (const auto piece : haves) ok = pieces.add_have(peer, PieceIndex{piece}) && ok;
    return ok;
}

std::vector<Grant> TorrentState::request(const std::string& worker, const std::string& peer,
                                         std::size_t count, Clock::time_point now) {
    if (!scheduler_ || (phase_ != TorrentPhase::downloading)) return {};
    return scheduler_->request(worker, peer, count, now);
}

void TorrentState::on_worker_gone(const std::string& worker) {
    if (scheduler_) scheduler_->worker_gone(worker);
    for (const auto& key : directory_.remove_worker(worker)) {
        if (scheduler_) scheduler_->peer_gone(key);
    }
}

void TorrentState::on_verifier_lost() {
    if (scheduler_) scheduler_->verifier_lost();
}

void TorrentState::on_writer_lost() {
    if (scheduler_) scheduler_->writer_lost();
}

std::vector<Cancel> TorrentState::expire(Clock::time_point now) {
    if (!scheduler_) return {};
    return scheduler_->expire(now);
}

void TorrentState::tick(Clock::time_point now) {
    if (!scheduler_) return;
    const auto due = std::partition(write_retries_.begin(), write_retries_.end(),
                                    [&](const auto& entry) { return entry.first > now; });
    for (auto it = due; it != write_retries_.end(); ++it) scheduler_->requeue_held(it->second);
    write_retries_.erase(due, write_retries_.end());
    if (now >= next_rate_sample_) {
        next_rate_sample_ = now + kRateSamplePeriod;
        progress_rate_.sample(now, fetched_this_run());
        wire_rate_.sample(now, downloaded_this_run_);
        upload_rate_.sample(now, uploaded_this_run_);
    }
}

void TorrentState::add_transferred(std::uint64_t downloaded, std::uint64_t uploaded,
                                   Clock::time_point /*now*/) {
    downloaded_this_run_ += downloaded;
    uploaded_this_run_ += uploaded;
    settings_.downloaded_ever += downloaded;
    settings_.uploaded_ever += uploaded;
}

void TorrentState::on_tracker_status(const std::string& url, bool ok, const std::string& message,
                                     std::uint32_t peers, std::uint32_t next_announce_s,
                                     std::int64_t wall_now) {
    if (completion_sent_) completion_announced_ = true;
    auto report = std::find_if(tracker_reports_.begin(), tracker_reports_.end(),
                               [&](const TrackerReport& r) { return r.url == url; });
    if (report == tracker_reports_.end()) return;
    report->answered = report->answered || ok;
    report->last_ok = ok;
    report->last_result = ok ? "Success" : message;
    report->last_peers = ok ? peers : report->last_peers;
    report->last_time = wall_now;
    report->next_time = wall_now + next_announce_s;
}

}  // namespace pw::orchestrator
