#!/usr/bin/python3
"""A libtorrent seeder for the integration tests, listening on 127.0.0.1.

  lt_seeder.py TORRENT DATA_DIR --port P [--rate-kib R] [--pieces-file F --work-dir W]
               [--also TORRENT2 ...]

DATA_DIR holds the torrent's content (the file or folder the torrent names). The seeder
announces to the torrent's trackers and prints "READY <port> <pieces>" once libtorrent has
checked its files and listens.

With --pieces-file (comma-separated piece indices) the seeder has only those pieces: it
copies the content to W, overwrites every other piece with zeros there, and lets libtorrent
check the copy (no seed_mode), so libtorrent itself finds that only the listed pieces are
good. The missing pieces get priority 0, so it never downloads them from anyone and serves
only what it has.

With --also (repeatable) the same session seeds more torrents from DATA_DIR, all on one
port, as one libtorrent client seeding several torrents does; READY waits for all of them.

With --connect HOST:PORT (repeatable) the seeder also connects to that peer once READY, for
tests that listen and let libtorrent open the connection.

With --dht-node HOST:PORT (repeatable) the seeder joins a DHT through those nodes only (no
routers, loopback-friendly settings) and announces its torrents there.

LT_ENC in the environment sets libtorrent's MSE/PE policy, both ways: "forced" accepts and
makes only encrypted connections with RC4 (as ../shared/bench does), "plaintext" only MSE
connections that select the plaintext method, "disabled" plain BitTorrent only (MSE
refused); unset (or any other value) leaves libtorrent's
default (encryption enabled, plain handshakes accepted).
"""
import argparse
import os
import shutil
import sys
import time

import libtorrent as lt


def make_session(port, rate_kib):
    settings = {
        "listen_interfaces": f"127.0.0.1:{port}",
        "enable_dht": False, "enable_lsd": False, "enable_upnp": False,
        "enable_natpmp": False, "enable_outgoing_utp": False, "enable_incoming_utp": False,
        "allow_multiple_connections_per_ip": True,
        "upload_rate_limit": rate_kib * 1024,
        "alert_mask": lt.alert.category_t.error_notification
        | lt.alert.category_t.tracker_notification
        | lt.alert.category_t.status_notification,
    }
    # libtorrent's enums: pe_forced = 0; pe_plaintext = 1, pe_rc4 = 2.
    encryption = os.environ.get("LT_ENC")
    if encryption == "forced":
        settings.update({"out_enc_policy": 0, "in_enc_policy": 0, "allowed_enc_level": 2})
    elif encryption == "plaintext":
        settings.update({"out_enc_policy": 0, "in_enc_policy": 0, "allowed_enc_level": 1})
    elif encryption == "disabled":
        # pe_disabled = 2: plain BitTorrent only, MSE refused both ways.
        settings.update({"out_enc_policy": 2, "in_enc_policy": 2})
    session = lt.session(settings)
    if rate_kib:
        # Loopback peers sit in libtorrent's unlimited local class; the cap must apply to them.
        ip_filter = lt.ip_filter()
        ip_filter.add_rule("0.0.0.0", "255.255.255.255", 1 << lt.session.global_peer_class_id)
        session.set_peer_class_filter(ip_filter)
    return session


def copy_with_only(info, data_dir, work_dir, keep):
    """Copies the content to work_dir and zeroes every piece not in keep."""
    files = info.files()
    for index in range(files.num_files()):
        source = files.file_path(index, data_dir)
        target = files.file_path(index, work_dir)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        shutil.copyfile(source, target)
    for piece in range(info.num_pieces()):
        if piece in keep:
            continue
        for file_slice in info.map_block(piece, 0, info.piece_size(piece)):
            with open(files.file_path(file_slice.file_index, work_dir), "r+b") as f:
                f.seek(file_slice.offset)
                f.write(bytes(file_slice.size))


