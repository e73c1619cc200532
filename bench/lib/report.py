#!/usr/bin/env python3
"""Turns bench/run's raw measurements into the results table (Markdown and CSV) and the chart.

Input: raw.csv (one row per pgbench run), idle.csv (one row per target of the idle-connection
test), meta.json (what was run, where). Every figure in the table is the median over the rounds
of the runs that succeeded; the CSV also keeps each target's lowest and highest TPS.
Output: OUT.md, OUT.csv, OUT.png; the Markdown is printed too.
"""

import argparse
import csv
import json
import statistics
from collections import defaultdict

TARGETS = ("direct", "pgbouncer", "postern")
WORKLOADS = {
    "select-simple": ("pgbench -S", "simple"),
    "select-extended": ("pgbench -S", "extended"),
    "select-prepared": ("pgbench -S", "prepared"),
    "tpcb": ("TPC-B-like (default script)", "simple"),
    "churn": ("pgbench -S -C (connect per transaction)", "simple"),
}



def pool_paragraph(meta):
    """What the two proxies are and how they pool, for the report's header."""
    mode = meta.get("pool_mode", "session")
    if mode == "transaction":
        pgbouncer = (
            f"- **direct**: pgbench to PostgreSQL. **pgbouncer**: PgBouncer in *transaction* "
            f"pool mode (pool of {meta['pool_size']}), except the prepared rows: Debian's 1.18 "
            "cannot keep prepared statements in transaction mode, so those use a session-mode "
            f"database (pool of {meta['session_pool']}). "
        )
        postern = (
            f"with **transaction pooling** (pool of {meta['pool_size']}) in every row, the "
            "prepared ones included: a client holds a server connection per transaction, and "
            "Postern applies its signed claims transaction-locally at the start of each one."
        )
    else:
        pgbouncer = (
            "- **direct**: pgbench to PostgreSQL. **pgbouncer**: PgBouncer in *session* pool "
            f"mode (pool of {meta['pgbouncer_pool']}). "
        )
        postern = (
            "with **session pooling** (a client holds a server connection for its session; it "
            "is reset and reused by the next client)."
        )
    return (
        pgbouncer
        + "**postern**: Postern with token authentication (an RS256 JWT as the password, its "
        "signature verified against a JWKS), Cedar policy (defaults plus one permit file) on "
        "every statement, and the JSON-lines audit log, in `role_login` mode with signed claims "
        "(`postern setup-db`), on its default number of worker threads (half the machine's "
        "cores, at least one), "
        + postern
    )

def number(text):
    try:
        return float(text)
    except (TypeError, ValueError):
        return None


def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def fmt(value, digits=0):
    if value is None:
        return "n/a"
    return f"{value:,.{digits}f}"


def ratio(a, b):
    return a / b if a is not None and b else None


def load_rows(path):
    """(workload, clients) -> target -> list of successful runs, in the order first seen."""
    runs = defaultdict(lambda: defaultdict(list))
    failed = defaultdict(int)
    order = []
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            key = (row["workload"], int(row["clients"]))
            if key not in order:
                order.append(key)
            if row["status"] == "ok":
                runs[key][row["target"]].append(row)
            else:
                failed[(key, row["target"])] += 1
    return order, runs, failed


def summarise(order, runs, failed):
    summary = []
    for key in order:
        workload, clients = key
        entry = {"workload": workload, "clients": clients}
        for target in TARGETS:
            rows = runs[key][target]
            tps = [number(r["tps"]) for r in rows]
            entry[target] = {
                "tps": median(tps),
                "tps_min": min(tps) if tps else None,
                "tps_max": max(tps) if tps else None,
                "mean_ms": median(number(r["mean_ms"]) for r in rows),
                "p99_ms": median(number(r["p99_ms"]) for r in rows),
                "conn_ms": median(number(r["conn_ms"]) for r in rows),
                "cpu_us": median(number(r.get("proxy_cpu_us", "")) for r in rows),
                "runs": len(rows),
                "failed": failed[(key, target)],
            }
        entry["vs_direct"] = ratio(entry["postern"]["tps"], entry["direct"]["tps"])
        entry["vs_pgbouncer"] = ratio(entry["postern"]["tps"], entry["pgbouncer"]["tps"])
        summary.append(entry)
    return summary


def load_idle(path):
    rows = []
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            held = int(row["open"])
            proxy_before, proxy_after = number(row["proxy_rss_before_kb"]), number(
                row["proxy_rss_after_kb"]
            )
            pg_before, pg_after = number(row["pg_pss_before_kb"]), number(row["pg_pss_after_kb"])
            proxy_delta = proxy_after - proxy_before if proxy_after is not None else None
            pg_delta = pg_after - pg_before
            rows.append(
                {
                    "target": row["target"],
                    "requested": int(row["requested"]),
                    "open": held,
                    "failed": int(row["failed"]),
                    "seconds": number(row["seconds"]),
                    "proxy_rss_after_kb": proxy_after,
                    "proxy_kb_per_conn": proxy_delta / held if held and proxy_delta is not None else None,
                    "pg_kb_per_conn": pg_delta / held if held else None,
                    "total_kb_per_conn": ((proxy_delta or 0) + pg_delta) / held if held else None,
                    "backends": int(row["backends"]) if row["backends"] else None,
                }
            )
    return rows


