#include "core/rpc.hpp"

#include <algorithm>
#include <array>
#include <cmath>
#include <functional>
#include <limits>
#include <new>
#include <utility>

#include <nlohmann/json.hpp>

namespace pw::rpc {
namespace {

using json = nlohmann::json;

// --- Bounded parsing ---

// A SAX handler for nlohmann's parser (which keeps its own stack, so it never recurses) that
// refuses what is not a request before building it: a top level that is not an object,
// nesting past max_depth, more than max_values values. With `build` it also builds the value,
// never deeper than max_depth, so destroying it cannot recurse far either.
class BoundedBuilder {
public:
    BoundedBuilder(const RequestLimits& limits, bool build) : limits_(limits), build_(build) {}

    bool null() { return scalar(json(nullptr)); }
    bool boolean(bool value) { return scalar(json(value)); }
    bool number_integer(json::number_integer_t value) { return scalar(json(value)); }
    bool number_unsigned(json::number_unsigned_t value) { return scalar(json(value)); }
    bool number_float(json::number_float_t value, const json::string_t&) { return scalar(json(value)); }
    bool string(json::string_t& value) { return scalar(build_ ? json(std::move(value)) : json()); }
    bool binary(json::binary_t&) { return fail(make_error("request is not JSON: binary value")); }
    bool start_object(std::size_t) { return open(json::value_t::object); }
    bool end_object() { return close(); }
    bool start_array(std::size_t) { return open(json::value_t::array); }
    bool end_array() { return close(); }
    bool key(json::string_t& name) {
        if (!count()) return false;
        if (build_) key_ = std::move(name);
        return true;
    }
    bool parse_error(std::size_t position, const std::string&, const json::exception& exception) {
        // what() reads "[json.exception.parse_error.101] parse error at line 1, column 2: ...".
        std::string what = exception.what();
        if (const auto bracket = what.find("] "); what.starts_with("[json.") && bracket != std::string::npos) {
            what.erase(0, bracket + 2);
        }
        return fail(make_error("request is not JSON: " + what, position > 0 ? position - 1 : 0));
    }

    const std::optional<Error>& error() const { return error_; }
    json& root() { return root_; }

private:
    bool fail(Error error) {
        if (!error_) error_ = std::move(error);
        return false;
    }
    bool count() {
        if (++values_ > limits_.max_values) {
            return fail(make_error("request holds more than " + std::to_string(limits_.max_values) + " JSON values"));
        }
        return true;
    }
    bool scalar(json value) {
        if (depth_ == 0) return fail(make_error("request is not a JSON object"));
        if (!count()) return false;
        if (build_) insert(std::move(value));
        return true;
    }
    bool open(json::value_t type) {
        if (depth_ == 0 && type != json::value_t::object) return fail(make_error("request is not a JSON object"));
        if (depth_ >= limits_.max_depth) {
            return fail(make_error("request nests arrays and objects deeper than " +
                                   std::to_string(limits_.max_depth) + " levels"));
        }
        if (!count()) return false;
        if (build_) {
            if (stack_.empty()) {
                root_ = json(type);
                stack_.push_back(&root_);
            } else {
                stack_.push_back(insert(json(type)));
            }
        }
        ++depth_;
        return true;
    }
    bool close() {
        --depth_;
        if (build_) stack_.pop_back();
        return true;
    }
    // Only the innermost open container changes, so the pointers to the outer ones (its
    // ancestors) stay valid.
    json* insert(json value) {
        json& parent = *stack_.back();
        if (parent.is_array()) {
            parent.push_back(std::move(value));
            return &parent.back();
        }
        json& slot = parent[key_];  // a repeated key: the last one wins
        slot = std::move(value);
        return &slot;
    }

    const RequestLimits& limits_;
    const bool build_;
    std::size_t depth_ = 0;
    std::size_t values_ = 0;
    json root_;
    std::vector<json*> stack_;
    std::string key_;
    std::optional<Error> error_;
};

Result<json> parse_bounded(std::string_view body, const RequestLimits& limits, bool build) {
    if (body.size() > limits.max_body) {
        return make_error("request body is larger than " + std::to_string(limits.max_body) + " bytes");
    }
    try {
        BoundedBuilder builder(limits, build);
        const bool ok = json::sax_parse(body.data(), body.data() + body.size(), &builder,
                                        json::input_format_t::json, /*strict=*/true);
        if (builder.error()) return *builder.error();
        if (!ok) return make_error("request is not JSON");
        return std::move(builder.root());
    } catch (const std::bad_alloc&) {
        return make_error("request is too large to parse");
    } catch (const std::exception& e) {
        return make_error(std::string("request is not JSON: ") + e.what());
    }
}

// --- Reading arguments ---

constexpr std::int64_t kMaxSpeed = std::numeric_limits<std::int32_t>::max();  // kB/s
constexpr std::int64_t kMaxPeers = 65535;
constexpr std::size_t kMaxIgnoredKeys = 64;

// Appended rather than "'" + key + "'": g++ 12 at -O3 warns falsely about that (-Wrestrict,
// GCC bug 105329).
std::string quoted(std::string_view key) {
    std::string out;
    out.reserve(key.size() + 2);
    out.push_back('\'');
    out.append(key);
    out.push_back('\'');
    return out;
}

std::optional<std::int64_t> as_int64(const json& value) {
    if (value.is_number_unsigned()) {
        const auto u = value.get<std::uint64_t>();
        if (u > static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max())) return std::nullopt;
        return static_cast<std::int64_t>(u);
    }
    if (value.is_number_integer()) return value.get<std::int64_t>();
    return std::nullopt;
}

bool starts_with_nocase(std::string_view text, std::string_view prefix) {
    if (text.size() < prefix.size()) return false;
    for (std::size_t i = 0; i < prefix.size(); ++i) {
        char c = text[i];
        if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
        if (c != prefix[i]) return false;
    }
    return true;
}

// Reads the arguments object of one method. Each read_* looks one key up, converts it, and
// on a wrong type or value keeps the first error and leaves the output alone; the caller
// checks error() once at the end. Every key looked up is remembered, so that ignored_keys()
// can list the others.
class Arguments {
public:
    Arguments(const json& args, const RequestLimits& limits) : args_(args), limits_(limits) {}

    const std::optional<Error>& error() const { return error_; }

