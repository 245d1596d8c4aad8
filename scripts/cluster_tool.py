#!/usr/bin/env python3
"""Measurements for scripts/cluster.sh, from one process that opens its
sockets inside the fleet's network namespaces (setns(2) around socket(2):
a socket stays in the namespace it was created in). Root only; it touches
nothing but the namespaces named on its command line.

  mesh      ICMP echo from every pod to every other pod (raw sockets, all
            pairs in flight at once, unanswered pairs retried).
  converge  poll every node's /metrics until `encapd_routes` reaches a
            value; per node, the time from an event (a lease put whose
            time is given, or an etcd delete this tool makes) to the table
            holding the change.
  traffic   counted UDP streams between pods plus a few rate-limited TCP
            transfers, until SIGINT/SIGTERM (or --max-duration); reports
            every datagram lost, duplicated or reordered, and per TCP
            transfer the bytes, a SHA-256 match and the longest gap.
  stats     p50/p99/max of a samples file written by `converge --samples`.

Output: `KEY=VALUE` figures on one line prefixed with the subcommand's tag
(MESH, CONVERGE, TRAFFIC, STATS); details on stderr.
"""

import argparse
import base64
import ctypes
import datetime
import hashlib
import json
import math
import os
import re
import selectors
import signal
import socket
import struct
import sys
import time

CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)
_HOME = os.open("/proc/self/ns/net", os.O_RDONLY)
_NS_FDS = {}


def in_ns(ns, fn):
    """fn() run with this thread in namespace ns (for creating sockets)."""
    fd = _NS_FDS.get(ns)
    if fd is None:
        fd = os.open(f"/var/run/netns/{ns}", os.O_RDONLY)
        _NS_FDS[ns] = fd
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns into {ns}: {os.strerror(err)}")
    try:
        return fn()
    finally:
        if _libc.setns(_HOME, CLONE_NEWNET) != 0:
            # Never carry on in the wrong namespace.
            os._exit(3)


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def pct(values, q):
    """Nearest-rank percentile (q in 0..1) of a non-empty list."""
    s = sorted(values)
    return s[max(0, math.ceil(q * len(s)) - 1)]


def summary(prefix, values):
    if not values:
        return f"{prefix}_p50_ms=NA {prefix}_p99_ms=NA {prefix}_max_ms=NA"
    return (f"{prefix}_p50_ms={pct(values, 0.5):.1f} {prefix}_p99_ms={pct(values, 0.99):.1f} "
            f"{prefix}_max_ms={max(values):.1f}")


def http(ns, host, port, method, path, body=None, timeout=2.0):
    """One HTTP/1.0 request from inside namespace ns; (status, body bytes)."""
    s = in_ns(ns, lambda: socket.socket(socket.AF_INET, socket.SOCK_STREAM))
    try:
        s.settimeout(timeout)
        s.connect((host, port))
        data = body.encode() if isinstance(body, str) else (body or b"")
        req = f"{method} {path} HTTP/1.0\r\nHost: {host}:{port}\r\nContent-Length: {len(data)}\r\n"
        if data:
            req += "Content-Type: application/json\r\n"
        s.sendall(req.encode() + b"\r\n" + data)
        chunks = []
        while True:
            c = s.recv(65536)
            if not c:
                break
            chunks.append(c)
    finally:
        s.close()
    raw = b"".join(chunks)
    head, _, payload = raw.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1]) if head.startswith(b"HTTP/") else 0
    return status, payload


METRIC_RE = re.compile(rb"^(encapd_routes|encapd_table_published_timestamp_seconds|encapd_table_version) ([0-9.eE+-]+)$", re.M)


def scrape(ns, addr):
    host, port = addr.rsplit(":", 1)
    status, body = http(ns, host, int(port), "GET", "/metrics")
    if status != 200:
        raise OSError(f"/metrics in {ns}: HTTP {status}")
    return {m.group(1).decode(): float(m.group(2)) for m in METRIC_RE.finditer(body)}


def parse_time(text):
    """Unix seconds from a float or an RFC 3339 time (encapd's log stamps)."""
    try:
        return float(text)
    except ValueError:
        return datetime.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


# ---------------------------------------------------------------------------
# converge


