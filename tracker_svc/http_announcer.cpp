#include "tracker_svc/http_announcer.hpp"

#include <stdexcept>

#include <curl/curl.h>
#include <sys/select.h>

#include "core/tracker_codec.hpp"

namespace pw::tracker {

namespace {

CURLM* as_multi(void* handle) { return static_cast<CURLM*>(handle); }

constexpr long kMaxRedirects = 5;
constexpr long kConnectTimeoutMs = 5000;

}  // namespace

struct HttpAnnouncer::Transfer {
    CURL* easy = nullptr;
    std::string body;
    bool body_too_large = false;
    char error_buffer[CURL_ERROR_SIZE] = {};

    static std::size_t on_body(char* data, std::size_t size, std::size_t count, void* self) {
        auto* transfer = static_cast<Transfer*>(self);
        const std::size_t bytes = size * count;
        if (transfer->body.size() + bytes > kMaxTrackerResponse) {
            transfer->body_too_large = true;
            return 0;  // anything but `bytes` makes curl abort with CURLE_WRITE_ERROR
        }
        transfer->body.append(data, bytes);
        return bytes;
    }
};

HttpAnnouncer::HttpAnnouncer(long max_idle_connections) {
    // Not thread-safe, and idempotent only in pairs with curl_global_cleanup: this stage is
    // single-threaded and makes one announcer.
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
        throw std::runtime_error("libcurl failed to initialise");
    }
    multi_ = curl_multi_init();
    if (multi_ == nullptr) throw std::runtime_error("curl_multi_init failed");
    curl_multi_setopt(as_multi(multi_), CURLMOPT_MAXCONNECTS, max_idle_connections);
}

HttpAnnouncer::~HttpAnnouncer() {
    while (!transfers_.empty()) cancel(transfers_.begin()->first);
    curl_multi_cleanup(as_multi(multi_));
    curl_global_cleanup();
}

void HttpAnnouncer::cancel(TransferId id) {
    const auto found = transfers_.find(id);
    if (found == transfers_.end()) return;
    curl_multi_remove_handle(as_multi(multi_), found->second->easy);
    curl_easy_cleanup(found->second->easy);
    transfers_.erase(found);
}

