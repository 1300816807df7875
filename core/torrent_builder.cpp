#include "core/torrent_builder.hpp"

#include "core/byte_count.hpp"

#include <algorithm>
#include <limits>
#include <set>
#include <tuple>
#include <utility>

#include "core/bencode.hpp"
#include "core/metainfo.hpp"

namespace pw {

namespace {

using bencode::Dict;
using bencode::List;
using bencode::Value;

// Builds the Value in its place rather than moving a temporary one in: g++ 12 at -O2 takes a
// moved temporary Value's variant for maybe uninitialized (-Wmaybe-uninitialized).
template <class T>
void put(Dict& dict, std::string key, T value) {
    dict.emplace_back(std::piecewise_construct, std::forward_as_tuple(std::move(key)),
                      std::forward_as_tuple(std::move(value)));
}

bool is_power_of_two(std::uint64_t n) { return n != 0 && (n & (n - 1)) == 0; }

// An element a reader could not take as one name: it would split it, drop it, or climb out.
Status check_element(std::string_view element, std::string_view what) {
    if (element.empty()) return make_error(std::string(what) + " is empty");
    if (element == "." || element == "..") {
        return make_error(std::string(what) + " \"" + std::string(element) + "\" is not a name");
    }
    if (element.find('/') != std::string_view::npos ||
        element.find('\0') != std::string_view::npos) {
        return make_error(std::string(what) + " \"" + std::string(element) +
                          "\" holds a '/' or a NUL");
    }
    return ok_status();
}

std::string joined(const std::vector<std::string>& elements) {
    std::string out;
    for (const auto& element : elements) {
        if (!out.empty()) out += '/';
        out += element;
    }
    return out;
}

// Each file at its own path, and no file where another file needs a folder: neither can be
// laid out on a disk, and core/metainfo would rename one of them.
Status check_layout(const std::vector<NewFile>& files) {
    std::set<std::string> file_paths;
    std::set<std::string> folder_paths;
    for (const NewFile& file : files) {
        const std::string path = joined(file.path);
        if (!file_paths.insert(path).second) {
            return make_error("two files at \"" + path + "\"");
        }
        std::string folder;
        for (std::size_t i = 0; i + 1 < file.path.size(); ++i) {
            if (!folder.empty()) folder += '/';
            folder += file.path[i];
            folder_paths.insert(folder);
        }
    }
    for (const std::string& folder : folder_paths) {
        if (file_paths.count(folder) > 0) {
            return make_error("\"" + folder + "\" is both a file and a folder");
        }
    }
    return ok_status();
}

Status check_urls(const std::vector<std::string>& urls, std::string_view what) {
    for (const std::string& url : urls) {
        if (url.empty()) return make_error("empty " + std::string(what) + " URL");
    }
    return ok_status();
}

}  // namespace

Result<std::string> build_torrent(const NewTorrent& torrent) {
    if (Status s = check_element(torrent.name, "torrent name"); !s) return s.error();
    if (Status s = check_piece_length(torrent.piece_length); !s) return s.error();
    if (torrent.files.empty()) return make_error("no files");

    const MetainfoLimits limits;
    if (torrent.files.size() > limits.max_files) {
        return make_error(std::to_string(torrent.files.size()) + " files, above the limit of " +
                          std::to_string(limits.max_files));
    }
    if (torrent.single_file) {
        if (torrent.files.size() != 1 || !torrent.files.front().path.empty()) {
            return make_error("a single-file torrent has one file and no path below its name");
        }
    } else {
        for (const NewFile& file : torrent.files) {
            if (file.path.empty()) return make_error("a file in a folder has no path");
            for (const std::string& element : file.path) {
                if (Status s = check_element(element, "path element"); !s) return s.error();
            }
        }
        if (Status s = check_layout(torrent.files); !s) return s.error();
    }

    std::uint64_t total = 0;
    for (const NewFile& file : torrent.files) {
        if (file.length > limits.max_file_length) {
            return make_error("file \"" + joined(file.path) + "\" is " +
                              std::to_string(file.length) + " bytes, above the limit of " +
                              std::to_string(limits.max_file_length));
        }
        // At most a million files of at most 2^48 bytes each: the sum fits in 2^68 only in
        // theory; check rather than trust that nobody lowers the limits.
        if (total > std::numeric_limits<std::uint64_t>::max() - file.length) {
            return make_error("total size overflows");
        }
        total += file.length;
    }
    if (total == 0) return make_error("every file is empty: nothing to share");

    const std::uint64_t piece_count = (total - 1) / torrent.piece_length + 1;
    if (piece_count > std::numeric_limits<std::uint32_t>::max()) {
        return make_error(std::to_string(piece_count) + " pieces; choose a larger piece size");
    }
    if (torrent.piece_hashes.size() != piece_count * 20) {
        return make_error(std::to_string(torrent.piece_hashes.size()) +
                          " bytes of piece hashes, expected " + std::to_string(piece_count * 20) +
                          " for " + std::to_string(total) + " bytes in pieces of " +
                          std::to_string(torrent.piece_length));
    }

    std::size_t url_count = 0;
    for (const auto& tier : torrent.trackers) {
        if (tier.empty()) return make_error("empty tracker tier");
        if (Status s = check_urls(tier, "tracker"); !s) return s.error();
        url_count += tier.size();
    }
    if (Status s = check_urls(torrent.web_seeds, "web seed"); !s) return s.error();

    // Keys in any order: the encoder sorts them, as mktorrent writes them.
    Dict info;
    if (torrent.single_file) {
        put(info, "length", static_cast<std::int64_t>(torrent.files.front().length));
    } else {
        List files;
        files.reserve(torrent.files.size());
        for (const NewFile& file : torrent.files) {
            Dict entry;
            put(entry, "length", static_cast<std::int64_t>(file.length));
            put(entry, "path", List(file.path.begin(), file.path.end()));
            files.emplace_back(std::move(entry));
        }
        put(info, "files", std::move(files));
    }
    put(info, "name", torrent.name);
    put(info, "piece length", std::int64_t{torrent.piece_length});
    put(info, "pieces", torrent.piece_hashes);
    // Absent rather than 0 when public: mktorrent writes it only when set, and the info-hash
    // covers every key.
    if (torrent.is_private) put(info, "private", std::int64_t{1});

    Dict root;
    if (url_count > 0) put(root, "announce", torrent.trackers.front().front());
    // BEP 12 readers take announce-list over announce; a lone URL needs no list.
    if (url_count > 1) {
        List tiers;
        for (const auto& tier : torrent.trackers) tiers.emplace_back(List(tier.begin(), tier.end()));
        put(root, "announce-list", std::move(tiers));
    }
    if (!torrent.comment.empty()) put(root, "comment", torrent.comment);
    if (!torrent.created_by.empty()) put(root, "created by", torrent.created_by);
    if (torrent.creation_date) put(root, "creation date", *torrent.creation_date);
    put(root, "info", std::move(info));
    if (torrent.web_seeds.size() == 1) {
        put(root, "url-list", torrent.web_seeds.front());
    } else if (torrent.web_seeds.size() > 1) {
        put(root, "url-list", List(torrent.web_seeds.begin(), torrent.web_seeds.end()));
    }
    return bencode::encode(Value(std::move(root)));
}

void sort_like_mktorrent(std::vector<NewFile>& files) {
    std::vector<std::pair<std::string, NewFile>> keyed;
    keyed.reserve(files.size());
    for (NewFile& file : files) {
        std::string key = joined(file.path);
        keyed.emplace_back(std::move(key), std::move(file));
    }
    // std::string compares as unsigned bytes, as strcmp does.
    std::stable_sort(keyed.begin(), keyed.end(),
                     [](const auto& a, const auto& b) { return a.first < b.first; });
    for (std::size_t i = 0; i < files.size(); ++i) files[i] = std::move(keyed[i].second);
}

std::uint32_t choose_piece_length(std::uint64_t total_size) {
    std::uint32_t length = kMinPieceLength;
    while (length < kMaxChosenPieceLength && (total_size + length - 1) / length > kTargetPieceCount) {
        length *= 2;
    }
    return length;
}

Status check_piece_length(std::uint64_t piece_length) {
    if (!is_power_of_two(piece_length)) {
        return make_error("piece size " + std::to_string(piece_length) +
                          " is not a power of two");
    }
    if (piece_length < kMinPieceLength || piece_length > kMaxPieceLength) {
        return make_error("piece size " + describe_size(piece_length) + " is outside " +
                          describe_size(kMinPieceLength) + " to " + describe_size(kMaxPieceLength));
    }
    return ok_status();
}

Result<std::uint32_t> parse_piece_size(std::string_view text) {
    auto bytes = parse_byte_count(text);
    if (!bytes && bytes.error().message.ends_with("too large")) {
        std::string message = "piece size \"";
        message += text;
        message += "\" is above ";
        message += describe_size(kMaxPieceLength);
        return make_error(std::move(message));
    }
    if (!bytes) return make_error("piece size " + bytes.error().message);
    if (Status s = check_piece_length(*bytes); !s) return s.error();
    return static_cast<std::uint32_t>(*bytes);
}

std::string describe_size(std::uint64_t bytes) {
    static constexpr const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
    std::size_t unit = 0;
    while (bytes >= 1024 && bytes % 1024 == 0 && unit + 1 < std::size(units)) {
        bytes /= 1024;
        ++unit;
    }
    return std::to_string(bytes) + " " + units[unit];
}

}  // namespace pw
