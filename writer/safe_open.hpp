#pragma once
// Opening files below the download directory without ever leaving it.
//
// Every path element is opened relative to the directory fd of the one before it, with
// O_NOFOLLOW: a symbolic link planted anywhere below the download directory (by another
// program, or an earlier torrent) cannot redirect a write elsewhere. The torrent's paths are
// sanitized already; this is the second lock on the same door.
#include <string>
#include <string_view>

#include "core/result.hpp"
#include "writer/unique_fd.hpp"

namespace pw::writer {

// Opens a directory given by the user (following symlinks: the user chose it), creating it
// and its parents when missing.
Result<UniqueFd> open_download_dir(const std::string& path);

struct OpenedFile {
    UniqueFd fd;
    bool created = false;  // the file did not exist before
};

// Opens `relative_path` ('/'-separated, no "." or ".." or empty elements) below `root_fd` for
// reading and writing, making missing directories and the file itself. Refuses symbolic
// links and anything but regular files and directories on the way. New files and directories
// are made durable in their parent directory before this returns.
Result<OpenedFile> open_below(int root_fd, std::string_view relative_path);

// Opens the folder `relative_path` below `root_fd` with the same refusals as open_below (each
// element with O_NOFOLLOW, so no symbolic link on the way is followed), making missing folders
// when `create`. An empty path is `root_fd` itself (a new descriptor of it). Without `create`,
// a missing folder gives an invalid fd, not an error.
Result<UniqueFd> open_directory_below(int root_fd, std::string_view relative_path, bool create);

// Removes the file `relative_path` below `root_fd`, opening every folder on the way with
// O_NOFOLLOW; unlinkat never follows the last element either. Only a regular file is removed
// (a symbolic link, a folder or a FIFO there is refused and kept); a file or folder that is
// not there already is no error.
Status remove_file_below(int root_fd, std::string_view relative_path);

// Removes the folder `relative_path` below `root_fd` when it is empty, the same way; true when
// it was removed. Missing, not empty, or not a folder (a symbolic link say): false, no error.
Result<bool> remove_empty_directory_below(int root_fd, std::string_view relative_path);

// Opens an existing regular file below `root_fd` with the same refusals as open_below, but
// creates nothing: a missing file or folder gives an invalid fd, not an error. For reading
// what an earlier run (or the user) left in the download directory.
Result<UniqueFd> open_existing_below(int root_fd, std::string_view relative_path, bool writable);

}  // namespace pw::writer