    const json* find(std::string_view key) {
        known_.push_back(key);
        return std::as_const(*this).find(key);
    }
    const json* find(std::string_view key) const {
        const auto it = args_.find(key);
        return it == args_.end() ? nullptr : &*it;
    }

    void fail(std::string_view key, std::string_view what) {
        if (!error_) error_ = make_error("argument " + quoted(key) + " must be " + std::string(what));
    }
    void fail_message(std::string message) {
        if (!error_) error_ = make_error(std::move(message));
    }

    void read(std::string_view key, std::optional<bool>& out) {
        const json* value = find(key);
        if (value == nullptr) return;
        if (!value->is_boolean()) return fail(key, "true or false");
        out = value->get<bool>();
    }

    void read(std::string_view key, std::optional<std::int64_t>& out, std::int64_t min, std::int64_t max) {
        const json* value = find(key);
        if (value == nullptr) return;
        const auto number = as_int64(*value);
        if (!number || *number < min || *number > max) {
            return fail(key, "an integer from " + std::to_string(min) + " to " + std::to_string(max));
        }
        out = *number;
    }

    // A ratio: a number from 0.
    void read(std::string_view key, std::optional<double>& out) {
        const json* value = find(key);
        if (value == nullptr) return;
        const double number = value->is_number() ? value->get<double>() : -1.0;
        if (!std::isfinite(number) || number < 0) return fail(key, "a number from 0");
        out = number;
    }

    void read(std::string_view key, std::optional<std::string>& out) {
        const json* value = find(key);
        if (value == nullptr) return;
        if (!value->is_string()) return fail(key, "a string");
        const auto& text = value->get_ref<const std::string&>();
        if (text.size() > limits_.max_string) {
            return fail(key, "a string of at most " + std::to_string(limits_.max_string) + " bytes");
        }
        out = text;
    }

    // An absolute path on the daemon's machine, without NUL bytes.
    void read_path(std::string_view key, std::optional<std::string>& out) {
        std::optional<std::string> text;
        read(key, text);
        if (!text) return;
        if (!valid_path(*text)) return fail(key, "an absolute path");
        out = std::move(text);
    }

    // 0, 1 and 2 for tr_ratiolimit, tr_idlelimit.
    void read(std::string_view key, std::optional<LimitMode>& out) {
        std::optional<std::int64_t> number;
        read(key, number, 0, 2);
        if (number) out = static_cast<LimitMode>(*number);
    }

    void read(std::string_view key, std::optional<Priority>& out) {
        std::optional<std::int64_t> number;
        read(key, number, -1, 1);
        if (number) out = static_cast<Priority>(*number);
    }

    void read(std::string_view key, FileIndices& out) {
        const json* value = find(key);
        if (value == nullptr) return;
        const char* what = "an array of file indices (integers from 0)";
        if (!value->is_array()) return fail(key, what);
        if (!check_size(key, *value)) return;
        std::vector<std::uint32_t> indices;
        indices.reserve(value->size());
        for (const auto& element : *value) {
            const auto index = as_int64(element);
            if (!index || *index < 0 || *index > std::numeric_limits<std::uint32_t>::max()) return fail(key, what);
            indices.push_back(static_cast<std::uint32_t>(*index));
        }
        out = std::move(indices);
    }

    void read(std::string_view key, std::optional<std::vector<std::string>>& out) {
        const json* value = find(key);
        if (value == nullptr) return;
        if (!value->is_array()) return fail(key, "an array of strings");
        if (!check_size(key, *value)) return;
        std::vector<std::string> strings;
        strings.reserve(value->size());
        for (const auto& element : *value) {
            if (!element.is_string()) return fail(key, "an array of strings");
            const auto& text = element.get_ref<const std::string&>();
            if (text.size() > limits_.max_string) {
                return fail(key, "an array of strings of at most " + std::to_string(limits_.max_string) + " bytes");
            }
            strings.push_back(text);
        }
        out = std::move(strings);
    }

    void read(std::string_view key, std::optional<std::vector<std::int64_t>>& out, std::int64_t min, std::int64_t max) {
        const json* value = find(key);
        if (value == nullptr) return;
        const std::string what =
            "an array of integers from " + std::to_string(min) + " to " + std::to_string(max);
        if (!value->is_array()) return fail(key, what);
        if (!check_size(key, *value)) return;
        std::vector<std::int64_t> numbers;
        numbers.reserve(value->size());
        for (const auto& element : *value) {
            const auto number = as_int64(element);
            if (!number || *number < min || *number > max) return fail(key, what);
            numbers.push_back(*number);
        }
        out = std::move(numbers);
    }

    void read_ids(TorrentIds& out) {
        constexpr std::string_view key = "ids";
        const json* value = find(key);
        if (value == nullptr) return;  // every torrent
        const char* what =
            "a torrent id (a positive integer), a 40-digit hex info-hash, an array of these, or "
            "\"recently-active\"";
        TorrentIds ids;
        ids.scope = TorrentIds::Scope::listed;
        if (value->is_string() && value->get_ref<const std::string&>() == "recently-active") {
            ids.scope = TorrentIds::Scope::recently_active;
        } else if (value->is_array()) {
            if (!check_size(key, *value)) return;
            for (const auto& element : *value) {
                if (!add_id(element, ids)) return fail(key, what);
            }
        } else if (!add_id(*value, ids)) {
            return fail(key, what);
        }
        std::sort(ids.ids.begin(), ids.ids.end());
        ids.ids.erase(std::unique(ids.ids.begin(), ids.ids.end()), ids.ids.end());
        std::sort(ids.hashes.begin(), ids.hashes.end());
        ids.hashes.erase(std::unique(ids.hashes.begin(), ids.hashes.end()), ids.hashes.end());
        out = std::move(ids);
    }

    void read_fields(std::string_view key, std::vector<std::string>& out) {
        std::optional<std::vector<std::string>> fields;
        read(key, fields);
        if (fields) out = std::move(*fields);
    }

    // The keys present that nothing looked up, at most kMaxIgnoredKeys of them.
    std::vector<std::string> ignored_keys() const {
        std::vector<std::string> ignored;
        for (const auto& [name, value] : args_.items()) {
            if (ignored.size() == kMaxIgnoredKeys) break;
            if (std::find(known_.begin(), known_.end(), name) == known_.end()) ignored.push_back(name);
        }
        return ignored;
    }

