#!/usr/bin/python3
"""piecework against libtorrent and aria2 on one local swarm.

A real opentracker and real libtorrent seeders on 127.0.0.1 serve a deterministic payload;
each client downloads it in turn (clients alternate within every round, so a noisy neighbour
hurts all of them alike), every download's bytes are checked, and a table of medians is
printed: MB/s, CPU seconds per GiB of the client's whole process tree, and peak anonymous
resident memory of that tree, each with its ratio to the other clients.

  /usr/bin/python3 bench/run.py                   # scenario 1, 3 runs per client
  /usr/bin/python3 bench/run.py --scenario 2 --runs 2
  /usr/bin/python3 bench/run.py --scenario 4      # piecework --workers 1, 2, 4
  /usr/bin/python3 bench/run.py --scenario 5 --delay-ms 25   # 50 ms round trips

Scenarios: 1 one uncapped seeder, 1 GiB, 1 MiB pieces; 2 sixteen seeders capped at 2 MiB/s
each, 512 MiB; 3 4 GiB in 16 KiB pieces; 4 scenario 1 with piecework's --workers 1, 2, 4;
5 eight seeders capped at 4 MiB/s, each behind a delay of 50 ms each way (--delay-ms sets
another), 512 MiB; 6 forty-eight seeders capped at 512 KiB/s, 512 MiB.

A delayed seeder does not announce itself: a proxy in the seeders' process listens for it,
announces its own port, and holds every chunk it forwards, either way, for the delay (this
kernel has no netem). The proxy buffers what the seeder sends without limit, so the seeder's
cap, not the proxy, paces the bytes: a long fat pipe.
"""
import argparse
import ctypes
import hashlib
import json
import os
import random
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HERE = os.path.dirname(os.path.abspath(__file__))
PR_SET_CHILD_SUBREAPER = 36
MIB = 1 << 20
GIB = 1 << 30

SCENARIOS = {
    1: dict(size_mib=1024, piece_kib=1024, seeders=1, rate_kib=0),
    2: dict(size_mib=512, piece_kib=1024, seeders=16, rate_kib=2048),
    3: dict(size_mib=4096, piece_kib=16, seeders=1, rate_kib=0),
    4: dict(size_mib=1024, piece_kib=1024, seeders=1, rate_kib=0),
    5: dict(size_mib=512, piece_kib=1024, seeders=8, rate_kib=4096, delay_ms=50),
    6: dict(size_mib=512, piece_kib=1024, seeders=48, rate_kib=512),
}


