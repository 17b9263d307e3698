#!/usr/bin/env bash
# Runs every benchmark of the workspace with modest counts and prints ONE Markdown table of
# every figure: what, how it is run, median, spread, target; then the machine and its load.
#
#   scripts/perf-report.sh            # everything (about 15 minutes on 2 cores, after the builds)
#   PERF_ONLY=cli_sync scripts/perf-report.sh   # one bench (names below)
#
# PostgreSQL figures need GOODIES_TEST_POSTGRES_URL (e.g. postgres://postgres@127.0.0.1:5432/test);
# without it those rows are left out. Logs of every bench go to target/perf-report/.
# Needs bash, cargo and python3.
set -euo pipefail
cd "$(dirname "$0")/.."
out=target/perf-report
mkdir -p "$out"
rm -f "$out"/*.log "$out"/*.load
only=${PERF_ONLY:-}
criterion_args=(--warm-up-time 1 --measurement-time 2 --noplot)

want() { [[ -z "$only" || ",$only," == *",$1,"* ]]; }
load() { cut -d' ' -f1-3 /proc/loadavg; }

# run NAME COMMAND...: runs one bench, its stdout to target/perf-report/NAME.log, and the
# load average before and after to NAME.load.
run() {
    local name=$1
    shift
    want "$name" || return 0
    echo "== $name: $*" >&2
    local before
    before=$(load)
    "$@" >"$out/$name.log"
    echo "$before|$(load)" >"$out/$name.load"
}

echo "== building the release binaries" >&2
cargo build --release -p blowing-off -p funkygibbon-mock >&2
started=$(date -u +%FT%TZ)
load_start=$(load)

# Criterion benches: warm, in-process. Their estimates are read from target/criterion.
if want conflict || want store || want server; then
    rm -rf target/criterion
fi
run conflict cargo bench -p inbetweenies-conflict --bench conflict -- "${criterion_args[@]}"
run store cargo bench -p goodies-store --all-features --bench store -- "${criterion_args[@]}"
run server cargo bench -p funkygibbon-mock --bench server -- "${criterion_args[@]}"
# Benches that print their own tables.
run cli_sync cargo bench -p goodies-e2e --bench cli_sync
run client_sync cargo bench -p goodies-e2e --bench client_sync
run merkle_repair cargo bench -p goodies-e2e --bench merkle_repair
run client_repair cargo bench -p goodies-e2e --bench client_repair
run full_pull cargo bench -p goodies-e2e --bench full_pull -- --pulls 7
run server_load_empty cargo bench -p goodies-e2e --bench server_load -- --scenario empty --clients 10 --seconds 3 --backend sqlite
run server_load_full cargo bench -p goodies-e2e --bench server_load -- --scenario full --entities 300 --clients 5 --seconds 3 --backend sqlite
run feed_blobs cargo bench -p funkygibbon-mock --bench feed_blobs

python3 - "$out" "$started" "$load_start" "$(load)" <<'PY'
import glob, json, os, re, sys

out, started, load_start, load_end = sys.argv[1:5]

# Targets, from the issues that set them (the figure's name must match the pattern).
TARGETS = [
    (r"conflict/lww_decision", "< 5 µs"),
    (r"three_way_merge", "< 50 µs"),
    (r"digest/state_digest/100000", "< 50 ms"),
    (r"sqlite/insert/10k", "≥ 100k rows/s (≈ 200 ms)"),
    (r"postgres/insert/10k", "> 10k rows/s (≈ 2 s)"),
    (r"delta/10_changes_since/100", "< 2 ms"),
    (r"full sync of a 300-entity home", "< 500 ms"),
    (r"nothing to do, 10000-entity", "< 5 ms"),
    (r"1 change made on the server, 10000-entity", "< 8 ms"),
    (r"empty client: 10000 entities", "< 300 ms, < 15 MB RSS"),
    (r"empty client: 300 entities", "< 20 ms"),
    (r"initial sync, 300 entities", "< 30 ms"),
    (r"initial sync, 10000 entities", "< 400 ms"),
    (r"empty delta.*10 clients|scenario=empty", "p99 < 20 ms"),
    (r"full_pull: (sqlite|postgres), 10000", "< 150 ms"),
]

def target(what):
    for pat, t in TARGETS:
        if re.search(pat, what):
            return t
    return "—"

def fmt_ns(ns):
    for unit, div in (("s", 1e9), ("ms", 1e6), ("µs", 1e3)):
        if ns >= div:
            return f"{ns / div:.3g} {unit}"
    return f"{ns:.3g} ns"

def load_of(name):
    try:
        before, after = open(os.path.join(out, name + ".load")).read().strip().split("|")
        return f"load {before.split()[0]}→{after.split()[0]}"
    except OSError:
        return ""

rows = []
# Criterion: the median and the 95% interval of the median.
crit = {}
for bench_json in glob.glob("target/criterion/**/new/benchmark.json", recursive=True):
    est_path = os.path.join(os.path.dirname(bench_json), "estimates.json")
    try:
        b = json.load(open(bench_json))
        e = json.load(open(est_path))
    except (OSError, ValueError):
        continue
    m = e["median"]
    ci = m["confidence_interval"]
    crit[b["full_id"]] = (m["point_estimate"], ci["lower_bound"], ci["upper_bound"])
