#!/usr/bin/env python3
"""Times one load step against a Cairn application: starts `cairn load` against its entry point,
takes the step as the moment the load balancer counts its first request (polled every 2 ms),
then polls the native API every 10 ms until the first scale-up decision event and the first
member created after it is Active; prints the figures as one JSON line.

wait-active: wait until the application is Active.
step:        the load step and its figures.
"""

import argparse
import json
import os
import signal
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "platform"))
from clock import POLL, Native, epoch_ms, members  # noqa: E402

# How often the load balancer's counters are read until the load arrives.
STEP_POLL = 0.002


def wait_active(args):
    native = Native(args.api)
    deadline = time.time() + args.timeout
    view = None
    while time.time() < deadline:
        view = native.view(args.app)
        if view and view.get("status") == "Active":
            return
        time.sleep(POLL)
    sys.exit(f"{args.app} not Active within {args.timeout:g} s; last view: {json.dumps(view)}")


def first_scale_up(native, app, cluster, since_ms):
    """The first decision event for the cluster that raises its size, at or after since_ms."""
    status, body = native.get(f"/v1/events?application={app}")
    if status != 200:
        return None
    for event in json.loads(body):
        decision = event.get("decision")
        if (decision and event.get("subject") == f"cluster {cluster}"
                and epoch_ms(event.get("at")) >= since_ms and decision["to"] > decision["from"]):
            return event
    return None


def requests_at_proxy(native, app, cluster):
    """Requests the load balancer has received for the cluster, or None without an answer."""
    status, body = native.get("/v1/loadbalancer")
    if status != 200:
        return None
    for stats in json.loads(body).get("clusters") or []:
        if stats.get("key") == {"application": app, "alias": cluster}:
            return stats["requests"]["total"]
    return 0


def wait_for_requests(native, args, baseline, deadline):
    """The time of the last poll before the proxy saw the load's first request, or None."""
    quiet = time.time()
    while time.time() < deadline:
        total = requests_at_proxy(native, args.app, args.cluster)
        if total is not None and total > baseline:
            return quiet
        quiet = time.time()
        time.sleep(STEP_POLL)
    return None


def step(args):
    native = Native(args.api)
    view = native.view(args.app)
    if not view or view.get("status") != "Active":
        sys.exit(f"{args.app} is not Active before the load step: {json.dumps(view)}")
    before = {m["id"] for _, m in members(view)}
    baseline = requests_at_proxy(native, args.app, args.cluster) or 0
    command = [args.bin, "load", args.url, "--concurrency", str(args.concurrency),
               "--duration", args.duration, "--latency-ms", str(args.latency_ms), "--output", "json"]
    spawned = time.time()
    load = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        measure(args, native, load, spawned, before, baseline)
    finally:
        if load.poll() is None:
            load.kill()
            load.wait()


def measure(args, native, load, spawned, before, baseline):
    # The step is when the load reaches the proxy, not when its generator is spawned: the
    # generator's own start-up (100 to 200 ms here) is no part of the platform's reaction.
    start = wait_for_requests(native, args, baseline, spawned + args.timeout)
    decision = None
    start_ms = (start or spawned) * 1000.0
    new_member = None
    deadline = (start or spawned) + args.timeout
    while start is not None and time.time() < deadline:
        if decision is None:
            decision = first_scale_up(native, args.app, args.cluster, start_ms - 1.0)
        if decision is not None:
            view = native.view(args.app) or {}
            created = [m for alias, m in members(view)
                       if alias == args.cluster and m["id"] not in before
                       and epoch_ms(m.get("created_at")) >= epoch_ms(decision["at"]) - 1.0]
            created.sort(key=lambda m: (epoch_ms(m.get("created_at")), m["id"]))
            if created and created[0].get("active_at"):
                new_member = created[0]
                break
        time.sleep(POLL)
    try:
        out, _ = load.communicate(timeout=args.load_timeout)
    except subprocess.TimeoutExpired:
        load.kill()
        out, _ = load.communicate()
    summary = {}
    try:
        summary = json.loads(out or b"{}")
    except json.JSONDecodeError:
        pass
    view = native.view(args.app) or {}
    cluster_members = [m for alias, m in members(view) if alias == args.cluster]
    active = [m for m in cluster_members if m.get("status") == "Active"]
    result = {
        "app": args.app,
        "start_epoch_ms": round(start_ms, 1),
        "load_exit": load.returncode,
        "requests_ok": summary.get("ok"),
        "requests_failed": summary.get("failed"),
        "members_after_load": len(cluster_members),
        "active_after_load": len(active),
    }
    if start is None or decision is None or new_member is None:
        result["failed_step"] = (
            f"no request at the proxy within {args.timeout:g} s" if start is None
            else f"no scale-up decision within {args.timeout:g} s" if decision is None
            else f"no new member Active within {args.timeout:g} s")
        print(json.dumps(result))
        sys.exit(2)
    last_active = [epoch_ms(m.get("active_at")) for m in cluster_members
                   if m["id"] not in before and m.get("active_at")]
    result.update({
        "at_proxy_after_spawn_ms": round((start - spawned) * 1000.0, 1),
        "decision_ms": round(epoch_ms(decision["at"]) - start_ms, 1),
        "from": decision["decision"]["from"],
        "to": decision["decision"]["to"],
        "reason": decision["decision"]["reason"],
        "estimates": [{k: e.get(k) for k in ("factor", "average", "latest", "predicted", "required")}
                      for e in decision["decision"].get("estimates") or []],
        "member": new_member["id"],
        "created_ms": round(epoch_ms(new_member["created_at"]) - start_ms, 1),
        "active_ms": round(epoch_ms(new_member["active_at"]) - start_ms, 1),
        "last_new_active_ms": round(max(last_active) - start_ms, 1),
    })
    print(json.dumps(result))


def main():
    # A `timeout` around this script must not leave the load generator behind.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    parser = argparse.ArgumentParser(description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    w = sub.add_parser("wait-active")
    w.add_argument("--api", required=True)
    w.add_argument("--app", required=True)
    w.add_argument("--timeout", type=float, default=30)
    s = sub.add_parser("step")
    s.add_argument("--api", required=True)
    s.add_argument("--app", required=True)
    s.add_argument("--cluster", required=True)
    s.add_argument("--url", required=True)
    s.add_argument("--bin", required=True)
    s.add_argument("--concurrency", type=int, default=12)
    s.add_argument("--latency-ms", type=int, default=500)
    s.add_argument("--duration", default="5s")
    s.add_argument("--timeout", type=float, default=10, help="seconds to wait for the figures")
    s.add_argument("--load-timeout", type=float, default=30, help="seconds to wait for the load to end")
    args = parser.parse_args()
    {"wait-active": wait_active, "step": step}[args.command](args)


if __name__ == "__main__":
    main()