# piecework's discovery beyond the swarm off: a bench's traffic stays on 127.0.0.1.
LOCAL_ONLY = ["--no-dht", "--no-lsd"]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def payload(cache, size_mib):
    """A seeded pseudo-random file, built once and kept in `cache`."""
    folder = os.path.join(cache, f"payload-{size_mib}m")
    path = os.path.join(folder, "payload.bin")
    marker = folder + ".ok"
    if not os.path.exists(marker):
        os.makedirs(folder, exist_ok=True)
        rng = random.Random(size_mib)
        with open(path, "wb") as f:
            for _ in range(size_mib // 4):
                f.write(rng.randbytes(4 * MIB))
            if size_mib % 4:
                f.write(rng.randbytes((size_mib % 4) * MIB))
        with open(marker, "w") as f:
            f.write(sha256_of(path))
    with open(marker) as f:
        return folder, path, f.read().strip()


def sha256_of(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(4 * MIB):
            h.update(chunk)
    return h.hexdigest()


def make_torrent(path, piece_kib, announce, dst):
    if piece_kib >= 32:
        exponent = (piece_kib * 1024).bit_length() - 1
        subprocess.run(["mktorrent", "-l", str(exponent), "-a", announce, "-o", dst, path],
                       check=True, stdout=subprocess.DEVNULL)
        return
    # mktorrent refuses pieces below 32 KiB; libtorrent makes them.
    import libtorrent as lt
    files = lt.file_storage()
    lt.add_files(files, path)
    # v1 only: libtorrent 2 makes hybrid v1+v2 torrents by default.
    torrent = lt.create_torrent(files, piece_kib * 1024, flags=lt.create_torrent.v1_only)
    torrent.add_tracker(announce)
    lt.set_piece_hashes(torrent, os.path.dirname(path))
    with open(dst, "wb") as f:
        f.write(lt.bencode(torrent.generate()))


def cached_torrent(cache, path, size_mib, piece_kib):
    """torrent_of(announce, dst): writes the payload's torrent with that announce URL to dst.
    Hashing 4 GiB takes a while: the pieces are kept in `cache`, only the URL is swapped."""
    torrent_cache = os.path.join(cache, f"torrent-{size_mib}m-{piece_kib}k")
    placeholder = "http://127.0.0.1:1/announce"

    def torrent_of(announce, dst):
        if not os.path.exists(torrent_cache):
            make_torrent(path, piece_kib, placeholder, torrent_cache + ".tmp")
            os.rename(torrent_cache + ".tmp", torrent_cache)
        with open(torrent_cache, "rb") as f:
            body = f.read()

        def bencoded(text):
            return f"{len(text)}:{text}".encode()
        with open(dst, "wb") as f:
            f.write(body.replace(bencoded(placeholder), bencoded(announce), 1))
    return torrent_of


def lt_torrent_info(torrent):
    import libtorrent as lt
    # Scenario 3's .torrent (262,144 piece hashes) is over libtorrent's default 10 MB limit.
    return lt.torrent_info(torrent, {"max_buffer_size": 64 * MIB})


def info_hash(torrent):
    return str(lt_torrent_info(torrent).info_hash())


# --- libtorrent peers (this same file runs them: `run.py lt-seed ...`, `run.py lt-get ...`)

def lt_session(rate_kib):
    import libtorrent as lt
    s = lt.session({
        "listen_interfaces": "127.0.0.1:0",
        "enable_dht": False, "enable_lsd": False, "enable_upnp": False,
        "enable_natpmp": False, "enable_outgoing_utp": False, "enable_incoming_utp": False,
        "allow_multiple_connections_per_ip": True,
        "upload_rate_limit": rate_kib * 1024,
        # The cap counts what the peer protocol carries, not libtorrent's estimate of TCP/IP
        # headers (about 3% more on an assumed 1500-byte MTU): "N seeders x R offered" then
        # means that many bytes a second can reach a client.
        "rate_limit_ip_overhead": False,
        "alert_mask": lt.alert.category_t.error_notification,
    })
    # libtorrent puts loopback peers in an unlimited "local" class; moving every address to
    # the global class makes the upload cap hold on 127.0.0.1 too.
    rules = lt.ip_filter()
    rules.add_rule("0.0.0.0", "255.255.255.255", 1 << lt.session.global_peer_class_id)
    s.set_peer_class_filter(rules)
    return s


def lt_add(s, torrent, folder, seed):
    import libtorrent as lt
    params = lt.add_torrent_params()
    params.ti = lt_torrent_info(torrent)
    params.save_path = folder
    if seed:
        params.flags |= lt.torrent_flags.seed_mode
    return s.add_torrent(params)


def lt_seed(torrent, folder, count, rate_kib, delay_ms=0, tracker_port=0, info_hash_hex=""):
    sessions = [lt_session(rate_kib) for _ in range(count)]
    handles = [lt_add(s, torrent, folder, True) for s in sessions]
    if delay_ms:
        import asyncio
        asyncio.run(delay_proxies([s.listen_port() for s in sessions], delay_ms / 1000,
                                  tracker_port, info_hash_hex))
    while handles:
        time.sleep(1)


async def delay_line(reader, writer, delay):
    """Forwards reader to writer, each chunk `delay` seconds after it was read, in order."""
    import asyncio
    held = asyncio.Queue()

    async def deliver():
        while (item := await held.get()) is not None:
            due, chunk = item
            if (wait := due - time.monotonic()) > 0:
                await asyncio.sleep(wait)
            writer.write(chunk)
            await writer.drain()

    sender = asyncio.create_task(deliver())
    try:
        while chunk := await reader.read(1 << 16):
            await held.put((time.monotonic() + delay, chunk))
    except OSError:
        pass
    await held.put(None)
    try:
        await sender
    except OSError:
        pass
    writer.close()


async def delay_proxies(ports, delay, tracker_port, info_hash_hex):
    """One delaying listener per seeder port, each announced to the tracker as a seed."""
    import asyncio
    import urllib.parse

    def proxy_to(port):
        async def accepted(client_reader, client_writer):
            try:
                seed_reader, seed_writer = await asyncio.open_connection("127.0.0.1", port)
            except OSError:
                client_writer.close()
                return
            await asyncio.gather(delay_line(client_reader, seed_writer, delay),
                                 delay_line(seed_reader, client_writer, delay),
                                 return_exceptions=True)
        return accepted

    servers = [await asyncio.start_server(proxy_to(port), "127.0.0.1", 0) for port in ports]
    quoted = urllib.parse.quote_from_bytes(bytes.fromhex(info_hash_hex))

    def announce_all():
        for server in servers:
            port = server.sockets[0].getsockname()[1]
            query = urllib.parse.urlencode({"peer_id": f"-PD0001-{port:012d}", "port": port,
                                            "uploaded": 0, "downloaded": 0, "left": 0,
                                            "compact": 1, "event": "started"})
            url = f"http://127.0.0.1:{tracker_port}/announce?info_hash={quoted}&{query}"
            try:
                urllib.request.urlopen(url, timeout=5).read()
            except OSError:
                pass
    while True:
        await asyncio.to_thread(announce_all)
        await asyncio.sleep(30)


def lt_get(torrent, folder):
    s = lt_session(0)
    handle = lt_add(s, torrent, folder, False)
    while not handle.status().is_seeding:
        time.sleep(0.05)


# --- measuring a client's process tree

def parent_map():
    parents = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
            parents[int(entry)] = int(stat[stat.rindex(")") + 2:].split()[1])
        except (OSError, ValueError):
            continue
    return parents


def anon_kib(pid):
    """Anonymous and shared-memory pages the process holds, each shared page divided among
    the processes mapping it (Pss): summed over a tree, the arena piecework's stages share is
    counted once, not once per stage. Falls back to RssAnon + RssShmem without smaps_rollup."""
    total = 0
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith(("Pss_Anon:", "Pss_Shmem:")):
                    total += int(line.split()[1])
        return total
    except OSError:
        pass
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(("RssAnon:", "RssShmem:")):
                    total += int(line.split()[1])
    except OSError:
        pass
    return total


class Tree:
    """The client and every process it started, even those in process groups of their own
    (piecework's stages) and orphans re-parented to us (we are a subreaper)."""

    def __init__(self, root):
        self.root = root
        self.members = {root}

    def refresh(self):
        parents = parent_map()
        alive = {pid for pid in self.members if pid in parents}
        grew = True
        while grew:
            grew = False
            for pid, parent in parents.items():
                if pid not in alive and parent in alive:
                    alive.add(pid)
                    grew = True
        self.members = alive
        return self.members

    def anon_kib(self):
        """The tree's total, and each member's share of it by command name."""
        by_name = {}
        for pid in self.refresh():
            try:
                with open(f"/proc/{pid}/comm") as f:
                    name = f.read().strip()
            except OSError:
                continue
            by_name[name] = by_name.get(name, 0) + anon_kib(pid)
        return sum(by_name.values()), by_name

    def sample_cpu(self, seen):
        """Records each member's CPU seconds so far under its command name (the last sample
        before a process exits is what counts: a per-stage breakdown, approximate)."""
        tick = os.sysconf("SC_CLK_TCK")
        for pid in self.members:
            try:
                with open(f"/proc/{pid}/stat") as f:
                    stat = f.read()
            except OSError:
                continue
            name = stat[stat.index("(") + 1:stat.rindex(")")]
            fields = stat[stat.rindex(")") + 2:].split()
            seen[pid] = (name, (int(fields[11]) + int(fields[12])) / tick)

    def kill(self):
        for pid in self.refresh():
            for kill in (lambda: os.killpg(os.getpgid(pid), signal.SIGKILL),
                         lambda: os.kill(pid, signal.SIGKILL)):
                try:
                    kill()
                except (ProcessLookupError, PermissionError):
                    pass


def reap_all():
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def run_client(command, out, timeout):
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.monotonic()
    with open(os.path.join(out, ".client.log"), "w") as log:
        proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True, cwd=out)
    tree = Tree(proc.pid)
    peak, peak_by_name, status, per_pid = 0, {}, "timeout", {}
    while time.monotonic() - started < timeout:
        total, by_name = tree.anon_kib()
        if total > peak:
            peak, peak_by_name = total, by_name
        tree.sample_cpu(per_pid)
        if proc.poll() is not None:
            status = f"exit {proc.returncode}"
            break
        time.sleep(0.1)
    wall = time.monotonic() - started
    tree.kill()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        pass
    # Orphaned stages come back to us as the subreaper: wait for them so their CPU counts.
    deadline = time.monotonic() + 5
    while tree.refresh() - {proc.pid} and time.monotonic() < deadline:
        reap_all()
        time.sleep(0.05)
    reap_all()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    stages = {}
    for name, seconds in per_pid.values():
        stages[name] = round(stages.get(name, 0) + seconds, 2)
    peak_mib_by_process = {name: round(kib / 1024, 1) for name, kib in peak_by_name.items()}
    return status, wall, cpu, peak / 1024, stages, peak_mib_by_process


# --- the swarm

class Swarm:
    def __init__(self, work, torrent_of, folder, seeders, rate_kib, delay_ms=0):
        self.procs = []
        self.port = free_port()
        self.torrent = os.path.join(work, "bench.torrent")
        torrent_of(f"http://127.0.0.1:{self.port}/announce", self.torrent)
        # Debian's opentracker serves whitelisted info-hashes only, and reads the list after
        # dropping to user nobody.
        with open(os.path.join(work, "whitelist"), "w") as f:
            f.write(info_hash(self.torrent) + "\n")
        os.chmod(work, 0o755)
        os.chmod(os.path.join(work, "whitelist"), 0o644)
        self._start(["opentracker", "-i", "127.0.0.1", "-p", str(self.port), "-P",
                     str(self.port), "-A", "127.0.0.1", "-d", work, "-w", "whitelist"],
                    os.path.join(work, "tracker.log"), work)
        seed_torrent, delay_args = self.torrent, []
        if delay_ms:
            # The seeders themselves must not be found: only their delaying proxies.
            seed_torrent = os.path.join(work, "silent.torrent")
            torrent_of("http://127.0.0.1:1/announce", seed_torrent)
            delay_args = ["--delay-ms", str(delay_ms), "--tracker-port", str(self.port),
                          "--info-hash", info_hash(self.torrent)]
        self._start([sys.executable, os.path.abspath(__file__), "lt-seed", seed_torrent, folder,
                     "--count", str(seeders), "--rate-kib", str(rate_kib)] + delay_args,
                    os.path.join(work, "seeders.log"), work)
        if not self._wait_announced(seeders):
            self.stop()
            raise SystemExit(f"seeders never announced; see {work}")

    def _start(self, cmd, log_path, cwd):
        with open(log_path, "w") as log:
            self.procs.append(subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                                               start_new_session=True, cwd=cwd))

    def _wait_announced(self, want):
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                url = f"http://127.0.0.1:{self.port}/stats?mode=peer"
                with urllib.request.urlopen(url, timeout=1) as reply:
                    first = reply.read().decode(errors="replace").split("\n")[0].strip()
                if first.isdigit() and int(first) >= want:
                    return True
            except OSError:
                pass
            time.sleep(0.3)
        return False

    def stop(self):
        for proc in self.procs:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        for proc in self.procs:
            proc.wait()


