#!/usr/bin/python3
"""A libtorrent leecher downloading from a piecework seed and from a libtorrent seed.

Both seeds serve the same deterministic payload (bench/run.py's, cached) from the same folder
on 127.0.0.1 and stay up for the whole run: `piecework seed` (which checks the files first) and
a libtorrent session (which checks them too, so neither hashes pieces while it serves). One
libtorrent leecher at a time, told only the seed's address, downloads the payload; seeds take
turns within every round, so a noisy neighbour hurts both alike, and every download's bytes
are checked. Measured over each transfer: MB/s (the leecher's time from adding the torrent
to having every piece), CPU seconds per GiB of the seeding side (utime + stime from /proc of
every process of its tree: piecework's front end and every stage), and its memory, sampled
every 0.1 s: anonymous and shared-memory pages (Pss_Anon + Pss_Shmem, as bench/run.py counts
them) idle before the transfer and at its peak, and the peak of all its proportional resident
set (Pss, which also counts file pages a seed maps, as libtorrent maps its files).

  /usr/bin/python3 bench/seeding.py                        # 1 GiB, 1 MiB pieces, 2 rounds
  /usr/bin/python3 bench/seeding.py --size-mib 256 --runs 1 --workers 2

Prints one JSON line per transfer on stderr and a table of medians; exits 1 when a transfer
failed. Floors (issue 14): piecework's MB/s at least libtorrent's, its CPU per GiB at most
libtorrent's, memory flat.
"""
import argparse
import ctypes
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import run as common  # noqa: E402  bench/run.py: payload, torrents, process trees

MIB = common.MIB
GIB = common.GIB
# No tracker: the leecher is told the seed's address; the announce URL goes nowhere.
NOWHERE = "http://127.0.0.1:1/announce"


# --- libtorrent sides (this same file runs them: `seeding.py lt-seed ...`, `lt-leech ...`)

def lt_seed(torrent, folder, port_file):
    """Checks the files (no seed_mode: it would hash each piece on its first request, in the
    middle of the measurement), then says its port and seeds until killed."""
    s = common.lt_session(0)
    handle = common.lt_add(s, torrent, folder, False)
    while not handle.status().is_seeding:
        time.sleep(0.1)
    with open(port_file + ".tmp", "w") as f:
        f.write(str(s.listen_port()))
    os.replace(port_file + ".tmp", port_file)
    while True:
        time.sleep(1)


def lt_leech(torrent, out, port, result_file):
    s = common.lt_session(0)
    started = time.monotonic()
    handle = common.lt_add(s, torrent, out, False)
    next_connect = 0.0
    while not handle.status().is_seeding:
        now = time.monotonic()
        if now >= next_connect and handle.status().num_peers == 0:
            handle.connect_peer(("127.0.0.1", int(port)))
            next_connect = now + 1
        time.sleep(0.02)
    seconds = time.monotonic() - started
    with open(result_file, "w") as f:
        json.dump(dict(seconds=seconds), f)


# --- the seeding side's process tree

def pss_kib(pid):
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


class Seed:
    def __init__(self, name, cmd, log, ready):
        self.name = name
        with open(log, "w") as out:
            self.proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT,
                                         start_new_session=True)
        self.tree = common.Tree(self.proc.pid)
        self.log = log
        self.ready = ready  # returns the port once the seed serves, else None
        self.port = None

    def wait_ready(self, timeout):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.proc.poll() is None:
            self.port = self.ready()
            if self.port:
                return True
            time.sleep(0.2)
        return False

    def cpu(self):
        """{pid: (command name, CPU seconds so far)} over the tree."""
        seen = {}
        self.tree.refresh()
        self.tree.sample_cpu(seen)
        return seen

    def memory(self):
        anon, _ = self.tree.anon_kib()
        return anon, sum(pss_kib(pid) for pid in self.tree.members)

    def stop(self):
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(timeout=15)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            pass
        self.tree.kill()