def cmd_converge(a):
    nodes = [n for n in a.nodes.split(",") if n]
    t0 = parse_time(a.since) if a.since else None
    if a.delete_key:
        ens, url = a.etcd.split("=", 1)
        host, port = url.removeprefix("http://").rsplit(":", 1)
        body = json.dumps({"key": base64.b64encode(a.delete_key.encode()).decode()})
        t0 = time.time()
        status, payload = http(ens, host, int(port), "POST", "/v3/kv/deleterange", body, timeout=5)
        t1 = time.time()
        deleted = int(json.loads(payload or b"{}").get("deleted", 0)) if status == 200 else 0
        log(f"converge: deleted {a.delete_key} (HTTP {status}, {deleted} key(s)) in {(t1 - t0) * 1000:.1f} ms")
        if status != 200 or deleted != 1:
            print(f"CONVERGE error=delete_failed status={status} deleted={deleted}")
            return 1
    if t0 is None and not a.since_log:
        t0 = time.time()
    watch = None
    if a.watch_key:
        # The event is the put of this key, timed by an etcd watch opened
        # now (through etcd's HTTP gateway): when it reaches this watcher, it
        # reaches every other watcher (each node's encapd) too.
        ens, url = a.etcd.split("=", 1)
        host, port = url.removeprefix("http://").rsplit(":", 1)
        b64 = base64.b64encode(a.watch_key.encode()).decode()
        watch = in_ns(ens, lambda: socket.socket(socket.AF_INET, socket.SOCK_STREAM))
        watch.settimeout(5)
        watch.connect((host, int(port)))
        body = json.dumps({"create_request": {"key": b64}})
        watch.sendall(f"POST /v3/watch HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
                      f"Content-Length: {len(body)}\r\n\r\n{body}".encode())
        seen = b""
        while b'"created":true' not in seen:
            chunk = watch.recv(65536)
            if not chunk:
                raise OSError("etcd closed the watch")
            seen += chunk
        watch.setblocking(False)
        if a.ready_file:
            open(a.ready_file, "w").close()
        watch_buf, watch_t0 = b"", None
    deadline = time.time() + a.timeout
    pending = set(nodes)
    published, observed, errors = {}, {}, {}
    def poll_watch():
        nonlocal watch_buf, watch_t0
        if watch is None or watch_t0 is not None:
            return
        try:
            while True:
                chunk = watch.recv(65536)
                if not chunk:
                    break
                watch_buf += chunk
                if b64.encode() in watch_buf:
                    watch_t0 = time.time()
                    break
        except BlockingIOError:
            pass

    while pending and time.time() < deadline:
        poll_watch()
        for ns in sorted(pending):
            poll_watch()
            try:
                m = scrape(ns, a.metrics)
            except OSError as e:
                errors[ns] = str(e)
                continue
            now = time.time()
            if int(m.get("encapd_routes", -1)) == a.routes:
                published[ns] = m.get("encapd_table_published_timestamp_seconds", now)
                observed[ns] = now
                pending.discard(ns)
        if pending:
            time.sleep(a.interval)
    if watch is not None:
        poll_watch()
        watch.close()
        t0 = watch_t0
        if t0 is None:
            print(f"CONVERGE error=no_watch_event key={a.watch_key}")
            return 1
    elif a.since_log:
        # The event is a line of a log (e.g. the joining node's "this node
        # holds ..."), written while this was already polling.
        t0 = None
        with open(a.since_log, errors="replace") as f:
            for line in f:
                if a.since_match in line:
                    t0 = parse_time(line.split()[0])
                    break
        if t0 is None:
            print(f"CONVERGE error=no_event_in_log log={a.since_log}")
            return 1
    if a.samples:
        # Also relative to a second reference (e.g. the joining process's
        # start), under LABEL-start.
        refs = [(a.label, t0)]
        if a.start_file and os.path.exists(a.start_file):
            with open(a.start_file) as f:
                refs.append((a.label + "-start", parse_time(f.read().strip())))
        with open(a.samples, "a") as f:
            for label, ref in refs:
                for ns in nodes:
                    if ns in published:
                        f.write(f"{label} {ns} {(published[ns] - ref) * 1000:.3f} {(observed[ns] - ref) * 1000:.3f}\n")
    published = {ns: (ts - t0) * 1000 for ns, ts in published.items()}
    observed = {ns: (ts - t0) * 1000 for ns, ts in observed.items()}
    for ns in sorted(pending):
        log(f"converge: {ns} did not reach {a.routes} routes within {a.timeout} s ({errors.get(ns, 'no error')})")
    print(f"CONVERGE event={a.label} nodes={len(nodes)} converged={len(published)} "
          f"{summary('published', list(published.values()))} {summary('observed', list(observed.values()))}")
    return 0 if not pending else 1


