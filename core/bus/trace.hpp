#pragma once
// --trace: one readable line per message crossing a socket (direction, socket type, peer or
// endpoint, the envelope in protobuf text format, raw frames only as sizes). Lines go to a
// dedicated spdlog logger, so tracing is independent of --log-level, and optionally out of a
// PUB socket that `piecework tap` reads: a PUB never blocks and drops lines nobody listens to,
// so a tap can come and go without slowing the stage.
#include <memory>
#include <span>
#include <string>

#include <spdlog/logger.h>
#include <zmq.hpp>

#include "proto/piecework.pb.h"

namespace pw::bus::trace {

// The trace logger's name in spdlog's registry; bus::send and bus::receive look it up.
inline constexpr const char* kLoggerName = "pw.trace";
// Longest envelope text in one line; a PeersFound with hundreds of peers is cut here.
inline constexpr std::size_t kMaxEnvelopeText = 2000;

// Starts tracing for this process: to stderr when `to_stderr`, and published on
// `publish_endpoint` (bound, e.g. tcp://*:5570 or ipc:///tmp/x) when not empty.
// Throws std::runtime_error when the endpoint cannot be bound.
void start(const std::string& stage, bool to_stderr, const std::string& publish_endpoint);
// Flushes and drops the trace logger (and closes its PUB socket).
void stop();

// The trace logger, or null when tracing is off.
std::shared_ptr<spdlog::logger> logger();

enum class Direction { sent, received };

// The line bus::send / bus::receive log: "send DEALER tcp://host:5555: {envelope} +frames[...]".
std::string describe(Direction direction, zmq::socket_t& socket, const std::string* identity,
                     const ::piecework::v1::Envelope& envelope,
                     std::span<const std::size_t> frame_sizes);

}  // namespace pw::bus::trace
