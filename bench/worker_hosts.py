#!/usr/bin/python3
"""Workers on several hosts add their hosts' bandwidth (issue 18, item 4).

Hosts are network namespaces on this machine (root needed), joined like the hosts of
tests/integration/netns_test.cpp, but through one router namespace R, so that every byte
between two hosts crosses exactly two veth links and the cap sits on one of them:

        A  orchestrator, tracker_svc          10.79.1.2   (the control plane only)
        W  verifier, writer (the storage)     10.79.2.2
        S  opentracker + libtorrent seeders   10.79.3.2
        Bi one peer_worker each, i = 1..3     10.79.(10+i).2
   every host  <-- veth -->  R  (10.79.x.1 on R's side, R forwards, each host's default route)

The cap: `tc qdisc add dev <R's veth towards Bi> root tbf rate <cap> burst 256kb latency
50ms`, i.e. on the egress of R into Bi only, which is the direction every piece byte takes
from the seeders to that worker (S -> R -> Bi). What Bi sends is not capped: its requests to
the seeders (Bi -> R -> S) and the verified-to-be pieces it pushes to the verifier over
tcp:// ZeroMQ (Bi -> R -> W) leave Bi through its own end of the veth and R's veth towards W,
neither of which has a qdisc; so upstream to the storage host never shares the capped
download direction, as on a real asymmetric host link where only the download is the limit.
Control traffic (leases, reports, peers) goes Bi <-> R <-> A and W <-> R <-> A. The seeders
are capped too (libtorrent's upload limit, every address in its global peer class) but offer
together well over N x the cap, so the caps are what limits. tbf counts whole frames (a
TCP segment of 1448 payload bytes is 1514 on the link), so about 95.6% of the cap is the most
any TCP download through it can carry.

Before the downloads, a plain TCP transfer from S into B1 for 3 s shows the cap holds (and
one from B1 into W that the other direction is free). Then, for each N in --hosts: the
stages start with every CurveZMQ key from `piecework keygen` (as the netns test does); the
orchestrator waits until the writer, the verifier and all N workers have joined (so the
seeders, handed out each to the worker with the fewest peers, spread over all N) and only then
does tracker_svc start and announce. Timed from tracker_svc's start to the orchestrator's exit
(--exit-when-done: every piece verified and written on W), then the file on W is compared
byte for byte with the payload.

Measured: wall time, aggregate MB/s and its ratio to one cap and to N x the cap, the steady
rate (while the worker links carried 10% to 90% of the payload), the bytes that crossed host
A's link each way during the download (the control plane: it must be a tiny fraction of the
payload, the orchestrator's host sees no piece bytes) and host W's received bytes (about the
payload: the pieces went worker -> verifier directly), and how busy this machine's CPUs were.

  /usr/bin/python3 bench/worker_hosts.py                          # N = 1,2,3, 512 MiB, 8 MiB/s
  /usr/bin/python3 bench/worker_hosts.py --size-mib 256 --hosts 1,3 --bin /tmp/pw-bin

Prints a table and one JSON line; exits 1 when a download was not byte-identical (or did not
finish), 2 when the network could not be built. Every namespace and process it made is
removed on exit, on errors and on Ctrl-C.
"""
import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, HERE)
import run as common  # noqa: E402  bench/run.py: payload, cached torrents, libtorrent sessions

MIB = common.MIB
NET = "10.79"
TRACKER_PORT = 7200
CONTROL, PIECES, VERIFIED = 7100, 7101, 7102


# --- small helpers run inside the namespaces (this same file: `worker_hosts.py lt-seed ...`)

def lt_seed(torrent, folder, count, rate_kib, bind):
    sessions = []
    for _ in range(count):
        s = common.lt_session(rate_kib)
        s.apply_settings({"listen_interfaces": f"{bind}:0"})
        sessions.append(s)
    for s in sessions:
        common.lt_add(s, torrent, folder, True)
    while True:
        time.sleep(1)


def sink(bind, port, seconds, report):
    """Receives one TCP stream; writes the bytes it got in the last `seconds` after the first."""
    server = socket.socket()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind((bind, port))
    server.listen(1)
    with open(report + ".ready", "w"):
        pass
    conn, _ = server.accept()
    got, started = 0, None
    while True:
        chunk = conn.recv(1 << 20)
        if not chunk:
            break
        if started is None:
            started = time.monotonic()
            continue  # the first read may hold the sender's initial burst
        got += len(chunk)
    elapsed = time.monotonic() - started if started else 0
    with open(report, "w") as f:
        json.dump({"bytes": got, "seconds": elapsed}, f)


