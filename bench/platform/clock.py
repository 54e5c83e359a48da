#!/usr/bin/env python3
"""Times one deploy or one heal of a Cairn application, polling the native API every 10 ms
over one kept-alive connection, and prints the figures as one JSON line.

deploy: POST /api/applications/{app}/deploy/{policy} on the Stratos API, then wait for Active.
heal:   kill -9 one member (found through /proc environ), then wait for its replacement.
events: print the application's events with their times.
"""

import argparse
import base64
import datetime
import http.client
import json
import os
import signal
import ssl
import sys
import time

POLL = 0.010


def epoch_ms(text):
    """RFC 3339 with milliseconds to milliseconds since the epoch."""
    if not text:
        return None
    return datetime.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp() * 1000.0


class Native:
    """GETs on the native API over one connection, reconnecting when it drops."""

    def __init__(self, addr):
        self.addr = addr
        self.conn = None

    def get(self, path):
        for _ in range(2):
            if self.conn is None:
                self.conn = http.client.HTTPConnection(self.addr, timeout=5)
            try:
                self.conn.request("GET", path)
                response = self.conn.getresponse()
                body = response.read()
                return response.status, body
            except (OSError, http.client.HTTPException):
                self.conn.close()
                self.conn = None
        return 0, b""

    def view(self, app):
        status, body = self.get(f"/v1/applications/{app}")
        if status != 200:
            return None
        return json.loads(body)


def members(node):
    """(cluster alias, member) for every member in a runtime view."""
    out = []
    for cluster in node.get("clusters") or []:
        for member in cluster.get("members") or []:
            out.append((cluster.get("alias"), member))
    for group in node.get("groups") or []:
        for instance in group.get("instances") or []:
            out.extend(members(instance))
    return out


def deploy(args):
    native = Native(args.api)
    stratos = http.client.HTTPSConnection(args.stratos, timeout=10, context=ssl._create_unverified_context())
    # The TLS handshake happens before the clock starts: the figure is the platform's, not TLS'.
    stratos.connect()
    native.get("/healthz")
    auth = base64.b64encode(b"admin:admin").decode()
    headers = {"Authorization": f"Basic {auth}", "Content-Type": "application/json"}
    start = time.time()
    stratos.request("POST", f"/api/applications/{args.app}/deploy/{args.policy}", body=b"", headers=headers)
    response = stratos.getresponse()
    body = response.read()
    accepted = time.time()
    if response.status != 202:
        sys.exit(f"deploy answered {response.status}: {body.decode(errors='replace')}")
    deadline = start + args.timeout
    view = None
    while time.time() < deadline:
        view = native.view(args.app)
        if view and view.get("status") == "Active":
            break
        time.sleep(POLL)
    else:
        sys.exit(f"{args.app} not Active within {args.timeout} s; last view: {json.dumps(view)}")
    observed = time.time()
    all_members = [m for _, m in members(view)]
    created = [epoch_ms(m.get("created_at")) for m in all_members]
    active = [epoch_ms(m.get("active_at")) for m in all_members]
    created = [c for c in created if c is not None]
    active = [a for a in active if a is not None]
    start_ms = start * 1000.0
    print(json.dumps({
        "observed_ms": round((observed - start) * 1000.0, 1),
        "accepted_ms": round((accepted - start) * 1000.0, 1),
        "first_created_ms": round(min(created) - start_ms, 1) if created else None,
        "last_active_ms": round(max(active) - start_ms, 1) if active else None,
        "members_span_ms": round(max(active) - min(created), 1) if created and active else None,
        "members": len(all_members),
        "start_epoch_ms": round(start_ms, 1),
    }))


def pid_of(data_dir, member_id):
    marker = f"CAIRN_DATA_DIR={data_dir}".encode()
    wanted = f"CAIRN_MEMBER_ID={member_id}".encode()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as f:
                env = f.read().split(b"\0")
        except OSError:
            continue
        if marker in env and wanted in env:
            return int(entry)
    return None


def heal(args):
    native = Native(args.api)
    view = native.view(args.app)
    if not view or view.get("status") != "Active":
        sys.exit(f"{args.app} is not Active before the kill: {json.dumps(view)}")
    before = members(view)
    victims = [m for alias, m in before if alias == args.cluster and m.get("status") == "Active"]
    if not victims:
        sys.exit(f"no Active member in cluster {args.cluster}")
    victim = victims[0]["id"]
    pid = pid_of(args.data_dir, victim)
    if pid is None:
        sys.exit(f"no process for member {victim}")
    old_ids = {m["id"] for _, m in before}
    start = time.time()
    os.kill(pid, signal.SIGKILL)
    deadline = start + args.timeout
    seen_down = None
    replaced = None
    app_active = None
    replacement = None
    while time.time() < deadline:
        view = native.view(args.app)
        now = time.time()
        if view:
            current = members(view)
            if seen_down is None and not any(m["id"] == victim and m.get("status") == "Active" for _, m in current):
                seen_down = now
            fresh = [m for alias, m in current
                     if alias == args.cluster and m["id"] not in old_ids and m.get("status") == "Active"]
            if replaced is None and fresh:
                replaced = now
                replacement = fresh[0]
            if replaced is not None and view.get("status") == "Active":
                app_active = now
                break
        time.sleep(POLL)
    else:
        stuck = [f"{m['id']}={m.get('status')}" for _, m in members(view or {}) if m.get("status") != "Active"]
        print(json.dumps({
            "cluster": args.cluster,
            "killed": victim,
            "failed": f"no Active replacement and Active application within {args.timeout:g} s",
            "application": (view or {}).get("status"),
            "not_active": stuck,
            "start_epoch_ms": round(start * 1000.0, 1),
        }))
        sys.exit(2)
    start_ms = start * 1000.0
    restarted = [m for _, m in members(view) if m["id"] not in old_ids]
    print(json.dumps({
        "cluster": args.cluster,
        "killed": victim,
        "replacement": replacement["id"],
        "observed_ms": round((replaced - start) * 1000.0, 1),
        "app_active_ms": round((app_active - start) * 1000.0, 1),
        "seen_down_ms": round((seen_down - start) * 1000.0, 1) if seen_down else None,
        "created_ms": round(epoch_ms(replacement.get("created_at")) - start_ms, 1),
        "active_ms": round(epoch_ms(replacement.get("active_at")) - start_ms, 1),
        "new_members": len(restarted),
        "start_epoch_ms": round(start_ms, 1),
    }))


def events(args):
    native = Native(args.api)
    status, body = native.get(f"/v1/events?application={args.app}")
    if status != 200:
        sys.exit(f"events answered {status}")
    for event in json.loads(body):
        print(json.dumps(event))


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    d = sub.add_parser("deploy")
    d.add_argument("--stratos", required=True)
    d.add_argument("--api", required=True)
    d.add_argument("--app", required=True)
    d.add_argument("--policy", required=True)
    d.add_argument("--timeout", type=float, default=30)
    h = sub.add_parser("heal")
    h.add_argument("--api", required=True)
    h.add_argument("--data-dir", required=True)
    h.add_argument("--app", required=True)
    h.add_argument("--cluster", required=True)
    h.add_argument("--timeout", type=float, default=20)
    e = sub.add_parser("events")
    e.add_argument("--api", required=True)
    e.add_argument("--app", required=True)
    args = parser.parse_args()
    {"deploy": deploy, "heal": heal, "events": events}[args.command](args)


if __name__ == "__main__":
    main()
