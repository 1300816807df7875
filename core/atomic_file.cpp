#include "core/atomic_file.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace pw {

namespace {

std::string errno_text(const std::string& what, const std::string& path, int error) {
    return what + " " + path + ": " + std::strerror(error);
}

int write_fully(int fd, std::string_view content) {
    while (!content.empty()) {
        const ssize_t wrote = ::write(fd, content.data(), content.size());
        if (wrote < 0 && errno == EINTR) continue;
        if (wrote < 0) return errno;
        content.remove_prefix(static_cast<std::size_t>(wrote));
    }
    return 0;
}

}  // namespace

Status replace_file_atomically(const std::string& dir, const std::string& name,
                               std::string_view content) {
    const int dir_fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dir_fd < 0) return make_error(errno_text("cannot open the folder", dir, errno));
    const std::string temp = name + ".tmp";
    int error = 0;
    const int fd = ::openat(dir_fd, temp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0644);
    if (fd < 0) {
        error = errno;
        ::close(dir_fd);
        return make_error(errno_text("cannot create", dir + "/" + temp, error));
    }
    error = write_fully(fd, content);
    if (error == 0 && ::fsync(fd) != 0) error = errno;
    ::close(fd);
    if (error == 0 && ::renameat(dir_fd, temp.c_str(), dir_fd, name.c_str()) != 0) error = errno;
    if (error != 0) {
        (void)::unlinkat(dir_fd, temp.c_str(), 0);
        ::close(dir_fd);
        return make_error(errno_text("cannot save", dir + "/" + name, error));
    }
    // The rename is durable only once the folder is.
    const int synced = ::fsync(dir_fd) == 0 ? 0 : errno;
    ::close(dir_fd);
    if (synced != 0) return make_error(errno_text("cannot sync the folder", dir, synced));
    return ok_status();
}

}  // namespace pw
