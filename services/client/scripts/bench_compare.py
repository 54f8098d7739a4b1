#!/usr/bin/env python3
"""`make bench-compare`: etcd 3.5 and Reinado side by side, with one load generator.

Starts a 3-member etcd and a 3-node Reinado with a proxy on loopback (fresh data dirs for each round), runs the
same workloads against both with `reinado bench --api etcd` (etcd's v3 KV API, which etcd, Reinado's nodes and
its proxy all serve), in alternating rounds, and prints per row the median ops/s (with the range), p50, p99,
the servers' CPU time per 1,000 operations (from /proc: user + system time of every server process, the
proxy's included) and the load generator's (the bench process's own), and the Reinado/etcd ratios against the targets.

A benchmark, not a test: bounded (ROUNDS x systems x rows x DURATION seconds, plus start-ups), it reports.

Environment:
  ROUNDS=3        rounds; each runs every system once, in alternating order
  DURATION=5      seconds per measured run
  ROWS="put:linearizable:1 put:linearizable:64 get:linearizable:64 get:serializable:64"
  SYSTEMS="etcd reinado-proxy reinado-nodes"
                  reinado-proxy: the load through one proxy; reinado-nodes: straight to the three nodes
  BIN=target/release   ETCD_BIN=target/etcd/bin   KEYS=10000   VALUE_SIZE=256
"""

import json
import os
import random
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

BIN = os.environ.get("BIN", "target/release")
ETCD_BIN = os.environ.get("ETCD_BIN", "target/etcd/bin")
ROUNDS = int(os.environ.get("ROUNDS", "3"))
DURATION = int(os.environ.get("DURATION", "5"))
KEYS = os.environ.get("KEYS", "10000")
VALUE_SIZE = os.environ.get("VALUE_SIZE", "256")
ROWS = os.environ.get(
    "ROWS", "put:linearizable:1 put:linearizable:64 get:linearizable:64 get:serializable:64"
).split()
SYSTEMS = os.environ.get("SYSTEMS", "etcd reinado-proxy reinado-nodes").split()
CLK_TCK = os.sysconf("SC_CLK_TCK")
# The targets of the performance work: Reinado's ops/s at least this many times etcd's, its p99 at most
# etcd's, its servers' CPU per operation at most this share of etcd's.
TARGET_OPS = 2.0
TARGET_P99 = 1.0
TARGET_CPU = 0.6


def children_cpu_ms():
    """User + system CPU time of this script's children that exited (the load generator's runs)."""
    u = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (u.ru_utime + u.ru_stime) * 1000.0


def cpu_ms(pids):
    """User + system CPU time of `pids` so far, in milliseconds (children that exited included)."""
    total = 0
    for pid in pids:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        # After the command: state is field 3, utime 14, stime 15, cutime 16, cstime 17 (1-based).
        total += sum(int(fields[i]) for i in (11, 12, 13, 14))
    return total * 1000.0 / CLK_TCK


