#!/usr/bin/python3
"""A stand-in for `piecework download` built on libtorrent, to check the download tests
themselves (their trackers, seeders and comparisons) independently of our stages:

  PW_TEST_PIECEWORK=tests/integration/reference_client.py download_itest

Accepts the flags the tests pass: download TORRENT -o OUT [--quiet] [--peer H:P]... [--workers N]
"""
import argparse
import sys
import time

import libtorrent as lt


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("command", choices=["download"])
    parser.add_argument("torrent")
    parser.add_argument("-o", "--output", default=".")
    parser.add_argument("-q", "--quiet", action="store_true")
    parser.add_argument("--peer", action="append", default=[])
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args()

    session = lt.session({
        "listen_interfaces": "127.0.0.1:0",
        "enable_dht": False, "enable_lsd": False, "enable_upnp": False,
        "enable_natpmp": False, "enable_outgoing_utp": False, "enable_incoming_utp": False,
        "allow_multiple_connections_per_ip": True,
    })
    params = lt.add_torrent_params()
    params.ti = lt.torrent_info(args.torrent)
    params.save_path = args.output
    handle = session.add_torrent(params)
    for peer in args.peer:
        host, port = peer.rsplit(":", 1)
        handle.connect_peer((host, int(port)))
    while not handle.status().is_seeding:
        time.sleep(0.1)
    session.remove_torrent(handle)
    time.sleep(0.5)
    return 0


if __name__ == "__main__":
    sys.exit(main())