def clients(args, torrent, out):
    piecework = os.path.join(args.build, "bin", "piecework")
    pw = args.wrap.split() + [piecework, "download", torrent, "-o", out, "--quiet"] + LOCAL_ONLY
    if args.scenario == 4:
        found = [(f"piecework-w{n}", pw + ["--workers", str(n)]) for n in (1, 2, 4)]
    else:
        found = [("piecework", pw)]
    if args.scenario != 4 or args.with_others:
        found += [("libtorrent", [sys.executable, os.path.abspath(__file__), "lt-get", torrent,
                                  out]),
                  ("aria2", ["aria2c", "--seed-time=0", "-d", out, "--enable-dht=false",
                             "--bt-enable-lpd=false", "--enable-peer-exchange=false",
                             "--summary-interval=0", "--file-allocation=none",
                             "--console-log-level=warn", torrent])]
    return [(name, cmd) for name, cmd in found if name.split("-")[0] in args.clients]


def table(results, size_mib):
    names = list(results)
    rows = {}
    for name in names:
        runs = results[name]
        good = [r for r in runs if r["ok"]]
        if not good:
            rows[name] = None
            continue
        rows[name] = dict(
            mbps=statistics.median(size_mib * MIB / 1e6 / r["wall"] for r in good),
            cpu=statistics.median(r["cpu"] / (size_mib * MIB / GIB) for r in good),
            mem=statistics.median(r["peak_mib"] for r in good),
            peak=max(r["peak_mib"] for r in good),
            ok=f"{len(good)}/{len(runs)}")
    lines = [f"{'client':<14} {'runs ok':>7} {'MB/s':>8} {'CPU s/GiB':>10} {'anon MiB':>9}"
             f" {'(max)':>7}"]
    for name in names:
        row = rows[name]
        if row is None:
            lines.append(f"{name:<14} {'0/' + str(len(results[name])):>7}  no good run")
            continue
        lines.append(f"{name:<14} {row['ok']:>7} {row['mbps']:>8.1f} {row['cpu']:>10.2f}"
                     f" {row['mem']:>9.1f} {row['peak']:>7.1f}")
    good_names = [n for n in names if rows[n]]
    if len(good_names) > 1:
        lines.append("")
        lines.append("ratios (row / column): MB/s, CPU s/GiB, anon MiB")
        for a in good_names:
            for b in good_names:
                if a == b:
                    continue
                ra, rb = rows[a], rows[b]
                lines.append(f"  {a:>14} / {b:<14} {ra['mbps'] / rb['mbps']:6.2f}"
                             f" {ra['cpu'] / max(rb['cpu'], 1e-9):6.2f}"
                             f" {ra['mem'] / max(rb['mem'], 1e-9):6.2f}")
    return "\n".join(lines)