class Cluster:
    """Server processes of one system, started in a fresh directory."""

    def __init__(self, name, root):
        self.name = name
        self.dir = tempfile.mkdtemp(prefix=f"{name}-", dir=root)
        self.procs = []
        self.endpoints = []

    def spawn(self, args, env, log):
        out = open(os.path.join(self.dir, log), "wb")
        self.procs.append(
            subprocess.Popen(args, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        )

    def pids(self):
        return [p.pid for p in self.procs]

    def stop(self):
        for p in self.procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
        for p in self.procs:
            p.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


def free_base():
    return 20000 + random.randrange(0, 400) * 100


def start_etcd(root):
    c = Cluster("etcd", root)
    base = free_base()
    peers = ",".join(f"e{i}=http://127.0.0.1:{base + i * 10 + 1}" for i in (1, 2, 3))
    for i in (1, 2, 3):
        client, peer = f"127.0.0.1:{base + i * 10}", f"127.0.0.1:{base + i * 10 + 1}"
        c.spawn(
            [
                f"{ETCD_BIN}/etcd", "--name", f"e{i}", "--data-dir", os.path.join(c.dir, f"e{i}"),
                "--listen-client-urls", f"http://{client}", "--advertise-client-urls", f"http://{client}",
                "--listen-peer-urls", f"http://{peer}", "--initial-advertise-peer-urls", f"http://{peer}",
                "--initial-cluster", peers, "--initial-cluster-state", "new",
                "--initial-cluster-token", "bench-compare", "--log-level", "error",
            ],
            {"PATH": os.environ["PATH"]},
            f"e{i}.log",
        )
        c.endpoints.append(client)
    wait_ready(c, lambda: subprocess.run(
        [f"{ETCD_BIN}/etcdctl", "--endpoints", ",".join(c.endpoints), "endpoint", "health"],
        env={"ETCDCTL_API": "3", "PATH": os.environ["PATH"]}, capture_output=True, timeout=5,
    ).returncode == 0 and reinado_ok(c.endpoints))
    return c


def start_reinado(root, through_proxy):
    c = Cluster("reinado", root)
    base = free_base()
    peers = ",".join(f"{i}=127.0.0.1:{base + i * 10 + 1}" for i in (1, 2, 3))
    nodes = [f"127.0.0.1:{base + i * 10}" for i in (1, 2, 3)]
    for i in (1, 2, 3):
        env = {
            "PATH": os.environ["PATH"], "RUST_LOG": "warn", "REINADO_NODE_ID": str(i),
            "REINADO_PEERS": peers, "REINADO_DATA_DIR": os.path.join(c.dir, f"node{i}"),
            "REINADO_CLIENT_ADDR": nodes[i - 1], "REINADO_PEER_ADDR": f"127.0.0.1:{base + i * 10 + 1}",
        }
        c.spawn([f"{BIN}/reinado-node"], env, f"node{i}.log")
    if through_proxy:
        proxy = f"127.0.0.1:{base + 1}"
        env = {"PATH": os.environ["PATH"], "RUST_LOG": "warn", "REINADO_LISTEN": proxy,
               "REINADO_NODES": ",".join(nodes)}
        c.spawn([f"{BIN}/reinado-proxy"], env, "proxy.log")
        c.endpoints = [proxy]
    else:
        c.endpoints = nodes
    wait_ready(c, lambda: reinado_ok(c.endpoints))
    return c


def reinado_ok(endpoints):
    """True once a put through the etcd API succeeds at every endpoint (a leader is elected and known)."""
    for e in endpoints:
        r = subprocess.run(
            [f"{BIN}/reinado", "--endpoints", e, "-o", "json", "bench", "--api", "etcd", "--workload", "put",
             "--count", "1", "--keys", "1", "--timeout-ms", "1000"],
            capture_output=True, timeout=10,
        )
        if r.returncode != 0 or json.loads(r.stdout or b"{}").get("errors", 1) != 0:
            return False
    return True


def wait_ready(c, ready):
    deadline = time.time() + 30
    while time.time() < deadline:
        if any(p.poll() is not None for p in c.procs):
            break
        try:
            if ready():
                return
        except (subprocess.TimeoutExpired, ValueError):
            pass
        time.sleep(0.2)
    c.stop()
    sys.exit(f"bench-compare: {c.name} did not become ready within 30 s (logs were in {c.dir})")


def bench(c, workload, consistency, clients, prefilled):
    args = [
        f"{BIN}/reinado", "--endpoints", ",".join(c.endpoints), "-o", "json", "bench", "--api", "etcd",
        "--workload", workload, "--consistency", consistency, "--clients", str(clients),
        "--duration", str(DURATION), "--keys", KEYS, "--value-size", VALUE_SIZE,
    ]
    if prefilled:
        args.append("--prefilled")
    before, children = cpu_ms(c.pids()), children_cpu_ms()
    r = subprocess.run(args, capture_output=True, timeout=DURATION + 120)
    server, client = cpu_ms(c.pids()) - before, children_cpu_ms() - children
    if r.returncode != 0:
        sys.exit(f"bench-compare: {' '.join(args)} failed: {r.stderr.decode(errors='replace')}")
    res = json.loads(r.stdout)
    ops = max(res["throughput"] * DURATION, 1.0)
    return {
        "ops": res["throughput"],
        "p50": res["latency_ms"]["p50"],
        "p99": res["latency_ms"]["p99"],
        "errors": res["errors"],
        "server_cpu": server * 1000.0 / ops,
        "client_cpu": client * 1000.0 / ops,
    }


def run_system(name, root, results):
    c = start_etcd(root) if name == "etcd" else start_reinado(root, name == "reinado-proxy")
    try:
        if any(row.startswith("get:") for row in ROWS):
            # Every key once, not measured: the get rows read what is there.
            subprocess.run(
                [f"{BIN}/reinado", "--endpoints", ",".join(c.endpoints), "-o", "json", "bench", "--api", "etcd",
                 "--workload", "get", "--clients", "64", "--count", "1", "--keys", KEYS,
                 "--value-size", VALUE_SIZE],
                capture_output=True, check=True, timeout=300,
            )
        for row in ROWS:
            workload, consistency, clients = row.split(":")
            r = bench(c, workload, consistency, int(clients), prefilled=workload == "get")
            results.setdefault((row, name), []).append(r)
            errors = "" if r["errors"] == 0 else f"  {r['errors']} ERRORS"
            print(f"  {name:<14} {row:<24} {r['ops']:>9.0f} ops/s  p50 {r['p50']:>6.2f} ms  "
                  f"p99 {r['p99']:>6.2f} ms  CPU ms/1k ops: servers {r['server_cpu']:>6.1f}, "
                  f"load generator {r['client_cpu']:>6.1f}{errors}", flush=True)
    finally:
        c.stop()


def median_range(values, fmt):
    return f"{fmt(statistics.median(values))} ({fmt(min(values))}-{fmt(max(values))})"


def main():
    for tool in (f"{BIN}/reinado", f"{BIN}/reinado-node", f"{BIN}/reinado-proxy", f"{ETCD_BIN}/etcd"):
        if not os.access(tool, os.X_OK):
            sys.exit(f"bench-compare: {tool} is missing (make bench-compare builds and fetches them)")
    version = subprocess.run([f"{ETCD_BIN}/etcd", "--version"], capture_output=True, text=True).stdout
    print(f"bench-compare: {version.splitlines()[0]}; {ROUNDS} rounds of {DURATION} s per row; "
          f"{os.cpu_count()} CPUs; load generator: reinado bench --api etcd")
    root = tempfile.mkdtemp(prefix="reinado-bench-compare-")
    results = {}
    try:
        for rnd in range(ROUNDS):
            order = SYSTEMS if rnd % 2 == 0 else list(reversed(SYSTEMS))
            print(f"round {rnd + 1}/{ROUNDS}: {', '.join(order)}", flush=True)
            for name in order:
                run_system(name, root, results)
    finally:
        shutil.rmtree(root, ignore_errors=True)

    print()
    print(f"{'row':<24} {'system':<14} {'ops/s median (range)':>24} {'p50 ms':>7} {'p99 ms':>7} "
          f"{'srv CPU/1k':>10} {'gen CPU/1k':>10} {'ops x':>6} {'p99 x':>6} {'CPU x':>6}")
    for row in ROWS:
        base = results.get((row, "etcd"))
        for name in SYSTEMS:
            rs = results.get((row, name))
            if not rs:
                continue
            ops = [r["ops"] for r in rs]
            p50 = statistics.median(r["p50"] for r in rs)
            p99 = statistics.median(r["p99"] for r in rs)
            cpu = statistics.median(r["server_cpu"] for r in rs)
            gen = statistics.median(r["client_cpu"] for r in rs)
            ratios = ""
            if base and name != "etcd":
                b_ops = statistics.median(r["ops"] for r in base)
                b_p99 = statistics.median(r["p99"] for r in base)
                b_cpu = statistics.median(r["server_cpu"] for r in base)
                ox, px, cx = statistics.median(ops) / b_ops, p99 / b_p99, cpu / b_cpu
                def mark(ok):
                    return " " if ok else "!"
                ratios = (f"{ox:>5.2f}{mark(ox >= TARGET_OPS)} {px:>5.2f}{mark(px <= TARGET_P99)} "
                          f"{cx:>5.2f}{mark(cx <= TARGET_CPU)}")
            print(f"{row:<24} {name:<14} {median_range(ops, lambda v: f'{v:,.0f}'):>24} {p50:>7.2f} "
                  f"{p99:>7.2f} {cpu:>10.1f} {gen:>10.1f} {ratios}")
    print(f"\nratios are Reinado / etcd (medians of one run); '!' marks a miss of the target: ops x >= "
          f"{TARGET_OPS}, p99 x <= {TARGET_P99}, CPU x <= {TARGET_CPU}")


if __name__ == "__main__":
    main()
