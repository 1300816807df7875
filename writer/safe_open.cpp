#include "writer/safe_open.hpp"

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <system_error>
#include <vector>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

namespace pw::writer {

namespace {

std::string describe_errno(const std::string& what, std::string_view path, int error) {
    return what + " '" + std::string(path) + "': " + std::strerror(error);
}

std::vector<std::string_view> split_path(std::string_view path) {
    std::vector<std::string_view> elements;
    while (true) {
        const std::size_t slash = path.find('/');
        elements.push_back(path.substr(0, slash));
        if (slash == std::string_view::npos) break;
        path.remove_prefix(slash + 1);
    }
    return elements;
}

bool is_unsafe_element(std::string_view element) {
    return element.empty() || element == "." || element == ".." ||
           element.find('\0') != std::string_view::npos;
}

// Explains why opening `name` in `dir_fd` with O_NOFOLLOW failed with ELOOP/ENOTDIR.
std::string refusal(int dir_fd, const std::string& name, std::string_view shown_path, int error) {
    struct stat info {};
    if (::fstatat(dir_fd, name.c_str(), &info, AT_SYMLINK_NOFOLLOW) == 0 && S_ISLNK(info.st_mode)) {
        return "refusing to follow the symbolic link '" + std::string(shown_path) +
               "' in the download directory";
    }
    return describe_errno("cannot open", shown_path, error);
}

// The parent directory records the new entry only once it is synced itself.
void sync_directory(int dir_fd) { (void)::fsync(dir_fd); }

Result<UniqueFd> open_or_make_directory(int parent_fd, const std::string& name,
                                        std::string_view shown_path) {
    constexpr int flags = O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC;
    for (int attempt = 0; attempt < 2; ++attempt) {
        const int fd = ::openat(parent_fd, name.c_str(), flags);
        if (fd >= 0) return UniqueFd(fd);
        const int error = errno;
        if (error == ELOOP || error == ENOTDIR) return make_error(refusal(parent_fd, name, shown_path, error));
        if (error != ENOENT) return make_error(describe_errno("cannot open directory", shown_path, error));
        if (::mkdirat(parent_fd, name.c_str(), 0755) != 0 && errno != EEXIST) {
            return make_error(describe_errno("cannot create directory", shown_path, errno));
        }
        sync_directory(parent_fd);
    }
    return make_error("directory '" + std::string(shown_path) + "' vanished while being created");
}

bool unsafe_path(std::string_view path) {
    for (std::string_view element : split_path(path)) {
        if (is_unsafe_element(element)) return true;
    }
    return false;
}

// The folder holding the last element of `relative_path`, opened below `root_fd` element by
// element with O_NOFOLLOW and never created: an invalid fd when a folder on the way is
// missing. `leaf` is set to the last element.
Result<UniqueFd> open_parent_below(int root_fd, std::string_view relative_path, std::string& leaf) {
    if (unsafe_path(relative_path)) {
        return make_error("refusing the unsafe path '" + std::string(relative_path) + "'");
    }
    const std::vector<std::string_view> elements = split_path(relative_path);
    UniqueFd current;
    for (std::size_t i = 0; i + 1 < elements.size(); ++i) {
        const int dir_fd = current.valid() ? current.get() : root_fd;
        const std::string name(elements[i]);
        const int fd = ::openat(dir_fd, name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (fd < 0) {
            const int error = errno;
            if (error == ENOENT) return UniqueFd();
            if (error == ELOOP || error == ENOTDIR) return make_error(refusal(dir_fd, name, relative_path, error));
            return make_error(describe_errno("cannot open", relative_path, error));
        }
        current = UniqueFd(fd);
    }
    if (!current.valid()) {
        // The leaf sits in root_fd itself: a descriptor of our own, so callers own what they get.
        const int fd = ::fcntl(root_fd, F_DUPFD_CLOEXEC, 0);
        if (fd < 0) return make_error(describe_errno("cannot use the folder of", relative_path, errno));
        current = UniqueFd(fd);
    }
    leaf = std::string(elements.back());
    return current;
}

}  // namespace

Result<UniqueFd> open_directory_below(int root_fd, std::string_view relative_path, bool create) {
    if (relative_path.empty()) {
        const int fd = ::fcntl(root_fd, F_DUPFD_CLOEXEC, 0);
        if (fd < 0) return make_error(std::string("cannot use the folder: ") + std::strerror(errno));
        return UniqueFd(fd);
    }
    if (unsafe_path(relative_path)) {
        return make_error("refusing the unsafe path '" + std::string(relative_path) + "'");
    }
    const std::vector<std::string_view> elements = split_path(relative_path);
    UniqueFd current;
    for (const std::string_view element : elements) {
        const auto shown_length =
            static_cast<std::size_t>(element.data() - relative_path.data()) + element.size();
        const std::string_view shown = relative_path.substr(0, shown_length);
        const int dir_fd = current.valid() ? current.get() : root_fd;
        if (create) {
            auto next = open_or_make_directory(dir_fd, std::string(element), shown);
            if (!next) return next.error();
            current = std::move(next.value());
            continue;
        }
        const std::string name(element);
        const int fd = ::openat(dir_fd, name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (fd < 0) {
            const int error = errno;
            if (error == ENOENT) return UniqueFd();
            if (error == ELOOP || error == ENOTDIR) return make_error(refusal(dir_fd, name, shown, error));
            return make_error(describe_errno("cannot open directory", shown, error));
        }
        current = UniqueFd(fd);
    }
    return current;
}

Status remove_file_below(int root_fd, std::string_view relative_path) {
    std::string leaf;
    auto parent = open_parent_below(root_fd, relative_path, leaf);
    if (!parent) return parent.error();
    if (!parent->valid()) return ok_status();  // its folder is gone, and so is it
    struct stat info {};
    if (::fstatat(parent->get(), leaf.c_str(), &info, AT_SYMLINK_NOFOLLOW) != 0) {
        if (errno == ENOENT) return ok_status();
        return make_error(describe_errno("cannot inspect", relative_path, errno));
    }
    if (!S_ISREG(info.st_mode)) {
        return make_error("not deleting '" + std::string(relative_path) +
                          (S_ISLNK(info.st_mode) ? "': a symbolic link" : "': not a regular file"));
    }
    // Should a symbolic link replace the file after the look above, unlinkat removes the link
    // itself: it never follows the last element.
    if (::unlinkat(parent->get(), leaf.c_str(), 0) != 0 && errno != ENOENT) {
        return make_error(describe_errno("cannot delete", relative_path, errno));
    }
    sync_directory(parent->get());
    return ok_status();
}

Result<bool> remove_empty_directory_below(int root_fd, std::string_view relative_path) {
    std::string leaf;
    auto parent = open_parent_below(root_fd, relative_path, leaf);
    if (!parent) return parent.error();
    if (!parent->valid()) return false;
    // AT_REMOVEDIR refuses a symbolic link (ENOTDIR) and a folder that is not empty.
    if (::unlinkat(parent->get(), leaf.c_str(), AT_REMOVEDIR) != 0) {
        const int error = errno;
        if (error == ENOENT || error == ENOTEMPTY || error == EEXIST || error == ENOTDIR) return false;
        return make_error(describe_errno("cannot delete the folder", relative_path, error));
    }
    sync_directory(parent->get());
    return true;
}

Result<UniqueFd> open_download_dir(const std::string& path) {
    std::error_code error;
    std::filesystem::create_directories(path, error);
    if (error) return make_error("cannot create download directory '" + path + "': " + error.message());
    const int fd = ::open(path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return make_error(describe_errno("cannot open download directory", path, errno));
    return UniqueFd(fd);
}

Result<OpenedFile> open_below(int root_fd, std::string_view relative_path) {
    const std::vector<std::string_view> elements = split_path(relative_path);
    for (std::string_view element : elements) {
        if (is_unsafe_element(element)) {
            return make_error("refusing the unsafe path '" + std::string(relative_path) + "'");
        }
    }

    UniqueFd current;  // invalid while we are still at root_fd, which we do not own
    for (std::size_t i = 0; i + 1 < elements.size(); ++i) {
        const auto shown_length =
            static_cast<std::size_t>(elements[i].data() - relative_path.data()) + elements[i].size();
        const std::string_view shown = relative_path.substr(0, shown_length);
        auto next = open_or_make_directory(current.valid() ? current.get() : root_fd,
                                           std::string(elements[i]), shown);
        if (!next) return next.error();
        current = std::move(next.value());
    }
    const int dir_fd = current.valid() ? current.get() : root_fd;
    const std::string leaf(elements.back());

    OpenedFile opened;
    // O_EXCL tells us whether we made the file (it then needs sizing); it never follows a
    // symlink either. O_NONBLOCK keeps a planted FIFO from stalling us before we refuse it.
    constexpr int flags = O_RDWR | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK;
    int fd = ::openat(dir_fd, leaf.c_str(), flags | O_CREAT | O_EXCL, 0644);
    if (fd >= 0) {
        opened.created = true;
        sync_directory(dir_fd);
    } else if (errno == EEXIST) {
        fd = ::openat(dir_fd, leaf.c_str(), flags);
    }
    if (fd < 0) {
        const int error = errno;
        if (error == ELOOP) return make_error(refusal(dir_fd, leaf, relative_path, error));
        return make_error(describe_errno("cannot open", relative_path, error));
    }
    opened.fd = UniqueFd(fd);
    struct stat info {};
    if (::fstat(fd, &info) != 0) return make_error(describe_errno("cannot inspect", relative_path, errno));
    if (!S_ISREG(info.st_mode)) {
        return make_error("refusing to write into '" + std::string(relative_path) +
                          "': not a regular file");
    }
    // A hard link planted in the download folder would send our writes to a file elsewhere
    // (its other name may be outside): only files with a single name are written.
    if (info.st_nlink > 1) {
        return make_error("refusing to write into '" + std::string(relative_path) +
                          "': it has " + std::to_string(info.st_nlink) +
                          " hard links, so it may be a file outside the download folder");
    }
    return opened;
}

Result<UniqueFd> open_existing_below(int root_fd, std::string_view relative_path, bool writable) {
    const std::vector<std::string_view> elements = split_path(relative_path);
    for (std::string_view element : elements) {
        if (is_unsafe_element(element)) {
            return make_error("refusing the unsafe path '" + std::string(relative_path) + "'");
        }
    }
    UniqueFd current;
    for (std::size_t i = 0; i < elements.size(); ++i) {
        const bool leaf = i + 1 == elements.size();
        const int dir_fd = current.valid() ? current.get() : root_fd;
        const std::string name(elements[i]);
        const int flags = O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK |
                          (leaf ? (writable ? O_RDWR : O_RDONLY) : (O_RDONLY | O_DIRECTORY));
        const int fd = ::openat(dir_fd, name.c_str(), flags);
        if (fd < 0) {
            const int error = errno;
            if (error == ENOENT) return UniqueFd();
            if (error == ELOOP || error == ENOTDIR) return make_error(refusal(dir_fd, name, relative_path, error));
            return make_error(describe_errno("cannot open", relative_path, error));
        }
        current = UniqueFd(fd);
    }
    struct stat info {};
    if (::fstat(current.get(), &info) != 0) return make_error(describe_errno("cannot inspect", relative_path, errno));
    if (!S_ISREG(info.st_mode)) {
        return make_error("refusing to use '" + std::string(relative_path) + "': not a regular file");
    }
    // Reading a hard-linked file is harmless; cutting it to size is not (see open_below).
    if (writable && info.st_nlink > 1) {
        return make_error("refusing to change '" + std::string(relative_path) + "': it has " +
                          std::to_string(info.st_nlink) + " hard links");
    }
    return current;
}

}  // namespace pw::writer
