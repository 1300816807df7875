#include "cli/create.hpp"
#include "cli/inspect.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <climits>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <exception>
#include <iterator>
#include <memory>
#include <mutex>
#include <optional>
#include <ostream>
#include <sstream>
#include <thread>

#include "core/metainfo.hpp"
#include "core/sha1.hpp"
#include "core/torrent_builder.hpp"

namespace pw::cli {

const char* const kCreateHelp =
    "PATH is a file or a folder. A folder's files are listed in byte order of their whole\n"
    "path below it, as mktorrent lists them (\"a.txt\" < \"a/b\" < \"a0\", \"B\" < \"a\"): hidden\n"
    "files are kept, empty files kept, empty folders left out; sockets, FIFOs and devices\n"
    "are skipped with a warning.\n"
    "Symlinks are followed when they resolve inside PATH (the file is listed under the\n"
    "link's name, as mktorrent does); a symlink that points outside PATH, dangles or loops\n"
    "back into a folder that contains it is an error. PATH itself may be a symlink.\n"
    "Without --piece-size: the smallest power of two from 16K to 16M that makes at most\n"
    "2048 pieces. --piece-size takes a power of two from 16K to 64M (16384, 256K, 1M, 4MiB).\n"
    "Each -t is a tier of its own (BEP 12). Hashing runs on every core; a progress line\n"
    "shows on standard error while it is a terminal.";

namespace {

// mktorrent's "created by" names its version too; keep in step with project() in the
// top-level CMakeLists.txt.
constexpr const char* kCreatedBy = "piecework 0.1.0";

// Far more than any real folder holds, but bounded: links to folders inside PATH may list
// one folder many times (as mktorrent does), and a chain of them multiplies.
constexpr std::uint64_t kMaxEntriesVisited = 4'000'000;

std::string errno_text(int error) { return std::strerror(error); }

Error path_error(const std::string& path, int error) {
    return make_error(path + ": " + errno_text(error));
}

// The directories from PATH down to the one being listed, as (device, inode): a folder
// reached again below itself (through a symlink or a bind mount) is a loop.
struct Ancestor {
    dev_t device;
    ino_t inode;
    std::shared_ptr<const Ancestor> parent;
};

bool is_ancestor(const std::shared_ptr<const Ancestor>& chain, const struct stat& info) {
    for (const Ancestor* a = chain.get(); a != nullptr; a = a->parent.get()) {
        if (a->device == info.st_dev && a->inode == info.st_ino) return true;
    }
    return false;
}

std::optional<std::string> real_path(const std::string& path) {
    std::unique_ptr<char, decltype(&std::free)> resolved(::realpath(path.c_str(), nullptr),
                                                         &std::free);
    if (!resolved) return std::nullopt;
    return std::string(resolved.get());
}

bool is_inside(const std::string& target, const std::string& root) {
    if (root == "/") return true;
    return target == root ||
           (target.size() > root.size() && target.compare(0, root.size(), root) == 0 &&
            target[root.size()] == '/');
}

std::string strip_trailing_slashes(std::string path) {
    while (path.size() > 1 && path.back() == '/') path.pop_back();
    return path;
}

// The torrent's name: PATH's last element, as mktorrent names it; "." or ".." mean the
// folder they resolve to.
Result<std::string> content_name(const std::string& path) {
    const auto slash = path.rfind('/');
    std::string name = slash == std::string::npos ? path : path.substr(slash + 1);
    if (name.empty() || name == "." || name == "..") {
        const auto resolved = real_path(path);
        if (!resolved) return path_error(path, errno);
        const auto last = resolved->rfind('/');
        name = last == std::string::npos ? *resolved : resolved->substr(last + 1);
    }
    if (name.empty()) return make_error(path + ": the file system root has no name to give a torrent");
    return name;
}

struct PendingFolder {
    std::string disk_path;
    std::vector<std::string> path;  // below PATH
    std::shared_ptr<const Ancestor> ancestors;  // this folder included
};

class Walker {
public:
    Walker(std::string root_real, Content& content) : root_real_(std::move(root_real)), content_(content) {}

