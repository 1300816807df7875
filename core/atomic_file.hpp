#pragma once
// Replacing a small file so that a reader, even after a crash or a power cut at any moment,
// sees either its old content or its new content, never a torn mix: the resume records of
// the writer and the session's saved torrents both depend on it.
#include <string>
#include <string_view>

#include "core/result.hpp"

namespace pw {

// Writes `content` to dir/name.tmp (one fixed temp name: a crash leaves at most one stale
// temp, overwritten next time), fsyncs it, renames it over dir/name and fsyncs the folder.
// Never follows a symlink planted at the temp name.
Status replace_file_atomically(const std::string& dir, const std::string& name,
                               std::string_view content);

}  // namespace pw