def cmd_stats(a):
    pub, obs = [], []
    try:
        with open(a.file) as f:
            for line in f:
                parts = line.split()
                if len(parts) == 4 and (not a.label or parts[0] == a.label):
                    pub.append(float(parts[2]))
                    obs.append(float(parts[3]))
    except FileNotFoundError:
        pass
    print(f"STATS event={a.label or 'all'} samples={len(pub)} {summary('published', pub)} {summary('observed', obs)}")
    return 0


# ---------------------------------------------------------------------------
# mesh


def checksum(data):
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    s = (s >> 16) + (s & 0xFFFF)
    s += s >> 16
    return ~s & 0xFFFF


def parse_pods(text):
    pods = []
    for item in text.split(","):
        if item:
            ns, ip = item.split("=", 1)
            pods.append((ns, ip))
    return pods


def cmd_mesh(a):
    pods = parse_pods(a.pods)
    n = len(pods)
    ip_index = {ip: i for i, (_, ip) in enumerate(pods)}
    only = set(int(x) for x in a.only.split(",")) if a.only else None
    pairs = {(i, j) for i in range(n) for j in range(n) if i != j and (only is None or i in only or j in only)}
    sel = selectors.DefaultSelector()
    socks = []
    for i, (ns, _) in enumerate(pods):
        s = in_ns(ns, lambda: socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP))
        s.setblocking(False)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        sel.register(s, selectors.EVENT_READ, i)
        socks.append(s)
    ident_base = (os.getpid() * 7) & 0xFF00
    answered, rtts, sent_at = set(), [], {}
    t_start = time.time()
    for attempt in range(a.attempts):
        todo = sorted(pairs - answered)
        if not todo:
            break
        last_src = None
        for i, j in todo:
            if a.pace and last_src is not None and i != last_src:
                time.sleep(a.pace)
            last_src = i
            ident = ident_base | (i & 0xFF)
            seq = (attempt << 8) | (j & 0xFF)
            hdr = struct.pack("!BBHHH", 8, 0, 0, ident, seq) + b"encapd-cluster-mesh"
            pkt = hdr[:2] + struct.pack("!H", checksum(hdr)) + hdr[4:]
            sent_at[(i, j, attempt)] = time.time()
            try:
                socks[i].sendto(pkt, (pods[j][1], 0))
            except OSError as e:
                log(f"mesh: {pods[i][0]} -> {pods[j][1]}: {e}")
        wait_until = time.time() + a.wait
        while time.time() < wait_until and not pairs <= answered:
            for key, _ in sel.select(timeout=0.05):
                s = key.fileobj
                while True:
                    try:
                        data, _addr = s.recvfrom(2048)
                    except BlockingIOError:
                        break
                    ihl = (data[0] & 0x0F) * 4
                    if len(data) < ihl + 8:
                        continue
                    typ, _code, _ck, ident, seq = struct.unpack("!BBHHH", data[ihl:ihl + 8])
                    if typ != 0 or (ident & 0xFF00) != ident_base:
                        continue
                    src_ip = socket.inet_ntoa(data[12:16])
                    i, j, att = ident & 0xFF, ip_index.get(src_ip), seq >> 8
                    if j is None or i != key.data or (i, j) not in pairs or (i, j) in answered:
                        continue
                    answered.add((i, j))
                    if (i, j, att) in sent_at:
                        rtts.append((time.time() - sent_at[(i, j, att)]) * 1000)
        if attempt + 1 < a.attempts and not pairs <= answered:
            log(f"mesh: attempt {attempt + 1}: {len(pairs - answered)} of {len(pairs)} pairs unanswered; retrying")
    failed = sorted(pairs - answered)
    for i, j in failed[:20]:
        log(f"mesh: no answer {pods[i][0]} ({pods[i][1]}) -> {pods[j][0]} ({pods[j][1]})")
    print(f"MESH pairs={len(pairs)} ok={len(answered)} failed={len(failed)} "
          f"seconds={time.time() - t_start:.2f} {summary('rtt', rtts)}")
    return 0 if not failed else 1


