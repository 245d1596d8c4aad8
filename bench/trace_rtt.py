#!/usr/bin/env python3
"""Cuts sparse UDP ping-pongs out of a `perf script` record and puts each
round trip's events on one time line (see bench/trace_rtt.sh).

Usage: trace_rtt.py MODE SCRIPT_TXT client=PID server=PID
                    [nodeA-worker=TID,TID,...] [nodeB-worker=TID,...]

A round trip starts at the client's send and ends at its next send. Events
are labelled by who did what; a device event is kept only when its length
is one a 64-byte probe has on that kind of device (so traffic of other
namespaces on the machine, which may use the same device names, is left
out), and a scheduler or system-call event only for the threads named.
"""

import re
import statistics
import sys
from collections import defaultdict

LINE = re.compile(r"^\s*(?P<comm>.+?)\s+(?P<pid>\d+)/(?P<tid>\d+)\s+\[(?P<cpu>\d+)\]\s+(?P<time>[\d.]+):\s+(?P<event>[\w:]+):\s?(?P<trace>.*)$")
# A 64-byte UDP payload over IPv4: 92 bytes of IP packet; +14 on an Ethernet
# device (veth, vxlan), +42 in the udp backend's underlay frame (Ethernet,
# IP, UDP), +64 in a VXLAN underlay frame (Ethernet, IP, UDP, VXLAN,
# inner Ethernet).
PROBE_LENS = {92, 106, 134, 156}
SYSCALLS = {
    "sys_enter_sendto": "sendto",
    "sys_enter_sendmsg": "sendmsg",
    "sys_exit_recvfrom": "recvfrom returns",
    "sys_exit_recvmsg": "recvmsg returns",
    "sys_exit_recvmmsg": "recvmmsg returns",
    "sys_exit_read": "read returns",
    "sys_enter_write": "write",
    "sys_enter_writev": "writev",
    "sys_enter_io_uring_enter": "io_uring_enter",
    "sys_exit_io_uring_enter": "io_uring_enter returns",
    "sys_exit_epoll_wait": "epoll_wait returns",
    "sys_exit_epoll_pwait": "epoll_wait returns",
}


def field(trace, name):
    m = re.search(r"\b%s[=: ]\s*([^\s,]+)" % re.escape(name), trace)
    return m.group(1) if m else None


def main():
    mode, path = sys.argv[1], sys.argv[2]
    role_pids, role_tids = {}, {}
    for arg in sys.argv[3:]:
        name, _, ids = arg.partition("=")
        for i in filter(None, ids.split(",")):
            (role_pids if name in ("client", "server") else role_tids)[int(i)] = name
    client = next((p for p, r in role_pids.items() if r == "client"), None)

    def role(pid, tid):
        return role_tids.get(tid) or role_pids.get(pid)

    def role_of(task):
        """The role of the task a trace field names (its tid, else its process)."""
        return task is not None and (role_tids.get(int(task)) or role_pids.get(int(task)))

    trips = []  # [(t0, [(t, label)])]
    current = None
    for line in open(path, errors="replace"):
        m = LINE.match(line)
        if not m:
            continue
        pid, tid, t = int(m["pid"]), int(m["tid"]), float(m["time"])
        event = m["event"].split(":", 1)[-1]
        trace = m["trace"]
        who = role(pid, tid)
        label = None
        if event in ("sys_enter_sendto", "sys_enter_sendmsg") and pid == client:
            current = (t, [])
            trips.append(current)
            label = "client: " + SYSCALLS[event]
        elif current is None:
            continue
        elif event in ("net_dev_xmit", "netif_rx", "netif_receive_skb"):
            dev, length = field(trace, "dev"), field(trace, "len")
            if dev is None or length is None or int(length) not in PROBE_LENS:
                continue
            verb = {"net_dev_xmit": "xmit", "netif_rx": "netif_rx", "netif_receive_skb": "receive_skb"}[event]
            label = f"{verb} {dev}" + (f" (in {who})" if who else "")
        elif event == "sched_wakeup":
            wrole = role_of(field(trace, "pid"))
            if not wrole:
                continue
            label = f"wake {wrole}" + (f" (by {who})" if who else "")
        elif event == "sched_switch":
            nrole = role_of(field(trace, "next_pid"))
            if not nrole:
                continue
            label = f"{nrole} runs"
        elif event.startswith("io_uring_"):
            if not who:
                continue
            op = field(trace, "opcode") or field(trace, "op") or ""
            kind = {"io_uring_submit_req": "submit", "io_uring_complete": "completion", "io_uring_task_add": "task work queued"}.get(event, event)
            label = f"{who}: io_uring {kind} {op}".rstrip()
        elif event in SYSCALLS:
            if not who:
                continue
            label = f"{who}: {SYSCALLS[event]}"
        if label:
            current[1].append((t, label))

    # Drop the last (possibly cut) trip and trips without the reply.
    complete = []
    for t0, events in trips[:-1]:
        back = [t for t, label in events if label.startswith("client: recv")]
        if back:
            complete.append((back[-1] - t0, t0, events))
    if not complete:
        print(f"{mode}: no complete round trip found (client pid {client})")
        return
    rtts = sorted(c[0] for c in complete)
    print(f"== {mode}: {len(complete)} round trips traced; RTT (under tracing) p50 {statistics.median(rtts) * 1e6:.1f} us, "
          f"p90 {rtts[int(len(rtts) * 0.9)] * 1e6:.1f} us")

    # Stages: a label with its occurrence number within the trip.
    since_send = defaultdict(list)
    since_prev = defaultdict(list)
    for _, t0, events in complete:
        seen = defaultdict(int)
        prev = t0
        for t, label in events:
            seen[label] += 1
            key = label if seen[label] == 1 else f"{label} #{seen[label]}"
            since_send[key].append(t - t0)
            since_prev[key].append(t - prev)
            prev = t
    n = len(complete)
    rows = [(statistics.median(v), k) for k, v in since_send.items() if len(v) >= n * 0.2]
    print(f"{'stage':64} {'trips':>6} {'since send':>11} {'since prev':>11}")
    for med, key in sorted(rows):
        print(f"{key[:64]:64} {100 * len(since_send[key]) / n:5.0f}% {med * 1e6:9.1f}us {statistics.median(since_prev[key]) * 1e6:9.1f}us")

    # The round trip with the median RTT, event by event.
    rtt, t0, events = sorted(complete, key=lambda c: c[0])[n // 2]
    print(f"-- the median round trip ({rtt * 1e6:.1f} us), event by event (us since send, +us since previous):")
    prev = t0
    for t, label in events:
        print(f"{(t - t0) * 1e6:9.1f} {(t - prev) * 1e6:+8.1f}  {label}")
        prev = t


if __name__ == "__main__":
    main()
