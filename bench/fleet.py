#!/usr/bin/python3
"""A fleet fetching one file from one slow origin: does it fetch it from itself?

A real opentracker and one libtorrent origin capped at a few MiB/s on 127.0.0.1 (bench/run.py's
swarm). N downloaders start together, each on a port of its own, and find the origin and each
other through the tracker; each keeps seeding after it completes (piecework `--seed-time`,
libtorrent stays up) until the last one is done. Measured: the time until the last of the N
completes, against the time of one downloader alone, for N piecework downloaders and for N
libtorrent clients. Without uploads between them the N would share the origin: about N times
the solo time. Every download's bytes are checked.

  /usr/bin/python3 bench/fleet.py                        # N=4, 128 MiB, origin at 4 MiB/s
  /usr/bin/python3 bench/fleet.py --count 8 --size-mib 64 --runs 2

Prints one JSON line per group on stderr and a table of medians; exits 1 when a download
failed. Floors (issue 14): with N=4 the last piecework completes within 1.5x piecework's solo
time and within 1.1x of libtorrent's fleet time.
"""
import argparse
import ctypes
import json
import os
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import run as common  # noqa: E402  bench/run.py: swarm, payload, torrents, process trees

MIB = common.MIB
# The orchestrator logs this (at --log-level info) the moment the last piece is written.
PIECEWORK_COMPLETE = "complete: '"


def lt_peer(torrent, out, done_file):
    """A libtorrent fleet member: downloads, says so in done_file, then seeds until killed."""
    s = common.lt_session(0)
    handle = common.lt_add(s, torrent, out, False)
    while not handle.status().is_seeding:
        time.sleep(0.05)
    with open(done_file + ".tmp", "w") as f:
        f.write(str(time.monotonic()))
    os.replace(done_file + ".tmp", done_file)
    while True:
        time.sleep(1)


