#!/usr/bin/python3
"""Hostile MSE initiators against one listening port, all at once; prints one line per case:
'CASE closed AFTER_S' when the other side closed the connection, 'CASE open' when it was still
open after --wait seconds. Used by encryption_test.cpp: each must be closed, none may cost
the honest peers anything."""
import argparse
import hashlib
import os
import secrets
import socket
import threading
import time

# BEP 8's (MSE) 768-bit prime.
P = int("FFFFFFFFFFFFFFFFC90FDAA22168C234C4C6628B80DC1CD129024E088A67CC74020BBEA63B139B22"
        "514A08798E3404DDEF9519B3CD3A431B302B0A6DF25F14374FE1356D6D51C245E485B576625E7EC6F4"
        "4C42E9A63A36210000000000090563", 16)
G = 2


def public_key():
    x = secrets.randbits(160)
    return pow(G, x, P).to_bytes(96, "big"), x


def cases(info_hash):
    def stall(sock):  # our public key, then silence
        ya, _ = public_key()
        sock.sendall(ya)

    def garbage(sock):  # random bytes: no synchronisation hash ever comes
        sock.sendall(os.urandom(96))
        time.sleep(0.2)
        for _ in range(8):
            sock.sendall(os.urandom(100))

    def wrong_hash(sock):  # a key, then a req1 hash made with the wrong secret, then more
        ya, _ = public_key()
        sock.sendall(ya)
        sock.recv(608)
        sock.sendall(hashlib.sha1(b"req1" + os.urandom(96)).digest() + os.urandom(600))

    def oversized_padding(sock):  # a key and 1000 bytes of padding (the spec allows 512)
        ya, _ = public_key()
        sock.sendall(ya + os.urandom(1000))

    def right_hash_unknown_torrent(sock):  # correct req1, but req2 names a torrent not served
        ya, x = public_key()
        sock.sendall(ya)
        yb = b""
        while len(yb) < 96:
            more = sock.recv(96 - len(yb))
            if not more:
                return
            yb += more
        secret = pow(int.from_bytes(yb, "big"), x, P).to_bytes(96, "big")
        req1 = hashlib.sha1(b"req1" + secret).digest()
        other = hashlib.sha1(b"req2" + os.urandom(20)).digest()
        req3 = hashlib.sha1(b"req3" + secret).digest()
        sock.sendall(req1 + bytes(a ^ b for a, b in zip(other, req3)) + os.urandom(60))

    def trickle(sock):  # a byte a second: slower than the handshake's deadline allows
        ya, _ = public_key()
        for byte in ya:
            sock.sendall(bytes([byte]))
            time.sleep(1)

    return {"stall": stall, "garbage": garbage, "wrong_hash": wrong_hash,
            "oversized_padding": oversized_padding, "unknown_torrent": right_hash_unknown_torrent,
            "trickle": trickle}


def run(name, action, port, wait, results):
    start = time.monotonic()
    sock = socket.create_connection(("127.0.0.1", port), timeout=wait)
    try:
        action(sock)
        sock.settimeout(max(0.1, wait - (time.monotonic() - start)))
        while True:
            if not sock.recv(4096):
                break
        results[name] = "closed %.1f" % (time.monotonic() - start)
    except (ConnectionResetError, BrokenPipeError):
        results[name] = "closed %.1f" % (time.monotonic() - start)
    except socket.timeout:
        results[name] = "open"
    finally:
        sock.close()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--info-hash", required=True)
    parser.add_argument("--wait", type=float, default=40)
    args = parser.parse_args()
    results = {}
    threads = [threading.Thread(target=run, args=(name, action, args.port, args.wait, results))
               for name, action in cases(bytes.fromhex(args.info_hash)).items()]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for name in sorted(results):
        print(name, results[name], flush=True)
    print("DONE", flush=True)


if __name__ == "__main__":
    main()
