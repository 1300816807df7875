#!/usr/bin/python3
"""A BitTorrent peer for the test suite that misbehaves on purpose (or not: mode `honest`).

Serves the torrent's pieces from --payload, the torrent's whole byte stream in one flat file
(so it can seed torrents whose file names are hostile). Listens on --host and --count
consecutive ports from --port (0: pick free ones); prints "READY port1 port2 ..." once
listening, then one line per connection event. Every mode speaks only to 127.0.0.x.
"""
import argparse
import hashlib
import os
import socket
import struct
import sys
import threading
import time

BLOCK = 16384


def bdecode(data, i=0):
    """Returns (value, end); dicts also remember their raw span under key b'__span__'."""
    c = data[i:i + 1]
    if c == b'i':
        end = data.index(b'e', i)
        return int(data[i + 1:end]), end + 1
    if c == b'l':
        i += 1
        out = []
        while data[i:i + 1] != b'e':
            v, i = bdecode(data, i)
            out.append(v)
        return out, i + 1
    if c == b'd':
        start = i
        i += 1
        out = {}
        while data[i:i + 1] != b'e':
            k, i = bdecode(data, i)
            v, i = bdecode(data, i)
            out[k] = v
        out[b'__span__'] = (start, i + 1)
        return out, i + 1
    colon = data.index(b':', i)
    n = int(data[i:colon])
    return data[colon + 1:colon + 1 + n], colon + 1 + n


def bencode(value):
    if isinstance(value, int):
        return b'i%de' % value
    if isinstance(value, bytes):
        return b'%d:' % len(value) + value
    if isinstance(value, dict):
        return b'd' + b''.join(bencode(k) + bencode(value[k]) for k in sorted(value)) + b'e'
    return b'l' + b''.join(bencode(v) for v in value) + b'e'


def log(*args):
    print(*args, flush=True)


class Torrent:
    def __init__(self, path, payload):
        raw = open(path, 'rb').read()
        meta, _ = bdecode(raw)
        info = meta[b'info']
        start, end = info[b'__span__']
        self.info = raw[start:end]
        self.info_hash = hashlib.sha1(self.info).digest()
        self.piece_length = info[b'piece length']
        self.piece_count = len(info[b'pieces']) // 20
        self.payload = payload

    def piece_size(self, index):
        total = os.path.getsize(self.payload)
        return min(self.piece_length, total - index * self.piece_length)

    def read(self, index, begin, length):
        with open(self.payload, 'rb') as f:
            f.seek(index * self.piece_length + begin)
            return f.read(length)


def message(msg_id, body=b''):
    return struct.pack('>IB', 1 + len(body), msg_id) + body


def recv_exact(conn, n):
    buf = b''
    while len(buf) < n:
        chunk = conn.recv(n - len(buf))
        if not chunk:
            raise EOFError('closed by the client')
        buf += chunk
    return buf


def read_message(conn):
    """The next message's body (its id first), keep-alives skipped."""
    while True:
        length = struct.unpack('>I', recv_exact(conn, 4))[0]
        if length > 1 << 20:
            raise EOFError('client sent a huge message')
        if length:
            return recv_exact(conn, length)