    Status walk(const std::string& root, const struct stat& root_info) {
        std::vector<PendingFolder> pending;
        pending.push_back(PendingFolder{
            root, {}, std::make_shared<const Ancestor>(Ancestor{root_info.st_dev, root_info.st_ino, nullptr})});
        while (!pending.empty()) {
            PendingFolder folder = std::move(pending.back());
            pending.pop_back();
            auto names = list_folder(folder.disk_path);
            if (!names) return names.error();
            // The files are sorted at the end; walking in name order only makes the first
            // error reported the same from one run to the next.
            std::vector<PendingFolder> subfolders;
            for (const std::string& name : *names) {
                if (Status s = visit(folder, name, subfolders); !s) return s;
            }
            std::move(subfolders.rbegin(), subfolders.rend(), std::back_inserter(pending));
        }
        return ok_status();
    }

private:
    static Result<std::vector<std::string>> list_folder(const std::string& disk_path) {
        DIR* dir = ::opendir(disk_path.c_str());
        if (dir == nullptr) return path_error(disk_path, errno);
        std::vector<std::string> names;
        errno = 0;
        while (const dirent* entry = ::readdir(dir)) {
            const std::string_view name = entry->d_name;
            if (name != "." && name != "..") names.emplace_back(name);
            errno = 0;
        }
        const int error = errno;
        ::closedir(dir);
        if (error != 0) return path_error(disk_path, error);
        std::sort(names.begin(), names.end());
        return names;
    }

    Status visit(const PendingFolder& folder, const std::string& name,
                 std::vector<PendingFolder>& pending) {
        if (++visited_ > kMaxEntriesVisited) {
            return make_error("more than " + std::to_string(kMaxEntriesVisited) +
                              " entries below the folder (links to folders multiply them)");
        }
        const std::string disk_path = folder.disk_path + "/" + name;
        struct stat info {};
        if (::lstat(disk_path.c_str(), &info) != 0) return path_error(disk_path, errno);
        if (S_ISLNK(info.st_mode)) {
            const auto target = real_path(disk_path);
            if (!target) {
                return make_error(disk_path + ": a symlink to nothing (" + errno_text(errno) + ")");
            }
            if (!is_inside(*target, root_real_)) {
                return make_error(disk_path + ": a symlink to " + *target +
                                  ", outside the folder; only links that stay inside are followed");
            }
            if (::stat(disk_path.c_str(), &info) != 0) return path_error(disk_path, errno);
        }
        std::vector<std::string> path = folder.path;
        path.push_back(name);
        if (S_ISDIR(info.st_mode)) {
            if (is_ancestor(folder.ancestors, info)) {
                return make_error(disk_path + ": leads back into a folder that contains it (a loop)");
            }
            pending.push_back(PendingFolder{
                disk_path, std::move(path),
                std::make_shared<const Ancestor>(Ancestor{info.st_dev, info.st_ino, folder.ancestors})});
            return ok_status();
        }
        if (!S_ISREG(info.st_mode)) {
            content_.skipped.push_back(disk_path + ": not a regular file or a folder, skipped");
            return ok_status();
        }
        if (::access(disk_path.c_str(), R_OK) != 0) return path_error(disk_path, errno);
        if (content_.files.size() >= MetainfoLimits{}.max_files) {
            return make_error("more than " + std::to_string(MetainfoLimits{}.max_files) +
                              " files, more than a torrent may hold");
        }
        ContentFile file;
        file.path = std::move(path);
        file.disk_path = disk_path;
        file.length = static_cast<std::uint64_t>(info.st_size);
        file.device = info.st_dev;
        file.inode = info.st_ino;
        content_.files.push_back(std::move(file));
        return ok_status();
    }

    std::string root_real_;
    Content& content_;
    std::uint64_t visited_ = 0;
};

// mktorrent's order, through the builder's rule so both use the same one.
void sort_files(std::vector<ContentFile>& files) {
    std::vector<NewFile> keys;
    keys.reserve(files.size());
    for (std::size_t i = 0; i < files.size(); ++i) {
        // The index rides along as the length: only the order is wanted here.
        keys.push_back(NewFile{files[i].path, i});
    }
    sort_like_mktorrent(keys);
    std::vector<ContentFile> sorted;
    sorted.reserve(files.size());
    for (const NewFile& key : keys) sorted.push_back(std::move(files[key.length]));
    files = std::move(sorted);
}

// Reads byte ranges of the torrent's stream from its files; one per hashing thread, each
// with its own descriptor, kept open while consecutive reads stay in one file.
class StreamReader {
public:
    explicit StreamReader(const Content& content) : content_(content) {}
    ~StreamReader() { close_file(); }
    StreamReader(const StreamReader&) = delete;
    StreamReader& operator=(const StreamReader&) = delete;

