#include "writer/resume_state.hpp"

#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <system_error>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <spdlog/spdlog.h>

#include "core/bencode.hpp"
#include "core/sha1.hpp"
#include "writer/safe_open.hpp"

namespace pw::writer {

namespace {

constexpr std::int64_t kRecordVersion = 1;

std::string errno_text(const std::string& what, const std::string& path, int error) {
    return what + " '" + path + "': " + std::strerror(error);
}

FileStamp stamp_of(const struct stat& info) {
    return FileStamp{true, static_cast<std::uint64_t>(info.st_size),
                     static_cast<std::int64_t>(info.st_mtim.tv_sec) * 1'000'000'000 +
                         info.st_mtim.tv_nsec};
}

}  // namespace

PieceBits::PieceBits(std::uint32_t piece_count)
    : piece_count_(piece_count), bytes_((std::uint64_t{piece_count} + 7) / 8, '\0') {}

std::optional<PieceBits> PieceBits::from_bytes(std::uint32_t piece_count, std::string_view bytes) {
    PieceBits bits(piece_count);
    if (bytes.size() != bits.bytes_.size()) return std::nullopt;
    for (std::uint64_t i = 0; i < std::uint64_t{bytes.size()} * 8; ++i) {
        const bool set = (static_cast<std::uint8_t>(bytes[i / 8]) >> (7 - i % 8)) & 1u;
        if (!set) continue;
        if (i >= piece_count) return std::nullopt;
        bits.set(PieceIndex{static_cast<std::uint32_t>(i)});
    }
    return bits;
}

void PieceBits::set(PieceIndex piece) {
    if (piece.get() >= piece_count_ || test(piece)) return;
    bytes_[piece.get() / 8] = static_cast<char>(static_cast<std::uint8_t>(bytes_[piece.get() / 8]) |
                                                (0x80u >> (piece.get() % 8)));
    ++count_;
}

void PieceBits::reset(PieceIndex piece) {
    if (!test(piece)) return;
    bytes_[piece.get() / 8] = static_cast<char>(static_cast<std::uint8_t>(bytes_[piece.get() / 8]) &
                                                ~(0x80u >> (piece.get() % 8)));
    --count_;
}

void PieceBits::merge(const PieceBits& other) {
    if (other.piece_count_ != piece_count_) return;
    for (std::uint32_t i = 0; i < piece_count_; ++i) {
        if (other.test(PieceIndex{i})) set(PieceIndex{i});
    }
}

bool PieceBits::test(PieceIndex piece) const {
    if (piece.get() >= piece_count_) return false;
    return (static_cast<std::uint8_t>(bytes_[piece.get() / 8]) >> (7 - piece.get() % 8)) & 1u;
}

std::string encode_resume(const ResumeRecord& record, const Torrent& torrent) {
    using bencode::Dict;
    using bencode::List;
    using bencode::Value;
    List files;
    for (const FileStamp& file : record.files) {
        files.emplace_back(Dict{
            {"mtime", Value(file.exists ? file.mtime_ns : 0)},
            {"size", Value(file.exists ? static_cast<std::int64_t>(file.size) : std::int64_t{-1})}});
    }
    const Sha1Digest& hash = torrent.info_hash();
    Dict root{{"files", Value(std::move(files))},
              {"info-hash", Value(std::string(reinterpret_cast<const char*>(hash.data()), hash.size()))},
              {"pieces", Value(record.done.bytes())},
              {"version", Value(kRecordVersion)}};
    return bencode::encode(Value(std::move(root)));
}

Result<ResumeRecord> decode_resume(std::string_view bytes, const Torrent& torrent) {
    auto decoded = bencode::decode(bytes);
    if (!decoded) return make_error("unreadable: " + decoded.error().describe());
    const bencode::Value& root = decoded->value;
    const auto* version = root.find("version");
    if (version == nullptr || !version->is_int() || version->as_int() != kRecordVersion) {
        return make_error("not a version " + std::to_string(kRecordVersion) + " record");
    }
    const Sha1Digest& hash = torrent.info_hash();
    const auto* info_hash = root.find("info-hash");
    if (info_hash == nullptr || !info_hash->is_string() ||
        info_hash->as_string() != std::string(reinterpret_cast<const char*>(hash.data()), hash.size())) {
        return make_error("the record belongs to another torrent");
    }
    const auto* pieces = root.find("pieces");
    if (pieces == nullptr || !pieces->is_string()) return make_error("no piece bitfield");
    auto done = PieceBits::from_bytes(torrent.piece_count(), pieces->as_string());
    if (!done) return make_error("the piece bitfield does not fit the torrent");
    const auto* files = root.find("files");
    if (files == nullptr || !files->is_list() || files->as_list().size() != torrent.files().size()) {
        return make_error("the file list does not fit the torrent");
    }
    ResumeRecord record{std::move(*done), {}};
    for (const bencode::Value& entry : files->as_list()) {
        const auto* size = entry.find("size");
        const auto* mtime = entry.find("mtime");
        if (size == nullptr || !size->is_int() || mtime == nullptr || !mtime->is_int() ||
            size->as_int() < -1) {
            return make_error("a file entry is malformed");
        }
        if (size->as_int() == -1) {
            record.files.push_back(FileStamp{});
        } else {
            record.files.push_back(
                FileStamp{true, static_cast<std::uint64_t>(size->as_int()), mtime->as_int()});
        }
    }
    return record;
}

std::vector<FileStamp> stamp_files(int root_fd, const Torrent& torrent) {
    std::vector<FileStamp> stamps(torrent.files().size());
    for (std::size_t i = 0; i < stamps.size(); ++i) {
        if (torrent.files()[i].pad) continue;
        auto opened = open_existing_below(root_fd, torrent.relative_path(i), false);
        if (!opened || !opened->valid()) continue;
        struct stat info {};
        if (::fstat(opened->get(), &info) == 0) stamps[i] = stamp_of(info);
    }
    return stamps;
}

Status trim_oversized_files(int root_fd, const Torrent& torrent) {
    for (std::size_t i = 0; i < torrent.files().size(); ++i) {
        const FileEntry& file = torrent.files()[i];
        if (file.pad) continue;
        auto opened = open_existing_below(root_fd, torrent.relative_path(i), false);
        if (!opened) return opened.error();
        if (!opened->valid()) continue;
        struct stat info {};
        if (::fstat(opened->get(), &info) != 0 || static_cast<std::uint64_t>(info.st_size) <= file.length) {
            continue;
        }
        auto writable = open_existing_below(root_fd, torrent.relative_path(i), true);
        if (!writable) return writable.error();
        if (writable->valid() && ::ftruncate(writable->get(), static_cast<off_t>(file.length)) != 0) {
            return make_error(errno_text("cannot cut to size", torrent.relative_path(i), errno));
        }
    }
    return ok_status();
}

PieceDigests::PieceDigests(const Torrent& torrent) {
    digests_.reserve(torrent.piece_count());
    for (std::uint32_t i = 0; i < torrent.piece_count(); ++i) {
        digests_.push_back(torrent.piece_hash(PieceIndex{i}));
    }
}

PieceChecker::PieceChecker(const Torrent& torrent, const PieceDigests& hashes, int root_fd)
    : torrent_(&torrent), hashes_(&hashes), root_fd_(root_fd) {}

bool PieceChecker::read_span(std::size_t file_index, std::uint64_t offset, std::uint8_t* out,
                             std::uint64_t length) {
    if (file_index < in_parts_.size() && in_parts_[file_index]) {
        if (parts_fd_ < 0) return false;
        offset += torrent_->files()[file_index].offset;
        while (length > 0) {
            const ssize_t got = ::pread(parts_fd_, out, length, static_cast<off_t>(offset));
            if (got < 0 && errno == EINTR) continue;
            if (got <= 0) return false;
            const auto count = static_cast<std::uint64_t>(got);
            out += count;
            offset += count;
            length -= count;
        }
        return true;
    }
    if (open_index_ != file_index) {
        open_index_ = file_index;
        auto opened = open_existing_below(root_fd_, torrent_->relative_path(file_index), false);
        open_fd_ = opened ? std::move(opened.value()) : UniqueFd();
    }
    if (!open_fd_.valid()) return false;
    while (length > 0) {
        const ssize_t got = ::pread(open_fd_.get(), out, length, static_cast<off_t>(offset));
        if (got < 0 && errno == EINTR) continue;
        if (got <= 0) return false;  // an error, or the file ends before the span does
        const auto count = static_cast<std::uint64_t>(got);
        out += count;
        offset += count;
        length -= count;
    }
    return true;
}

bool PieceChecker::check(PieceIndex piece) {
    const std::uint32_t size = torrent_->piece_size(piece);
    buffer_.resize(size);
    std::uint64_t filled = 0;
    for (const FileSpan& span : torrent_->map_piece(piece)) {
        std::uint8_t* out = buffer_.data() + filled;
        filled += span.length;
        if (torrent_->files()[span.file_index].pad) {
            std::memset(out, 0, span.length);  // BEP 47: padding is zeros, never on disk
            continue;
        }
        if (!read_span(span.file_index, span.file_offset, out, span.length)) return false;
    }
    return piece.get() < hashes_->size() &&
           hasher_.digest(buffer_.data(), buffer_.size()) == (*hashes_)[piece];
}

std::optional<PieceBits> PieceChecker::check_all(const std::function<bool()>& keep_going) {
    // Asked before the first piece, then at most every kAskPeriod: asking per piece polled the
    // control socket 262,144 times for 4 GiB of 16 KiB pieces, about a second of system calls
    // spent before the first lease could go out, even with no file on disk.
    constexpr auto kAskPeriod = std::chrono::milliseconds(20);
    PieceBits done(torrent_->piece_count());
    for (std::uint32_t i = 0; i < torrent_->piece_count();) {
        if (!keep_going()) return std::nullopt;
        const auto deadline = std::chrono::steady_clock::now() + kAskPeriod;
        do {
            if (check(PieceIndex{i})) done.set(PieceIndex{i});
            ++i;
        } while (i < torrent_->piece_count() && std::chrono::steady_clock::now() < deadline);
    }
    release();
    return done;
}

SlicedCheck::SlicedCheck(const Torrent& torrent, const PieceDigests& hashes, int root_fd)
    : checker_(torrent, hashes, root_fd), verified_(torrent.piece_count()) {}

bool SlicedCheck::run_until(std::chrono::steady_clock::time_point deadline) {
    while (!finished()) {
        if (checker_.check(PieceIndex{next_})) verified_.set(PieceIndex{next_});
        ++next_;
        if (std::chrono::steady_clock::now() >= deadline) break;
    }
    checker_.release();
    return finished();
}

ResumeBook::ResumeBook(const Torrent& torrent, int root_fd, std::string state_dir)
    : torrent_(&torrent), root_fd_(root_fd), state_dir_(std::move(state_dir)),
      file_name_(record_name(torrent.info_hash())),
      path_(state_dir_ + "/" + file_name_), done_(torrent.piece_count()) {}

ResumeBook::Start ResumeBook::load() {
    Start start;
    std::error_code error;
    if (!std::filesystem::exists(path_, error)) {
        start.reason = "no resume record";
    } else if (auto content = read_torrent_bytes(path_); !content) {  // a bounded read of a regular file
        start.reason = "resume record unreadable: " + content.error().describe();
    } else if (auto record = decode_resume(*content, *torrent_); !record) {
        start.reason = "resume record refused: " + record.error().describe();
    } else if (record->files != stamp_files(root_fd_, *torrent_)) {
        start.reason = "files changed since the resume record was saved";
    } else {
        done_ = std::move(record->done);
        start.trusted = true;
    }
    return start;
}

std::optional<ResumeBook::Start> ResumeBook::start(const PieceDigests& hashes,
                                                   const std::function<bool()>& keep_going) {
    Start start = load();
    if (start.trusted) return start;
    if (const Status trimmed = trim_oversized_files(root_fd_, *torrent_); !trimmed.ok()) {
        start.reason += "; " + trimmed.error().describe();
    }
    PieceChecker checker(*torrent_, hashes, root_fd_);
    auto checked = checker.check_all(keep_going);
    if (!checked) return std::nullopt;
    done_ = std::move(*checked);
    // Best effort: without a record the next start checks again, which is only slower.
    if (const Status saved = save(); !saved.ok()) spdlog::warn("{}", saved.error().describe());
    return start;
}

std::optional<ResumeBook::Start> ResumeBook::start(const std::function<bool()>& keep_going) {
    const PieceDigests hashes(*torrent_);
    return start(hashes, keep_going);
}

Status ResumeBook::remove() { return remove_record(state_dir_, torrent_->info_hash()); }

std::string record_name(const Sha1Digest& info_hash) { return to_hex(info_hash) + ".resume"; }

Status remove_record(const std::string& state_dir, const Sha1Digest& info_hash) {
    const std::string name = record_name(info_hash);
    for (const std::string& file : {name, name + ".tmp"}) {
        const std::string path = state_dir + "/" + file;
        if (::unlink(path.c_str()) != 0 && errno != ENOENT) {
            return make_error(errno_text("cannot delete", path, errno));
        }
    }
    return ok_status();
}

Status ResumeBook::save() {
    std::error_code error;
    std::filesystem::create_directories(state_dir_, error);
    if (error) return make_error("cannot create the state folder '" + state_dir_ + "': " + error.message());
    const ResumeRecord record{done_, stamp_files(root_fd_, *torrent_)};
    return replace_file_atomically(state_dir_, file_name_, encode_resume(record, *torrent_));
}

}  // namespace pw::writer