def bench(args):
    ctypes.CDLL(None).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    setup = SCENARIOS[args.scenario]
    size_mib = args.size_mib or setup["size_mib"]
    folder, path, digest = payload(args.cache, size_mib)
    work = tempfile.mkdtemp(prefix="pw-bench-", dir=args.scratch)
    piece_kib = setup["piece_kib"]
    torrent_of = cached_torrent(args.cache, path, size_mib, piece_kib)
    delay_ms = args.delay_ms if args.delay_ms is not None else setup.get("delay_ms", 0)
    swarm = Swarm(work, torrent_of, folder, setup["seeders"], setup["rate_kib"], delay_ms)
    results = {}
    try:
        if args.warmup:
            # libtorrent seeders in seed mode check each piece the first time they send it:
            # unwarmed, whichever client goes first pays for that hashing on our two cores.
            out = tempfile.mkdtemp(prefix="warmup-", dir=work)
            run_client([sys.executable, os.path.abspath(__file__), "lt-get", swarm.torrent, out],
                       out, args.timeout)
            shutil.rmtree(out, ignore_errors=True)
        lineup = clients(args, swarm.torrent, "{out}")
        for name, _ in lineup:
            results[name] = []
        for run in range(args.runs):
            order = lineup if run % 2 == 0 else list(reversed(lineup))
            for name, template in order:
                out = tempfile.mkdtemp(prefix=f"{name}-", dir=work)
                cmd = [part.replace("{out}", out) for part in template]
                status, wall, cpu, peak, stages, peak_by_process = run_client(
                    cmd, out, args.timeout)
                target = os.path.join(out, os.path.basename(path))
                ok = (status == "exit 0" and os.path.exists(target)
                      and sha256_of(target) == digest)
                record = dict(client=name, run=run, status=status, ok=ok, wall=round(wall, 2),
                              cpu=round(cpu, 2), peak_mib=round(peak, 1),
                              mbps=round(size_mib * MIB / 1e6 / wall, 1) if ok else 0,
                              cpu_by_process=stages, peak_mib_by_process=peak_by_process)
                results[name].append(record)
                print(json.dumps(record), file=sys.stderr, flush=True)
                if ok or not args.keep:
                    shutil.rmtree(out, ignore_errors=True)
                # The page cache of one client's output must not slow the next one down.
                subprocess.run(["sync"])
    finally:
        swarm.stop()
        reap_all()
    print(f"scenario {args.scenario}: {size_mib} MiB, {piece_kib} KiB pieces,"
          f" {setup['seeders']} seeder(s)"
          + (f" capped at {setup['rate_kib']} KiB/s each" if setup["rate_kib"] else "")
          + (f", {delay_ms:g} ms each way" if delay_ms else ""))
    print(table(results, size_mib))
    if setup["rate_kib"]:
        offered = setup["seeders"] * setup["rate_kib"] * 1024 / 1e6
        for name, runs in results.items():
            good = [size_mib * MIB / 1e6 / r["wall"] for r in runs if r["ok"]]
            if good:
                print(f"  {name}: {100 * statistics.median(good) / offered:.0f}% of the"
                      f" {offered:.1f} MB/s offered (median; worst run"
                      f" {100 * min(good) / offered:.0f}%)")
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    return 0 if all(r["ok"] for runs in results.values() for r in runs) else 1