    static bool valid_path(std::string_view path) {
        return !path.empty() && path.front() == '/' && path.find('\0') == std::string_view::npos;
    }

private:
    bool check_size(std::string_view key, const json& array) {
        if (array.size() <= limits_.max_array) return true;
        fail(key, "an array of at most " + std::to_string(limits_.max_array) + " elements");
        return false;
    }

    static bool add_id(const json& element, TorrentIds& ids) {
        if (element.is_string()) {
            const auto hash = sha1_from_hex(element.get_ref<const std::string&>());
            if (!hash) return false;
            ids.hashes.push_back(*hash);
            return true;
        }
        const auto id = as_int64(element);
        if (!id || *id < 1 || *id > std::numeric_limits<std::uint32_t>::max()) return false;
        ids.ids.push_back(static_cast<std::uint32_t>(*id));
        return true;
    }

    const json& args_;
    const RequestLimits& limits_;
    std::vector<std::string_view> known_;
    std::optional<Error> error_;
};

template <class T>
Result<Method> finish(const Arguments& args, T method) {
    if (args.error()) return *args.error();
    return Method(std::move(method));
}

Result<Method> parse_session_get(Arguments& args) {
    SessionGet get;
    args.read_fields("fields", get.fields);
    return finish(args, std::move(get));
}

Result<Method> parse_session_set(Arguments& args) {
    SessionSet set;
    args.read_path("download-dir", set.download_dir);
    args.read("speed-limit-down", set.speed_limit_down_kbps, 0, kMaxSpeed);
    args.read("speed-limit-down-enabled", set.speed_limit_down_enabled);
    args.read("speed-limit-up", set.speed_limit_up_kbps, 0, kMaxSpeed);
    args.read("speed-limit-up-enabled", set.speed_limit_up_enabled);
    args.read("alt-speed-down", set.alt_speed_down_kbps, 0, kMaxSpeed);
    args.read("alt-speed-up", set.alt_speed_up_kbps, 0, kMaxSpeed);
    args.read("alt-speed-enabled", set.alt_speed_enabled);
    args.read("peer-limit-global", set.peer_limit_global, 0, kMaxPeers);
    args.read("peer-limit-per-torrent", set.peer_limit_per_torrent, 0, kMaxPeers);
    args.read("seedRatioLimit", set.seed_ratio_limit);
    args.read("seedRatioLimited", set.seed_ratio_limited);
    args.read("idle-seeding-limit", set.idle_seeding_limit_minutes, 0, 65535);
    args.read("idle-seeding-limit-enabled", set.idle_seeding_limit_enabled);
    std::optional<std::string> encryption;
    args.read("encryption", encryption);
    if (encryption) {
        if (*encryption == "required") {
            set.encryption = Encryption::required;
        } else if (*encryption == "preferred") {
            set.encryption = Encryption::preferred;
        } else if (*encryption == "tolerated") {
            set.encryption = Encryption::tolerated;
        } else {
            args.fail("encryption", "\"required\", \"preferred\" or \"tolerated\"");
        }
    }
    std::optional<std::int64_t> port;
    args.read("peer-port", port, 1, 65535);
    if (port) set.peer_port = static_cast<std::uint16_t>(*port);
    args.read("start-added-torrents", set.start_added_torrents);
    args.read("dht-enabled", set.dht_enabled);
    args.read("pex-enabled", set.pex_enabled);
    args.read("lpd-enabled", set.lpd_enabled);
    args.read("utp-enabled", set.utp_enabled);
    args.read("port-forwarding-enabled", set.port_forwarding_enabled);
    set.ignored_keys = args.ignored_keys();
    return finish(args, std::move(set));
}

Result<Method> parse_free_space(Arguments& args) {
    std::optional<std::string> path;
    args.read_path("path", path);
    if (!args.error() && !path) args.fail_message("argument 'path' is required: the absolute path of a folder");
    return finish(args, FreeSpace{path.value_or("")});
}

void read_file_choices(Arguments& args, FileIndices& wanted, FileIndices& unwanted, FileIndices& high,
                       FileIndices& normal, FileIndices& low) {
    args.read("files-wanted", wanted);
    args.read("files-unwanted", unwanted);
    args.read("priority-high", high);
    args.read("priority-normal", normal);
    args.read("priority-low", low);
}

Result<Method> parse_torrent_add(Arguments& args) {
    TorrentAdd add;
    const json* metainfo = args.find("metainfo");
    std::optional<std::string> filename;
    args.read("filename", filename);
    if (metainfo != nullptr && filename) {
        args.fail_message("give either argument 'filename' or 'metainfo', not both");
    } else if (metainfo != nullptr) {
        if (!metainfo->is_string()) {
            args.fail("metainfo", "a string: the .torrent file in base64");
        } else {
            auto bytes = decode_base64(metainfo->get_ref<const std::string&>());
            if (!bytes) {
                args.fail("metainfo", "the .torrent file in base64 (it is not valid base64)");
            } else if (bytes->empty()) {
                args.fail("metainfo", "the .torrent file in base64 (it is empty)");
            } else {
                add.source = TorrentAdd::Source::metainfo;
                add.data = std::move(*bytes);
            }
        }
    } else if (filename) {
        add.data = std::move(*filename);
        if (add.data.find('\0') != std::string::npos) {
            args.fail("filename", "free of NUL characters");
        } else if (starts_with_nocase(add.data, "magnet:?")) {
            add.source = TorrentAdd::Source::magnet;
        } else if (starts_with_nocase(add.data, "http://") || starts_with_nocase(add.data, "https://")) {
            add.source = TorrentAdd::Source::url;
        } else if (Arguments::valid_path(add.data)) {
            add.source = TorrentAdd::Source::path;
        } else {
            args.fail("filename", "an absolute path to a .torrent file, a magnet link or an http(s) URL");
        }
    } else if (!args.error()) {
        args.fail_message("torrent-add needs argument 'filename' (a path or a magnet link) or 'metainfo' "
                          "(the .torrent file in base64)");
    }
    args.read("paused", add.paused);
    args.read_path("download-dir", add.download_dir);
    read_file_choices(args, add.files_wanted, add.files_unwanted, add.priority_high, add.priority_normal,
                      add.priority_low);
    args.read("peer-limit", add.peer_limit, 0, kMaxPeers);
    args.read("bandwidthPriority", add.bandwidth_priority);
    args.read("sequentialDownload", add.sequential_download);
    args.read("sequential_download", add.sequential_download);
    args.read("labels", add.labels);
    args.read("cookies", add.cookies);
    add.ignored_keys = args.ignored_keys();
    return finish(args, std::move(add));
}

Result<Method> parse_torrent_get(Arguments& args) {
    TorrentGet get;
    args.read_ids(get.ids);
    const json* fields = args.find("fields");
    if (fields == nullptr) {
        args.fail_message("torrent-get needs argument 'fields': an array of field names");
    } else {
        args.read_fields("fields", get.fields);
    }
    std::optional<std::string> format;
    args.read("format", format);
    if (format) {
        if (*format == "table") {
            get.format = Format::table;
        } else if (*format != "objects") {
            args.fail("format", "\"objects\" or \"table\"");
        }
    }
    return finish(args, std::move(get));
}

Result<Method> parse_torrent_action(Arguments& args, TorrentAction::Kind kind) {
    TorrentAction action;
    action.kind = kind;
    args.read_ids(action.ids);
    return finish(args, std::move(action));
}

Result<Method> parse_torrent_remove(Arguments& args) {
    TorrentRemove remove;
    args.read_ids(remove.ids);
    std::optional<bool> delete_local_data;
    args.read("delete-local-data", delete_local_data);
    remove.delete_local_data = delete_local_data.value_or(false);
    return finish(args, std::move(remove));
}

Result<Method> parse_torrent_set(Arguments& args) {
    TorrentSet set;
    args.read_ids(set.ids);
    args.read("downloadLimit", set.download_limit_kbps, 0, kMaxSpeed);
    args.read("downloadLimited", set.download_limited);
    args.read("uploadLimit", set.upload_limit_kbps, 0, kMaxSpeed);
    args.read("uploadLimited", set.upload_limited);
    args.read("honorsSessionLimits", set.honors_session_limits);
    args.read("seedRatioLimit", set.seed_ratio_limit);
    args.read("seedRatioMode", set.seed_ratio_mode);
    args.read("seedIdleLimit", set.seed_idle_limit_minutes, 0, 65535);
    args.read("seedIdleMode", set.seed_idle_mode);
    args.read("peer-limit", set.peer_limit, 0, kMaxPeers);
    args.read("bandwidthPriority", set.bandwidth_priority);
    args.read("queuePosition", set.queue_position, 0, std::numeric_limits<std::int32_t>::max());
    read_file_choices(args, set.files_wanted, set.files_unwanted, set.priority_high, set.priority_normal,
                      set.priority_low);
    args.read("sequentialDownload", set.sequential_download);
    args.read("sequential_download", set.sequential_download);
    args.read("labels", set.labels);
    args.read_path("location", set.location);
    args.read("trackerAdd", set.tracker_add);
    args.read("trackerRemove", set.tracker_remove, 0, std::numeric_limits<std::int32_t>::max());
    set.ignored_keys = args.ignored_keys();
    return finish(args, std::move(set));
}

Result<Method> parse_method(std::string_view name, Arguments& args) {
    using Kind = TorrentAction::Kind;
    if (name == "session-get") return parse_session_get(args);
    if (name == "session-set") return parse_session_set(args);
    if (name == "session-stats") return finish(args, SessionStats{});
    if (name == "session-close") return finish(args, SessionClose{});
    if (name == "port-test") return finish(args, PortTest{});
    if (name == "free-space") return parse_free_space(args);
    if (name == "torrent-add") return parse_torrent_add(args);
    if (name == "torrent-get") return parse_torrent_get(args);
    if (name == "torrent-start") return parse_torrent_action(args, Kind::start);
    if (name == "torrent-start-now") return parse_torrent_action(args, Kind::start_now);
    if (name == "torrent-stop") return parse_torrent_action(args, Kind::stop);
    if (name == "torrent-verify") return parse_torrent_action(args, Kind::verify);
    if (name == "torrent-reannounce") return parse_torrent_action(args, Kind::reannounce);
    if (name == "torrent-remove") return parse_torrent_remove(args);
    if (name == "torrent-set") return parse_torrent_set(args);
    return make_error("method name not recognized");
}

Result<Method> parse_envelope(const json& request, std::optional<std::int64_t>& tag, const RequestLimits& limits) {
    if (const auto it = request.find("tag"); it != request.end()) {
        tag = as_int64(*it);
        if (!tag) return make_error("'tag' must be an integer");
    }
    const auto method = request.find("method");
    if (method == request.end() || !method->is_string()) {
        return make_error("no method name: 'method' must be a string such as \"torrent-get\"");
    }
    static const json kNoArguments = json::object();
    const json* arguments = &kNoArguments;
    if (const auto it = request.find("arguments"); it != request.end()) {
        if (!it->is_object()) return make_error("'arguments' must be an object");
        arguments = &*it;
    }
    Arguments args(*arguments, limits);
    return parse_method(method->get_ref<const std::string&>(), args);
}

// --- Rendering ---

json ratio(double value) {
    if (std::isnan(value)) return kRatioNotAvailable;
    if (std::isinf(value)) return value > 0 ? kRatioInfinite : kRatioNotAvailable;
    return value;
}

json fraction(double value) { return std::isfinite(value) ? value : 0.0; }

json strings(const std::vector<std::string>& values) { return json(values); }

json files_array(const TorrentView& t) {
    json files = json::array();
    for (const auto& file : t.files) {
        files.push_back({{"bytesCompleted", file.bytes_completed}, {"length", file.length}, {"name", file.name}});
    }
    return files;
}

json file_stats_array(const TorrentView& t) {
    json stats = json::array();
    for (const auto& file : t.files) {
        stats.push_back({{"bytesCompleted", file.bytes_completed},
                         {"wanted", file.wanted},
                         {"priority", static_cast<int>(file.priority)}});
    }
    return stats;
}

json priorities_array(const TorrentView& t) {
    json priorities = json::array();
    for (const auto& file : t.files) priorities.push_back(static_cast<int>(file.priority));
    return priorities;
}

json wanted_array(const TorrentView& t) {
    json wanted = json::array();
    for (const auto& file : t.files) wanted.push_back(file.wanted ? 1 : 0);
    return wanted;
}

json trackers_array(const TorrentView& t) {
    json trackers = json::array();
    for (const auto& tracker : t.trackers) {
        trackers.push_back({{"announce", tracker.announce},
                            {"id", tracker.id},
                            {"scrape", tracker.scrape},
                            {"sitename", tracker.sitename},
                            {"tier", tracker.tier}});
    }
    return trackers;
}

json tracker_stats_array(const TorrentView& t) {
    json stats = json::array();
    for (const auto& tracker : t.trackers) {
        stats.push_back({
            {"announce", tracker.announce},
            {"announceState", tracker.announce_state},
            {"downloadCount", tracker.download_count},
            {"hasAnnounced", tracker.has_announced},
            {"hasScraped", tracker.has_scraped},
            {"host", tracker.host},
            {"id", tracker.id},
            {"isBackup", tracker.is_backup},
            {"lastAnnouncePeerCount", tracker.last_announce_peer_count},
            {"lastAnnounceResult", tracker.last_announce_result},
            {"lastAnnounceStartTime", tracker.last_announce_start_time},
            {"lastAnnounceSucceeded", tracker.last_announce_succeeded},
            {"lastAnnounceTime", tracker.last_announce_time},
            {"lastAnnounceTimedOut", tracker.last_announce_timed_out},
            {"lastScrapeResult", tracker.last_scrape_result},
            {"lastScrapeStartTime", tracker.last_scrape_start_time},
            {"lastScrapeSucceeded", tracker.last_scrape_succeeded},
            {"lastScrapeTime", tracker.last_scrape_time},
            {"lastScrapeTimedOut", tracker.last_scrape_timed_out},
            {"leecherCount", tracker.leecher_count},
            {"nextAnnounceTime", tracker.next_announce_time},
            {"nextScrapeTime", tracker.next_scrape_time},
            {"scrape", tracker.scrape},
            {"scrapeState", tracker.scrape_state},
            {"seederCount", tracker.seeder_count},
            {"sitename", tracker.sitename},
            {"tier", tracker.tier},
        });
    }
    return stats;
}

json peers_array(const TorrentView& t) {
    json peers = json::array();
    for (const auto& peer : t.peers) {
        peers.push_back({
            {"address", peer.address},
            {"clientIsChoked", peer.client_is_choked},
            {"clientIsInterested", peer.client_is_interested},
            {"clientName", peer.client_name},
            {"flagStr", peer.flag_str},
            {"isDownloadingFrom", peer.is_downloading_from},
            {"isEncrypted", peer.is_encrypted},
            {"isIncoming", peer.is_incoming},
            {"isUTP", peer.is_utp},
            {"isUploadingTo", peer.is_uploading_to},
            {"peerIsChoked", peer.peer_is_choked},
            {"peerIsInterested", peer.peer_is_interested},
            {"port", peer.port},
            {"progress", fraction(peer.progress)},
            {"rateToClient", peer.rate_to_client},
            {"rateToPeer", peer.rate_to_peer},
        });
    }
    return peers;
}

json peers_from_object(const TorrentView& t) {
    const auto& from = t.peers_from;
    return {{"fromCache", from.from_cache}, {"fromDht", from.from_dht},   {"fromIncoming", from.from_incoming},
            {"fromLpd", from.from_lpd},     {"fromLtep", from.from_ltep}, {"fromPex", from.from_pex},
            {"fromTracker", from.from_tracker}};
}

using TorrentRenderer = json (*)(const TorrentView&);
struct TorrentField {
    std::string_view name;
    TorrentRenderer render;
};

// Every torrent-get field this renderer knows, with the JSON type transmission-daemon sends.
const std::array kTorrentFields = std::to_array<TorrentField>({
    {"activityDate", [](const TorrentView& t) -> json { return t.activity_date; }},
    {"addedDate", [](const TorrentView& t) -> json { return t.added_date; }},
    {"bandwidthPriority", [](const TorrentView& t) -> json { return static_cast<int>(t.bandwidth_priority); }},
    {"comment", [](const TorrentView& t) -> json { return t.comment; }},
    {"corruptEver", [](const TorrentView& t) -> json { return t.corrupt_ever; }},
    {"creator", [](const TorrentView& t) -> json { return t.creator; }},
    {"dateCreated", [](const TorrentView& t) -> json { return t.date_created; }},
    {"desiredAvailable", [](const TorrentView& t) -> json { return t.desired_available; }},
    {"doneDate", [](const TorrentView& t) -> json { return t.done_date; }},
    {"downloadDir", [](const TorrentView& t) -> json { return t.download_dir; }},
    {"downloadLimit", [](const TorrentView& t) -> json { return t.download_limit_kbps; }},
    {"downloadLimited", [](const TorrentView& t) -> json { return t.download_limited; }},
    {"downloadedEver", [](const TorrentView& t) -> json { return t.downloaded_ever; }},
    {"editDate", [](const TorrentView& t) -> json { return t.edit_date; }},
    {"error", [](const TorrentView& t) -> json { return static_cast<int>(t.error); }},
    {"errorString", [](const TorrentView& t) -> json { return t.error_string; }},
    {"eta", [](const TorrentView& t) -> json { return t.eta; }},
    {"etaIdle", [](const TorrentView& t) -> json { return t.eta_idle; }},
    {"file-count", [](const TorrentView& t) -> json { return t.files.size(); }},
    {"fileStats", file_stats_array},
    {"files", files_array},
    {"hashString", [](const TorrentView& t) -> json { return to_hex(t.hash); }},
    {"haveUnchecked", [](const TorrentView& t) -> json { return t.have_unchecked; }},
    {"haveValid", [](const TorrentView& t) -> json { return t.have_valid; }},
    {"honorsSessionLimits", [](const TorrentView& t) -> json { return t.honors_session_limits; }},
    {"id", [](const TorrentView& t) -> json { return t.id; }},
    {"isFinished", [](const TorrentView& t) -> json { return t.is_finished; }},
    {"isPrivate", [](const TorrentView& t) -> json { return t.is_private; }},
    {"isStalled", [](const TorrentView& t) -> json { return t.is_stalled; }},
    {"labels", [](const TorrentView& t) -> json { return strings(t.labels); }},
    {"leftUntilDone", [](const TorrentView& t) -> json { return t.left_until_done; }},
    {"magnetLink", [](const TorrentView& t) -> json { return t.magnet_link; }},
    {"manualAnnounceTime", [](const TorrentView& t) -> json { return t.manual_announce_time; }},
    {"maxConnectedPeers", [](const TorrentView& t) -> json { return t.peer_limit; }},
    {"metadataPercentComplete", [](const TorrentView& t) -> json { return fraction(t.metadata_percent_complete); }},
    {"name", [](const TorrentView& t) -> json { return t.name; }},
    {"peer-limit", [](const TorrentView& t) -> json { return t.peer_limit; }},
    {"peers", peers_array},
    {"peersConnected", [](const TorrentView& t) -> json { return t.peers_connected; }},
    {"peersFrom", peers_from_object},
    {"peersGettingFromUs", [](const TorrentView& t) -> json { return t.peers_getting_from_us; }},
    {"peersSendingToUs", [](const TorrentView& t) -> json { return t.peers_sending_to_us; }},
    {"percentComplete", [](const TorrentView& t) -> json { return fraction(t.percent_complete); }},
    {"percentDone", [](const TorrentView& t) -> json { return fraction(t.percent_done); }},
    {"pieceCount", [](const TorrentView& t) -> json { return t.piece_count; }},
    {"pieceSize", [](const TorrentView& t) -> json { return t.piece_size; }},
    {"pieces", [](const TorrentView& t) -> json { return encode_base64(t.pieces); }},
    {"priorities", priorities_array},
    {"queuePosition", [](const TorrentView& t) -> json { return t.queue_position; }},
    {"rateDownload", [](const TorrentView& t) -> json { return t.rate_download; }},
    {"rateUpload", [](const TorrentView& t) -> json { return t.rate_upload; }},
    {"recheckProgress", [](const TorrentView& t) -> json { return fraction(t.recheck_progress); }},
    {"secondsDownloading", [](const TorrentView& t) -> json { return t.seconds_downloading; }},
    {"secondsSeeding", [](const TorrentView& t) -> json { return t.seconds_seeding; }},
    {"seedIdleLimit", [](const TorrentView& t) -> json { return t.seed_idle_limit_minutes; }},
    {"seedIdleMode", [](const TorrentView& t) -> json { return static_cast<int>(t.seed_idle_mode); }},
    {"seedRatioLimit", [](const TorrentView& t) -> json { return fraction(t.seed_ratio_limit); }},
    {"seedRatioMode", [](const TorrentView& t) -> json { return static_cast<int>(t.seed_ratio_mode); }},
    {"sequentialDownload", [](const TorrentView& t) -> json { return t.sequential_download; }},
    {"sequential_download", [](const TorrentView& t) -> json { return t.sequential_download; }},
    {"sizeWhenDone", [](const TorrentView& t) -> json { return t.size_when_done; }},
    {"startDate", [](const TorrentView& t) -> json { return t.start_date; }},
    {"status", [](const TorrentView& t) -> json { return static_cast<int>(t.status); }},
    {"torrentFile", [](const TorrentView& t) -> json { return t.torrent_file; }},
    {"totalSize", [](const TorrentView& t) -> json { return t.total_size; }},
    {"trackerStats", tracker_stats_array},
    {"trackers", trackers_array},
    {"uploadLimit", [](const TorrentView& t) -> json { return t.upload_limit_kbps; }},
    {"uploadLimited", [](const TorrentView& t) -> json { return t.upload_limited; }},
    {"uploadRatio", [](const TorrentView& t) -> json { return ratio(t.upload_ratio); }},
    {"uploadedEver", [](const TorrentView& t) -> json { return t.uploaded_ever; }},
    {"wanted", wanted_array},
    {"webseeds", [](const TorrentView& t) -> json { return strings(t.webseeds); }},
    {"webseedsSendingToUs", [](const TorrentView& t) -> json { return t.webseeds_sending_to_us; }},
});

const TorrentField* find_torrent_field(std::string_view name) {
    for (const auto& field : kTorrentFields) {
        if (field.name == name) return &field;
    }
    return nullptr;
}

// The known fields among `names`, each once, in their first order.
std::vector<const TorrentField*> resolve_torrent_fields(std::span<const std::string> names) {
    std::vector<const TorrentField*> resolved;
    for (const auto& name : names) {
        const TorrentField* field = find_torrent_field(name);
        if (field != nullptr && std::find(resolved.begin(), resolved.end(), field) == resolved.end()) {
            resolved.push_back(field);
        }
    }
    return resolved;
}

json render_object(const TorrentView& torrent, const std::vector<const TorrentField*>& fields) {
    json object = json::object();
    for (const TorrentField* field : fields) object[std::string(field->name)] = field->render(torrent);
    return object;
}

using SessionRenderer = json (*)(const SessionView&);
struct SessionField {
    std::string_view name;
    SessionRenderer render;
};

json units_object() {
    return {{"memory-bytes", 1024},
            {"memory-units", {"KiB", "MiB", "GiB", "TiB"}},
            {"size-bytes", 1000},
            {"size-units", {"kB", "MB", "GB", "TB"}},
            {"speed-bytes", 1000},
            {"speed-units", {"kB/s", "MB/s", "GB/s", "TB/s"}}};
}

const std::array kSessionFields = std::to_array<SessionField>({
    {"alt-speed-down", [](const SessionView& s) -> json { return s.alt_speed_down_kbps; }},
    {"alt-speed-enabled", [](const SessionView& s) -> json { return s.alt_speed_enabled; }},
    {"alt-speed-time-begin", [](const SessionView& s) -> json { return s.alt_speed_time_begin; }},
    {"alt-speed-time-day", [](const SessionView& s) -> json { return s.alt_speed_time_day; }},
    {"alt-speed-time-enabled", [](const SessionView& s) -> json { return s.alt_speed_time_enabled; }},
    {"alt-speed-time-end", [](const SessionView& s) -> json { return s.alt_speed_time_end; }},
    {"alt-speed-up", [](const SessionView& s) -> json { return s.alt_speed_up_kbps; }},
    {"blocklist-enabled", [](const SessionView& s) -> json { return s.blocklist_enabled; }},
    {"blocklist-size", [](const SessionView& s) -> json { return s.blocklist_size; }},
    {"blocklist-url", [](const SessionView& s) -> json { return s.blocklist_url; }},
    {"cache-size-mb", [](const SessionView& s) -> json { return s.cache_size_mb; }},
    {"config-dir", [](const SessionView& s) -> json { return s.config_dir; }},
    {"dht-enabled", [](const SessionView& s) -> json { return s.dht_enabled; }},
    {"download-dir", [](const SessionView& s) -> json { return s.download_dir; }},
    {"download-queue-enabled", [](const SessionView& s) -> json { return s.download_queue_enabled; }},
    {"download-queue-size", [](const SessionView& s) -> json { return s.download_queue_size; }},
    {"encryption", [](const SessionView& s) -> json { return to_string(s.encryption); }},
    {"idle-seeding-limit", [](const SessionView& s) -> json { return s.idle_seeding_limit_minutes; }},
    {"idle-seeding-limit-enabled", [](const SessionView& s) -> json { return s.idle_seeding_limit_enabled; }},
    {"incomplete-dir", [](const SessionView& s) -> json { return s.incomplete_dir; }},
    {"incomplete-dir-enabled", [](const SessionView& s) -> json { return s.incomplete_dir_enabled; }},
    {"lpd-enabled", [](const SessionView& s) -> json { return s.lpd_enabled; }},
    {"peer-limit-global", [](const SessionView& s) -> json { return s.peer_limit_global; }},
    {"peer-limit-per-torrent", [](const SessionView& s) -> json { return s.peer_limit_per_torrent; }},
    {"peer-port", [](const SessionView& s) -> json { return s.peer_port; }},
    {"peer-port-random-on-start", [](const SessionView& s) -> json { return s.peer_port_random_on_start; }},
    {"pex-enabled", [](const SessionView& s) -> json { return s.pex_enabled; }},
    {"port-forwarding-enabled", [](const SessionView& s) -> json { return s.port_forwarding_enabled; }},
    {"queue-stalled-enabled", [](const SessionView& s) -> json { return s.queue_stalled_enabled; }},
    {"queue-stalled-minutes", [](const SessionView& s) -> json { return s.queue_stalled_minutes; }},
    {"rename-partial-files", [](const SessionView& s) -> json { return s.rename_partial_files; }},
    {"rpc-version", [](const SessionView& s) -> json { return s.rpc_version; }},
    {"rpc-version-minimum", [](const SessionView& s) -> json { return s.rpc_version_minimum; }},
    {"rpc-version-semver", [](const SessionView& s) -> json { return s.rpc_version_semver; }},
    {"script-torrent-added-enabled", [](const SessionView& s) -> json { return s.script_torrent_added_enabled; }},
    {"script-torrent-added-filename", [](const SessionView& s) -> json { return s.script_torrent_added_filename; }},
    {"script-torrent-done-enabled", [](const SessionView& s) -> json { return s.script_torrent_done_enabled; }},
    {"script-torrent-done-filename", [](const SessionView& s) -> json { return s.script_torrent_done_filename; }},
    {"seed-queue-enabled", [](const SessionView& s) -> json { return s.seed_queue_enabled; }},
    {"seed-queue-size", [](const SessionView& s) -> json { return s.seed_queue_size; }},
    {"seedRatioLimit", [](const SessionView& s) -> json { return fraction(s.seed_ratio_limit); }},
    {"seedRatioLimited", [](const SessionView& s) -> json { return s.seed_ratio_limited; }},
    {"session-id", [](const SessionView& s) -> json { return s.session_id; }},
    {"speed-limit-down", [](const SessionView& s) -> json { return s.speed_limit_down_kbps; }},
    {"speed-limit-down-enabled", [](const SessionView& s) -> json { return s.speed_limit_down_enabled; }},
    {"speed-limit-up", [](const SessionView& s) -> json { return s.speed_limit_up_kbps; }},
    {"speed-limit-up-enabled", [](const SessionView& s) -> json { return s.speed_limit_up_enabled; }},
    {"start-added-torrents", [](const SessionView& s) -> json { return s.start_added_torrents; }},
    {"trash-original-torrent-files", [](const SessionView& s) -> json { return s.trash_original_torrent_files; }},
    {"units", [](const SessionView&) -> json { return units_object(); }},
    {"utp-enabled", [](const SessionView& s) -> json { return s.utp_enabled; }},
    {"version", [](const SessionView& s) -> json { return s.version; }},
});

const SessionField* find_session_field(std::string_view name) {
    for (const auto& field : kSessionFields) {
        if (field.name == name) return &field;
    }
    return nullptr;
}

json stats_object(const TransferStatsView& stats) {
    return {{"downloadedBytes", stats.downloaded_bytes},
            {"filesAdded", stats.files_added},
            {"secondsActive", stats.seconds_active},
            {"sessionCount", stats.session_count},
            {"uploadedBytes", stats.uploaded_bytes}};
}

std::string dump(const json& reply) { return reply.dump(-1, ' ', false, json::error_handler_t::replace); }

constexpr std::string_view kBase64Alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

constexpr std::array<std::int8_t, 256> base64_values() {
    std::array<std::int8_t, 256> values{};
    values.fill(-1);
    for (std::size_t i = 0; i < kBase64Alphabet.size(); ++i) {
        values[static_cast<unsigned char>(kBase64Alphabet[i])] = static_cast<std::int8_t>(i);
    }
    return values;
}

constexpr auto kBase64Values = base64_values();

bool is_ascii_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v'; }

}  // namespace