class Peer:
    def __init__(self, torrent, mode):
        self.t = torrent
        self.mode = mode

    def handshake(self, conn, info_hash=None):
        pstr = b'BitTorrent protocol'
        reserved = bytearray(8)
        if self.mode.startswith('metadata_'):
            reserved[5] = 0x10  # BEP 10
        hs = bytes([len(pstr)]) + pstr + bytes(reserved) + (info_hash or self.t.info_hash) + \
            b'-HP0001-' + os.urandom(12)
        if self.mode == 'trickle':
            for b in hs:
                conn.sendall(bytes([b]))
                time.sleep(3)
            return
        conn.sendall(hs)
        recv_exact(conn, 68)

    def bitfield(self):
        n = self.t.piece_count
        bits = bytearray((n + 7) // 8)
        for i in range(n):
            bits[i // 8] |= 0x80 >> (i % 8)
        return bytes(bits)

    def serve(self, conn):
        mode = self.mode
        if mode == 'junk':
            while True:
                conn.sendall(os.urandom(4096))
                time.sleep(0.05)
        if mode == 'wrong_infohash':
            self.handshake(conn, info_hash=os.urandom(20))
            while conn.recv(4096):
                pass
            raise EOFError('closed by the client')
        self.handshake(conn)
        if mode.startswith('metadata_'):
            return self.serve_metadata(conn)
        if mode == 'huge_length':
            conn.sendall(struct.pack('>I', 0xFFFFFFFF))
            while True:
                conn.sendall(os.urandom(4096))
                time.sleep(0.01)
        if mode == 'two_million':
            conn.sendall(struct.pack('>I', 2_000_000))
            while True:
                conn.sendall(os.urandom(4096))
                time.sleep(0.01)
        if mode == 'bitfield_wrong_size':
            conn.sendall(message(5, self.bitfield() + b'\xff\xff\xff'))
        elif mode == 'bitfield_spare_bits':
            bits = bytearray(self.bitfield())
            bits[-1] = 0xff  # the torrent's piece count is no multiple of 8: spare bits set
            conn.sendall(message(5, bytes(bits)))
        else:
            conn.sendall(message(5, self.bitfield()))
        if mode == 'have_out_of_range':
            conn.sendall(message(4, struct.pack('>I', self.t.piece_count + 7)))
        if mode == 'unknown_id':
            conn.sendall(message(77, b'hello') + message(200))
        conn.sendall(message(1))  # unchoke
        if mode == 'unrequested_piece':
            conn.sendall(message(7, struct.pack('>II', 0, 0) + self.t.read(0, 0, BLOCK)))
        if mode == 'piece_out_of_range':
            conn.sendall(message(7, struct.pack('>II', self.t.piece_count + 3, 0) + bytes(BLOCK)))
        if mode == 'piece_too_large':
            conn.sendall(message(7, struct.pack('>II', 0, 0) + bytes(4 * BLOCK)))
        while True:
            body = read_message(conn)
            if body[0] != 6 or len(body) != 13:
                continue
            index, begin, size = struct.unpack('>III', body[1:])
            if mode in ('have_out_of_range', 'unknown_id', 'bitfield_wrong_size',
                        'bitfield_spare_bits', 'unrequested_piece', 'piece_out_of_range',
                        'piece_too_large', 'silent'):
                continue  # these modes never serve: the honest peers must
            block = self.t.read(index, begin, size)
            if mode == 'corrupt' and begin == BLOCK:
                block = bytes(b ^ 0x5a for b in block)
            conn.sendall(message(7, struct.pack('>II', index, begin) + block))


    def serve_metadata(self, conn):
        """BEP 9 gone wrong: bad bytes of the right length (metadata_wrong), a size over any
        sane cap (metadata_oversized), or pieces cut short (metadata_truncated)."""
        mode = self.mode
        size = 64 << 20 if mode == 'metadata_oversized' else len(self.t.info)
        conn.sendall(message(20, b'\x00' + bencode({b'm': {b'ut_metadata': 3}, b'metadata_size': size})))
        conn.sendall(message(5, self.bitfield()))
        theirs = 0
        while True:
            body = read_message(conn)
            if body[0] != 20:
                continue
            if body[1] == 0:
                handshake, _ = bdecode(body[2:])
                theirs = handshake.get(b'm', {}).get(b'ut_metadata', 0)
                continue
            if body[1] != 3 or theirs == 0:
                continue
            request, _ = bdecode(body[2:])
            piece = request[b'piece']
            data = self.t.info[piece * BLOCK:(piece + 1) * BLOCK]
            if mode == 'metadata_wrong':
                data = bytes(b ^ 0x5a for b in data)
            elif mode == 'metadata_truncated':
                data = data[:len(data) // 2]
            log(f'{mode}: answering metadata piece {piece}')
            reply = bencode({b'msg_type': 1, b'piece': piece, b'total_size': size}) + data
            conn.sendall(message(20, bytes([theirs]) + reply))


def handle(peer, conn, address, port):
    log(f'{peer.mode} {port}: connection from {address[0]}:{address[1]}')
    try:
        peer.serve(conn)
    except (EOFError, ConnectionError, OSError) as e:
        log(f'{peer.mode} {port}: dropped: {e}')
    finally:
        conn.close()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument('torrent')
    parser.add_argument('payload')
    parser.add_argument('--mode', default='honest')
    parser.add_argument('--host', default='127.0.0.1')
    parser.add_argument('--port', type=int, default=0)
    parser.add_argument('--count', type=int, default=1)
    args = parser.parse_args()
    peer = Peer(Torrent(args.torrent, args.payload), args.mode)
    listeners = []
    for i in range(args.count):
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((args.host, args.port + i if args.port else 0))
        s.listen(16)
        listeners.append(s)
    log('READY ' + ' '.join(str(s.getsockname()[1]) for s in listeners))

    def accept_loop(s):
        port = s.getsockname()[1]
        while True:
            conn, address = s.accept()
            threading.Thread(target=handle, args=(peer, conn, address, port), daemon=True).start()

    for s in listeners[1:]:
        threading.Thread(target=accept_loop, args=(s,), daemon=True).start()
    accept_loop(listeners[0])


if __name__ == '__main__':
    sys.exit(main())