def report_alerts(session):
    alerts = session.pop_alerts()
    for alert in alerts:
        print(f"alert {type(alert).__name__}: {alert.message()}", flush=True)
    return alerts


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("torrent")
    parser.add_argument("data_dir")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--rate-kib", type=int, default=0)
    parser.add_argument("--pieces-file")
    parser.add_argument("--work-dir")
    parser.add_argument("--also", action="append", default=[],
                        help="another torrent to seed from DATA_DIR on the same port")
    parser.add_argument("--connect", action="append", default=[],
                        help="HOST:PORT of a peer to connect to once ready")
    parser.add_argument("--dht-node", action="append", default=[],
                        help="HOST:PORT of a DHT node to join through (the only ones used)")
    args = parser.parse_args()
    if args.also and args.pieces_file:
        sys.exit("--also seeds whole torrents only")

    info = lt.torrent_info(args.torrent)
    save_path = args.data_dir
    keep = None
    if args.pieces_file:
        with open(args.pieces_file) as f:
            keep = {int(x) for x in f.read().replace("\n", "").split(",") if x.strip()}
        if not args.work_dir:
            sys.exit("--pieces-file needs --work-dir")
        copy_with_only(info, args.data_dir, args.work_dir, keep)
        save_path = args.work_dir

    session = make_session(args.port, args.rate_kib)
    if args.dht_node:
        # Every node is on 127.0.0.1: libtorrent would keep one node per address otherwise.
        session.apply_settings({
            "enable_dht": True, "dht_bootstrap_nodes": "",
            "dht_restrict_routing_ips": False, "dht_restrict_search_ips": False,
            "dht_enforce_node_id": False, "dht_prefer_verified_node_ids": False,
            "dht_ignore_dark_internet": False, "dht_block_ratelimit": 100000,
            "dht_announce_interval": 5,
        })
        for node in args.dht_node:
            host, _, port = node.rpartition(":")
            session.add_dht_node((host, int(port)))
    params = lt.add_torrent_params()
    params.ti = info
    params.save_path = save_path
    params.flags &= ~lt.torrent_flags.auto_managed
    params.flags &= ~lt.torrent_flags.paused
    if keep is not None:
        params.piece_priorities = [4 if p in keep else 0 for p in range(info.num_pieces())]
    handle = session.add_torrent(params)
    others = []
    for torrent in args.also:
        other = lt.add_torrent_params()
        other.ti = lt.torrent_info(torrent)
        other.save_path = args.data_dir
        other.flags &= ~lt.torrent_flags.auto_managed
        other.flags &= ~lt.torrent_flags.paused
        others.append((session.add_torrent(other), other.ti.num_pieces()))

    # A torrent's state is not "checking" for a moment after it is added, before its check
    # starts: only torrent_checked_alert says the check is over.
    checked = set()
    while True:
        for alert in report_alerts(session):
            if isinstance(alert, lt.torrent_checked_alert):
                checked.add(alert.handle)
        status = handle.status()
        if (handle in checked and all(h in checked for h, _ in others)
                and session.listen_port() > 0):
            break
        time.sleep(0.05)
    expected = info.num_pieces() if keep is None else len(keep)
    if status.num_pieces != expected:
        print(f"ERROR: found {status.num_pieces} good pieces, expected {expected}", flush=True)
        return 1
    for other_handle, other_pieces in others:
        if other_handle.status().num_pieces != other_pieces:
            print(f"ERROR: {other_handle.status().name} has {other_handle.status().num_pieces} "
                  f"good pieces, expected {other_pieces}", flush=True)
            return 1
    print(f"READY {session.listen_port()} {status.num_pieces}", flush=True)
    for peer in args.connect:
        host, _, port = peer.rpartition(":")
        handle.connect_peer((host, int(port)))
    while True:
        report_alerts(session)
        time.sleep(0.5)


if __name__ == "__main__":
    sys.exit(main())