void HttpAnnouncer::start(TransferId id, const std::string& url, std::chrono::milliseconds timeout) {
    if (transfers_.contains(id)) throw std::logic_error("HttpAnnouncer: transfer id in use");
    auto transfer = std::make_unique<Transfer>();
    CURL* easy = curl_easy_init();
    if (easy == nullptr) throw std::runtime_error("curl_easy_init failed");
    transfer->easy = easy;
    curl_easy_setopt(easy, CURLOPT_URL, url.c_str());
    curl_easy_setopt(easy, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(easy, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(easy, CURLOPT_FOLLOWLOCATION, 1L);
    curl_easy_setopt(easy, CURLOPT_MAXREDIRS, kMaxRedirects);
    curl_easy_setopt(easy, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(easy, CURLOPT_CONNECTTIMEOUT_MS,
                     std::min<long>(kConnectTimeoutMs, static_cast<long>(timeout.count())));
    curl_easy_setopt(easy, CURLOPT_TIMEOUT_MS, static_cast<long>(timeout.count()));
    curl_easy_setopt(easy, CURLOPT_USERAGENT, "piecework/0.1");
    // Trackers may gzip; curl decodes and our cap applies to the decoded body.
    curl_easy_setopt(easy, CURLOPT_ACCEPT_ENCODING, "");
    curl_easy_setopt(easy, CURLOPT_MAXFILESIZE_LARGE,
                     static_cast<curl_off_t>(kMaxTrackerResponse));
    curl_easy_setopt(easy, CURLOPT_WRITEFUNCTION, &Transfer::on_body);
    curl_easy_setopt(easy, CURLOPT_WRITEDATA, transfer.get());
    curl_easy_setopt(easy, CURLOPT_ERRORBUFFER, transfer->error_buffer);
    curl_easy_setopt(easy, CURLOPT_PRIVATE, reinterpret_cast<void*>(static_cast<std::uintptr_t>(id)));
    if (curl_multi_add_handle(as_multi(multi_), easy) != CURLM_OK) {
        curl_easy_cleanup(easy);
        throw std::runtime_error("curl_multi_add_handle failed");
    }
    transfers_.emplace(id, std::move(transfer));
}

void HttpAnnouncer::add_poll_items(std::vector<zmq::pollitem_t>& items) const {
    if (transfers_.empty()) return;
    fd_set read_set;
    fd_set write_set;
    fd_set error_set;
    FD_ZERO(&read_set);
    FD_ZERO(&write_set);
    FD_ZERO(&error_set);
    int max_fd = -1;
    // curl leaves out descriptors >= FD_SETSIZE; the stage holds few, and poll_timeout's
    // 100 ms ceiling would still drive such a transfer.
    if (curl_multi_fdset(as_multi(multi_), &read_set, &write_set, &error_set, &max_fd) != CURLM_OK) {
        return;
    }
    for (int fd = 0; fd <= max_fd; ++fd) {
        short events = 0;
        if (FD_ISSET(fd, &read_set)) events |= ZMQ_POLLIN;
        if (FD_ISSET(fd, &write_set)) events |= ZMQ_POLLOUT;
        if (FD_ISSET(fd, &error_set)) events |= ZMQ_POLLERR;
        if (events != 0) items.push_back(zmq::pollitem_t{nullptr, fd, events, 0});
    }
}

std::chrono::milliseconds HttpAnnouncer::poll_timeout() const {
    if (transfers_.empty()) return std::chrono::milliseconds::max();
    long timeout_ms = -1;
    curl_multi_timeout(as_multi(multi_), &timeout_ms);
    // -1: curl has no timer set; while it is resolving (threaded resolver) it exposes no
    // socket either, so look again soon rather than sleep through the answer.
    if (timeout_ms < 0 || timeout_ms > 100) timeout_ms = 100;
    return std::chrono::milliseconds(timeout_ms);
}

std::vector<std::pair<HttpAnnouncer::TransferId, Result<HttpReply>>> HttpAnnouncer::drive() {
    std::vector<std::pair<TransferId, Result<HttpReply>>> done;
    if (transfers_.empty()) return done;
    int running = 0;
    curl_multi_perform(as_multi(multi_), &running);
    int queued = 0;
    while (CURLMsg* message = curl_multi_info_read(as_multi(multi_), &queued)) {
        if (message->msg != CURLMSG_DONE) continue;
        void* tag = nullptr;
        curl_easy_getinfo(message->easy_handle, CURLINFO_PRIVATE, &tag);
        const auto id = static_cast<TransferId>(reinterpret_cast<std::uintptr_t>(tag));
        const auto found = transfers_.find(id);
        if (found == transfers_.end() || found->second->easy != message->easy_handle) continue;
        Transfer& transfer = *found->second;
        const CURLcode code = message->data.result;
        long status = 0;
        curl_easy_getinfo(transfer.easy, CURLINFO_RESPONSE_CODE, &status);
        const std::string detail =
            transfer.error_buffer[0] != '\0' ? transfer.error_buffer : curl_easy_strerror(code);
        const bool too_large = transfer.body_too_large || code == CURLE_FILESIZE_EXCEEDED;
        std::string body = std::move(transfer.body);
        cancel(id);  // `message` is not used past this point
        if (too_large) {
            done.emplace_back(id, make_error("response larger than " +
                                             std::to_string(kMaxTrackerResponse >> 20) + " MiB"));
        } else if (code == CURLE_UNSUPPORTED_PROTOCOL) {
            done.emplace_back(id, make_error("redirected to a scheme other than http/https: " + detail));
        } else if (code == CURLE_TOO_MANY_REDIRECTS) {
            done.emplace_back(id, make_error("more than " + std::to_string(kMaxRedirects) + " redirects"));
        } else if (code == CURLE_OPERATION_TIMEDOUT) {
            done.emplace_back(id, make_error("timed out: " + detail));
        } else if (code != CURLE_OK) {
            done.emplace_back(id, make_error(detail));
        } else {
            done.emplace_back(id, HttpReply{status, std::move(body)});
        }
    }
    return done;
}

}  // namespace pw::tracker