def markdown(meta, summary, idle):
    lines = []
    add = lines.append
    add(f"# Postern benchmark: {meta['date']}")
    add("")
    add(
        f"Postern `{meta['postern']}`, PostgreSQL {meta['postgresql']}, PgBouncer "
        f"{meta['pgbouncer']}, pgbench {meta['pgbench']}; {meta['cpu']}, "
        f"{meta['memory_gib']} GiB; client and servers on the same machine. "
        f"{meta['rounds']} interleaved round(s) of {meta['duration_s']} s per run, "
        f"`pgbench -i -s {meta['scale']}`; figures are medians over the rounds. "
        f"Measuring took {meta['measuring_seconds'] // 60} min {meta['measuring_seconds'] % 60} s "
        f"(1/5/15-minute load average at the start {meta.get('load_average_start', 'n/a')}, "
        f"at the end {meta['load_average_end']}: other work shared the machine when this is "
        "well above 2)."
    )
    if meta.get("quick"):
        add("")
        add("**Quick mode: a check of the script, not a measurement.**")
    add("")
    add(
        pool_paragraph(meta)
    )
    add(
        f"- All three take TLS (`sslmode=require`, the same self-signed P-256 certificate) and a "
        f"password login ({meta['auth']}, or the token for Postern) from pgbench; the proxies "
        "reach PostgreSQL over plain TCP on loopback."
    )
    if meta.get("audit_verify"):
        add(
            f"- Postern's audit log grew to {meta['audit_log_bytes'] / 1048576:,.0f} MB over the "
            f"run; `postern audit verify` afterwards: {meta['audit_verify']}."
        )
    add(
        "- Latencies come from pgbench's per-transaction log (`-l`) and exclude connection "
        "set-up; for the churn row (`-C`), TPS includes it and *connect* gives pgbench's average "
        "connection time."
    )
    add(
        "- *CPU µs / tx* is the proxy process's own CPU time (all threads, from `/proc`) over the "
        "run divided by the transactions pgbench completed: what the proxy's work costs per "
        "transaction, which moves far less than TPS when other work shares the machine."
    )
    add("")
    add(
        "| workload | protocol | clients | direct TPS | pgbouncer TPS | postern TPS "
        "| direct mean / p99 ms | pgbouncer mean / p99 ms | postern mean / p99 ms "
        "| postern / direct | postern / pgbouncer | CPU µs / tx: pgbouncer, postern |"
    )
    add("|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|")
    for entry in summary:
        name, protocol = WORKLOADS.get(entry["workload"], (entry["workload"], ""))

        def lat(target):
            t = entry[target]
            text = f"{fmt(t['mean_ms'], 3)} / {fmt(t['p99_ms'], 3)}"
            if entry["workload"] == "churn" and t["conn_ms"] is not None:
                text += f" (connect {fmt(t['conn_ms'], 2)})"
            if t["failed"]:
                text += f" ({t['failed']} failed)"
            return text

        add(
            f"| {name} | {protocol} | {entry['clients']} "
            + "".join(f"| {fmt(entry[t]['tps'])} " for t in TARGETS)
            + "".join(f"| {lat(t)} " for t in TARGETS)
            + f"| {fmt(entry['vs_direct'], 2)} | {fmt(entry['vs_pgbouncer'], 2)} "
            + f"| {fmt(entry['pgbouncer']['cpu_us'], 1)}, {fmt(entry['postern']['cpu_us'], 1)} |"
        )
    one_client = [
        e for e in summary if e["clients"] == 1 and e["workload"].startswith("select-")
    ]
    if one_client:
        add("")
        add(
            "Latency Postern adds at 1 client (mean, over direct): "
            + "; ".join(
                f"{WORKLOADS[e['workload']][1]} "
                + (
                    f"{(e['postern']['mean_ms'] - e['direct']['mean_ms']) * 1000:,.0f} µs"
                    if e["postern"]["mean_ms"] is not None and e["direct"]["mean_ms"] is not None
                    else "n/a"
                )
                for e in one_client
            )
            + "."
        )
    if idle:
        add("")
        add("## Idle connections: memory per connection")
        add("")
        add(
            "Each target gets the same number of TLS connections, authenticated and then left "
            "idle. *Proxy* is the growth of the proxy process's resident set (RSS) divided by "
            "the connections held; *PostgreSQL* is the growth of the summed proportional set "
            "size (PSS, shared pages divided among the processes sharing them) of the "
            "postmaster and all its backends, divided by the same number. For direct, that is "
            "the cost of a backend per client; PgBouncer holds idle clients without a server "
            + ("connection; Postern's session pool takes a server connection at login, so "
               "PostgreSQL holds one backend per idle client."
               if meta.get("pool_mode", "session") == "session" else
               "connection, and so does Postern in transaction mode.")
        )
        add("")
        add(
            "| target | connections held | failed | time to open s | proxy RSS after MB "
            "| proxy kB / conn | PostgreSQL kB / conn | total kB / conn | bench backends |"
        )
        add("|---|--:|--:|--:|--:|--:|--:|--:|--:|")
        for row in idle:
            rss = row["proxy_rss_after_kb"]
            add(
                f"| {row['target']} | {row['open']:,} | {row['failed']:,} | {fmt(row['seconds'], 1)} "
                f"| {fmt(rss / 1024, 1) if rss is not None else '—'} "
                f"| {fmt(row['proxy_kb_per_conn'], 1) if row['proxy_kb_per_conn'] is not None else '—'} "
                f"| {fmt(row['pg_kb_per_conn'], 1)} | {fmt(row['total_kb_per_conn'], 1)} "
                f"| {row['backends'] if row['backends'] is not None else 'n/a'} |"
            )
        add("")
        add(
            f"Requested: {meta.get('idle_requested', 'n/a'):,} connections per target. "
            + (meta.get("idle_note") or "")
            + f" Open-files limit here: {meta['open_files_limit']:,}; the script allows for "
            "a descriptor per Postern client, and in session mode a second (the upstream "
            "one), which bounds how many it holds."
        )
    add("")
    return "\n".join(lines)