    Status read(std::uint64_t offset, char* out, std::size_t size) {
        const auto& files = content_.files;
        auto it = std::partition_point(files.begin(), files.end(), [&](const ContentFile& file) {
            return file.offset + file.length <= offset;
        });
        std::size_t done = 0;
        for (; it != files.end() && done < size; ++it) {
            if (it->length == 0) continue;
            const std::uint64_t in_file = offset + done - it->offset;
            const std::size_t span =
                static_cast<std::size_t>(std::min<std::uint64_t>(size - done, it->length - in_file));
            if (Status s = open_file(static_cast<std::size_t>(it - files.begin())); !s) return s;
            if (Status s = read_exactly(*it, in_file, out + done, span); !s) return s;
            done += span;
        }
        if (done != size) return make_error("internal error: the files end before the torrent does");
        return ok_status();
    }

private:
    Status open_file(std::size_t index) {
        if (index == open_index_) return ok_status();
        close_file();
        const ContentFile& file = content_.files[index];
        const int fd = ::open(file.disk_path.c_str(), O_RDONLY | O_CLOEXEC);
        if (fd < 0) return path_error(file.disk_path, errno);
        struct stat info {};
        if (::fstat(fd, &info) != 0) {
            const int error = errno;
            ::close(fd);
            return path_error(file.disk_path, error);
        }
        if (info.st_dev != file.device || info.st_ino != file.inode) {
            ::close(fd);
            return make_error(file.disk_path + ": replaced by another file while hashing");
        }
        if (static_cast<std::uint64_t>(info.st_size) != file.length) {
            ::close(fd);
            return make_error(file.disk_path + ": changed size while hashing (" +
                              std::to_string(file.length) + " bytes when listed, " +
                              std::to_string(info.st_size) + " now)");
        }
        // Each thread reads runs of whole pieces: let the kernel read ahead generously.
        ::posix_fadvise(fd, 0, 0, POSIX_FADV_SEQUENTIAL);
        fd_ = fd;
        open_index_ = index;
        return ok_status();
    }

    Status read_exactly(const ContentFile& file, std::uint64_t offset, char* out, std::size_t size) {
        std::size_t done = 0;
        while (done < size) {
            const ssize_t got = ::pread(fd_, out + done, size - done, static_cast<off_t>(offset + done));
            if (got < 0 && errno == EINTR) continue;
            if (got < 0) return path_error(file.disk_path, errno);
            if (got == 0) return make_error(file.disk_path + ": shrank while hashing");
            done += static_cast<std::size_t>(got);
        }
        return ok_status();
    }

    void close_file() {
        if (fd_ >= 0) ::close(fd_);
        fd_ = -1;
        open_index_ = SIZE_MAX;
    }

