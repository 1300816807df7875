#!/usr/bin/python3
"""A small DHT of libtorrent sessions on 127.0.0.1, for the DHT stage's integration test.

  lt_dht.py --ports P0,P1,... [--extra-node HOST:PORT] [--announce HEX] [--query HEX]

Each session listens (TCP and the DHT's UDP) on 127.0.0.1:Pi and knows only the others (and
--extra-node, the stage under test), never any other address: no bootstrap routers at all
(libtorrent never puts a router in its routing table, so the others are added as nodes). Once every
session has DHT nodes it prints "READY". Then, every two seconds, session 0 announces
--announce with its own listen port (P0), and the other sessions ask the DHT for the peers of
--query, printing "PEERS HEX ip:port" for each peer an answer names, and every announce_peer a session
receives as "ANNOUNCED HEX ip:port".
"""
import argparse
import sys
import time

import libtorrent as lt


def make_session(port):
    settings = {
        "listen_interfaces": f"127.0.0.1:{port}",
        "enable_dht": True,
        "dht_bootstrap_nodes": "",
        "enable_lsd": False, "enable_upnp": False, "enable_natpmp": False,
        "allow_multiple_connections_per_ip": True,
        # Every node here is on 127.0.0.1: libtorrent would keep one node per address, and
        # block an address that sends more than a few queries a second.
        "dht_restrict_routing_ips": False,
        "dht_restrict_search_ips": False,
        "dht_enforce_node_id": False,
        "dht_prefer_verified_node_ids": False,
        "dht_ignore_dark_internet": False,
        "dht_block_ratelimit": 100000,
        "dht_upload_rate_limit": 1 << 20,
        "dht_announce_interval": 5,
        "alert_mask": lt.alert.category_t.dht_notification | lt.alert.category_t.dht_operation_notification
        | lt.alert.category_t.error_notification,
    }
    return lt.session(settings)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--ports", required=True)
    parser.add_argument("--extra-node", action="append", default=[])
    parser.add_argument("--announce")
    parser.add_argument("--query")
    parser.add_argument("--save-dir", default="/tmp")
    parser.add_argument("--seconds", type=int, default=120)
    args = parser.parse_args()
    ports = [int(p) for p in args.ports.split(",")]
    sessions = [make_session(port) for port in ports]
    extra = []
    for node in args.extra_node:
        host, port = node.rsplit(":", 1)
        extra.append((host, int(port)))
    for session, own in zip(sessions, ports):
        for port in ports:
            if port != own:
                session.add_dht_node(("127.0.0.1", port))
        for node in extra:
            session.add_dht_node(node)

    counts = [0] * len(sessions)

    def poll(handle):
        for index, session in enumerate(sessions):
            for alert in session.pop_alerts():
                if isinstance(alert, lt.dht_stats_alert):
                    counts[index] = sum(bucket["num_nodes"] for bucket in alert.routing_table)
                else:
                    handle(alert)

    deadline = time.time() + 30
    while time.time() < deadline and not all(c > 0 for c in counts):
        for session in sessions:
            session.post_dht_stats()
        time.sleep(0.3)
        poll(lambda alert: None)
    print(f"READY nodes={counts}", flush=True)

    def report(alert):
        if isinstance(alert, lt.dht_get_peers_reply_alert):
            for ip, port in alert.peers():
                print(f"PEERS {alert.info_hash} {ip}:{port}", flush=True)
        elif isinstance(alert, lt.dht_announce_alert):
            print(f"ANNOUNCED {alert.info_hash} {alert.ip}:{alert.port}", flush=True)

    if args.announce:
        params = lt.add_torrent_params()
        params.info_hashes = lt.info_hash_t(lt.sha1_hash(bytes.fromhex(args.announce)))
        params.save_path = args.save_dir
        sessions[0].add_torrent(params)
    query = lt.sha1_hash(bytes.fromhex(args.query)) if args.query else None
    end = time.time() + args.seconds
    next_round = 0.0
    while time.time() < end:
        if time.time() >= next_round:
            next_round = time.time() + 2
            if query is not None:
                for s in sessions[1:]:
                    s.dht_get_peers(query)
            for session in sessions:
                session.post_dht_stats()
            print(f"nodes={counts}", flush=True)
        poll(report)
        time.sleep(0.1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
