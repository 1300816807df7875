#pragma once
// The folders the writer may write below: the default root (--dir), where a torrent without a
// download folder of its own goes, and the roots added by --allow-dir. A torrent's download
// folder must lie at or below one of them; it is then opened below that root's descriptor one
// element at a time with O_NOFOLLOW, so neither ".." nor a symbolic link planted below the
// root can lead a write outside.
#include <cstddef>
#include <string>
#include <vector>

#include "core/result.hpp"
#include "writer/unique_fd.hpp"

namespace pw::writer {

class DownloadRoots {
public:
    // Opens each root, creating it when missing (following symbolic links in its own path:
    // the user chose it). `default_root` comes first.
    static Result<DownloadRoots> open(const std::string& default_root,
                                      const std::vector<std::string>& more);

    struct Placement {
        std::size_t root = 0;
        std::string relative;  // below the root, '/'-separated; empty for the root itself
        std::string shown;     // the folder's absolute path, for logs
    };
    // Where `download_dir` lies: empty means the default root; anything else must be an
    // absolute path that, once lexically normalized ("." and "a/.." gone), is a root or lies
    // below one (the longest match is taken). Refused otherwise, with a reason.
    Result<Placement> place(const std::string& download_dir) const;
    // Opens the placed folder below its root's descriptor, creating missing folders; a
    // symbolic link on the way is refused.
    Result<UniqueFd> open_folder(const Placement& placement) const;

    std::size_t size() const { return roots_.size(); }
    const std::string& path(std::size_t root) const { return roots_[root].path; }

private:
    struct Root {
        std::string path;       // absolute and normalized, as given
        std::string canonical;  // the same with symbolic links resolved, when it differs
        UniqueFd fd;
    };

    std::vector<Root> roots_;
};

}  // namespace pw::writer