def transfer(seed, args, torrent, work, path, digest, size_mib):
    out = tempfile.mkdtemp(prefix=f"leech-{seed.name}-", dir=work)
    result_file = os.path.join(out, ".result")
    anon_idle, _ = seed.memory()
    cpu_before = seed.cpu()
    started = time.monotonic()
    with open(os.path.join(work, f"leech-{seed.name}.log"), "a") as log:
        leecher = subprocess.Popen([sys.executable, os.path.abspath(__file__), "lt-leech",
                                    torrent, out, str(seed.port), result_file],
                                   stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    peak_anon, peak_pss, status = 0, 0, "timeout"
    while time.monotonic() - started < args.timeout:
        anon, pss = seed.memory()
        peak_anon, peak_pss = max(peak_anon, anon), max(peak_pss, pss)
        if leecher.poll() is not None:
            status = f"exit {leecher.returncode}"
            break
        time.sleep(0.1)
    cpu_after = seed.cpu()
    if leecher.poll() is None:
        os.killpg(leecher.pid, signal.SIGKILL)
        leecher.wait()
    by_process = {}
    for pid, (name, after) in cpu_after.items():
        spent = after - cpu_before.get(pid, (name, 0))[1]
        by_process[name] = round(by_process.get(name, 0) + spent, 2)
    cpu = sum(by_process.values())
    target = os.path.join(out, os.path.basename(path))
    ok = (status == "exit 0" and os.path.exists(result_file) and os.path.exists(target)
          and common.sha256_of(target) == digest)
    seconds = 0
    if ok:
        with open(result_file) as f:
            seconds = json.load(f)["seconds"]
    shutil.rmtree(out, ignore_errors=True)
    # The leecher's dirty pages must not slow the next transfer down.
    subprocess.run(["sync"])
    gib = size_mib * MIB / GIB
    return dict(seed=seed.name, ok=ok, status=status, seconds=round(seconds, 2),
                mbps=round(size_mib * MIB / 1e6 / seconds, 1) if ok else 0,
                cpu=round(cpu, 2), cpu_per_gib=round(cpu / gib, 2),
                anon_idle_mib=round(anon_idle / 1024, 1), anon_peak_mib=round(peak_anon / 1024, 1),
                pss_peak_mib=round(peak_pss / 1024, 1), load=round(os.getloadavg()[0], 2),
                cpu_by_process=by_process)


def table(results):
    lines = [f"{'seed':<11} {'runs ok':>7} {'MB/s':>7} {'CPU s/GiB':>9} {'anon idle':>9}"
             f" {'anon peak':>9} {'Pss peak':>9}  (MiB)"]
    rows = {}
    for name, runs in results.items():
        good = [r for r in runs if r["ok"]]
        if not good:
            lines.append(f"{name:<11} {'0/' + str(len(runs)):>7}  no good run")
            continue
        row = dict(mbps=statistics.median(r["mbps"] for r in good),
                   cpu=statistics.median(r["cpu_per_gib"] for r in good),
                   idle=statistics.median(r["anon_idle_mib"] for r in good),
                   peak=max(r["anon_peak_mib"] for r in good),
                   pss=max(r["pss_peak_mib"] for r in good))
        rows[name] = row
        lines.append(f"{name:<11} {str(len(good)) + '/' + str(len(runs)):>7} {row['mbps']:>7.1f}"
                     f" {row['cpu']:>9.2f} {row['idle']:>9.1f} {row['peak']:>9.1f}"
                     f" {row['pss']:>9.1f}")
    if "piecework" in rows and "libtorrent" in rows:
        pw, lt = rows["piecework"], rows["libtorrent"]
        mbps, cpu = pw["mbps"] / lt["mbps"], pw["cpu"] / max(lt["cpu"], 1e-9)
        lines.append(f"piecework / libtorrent: MB/s {mbps:.2f} (floor >= 1: "
                     f"{'met' if mbps >= 1 else 'MISSED'}), CPU s/GiB {cpu:.2f} (floor <= 1: "
                     f"{'met' if cpu <= 1 else 'MISSED'})")
    return "\n".join(lines)


def bench(args):
    ctypes.CDLL(None).prctl(common.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    folder, path, digest = common.payload(args.cache, args.size_mib)
    work = tempfile.mkdtemp(prefix="pw-seeding-", dir=args.scratch)
    torrent = os.path.join(work, "bench.torrent")
    common.cached_torrent(args.cache, path, args.size_mib, args.piece_kib)(NOWHERE, torrent)
    pieces = common.lt_torrent_info(torrent).num_pieces()
    load = os.getloadavg()

    pw_port = common.free_port()
    pw_log = os.path.join(work, "piecework-seed.log")
    pw_cmd = args.wrap.split() + [
        os.path.join(args.build, "bin", "piecework"), "seed", torrent, folder,
        "--listen-port", str(pw_port), "--log-level", "info", "--quiet",
        "--state-dir", os.path.join(work, "pw-state")] + common.LOCAL_ONLY
    if args.workers:
        pw_cmd += ["--workers", str(args.workers)]

    def pw_ready():
        with open(pw_log, errors="replace") as f:
            # The writer's check of the files is over and found every piece.
            return pw_port if f"{pieces} of {pieces} pieces on disk" in f.read() else None

    lt_port_file = os.path.join(work, "lt-seed.port")

    def lt_ready():
        if not os.path.exists(lt_port_file):
            return None
        with open(lt_port_file) as f:
            return int(f.read())

    seeds = []
    results = {}
    try:
        for name in ("piecework", "libtorrent"):
            if name not in args.clients:
                continue
            if name == "piecework":
                seed = Seed(name, pw_cmd, pw_log, pw_ready)
            else:
                seed = Seed(name, [sys.executable, os.path.abspath(__file__), "lt-seed",
                                   torrent, folder, lt_port_file],
                            os.path.join(work, "libtorrent-seed.log"), lt_ready)
            seeds.append(seed)
            if not seed.wait_ready(300):
                raise SystemExit(f"the {name} seed never got ready; see {seed.log}")
            results[name] = []
        for run in range(args.runs):
            for seed in seeds if run % 2 == 0 else list(reversed(seeds)):
                record = transfer(seed, args, torrent, work, path, digest, args.size_mib)
                record["run"] = run
                results[seed.name].append(record)
                print(json.dumps(record), file=sys.stderr, flush=True)
    finally:
        for seed in seeds:
            seed.stop()
        common.reap_all()
    print(f"seeding: {args.size_mib} MiB in {args.piece_kib} KiB pieces to one libtorrent"
          f" leecher, {args.runs} run(s) per seed; load average at start {load[0]:.2f}")
    print(table(results))
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    return 0 if all(r["ok"] for runs in results.values() for r in runs) else 1


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "lt-seed":
        lt_seed(*sys.argv[2:5])
        return 0
    if len(sys.argv) > 1 and sys.argv[1] == "lt-leech":
        lt_leech(*sys.argv[2:6])
        return 0
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[1],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size-mib", type=int, default=1024)
    ap.add_argument("--piece-kib", type=int, default=1024)
    ap.add_argument("--runs", type=int, default=2, help="transfers per seed")
    ap.add_argument("--clients", default="piecework,libtorrent",
                    help="which seeds: piecework,libtorrent")
    ap.add_argument("--workers", type=int, default=0, help="piecework --workers (default: its own)")
    ap.add_argument("--build", default=os.path.join(common.REPO, "build"),
                    help="build folder holding bin/piecework")
    ap.add_argument("--cache", default=os.environ.get("PW_BENCH_CACHE", "/tmp/pw-bench-cache"))
    ap.add_argument("--scratch", default=None, help="where downloads go (default: /tmp)")
    ap.add_argument("--timeout", type=float, default=600, help="seconds per transfer")
    ap.add_argument("--keep", action="store_true", help="keep the work folder and its logs")
    ap.add_argument("--wrap", default="", help="prefix for piecework's command, e.g. 'perf record -g -o F --'")
    args = ap.parse_args()
    args.clients = set(args.clients.split(","))
    args.build = os.path.abspath(args.build)
    return bench(args)


if __name__ == "__main__":
    sys.exit(main())
