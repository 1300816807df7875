#include "writer/download_roots.hpp"

#include <filesystem>
#include <optional>
#include <system_error>

#include "writer/safe_open.hpp"

namespace pw::writer {

namespace {

namespace fs = std::filesystem;

// Lexically normal, without a trailing slash (but "/" itself).
std::string normal(const fs::path& path) {
    std::string text = path.lexically_normal().string();
    while (text.size() > 1 && text.back() == '/') text.pop_back();
    return text;
}

// `dir` below `root` (both normal and absolute): the rest of the path, "" for the root itself.
std::optional<std::string> below(const std::string& dir, const std::string& root) {
    if (root.empty()) return std::nullopt;
    if (dir == root) return std::string();
    if (root == "/") return dir.substr(1);
    if (dir.size() > root.size() && dir.compare(0, root.size(), root) == 0 && dir[root.size()] == '/') {
        return dir.substr(root.size() + 1);
    }
    return std::nullopt;
}

}  // namespace

Result<DownloadRoots> DownloadRoots::open(const std::string& default_root,
                                          const std::vector<std::string>& more) {
    DownloadRoots roots;
    std::vector<std::string> paths{default_root};
    paths.insert(paths.end(), more.begin(), more.end());
    for (const std::string& given : paths) {
        if (given.empty()) return make_error("an empty download root");
        auto fd = open_download_dir(given);
        if (!fd) return fd.error();
        std::error_code error;
        const fs::path absolute = fs::absolute(given, error);
        if (error) return make_error("cannot resolve the download root '" + given + "': " + error.message());
        Root root{normal(absolute), {}, std::move(fd.value())};
        const fs::path canonical = fs::canonical(absolute, error);
        if (!error && normal(canonical) != root.path) root.canonical = normal(canonical);
        roots.roots_.push_back(std::move(root));
    }
    return roots;
}

Result<DownloadRoots::Placement> DownloadRoots::place(const std::string& download_dir) const {
    if (download_dir.empty()) return Placement{0, {}, roots_.front().path};
    if (download_dir.find('\0') != std::string::npos) {
        return make_error("download folder has a NUL byte in its name");
    }
    const fs::path given(download_dir);
    if (!given.is_absolute()) {
        return make_error("download folder '" + download_dir + "' is not an absolute path");
    }
    const std::string dir = normal(given);
    std::optional<Placement> best;
    std::size_t best_length = 0;
    for (std::size_t i = 0; i < roots_.size(); ++i) {
        for (const std::string* root : {&roots_[i].path, &roots_[i].canonical}) {
            const auto relative = below(dir, *root);
            if (!relative || (best && root->size() <= best_length)) continue;
            best = Placement{i, *relative, dir};
            best_length = root->size();
        }
    }
    if (best) return *best;
    std::string listed;
    for (const Root& root : roots_) listed += (listed.empty() ? "'" : ", '") + root.path + "'";
    return make_error("download folder '" + download_dir + "' is outside the writer's roots (" +
                      listed + ")");
}

Result<UniqueFd> DownloadRoots::open_folder(const Placement& placement) const {
    auto fd = open_directory_below(roots_.at(placement.root).fd.get(), placement.relative, true);
    if (!fd) {
        return make_error("download folder '" + placement.shown + "': " + fd.error().describe());
    }
    return fd;
}

}  // namespace pw::writer
