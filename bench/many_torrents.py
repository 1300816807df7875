#!/usr/bin/python3
"""Many small torrents in one `piecework daemon`: time, CPU and memory, busy and idle.

A real opentracker (whitelisting every info-hash) and one libtorrent session seeding N small
deterministic torrents on 127.0.0.1; one daemon, driven over the Transmission RPC, is given
all N one by one and must complete every one of them byte for byte. Measured over the
daemon's whole process tree (the front end and every stage; the bench is a subreaper):

- idle with 0 torrents, before any is added: CPU % of one core and anonymous memory;
- the adds (RPC time each), the wall time until all are 100%, the CPU seconds spent
  meanwhile and the peak anonymous memory (Pss_Anon + Pss_Shmem, as bench/run.py counts it);
- idle with all N complete (the libtorrent seeder stays), then with all N stopped: CPU % of
  one core per process and the context switches per second of each (what wakes up), and
  memory; memory per idle torrent = (idle memory with N - idle memory with 0) / N, as
  anonymous pages and as RSS summed over the tree;
- then libtorrent as the client: the same N torrents in one session (one process), measured
  the same way, and a side-by-side table (--no-libtorrent skips it).

  /usr/bin/python3 bench/many_torrents.py                  # 200 torrents, --workers 1
  /usr/bin/python3 bench/many_torrents.py --count 50 --idle-seconds 10 --workers 2

Prints a table and one JSON line with every number; exits 1 when a torrent did not complete
byte for byte or the idle daemon used 1% of a core or more.
"""
import argparse
import base64
import ctypes
import http.client
import json
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import run as common  # noqa: E402  bench/run.py: ports, payload hashing, process trees

KIB = 1024
MIB = common.MIB
GIB = common.GIB
# Payload i: 256 KiB to 2 MiB, every third a folder of 2-5 files, piece sizes in turn.
PIECE_KIB = (16, 32, 64, 128, 256)
CACHE_VERSION = 1


# --- payloads and torrents

def item_spec(index):
    rng = random.Random(f"pw-many-{CACHE_VERSION}-{index}")
    size = rng.randrange(256 * KIB, 2 * MIB + 1)
    files = rng.randrange(2, 6) if index % 3 == 2 else 1
    return rng, size, files, PIECE_KIB[index % len(PIECE_KIB)]


def make_item(root, index):
    """The content of torrent `index` below `root` (kept between runs): m0007.bin, or a
    folder m0008/ of files, some in a subfolder. Returns its name."""
    rng, size, files, _ = item_spec(index)
    name = f"m{index:04d}" + (".bin" if files == 1 else "")
    marker = os.path.join(root, f".{name}.ok")
    if os.path.exists(marker):
        return name
    path = os.path.join(root, name)
    shutil.rmtree(path, ignore_errors=True)
    if files == 1:
        sizes, paths = [size], [path]
    else:
        cuts = sorted(rng.sample(range(1, size), files - 1))
        sizes = [b - a for a, b in zip([0] + cuts, cuts + [size])]
        paths = [os.path.join(path, *(["sub"] if i % 2 else []), f"f{i}.dat")
                 for i in range(files)]
    for file_path, file_size in zip(paths, sizes):
        os.makedirs(os.path.dirname(file_path), exist_ok=True)
        with open(file_path, "wb") as f:
            f.write(rng.randbytes(file_size))
    open(marker, "w").close()
    return name


def files_below(path):
    if os.path.isfile(path):
        return {"": path}
    found = {}
    for folder, _, names in os.walk(path):
        for name in names:
            full = os.path.join(folder, name)
            found[os.path.relpath(full, path)] = full
    return found


def same_bytes(a, b):
    with open(a, "rb") as fa, open(b, "rb") as fb:
        while True:
            x, y = fa.read(4 * MIB), fb.read(4 * MIB)
            if x != y:
                return False
            if not x:
                return True


def same_tree(source, copy):
    """Every file of the source, with the same bytes, and nothing else."""
    if not os.path.exists(copy):
        return "missing"
    want, got = files_below(source), files_below(copy)
    if set(want) != set(got):
        return f"files differ: {sorted(set(want) ^ set(got))[:3]}"
    for rel, path in want.items():
        if not same_bytes(path, got[rel]):
            return f"bytes differ in {rel or os.path.basename(copy)}"
    return ""


# --- the swarm: one opentracker, one libtorrent session seeding every torrent

