// The DHT node as the internet drives it: a run of datagrams from a few addresses, with time
// passing between them, into one DhtNode (dht_svc/dht_node.hpp). It must never crash, and what
// it keeps and sends must stay within its bounds. The same bytes are also read as a saved
// routing table (dht.dat).
//
// Input: records of [1 byte: source (low 2 bits) and whether time passes (bit 2)][2 bytes:
// length][that many bytes: the datagram], until the input ends.
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "dht_svc/dht_node.hpp"
#include "dht_svc/routing_table.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    using namespace pw::dht;
    const std::string_view input(reinterpret_cast<const char*>(data), size);
    (void)RoutingTable::load(input);

    NodeConfig config;
    config.max_outgoing = 64;
    config.max_pending = 32;
    Time now = Time{} + std::chrono::hours(1);
    pw::krpc::NodeId own{};
    own.fill(0x11);
    DhtNode node(own, config, 1, now);
    node.set_bootstrap({PeerAddress{"10.0.0.1", 6881}});
    node.add_torrent(pw::TorrentId{1}, pw::Sha1Digest{1, 2, 3}, now);
    node.set_port(pw::TorrentId{1}, 6881, false, now);
    node.tick(now);
    const PeerAddress sources[4] = {{"10.0.0.1", 6881}, {"10.0.0.2", 6881}, {"10.0.0.1", 6882}, {"192.0.2.9", 1}};

    std::size_t at = 0;
    while (at + 3 <= size) {
        const std::uint8_t head = data[at];
        const std::size_t length = std::min<std::size_t>((std::size_t{data[at + 1]} << 8) | data[at + 2], size - at - 3);
        node.on_datagram(input.substr(at + 3, length), sources[head & 3], now);
        at += 3 + length;
        if ((head & 4) != 0) {
            now += std::chrono::seconds(1 + (head >> 3));
            node.tick(now);
        }
        const auto out = node.take_outgoing();
        if (out.size() > config.max_outgoing) __builtin_trap();
        for (const Datagram& datagram : out) {
            if (datagram.bytes.size() > 1500) __builtin_trap();
        }
        if (node.pending_queries() > config.max_pending) __builtin_trap();
        for (const FoundPeers& found : node.take_found()) {
            if (found.peers.size() > config.max_peers_per_lookup) __builtin_trap();
        }
    }
    if (node.table().size() > 160 * kBucketSize) __builtin_trap();
    return 0;
}
