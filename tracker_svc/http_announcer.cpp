#include "tracker_svc/http_announcer.hpp"

#include <stdexcept>

#include <curl/curl.h>
#include <sys/select.h>

#include "core/tracker_codec.hpp"

namespace pw::tracker {

namespace {

CURLM* as_multi(void* handle) { return static_cast<CURLM*>(handle); }
CURL* as_easy(void* handle) { return static_cast<CURL*>(handle); }

constexpr long kMaxRedirects = 5;
constexpr long kConnectTimeoutMs = 5000;

}  // namespace

HttpAnnouncer::HttpAnnouncer() {
    // curl_global_init is idempotent-ish but not thread-safe; this stage is single-threaded
    // and constructs one announcer, which is where it belongs.
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
        throw std::runtime_error("libcurl failed to initialise");
    }
    multi_ = curl_multi_init();
    if (multi_ == nullptr) throw std::runtime_error("curl_multi_init failed");
}

HttpAnnouncer::~HttpAnnouncer() {
    cancel();
    curl_multi_cleanup(as_multi(multi_));
    curl_global_cleanup();
}

void HttpAnnouncer::cancel() {
    if (easy_ == nullptr) return;
    curl_multi_remove_handle(as_multi(multi_), as_easy(easy_));
    curl_easy_cleanup(as_easy(easy_));
    easy_ = nullptr;
}

std::size_t HttpAnnouncer::on_body(char* data, std::size_t size, std::size_t count, void* self) {
    auto* announcer = static_cast<HttpAnnouncer*>(self);
    const std::size_t bytes = size * count;
    if (announcer->body_.size() + bytes > kMaxTrackerResponse) {
        announcer->body_too_large_ = true;
        return 0;  // anything but `bytes` makes curl abort with CURLE_WRITE_ERROR
    }
    announcer->body_.append(data, bytes);
    return bytes;
}

void HttpAnnouncer::start(const std::string& url, std::chrono::milliseconds timeout) {
    cancel();
    body_.clear();
    body_too_large_ = false;
    error_buffer_[0] = '\0';
    CURL* easy = curl_easy_init();
    if (easy == nullptr) throw std::runtime_error("curl_easy_init failed");
    easy_ = easy;
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
    curl_easy_setopt(easy, CURLOPT_WRITEFUNCTION, &HttpAnnouncer::on_body);
    curl_easy_setopt(easy, CURLOPT_WRITEDATA, this);
    curl_easy_setopt(easy, CURLOPT_ERRORBUFFER, error_buffer_);
    if (curl_multi_add_handle(as_multi(multi_), easy) != CURLM_OK) {
        cancel();
        throw std::runtime_error("curl_multi_add_handle failed");
    }
}

void HttpAnnouncer::add_poll_items(std::vector<zmq::pollitem_t>& items) const {
    if (easy_ == nullptr) return;
    fd_set read_set;
    fd_set write_set;
    fd_set error_set;
    FD_ZERO(&read_set);
    FD_ZERO(&write_set);
    FD_ZERO(&error_set);
    int max_fd = -1;
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
    if (easy_ == nullptr) return std::chrono::milliseconds::max();
    long timeout_ms = -1;
    curl_multi_timeout(as_multi(multi_), &timeout_ms);
    // -1: curl has no timer set; while it is resolving (threaded resolver) it exposes no
    // socket either, so look again soon rather than sleep through the answer.
    if (timeout_ms < 0 || timeout_ms > 100) timeout_ms = 100;
    return std::chrono::milliseconds(timeout_ms);
}

std::optional<Result<HttpReply>> HttpAnnouncer::drive() {
    if (easy_ == nullptr) return std::nullopt;
    int running = 0;
    curl_multi_perform(as_multi(multi_), &running);
    int queued = 0;
    while (CURLMsg* message = curl_multi_info_read(as_multi(multi_), &queued)) {
        if (message->msg != CURLMSG_DONE || message->easy_handle != easy_) continue;
        const CURLcode code = message->data.result;
        long status = 0;
        curl_easy_getinfo(as_easy(easy_), CURLINFO_RESPONSE_CODE, &status);
        std::string detail = error_buffer_[0] != '\0' ? error_buffer_ : curl_easy_strerror(code);
        cancel();
        if (body_too_large_ || code == CURLE_FILESIZE_EXCEEDED) {
            return Result<HttpReply>(make_error("response larger than " +
                                                std::to_string(kMaxTrackerResponse >> 20) +
                                                " MiB"));
        }
        if (code == CURLE_UNSUPPORTED_PROTOCOL) {
            return Result<HttpReply>(
                make_error("redirected to a scheme other than http/https: " + detail));
        }
        if (code == CURLE_TOO_MANY_REDIRECTS) {
            return Result<HttpReply>(make_error("more than " + std::to_string(kMaxRedirects) +
                                                " redirects"));
        }
        if (code == CURLE_OPERATION_TIMEDOUT) {
            return Result<HttpReply>(make_error("timed out: " + detail));
        }
        if (code != CURLE_OK) return Result<HttpReply>(make_error(detail));
        return Result<HttpReply>(HttpReply{status, std::move(body_)});
    }
    return std::nullopt;
}

}  // namespace pw::tracker