# ---------------------------------------------------------------------------
# traffic

UDP_PORT = 5300
TCP_PORT = 5400
UDP_HDR = struct.Struct("!HI")  # stream, sequence


class Stream:
    def __init__(self, sid, src, dst):
        self.sid, self.src, self.dst = sid, src, dst
        self.sent = 0
        self.send_errors = 0
        self.seen = bytearray()
        self.received = 0
        self.dups = 0
        self.reordered = 0
        self.highest = -1


class Transfer:
    def __init__(self, tid, src, dst, block):
        self.tid, self.src, self.dst = tid, src, dst
        self.block = block
        self.sent = 0
        self.received = 0
        self.tx_hash = hashlib.sha256()
        self.rx_hash = hashlib.sha256()
        self.tx = None
        self.rx = None
        self.listener = None
        self.last_rx = None
        self.max_gap = 0.0
        self.done_tx = False
        self.eof = False
        self.error = ""


def retrans_segs(ns):
    """Tcp RetransSegs of namespace ns (/proc/net is the reader's namespace)."""
    def read():
        with open("/proc/net/snmp") as f:
            rows = [line.split() for line in f if line.startswith("Tcp:")]
        return int(rows[1][rows[0].index("RetransSegs")])
    return in_ns(ns, read)


def cmd_traffic(a):
    pods = parse_pods(a.pods)
    n = len(pods)
    stop = {"flag": False}

    def on_signal(_sig, _frame):
        stop["flag"] = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    sel = selectors.DefaultSelector()

    # UDP: one socket per pod; pod i sends streams to pods i+offset.
    usocks = []
    for ns, ip in pods:
        def mk(ip=ip):
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.setsockopt(socket.SOL_SOCKET, 33, 8 << 20)  # SO_RCVBUFFORCE
            s.setsockopt(socket.SOL_SOCKET, 32, 8 << 20)  # SO_SNDBUFFORCE
            s.bind((ip, UDP_PORT))
            return s
        s = in_ns(ns, mk)
        s.setblocking(False)
        sel.register(s, selectors.EVENT_READ, ("udp", len(usocks)))
        usocks.append(s)
    offsets = []
    for k in range(a.streams):
        off = (1 + k * max(1, n // max(1, a.streams))) % n
        if off and off not in offsets:
            offsets.append(off)
    streams = [Stream(len(offsets) * i + k, i, (i + off) % n) for i in range(n) for k, off in enumerate(offsets)]
    payload_pad = b"\xa5" * max(0, a.size - UDP_HDR.size)

    # TCP: a few transfers between pods half the fleet apart.
    block = hashlib.sha256(b"encapd").digest() * 2048  # 64 KiB
    transfers = []
    for k in range(min(a.tcp, n)):
        src = (k * n) // max(1, a.tcp)
        dst = (src + n // 2 + k) % n
        if dst == src:
            dst = (src + 1) % n
        t = Transfer(k, src, dst, block)
        ns, ip = pods[dst]

        def listen(ip=ip, port=TCP_PORT + k):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((ip, port))
            s.listen(1)
            return s
        t.listener = in_ns(ns, listen)
        t.listener.setblocking(False)
        sel.register(t.listener, selectors.EVENT_READ, ("accept", k))
        ns_src, _ = pods[src]
        t.tx = in_ns(ns_src, lambda: socket.socket(socket.AF_INET, socket.SOCK_STREAM))
        t.tx.setblocking(False)
        try:
            t.tx.connect((ip, TCP_PORT + k))
        except BlockingIOError:
            pass
        transfers.append(t)

    retrans_before = {pods[t.src][0]: retrans_segs(pods[t.src][0]) for t in transfers}
    t_start = time.time()
    hard_stop = t_start + a.max_duration
    if a.ready_file:
        open(a.ready_file, "w").close()
    log(f"traffic: {len(streams)} UDP streams of {a.rate}/s ({a.size} B), {len(transfers)} TCP transfers of "
        f"{a.tcp_rate} B/s; until SIGINT/SIGTERM or {a.max_duration} s")
    stop_at = None

    def handle_udp(s):
        while True:
            try:
                data = s.recv(4096)
            except BlockingIOError:
                return
            except OSError:
                return
            if len(data) < UDP_HDR.size:
                continue
            sid, seq = UDP_HDR.unpack_from(data)
            if sid >= len(streams):
                continue
            st = streams[sid]
            if seq >= len(st.seen):
                st.seen.extend(b"\0" * (seq + 1 - len(st.seen) + 4096))
            if st.seen[seq]:
                st.dups += 1
                continue
            st.seen[seq] = 1
            st.received += 1
            if seq < st.highest:
                st.reordered += 1
            else:
                st.highest = seq

    def handle_tcp_rx(t):
        while True:
            try:
                data = t.rx.recv(262144)
            except BlockingIOError:
                return
            except OSError as e:
                t.error = f"receive: {e}"
                sel.unregister(t.rx)
                t.eof = True
                return
            now = time.time()
            if not data:
                sel.unregister(t.rx)
                t.eof = True
                return
            if t.last_rx is not None and not t.done_tx:
                t.max_gap = max(t.max_gap, now - t.last_rx)
            t.last_rx = now
            t.received += len(data)
            t.rx_hash.update(data)

    last_loop, loop_max = time.time(), 0.0
    while True:
        now = time.time()
        # This process's own longest stall (scheduling on a busy machine):
        # a TCP gap no longer than it is the harness's, not encapd's.
        if stop_at is None:
            if now - last_loop > 0.1:
                log(f"traffic: harness stalled {(now - last_loop) * 1000:.0f} ms at {now - t_start:.2f} s")
            loop_max = max(loop_max, now - last_loop)
        last_loop = now
        if stop_at is None and (stop["flag"] or now >= hard_stop):
            stop_at = now
            for t in transfers:
                if t.tx is not None and not t.done_tx:
                    t.done_tx = True
                    try:
                        t.tx.shutdown(socket.SHUT_WR)
                    except OSError as e:
                        t.error = t.error or f"shutdown: {e}"
        if stop_at is not None:
            tcp_done = all(t.eof or t.error for t in transfers)
            if (now - stop_at >= a.drain and tcp_done) or now - stop_at >= a.drain + 20:
                break
        else:
            elapsed = now - t_start
            due = int(elapsed * a.rate)
            for st in streams:
                burst = 0
                while st.sent < due and burst < 200:
                    try:
                        usocks[st.src].sendto(UDP_HDR.pack(st.sid, st.sent) + payload_pad, (pods[st.dst][1], UDP_PORT))
                    except BlockingIOError:
                        break
                    except OSError:
                        st.send_errors += 1
                        break
                    st.sent += 1
                    burst += 1
            for t in transfers:
                if t.tx is None or t.done_tx or t.error:
                    continue
                want = int(elapsed * a.tcp_rate) - t.sent
                while want > 0:
                    off = t.sent % len(t.block)
                    chunk = t.block[off:off + min(want, 65536)]
                    try:
                        k = t.tx.send(chunk)
                    except (BlockingIOError, InterruptedError):
                        break
                    except OSError as e:
                        if e.errno in (115, 114, 11):  # in progress, already, again
                            break
                        t.error = f"send: {e}"
                        break
                    t.tx_hash.update(chunk[:k])
                    t.sent += k
                    want -= k
        for key, _ in sel.select(timeout=a.tick):
            kind, idx = key.data
            if kind == "udp":
                handle_udp(key.fileobj)
            elif kind == "accept":
                t = transfers[idx]
                try:
                    conn, _ = t.listener.accept()
                except BlockingIOError:
                    continue
                conn.setblocking(False)
                t.rx = conn
                sel.unregister(t.listener)
                sel.register(conn, selectors.EVENT_READ, ("tcp", idx))
            elif kind == "tcp":
                handle_tcp_rx(transfers[idx])

    duration = (stop_at or time.time()) - t_start
    sent = sum(s.sent for s in streams)
    received = sum(s.received for s in streams)
    lost = sum(s.sent - s.received for s in streams)
    for st in streams:
        if st.sent != st.received or st.send_errors:
            missing = [i for i in range(st.sent) if i >= len(st.seen) or not st.seen[i]]
            log(f"traffic: stream {st.sid} {pods[st.src][0]} -> {pods[st.dst][0]}: sent {st.sent} received {st.received} "
                f"send errors {st.send_errors}; first missing {missing[:10]}")
    retrans = sum(retrans_segs(ns) - v for ns, v in retrans_before.items())
    tcp_ok = 0
    max_gap = 0.0
    tcp_bytes = 0
    for t in transfers:
        ok = not t.error and t.sent > 0 and t.sent == t.received and t.tx_hash.digest() == t.rx_hash.digest()
        tcp_ok += ok
        max_gap = max(max_gap, t.max_gap)
        tcp_bytes += t.received
        log(f"traffic: tcp {t.tid} {pods[t.src][0]} -> {pods[t.dst][0]}: sent {t.sent} received {t.received} "
            f"sha256 {'match' if ok else 'MISMATCH'} longest gap {t.max_gap * 1000:.1f} ms {t.error}")
    print(f"TRAFFIC seconds={duration:.1f} udp_streams={len(streams)} udp_rate={a.rate} udp_sent={sent} "
          f"udp_received={received} udp_lost={lost} udp_dups={sum(s.dups for s in streams)} "
          f"udp_reordered={sum(s.reordered for s in streams)} udp_send_errors={sum(s.send_errors for s in streams)} "
          f"tcp_transfers={len(transfers)} tcp_ok={tcp_ok} tcp_bytes={tcp_bytes} tcp_max_gap_ms={max_gap * 1000:.1f} "
          f"tcp_retransmitted_segments={retrans} "
          f"harness_max_stall_ms={loop_max * 1000:.1f}")
    return 0 if lost == 0 and tcp_ok == len(transfers) else 1


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)

    m = sub.add_parser("mesh")
    m.add_argument("--pods", required=True, help="NS=IP,... (pod namespaces and addresses)")
    m.add_argument("--only", help="comma-separated pod indices: only pairs from or to them")
    m.add_argument("--attempts", type=int, default=5)
    m.add_argument("--wait", type=float, default=1.0, help="seconds to wait for answers per attempt")
    m.add_argument("--pace", type=float, default=0.0, help="seconds between one source pod's requests and the next's")

    c = sub.add_parser("converge")
    c.add_argument("--nodes", required=True, help="node namespaces, comma-separated")
    c.add_argument("--routes", type=int, required=True, help="encapd_routes value that means converged")
    c.add_argument("--since", help="event time (Unix seconds or RFC 3339)")
    c.add_argument("--since-log", help="the event is the first line of this log containing --since-match (time first)")
    c.add_argument("--since-match", default="this node holds")
    c.add_argument("--start-file", help="a file holding a second reference time for --samples (LABEL-start lines)")
    c.add_argument("--watch-key", help="the event is the put of this etcd key, seen through a watch (needs --etcd)")
    c.add_argument("--ready-file", help="created once the watch is established")
    c.add_argument("--delete-key", help="delete this etcd key (the event) first")
    c.add_argument("--etcd", help="NS=http://HOST:PORT of an etcd member, for --delete-key")
    c.add_argument("--metrics", default="127.0.0.1:9285")
    c.add_argument("--timeout", type=float, default=30)
    c.add_argument("--interval", type=float, default=0.005)
    c.add_argument("--label", default="event")
    c.add_argument("--samples", help="append 'LABEL NODE PUBLISHED_MS OBSERVED_MS' lines here")

    s = sub.add_parser("stats")
    s.add_argument("file")
    s.add_argument("--label", default="")

    t = sub.add_parser("traffic")
    t.add_argument("--pods", required=True)
    t.add_argument("--streams", type=int, default=2, help="UDP streams sent by each pod")
    t.add_argument("--rate", type=float, default=100, help="datagrams per second per stream")
    t.add_argument("--size", type=int, default=64)
    t.add_argument("--tcp", type=int, default=3, help="TCP transfers")
    t.add_argument("--tcp-rate", type=float, default=2_000_000, help="bytes per second per transfer")
    t.add_argument("--max-duration", type=float, default=600)
    t.add_argument("--drain", type=float, default=2.0)
    t.add_argument("--tick", type=float, default=0.005)
    t.add_argument("--ready-file")

    a = p.parse_args()
    return {"mesh": cmd_mesh, "converge": cmd_converge, "stats": cmd_stats, "traffic": cmd_traffic}[a.cmd](a)


if __name__ == "__main__":
    sys.exit(main())