def lt_seed_many(listing, folder):
    """`many_torrents.py lt-seed-many LISTING FOLDER`: one libtorrent session (one port, one
    process) seeds every .torrent named in LISTING from FOLDER; prints READY once all seed."""
    import libtorrent as lt
    s = lt.session({
        "listen_interfaces": "127.0.0.1:0",
        "enable_dht": False, "enable_lsd": False, "enable_upnp": False,
        "enable_natpmp": False, "enable_outgoing_utp": False, "enable_incoming_utp": False,
        "allow_multiple_connections_per_ip": True,
        # One connection per torrent from the daemon: every one of them may be unchoked at
        # once (libtorrent's default is 8 slots, rotating every 15 s).
        "unchoke_slots_limit": -1,
        "connections_limit": 4000,
        "alert_mask": lt.alert.category_t.error_notification,
    })
    with open(listing) as f:
        torrents = [line.strip() for line in f if line.strip()]
    handles = []
    for torrent in torrents:
        params = lt.add_torrent_params()
        params.ti = lt.torrent_info(torrent)
        params.save_path = folder
        params.flags |= lt.torrent_flags.seed_mode
        # Not auto-managed: libtorrent would seed only active_seeds (5) of them at a time.
        params.flags &= ~lt.torrent_flags.auto_managed
        params.flags &= ~lt.torrent_flags.paused
        handles.append(s.add_torrent(params))
    while not all(h.status().is_seeding for h in handles):
        time.sleep(0.2)
    print(f"READY {s.listen_port()} {len(handles)}", flush=True)
    while True:
        for alert in s.pop_alerts():
            print(f"alert {type(alert).__name__}: {alert.message()}", flush=True)
        time.sleep(1)


def lt_get_many(listing, folder):
    """`many_torrents.py lt-get-many LISTING FOLDER`: libtorrent as the client to compare with.
    One session; prints STARTED, waits for a line on stdin, then adds every torrent of LISTING
    (not auto-managed, so all download at once, as the daemon's do), prints DONE once all of
    them seed, and stays (seeding, idle) until killed."""
    import libtorrent as lt
    s = lt.session({
        "listen_interfaces": "127.0.0.1:0",
        "enable_dht": False, "enable_lsd": False, "enable_upnp": False,
        "enable_natpmp": False, "enable_outgoing_utp": False, "enable_incoming_utp": False,
        "allow_multiple_connections_per_ip": True,
        "alert_mask": lt.alert.category_t.error_notification,
    })
    with open(listing) as f:
        torrents = [line.strip() for line in f if line.strip()]
    print("STARTED", flush=True)
    sys.stdin.readline()
    handles = []
    for torrent in torrents:
        params = lt.add_torrent_params()
        params.ti = lt.torrent_info(torrent)
        params.save_path = folder
        params.flags &= ~lt.torrent_flags.auto_managed
        params.flags &= ~lt.torrent_flags.paused
        handles.append(s.add_torrent(params))
    while not all(h.status().is_seeding for h in handles):
        s.pop_alerts()
        time.sleep(0.2)
    print("DONE", flush=True)
    while True:
        s.pop_alerts()
        time.sleep(1)


def libtorrent_client(args, torrents, folder, names, work):
    """The same N torrents in one libtorrent session: its memory before and after, the time
    to all complete and its CPU while idle, measured as the daemon's are."""
    downloads = os.path.join(work, "lt-downloads")
    os.makedirs(downloads, exist_ok=True)
    listing = os.path.join(work, "torrents.list")
    log = open(os.path.join(work, "lt-client.log"), "w")
    proc = subprocess.Popen([sys.executable, os.path.abspath(__file__), "lt-get-many", listing,
                             downloads], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=log, text=True, start_new_session=True)
    tree = common.Tree(proc.pid)
    try:
        if proc.stdout.readline().strip() != "STARTED":
            raise SystemExit("the libtorrent client did not start; see lt-client.log")
        time.sleep(args.settle_seconds)
        idle0 = idle_window(tree, args.idle_seconds, "libtorrent, 0 torrents")
        started = time.monotonic()
        before = snapshot(tree)
        proc.stdin.write("go\n")
        proc.stdin.flush()
        line = proc.stdout.readline().strip()
        wall = time.monotonic() - started
        cpu = sum(c - before.get(pid, (None, 0.0))[1] for pid, (_, c, _) in snapshot(tree).items())
        if line != "DONE":
            raise SystemExit(f"the libtorrent client ended without completing: {line!r}")
        bad = sum(1 for name in names
                  if same_tree(os.path.join(folder, name), os.path.join(downloads, name)))
        time.sleep(args.settle_seconds)
        idle_n = idle_window(tree, args.idle_seconds, f"libtorrent, {len(names)} complete")
        return dict(wall_seconds=round(wall, 2), cpu_seconds=round(cpu, 2),
                    byte_identical=len(names) - bad, idle_0=idle0, idle_complete=idle_n)
    finally:
        tree.kill()
        proc.wait()
        log.close()