// --- Public API ---

bool TorrentIds::matches(std::uint32_t id, const Sha1Digest& hash, bool recently_active) const {
    switch (scope) {
        case Scope::all:
            return true;
        case Scope::recently_active:
            return recently_active;
        case Scope::listed:
            return std::binary_search(ids.begin(), ids.end(), id) ||
                   std::binary_search(hashes.begin(), hashes.end(), hash);
    }
    return false;
}

std::string_view to_string(Encryption encryption) {
    switch (encryption) {
        case Encryption::required:
            return "required";
        case Encryption::preferred:
            return "preferred";
        case Encryption::tolerated:
            return "tolerated";
    }
    return "preferred";
}

Result<Request> parse_request(std::string_view body, const RequestLimits& limits) {
    auto parsed = parse_bounded(body, limits, /*build=*/true);
    if (!parsed) return parsed.error();
    try {
        std::optional<std::int64_t> tag;
        auto method = parse_envelope(parsed.value(), tag, limits);
        return Request{tag, std::move(method)};
    } catch (const std::bad_alloc&) {
        return Request{std::nullopt, make_error("request is too large to handle")};
    } catch (const std::exception& e) {
        // nlohmann throws only on misuse (a type mismatch we did not check): a bug, but one
        // that must not take the daemon down.
        return Request{std::nullopt, make_error(std::string("request could not be read: ") + e.what())};
    }
}

