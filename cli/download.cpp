#include "cli/download.hpp"
namespace pw::cli {
int run_download(const DownloadOptions&) { return 1; }  // implementation pending
}  // namespace pw::cli
