#include "cli/inspect.hpp"

#include <ctime>
#include <iostream>
#include <sstream>

namespace pw::cli {

namespace {


std::string utc_date(std::int64_t seconds) {
    const auto time = static_cast<std::time_t>(seconds);
    std::tm parts{};
    if (gmtime_r(&time, &parts) == nullptr) return std::to_string(seconds);
    char text[64];
    if (std::strftime(text, sizeof text, "%Y-%m-%d %H:%M:%S UTC", &parts) == 0) {
        return std::to_string(seconds);
    }
    return text;
}

// Length of the valid UTF-8 sequence starting at text[i], or 0 when the bytes there are not
// one (overlong forms, surrogates and values above U+10FFFF count as invalid).
std::size_t utf8_sequence_length(std::string_view text, std::size_t i) {
    const auto byte = [&](std::size_t k) { return static_cast<unsigned char>(text[k]); };
    const unsigned char lead = byte(i);
    std::size_t length = 0;
    std::uint32_t code = 0;
    if (lead < 0x80) return 1;
    if (lead >= 0xC2 && lead <= 0xDF) {
        length = 2;
        code = lead & 0x1F;
    } else if (lead >= 0xE0 && lead <= 0xEF) {
        length = 3;
        code = lead & 0x0F;
    } else if (lead >= 0xF0 && lead <= 0xF4) {
        length = 4;
        code = lead & 0x07;
    } else {
        return 0;
    }
    if (i + length > text.size()) return 0;
    for (std::size_t k = 1; k < length; ++k) {
        if ((byte(i + k) & 0xC0) != 0x80) return 0;
        code = (code << 6) | (byte(i + k) & 0x3F);
    }
    if (length == 3 && (code < 0x800 || (code >= 0xD800 && code <= 0xDFFF))) return 0;
    if (length == 4 && (code < 0x10000 || code > 0x10FFFF)) return 0;
    return length;
}

// A JSON string literal. Torrent text is bytes, not necessarily UTF-8: bytes that are not
// valid UTF-8 become U+FFFD so the output is always valid JSON.
std::string json_string(std::string_view text) {
    static constexpr char digits[] = "0123456789abcdef";
    std::string out = "\"";
    for (std::size_t i = 0; i < text.size();) {
        const char c = text[i];
        const auto byte = static_cast<unsigned char>(c);
        if (c == '"' || c == '\\') {
            out += '\\';
            out += c;
            ++i;
        } else if (c == '\n') {
            out += "\\n";
            ++i;
        } else if (c == '\t') {
            out += "\\t";
            ++i;
        } else if (c == '\r') {
            out += "\\r";
            ++i;
        } else if (byte < 0x20) {
            out += "\\u00";
            out += digits[byte >> 4];
            out += digits[byte & 0xf];
            ++i;
        } else if (const std::size_t length = utf8_sequence_length(text, i); length > 0) {
            out += text.substr(i, length);
            i += length;
        } else {
            out += "\\ufffd";
            ++i;
        }
    }
    out += '"';
    return out;
}

}  // namespace

std::string human_size(std::uint64_t bytes) {
    static constexpr const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB"};
    if (bytes < 1024) return std::to_string(bytes) + " B";
    double value = static_cast<double>(bytes);
    std::size_t unit = 0;
    while (value >= 1024.0 && unit + 1 < std::size(units)) {
        value /= 1024.0;
        ++unit;
    }
    std::ostringstream out;
    out.setf(std::ios::fixed);
    out.precision(2);
    out << value << ' ' << units[unit];
    return out.str();
}

void print_summary(const Torrent& torrent, std::ostream& out) {
    out << "Name: " << torrent.name() << "\n\nGENERAL\n\n";
    out << "  Name: " << torrent.name() << "\n";
    out << "  Hash: " << to_hex(torrent.info_hash()) << "\n";
    if (!torrent.created_by().empty()) out << "  Created by: " << torrent.created_by() << "\n";
    if (torrent.creation_date() != 0) {
        out << "  Created on: " << utc_date(torrent.creation_date()) << "\n";
    }
    if (!torrent.comment().empty()) out << "  Comment: " << torrent.comment() << "\n";
    out << "  Piece Count: " << torrent.piece_count() << "\n";
    out << "  Piece Size: " << human_size(torrent.piece_length()) << " (" << torrent.piece_length()
        << " bytes)\n";
    out << "  Total Size: " << human_size(torrent.total_size()) << " (" << torrent.total_size()
        << " bytes)\n";
    out << "  Privacy: " << (torrent.is_private() ? "Private torrent" : "Public torrent") << "\n";

    out << "\nTRACKERS\n";
    if (torrent.trackers().empty()) out << "\n  (none)\n";
    for (std::size_t tier = 0; tier < torrent.trackers().size(); ++tier) {
        out << "\n  Tier #" << tier + 1 << "\n";
        for (const auto& url : torrent.trackers()[tier]) out << "  " << url << "\n";
    }

    // Numbered from 1, pad files left out: the numbers `download --select-file` takes (and,
    // less one, the RPC's file indices).
    out << "\nFILES\n\n";
    std::size_t number = 0;
    for (std::size_t i = 0; i < torrent.files().size(); ++i) {
        const FileEntry& file = torrent.files()[i];
        out << "  " << (file.pad ? std::string("-") : std::to_string(++number)) << "  "
            << torrent.relative_path(i) << " (" << human_size(file.length) << ")"
            << (file.pad ? " [padding]" : "") << "\n";
    }

    if (!torrent.warnings().empty()) {
        out << "\nWARNINGS\n\n";
        for (const auto& warning : torrent.warnings()) out << "  " << warning << "\n";
    }
}

void print_json(const Torrent& torrent, std::ostream& out) {
    out << "{\"name\":" << json_string(torrent.name());
    out << ",\"info_hash\":\"" << to_hex(torrent.info_hash()) << "\"";
    out << ",\"total_size\":" << torrent.total_size();
    out << ",\"piece_length\":" << torrent.piece_length();
    out << ",\"piece_count\":" << torrent.piece_count();
    out << ",\"private\":" << (torrent.is_private() ? "true" : "false");
    out << ",\"multi_file\":" << (torrent.is_multi_file() ? "true" : "false");
    if (!torrent.comment().empty()) out << ",\"comment\":" << json_string(torrent.comment());
    if (!torrent.created_by().empty()) {
        out << ",\"created_by\":" << json_string(torrent.created_by());
    }
    if (torrent.creation_date() != 0) out << ",\"creation_date\":" << torrent.creation_date();
    out << ",\"trackers\":[";
    for (std::size_t tier = 0; tier < torrent.trackers().size(); ++tier) {
        out << (tier ? ",[" : "[");
        const auto& urls = torrent.trackers()[tier];
        for (std::size_t k = 0; k < urls.size(); ++k) out << (k ? "," : "") << json_string(urls[k]);
        out << "]";
    }
    out << "],\"files\":[";
    for (std::size_t i = 0; i < torrent.files().size(); ++i) {
        const FileEntry& file = torrent.files()[i];
        out << (i ? "," : "") << "{\"path\":" << json_string(torrent.relative_path(i))
            << ",\"length\":" << file.length << ",\"offset\":" << file.offset;
        if (file.pad) out << ",\"pad\":true";
        out << "}";
    }
    out << "],\"warnings\":[";
    for (std::size_t i = 0; i < torrent.warnings().size(); ++i) {
        out << (i ? "," : "") << json_string(torrent.warnings()[i]);
    }
    out << "]}\n";
}

int run_inspect(const InspectOptions& options) {
    auto torrent = read_torrent_file(options.torrent_path);
    if (!torrent) {
        std::cerr << "piecework: cannot read " << options.torrent_path << ": "
                  << torrent.error().describe() << "\n";
        return 1;
    }
    if (options.json) {
        print_json(*torrent, std::cout);
    } else {
        print_summary(*torrent, std::cout);
    }
    std::cout.flush();
    return std::cout ? 0 : 1;
}

}  // namespace pw::cli
