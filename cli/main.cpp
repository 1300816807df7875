// piecework: the user-facing command. The work is in pw_cli; this only parses flags.
#include <exception>
#include <iostream>

#include <CLI/CLI.hpp>

#include "cli/create.hpp"
#include "cli/download.hpp"
#include "cli/inspect.hpp"
#include "cli/keygen.hpp"
#include "cli/tap.hpp"

int main(int argc, char** argv) {
    CLI::App app{"piecework: a BitTorrent client built as a pipeline of processes"};
    app.require_subcommand(1);

    pw::cli::InspectOptions inspect;
    auto* inspect_cmd = app.add_subcommand("inspect", "Show what a .torrent file describes");
    inspect_cmd->add_option("torrent", inspect.torrent_path, "The .torrent file")->required();
    inspect_cmd->add_flag("--json", inspect.json, "One JSON object, for scripts");

    pw::cli::CreateOptions create;
    auto* create_cmd = app.add_subcommand("create", "Make a .torrent of a file or a folder");
    create_cmd->add_option("path", create.path, "The file or folder to share")->required();
    create_cmd->add_option("-o,--output", create.output, "The .torrent file to write")->required();
    create_cmd->add_option("-t,--tracker", create.trackers, "Announce URL, a tier of its own (repeatable)")
        ->allow_extra_args(false);
    create_cmd->add_option("--piece-size", create.piece_size, "16K to 64M, a power of two (default: see below)");
    create_cmd->add_flag("--private", create.is_private, "Set the private flag (BEP 27)");
    create_cmd->add_option("--comment", create.comment, "A comment for the torrent");
    create_cmd->add_option("--web-seed", create.web_seeds, "Web seed URL (BEP 19, repeatable)")
        ->allow_extra_args(false);
    create_cmd->add_flag("--no-date", create.no_date, "Leave out the creation date");
    create_cmd->add_flag("--force", create.force, "Replace an existing output file");
    create_cmd->footer(pw::cli::kCreateHelp);

    // Finding peers without a tracker, for download, seed and daemon.
    const auto add_discovery = [](CLI::App* command, pw::cli::DiscoveryOptions& options) {
        command->add_flag("--no-lsd", options.no_lsd, "No local service discovery (BEP 14 multicast on the LAN)")
            ->envname("PW_NO_LSD");
        command->add_option("--lsd-interface", options.lsd_interface,
                            "IPv4 address of the interface LSD announces go out on (default: the system's)");
        command->add_flag("--no-dht", options.no_dht, "No DHT (BEP 5): peers from trackers, peer exchange and LSD only")
            ->envname("PW_NO_DHT");
        command->add_option("--dht-port", options.dht_port, "UDP port of our DHT node (0: a free one)")
            ->check(CLI::Range(0u, 65535u))->capture_default_str();
        command->add_option("--dht-bootstrap", options.dht_bootstrap,
                            "HOST:PORT of a DHT node to join through (repeatable; default: the well-known routers)")
            ->allow_extra_args(false);
    };
    pw::cli::DownloadOptions download;
    auto* download_cmd = app.add_subcommand("download", "Download a torrent into a folder");
    download_cmd->add_option("torrent", download.torrent_path, "The .torrent file, or a magnet link")->required();
    download_cmd->add_option("-o,--output", download.output_dir, "Download folder")
        ->capture_default_str();
    download_cmd->add_option("--peer", download.peers,
                             "HOST:PORT of a peer to use besides the trackers' (repeatable)")
        ->allow_extra_args(false);
    download_cmd->add_option("--workers", download.workers, "Peer worker processes")
        ->check(CLI::Range(1u, 64u))
        ->capture_default_str();
    download_cmd->add_flag("-q,--quiet", download.quiet, "No progress output");
    download_cmd->add_option("--log-level", download.log_level,
                             "Stage log level: trace, debug, info, warn, error")
        ->capture_default_str();
    download_cmd->add_option("--state-dir", download.state_dir,
                             "Folder for resume records (default: OUTPUT/.piecework)")
        ->envname("PW_STATE_DIR");
    download_cmd->add_option("--bin-dir", download.bin_dir,
                             "Folder with the stage executables (default: beside piecework)");
    // Giving back, for both download and seed.
    const auto add_giving_back = [&add_discovery](CLI::App* command, pw::cli::DownloadOptions& options) {
        command->add_option("--listen-port", options.listen_port, "Port peers reach us on (0: a free one)")
            ->check(CLI::Range(0u, 65535u))->capture_default_str();
        command->add_option("--encryption", options.encryption,
                            "Peer connections: prefer (encrypted first, plaintext where a peer will not), "
                            "require (encrypted only) or off (plaintext only)")
            ->check(CLI::IsMember({"prefer", "require", "off"}))->capture_default_str();
        command->add_option("--max-upload-rate", options.max_upload_rate, "Upload limit, bytes/s with K/M (e.g. 500K)");
        command->add_option("--max-download-rate", options.max_download_rate, "Download limit, bytes/s with K/M");
        add_discovery(command, options.discovery);
    };
    add_giving_back(download_cmd, download);
    download_cmd->add_option("--select-file", download.select_files,
                             "Only these files, numbered as `piecework inspect` lists them (e.g. 1,3-5)");
    download_cmd->add_flag("--sequential", download.sequential,
                           "Fetch pieces in order (a readahead window first), to play a file as it comes");
    download_cmd->add_option("--seed-ratio", download.seed_ratio,
                             "Once complete, seed until uploaded this many times its size (or --seed-time)")
        ->check(CLI::Range(0.0, 1e6));
    download_cmd->add_option("--seed-time", download.seed_time_minutes,
                             "Once complete, seed this many minutes (or until --seed-ratio)");

    pw::cli::DownloadOptions seed;
    seed.seed_only = true;
    auto* seed_cmd = app.add_subcommand("seed", "Check a torrent's files in a folder and seed them until Ctrl-C or SIGTERM");
    seed_cmd->add_option("torrent", seed.torrent_path, "The .torrent file")->required();
    seed_cmd->add_option("dir", seed.output_dir, "The folder holding its files (its name, or its folder, inside)")->required();
    seed_cmd->add_option("--workers", seed.workers, "Peer worker processes")->check(CLI::Range(1u, 64u))->capture_default_str();
    seed_cmd->add_flag("-q,--quiet", seed.quiet, "No progress output");
    seed_cmd->add_option("--log-level", seed.log_level, "Stage log level: trace, debug, info, warn, error")->capture_default_str();
    seed_cmd->add_option("--state-dir", seed.state_dir, "Folder for resume records (default: DIR/.piecework)");
    seed_cmd->add_option("--bin-dir", seed.bin_dir, "Folder with the stage executables (default: beside piecework)");
    add_giving_back(seed_cmd, seed);

    pw::cli::DaemonOptions daemon;
    auto* daemon_cmd = app.add_subcommand(
        "daemon", "Run the session in the foreground: many torrents, driven over the Transmission RPC, "
                  "kept across restarts");
    daemon_cmd->add_option("--download-dir", daemon.download_dir, "Where torrents go (default: ~/Downloads)")
        ->envname("PW_DOWNLOAD_DIR");
    daemon_cmd->add_option("--allow-dir", daemon.allowed_dirs,
                           "Another folder a torrent added over the RPC may go below (repeatable)")
        ->allow_extra_args(false);
    daemon_cmd->add_option("--state-dir", daemon.state_dir,
                           "The session's torrents, settings and resume records "
                           "(default: $XDG_STATE_HOME/piecework or ~/.local/state/piecework)")
        ->envname("PW_STATE_DIR");
    daemon_cmd->add_option("--rpc-bind", daemon.rpc_bind,
                           "Address the RPC listens on (anything but loopback needs --rpc-auth)")
        ->capture_default_str();
    daemon_cmd->add_option("--rpc-port", daemon.rpc_port, "Port of the RPC")
        ->check(CLI::Range(1u, 65535u))->capture_default_str();
    daemon_cmd->add_option("--rpc-auth", daemon.rpc_auth,
                           "File holding user:password for the RPC's HTTP basic auth (mode 0600)");
    daemon_cmd->add_option("--workers", daemon.workers, "Peer worker processes")
        ->check(CLI::Range(1u, 64u))->capture_default_str();
    daemon_cmd->add_option("--listen-port", daemon.listen_port, "Port announced to trackers")
        ->check(CLI::Range(1u, 65535u))->capture_default_str();
    daemon_cmd->add_option("--max-peers", daemon.max_peers, "Peers connected at once over every torrent")
        ->check(CLI::Range(1u, 100000u))->capture_default_str();
    daemon_cmd->add_option("--encryption", daemon.encryption,
                           "Peer connections: prefer, require or off (the RPC's encryption field)")
        ->check(CLI::IsMember({"prefer", "require", "off"}))->capture_default_str();
    daemon_cmd->add_option("--max-upload-rate", daemon.max_upload_rate,
                           "Upload limit over every torrent, bytes/s with K/M (the RPC's speed-limit-up)");
    daemon_cmd->add_option("--max-download-rate", daemon.max_download_rate,
                           "Download limit over every torrent, bytes/s with K/M (the RPC's speed-limit-down)");
    daemon_cmd->add_option("--log-level", daemon.log_level, "Stage log level: trace, debug, info, warn, error")
        ->capture_default_str();
    daemon_cmd->add_option("--bin-dir", daemon.bin_dir,
                           "Folder with the stage executables (default: beside piecework)");
    add_discovery(daemon_cmd, daemon.discovery);

    pw::cli::KeygenOptions keygen;
    auto* keygen_cmd = app.add_subcommand(
        "keygen", "Write a CURVE key pair OUT.key (secret, 0600) and OUT.pub (its allow-list line)");
    keygen_cmd->add_option("out", keygen.out, "Path and name of the pair, e.g. keys/orchestrator")
        ->required();
    keygen_cmd->add_option("--name", keygen.name, "Name on the allow-list line (default: OUT's file name)");
    keygen_cmd->add_flag("--force", keygen.force, "Replace existing files");

    pw::cli::TapOptions tap;
    unsigned tap_seconds = 0;
    auto* tap_cmd = app.add_subcommand("tap", "Print the messages stages trace on --trace-endpoint, one line each");
    tap_cmd->add_option("endpoint", tap.endpoints, "A stage's --trace-endpoint (repeatable)")->required();
    tap_cmd->add_option("--count", tap.count, "Stop after this many lines (default: never)");
    tap_cmd->add_option("--seconds", tap_seconds, "Stop after this long (default: never)");

    try {
        app.parse(argc, argv);
    } catch (const CLI::ParseError& e) {
        return app.exit(e);
    }
    try {
        if (*inspect_cmd) return pw::cli::run_inspect(inspect);
        if (*create_cmd) return pw::cli::run_create(create, std::cout, std::cerr);
        if (*download_cmd) return pw::cli::run_download(download);
        if (*seed_cmd) return pw::cli::run_download(seed);
        if (*daemon_cmd) return pw::cli::run_daemon(daemon);
        if (*tap_cmd) {
            tap.timeout = std::chrono::seconds(tap_seconds);
            return pw::cli::run_tap(tap, std::cout, [] { return false; });
        }
        if (*keygen_cmd) return pw::cli::run_keygen(keygen, std::cout, std::cerr);
    } catch (const std::exception& e) {
        std::cerr << "piecework: " << e.what() << "\n";
        return 1;
    }
    return 2;
}
