#!/usr/bin/env python3
"""Writes the crafted torrents in this folder; metainfo_test.cpp holds what each must give.

Kept as text-friendly bencode (piece hashes are runs of 'a') so the files read in an editor.
Run from anywhere: python3 make_bad_torrents.py
"""
import os

HERE = os.path.dirname(os.path.abspath(__file__))


def enc(v):
    if isinstance(v, bool):
        raise TypeError("no bools in bencode")
    if isinstance(v, int):
        return b"i%de" % v
    if isinstance(v, str):
        v = v.encode()
    if isinstance(v, bytes):
        return b"%d:%s" % (len(v), v)
    if isinstance(v, list):
        return b"l" + b"".join(enc(x) for x in v) + b"e"
    if isinstance(v, dict):
        items = sorted((k.encode() if isinstance(k, str) else k, x) for k, x in v.items())
        return b"d" + b"".join(enc(k) + enc(x) for k, x in items) + b"e"
    raise TypeError(type(v))


def hashes(n):
    return b"a" * (20 * n)


def torrent(info, **top):
    root = {"announce": "http://127.0.0.1:6969/announce", "info": info}
    root.update(top)
    return enc(root)


def single(length=10, piece_length=16384, pieces=None, **extra):
    info = {"name": "payload.bin", "piece length": piece_length, "length": length,
            "pieces": hashes(1) if pieces is None else pieces}
    info.update(extra)
    return info


def multi(files, piece_length=16384, pieces=None, name="folder"):
    total = sum(f["length"] for f in files if isinstance(f.get("length"), int))
    count = max(1, -(-total // piece_length)) if total > 0 else 1
    return {"name": name, "piece length": piece_length, "files": files,
            "pieces": hashes(count) if pieces is None else pieces}


def f(length, *path, **extra):
    d = {"length": length, "path": list(path)}
    d.update(extra)
    return d


CASES = {
    # Validation errors.
    "piece_length_zero": torrent(single(piece_length=0)),
    "piece_length_negative": torrent(single(piece_length=-16384)),
    "piece_length_too_large": torrent(single(piece_length=1 << 30)),
    "piece_length_missing": torrent({"name": "x", "length": 10, "pieces": hashes(1)}),
    "pieces_missing": torrent({"name": "x", "length": 10, "piece length": 16384}),
    "pieces_not_multiple_of_20": torrent(single(pieces=b"a" * 30)),
    "pieces_count_too_small": torrent(single(length=40000, pieces=hashes(2))),
    "pieces_count_too_large": torrent(single(length=10, pieces=hashes(2))),
    "length_negative": torrent(single(length=-1)),
    "file_length_negative": torrent(multi([f(10, "a"), f(-5, "b")])),
    "file_length_not_int": torrent(multi([f(10, "a"), {"length": "10", "path": ["b"]}])),
    "file_too_large": torrent(multi([f((1 << 48) + 1, "huge")], pieces=hashes(1))),
    "neither_length_nor_files": torrent({"name": "x", "piece length": 16384, "pieces": hashes(1)}),
    "both_length_and_files": torrent(dict(single(), files=[f(10, "a")])),
    "total_size_zero": torrent(multi([f(0, "a"), f(0, "b")])),
    "single_file_empty": torrent(single(length=0)),
    "too_many_files": torrent(multi([f(1, "a"), f(1, "b"), f(1, "c"), f(1, "d")])),
    "file_without_path": torrent(multi([{"length": 10}])),
    "file_path_not_strings": torrent(multi([f(10, "a", 7)])),
    "file_not_a_dict": torrent(multi([f(10, "a")]) | {"files": [f(10, "a"), 5]}),
    "files_not_a_list": torrent(multi([f(10, "a")]) | {"files": "a"}),
    "info_missing": enc({"announce": "http://127.0.0.1/announce"}),
    "info_not_a_dict": enc({"info": ["x"]}),
    "not_a_dict": enc(["info"]),
    "truncated": torrent(single())[:-2],
    "trailing_garbage": torrent(single()) + b"junk",
    "duplicate_keys": b"d4:infod6:lengthi10e6:lengthi10eee",
    "too_deep": b"d4:info" + b"l" * 200 + b"e" * 200 + b"e",
    # Good torrents with hostile paths: metainfo_test checks their sanitized paths.
    "paths_traversal": torrent(multi([
        f(1, "..", "..", "etc", "passwd"),
        f(1, "/etc/passwd"),
        f(1, "a", ".", "", "b"),
        f(1, "sub/../../up"),
    ])),
    "paths_bad_characters": torrent(multi([
        f(1, "back\\slash"),
        f(1, "ctrl\x01\x1f\x7fchars"),
        f(1, "nul\x00byte"),
    ])),
    "paths_long_element": torrent(multi([f(1, "x" * 300 + ".txt"), f(1, "y" * 300)])),
    "paths_duplicates": torrent(multi([
        f(1, "file.txt"), f(1, "file.txt"), f(1, "file.txt"), f(1, "file.1.txt"),
    ])),
    "paths_prefix_conflict": torrent(multi([f(1, "a"), f(1, "a", "b"), f(1, "c", "d"), f(1, "c")])),
    "paths_empty": torrent(multi([f(1), f(1, ".."), f(1, "")])),
    "name_dotdot": torrent(dict(single(), name="..")),
    "name_with_slash": torrent(dict(single(), name="../../evil")),
    "padding_files": torrent(multi([
        f(16000, "a"), f(384, ".pad", "384", attr="p"), f(16000, "b"), f(384, ".pad", "384", attr="p"),
        f(10, "c"),
    ])),
}

for name, data in CASES.items():
    with open(os.path.join(HERE, name + ".torrent"), "wb") as out:
        out.write(data)
