#pragma once
// Builds small .torrent files in memory for tests: content, hashes and metainfo agree.
#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

#include "core/bencode.hpp"
#include "core/metainfo.hpp"
#include "core/sha1.hpp"

namespace pw::test {

struct TestFile {
    std::vector<std::string> path;
    std::uint64_t length = 0;
    bool pad = false;  // BEP 47 padding: its content is zeros
};

struct TestTorrent {
    std::string bytes;    // the .torrent file
    std::string content;  // the torrent's whole byte stream
    Torrent torrent;

    std::string piece(std::uint32_t index) const {
        const std::uint64_t begin = std::uint64_t{index} * torrent.piece_length();
        return content.substr(begin, torrent.piece_size(PieceIndex{index}));
    }
};

// `files` empty means a single-file torrent of `single_length` bytes called `name`.
inline TestTorrent make_torrent(const std::string& name, std::uint32_t piece_length,
                                const std::vector<TestFile>& files,
                                std::uint64_t single_length = 0) {
    using bencode::Dict;
    using bencode::List;
    using bencode::Value;
    std::string content;
    Dict info;
    if (files.empty()) {
        for (std::uint64_t i = 0; i < single_length; ++i) content += static_cast<char>('a' + i % 23);
        info.emplace_back("length", Value(static_cast<std::int64_t>(single_length)));
    } else {
        List list;
        std::uint64_t seed = 0;
        for (const TestFile& file : files) {
            for (std::uint64_t i = 0; i < file.length; ++i) {
                content += file.pad ? '\0' : static_cast<char>('A' + (seed + i * 7) % 53);
            }
            seed += 11;
            List path;
            for (const std::string& element : file.path) path.emplace_back(element);
            Dict entry{{"length", Value(static_cast<std::int64_t>(file.length))},
                       {"path", Value(std::move(path))}};
            if (file.pad) entry.emplace_back("attr", Value(std::string("p")));
            list.emplace_back(std::move(entry));
        }
        info.emplace_back("files", Value(std::move(list)));
    }
    std::string hashes;
    for (std::uint64_t begin = 0; begin < content.size(); begin += piece_length) {
        const Sha1Digest digest = sha1(std::string_view(content).substr(begin, piece_length));
        hashes.append(reinterpret_cast<const char*>(digest.data()), digest.size());
    }
    info.emplace_back("name", Value(name));
    info.emplace_back("piece length", Value(static_cast<std::int64_t>(piece_length)));
    info.emplace_back("pieces", Value(std::move(hashes)));
    Dict root{{"announce", Value(std::string("http://127.0.0.1:1/announce"))},
              {"info", Value(std::move(info))}};
    const std::string bytes = bencode::encode(Value(std::move(root)));
    auto parsed = Torrent::parse(bytes);
    if (!parsed) throw std::runtime_error("test torrent does not parse: " + parsed.error().describe());
    return TestTorrent{bytes, std::move(content), std::move(parsed).value()};
}

}  // namespace pw::test