Status check_request_body(std::string_view body, const RequestLimits& limits) {
    auto parsed = parse_bounded(body, limits, /*build=*/false);
    if (!parsed) return parsed.error();
    return ok_status();
}

bool is_torrent_field(std::string_view name) { return find_torrent_field(name) != nullptr; }
bool is_session_field(std::string_view name) { return find_session_field(name) != nullptr; }

nlohmann::json torrent_object(const TorrentView& torrent, std::span<const std::string> fields) {
    return render_object(torrent, resolve_torrent_fields(fields));
}

nlohmann::json torrent_get_arguments(const TorrentGet& request, std::span<const TorrentView> torrents,
                                     const std::vector<std::uint32_t>* removed) {
    const auto fields = resolve_torrent_fields(request.fields);
    json list = json::array();
    if (request.format == Format::table) {
        json header = json::array();
        for (const TorrentField* field : fields) header.push_back(std::string(field->name));
        list.push_back(std::move(header));
        for (const auto& torrent : torrents) {
            json row = json::array();
            for (const TorrentField* field : fields) row.push_back(field->render(torrent));
            list.push_back(std::move(row));
        }
    } else {
        for (const auto& torrent : torrents) list.push_back(render_object(torrent, fields));
    }
    json arguments = {{"torrents", std::move(list)}};
    if (removed != nullptr) arguments["removed"] = *removed;
    return arguments;
}