class Swarm:
    def __init__(self, work, folder, torrents, hashes):
        self.procs = []
        self.work = work
        self.port = None
        with open(os.path.join(work, "whitelist"), "w") as f:
            f.write("".join(h + "\n" for h in hashes))
        # Debian's opentracker reads the whitelist after dropping to nobody and chrooting.
        os.chmod(work, 0o755)
        os.chmod(os.path.join(work, "whitelist"), 0o644)
        listing = os.path.join(work, "torrents.list")
        with open(listing, "w") as f:
            f.write("".join(t + "\n" for t in torrents))
        self.listing = listing
        self.folder = folder

    def start_tracker(self, port):
        self.port = port
        self._start(["opentracker", "-i", "127.0.0.1", "-p", str(port), "-P", str(port),
                     "-A", "127.0.0.1", "-d", self.work, "-w", "whitelist"], "tracker.log")

    def start_seeder(self, want, timeout=180):
        log = self._start([sys.executable, os.path.abspath(__file__), "lt-seed-many",
                           self.listing, self.folder], "seeder.log")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with open(log) as f:
                if f.read().startswith("READY"):
                    break
            if self.procs[-1].poll() is not None:
                raise SystemExit(f"the libtorrent seeder exited; see {log}")
            time.sleep(0.3)
        else:
            raise SystemExit(f"the libtorrent seeder never got ready; see {log}")
        # Every torrent announced: opentracker's peer count reaches N.
        while time.monotonic() < deadline:
            if self.peers() >= want:
                return
            time.sleep(0.3)
        raise SystemExit(f"only {self.peers()} of {want} seeders announced; see {self.work}")

    def peers(self):
        try:
            url = f"http://127.0.0.1:{self.port}/stats?mode=peer"
            with urllib.request.urlopen(url, timeout=2) as reply:
                first = reply.read().decode(errors="replace").split("\n")[0].strip()
            return int(first) if first.isdigit() else 0
        except OSError:
            return 0

    def _start(self, cmd, log_name):
        path = os.path.join(self.work, log_name)
        with open(path, "w") as log:
            self.procs.append(subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                                               start_new_session=True, cwd=self.work))
        return path

    def stop(self):
        for proc in self.procs:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        for proc in self.procs:
            proc.wait()


# --- the RPC

class Rpc:
    def __init__(self, port):
        self.port = port
        self.session_id = ""
        self.conn = None

    def call(self, method, arguments=None, timeout=30):
        body = json.dumps({"method": method, "arguments": arguments or {}}).encode()
        for _ in range(4):
            if self.conn is None:
                self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
            try:
                self.conn.request("POST", "/transmission/rpc", body,
                                  {"X-Transmission-Session-Id": self.session_id,
                                   "Content-Type": "application/json"})
                reply = self.conn.getresponse()
                data = reply.read()
            except (OSError, http.client.HTTPException):
                self.conn.close()
                self.conn = None
                time.sleep(0.2)
                continue
            if reply.status == 409:
                self.session_id = reply.getheader("X-Transmission-Session-Id", "")
                continue
            if reply.status != 200:
                raise RuntimeError(f"{method}: HTTP {reply.status}: {data[:200]!r}")
            answer = json.loads(data)
            if answer.get("result") != "success":
                raise RuntimeError(f"{method}: {answer.get('result')}")
            return answer.get("arguments", {})
        raise RuntimeError(f"{method}: no answer from the RPC on port {self.port}")

    def wait_ready(self, daemon, timeout=60):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if daemon.poll() is not None:
                raise SystemExit(f"the daemon exited ({daemon.returncode}) before its RPC answered")
            try:
                self.call("session-get", timeout=2)
                return
            except (RuntimeError, OSError):
                time.sleep(0.2)
        raise SystemExit("the daemon's RPC never answered")


