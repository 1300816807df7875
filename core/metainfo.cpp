#include "core/metainfo.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <map>
#include <optional>
#include <set>
#include <stdexcept>
#include <unordered_set>

namespace pw {

namespace {

using bencode::Value;

constexpr std::uint64_t max_torrent_file_size = 64ull << 20;
constexpr std::size_t max_rename_warnings = 100;
// Longest tail after the last '.' that still counts as an extension worth keeping when an
// element is shortened or given a suffix; anything longer is just part of the name.
constexpr std::size_t max_extension_length = 16;

bool is_continuation_byte(char c) { return (static_cast<unsigned char>(c) & 0xC0) == 0x80; }

// Cuts `text` to at most `max_length` bytes without splitting a UTF-8 sequence.
std::string_view cut_utf8(std::string_view text, std::size_t max_length) {
    if (text.size() <= max_length) return text;
    std::size_t end = max_length;
    while (end > 0 && is_continuation_byte(text[end])) --end;
    return text.substr(0, end);
}

// Splits "stem.ext" at the last dot; a leading dot (".bashrc") is part of the stem.
std::pair<std::string_view, std::string_view> split_extension(std::string_view element) {
    const auto dot = element.rfind('.');
    if (dot == std::string_view::npos || dot == 0 || element.size() - dot > max_extension_length) {
        return {element, {}};
    }
    return {element.substr(0, dot), element.substr(dot)};
}

// "file.txt" -> "file.<n>.txt", still within max_length bytes.
std::string with_suffix(std::string_view element, std::size_t n, std::size_t max_length) {
    const auto [stem, extension] = split_extension(element);
    // Appended rather than `"." + std::to_string(n)`: g++ 12 at -O3 takes that operator+ for
    // an overlapping memcpy (a -Wrestrict false positive) and a Release build stopped there.
    std::string suffix(1, '.');
    suffix += std::to_string(n);
    const std::size_t room = max_length > suffix.size() + extension.size()
                                 ? max_length - suffix.size() - extension.size()
                                 : 1;
    std::string out(cut_utf8(stem, room));
    out += suffix;
    out += extension;
    return out;
}

std::string join(const std::vector<std::string>& elements) {
    std::string out;
    for (const auto& element : elements) {
        if (!out.empty()) out += '/';
        out += element;
    }
    return out;
}

std::optional<std::string_view> find_string(const Value& dict, std::string_view key) {
    const Value* value = dict.find(key);
    if (value == nullptr || !value->is_string()) return std::nullopt;
    return value->as_string();
}

// The UTF-8 variant of a string field when present and a string, else the plain one.
std::optional<std::string_view> find_text(const Value& dict, std::string_view key) {
    if (const auto utf8 = find_string(dict, std::string(key) + ".utf-8")) return utf8;
    return find_string(dict, key);
}

const std::int64_t* find_int(const Value& dict, std::string_view key) {
    const Value* value = dict.find(key);
    return value != nullptr && value->is_int() ? &std::get<std::int64_t>(value->data) : nullptr;
}

std::vector<std::vector<std::string>> parse_trackers(const Value& root) {
    std::vector<std::vector<std::string>> tiers;
    std::unordered_set<std::string> seen;
    if (const Value* list = root.find("announce-list"); list != nullptr && list->is_list()) {
        for (const Value& tier_value : list->as_list()) {
            if (!tier_value.is_list()) continue;
            std::vector<std::string> tier;
            for (const Value& url : tier_value.as_list()) {
                if (!url.is_string() || url.as_string().empty()) continue;
                std::string text(url.as_string());
                if (seen.insert(text).second) tier.push_back(std::move(text));
            }
            if (!tier.empty()) tiers.push_back(std::move(tier));
        }
    }
    // BEP 12: announce-list, when usable, supersedes announce.
    if (tiers.empty()) {
        if (const auto url = find_string(root, "announce"); url && !url->empty()) {
            tiers.push_back({std::string(*url)});
        }
    }
    return tiers;
}

// The raw path elements of one "files" entry, split on '/' too: an element such as
// "/etc/passwd" or "a/../b" must not smuggle separators past sanitization.
Result<std::vector<std::string>> raw_path_elements(const Value& file, std::size_t index) {
    const Value* path = file.find("path.utf-8");
    if (path == nullptr || !path->is_list()) path = file.find("path");
    if (path == nullptr || !path->is_list()) {
        return make_error("file " + std::to_string(index) + " has no path list");
    }
    std::vector<std::string> elements;
    for (const Value& element : path->as_list()) {
        if (!element.is_string()) {
            return make_error("file " + std::to_string(index) + " has a non-string path element");
        }
        elements.emplace_back(element.as_string());
    }
    return elements;
}

std::vector<std::string> sanitized_elements(const std::vector<std::string>& raw,
                                            std::size_t max_length) {
    std::vector<std::string> out;
    for (const std::string& element : raw) {
        std::size_t start = 0;
        while (start <= element.size()) {
            const auto slash = element.find('/', start);
            const std::size_t end = slash == std::string::npos ? element.size() : slash;
            std::string clean = sanitize_path_element(
                std::string_view(element).substr(start, end - start), max_length);
            if (!clean.empty()) out.push_back(std::move(clean));
            start = end + 1;
        }
    }
    return out;
}

// Makes every final path unique and keeps files and folders apart, in file order: a later
// file yields to an earlier one. A folder element that names an earlier file, or a final
// element that names an earlier file or folder, gets the first free ".<n>" suffix.
void resolve_collisions(std::vector<std::vector<std::string>>& paths, std::size_t max_length) {
    std::set<std::string> file_paths;
    std::set<std::string> folder_paths;
    // Per wanted path, the suffix to try first: every smaller one was taken when it was last
    // tried and the taken sets only grow, so starting there gives the same first free suffix
    // as counting from 1, while a million files all called "a" cost n log n, not n^2.
    std::map<std::string, std::size_t> next_suffix;
    for (auto& elements : paths) {
        std::string prefix;
        for (std::size_t i = 0; i < elements.size(); ++i) {
            const bool is_last = i + 1 == elements.size();
            const std::string base = prefix.empty() ? prefix : prefix + "/";
            auto taken = [&](const std::string& candidate) {
                return file_paths.count(candidate) > 0 ||
                       (is_last && folder_paths.count(candidate) > 0);
            };
            std::string candidate = base + elements[i];
            if (taken(candidate)) {
                // Files and folders collide differently, so they keep separate counters.
                std::size_t& n = next_suffix[(is_last ? "f" : "d") + candidate];
                n = std::max<std::size_t>(n, 1);
                const std::string wanted = elements[i];
                // Start at the last suffix chosen, not after it: a renamed folder is reused
                // by the next file that wants the same folder.
                for (;; ++n) {
                    candidate = base + with_suffix(wanted, n, max_length);
                    if (!taken(candidate)) break;
                }
                elements[i] = candidate.substr(base.size());
            }
            prefix = std::move(candidate);
            if (!is_last) folder_paths.insert(prefix);
        }
        file_paths.insert(prefix);
    }
}

}  // namespace

std::string sanitize_path_element(std::string_view element, std::size_t max_length) {
    if (element.empty() || element == "." || element == "..") return {};
    std::string clean;
    clean.reserve(element.size());
    for (char c : element) {
        const auto byte = static_cast<unsigned char>(c);
        const bool unsafe = byte < 0x20 || byte == 0x7f || c == '\\' || c == '/';
        clean += unsafe ? '_' : c;
    }
    if (clean.size() > max_length) {
        const auto [stem, extension] = split_extension(clean);
        const std::size_t room = max_length > extension.size() ? max_length - extension.size() : 0;
        std::string shortened(cut_utf8(stem, room));
        shortened += extension;
        if (shortened.size() > max_length || shortened == extension) {
            shortened = std::string(cut_utf8(clean, max_length));
        }
        clean = std::move(shortened);
    }
    return clean;
}

Result<Torrent> Torrent::parse(std::string_view bytes, const MetainfoLimits& limits,
                               PieceHashes hashes) {
    auto decoded = bencode::decode(bytes);
    if (!decoded) return decoded.error();
    const Value& root = decoded->value;
    if (!root.is_dict()) return make_error("torrent is not a dictionary");
    const Value* info = root.find("info");
    if (info == nullptr || !info->is_dict()) return make_error("torrent has no info dictionary");
    auto parsed = parse_info_dict(*info, info->raw(bytes), std::move(decoded->warnings), limits, hashes);
    if (!parsed) return parsed;
    Torrent& t = parsed.value();
    t.trackers_ = parse_trackers(root);
    if (const auto comment = find_text(root, "comment")) t.comment_ = *comment;
    if (const auto created_by = find_text(root, "created by")) t.created_by_ = *created_by;
    if (const std::int64_t* date = find_int(root, "creation date")) t.creation_date_ = *date;
    return parsed;
}

Result<Torrent> Torrent::parse_info(std::string_view info_bytes, const MetainfoLimits& limits,
                                    PieceHashes hashes) {
    auto decoded = bencode::decode(info_bytes);
    if (!decoded) return decoded.error();
    if (!decoded->value.is_dict()) return make_error("info is not a dictionary");
    return parse_info_dict(decoded->value, info_bytes, std::move(decoded->warnings), limits, hashes);
}

Result<Torrent> Torrent::parse_info_dict(const bencode::Value& info_value, std::string_view info_raw,
                                         std::vector<std::string> warnings,
                                         const MetainfoLimits& limits, PieceHashes hashes) {
    const Value* info = &info_value;
    Torrent t;
    t.warnings_ = std::move(warnings);
    t.info_hash_ = sha1(info_raw);
    // Never copied when forgotten: a stage's peak is at start-up, with the .torrent in hand.
    if (hashes == PieceHashes::keep) t.info_bytes_ = std::string(info_raw);
    if (const std::int64_t* flag = find_int(*info, "private")) t.private_ = *flag == 1;

    const std::int64_t* piece_length = find_int(*info, "piece length");
    if (piece_length == nullptr) return make_error("info has no piece length");
    if (*piece_length <= 0) {
        return make_error("piece length " + std::to_string(*piece_length) + " is not positive");
    }
    if (static_cast<std::uint64_t>(*piece_length) > limits.max_piece_length) {
        return make_error("piece length " + std::to_string(*piece_length) + " above the limit of " +
                          std::to_string(limits.max_piece_length));
    }
    t.piece_length_ = static_cast<std::uint32_t>(*piece_length);

    const auto pieces = find_string(*info, "pieces");
    if (!pieces) return make_error("info has no pieces string");
    if (pieces->size() % 20 != 0) {
        return make_error("pieces length " + std::to_string(pieces->size()) +
                          " is not a multiple of 20");
    }

    const auto raw_name = find_text(*info, "name");
    std::string name = raw_name ? sanitize_path_element(*raw_name, limits.max_path_element) : "";
    if (name.empty()) {
        name = to_hex(t.info_hash_);
        t.warnings_.push_back("torrent name unusable; using \"" + name + "\"");
    } else if (name != *raw_name) {
        t.warnings_.push_back("torrent name \"" + std::string(*raw_name) + "\" renamed to \"" +
                              name + "\"");
    }
    t.name_ = std::move(name);

    const Value* length = info->find("length");
    const Value* files = info->find("files");
    if (length != nullptr && files != nullptr) {
        return make_error("info has both length and files");
    }
    if (length == nullptr && files == nullptr) {
        return make_error("info has neither length nor files");
    }
    auto check_length = [&](const Value& value, const std::string& what) -> Result<std::uint64_t> {
        if (!value.is_int()) return make_error(what + " length is not an integer");
        if (value.as_int() < 0) {
            return make_error(what + " length " + std::to_string(value.as_int()) + " is negative");
        }
        const auto size = static_cast<std::uint64_t>(value.as_int());
        if (size > limits.max_file_length) {
            return make_error(what + " length " + std::to_string(size) + " above the limit of " +
                              std::to_string(limits.max_file_length));
        }
        return size;
    };

    if (length != nullptr) {
        auto size = check_length(*length, "file");
        if (!size) return size.error();
        FileEntry entry;
        entry.path = t.name_;
        entry.original_path = {raw_name ? std::string(*raw_name) : std::string()};
        entry.length = size.value();
        t.files_.push_back(std::move(entry));
        t.total_size_ = size.value();
    } else {
        if (!files->is_list()) return make_error("files is not a list");
        const auto& list = files->as_list();
        if (list.size() > limits.max_files) {
            return make_error("too many files: " + std::to_string(list.size()) + " above the limit of " +
                              std::to_string(limits.max_files));
        }
        t.multi_file_ = true;
        std::vector<std::vector<std::string>> paths;
        paths.reserve(list.size());
        for (std::size_t i = 0; i < list.size(); ++i) {
            const Value& file = list[i];
            if (!file.is_dict()) return make_error("file " + std::to_string(i) + " is not a dictionary");
            const Value* file_length = file.find("length");
            if (file_length == nullptr) return make_error("file " + std::to_string(i) + " has no length");
            auto size = check_length(*file_length, "file " + std::to_string(i));
            if (!size) return size.error();
            auto raw = raw_path_elements(file, i);
            if (!raw) return raw.error();
            FileEntry entry;
            entry.original_path = std::move(raw.value());
            entry.length = size.value();
            entry.offset = t.total_size_;
            if (const auto attr = find_string(file, "attr")) {
                entry.pad = attr->find('p') != std::string_view::npos;
            }
            // Each length is at most 2^48 and there are at most max_files of them, but a
            // lowered limit set is not a proof: check the sum explicitly.
            if (t.total_size_ > UINT64_MAX - entry.length) return make_error("total size overflows");
            t.total_size_ += entry.length;
            auto elements = sanitized_elements(entry.original_path, limits.max_path_element);
            if (elements.empty()) elements.push_back("file");
            paths.push_back(std::move(elements));
            t.files_.push_back(std::move(entry));
        }
        resolve_collisions(paths, limits.max_path_element);
        std::size_t renamed = 0;
        for (std::size_t i = 0; i < t.files_.size(); ++i) {
            FileEntry& entry = t.files_[i];
            entry.path = join(paths[i]);
            // BEP 47 pad files share paths (".pad/16384") by design and are never written:
            // renaming them is expected and not worth a warning.
            if (entry.pad || entry.path == join(entry.original_path)) continue;
            // Warnings stay bounded however hostile the file list.
            if (++renamed <= max_rename_warnings) {
                t.warnings_.push_back("file path \"" + join(entry.original_path) + "\" renamed to \"" +
                                      entry.path + "\"");
            }
        }
        if (renamed > max_rename_warnings) {
            t.warnings_.push_back("and " + std::to_string(renamed - max_rename_warnings) +
                                  " more file paths renamed");
        }
    }

    if (t.total_size_ == 0) return make_error("torrent has no data (total size 0)");
    const std::uint64_t expected_pieces = (t.total_size_ - 1) / t.piece_length_ + 1;
    const std::uint64_t piece_count = pieces->size() / 20;
    if (piece_count != expected_pieces) {
        return make_error("pieces has " + std::to_string(piece_count) + " hashes, expected " +
                          std::to_string(expected_pieces) + " for " +
                          std::to_string(t.total_size_) + " bytes");
    }
    // The hashes are the tail of the pieces value's encoding, inside info_bytes_: read them
    // there rather than keep a second copy (5 MB per stage for 262,144 pieces).
    // Raw positions count from the start of what was decoded, the info dictionary's too.
    const Value* pieces_value = info->find("pieces");
    t.piece_hashes_offset_ = pieces_value->raw_end - pieces->size() - info->raw_begin;
    t.piece_count_ = static_cast<std::uint32_t>(piece_count);
    return t;
}

Sha1Digest Torrent::piece_hash(PieceIndex index) const {
    Sha1Digest digest{};
    if (index.get() >= piece_count_) return digest;
    if (!has_piece_hashes()) throw std::logic_error("piece_hash() after forgetting the hashes");
    std::memcpy(digest.data(), info_bytes_.data() + piece_hashes_offset_ + std::size_t{index.get()} * 20, 20);
    return digest;
}

void Torrent::forget_piece_hashes() {
    std::string{}.swap(info_bytes_);
}

std::uint32_t Torrent::piece_size(PieceIndex index) const {
    const std::uint64_t count = piece_count_;
    if (index.get() >= count) return 0;
    if (index.get() + 1 < count) return piece_length_;
    return static_cast<std::uint32_t>(total_size_ - std::uint64_t{piece_length_} * (count - 1));
}

std::vector<FileSpan> Torrent::map_range(std::uint64_t offset, std::uint64_t length) const {
    std::vector<FileSpan> spans;
    if (offset >= total_size_) return spans;
    length = std::min(length, total_size_ - offset);
    // The first file that ends after `offset`; files are in offset order.
    auto it = std::partition_point(files_.begin(), files_.end(), [&](const FileEntry& file) {
        return file.offset + file.length <= offset;
    });
    std::uint64_t position = offset;
    const std::uint64_t end = offset + length;
    for (; it != files_.end() && position < end; ++it) {
        if (it->length == 0) continue;
        const std::uint64_t file_end = it->offset + it->length;
        const std::uint64_t span_end = std::min(end, file_end);
        spans.push_back(FileSpan{static_cast<std::size_t>(it - files_.begin()),
                                 position - it->offset, span_end - position});
        position = span_end;
    }
    return spans;
}

std::vector<FileSpan> Torrent::map_piece(PieceIndex index) const {
    if (index.get() >= piece_count_) return {};
    return map_range(std::uint64_t{index.get()} * piece_length_, piece_size(index));
}

std::string Torrent::relative_path(std::size_t file_index) const {
    const FileEntry& file = files_.at(file_index);
    if (!multi_file_) return file.path;
    return name_ + "/" + file.path;
}

Result<std::string> read_torrent_bytes(const std::string& path) {
    // O_NONBLOCK: opening a FIFO must not wait for a writer before fstat can refuse it.
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0) return make_error(std::strerror(errno));
    struct Closer {
        int fd;
        ~Closer() { ::close(fd); }
    } closer{fd};
    struct stat info {};
    if (::fstat(fd, &info) != 0) return make_error(std::strerror(errno));
    if (!S_ISREG(info.st_mode)) return make_error("not a regular file");
    const auto size = static_cast<std::uint64_t>(info.st_size);
    if (size > max_torrent_file_size) {
        return make_error("file is " + std::to_string(size) + " bytes, above the limit of " +
                          std::to_string(max_torrent_file_size));
    }
    std::string bytes(size, '\0');
    std::size_t done = 0;
    while (done < bytes.size()) {
        const ssize_t got = ::read(fd, bytes.data() + done, bytes.size() - done);
        if (got < 0 && errno == EINTR) continue;
        if (got < 0) return make_error(std::strerror(errno));
        if (got == 0) break;  // the file shrank while we read it
        done += static_cast<std::size_t>(got);
    }
    bytes.resize(done);
    return bytes;
}

Result<Torrent> read_torrent_file(const std::string& path, const MetainfoLimits& limits) {
    auto bytes = read_torrent_bytes(path);
    if (!bytes) return bytes.error();
    return Torrent::parse(*bytes, limits);
}

}  // namespace pw