nlohmann::json torrent_added_arguments(const TorrentView& torrent, bool duplicate) {
    json summary = {{"hashString", to_hex(torrent.hash)}, {"id", torrent.id}, {"name", torrent.name}};
    return {{duplicate ? "torrent-duplicate" : "torrent-added", std::move(summary)}};
}

nlohmann::json session_arguments(const SessionView& session, std::span<const std::string> fields) {
    json arguments = json::object();
    if (fields.empty()) {
        for (const auto& field : kSessionFields) arguments[std::string(field.name)] = field.render(session);
        if (session.download_dir_free_space) arguments["download-dir-free-space"] = *session.download_dir_free_space;
        return arguments;
    }
    for (const auto& name : fields) {
        if (const SessionField* field = find_session_field(name)) {
            arguments[name] = field->render(session);
        } else if (name == "download-dir-free-space" && session.download_dir_free_space) {
            arguments[name] = *session.download_dir_free_space;
        }
    }
    return arguments;
}

nlohmann::json session_stats_arguments(const SessionStatsView& stats) {
    return {{"activeTorrentCount", stats.active_torrent_count},
            {"cumulative-stats", stats_object(stats.cumulative)},
            {"current-stats", stats_object(stats.current)},
            {"downloadSpeed", stats.download_speed},
            {"pausedTorrentCount", stats.paused_torrent_count},
            {"torrentCount", stats.torrent_count},
            {"uploadSpeed", stats.upload_speed}};
}

