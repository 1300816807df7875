// RPC request bodies, as the daemon's HTTP side hands them over. parse_request must never
// crash and must agree with check_request_body (what the HTTP threads run); what parses is
// rendered back, with field names, formats and strings taken from the input, and every reply
// must be valid JSON. The same bytes are also offered to the base64 decoder (metainfo, Basic
// auth), which must round-trip whatever it accepts.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <type_traits>
#include <variant>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/rpc.hpp"

namespace {

using namespace pw::rpc;

void check_reply(const std::string& reply) {
    if (!nlohmann::json::accept(reply)) __builtin_trap();
}

TorrentView view_from(std::string_view bytes) {
    TorrentView torrent;
    torrent.id = 1;
    torrent.name = std::string(bytes.substr(0, 64));  // not always UTF-8: must still render
    torrent.pieces = std::string(bytes.substr(0, 16));
    torrent.upload_ratio = bytes.empty() ? 0.0 : -static_cast<double>(bytes.size());
    torrent.files = {{torrent.name, 10, 5, bytes.size() % 2 == 0, Priority::high}};
    torrent.trackers = {TrackerView{}};
    torrent.peers = {PeerView{}};
    return torrent;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    const std::string_view body(reinterpret_cast<const char*>(data), size);

    if (const auto decoded = decode_base64(body)) {
        if (decode_base64(encode_base64(*decoded)) != decoded) __builtin_trap();
    }

    auto parsed = parse_request(body);
    if (parsed.ok() != check_request_body(body).ok()) __builtin_trap();
    if (!parsed.ok()) {
        check_reply(render_error(std::nullopt, parsed.error().describe()));
        return 0;
    }
    const Request& request = parsed.value();
    if (!request.method.ok()) {
        check_reply(render_error(request.tag, request.method.error().message));
        return 0;
    }
    const std::vector<TorrentView> torrents = {view_from(body)};
    std::visit(
        [&](const auto& method) {
            using T = std::decay_t<decltype(method)>;
            if constexpr (std::is_same_v<T, TorrentGet>) {
                for (const auto& torrent : torrents) {
                    (void)method.ids.matches(torrent.id, torrent.hash, size % 2 == 0);
                }
                const std::vector<std::uint32_t> removed = {7};
                check_reply(render_success(request.tag, torrent_get_arguments(method, torrents, &removed)));
            } else if constexpr (std::is_same_v<T, SessionGet>) {
                SessionView session;
                session.download_dir = std::string(body.substr(0, 32));
                check_reply(render_success(request.tag, session_arguments(session, method.fields)));
            } else if constexpr (std::is_same_v<T, TorrentAdd>) {
                if (method.source == TorrentAdd::Source::metainfo && method.data.empty()) __builtin_trap();
                check_reply(render_success(request.tag, torrent_added_arguments(torrents.front(), true)));
            } else if constexpr (std::is_same_v<T, FreeSpace>) {
                if (method.path.empty() || method.path.front() != '/') __builtin_trap();
                check_reply(render_success(request.tag, free_space_arguments(method.path, 1, 2)));
            } else {
                check_reply(render_success(request.tag));
            }
        },
        request.method.value());
    return 0;
}