def blast(host, port, seconds):
    data = b"\0" * (1 << 20)
    with socket.create_connection((host, port)) as conn:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            conn.sendall(data)


# --- the network

def ip(*args, check=True):
    result = subprocess.run(["ip", *args], capture_output=True, text=True)
    if check and result.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {result.stderr.strip()}")
    return result.stdout


class Network:
    """Namespaces A, W, S and B1..Bn around a router R; deleted by close()."""

    def __init__(self, worker_hosts, cap_bits):
        tag = str(os.getpid() % 100000)
        self.tag = tag
        self.made = []
        self.router = f"pwh{tag}R"
        self.hosts = {"A": 1, "W": 2, "S": 3}
        for i in range(1, worker_hosts + 1):
            self.hosts[f"B{i}"] = 10 + i
        self.ns = {name: f"pwh{tag}{name}" for name in self.hosts}
        self.cap_bits = cap_bits

    def addr(self, host):
        return f"{NET}.{self.hosts[host]}.2"

    def r_link(self, host):
        """R's end of the veth towards `host` (where the download cap goes)."""
        return f"pw{self.tag}r{host}"

    def host_link(self, host):
        return f"pw{self.tag}h{host}"

    def build(self):
        for ns in [self.router] + list(self.ns.values()):
            ip("netns", "add", ns)
            self.made.append(ns)
            ip("-n", ns, "link", "set", "lo", "up")
        subprocess.run(["ip", "netns", "exec", self.router, "sysctl", "-qw",
                        "net.ipv4.ip_forward=1"], check=True)
        for host, subnet in self.hosts.items():
            near, far = self.r_link(host), self.host_link(host)
            ns = self.ns[host]
            prefix = f"{NET}.{subnet}."
            ip("-n", self.router, "link", "add", near, "type", "veth", "peer", "name", far,
               "netns", ns)
            ip("-n", self.router, "addr", "add", prefix + "1/24", "dev", near)
            ip("-n", ns, "addr", "add", prefix + "2/24", "dev", far)
            ip("-n", self.router, "link", "set", near, "up")
            ip("-n", ns, "link", "set", far, "up")
            ip("-n", ns, "route", "add", "default", "via", prefix + "1")
            if host.startswith("B"):
                # The download direction into the worker host: R's egress towards it.
                subprocess.run(["tc", "-n", self.router, "qdisc", "add", "dev", near, "root",
                                "tbf", "rate", f"{self.cap_bits}bit", "burst", "256kb",
                                "latency", "50ms"], check=True, capture_output=True)

    def counters(self):
        """{host: (bytes into the host, bytes out of the host)}, read on R's side of each link
        (a veth pair's two ends count the same packets: R's tx is the host's rx)."""
        out = ip("-n", self.router, "-s", "-j", "link", "show")
        found = {}
        for link in json.loads(out):
            name = link.get("ifname", "")
            for host in self.hosts:
                if name == self.r_link(host):
                    stats = link.get("stats64", {})
                    found[host] = (stats["tx"]["bytes"], stats["rx"]["bytes"])
        return found

    def host_own_counters(self, host):
        """The host's own view of its link (rx, tx), from inside its namespace."""
        out = ip("-n", self.ns[host], "-s", "-j", "link", "show", "dev", self.host_link(host))
        stats = json.loads(out)[0]["stats64"]
        return stats["rx"]["bytes"], stats["tx"]["bytes"]

    def qdisc(self, host):
        return subprocess.run(["tc", "-n", self.router, "-s", "qdisc", "show", "dev",
                               self.r_link(host)], capture_output=True, text=True).stdout

    def close(self):
        for ns in reversed(self.made):
            ip("netns", "del", ns, check=False)
        self.made = []


# --- processes