for bench in ("conflict", "store", "server"):
    log = os.path.join(out, bench + ".log")
    if not os.path.exists(log):
        continue
    text = open(log).read()
    for full_id, (med, lo, hi) in sorted(crit.items()):
        if full_id in text:
            rows.append((f"{bench}: {full_id}", f"warm, in-process, criterion ({load_of(bench)})",
                         fmt_ns(med), f"{fmt_ns(lo)}–{fmt_ns(hi)} (95% CI)", target(full_id)))

# Tables printed by the other benches: the first column(s) say what, a median/p50 column
# the median, a spread/p99 column the spread.
HOW = {
    "cli_sync": "fresh `blowing-off` process, wall clock, loopback",
    "client_sync": "fresh client child process, timed in-process (login excluded), loopback",
    "merkle_repair": "warm client, loopback",
    "client_repair": "warm client `sync()` after a corrupted row, loopback",
    "full_pull": "server side of a whole pull (41 requests, one keep-alive connection), loopback",
    "server_load_empty": "server child process, 10 keep-alive clients, 3 s, loopback",
    "server_load_full": "server child process, 5 keep-alive clients, 3 s, loopback",
}
for name, how in HOW.items():
    log = os.path.join(out, name + ".log")
    if not os.path.exists(log):
        continue
    header = None
    for line in open(log):
        line = line.strip()
        if not line.startswith("|"):
            header = None
            continue
        cells = [c.strip() for c in line.strip("|").split("|")]
        if header is None:
            header = [h.lower() for h in cells]
            continue
        if set(line) <= set("|-: "):
            continue
        def col(*keys):
            for i, h in enumerate(header):
                if any(k in h for k in keys) and i < len(cells):
                    return i
            return None
        mi = col("median", "p50")
        si = col("spread", "p99")
        ri = col("rss")
        what_cells = [c for i, c in enumerate(cells)
                      if i not in (mi, si, ri, col("fastest"), col("slowest")) and i < 3]
        what = f"{name}: " + ", ".join(what_cells)
        extra = f"; peak RSS {cells[ri]}" if ri is not None else ""
        spread = (("p99 " if "p99" in header[si] else "") + cells[si]) if si is not None else "—"
        fi, sl = col("fastest"), col("slowest")
        if si is None and fi is not None and sl is not None:
            spread = f"{cells[fi]}–{cells[sl]}"
        unit = lambda i, v: v + " ms" if i is not None and header[i].endswith(" ms") and re.fullmatch(r"[0-9.]+", v) else v
        if si is None and fi is not None and sl is not None:
            spread = f"{unit(fi, cells[fi])}–{unit(sl, cells[sl])}"
        median = unit(mi, cells[mi]) if mi is not None else "—"
        rows.append((what, f"{how} ({load_of(name)})", median, spread + extra, target(what)))

log = os.path.join(out, "feed_blobs.log")
if os.path.exists(log):
    backend = ""
    for line in open(log):
        if line.rstrip().endswith(":") and not line.startswith(" "):
            backend = line.strip().rstrip(":")
        elif line.startswith("  "):
            rows.append((f"feed_blobs ({backend}): {line.strip()}",
                         f"release server binary, loopback, one run ({load_of('feed_blobs')})",
                         "(in the line)", "—", "—"))

print(f"Measured {started}; load average (1/5/15 min) {load_start} at the start, {load_end} at the end.")
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
mem = next((l.split(":", 1)[1].strip() for l in open("/proc/meminfo") if l.startswith("MemTotal")), "?")
print(f"Machine: {os.cpu_count()} CPUs ({cpu}), {mem} memory, Linux {os.uname().release}.")
print()
print("| Figure | How it is run | Median | Spread | Target |")
print("|---|---|---|---|---|")
for r in rows:
    print("| " + " | ".join(r) + " |")
PY
