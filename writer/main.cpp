// writer: puts verified pieces into the torrents' files below their download folders.
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
    return pw::bus::run_stage(app, argc, argv, common, [&] {
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
