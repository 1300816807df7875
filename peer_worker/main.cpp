// peer_worker: fetches pieces from BitTorrent peers for the orchestrator and hands them,
// whole and unverified, to the verifier; accepts peers and uploads to them the pieces the
// writer reads back.
#include <chrono>
#include <cstdint>
#include <map>
#include <string>

#include <unistd.h>

#include "core/bus/stage_cli.hpp"
#include "peer_worker/worker_service.hpp"

int main(int argc, char** argv) {
    CLI::App app{"piecework peer_worker: downloads pieces from peers"};
    pw::bus::StageCommon common;
    pw::bus::add_common_options(app, common, pw::bus::default_instance_name("peer_worker"));
    pw::peer_worker::WorkerOptions options;
    app.add_option("--pieces", options.pieces, "the verifier's endpoint for pieces (we push)")
        ->envname("PW_PIECES")->required();
    app.add_option("--reads", options.reads,
                   "the writer's endpoint for reading pieces back to upload (we connect); "
                   "without it pieces are announced but requests refused")
        ->envname("PW_READS");
    app.add_option("--max-peers", options.max_peers, "most peers connected at once, over every torrent")
        ->check(CLI::Range(1u, 10000u))->capture_default_str();
    std::uint64_t piece_memory_mib = options.max_piece_bytes >> 20;
    app.add_option("--piece-memory-mib", piece_memory_mib,
                   "MiB of pieces held at once over every torrent, leased to delivered "
                   "(the arenas' budget); beyond it, leases are refused")
        ->envname("PW_PIECE_MEMORY_MIB")->check(CLI::Range(1u, 65536u))->capture_default_str();
    std::uint64_t upload_cache_mib = options.upload_cache_bytes >> 20;
    app.add_option("--upload-cache-mib", upload_cache_mib,
                   "MiB of whole pieces kept for uploading, over every torrent (least recently "
                   "used go first)")
        ->envname("PW_UPLOAD_CACHE_MIB")->check(CLI::Range(1u, 4096u))->capture_default_str();
    unsigned upload_stall_seconds = static_cast<unsigned>(options.upload_stall.count());
    app.add_option("--upload-stall-seconds", upload_stall_seconds,
                   "drop a peer that has read nothing of what we send for this long")
        ->envname("PW_UPLOAD_STALL_SECONDS")->check(CLI::Range(1u, 3600u))->capture_default_str();
    const std::map<std::string, pw::peer_worker::SharedMemory> shared_memory_modes{
        {"auto", pw::peer_worker::SharedMemory::automatic},
        {"on", pw::peer_worker::SharedMemory::on},
        {"off", pw::peer_worker::SharedMemory::off}};
    app.add_option("--shared-memory", options.shared_memory,
                   "keep pieces in a shared-memory arena the verifier and writer read in place "
                   "(auto: when --pieces is ipc://)")
        ->envname("PW_SHARED_MEMORY")
        ->transform(CLI::CheckedTransformer(shared_memory_modes, CLI::ignore_case)
                        .description("on|off|auto"))
        ->type_name("")
        ->default_str("auto");
    return pw::bus::run_stage(app, argc, argv, common, [&] {
        options.max_piece_bytes = piece_memory_mib << 20;
        options.upload_cache_bytes = upload_cache_mib << 20;
        options.upload_stall = std::chrono::seconds(upload_stall_seconds);
        options.control = common.control;
        options.name = common.name;
        options.metrics = common.metrics;
        options.curve = pw::bus::load_curve_config(common.curve_key, common.curve_allow);
        options.signal_fd = common.signal_fd;
        pw::peer_worker::WorkerService service(options);
        return service.run();
    });
}