nlohmann::json free_space_arguments(std::string_view path, std::int64_t size_bytes, std::int64_t total_size) {
    return {{"path", std::string(path)}, {"size-bytes", size_bytes}, {"total_size", total_size}};
}

nlohmann::json port_test_arguments(bool port_is_open) { return {{"port-is-open", port_is_open}}; }

std::string render_success(std::optional<std::int64_t> tag, const nlohmann::json& arguments) {
    json reply = {{"arguments", arguments}, {"result", "success"}};
    if (tag) reply["tag"] = *tag;
    return dump(reply);
}

std::string render_success(std::optional<std::int64_t> tag) { return render_success(tag, json::object()); }

std::string render_error(std::optional<std::int64_t> tag, std::string_view message) {
    json reply = {{"arguments", json::object()}, {"result", std::string(message)}};
    if (tag) reply["tag"] = *tag;
    return dump(reply);
}

std::string encode_base64(std::string_view bytes) {
    std::string out;
    out.reserve((bytes.size() + 2) / 3 * 4);
    std::size_t i = 0;
    const auto byte = [&](std::size_t at) { return static_cast<std::uint32_t>(static_cast<unsigned char>(bytes[at])); };
    for (; i + 3 <= bytes.size(); i += 3) {
        const std::uint32_t group = (byte(i) << 16) | (byte(i + 1) << 8) | byte(i + 2);
        for (int shift = 18; shift >= 0; shift -= 6) out.push_back(kBase64Alphabet[(group >> shift) & 63]);
    }
    const std::size_t rest = bytes.size() - i;
    if (rest > 0) {
        std::uint32_t group = byte(i) << 16;
        if (rest == 2) group |= byte(i + 1) << 8;
        out.push_back(kBase64Alphabet[(group >> 18) & 63]);
        out.push_back(kBase64Alphabet[(group >> 12) & 63]);
        out.push_back(rest == 2 ? kBase64Alphabet[(group >> 6) & 63] : '=');
        out.push_back('=');
    }
    return out;
}

