// orchestrator: owns the session's state and tells the other stages what to do.
#include <filesystem>
#include <iostream>
#include <random>

#include <unistd.h>

#include <spdlog/spdlog.h>

#include "core/bus/stage_cli.hpp"
#include "core/bus/welcome.hpp"
#include "core/byte_count.hpp"
#include "core/metainfo.hpp"
#include "orchestrator/peer_argument.hpp"
#include "orchestrator/service.hpp"

int main(int argc, char** argv) {
    CLI::App app{"piecework orchestrator: owns the session's state and drives the other stages"};
    pw::bus::StageCommon common;
    pw::bus::add_common_options(app, common, "orchestrator");
    std::vector<std::string> torrent_paths;
    std::vector<std::string> peer_args;
    unsigned listen_port = 6881;
    unsigned heartbeat_ms = 1000;
    unsigned max_peers = 200;
    bool quiet = false;
    pw::orchestrator::ServiceConfig config;
    app.add_option("--torrent", torrent_paths,
                   "a .torrent file to download at once (repeatable; comma-separated in PW_TORRENT)")
        ->envname("PW_TORRENT")->delimiter(',');
    std::vector<std::string> magnets;
    app.add_option("--magnet", magnets,
                   "a magnet link to download at once (repeatable): its metadata is fetched from peers first");
    app.add_option("--peer", peer_args,
                   "HOST:PORT of a peer for the --torrent files, without a tracker (repeatable; "
                   "comma-separated in PW_PEERS)")
        ->envname("PW_PEERS")->delimiter(',');
    app.add_option("--download-dir", config.download_dir,
                   "where torrents go (absolute; default: the writer's --dir)")
        ->envname("PW_DOWNLOAD_DIR");
    app.add_option("--state-dir", config.state_dir,
                   "keep the session (its torrents, their settings and totals) in this folder and "
                   "restore it from there at start")
        ->envname("PW_SESSION_DIR");
    app.add_option("--allow-dir", config.allowed_dirs,
                   "another folder a torrent added over the RPC may go below (repeatable)")
        ->allow_extra_args(false);
    unsigned rpc_port = 0;
    std::string rpc_bind = "127.0.0.1";
    std::string rpc_auth;
    bool rpc_auth_generate = false;
    app.add_option("--rpc-port", rpc_port, "serve the Transmission RPC on this port (0: no RPC)")
        ->envname("PW_RPC_PORT")->check(CLI::Range(0u, 65535u))->capture_default_str();
    app.add_option("--rpc-bind", rpc_bind, "address the RPC listens on (anything but loopback needs --rpc-auth)")
        ->envname("PW_RPC_BIND")->capture_default_str();
    app.add_option("--rpc-auth", rpc_auth, "file holding user:password for the RPC's HTTP basic auth")
        ->envname("PW_RPC_AUTH");
    app.add_flag("--rpc-auth-generate", rpc_auth_generate,
                 "when the --rpc-auth file does not exist, create it: user 'piecework' and a random password")
        ->envname("PW_RPC_AUTH_GENERATE");
    app.add_option("--select-file", config.select_files,
                   "download only these files of the --torrent files: numbers as `piecework inspect` "
                   "lists them, e.g. 1,3-5");
    app.add_flag("--sequential", config.sequential,
                 "fetch the --torrent files' pieces in order (with a readahead window), to play them "
                 "while they download");
    app.add_flag("--exit-when-done", config.exit_when_done,
                 "end the run (exit 0) once every torrent is complete, as `piecework download` does");
    app.add_option("--listen-port", listen_port,
                   "port the workers accept peers on, and announce (0: a free one, picked at start)")
        ->envname("PW_LISTEN_PORT")->check(CLI::Range(0u, 65535u))->capture_default_str();
    std::string encryption = "prefer";
    app.add_option("--encryption", encryption,
                   "peer connections: prefer (MSE first, plaintext where a peer will not), require "
                   "(encrypted only, both ways) or off (plaintext only)")
        ->envname("PW_ENCRYPTION")->check(CLI::IsMember({"prefer", "require", "off"}))->capture_default_str();
    std::string max_upload_rate;
    std::string max_download_rate;
    double seed_ratio = 0;
    unsigned seed_time = 0;
    app.add_option("--max-upload-rate", max_upload_rate, "upload limit over every torrent, bytes/s with K/M (e.g. 500K)")
        ->envname("PW_MAX_UPLOAD_RATE");
    app.add_option("--max-download-rate", max_download_rate, "download limit over every torrent, bytes/s with K/M")
        ->envname("PW_MAX_DOWNLOAD_RATE");
    auto* ratio_option = app.add_option("--seed-ratio", seed_ratio,
                                        "seed each complete torrent until it uploaded this many times its size")
                             ->check(CLI::Range(0.0, 1e6));
    auto* time_option = app.add_option("--seed-time", seed_time, "with --exit-when-done: seed this many minutes after completing")
                            ->check(CLI::Range(0u, 10'000'000u));
    app.add_option("--max-peers", max_peers, "peers connected at once over every torrent")
        ->check(CLI::Range(1u, 100000u))->capture_default_str();
    app.add_option("--heartbeat-ms", heartbeat_ms, "Heartbeat period")
        ->check(CLI::Range(50u, 60000u))->capture_default_str();
    app.add_flag("-q,--quiet", quiet, "No progress output");
    return pw::bus::run_stage(app, argc, argv, common, [&] {
        namespace fs = std::filesystem;
        for (const auto& path : torrent_paths) {
            auto bytes = pw::read_torrent_bytes(path);
            if (!bytes) throw std::runtime_error(path + ": " + bytes.error().describe());
            config.torrents.push_back({fs::absolute(path).string(), std::move(*bytes)});
        }
        for (auto& link : magnets) config.torrents.push_back({{}, std::move(link)});
        if (!config.download_dir.empty()) config.download_dir = fs::absolute(config.download_dir).lexically_normal().string();
        if (!config.state_dir.empty()) config.state_dir = fs::absolute(config.state_dir).string();
        for (auto& dir : config.allowed_dirs) dir = fs::absolute(dir).lexically_normal().string();
        if (rpc_port != 0) {
            pw::orchestrator::RpcServerOptions rpc;
            rpc.bind_address = rpc_bind;
            rpc.port = static_cast<std::uint16_t>(rpc_port);
            if (!rpc_auth.empty() && rpc_auth_generate && !fs::exists(rpc_auth)) {
                auto made = pw::orchestrator::create_rpc_auth_file(rpc_auth);
                if (!made) throw std::runtime_error(made.error().describe());
                spdlog::warn("RPC credentials created in {} (user {}): read the password there", rpc_auth, made->user);
            }
            if (!rpc_auth.empty()) {
                auto credentials = pw::orchestrator::read_rpc_auth_file(rpc_auth);
                if (!credentials) throw std::runtime_error("--rpc-auth " + rpc_auth + ": " + credentials.error().describe());
                rpc.credentials = std::move(*credentials);
            }
            if (const auto exposed = pw::orchestrator::check_rpc_exposure(rpc); !exposed.ok()) {
                throw std::runtime_error(exposed.error().describe());
            }
            config.rpc = std::move(rpc);
        }
        config.control = common.control;
        config.session.name = common.name;
        config.session.metrics = common.metrics;
        if (listen_port == 0) listen_port = pw::orchestrator::pick_free_port();
        config.session.listen_port = listen_port;
        config.session.encryption = pw::parse_encryption(encryption).value_or(pw::Encryption::prefer);
        for (const auto& [text, out] : {std::pair{&max_upload_rate, &config.max_upload_rate},
                                        std::pair{&max_download_rate, &config.max_download_rate}}) {
            if (text->empty()) continue;
            auto bytes = pw::parse_byte_count(*text);
            if (!bytes) throw std::runtime_error("rate " + bytes.error().describe());
            *out = *bytes;
        }
        if (*ratio_option) config.seed_ratio = seed_ratio;
        if (*time_option) config.seed_time = std::chrono::minutes(seed_time);
        config.session.heartbeat = std::chrono::milliseconds(heartbeat_ms);
        config.session.max_peers = max_peers;
        config.session.seed = std::random_device{}();
        config.curve = pw::bus::load_curve_config(common.curve_key, common.curve_allow);
        config.signal_fd = common.signal_fd;
        config.quiet = quiet;
        config.terminal = ::isatty(STDOUT_FILENO) == 1;
        for (const auto& text : peer_args) {
            auto peer = pw::orchestrator::resolve_peer(text);
            if (!peer) throw std::runtime_error(peer.error().describe());
            config.peers.push_back(*peer);
        }
        zmq::context_t context;
        pw::orchestrator::OrchestratorService service(context, std::move(config), std::cout, std::cerr);
        pw::bus::release_start_up_memory();  // the parser's transient copies of the .torrent files
        return service.run();
    });
}