def write_csv(path, summary):
    fields = ["workload", "protocol", "clients"]
    for t in TARGETS:
        fields += [f"{t}_tps", f"{t}_tps_min", f"{t}_tps_max", f"{t}_mean_ms", f"{t}_p99_ms",
                   f"{t}_conn_ms", f"{t}_cpu_us_per_tx", f"{t}_runs"]
    fields += ["postern_vs_direct", "postern_vs_pgbouncer"]
    with open(path, "w", newline="") as f:
        out = csv.writer(f)
        out.writerow(fields)
        for e in summary:
            row = [e["workload"], WORKLOADS.get(e["workload"], ("", ""))[1], e["clients"]]
            for t in TARGETS:
                v = e[t]
                row += [v["tps"], v["tps_min"], v["tps_max"], v["mean_ms"], v["p99_ms"],
                        v["conn_ms"], v["cpu_us"], v["runs"]]
            row += [e["vs_direct"], e["vs_pgbouncer"]]
            out.writerow(["" if x is None else (round(x, 4) if isinstance(x, float) else x)
                          for x in row])


def chart(path, meta, summary):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = []
    for e in summary:
        short = {"select-simple": "-S simple", "select-extended": "-S extended",
                 "select-prepared": "-S prepared", "tpcb": "TPC-B", "churn": "-S -C"}
        labels.append(f"{short.get(e['workload'], e['workload'])}\n{e['clients']} cl")
    colours = {"direct": "#4c72b0", "pgbouncer": "#dd8452", "postern": "#55a868"}
    width = 0.27
    xs = range(len(summary))
    fig, (top, bottom) = plt.subplots(
        2, 1, figsize=(max(10, len(summary) * 0.95), 8.5), height_ratios=[3, 1.4], sharex=True
    )
    for i, target in enumerate(TARGETS):
        values = [e[target]["tps"] or 0 for e in summary]
        top.bar([x + (i - 1) * width for x in xs], values, width, label=target,
                color=colours[target])
    top.set_yscale("log")
    top.set_ylabel("transactions per second (log scale)")
    top.set_title(
        f"pgbench through direct, PgBouncer {meta['pgbouncer']} and Postern "
        f"({meta.get('pool_mode', 'session')} pooling; Postern with TLS, token, policy, audit): "
        f"medians of {meta['rounds']} round(s)"
        + (" (quick mode)" if meta.get("quick") else "")
    , fontsize=10)
    top.legend()
    top.grid(axis="y", which="both", alpha=0.3)
    for i, target in enumerate(("pgbouncer", "postern")):
        values = [ratio(e[target]["tps"], e["direct"]["tps"]) or 0 for e in summary]
        bottom.bar([x + (i - 0.5) * width for x in xs], values, width, label=target,
                   color=colours[target])
    bottom.axhline(1.0, color=colours["direct"], linewidth=1)
    bottom.set_ylabel("TPS / direct")
    bottom.grid(axis="y", alpha=0.3)
    bottom.set_xticks(list(xs))
    bottom.set_xticklabels(labels, fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--raw", required=True)
    parser.add_argument("--idle", required=True)
    parser.add_argument("--meta", required=True)
    parser.add_argument("--out", required=True, help="path without extension")
    args = parser.parse_args()
    with open(args.meta) as f:
        meta = json.load(f)
    summary = summarise(*load_rows(args.raw))
    idle = load_idle(args.idle)
    text = markdown(meta, summary, idle)
    with open(args.out + ".md", "w") as f:
        f.write(text)
    write_csv(args.out + ".csv", summary)
    chart(args.out + ".png", meta, summary)
    print(text)


if __name__ == "__main__":
    main()