std::optional<std::string> decode_base64(std::string_view text) {
    std::string out;
    out.reserve(text.size() / 4 * 3 + 3);
    std::uint32_t group = 0;
    std::size_t symbols = 0;  // data symbols seen
    std::size_t padding = 0;
    for (const char c : text) {
        if (is_ascii_space(c)) continue;
        if (c == '=') {
            ++padding;
            continue;
        }
        const std::int8_t value = kBase64Values[static_cast<unsigned char>(c)];
        if (value < 0 || padding > 0) return std::nullopt;  // not base64, or data after padding
        group = (group << 6) | static_cast<std::uint32_t>(value);
        if (++symbols % 4 == 0) {
            out.push_back(static_cast<char>((group >> 16) & 0xff));
            out.push_back(static_cast<char>((group >> 8) & 0xff));
            out.push_back(static_cast<char>(group & 0xff));
            group = 0;
        }
    }
    const std::size_t tail = symbols % 4;
    if (tail == 1) return std::nullopt;  // six bits cannot make a byte
    if (padding > 0 && (padding > 2 || tail == 0 || tail + padding != 4)) return std::nullopt;
    if (tail == 2) {
        out.push_back(static_cast<char>((group >> 4) & 0xff));
    } else if (tail == 3) {
        out.push_back(static_cast<char>((group >> 10) & 0xff));
        out.push_back(static_cast<char>((group >> 2) & 0xff));
    }
    return out;
}

}  // namespace pw::rpc
