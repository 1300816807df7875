#!/usr/bin/python3
"""Makes a v1 .torrent with libtorrent, for piece sizes mktorrent 1.1 refuses (below 32 KiB).

  lt_make_torrent.py CONTENT PIECE_BYTES OUT [--tier URL,URL]...
"""
import argparse
import os
import sys

import libtorrent as lt


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("content")
    parser.add_argument("piece_bytes", type=int)
    parser.add_argument("out")
    parser.add_argument("--tier", action="append", default=[])
    args = parser.parse_args()

    content = os.path.abspath(args.content)
    files = lt.file_storage()
    lt.add_files(files, content)
    # v1 only: our client speaks BEP 3, and a hybrid torrent would add padding files.
    creator = lt.create_torrent(files, args.piece_bytes, lt.create_torrent.v1_only)
    for tier, urls in enumerate(args.tier):
        for url in urls.split(","):
            creator.add_tracker(url, tier)
    lt.set_piece_hashes(creator, os.path.dirname(content))
    with open(args.out, "wb") as f:
        f.write(lt.bencode(creator.generate()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