class Processes:
    def __init__(self, logs):
        self.logs = logs
        self.procs = []

    def start(self, ns, name, argv, cwd=None):
        log_path = os.path.join(self.logs, name + ".log")
        with open(log_path, "w") as log:
            proc = subprocess.Popen(["ip", "netns", "exec", ns, *argv], stdout=log,
                                    stderr=subprocess.STDOUT, start_new_session=True,
                                    cwd=cwd or self.logs)
        proc.log_path = log_path
        proc.name = name
        self.procs.append(proc)
        return proc

    def stop(self, procs=None):
        procs = list(self.procs if procs is None else procs)
        for proc in procs:
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        for proc in procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
            if proc in self.procs:
                self.procs.remove(proc)


def log_has(proc, needle):
    try:
        with open(proc.log_path, errors="replace") as f:
            return needle in f.read()
    except OSError:
        return False


def wait_for(what, predicate, limit):
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise RuntimeError(f"timed out waiting for {what}")


def cpu_busy():
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    idle = fields[3] + fields[4]
    return sum(fields) - idle, sum(fields)


def proc_cpu(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# --- the bench

def check_cap(net, procs, work, cap_mbps):
    """A plain TCP stream S -> B1 (through the cap) and B1 -> W (not capped), 3 s each."""
    results = {}
    for label, src, dst, port in (("S->B1 (capped)", "S", "B1", 5001),
                                  ("B1->W (upstream, not capped)", "B1", "W", 5002)):
        report = os.path.join(work, f"sink-{port}.json")
        sink_proc = procs.start(net.ns[dst], f"sink-{port}",
                                [sys.executable, os.path.abspath(__file__), "sink",
                                 net.addr(dst), str(port), "3", report])
        wait_for("the sink", lambda: os.path.exists(report + ".ready"), 20)
        blaster = procs.start(net.ns[src], f"blast-{port}",
                              [sys.executable, os.path.abspath(__file__), "blast",
                               net.addr(dst), str(port), "3"])
        blaster.wait(timeout=30)
        sink_proc.wait(timeout=30)
        with open(report) as f:
            got = json.load(f)
        mbps = got["bytes"] / max(got["seconds"], 1e-9) / 1e6
        results[label] = round(mbps, 1)
        print(f"link check {label}: {mbps:.1f} MB/s (cap {cap_mbps:.2f} MB/s)", flush=True)
    return results


def keygen(binary_dir, keys):
    os.makedirs(keys, exist_ok=True)
    allow = "# the deployment's stages\n"
    for name in ("orchestrator", "tracker_svc", "verifier", "writer", "peer_worker"):
        subprocess.run([os.path.join(binary_dir, "piecework"), "keygen",
                        os.path.join(keys, name)], check=True, capture_output=True)
        with open(os.path.join(keys, name + ".pub")) as f:
            allow += f.readline().strip() + "\n"
    with open(os.path.join(keys, "allow"), "w") as f:
        f.write(allow)


def one_download(args, net, procs, work, torrent, path, digest, n, run):
    bins = args.bin
    keys = os.path.join(work, "keys")
    out = os.path.join(work, f"out-n{n}-r{run}")
    os.makedirs(out)

    def curve(name):
        return ["--curve-key", os.path.join(keys, name + ".key"),
                "--curve-allow", os.path.join(keys, "allow")]

    a, w = net.addr("A"), net.addr("W")
    control = f"tcp://{a}:{CONTROL}"
    mine = []

    def start(host, name, argv):
        proc = procs.start(net.ns[host], f"n{n}-r{run}-{name}", argv)
        mine.append(proc)
        return proc

    try:
        orchestrator = start("A", "orchestrator", [
            os.path.join(bins, "orchestrator"), "--control", f"tcp://0.0.0.0:{CONTROL}",
            "--torrent", torrent, "--exit-when-done", "--heartbeat-ms", "200", "--quiet",
            "--log-level", "info", *curve("orchestrator")])
        start("W", "writer", [
            os.path.join(bins, "writer"), "--name", "writer", "--control", control,
            "--verified", f"tcp://127.0.0.1:{VERIFIED}", "--dir", out, *curve("writer")])
        start("W", "verifier", [
            os.path.join(bins, "verifier"), "--name", "verifier", "--control", control,
            "--pieces", f"tcp://0.0.0.0:{PIECES}", "--verified", f"tcp://127.0.0.1:{VERIFIED}",
            *curve("verifier")])
        for i in range(1, n + 1):
            start(f"B{i}", f"worker-{i}", [
                os.path.join(bins, "peer_worker"), "--name", f"worker-{i}", "--control", control,
                "--pieces", f"tcp://{w}:{PIECES}", *curve("peer_worker")])
        for name in ["writer", "verifier"] + [f"worker-{i}" for i in range(1, n + 1)]:
            wait_for(f"'{name}' to join", lambda name=name: log_has(orchestrator,
                                                                    f"'{name}' joined"), 60)

        before = net.counters()
        own_before = net.host_own_counters("A")
        busy0, total0 = cpu_busy()
        started = time.monotonic()
        start("A", "tracker_svc", [os.path.join(bins, "tracker_svc"), "--control",
                                   f"tcp://127.0.0.1:{CONTROL}", *curve("tracker_svc")])
        timeout = args.timeout or (args.size_mib * MIB / (n * args.cap_mib * MIB) * 4 + 60)
        payload_bytes = args.size_mib * MIB
        samples = []  # (time, bytes into the worker hosts since `before`)
        cpu_by_stage = {}
        seeders_cpu0 = proc_cpu(args.seeders_pid) or 0
        status = "timeout"
        while time.monotonic() - started < timeout:
            for proc in mine:
                seconds = proc_cpu(proc.pid)
                if seconds is not None:
                    cpu_by_stage[proc.name.split("-", 2)[2]] = seconds
            now, c = time.monotonic(), net.counters()
            samples.append((now, sum(c[f"B{i}"][0] - before[f"B{i}"][0] for i in range(1, n + 1))))
            if orchestrator.poll() is not None:
                status = f"exit {orchestrator.returncode}"
                break
            time.sleep(0.1)
        cpu_by_stage["seeders"] = (proc_cpu(args.seeders_pid) or 0) - seeders_cpu0
        wall = time.monotonic() - started
        busy1, total1 = cpu_busy()
        after = net.counters()
        own_after = net.host_own_counters("A")
    finally:
        procs.stop(mine)

    target = os.path.join(out, os.path.basename(path))
    ok = status == "exit 0" and os.path.exists(target) and common.sha256_of(target) == digest
    if ok or not args.keep:
        shutil.rmtree(out, ignore_errors=True)
    cap_mbps = args.cap_mib * MIB / 1e6
    mbps = payload_bytes / 1e6 / wall
    # The steady part: while the worker links carried 10% to 90% of all they carried, as a
    # share of the caps (link %), and as payload per second, counting every byte over those
    # links as payload in proportion (headers, and the end game's duplicate blocks, which
    # mostly fall after the window: so it errs low).
    steady = link_use = None
    b_total = samples[-1][1] if samples else 0
    t10 = next((x for x in samples if x[1] >= 0.1 * b_total), None)
    t90 = next((x for x in samples if x[1] >= 0.9 * b_total), None)
    if b_total and t10 and t90 and t90[0] > t10[0]:
        link_rate = (t90[1] - t10[1]) / 1e6 / (t90[0] - t10[0])
        steady = link_rate * payload_bytes / b_total
        link_use = link_rate / (n * cap_mbps)
    delta = {host: (after[host][0] - before[host][0], after[host][1] - before[host][1])
             for host in after}
    return dict(
        hosts=n, run=run, status=status, ok=ok, wall=round(wall, 2),
        mbps=round(mbps, 2), x_cap=round(mbps / cap_mbps, 2),
        pct_of_n_caps=round(100 * mbps / (n * cap_mbps), 1),
        steady_mbps=round(steady, 2) if steady else None,
        steady_pct_of_n_caps=round(100 * steady / (n * cap_mbps), 1) if steady else None,
        steady_link_use_pct=round(100 * link_use, 1) if link_use else None,
        host_a_in=delta["A"][0], host_a_out=delta["A"][1],
        host_a_own_rx=own_after[0] - own_before[0], host_a_own_tx=own_after[1] - own_before[1],
        host_w_in=delta["W"][0], host_w_out=delta["W"][1],
        worker_hosts_in=[delta[f"B{i}"][0] for i in range(1, n + 1)],
        worker_hosts_out=[delta[f"B{i}"][1] for i in range(1, n + 1)],
        cpu_busy_pct=round(100 * (busy1 - busy0) / max(total1 - total0, 1), 1),
        cpu_s_by_stage={k: round(v, 2) for k, v in sorted(cpu_by_stage.items())})


def table(results, cap_mbps, payload_bytes):
    lines = [f"{'N':>2} {'wall s':>7} {'MB/s':>7} {'x cap':>6} {'% of N x cap':>12}"
             f" {'steady %':>8} {'link %':>6} {'A in, B':>9} {'A out, B':>9} {'A/payload':>9}"
             f" {'W in, MB':>8} {'CPU busy':>8}"]
    for r in results:
        if not r["ok"]:
            lines.append(f"{r['hosts']:>2} {r['wall']:>7.1f}  FAILED ({r['status']})")
            continue
        steady = f"{r['steady_pct_of_n_caps']:.1f}" if r["steady_pct_of_n_caps"] else "-"
        link = f"{r['steady_link_use_pct']:.1f}" if r["steady_link_use_pct"] else "-"
        a_share = (r["host_a_in"] + r["host_a_out"]) / payload_bytes
        lines.append(f"{r['hosts']:>2} {r['wall']:>7.1f} {r['mbps']:>7.2f} {r['x_cap']:>6.2f}"
                     f" {r['pct_of_n_caps']:>12.1f} {steady:>8} {link:>6} {r['host_a_in']:>9}"
                     f" {r['host_a_out']:>9} {100 * a_share:>8.3f}%"
                     f" {r['host_w_in'] / 1e6:>8.1f} {r['cpu_busy_pct']:>7.1f}%")
    lines += [
        f"cap: {cap_mbps:.2f} MB/s per worker host; MB/s: the payload over the wall time",
        "steady %: payload per second while the worker links carried 10% to 90% of their"
        " bytes, over N x cap",
        "link %: those links' bytes (headers too) in that window, over N x cap",
        "A in/out: bytes that crossed host A's link (the orchestrator's host); A/payload: both"
        " ways, over the payload",
        "W in: bytes into the storage host (verifier, writer); CPU busy: this whole machine"]
    return "\n".join(lines)


def bench(args):
    hosts = sorted({int(x) for x in args.hosts.split(",")})
    if os.geteuid() != 0:
        print("needs root (ip netns add, tc)", file=sys.stderr)
        return 2
    folder, path, digest = common.payload(args.cache, args.size_mib)
    work = tempfile.mkdtemp(prefix="pw-worker-hosts-")
    os.chmod(work, 0o755)  # opentracker reads its whitelist here after dropping to nobody
    cap_bits = args.cap_mib * MIB * 8
    cap_mbps = args.cap_mib * MIB / 1e6
    net = Network(max(hosts), cap_bits)
    procs = Processes(work)
    results = []

    def interrupted(signum, _frame):
        raise KeyboardInterrupt(f"signal {signum}")
    for number in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(number, interrupted)
    try:
        try:
            net.build()
        except (RuntimeError, subprocess.CalledProcessError) as error:
            print(f"cannot build the network: {error}", file=sys.stderr)
            return 2
        keygen(args.bin, os.path.join(work, "keys"))
        torrent = os.path.join(work, "bench.torrent")
        common.cached_torrent(args.cache, path, args.size_mib, args.piece_kib)(
            f"http://{net.addr('S')}:{TRACKER_PORT}/announce", torrent)
        with open(os.path.join(work, "whitelist"), "w") as f:
            f.write(common.info_hash(torrent) + "\n")
        os.chmod(os.path.join(work, "whitelist"), 0o644)
        s = net.addr("S")
        procs.start(net.ns["S"], "opentracker",
                    ["opentracker", "-i", s, "-p", str(TRACKER_PORT), "-P", str(TRACKER_PORT),
                     "-A", s, "-d", work, "-w", "whitelist"])
        args.seeders_pid = procs.start(net.ns["S"], "seeders",
                    [sys.executable, os.path.abspath(__file__), "lt-seed", torrent, folder,
                     "--count", str(args.seeders), "--rate-kib", str(args.seeder_kib),
                     "--bind", s]).pid

        def announced():
            reply = subprocess.run(["ip", "netns", "exec", net.ns["S"], "curl", "-s", "-m", "1",
                                    f"http://{s}:{TRACKER_PORT}/stats?mode=peer"],
                                   capture_output=True, text=True).stdout
            first = reply.split("\n")[0].strip()
            return first.isdigit() and int(first) >= args.seeders
        wait_for(f"{args.seeders} seeders to announce", announced, 60)

        link_check = check_cap(net, procs, work, cap_mbps)
        offered = args.seeders * args.seeder_kib * 1024 / 1e6 if args.seeder_kib else None
        print(f"{args.size_mib} MiB in {args.piece_kib} KiB pieces; {args.seeders} seeders"
              + (f" at {args.seeder_kib} KiB/s each ({offered:.1f} MB/s offered)"
                 if offered else " uncapped")
              + f"; each worker host's download link capped at {args.cap_mib} MiB/s"
              f" ({cap_mbps:.2f} MB/s)", flush=True)
        for run in range(args.runs):
            for n in hosts:
                try:
                    record = one_download(args, net, procs, work, torrent, path, digest, n, run)
                except RuntimeError as error:  # a stage never joined: that N failed
                    record = dict(hosts=n, run=run, status=str(error), ok=False, wall=0)
                results.append(record)
                print(json.dumps(record), file=sys.stderr, flush=True)
        print(table(results, cap_mbps, args.size_mib * MIB))
        print(json.dumps(dict(bench="worker_hosts", size_mib=args.size_mib,
                              piece_kib=args.piece_kib, cap_mib=args.cap_mib,
                              seeders=args.seeders, seeder_kib=args.seeder_kib,
                              link_check_mbps=link_check, results=results)))
        return 0 if results and all(r["ok"] for r in results) else 1
    except KeyboardInterrupt:
        print("interrupted; cleaning up", file=sys.stderr)
        return 130
    finally:
        for number in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(number, signal.SIG_IGN)  # a second Ctrl-C must not stop the cleanup
        procs.stop()
        net.close()
        common.reap_all()
        if args.keep:
            print(f"logs kept in {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)


def main():
    if len(sys.argv) > 1 and sys.argv[1] in ("lt-seed", "sink", "blast"):
        mode = sys.argv[1]
        ap = argparse.ArgumentParser()
        ap.add_argument("mode")
        if mode == "lt-seed":
            ap.add_argument("torrent")
            ap.add_argument("folder")
            ap.add_argument("--count", type=int, default=1)
            ap.add_argument("--rate-kib", type=int, default=0)
            ap.add_argument("--bind", required=True)
            a = ap.parse_args()
            lt_seed(a.torrent, a.folder, a.count, a.rate_kib, a.bind)
        elif mode == "sink":
            ap.add_argument("bind")
            ap.add_argument("port", type=int)
            ap.add_argument("seconds", type=float)
            ap.add_argument("report")
            a = ap.parse_args()
            sink(a.bind, a.port, a.seconds, a.report)
        else:
            ap.add_argument("host")
            ap.add_argument("port", type=int)
            ap.add_argument("seconds", type=float)
            a = ap.parse_args()
            blast(a.host, a.port, a.seconds)
        return 0
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size-mib", type=int, default=512)
    ap.add_argument("--piece-kib", type=int, default=1024)
    ap.add_argument("--cap-mib", type=int, default=8,
                    help="each worker host's download link, MiB/s (tc tbf)")
    ap.add_argument("--hosts", default="1,2,3", help="worker host counts to run")
    ap.add_argument("--runs", type=int, default=1)
    ap.add_argument("--seeders", type=int, default=12)
    ap.add_argument("--seeder-kib", type=int, default=4096,
                    help="each seeder's upload limit, KiB/s (0: uncapped)")
    ap.add_argument("--build", default=os.path.join(REPO, "build"),
                    help="build folder holding bin/ (orchestrator, peer_worker, ...)")
    ap.add_argument("--bin", default=None, help="the folder of the binaries itself")
    ap.add_argument("--cache", default=os.environ.get("PW_BENCH_CACHE", "/tmp/pw-bench-cache"))
    ap.add_argument("--timeout", type=float, default=0,
                    help="seconds per download (default: 4x the capped time + 60)")
    ap.add_argument("--keep", action="store_true", help="keep logs and failed downloads")
    args = ap.parse_args()
    args.bin = os.path.abspath(args.bin or os.path.join(args.build, "bin"))
    return bench(args)


if __name__ == "__main__":
    sys.exit(main())
