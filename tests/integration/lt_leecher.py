#!/usr/bin/python3
"""A libtorrent leecher for the integration tests: downloads one torrent from the peers given,
or from those the torrent's trackers name when no --peer is given.

  lt_leecher.py TORRENT SAVE_DIR [--peer HOST:PORT ...] [--listen HOST] [--port P]
                [--timeout S] [--encryption forced|disabled]

TORRENT may be a magnet link: libtorrent then fetches the metadata from the peers first
(BEP 9) and prints "METADATA <pieces>" once it has it.

No DHT, LSD or UPnP: the peers named and the torrent's trackers, if it has any
(allow_multiple_connections_per_ip, so several workers on one address are all used).
--listen is the address listened on (127.0.0.1 by default; 0.0.0.0 where peers are on other
hosts). Prints "READY <port>" once listening, a progress line per second ("progress
<pieces>/<total> <bytes> <peers>"), and once every piece is in and checked by libtorrent, a
line "FROM <ip>:<port> <bytes>" per peer it got payload from, then "COMPLETE <pieces>" (exit
0); exits 1 on timeout or an error.
--download-kib caps what it downloads (loopback included), for a peer that must stay
without most pieces while it tells others (by peer exchange) of the peers it knows.
--encryption forced makes and accepts only MSE connections with RC4; disabled, plain
BitTorrent only; by default libtorrent's own (MSE offered, plain accepted).
"""
import argparse
import sys
import time

import libtorrent as lt


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("torrent")
    parser.add_argument("save_dir")
    parser.add_argument("--peer", action="append", default=[])
    parser.add_argument("--listen", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--timeout", type=float, default=120)
    parser.add_argument("--encryption", choices=["forced", "disabled"])
    parser.add_argument("--download-kib", type=int, default=0)
    args = parser.parse_args()

    settings = {
        "listen_interfaces": f"{args.listen}:{args.port}",
        "enable_dht": False, "enable_lsd": False, "enable_upnp": False,
        "enable_natpmp": False, "enable_outgoing_utp": False, "enable_incoming_utp": False,
        "allow_multiple_connections_per_ip": True,
        "alert_mask": lt.alert.category_t.error_notification
        | lt.alert.category_t.status_notification
        | lt.alert.category_t.peer_notification,
    }
    # libtorrent's enums: pe_forced = 0, pe_disabled = 2; allowed_enc_level pe_rc4 = 2.
    if args.encryption == "forced":
        settings.update({"out_enc_policy": 0, "in_enc_policy": 0, "allowed_enc_level": 2})
    elif args.encryption == "disabled":
        settings.update({"out_enc_policy": 2, "in_enc_policy": 2})
    if args.download_kib:
        settings["download_rate_limit"] = args.download_kib * 1024
    session = lt.session(settings)
    if args.download_kib:
        # Loopback peers sit in libtorrent's unlimited local class; the cap must apply to them.
        ip_filter = lt.ip_filter()
        ip_filter.add_rule("0.0.0.0", "255.255.255.255", 1 << lt.session.global_peer_class_id)
        session.set_peer_class_filter(ip_filter)
    magnet = args.torrent.startswith("magnet:")
    if magnet:
        params = lt.parse_magnet_uri(args.torrent)
    else:
        params = lt.add_torrent_params()
        params.ti = lt.torrent_info(args.torrent)
    params.save_path = args.save_dir
    params.flags &= ~lt.torrent_flags.auto_managed
    params.flags &= ~lt.torrent_flags.paused
    handle = session.add_torrent(params)
    while session.listen_port() == 0:
        time.sleep(0.05)
    print(f"READY {session.listen_port()}", flush=True)

    peers = []
    for peer in args.peer:
        host, port = peer.rsplit(":", 1)
        peers.append((host, int(port)))
    deadline = time.monotonic() + args.timeout
    next_line = 0.0
    next_connect = 0.0
    total = None if magnet else params.ti.num_pieces()
    got_from = {}  # "ip:port" -> payload bytes downloaded from it (most seen)
    while time.monotonic() < deadline:
        now = time.monotonic()
        status = handle.status()
        if total is None and status.has_metadata:
            total = handle.torrent_file().num_pieces()
            print(f"METADATA {total}", flush=True)
        if now >= next_connect:
            # Again now and then: a peer that dropped us (or was not listening yet) is retried.
            for peer in peers:
                handle.connect_peer(peer)
            next_connect = now + 2
        for info in handle.get_peer_info():
            source = f"{info.ip[0]}:{info.ip[1]}"
            got_from[source] = max(got_from.get(source, 0), info.total_download)
        for alert in session.pop_alerts():
            print(f"alert {type(alert).__name__}: {alert.message()}", flush=True)
        if now >= next_line:
            print(f"progress {status.num_pieces}/{total} {status.total_wanted_done} {status.num_peers}",
                  flush=True)
            next_line = now + 1
        if total is not None and (status.is_seeding or status.num_pieces == total):
            for source, count in sorted(got_from.items()):
                if count > 0:
                    print(f"FROM {source} {count}", flush=True)
            print(f"COMPLETE {status.num_pieces}", flush=True)
            return 0
        time.sleep(0.05)
    print(f"TIMEOUT {handle.status().num_pieces}/{total if total is not None else '?'}", flush=True)
    return 1


if __name__ == "__main__":
    sys.exit(main())
