// Torrent parsing under hostile input. Whatever parses must be internally consistent: the
// info-hash is of the info bytes, pieces map onto files exactly, and no path escapes.
#include <cstdint>
#include <cstdlib>
#include <set>
#include <string>
#include <string_view>

#include "core/metainfo.hpp"

namespace {

bool path_is_contained(const std::string& path) {
    if (path.empty() || path.front() == '/' || path.back() == '/') return false;
    std::size_t start = 0;
    while (start <= path.size()) {
        const auto slash = path.find('/', start);
        const std::size_t end = slash == std::string::npos ? path.size() : slash;
        const std::string_view element(path.data() + start, end - start);
        if (element.empty() || element == "." || element == ".." || element.size() > 255) {
            return false;
        }
        for (char c : element) {
            const auto byte = static_cast<unsigned char>(c);
            if (byte < 0x20 || byte == 0x7f || c == '\\') return false;
        }
        start = end + 1;
    }
    return true;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    const std::string_view input(reinterpret_cast<const char*>(data), size);
    auto parsed = pw::Torrent::parse(input);
    if (!parsed.ok()) return 0;
    const pw::Torrent& t = *parsed;

    if (t.info_hash() != pw::sha1(t.info_bytes())) std::abort();
    if (input.find(t.info_bytes()) == std::string_view::npos) std::abort();
    if (t.total_size() == 0 || t.piece_length() == 0 || t.piece_count() == 0) std::abort();

    std::set<std::string> paths;
    std::uint64_t expected_offset = 0;
    for (std::size_t i = 0; i < t.files().size(); ++i) {
        const pw::FileEntry& file = t.files()[i];
        if (file.offset != expected_offset) std::abort();
        expected_offset += file.length;
        const std::string path = t.relative_path(i);
        if (!path_is_contained(path)) std::abort();
        if (!paths.insert(path).second) std::abort();
    }
    if (expected_offset != t.total_size()) std::abort();
    // A file path must not also be a folder of another file.
    for (const std::string& path : paths) {
        auto next = paths.upper_bound(path + "/");
        if (next != paths.end() && next->compare(0, path.size() + 1, path + "/") == 0) std::abort();
        if (paths.count(path + "/") != 0) std::abort();
    }

    std::uint64_t covered = 0;
    for (std::uint32_t piece = 0; piece < t.piece_count(); ++piece) {
        std::uint64_t piece_bytes = 0;
        std::uint64_t position = std::uint64_t{piece} * t.piece_length();
        for (const pw::FileSpan& span : t.map_piece(pw::PieceIndex(piece))) {
            const pw::FileEntry& file = t.files().at(span.file_index);
            if (span.length == 0 || span.file_offset + span.length > file.length) std::abort();
            if (file.offset + span.file_offset != position) std::abort();
            position += span.length;
            piece_bytes += span.length;
        }
        if (piece_bytes != t.piece_size(pw::PieceIndex(piece))) std::abort();
        covered += piece_bytes;
    }
    if (covered != t.total_size()) std::abort();
    return 0;
}
