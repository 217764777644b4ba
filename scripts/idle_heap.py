#!/usr/bin/env python3
"""What an idle session keeps on the gateway's heap, measured from outside.

    python3 scripts/idle_heap.py [--sessions 500] [--touch 30000] BIN [BIN ...]

For each gateway binary: writes the starter setup into a scratch directory
(`BIN serve`), sets `heartbeat_secs = 2`, starts it, logs `appserver1` in
once, opens `--sessions` sessions with its resume token, and, with
`--touch N`, has each send one `session.ping` whose id is N bytes long (the
answer echoes it). After 5 s (two heartbeats) it prints, per session, the
growth of the gateway's RSS and of glibc's heap in use (`malloc_stats()`,
called in the gateway through gdb), then closes everything.

RSS also counts memory freed but kept by glibc for reuse; the heap in use
is what the sessions hold. Needs Python `websockets` (pip) and gdb, and
ptrace rights over the gateway (root, or kernel.yama.ptrace_scope = 0).
BENCHMARKS.md, "Memory per idle session", has the results.
"""

import argparse
import asyncio
import json
import os
import re
import ssl
import subprocess
import tempfile
import time

import websockets

PORT = 8443


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def heap_in_use(pid, log):
    """glibc's `in use bytes`, all arenas: malloc_stats() writes to stderr."""
    before = os.path.getsize(log)
    subprocess.run(
        ["gdb", "-p", str(pid), "-batch", "-ex", "call (void)malloc_stats()"],
        capture_output=True,
        check=True,
    )
    with open(log) as f:
        f.seek(before)
        total = f.read().split("Total (incl. mmap):")[-1]
    return int(re.search(r"in use bytes\s*=\s*(\d+)", total).group(1))


async def measure(pid, log, ca, password, sessions, touch):
    ctx = ssl.create_default_context(cafile=ca)
    url = f"wss://127.0.0.1:{PORT}/adjunct"
    login = {"user": "appserver1", "password": password}
    async with websockets.connect(url, ssl=ctx) as ws:
        await ws.send(json.dumps({"jsonrpc": "2.0", "id": 1, "method": "session.login", "params": login}))
        token = json.loads(await ws.recv())["result"]["resumeToken"]
    await asyncio.sleep(1)
    rss0, heap0 = rss_kib(pid), heap_in_use(pid, log)
    opened = []
    gate = asyncio.Semaphore(50)

    async def one():
        async with gate:
            ws = await websockets.connect(
                url,
                ssl=ctx,
                max_size=None,
                ping_interval=None,
                additional_headers={"Authorization": f"Bearer {token}"},
            )
            if touch:
                await ws.send(json.dumps({"jsonrpc": "2.0", "id": "x" * touch, "method": "session.ping"}))
                await ws.recv()
            opened.append(ws)

    await asyncio.gather(*(one() for _ in range(sessions)))
    await asyncio.sleep(5)
    rss1, heap1 = rss_kib(pid), heap_in_use(pid, log)
    n = len(opened)
    for ws in opened:
        await ws.close()
    return (rss1 - rss0) / n, (heap1 - heap0) / n / 1024


def run(binary, sessions, touch):
    with tempfile.TemporaryDirectory() as d:
        # `serve` writes the starter, prints the passwords, then serves: stop it.
        p = subprocess.Popen([binary, "serve"], cwd=d, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        password = None
        for line in p.stdout:
            m = re.match(r"\s+appserver1: (\S+)", line)
            if m:
                password = m.group(1)
                break
        p.terminate()
        p.wait()
        path = os.path.join(d, "gateway.toml")
        with open(path) as f:
            config = f.read()
        with open(path, "w") as f:
            f.write(config.replace("heartbeat_secs = 30", "heartbeat_secs = 2"))
        log = os.path.join(d, "stderr.log")
        with open(log, "w") as err:
            gw = subprocess.Popen([binary, "serve"], cwd=d, stdout=subprocess.DEVNULL, stderr=err)
        try:
            time.sleep(1.5)
            ca = os.path.join(d, "certs", "ca.pem")
            return asyncio.run(measure(gw.pid, log, ca, password, sessions, touch))
        finally:
            gw.terminate()
            gw.wait()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sessions", type=int, default=500)
    ap.add_argument("--touch", type=int, default=0)
    ap.add_argument("binaries", nargs="+")
    args = ap.parse_args()
    for binary in args.binaries:
        rss, heap = run(binary, args.sessions, args.touch)
        print(f"{binary}: {args.sessions} sessions, touch {args.touch} B: "
              f"RSS {rss:.1f} KiB/session, heap in use {heap:.1f} KiB/session")


if __name__ == "__main__":
    main()