    const Content& content_;
    int fd_ = -1;
    std::size_t open_index_ = SIZE_MAX;
};

// Pieces handed out at a time: a few MiB of one file read in order, while the threads
// together still move through the content front to back (kind to a spinning disk).
constexpr std::uint64_t kRunBytes = 4u << 20;
// Each thread holds one piece: with 64 MiB pieces, fewer threads rather than gigabytes.
constexpr std::uint64_t kMaxBufferBytes = 512u << 20;

Status check_url(const std::string& url, const char* what) {
    const auto scheme_end = url.find("://");
    if (url.empty() || scheme_end == 0 || scheme_end == std::string::npos) {
        return make_error(std::string(what) + " \"" + url + "\" is not a URL (scheme://...)");
    }
    for (const char c : url) {
        if (static_cast<unsigned char>(c) <= 0x20 || c == 0x7f) {
            return make_error(std::string(what) + " \"" + url + "\" holds a space or a control character");
        }
    }
    return ok_status();
}

std::string parent_folder(const std::string& path) {
    const std::string stripped = strip_trailing_slashes(path);
    const auto slash = stripped.rfind('/');
    if (slash == std::string::npos) return ".";
    if (slash == 0) return "/";
    return stripped.substr(0, slash);
}

// Checks made before the (possibly long) hashing: where the output goes.
Status check_output(const std::string& output, bool force) {
    if (output.empty()) return make_error("no output file given (-o FILE.torrent)");
    struct stat info {};
    // lstat: a symlink there is a file there, and --force replaces the link, not its target.
    if (::lstat(output.c_str(), &info) == 0) {
        if (S_ISDIR(info.st_mode)) return make_error(output + ": is a folder; -o names the .torrent file");
        if (!force) return make_error(output + ": exists (--force replaces it)");
    } else if (errno != ENOENT) {
        return path_error(output, errno);
    }
    const std::string folder = parent_folder(output);
    const auto cannot_write = [&](const std::string& why) {
        return make_error("cannot write " + output + ": " + folder + ": " + why);
    };
    if (::stat(folder.c_str(), &info) != 0) return cannot_write(errno_text(errno));
    if (!S_ISDIR(info.st_mode)) return cannot_write("not a folder");
    if (::access(folder.c_str(), W_OK) != 0) return cannot_write(errno_text(errno));
    return ok_status();
}

}  // namespace

Result<Content> scan_content(const std::string& given) {
    if (given.empty()) return make_error("no PATH given");
    const std::string path = strip_trailing_slashes(given);
    struct stat info {};
    if (::stat(path.c_str(), &info) != 0) return path_error(path, errno);
    auto name = content_name(path);
    if (!name) return name.error();

    Content content;
    content.name = std::move(*name);
    if (S_ISREG(info.st_mode)) {
        if (::access(path.c_str(), R_OK) != 0) return path_error(path, errno);
        content.single_file = true;
        content.files.push_back(ContentFile{{}, path, static_cast<std::uint64_t>(info.st_size), 0,
                                            info.st_dev, info.st_ino});
    } else if (S_ISDIR(info.st_mode)) {
        const auto root_real = real_path(path);
        if (!root_real) return path_error(path, errno);
        Walker walker(*root_real, content);
        if (Status s = walker.walk(path, info); !s) return s.error();
        if (content.files.empty()) {
            return make_error(path + ": no files in it (empty folders are left out): nothing to share");
        }
        sort_files(content.files);
    } else {
        return make_error(path + ": neither a file nor a folder");
    }

    for (ContentFile& file : content.files) {
        file.offset = content.total_size;
        content.total_size += file.length;
    }
    if (content.total_size == 0) {
        return make_error(path + (content.single_file ? ": empty (0 bytes)"
                                                      : ": every file in it is empty (0 bytes)") +
                          ": nothing to share");
    }
    return content;
}

Result<std::string> hash_pieces(const Content& content, std::uint32_t piece_length,
                                unsigned threads,
                                const std::function<void(std::uint64_t)>& progress) {
    const std::uint64_t total = content.total_size;
    if (total == 0 || piece_length == 0) return std::string();
    const std::uint64_t piece_count = (total - 1) / piece_length + 1;
    std::string hashes(piece_count * 20, '\0');

    const std::uint64_t run = std::max<std::uint64_t>(1, kRunBytes / piece_length);
    const std::uint64_t max_threads = std::max<std::uint64_t>(1, kMaxBufferBytes / piece_length);
    const auto thread_count = static_cast<unsigned>(
        std::clamp<std::uint64_t>(threads, 1, std::min(max_threads, (piece_count - 1) / run + 1)));

    std::atomic<std::uint64_t> next_piece{0};
    std::atomic<std::uint64_t> bytes_done{0};
    std::atomic<bool> stop{false};
    std::mutex mutex;
    std::condition_variable finished_cv;
    unsigned finished = 0;
    std::optional<Error> first_error;
    std::exception_ptr first_exception;

    auto fail = [&](std::optional<Error> error, std::exception_ptr exception) {
        std::lock_guard lock(mutex);
        if (!first_error && !first_exception) {
            first_error = std::move(error);
            first_exception = exception;
        }
        stop = true;
    };

    auto work = [&] {
        try {
            Sha1Hasher hasher;
            StreamReader reader(content);
            auto buffer = std::make_unique_for_overwrite<char[]>(piece_length);
            while (!stop) {
                const std::uint64_t first = next_piece.fetch_add(run);
                if (first >= piece_count) break;
                const std::uint64_t end = std::min(piece_count, first + run);
                for (std::uint64_t piece = first; piece < end && !stop; ++piece) {
                    const std::uint64_t offset = piece * piece_length;
                    const auto size = static_cast<std::size_t>(std::min<std::uint64_t>(piece_length, total - offset));
                    if (Status s = reader.read(offset, buffer.get(), size); !s) {
                        fail(s.error(), nullptr);
                        break;
                    }
                    const Sha1Digest digest = hasher.digest(buffer.get(), size);
                    // Each piece's 20 bytes belong to one thread: no two threads write the same.
                    std::memcpy(hashes.data() + piece * 20, digest.data(), digest.size());
                    bytes_done += size;
                }
            }
        } catch (...) {
            fail(std::nullopt, std::current_exception());
        }
        std::lock_guard lock(mutex);
        ++finished;
        finished_cv.notify_all();
    };

    std::vector<std::thread> workers;
    workers.reserve(thread_count);
    try {
        for (unsigned i = 0; i < thread_count; ++i) workers.emplace_back(work);
    } catch (...) {
        stop = true;
        for (auto& worker : workers) worker.join();
        throw;
    }
    {
        std::unique_lock lock(mutex);
        while (!finished_cv.wait_for(lock, std::chrono::milliseconds(200),
                                     [&] { return finished == workers.size(); })) {
            if (progress) {
                lock.unlock();
                progress(bytes_done.load());
                lock.lock();
            }
        }
    }
    for (auto& worker : workers) worker.join();
    if (first_exception) std::rethrow_exception(first_exception);
    if (first_error) return *first_error;
    if (progress) progress(bytes_done.load());
    return hashes;
}

Status write_file_atomically(const std::string& path, const std::string& bytes, bool force) {
    const std::string folder = parent_folder(path);
    const auto slash = path.rfind('/');
    const std::string base = slash == std::string::npos ? path : path.substr(slash + 1);
    std::string temp = folder + "/." + base + ".XXXXXX";
    const int fd = ::mkostemp(temp.data(), O_CLOEXEC);
    if (fd < 0) return path_error(folder, errno);
    auto give_up = [&](Error error) {
        ::unlink(temp.c_str());
        return error;
    };
    // mkstemp makes the file 0600; a .torrent is for sharing, so the usual umask decides.
    const mode_t mask = ::umask(0);
    ::umask(mask);
    bool written = ::fchmod(fd, 0666 & ~mask) == 0;
    for (std::size_t done = 0; written && done < bytes.size();) {
        const ssize_t got = ::write(fd, bytes.data() + done, bytes.size() - done);
        if (got < 0 && errno == EINTR) continue;
        if (got < 0) written = false;
        else done += static_cast<std::size_t>(got);
    }
    written = written && ::fsync(fd) == 0;
    const int error = errno;
    if (::close(fd) != 0 && written) return give_up(path_error(temp, errno));
    if (!written) return give_up(path_error(temp, error));

    if (force) {
        if (::rename(temp.c_str(), path.c_str()) != 0) return give_up(path_error(path, errno));
    } else if (::renameat2(AT_FDCWD, temp.c_str(), AT_FDCWD, path.c_str(), RENAME_NOREPLACE) != 0) {
        if (errno == EEXIST) return give_up(make_error(path + ": exists (--force replaces it)"));
        if (errno != EINVAL && errno != ENOSYS) return give_up(path_error(path, errno));
        // A file system without RENAME_NOREPLACE: a hard link refuses to replace too.
        if (::link(temp.c_str(), path.c_str()) != 0) {
            if (errno == EEXIST) return give_up(make_error(path + ": exists (--force replaces it)"));
            return give_up(path_error(path, errno));
        }
        ::unlink(temp.c_str());
    }
    // The rename itself is durable once the folder is synced; a failure here loses nothing
    // that is not already in place, so it is not worth an error.
    const int dir_fd = ::open(folder.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dir_fd >= 0) {
        ::fsync(dir_fd);
        ::close(dir_fd);
    }
    return ok_status();
}

int run_create(const CreateOptions& options, std::ostream& out, std::ostream& err) {
    auto fail = [&](const Error& error) {
        err << "piecework create: " << error.describe() << "\n";
        return 1;
    };
    std::optional<std::uint32_t> piece_length;
    if (!options.piece_size.empty()) {
        auto parsed = parse_piece_size(options.piece_size);
        if (!parsed) return fail(parsed.error());
        piece_length = *parsed;
    }
    for (const auto& url : options.trackers) {
        if (Status s = check_url(url, "tracker"); !s) return fail(s.error());
    }
    for (const auto& url : options.web_seeds) {
        if (Status s = check_url(url, "web seed"); !s) return fail(s.error());
    }
    if (Status s = check_output(options.output, options.force); !s) return fail(s.error());

    auto content = scan_content(options.path);
    if (!content) return fail(content.error());
    for (const auto& line : content->skipped) err << "piecework create: warning: " << line << "\n";
    // With --force the old output is replaced only after hashing; never hash it as content.
    struct stat output_info {};
    if (::stat(options.output.c_str(), &output_info) == 0) {
        for (const ContentFile& file : content->files) {
            if (file.device == output_info.st_dev && file.inode == output_info.st_ino) {
                return fail(make_error(options.output + ": is one of the files being shared"));
            }
        }
    }
    if (!piece_length) piece_length = choose_piece_length(content->total_size);

    const bool show_progress = ::isatty(STDERR_FILENO) == 1;
    const auto started = std::chrono::steady_clock::now();
    const std::uint64_t total = content->total_size;
    auto progress = [&](std::uint64_t done) {
        const double seconds =
            std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
        char line[96];
        std::snprintf(line, sizeof line, "\rhashing %5.1f%%  %.1f MB/s  ",
                      100.0 * static_cast<double>(done) / static_cast<double>(total),
                      seconds > 0 ? static_cast<double>(done) / seconds / 1e6 : 0.0);
        err << line << std::flush;
    };
    const unsigned threads = std::max(1u, std::thread::hardware_concurrency());
    auto hashes = hash_pieces(*content, *piece_length, threads,
                              show_progress ? std::function<void(std::uint64_t)>(progress) : nullptr);
    if (show_progress) err << "\r\033[K" << std::flush;  // the progress line goes away
    if (!hashes) return fail(hashes.error());

    NewTorrent torrent;
    torrent.name = content->name;
    torrent.single_file = content->single_file;
    torrent.files.reserve(content->files.size());
    for (const ContentFile& file : content->files) torrent.files.push_back(NewFile{file.path, file.length});
    torrent.piece_length = *piece_length;
    torrent.piece_hashes = std::move(*hashes);
    for (const auto& url : options.trackers) torrent.trackers.push_back({url});
    torrent.web_seeds = options.web_seeds;
    torrent.is_private = options.is_private;
    torrent.comment = options.comment;
    torrent.created_by = kCreatedBy;
    if (!options.no_date) torrent.creation_date = static_cast<std::int64_t>(std::time(nullptr));
    auto bytes = build_torrent(torrent);
    if (!bytes) return fail(bytes.error());
    // Our own reader must take what we made; it also gives the info-hash to print.
    auto parsed = Torrent::parse(*bytes);
    if (!parsed) return fail(make_error("internal error: the new torrent does not parse: " + parsed.error().describe()));

    if (Status s = write_file_atomically(options.output, *bytes, options.force); !s) return fail(s.error());
    const std::size_t file_count = content->files.size();
    out << options.output << ": " << content->name << ", " << file_count
        << (file_count == 1 ? " file, " : " files, ") << human_size(total) << " in "
        << parsed->piece_count() << (parsed->piece_count() == 1 ? " piece of " : " pieces of ")
        << describe_size(*piece_length) << "\n";
    out << "info-hash " << to_hex(parsed->info_hash()) << "\n";
    out.flush();
    return out ? 0 : 1;
}

}  // namespace pw::cli
