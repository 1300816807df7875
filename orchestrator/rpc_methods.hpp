#pragma once
// The Transmission RPC's methods carried out on the session: a request body in (already past
// the HTTP side's checks), a reply body out. Runs on the orchestrator's loop, which owns the
// session; the parsing and rendering are core/rpc's, the HTTP is rpc_server's.
#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "core/rpc.hpp"
#include "orchestrator/session.hpp"
#include "orchestrator/session_store.hpp"

namespace pw::orchestrator {

struct RpcContext {
    // Folders a torrent may be downloaded below: the session's download folder and these.
    std::vector<std::string> allowed_dirs;
    std::uint16_t peer_port = 0;
    std::string session_id;   // the HTTP side's X-Transmission-Session-Id, for session-get
    std::string state_dir;    // config-dir
    rpc::RequestLimits limits;
    std::int64_t started = 0;  // unix seconds: this run's start, for session-stats
};

// Whether `path` (absolute, normalized here) lies below (or is) one of `roots`.
bool lies_below(const std::string& path, const std::vector<std::string>& roots);

class RpcMethods {
public:
    using Clock = std::chrono::steady_clock;

    // `store` is null when the session is not saved (then torrent-add keeps no copy).
    RpcMethods(Session& session, SessionSettings& settings, const SessionStore* store, RpcContext context);

    // One request body to its reply body (Transmission's JSON, errors included).
    std::string handle(const std::string& body, Clock::time_point now, std::int64_t wall_now);

    // The view of one torrent, as torrent-get shows it.
    rpc::TorrentView view(const TorrentState& torrent, std::int64_t wall_now) const;

    void set_session_id(std::string id) { context_.session_id = std::move(id); }

private:
    Result<nlohmann::json> dispatch(rpc::Method& method, Clock::time_point now, std::int64_t wall_now);
    Result<nlohmann::json> torrent_add(rpc::TorrentAdd& add, Clock::time_point now, std::int64_t wall_now);
    // What torrent-add asks of a torrent's settings (folder checked against the roots).
    Result<TorrentSettings> settings_of(const rpc::TorrentAdd& add) const;
    // filename is a magnet link: added by info-hash, its metadata fetched from peers.
    Result<nlohmann::json> add_magnet(rpc::TorrentAdd& add, Clock::time_point now, std::int64_t wall_now);
    Result<nlohmann::json> torrent_get(const rpc::TorrentGet& get, std::int64_t wall_now);
    Result<nlohmann::json> torrent_set(const rpc::TorrentSet& set, Clock::time_point now);
    Result<nlohmann::json> session_set(const rpc::SessionSet& set);
    // The torrents a request names; an explicitly listed id the session does not have is an
    // error (the message names it).
    Result<std::vector<TorrentId>> select(const rpc::TorrentIds& ids, std::int64_t wall_now) const;
    std::vector<std::string> roots() const;
    rpc::SessionView session_view() const;

    Session& session_;
    SessionSettings& settings_;
    const SessionStore* store_;
    RpcContext context_;
    // Removed lately, for torrent-get's "recently-active" answers: (id, unix seconds).
    std::deque<std::pair<std::uint32_t, std::int64_t>> removed_;
};

}  // namespace pw::orchestrator
