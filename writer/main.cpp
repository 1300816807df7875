// writer: puts verified pieces into the torrents' files below their download folders.
#include <map>
#include <string>

#include <unistd.h>

#include "core/bus/stage_cli.hpp"
#include "writer/writer_stage.hpp"

int main(int argc, char** argv) {
    CLI::App app{"piecework writer: writes verified pieces into the torrents' download folders"};
    pw::bus::StageCommon common;
    pw::bus::add_common_options(app, common, "writer-" + std::to_string(::getpid()));
    pw::writer::WriterOptions options;
    int sync_interval_ms = 1000;
    app.add_option("--verified", options.verified, "endpoint to bind for verified pieces")
        ->envname("PW_VERIFIED")->required();
    app.add_option("--dir", options.dir,
                   "the default download root: torrents without a download folder of their own "
                   "go here (created when missing)")
        ->envname("PW_DIR")->required();
    app.add_option("--allow-dir", options.allow_dirs,
                   "another root a torrent's download folder may lie below (repeatable; "
                   "created when missing)")
        ->envname("PW_ALLOW_DIRS")->delimiter(',');
    app.add_option("--state-dir", options.state_dir,
                   "folder for the resume records (default: DIR/.piecework)")
        ->envname("PW_STATE_DIR");
    app.add_option("--max-open-files", options.max_open_files,
                   "files kept open at once, across every torrent")
        ->envname("PW_MAX_OPEN_FILES")->check(CLI::Range(1, 65536))->capture_default_str();
    app.add_option("--sync-interval-ms", sync_interval_ms,
                   "make written pieces durable (and acknowledge them) at most this often")
        ->check(CLI::Range(1, 3'600'000))->capture_default_str();
    std::string direct_io = "on";
    app.add_option("--direct-io", direct_io,
                   "write aligned pieces with O_DIRECT, past the page cache (off: everything "
                   "through the page cache)")
        ->envname("PW_DIRECT_IO")->check(CLI::IsMember({"on", "off"}))->capture_default_str();
    app.add_option("--reads", options.reads,
                   "endpoint to bind for the workers' reads of verified pieces to upload (none: "
                   "no reads are served)")
        ->envname("PW_READS");
    const std::map<std::string, pw::writer::ReadArena> read_arena_modes{
        {"auto", pw::writer::ReadArena::automatic},
        {"on", pw::writer::ReadArena::on},
        {"off", pw::writer::ReadArena::off}};
    app.add_option("--read-arena", options.read_arena,
                   "answer reads in shared-memory arenas the workers map read-only, not as "
                   "frames (auto: when --reads is ipc://)")
        ->envname("PW_READ_ARENA")
        ->transform(CLI::CheckedTransformer(read_arena_modes, CLI::ignore_case).description("on|off|auto"))
        ->type_name("")
        ->default_str("auto");
    std::size_t read_memory_mib = options.read.memory_bytes >> 20;
    app.add_option("--read-memory-mib", read_memory_mib,
                   "MiB of pieces read for workers held at once: the read arenas' slots, or the "
                   "frames not sent yet (at least two pieces)")
        ->envname("PW_READ_MEMORY_MIB")->check(CLI::Range(1u, 65536u))->capture_default_str();
    std::size_t read_cache_mib = options.read.cache_bytes >> 20;
    app.add_option("--read-cache-mib", read_cache_mib,
                   "MiB of verified pieces kept for their next read (0: none)")
        ->envname("PW_READ_CACHE_MIB")->check(CLI::Range(0u, 65536u))->capture_default_str();
    return pw::bus::run_stage(app, argc, argv, common, [&] {
        options.read.memory_bytes = read_memory_mib << 20;
        options.read.cache_bytes = read_cache_mib << 20;
        options.control = common.control;
        options.name = common.name;
        options.metrics = common.metrics;
        options.curve = pw::bus::load_curve_config(common.curve_key, common.curve_allow);
        options.sync_interval = std::chrono::milliseconds(sync_interval_ms);
        options.direct_io = direct_io == "on";
        options.signal_fd = common.signal_fd;
        zmq::context_t context;
        return pw::writer::run_writer(context, options);
    });
}