class Member:
    """One downloader of a group: its process tree, its folder and how to tell it is done."""

    def __init__(self, kind, args, torrent, work, index):
        self.out = tempfile.mkdtemp(prefix=f"{kind}-{index}-", dir=work)
        self.log = os.path.join(self.out, ".client.log")
        self.done_file = os.path.join(work, f".{os.path.basename(self.out)}.done")
        if kind == "piecework":
            minutes = int(args.timeout // 60) + 2  # outlives the group; the bench stops it
            cmd = args.wrap.split() + [
                os.path.join(args.build, "bin", "piecework"), "download", torrent,
                "-o", self.out, "--listen-port", str(common.free_port()),
                "--seed-time", str(minutes), "--log-level", "info", "--quiet",
                "--state-dir", os.path.join(work, f".state-{os.path.basename(self.out)}")]
            cmd += common.LOCAL_ONLY
            if args.workers:
                cmd += ["--workers", str(args.workers)]
        else:
            cmd = [sys.executable, os.path.abspath(__file__), "lt-peer", torrent, self.out,
                   self.done_file]
        self.kind = kind
        self.cmd = cmd
        self.proc = None
        self.tree = None
        self.finished = None

    def start(self):
        with open(self.log, "w") as log:
            self.proc = subprocess.Popen(self.cmd, stdout=log, stderr=subprocess.STDOUT,
                                         start_new_session=True, cwd=self.out)
        self.tree = common.Tree(self.proc.pid)

    def done(self):
        if self.kind == "piecework":
            with open(self.log, errors="replace") as f:
                return PIECEWORK_COMPLETE in f.read()
        return os.path.exists(self.done_file)

    def stop(self):
        """SIGTERM first (piecework saves and exits cleanly), whatever is left is killed."""
        self.tree.refresh()
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass

    def kill(self):
        self.tree.kill()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass


def run_group(kind, count, args, torrent, work, path, digest):
    """Starts `count` downloaders together; returns when every one completed (or timed out)."""
    members = [Member(kind, args, torrent, work, i) for i in range(count)]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.monotonic()
    for member in members:
        member.start()
    while time.monotonic() - started < args.timeout:
        now = time.monotonic()
        for member in members:
            if member.finished is None and member.done():
                member.finished = now - started
            if member.finished is None and member.proc.poll() is not None:
                member.finished = float("nan")  # exited before completing
        if all(m.finished is not None for m in members):
            break
        time.sleep(0.1)
    for member in members:
        member.stop()
    deadline = time.monotonic() + 15
    while any(m.proc.poll() is None for m in members) and time.monotonic() < deadline:
        time.sleep(0.1)
    for member in members:
        member.kill()
    deadline = time.monotonic() + 5
    while any(m.tree.refresh() - {m.proc.pid} for m in members) and time.monotonic() < deadline:
        common.reap_all()
        time.sleep(0.05)
    common.reap_all()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    times, ok = [], True
    for member in members:
        target = os.path.join(member.out, os.path.basename(path))
        good = (member.finished is not None and member.finished == member.finished
                and os.path.exists(target) and common.sha256_of(target) == digest)
        ok = ok and good
        times.append(round(member.finished, 2) if good else None)
        if good or not args.keep:
            shutil.rmtree(member.out, ignore_errors=True)
    subprocess.run(["sync"])
    return dict(client=kind, count=count, ok=ok, times=times,
                last=max(times) if ok else None, cpu=round(cpu, 2))


def table(results, args):
    lines = [f"{'client':<11} {'runs ok':>7} {'solo s':>7} {'fleet last s':>12}"
             f" {'fleet first s':>13} {'last/solo':>9} {'fleet CPU s':>11}"]
    rows = {}
    for kind, groups in results.items():
        solo = [g["last"] for g in groups["solo"] if g["ok"]]
        fleet = [g for g in groups["fleet"] if g["ok"]]
        runs = len(groups["solo"])
        good = min(len(solo), len(fleet))
        if not solo or not fleet:
            lines.append(f"{kind:<11} {str(good) + '/' + str(runs):>7}  no good run")
            continue
        row = dict(solo=statistics.median(solo),
                   last=statistics.median(g["last"] for g in fleet),
                   first=statistics.median(min(g["times"]) for g in fleet),
                   cpu=statistics.median(g["cpu"] for g in fleet))
        row["ratio"] = row["last"] / row["solo"]
        rows[kind] = row
        lines.append(f"{kind:<11} {str(good) + '/' + str(runs):>7} {row['solo']:>7.1f}"
                     f" {row['last']:>12.1f} {row['first']:>13.1f} {row['ratio']:>9.2f}"
                     f" {row['cpu']:>11.1f}")
    offered = args.size_mib / (args.origin_kib / 1024)
    lines.append(f"(the origin alone needs {offered:.0f} s for the payload; serving N downloaders"
                 f" one copy each would take about {args.count * offered:.0f} s)")
    if "piecework" in rows and "libtorrent" in rows:
        pw, lt = rows["piecework"], rows["libtorrent"]
        against = pw["last"] / lt["last"]
        lines.append(f"piecework fleet last / libtorrent fleet last: {against:.2f}")
        if args.count == 4:
            lines.append(f"floors (N=4): piecework last/solo {pw['ratio']:.2f} <= 1.5:"
                         f" {'met' if pw['ratio'] <= 1.5 else 'MISSED'};"
                         f" against libtorrent {against:.2f} <= 1.1:"
                         f" {'met' if against <= 1.1 else 'MISSED'}")
    return "\n".join(lines)


def bench(args):
    ctypes.CDLL(None).prctl(common.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    folder, path, digest = common.payload(args.cache, args.size_mib)
    work = tempfile.mkdtemp(prefix="pw-fleet-", dir=args.scratch)
    torrent_of = common.cached_torrent(args.cache, path, args.size_mib, args.piece_kib)
    swarm = common.Swarm(work, torrent_of, folder, 1, args.origin_kib)
    kinds = [k for k in ("piecework", "libtorrent") if k in args.clients]
    results = {kind: {"solo": [], "fleet": []} for kind in kinds}
    load = os.getloadavg()
    try:
        for run in range(args.runs):
            lineup = [(kind, shape) for kind in kinds for shape in ("solo", "fleet")]
            if run % 2:
                lineup.reverse()
            for kind, shape in lineup:
                group = run_group(kind, 1 if shape == "solo" else args.count, args,
                                  swarm.torrent, work, path, digest)
                group.update(run=run, shape=shape, load=round(os.getloadavg()[0], 2))
                results[kind][shape].append(group)
                print(json.dumps(group), file=sys.stderr, flush=True)
    finally:
        swarm.stop()
        common.reap_all()
    print(f"fleet: N={args.count}, {args.size_mib} MiB in {args.piece_kib} KiB pieces, one"
          f" libtorrent origin capped at {args.origin_kib / 1024:g} MiB/s, {args.runs} run(s);"
          f" load average at start {load[0]:.2f}")
    print(table(results, args))
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    every = [g for shapes in results.values() for groups in shapes.values() for g in groups]
    return 0 if all(g["ok"] for g in every) else 1


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "lt-peer":
        lt_peer(*sys.argv[2:5])
        return 0
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[1],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--count", type=int, default=4, help="downloaders in the fleet (N)")
    ap.add_argument("--size-mib", type=int, default=128)
    ap.add_argument("--piece-kib", type=int, default=256)
    ap.add_argument("--origin-kib", type=int, default=4096, help="the origin's upload cap, KiB/s")
    ap.add_argument("--runs", type=int, default=1, help="solo and fleet groups per client")
    ap.add_argument("--clients", default="piecework,libtorrent")
    ap.add_argument("--workers", type=int, default=0, help="piecework --workers (default: its own)")
    ap.add_argument("--build", default=os.path.join(common.REPO, "build"),
                    help="build folder holding bin/piecework")
    ap.add_argument("--cache", default=os.environ.get("PW_BENCH_CACHE", "/tmp/pw-bench-cache"))
    ap.add_argument("--scratch", default=None, help="where downloads go (default: /tmp)")
    ap.add_argument("--timeout", type=float, default=600, help="seconds per group")
    ap.add_argument("--keep", action="store_true", help="keep failed downloads and logs")
    ap.add_argument("--wrap", default="", help="prefix for piecework's command")
    args = ap.parse_args()
    args.clients = set(args.clients.split(","))
    args.build = os.path.abspath(args.build)
    return bench(args)


if __name__ == "__main__":
    sys.exit(main())