# --- measuring the daemon's tree

def task_switches(pid):
    """Context switches (voluntary + not) so far, per thread name, over the process's threads:
    each voluntary one is a sleep that ended, i.e. a wake-up."""
    found = {}
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return found
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/status") as f:
                fields = dict(line.split(":", 1) for line in f if ":" in line)
        except OSError:
            continue
        name = fields.get("Name", "?").strip()
        count = (int(fields.get("voluntary_ctxt_switches", 0))
                 + int(fields.get("nonvoluntary_ctxt_switches", 0)))
        found[(tid, name)] = count
    return found


def cpu_seconds(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        return None, None
    name = stat[stat.index("(") + 1:stat.rindex(")")]
    fields = stat[stat.rindex(")") + 2:].split()
    return name, (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def shmem_kib(pids):
    """Pss_Shmem summed over pids: the piece arenas' pages (memfds), apart from the heap."""
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/smaps_rollup") as f:
                for line in f:
                    if line.startswith("Pss_Shmem:"):
                        total += int(line.split()[1])
        except OSError:
            continue
    return total


def rss_kib(pids):
    """VmRSS summed over pids (shared pages counted once per process that maps them)."""
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
        except OSError:
            continue
    return total


def snapshot(tree):
    """Per member: (name, CPU seconds, context switches by thread)."""
    taken = {}
    for pid in tree.refresh():
        name, cpu = cpu_seconds(pid)
        if name is not None:
            taken[pid] = (name, cpu, task_switches(pid))
    return taken


def idle_window(tree, seconds, label):
    """CPU % of one core, wake-ups per second and anonymous memory of the tree over a quiet
    window, per process name (workers summed) and per thread."""
    print(f"measuring idle ({label}) for {seconds:.0f} s", file=sys.stderr, flush=True)
    before = snapshot(tree)
    started = time.monotonic()
    samples, shmem, rss = [], [], []
    while time.monotonic() - started < seconds:
        samples.append(tree.anon_kib())
        shmem.append(shmem_kib(tree.members))
        rss.append(rss_kib(tree.members))
        time.sleep(min(1.0, max(0.0, seconds - (time.monotonic() - started))))
    after = snapshot(tree)
    elapsed = time.monotonic() - started
    processes, threads = {}, {}
    for pid, (name, cpu, switches) in after.items():
        old = before.get(pid, (name, 0.0, {}))
        row = processes.setdefault(name, dict(cpu_pct=0.0, wakeups_per_s=0.0, anon_mib=0.0))
        row["cpu_pct"] += 100 * (cpu - old[1]) / elapsed
        for key, count in switches.items():
            rate = (count - old[2].get(key, 0)) / elapsed
            row["wakeups_per_s"] += rate
            thread = f"{name}/{key[1]}"
            threads[thread] = threads.get(thread, 0.0) + rate
    for name in processes:
        processes[name]["anon_mib"] = statistics.median(
            by_name.get(name, 0) for _, by_name in samples) / 1024
        processes[name] = {k: round(v, 3 if k == "cpu_pct" else 1)
                           for k, v in processes[name].items()}
    return dict(
        seconds=round(elapsed, 1),
        cpu_pct=round(sum(p["cpu_pct"] for p in processes.values()), 3),
        wakeups_per_s=round(sum(p["wakeups_per_s"] for p in processes.values()), 1),
        anon_mib=round(statistics.median(total for total, _ in samples) / 1024, 2),
        shmem_mib=round(statistics.median(shmem) / 1024, 2),
        rss_mib=round(statistics.median(rss) / 1024, 2),
        processes=processes,
        threads={k: round(v, 1) for k, v in sorted(threads.items(), key=lambda kv: -kv[1])
                 if v >= 0.5},
        load=os.getloadavg()[0])


def machine_busy(seconds=1.0):
    """Share of the machine's CPU time not idle over a short look (other engineers' builds)."""
    def read():
        with open("/proc/stat") as f:
            values = [int(v) for v in f.readline().split()[1:]]
        return sum(values), values[3] + values[4]
    total0, idle0 = read()
    time.sleep(seconds)
    total1, idle1 = read()
    return round(100 * (1 - (idle1 - idle0) / max(1, total1 - total0)), 1)


# --- the run

def bench(args):
    ctypes.CDLL(None).prctl(common.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    piecework = os.path.join(args.build, "bin", "piecework")
    if not os.access(piecework, os.X_OK):
        raise SystemExit(f"{piecework} is missing: ./scripts/build, or --build DIR")
    folder = os.path.join(args.cache, f"many-v{CACHE_VERSION}")
    os.makedirs(folder, exist_ok=True)
    print(f"making {args.count} payloads in {folder}", file=sys.stderr, flush=True)
    names = [make_item(folder, i) for i in range(args.count)]
    sizes = [sum(os.path.getsize(p) for p in files_below(os.path.join(folder, n)).values())
             for n in names]
    total_bytes = sum(sizes)

    work = tempfile.mkdtemp(prefix="pw-many-", dir=args.scratch)
    tracker_port = common.free_port()
    announce = f"http://127.0.0.1:{tracker_port}/announce"
    torrents, hashes = [], []
    for i, name in enumerate(names):
        torrent = os.path.join(work, f"{name.split('.')[0]}.torrent")
        common.make_torrent(os.path.join(folder, name), item_spec(i)[3], announce, torrent)
        torrents.append(torrent)
        hashes.append(common.info_hash(torrent))
    swarm = Swarm(work, folder, torrents, hashes)
    daemon, tree, result, ok = None, None, {}, False
    try:
        swarm.start_tracker(tracker_port)
        print("starting the libtorrent seeder", file=sys.stderr, flush=True)
        swarm.start_seeder(args.count)

        downloads = os.path.join(work, "downloads")
        state = os.path.join(work, "state")
        rpc_port = common.free_port()
        command = [piecework, "daemon", "--download-dir", downloads, "--state-dir", state,
                   "--rpc-port", str(rpc_port), "--listen-port", str(common.free_port()),
                   "--workers", str(args.workers), "--log-level", args.log_level,
                   # The DHT node runs, as in any daemon, but joins nothing beyond 127.0.0.1.
                   "--dht-bootstrap", f"127.0.0.1:{common.free_port()}", "--no-lsd"]
        if args.max_peers:
            command += ["--max-peers", str(args.max_peers)]
        daemon_log = os.path.join(work, "daemon.log")
        with open(daemon_log, "w") as log:
            daemon = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT,
                                      start_new_session=True, cwd=work)
        tree = common.Tree(daemon.pid)
        rpc = Rpc(rpc_port)
        rpc.wait_ready(daemon)
        time.sleep(args.settle_seconds)
        result["busy_before_pct"] = machine_busy()
        idle0 = idle_window(tree, args.idle_seconds, "0 torrents")

        # Add every torrent, one request each.
        print(f"adding {args.count} torrents", file=sys.stderr, flush=True)
        start_cpu = {pid: cpu for pid, (_, cpu, _) in snapshot(tree).items()}
        started = time.monotonic()
        ids, add_times = {}, []
        for torrent, info_hash in zip(torrents, hashes):
            with open(torrent, "rb") as f:
                metainfo = base64.b64encode(f.read()).decode()
            t0 = time.monotonic()
            added = rpc.call("torrent-add", {"metainfo": metainfo})
            add_times.append(time.monotonic() - t0)
            entry = added.get("torrent-added") or added.get("torrent-duplicate")
            if entry is None or entry.get("hashString") != info_hash:
                raise SystemExit(f"torrent-add of {torrent} answered {added}")
            ids[entry["id"]] = info_hash
        added_after = time.monotonic() - started

        # Poll until every torrent is 100%, sampling the tree's CPU and memory meanwhile.
        peak, peak_by_name, per_pid = 0, {}, {}
        done, last_poll, polls, get_times, status = {}, 0.0, 0, [], "timeout"
        progress_at, last_done = time.monotonic(), 0
        while time.monotonic() - started < args.timeout:
            total, by_name = tree.anon_kib()
            if total > peak:
                peak, peak_by_name = total, by_name
            tree.sample_cpu(per_pid)
            if daemon.poll() is not None:
                status = f"daemon exited {daemon.returncode}"
                break
            if time.monotonic() - last_poll >= args.poll_seconds:
                last_poll = time.monotonic()
                got = rpc.call("torrent-get", {"fields": ["id", "percentDone", "status", "error",
                                                          "errorString"]})
                get_times.append(time.monotonic() - last_poll)
                polls += 1
                done = {t["id"]: t for t in got["torrents"] if t["percentDone"] >= 1.0}
                if len(done) != last_done:
                    last_done, progress_at = len(done), time.monotonic()
                if len(done) == args.count:
                    status = "complete"
                    break
            time.sleep(0.1)
        wall = time.monotonic() - started
        tree.sample_cpu(per_pid)
        download_cpu = sum(cpu - start_cpu.get(pid, 0.0) for pid, (_, cpu) in per_pid.items())
        cpu_by_name = {}
        for pid, (name, cpu) in per_pid.items():
            cpu_by_name[name] = round(cpu_by_name.get(name, 0) + cpu - start_cpu.get(pid, 0.0), 2)
        result["busy_after_pct"] = machine_busy()
        if status != "complete":
            stuck = sorted(set(ids) - set(done))
            try:
                got = rpc.call("torrent-get", {"ids": stuck[:20], "fields": [
                    "id", "name", "percentDone", "status", "error", "errorString",
                    "peersConnected"]})["torrents"]
            except (RuntimeError, OSError) as error:
                got = str(error)
            print(f"{status}: {len(done)}/{args.count} complete after {wall:.0f} s (the last"
                  f" progress {time.monotonic() - progress_at:.0f} s ago); some not:",
                  json.dumps(got), file=sys.stderr, flush=True)

        # Byte for byte.
        bad = {}
        for name in names:
            why = same_tree(os.path.join(folder, name), os.path.join(downloads, name))
            if why:
                bad[name] = why
        if bad:
            print(f"{len(bad)} downloads differ: {dict(list(bad.items())[:5])}",
                  file=sys.stderr, flush=True)

        time.sleep(args.settle_seconds)
        idle_n = idle_window(tree, args.idle_seconds, f"{args.count} complete")
        idle_stopped = None
        if not args.no_stopped:
            rpc.call("torrent-stop", {"ids": sorted(ids)})
            time.sleep(args.settle_seconds)
            idle_stopped = idle_window(tree, args.idle_seconds, f"{args.count} stopped")

        # SIGTERM, as a user stops it: how long, and the exit code.
        stop_started = time.monotonic()
        daemon.send_signal(signal.SIGTERM)
        try:
            exit_code = daemon.wait(timeout=30)
        except subprocess.TimeoutExpired:
            exit_code = "still running after 30 s"
        stop_seconds = time.monotonic() - stop_started

        with open(daemon_log, errors="replace") as f:
            log_lines = f.read().splitlines()
        restarts = [line for line in log_lines if "exited (status" in line]
        warnings = [line for line in log_lines if "[warn" in line or "[error" in line
                    or "[critical" in line]

        ok = (status == "complete" and not bad and exit_code == 0)
        lt_result = None
        if not args.no_libtorrent:
            print("libtorrent as the client", file=sys.stderr, flush=True)
            lt_result = libtorrent_client(args, torrents, folder, names, work)

        def heap(window):
            return window["anon_mib"] - window["shmem_mib"]
        result.update(
            count=args.count, workers=args.workers, payload_mib=round(total_bytes / MIB, 1),
            multi_file=sum(1 for n in names if not n.endswith(".bin")),
            status=status, complete=len(done), byte_identical=args.count - len(bad), ok=ok,
            add_seconds=round(added_after, 2), add_max_ms=round(1000 * max(add_times), 1),
            add_median_ms=round(1000 * statistics.median(add_times), 1),
            torrent_get_max_ms=round(1000 * max(get_times), 1) if get_times else None,
            wall_seconds=round(wall, 2), download_cpu_seconds=round(download_cpu, 2),
            download_cpu_by_process=cpu_by_name,
            download_cpu_s_per_gib=round(download_cpu / (total_bytes / GIB), 2),
            peak_anon_mib=round(peak / 1024, 1),
            peak_anon_mib_by_process={n: round(k / 1024, 1) for n, k in peak_by_name.items()},
            idle_0=idle0, idle_complete=idle_n, idle_stopped=idle_stopped,
            kib_per_idle_torrent=round((idle_n["anon_mib"] - idle0["anon_mib"]) * 1024
                                       / args.count, 1),
            heap_kib_per_idle_torrent=round(
                (heap(idle_n) - heap(idle0)) * 1024 / args.count, 1),
            kib_per_stopped_torrent=(round((idle_stopped["anon_mib"] - idle0["anon_mib"]) * 1024
                                           / args.count, 1) if idle_stopped else None),
            kib_rss_per_idle_torrent=round((idle_n["rss_mib"] - idle0["rss_mib"]) * 1024
                                           / args.count, 1),
            libtorrent=lt_result,
            stop_seconds=round(stop_seconds, 2), exit_code=exit_code,
            stage_restarts=restarts, log_warnings=len(warnings),
            log_warning_samples=warnings[:5], load_1min=os.getloadavg()[0])
    finally:
        if daemon is not None and daemon.poll() is None:
            daemon.kill()
        if tree is not None:
            tree.kill()
        swarm.stop()
        deadline = time.monotonic() + 5
        while tree is not None and tree.refresh() - {daemon.pid} and time.monotonic() < deadline:
            common.reap_all()
            time.sleep(0.05)
        common.reap_all()

    print(report(result, args))
    print(json.dumps(result))
    idle_ok = result["idle_complete"]["cpu_pct"] < 1.0
    if not args.keep and ok:
        shutil.rmtree(work, ignore_errors=True)
    else:
        print(f"kept {work}", file=sys.stderr)
    return 0 if ok and idle_ok else 1


def side_by_side(r):
    """The summary: the daemon's tree and libtorrent's one session, the same N torrents."""
    n = r["count"]
    clients = [("piecework daemon", dict(
        wall_seconds=r["wall_seconds"], cpu_seconds=r["download_cpu_seconds"],
        byte_identical=r["byte_identical"], idle_0=r["idle_0"],
        idle_complete=r["idle_complete"]))]
    if r.get("libtorrent"):
        clients.append(("libtorrent", r["libtorrent"]))

    def per_torrent(c, key):
        return (c["idle_complete"][key] - c["idle_0"][key]) * 1024 / n
    rows = [
        ("all complete after (s)", lambda c: f"{c['wall_seconds']:.1f}"),
        ("CPU while downloading (s)", lambda c: f"{c['cpu_seconds']:.2f}"),
        ("byte-identical", lambda c: f"{c['byte_identical']}/{n}"),
        ("RSS, 0 torrents (MiB)", lambda c: f"{c['idle_0']['rss_mib']:.1f}"),
        (f"RSS, {n} complete and idle (MiB)", lambda c: f"{c['idle_complete']['rss_mib']:.1f}"),
        ("RSS per idle torrent (KiB)", lambda c: f"{per_torrent(c, 'rss_mib'):.1f}"),
        ("anon per idle torrent (KiB)", lambda c: f"{per_torrent(c, 'anon_mib'):.1f}"),
        ("CPU idle, % of a core", lambda c: f"{c['idle_complete']['cpu_pct']:.2f}"),
        ("wake-ups/s idle", lambda c: f"{c['idle_complete']['wakeups_per_s']:.0f}"),
    ]
    lines = [f"{n} torrents, side by side", f"{'':<34}" + "".join(f" {name:>18}" for name, _ in clients)]
    for label, cell in rows:
        lines.append(f"{label:<34}" + "".join(f" {cell(c):>18}" for _, c in clients))
    return "\n".join(lines)


def report(r, args):
    n = r["count"]
    windows = [("0 torrents", r["idle_0"]), (f"{n} complete", r["idle_complete"])]
    if r["idle_stopped"]:
        windows.append((f"{n} stopped", r["idle_stopped"]))
    lines = [
        f"{n} torrents ({r['payload_mib']} MiB, {r['multi_file']} multi-file, 256 KiB-2 MiB,"
        f" pieces 16-256 KiB), one libtorrent seeder, piecework daemon --workers {r['workers']}",
        f"machine busy (all cores) {r['busy_before_pct']}% before the adds,"
        f" {r['busy_after_pct']}% after; load {r['load_1min']:.2f}",
        "",
        f"{'what':<44} {'value':>10}",
        f"{'adding ' + str(n) + ' over the RPC (s)':<44} {r['add_seconds']:>10.2f}"
        f"   median {r['add_median_ms']} ms, slowest {r['add_max_ms']} ms",
        f"{'complete, byte-identical':<44} {str(r['complete']) + '/' + str(n):>10}"
        f"   {r['byte_identical']}/{n} identical",
        f"{'wall time to all complete (s)':<44} {r['wall_seconds']:>10.2f}"
        f"   {r['payload_mib'] * MIB / 1e6 / r['wall_seconds']:.1f} MB/s",
        f"{'CPU while downloading (s)':<44} {r['download_cpu_seconds']:>10.2f}"
        f"   {r['download_cpu_s_per_gib']} s/GiB",
        f"{'peak anon MiB while downloading':<44} {r['peak_anon_mib']:>10.1f}",
    ]
    for label, w in windows:
        lines.append(f"{'idle, ' + label + ': CPU % of a core':<44} {w['cpu_pct']:>10.2f}"
                     f"   {w['wakeups_per_s']:.0f} wake-ups/s, {w['anon_mib']:.1f} anon MiB"
                     f" ({w['shmem_mib']:.1f} of it arenas)")
    lines.append(f"{'anon KiB per idle torrent':<44} {r['kib_per_idle_torrent']:>10.1f}"
                 f"   {r['heap_kib_per_idle_torrent']} without the arenas (Pss_Shmem)")
    if r["kib_per_stopped_torrent"] is not None:
        lines.append(f"{'anon KiB per stopped torrent':<44} {r['kib_per_stopped_torrent']:>10.1f}")
    lines.append(f"{'SIGTERM to exit (s)':<44} {r['stop_seconds']:>10.2f}   exit {r['exit_code']}")
    lines.append("")
    header = f"{'process':<14}" + "".join(f" {label:>26}" for label, _ in windows)
    lines.append("idle per process: CPU % of a core, wake-ups/s, anon MiB")
    lines.append(header)
    names = sorted({p for _, w in windows for p in w["processes"]})
    for name in names:
        cells = []
        for _, w in windows:
            p = w["processes"].get(name)
            cells.append(f"{p['cpu_pct']:>8.2f} {p['wakeups_per_s']:>7.1f} {p['anon_mib']:>8.1f}"
                         if p else f"{'-':>26}")
        lines.append(f"{name:<14}" + "".join(f" {c:>26}" for c in cells))
    lines.append("")
    lines.append("CPU s while downloading, by process: " + ", ".join(
        f"{k} {v}" for k, v in sorted(r["download_cpu_by_process"].items())))
    lines.append("peak anon MiB by process: " + ", ".join(
        f"{k} {v}" for k, v in sorted(r["peak_anon_mib_by_process"].items())))
    if r["stage_restarts"] or r["log_warnings"]:
        lines.append(f"daemon log: {len(r['stage_restarts'])} stage exits,"
                     f" {r['log_warnings']} warning/error lines")
    lines.append("")
    lines.append(side_by_side(r))
    verdict = "under" if r["idle_complete"]["cpu_pct"] < 1.0 else "NOT under"
    lines.append(f"idle with {n} complete: {verdict} 1% of a core")
    return "\n".join(lines)


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "lt-seed-many":
        lt_seed_many(sys.argv[2], sys.argv[3])
        return 0
    if len(sys.argv) > 1 and sys.argv[1] == "lt-get-many":
        lt_get_many(sys.argv[2], sys.argv[3])
        return 0
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--count", type=int, default=200, help="torrents (default 200)")
    ap.add_argument("--workers", type=int, default=1, help="the daemon's peer workers")
    ap.add_argument("--max-peers", type=int, default=0, help="the daemon's --max-peers"
                    " (default: its own)")
    ap.add_argument("--idle-seconds", type=float, default=30, help="each idle window")
    ap.add_argument("--settle-seconds", type=float, default=5,
                    help="quiet time before each idle window")
    ap.add_argument("--poll-seconds", type=float, default=1.0, help="torrent-get interval")
    ap.add_argument("--no-stopped", action="store_true",
                    help="skip the idle window with every torrent stopped")
    ap.add_argument("--no-libtorrent", action="store_true",
                    help="skip libtorrent as the client (one session, all N torrents)")
    ap.add_argument("--log-level", default="info", help="the daemon's --log-level")
    ap.add_argument("--build", default=os.path.join(common.REPO, "build"),
                    help="build folder holding bin/piecework")
    ap.add_argument("--cache", default=os.environ.get("PW_BENCH_CACHE", "/tmp/pw-bench-cache"),
                    help="where payloads are kept between runs")
    ap.add_argument("--scratch", default=None, help="where downloads go (default: /tmp)")
    ap.add_argument("--timeout", type=float, default=1200,
                    help="seconds from the first add until all must be complete")
    ap.add_argument("--keep", action="store_true", help="keep the work folder and logs")
    args = ap.parse_args()
    args.build = os.path.abspath(args.build)
    return bench(args)


if __name__ == "__main__":
    sys.exit(main())