def main():
    if len(sys.argv) > 1 and sys.argv[1] in ("lt-seed", "lt-get"):
        ap = argparse.ArgumentParser()
        ap.add_argument("mode")
        ap.add_argument("torrent")
        ap.add_argument("folder")
        ap.add_argument("--count", type=int, default=1)
        ap.add_argument("--rate-kib", type=int, default=0)
        ap.add_argument("--delay-ms", type=float, default=0)
        ap.add_argument("--tracker-port", type=int, default=0)
        ap.add_argument("--info-hash", default="")
        a = ap.parse_args()
        if a.mode == "lt-seed":
            lt_seed(a.torrent, a.folder, a.count, a.rate_kib, a.delay_ms, a.tracker_port,
                    a.info_hash)
        else:
            lt_get(a.torrent, a.folder)
        return 0
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[1],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scenario", type=int, choices=sorted(SCENARIOS), default=1)
    ap.add_argument("--runs", type=int, default=3, help="downloads per client")
    ap.add_argument("--clients", default="piecework,libtorrent,aria2",
                    help="comma-separated subset of piecework,libtorrent,aria2")
    ap.add_argument("--with-others", action="store_true",
                    help="scenario 4: also run libtorrent and aria2")
    ap.add_argument("--size-mib", type=int, default=0, help="override the scenario's size")
    ap.add_argument("--delay-ms", type=float, default=None,
                    help="one-way delay between the client and each seeder (scenario 5: 50)")
    ap.add_argument("--build", default=os.path.join(REPO, "build"),
                    help="build folder holding bin/piecework")
    ap.add_argument("--cache", default=os.environ.get("PW_BENCH_CACHE", "/tmp/pw-bench-cache"),
                    help="where payloads and torrents are kept between runs")
    ap.add_argument("--scratch", default=None, help="where downloads go (default: /tmp)")
    ap.add_argument("--timeout", type=float, default=600, help="seconds per download")
    ap.add_argument("--keep", action="store_true", help="keep failed downloads and logs")
    ap.add_argument("--no-warmup", dest="warmup", action="store_false",
                    help="skip the unmeasured download that has the seeders check their pieces")
    ap.add_argument("--wrap", default="",
                    help="prefix for piecework's command, e.g. 'perf record -e cpu-clock -g -o F --'")
    args = ap.parse_args()
    args.clients = set(args.clients.split(","))
    args.build = os.path.abspath(args.build)
    return bench(args)


if __name__ == "__main__":
    sys.exit(main())
