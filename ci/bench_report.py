#!/usr/bin/env python3
"""Writes BENCHMARKS.md and the chart from the raw results of ci/bench.sh.

    ci/bench_report.py RESULTS_DIR MARKDOWN_PATH CHART_PATH

RESULTS_DIR holds what ci/bench.sh collected: meta.tsv, models.tsv,
bulk.tsv, small.jsonl, idle.jsonl, held.jsonl, footprint.tsv, sizes.tsv and
commands.txt. The hand-written notes of an existing MARKDOWN_PATH are kept.
The chart is an SVG drawn with matplotlib; without matplotlib a smoke run
writes no chart and says so, a full run fails (exit 2). Prints the targets;
exits 3 when some requests failed their checks (listed in
RESULTS_DIR/problems.txt), 0 otherwise. A speed never makes it fail.
"""

import json
import os
import statistics
import sys

NOTES_START = "<!-- notes: kept when the file is rewritten -->"
NOTES_END = "<!-- end of notes -->"
# The targets that concern the evented model, and the models before it.
EVENTED = "evented-2"
NGINX_PEER = "nginx-2"
LAB_MODELS = ["iterative", "parallel-64", "preforked-2", "preforked-8"]
CLIENTS = ["tcpfile-bench", "wrk"]

median = statistics.median


def read_lines(results, name):
    path = os.path.join(results, name)
    if not os.path.exists(path):
        return []
    with open(path) as text:
        return text.read().splitlines()


def read_jsonl(results, name):
    return [json.loads(line) for line in read_lines(results, name) if line]


def read_meta(results):
    meta = dict(line.split("\t", 1) for line in read_lines(results, "meta.tsv"))
    for key in ("cores", "seconds", "runs", "requests", "big_size", "small_size", "tiny_size",
                "idle", "held"):
        meta[key] = int(meta[key])
    for key in ("smoke", "held_possible"):
        meta[key] = meta[key] == "true"
    return meta


def fmt_rate(value):
    return f"{value:,.0f}"


def runs(count):
    return f"{count} run" if count == 1 else f"{count} runs"


def fmt_ms(value):
    return f"{value:.1f}" if value >= 10 else f"{value:.2f}"


def mib(size):
    return f"{size / 1024 / 1024:,.0f} MiB" if size >= 1024 * 1024 else f"{size // 1024} KiB"


def ratio(value):
    return f"{value:.2f} ×"


class Results:
    def __init__(self, results):
        self.meta = read_meta(results)
        self.models = []
        self.labels = {}
        self.groups = {}
        for line in read_lines(results, "models.tsv"):
            key, label, group, _binary, _count = line.split("\t")
            self.models.append(key)
            self.labels[key] = label
            self.groups[key] = group
        self.bulk = {}
        for line in read_lines(results, "bulk.tsv"):
            name, _, nanos = line.split("\t")
            self.bulk.setdefault(name, []).append(int(nanos) / 1e9)
        self.small = read_jsonl(results, "small.jsonl")
        self.idle = read_jsonl(results, "idle.jsonl")
        self.held = read_jsonl(results, "held.jsonl")
        self.footprint = [line.split("\t") for line in read_lines(results, "footprint.tsv")]
        self.sizes = [line.split("\t") for line in read_lines(results, "sizes.tsv")]
        self.commands = read_lines(results, "commands.txt")
        self.levels = sorted({entry["concurrency"] for entry in self.small})
        self.problems = []
        self.rows = self.small_rows()
        self.fetches = {server: self.idle_fetches(server) for server in self.models}

    def present(self, key):
        return key in self.labels

    def small_rows(self):
        """One row per server and client, each figure a list over the runs."""
        meta = self.meta
        rows = {}
        for entry in self.small:
            report = entry["report"]
            key = (entry["server"], entry["client"], entry["concurrency"])
            row = rows.setdefault(key, {"rps": [], "p99": [], "max": [], "failed": 0,
                                        "drops": 0, "cpu": []})
            completed = report["completed"]
            row["rps"].append(completed / report["elapsed_s"])
            row["p99"].append(report["latency_us"]["p99"] / 1000)
            row["max"].append(report["latency_us"]["max"] / 1000)
            row["drops"] += entry["drops"]
            where = f"{entry['server']} ({entry['client']}) c={entry['concurrency']} run {entry['run']}"
            if entry["client"] == "wrk":
                failed = sum(report["errors"].values()) + report["bad_responses"]
                row["failed"] += failed
                if failed or completed < meta["requests"]:
                    self.problems.append(
                        f"{where}: wrk: {completed} responses, errors {report['errors']}, "
                        f"{report['bad_responses']} not 200 with {meta['small_size']} bytes")
            else:
                row["failed"] += report["failed"]
                row["cpu"].append(report["client_cpu_us_per_request"])
                if (report["failed"] or completed != meta["requests"]
                        or report["bytes"] != completed * meta["small_size"]):
                    self.problems.append(
                        f"{where}: {completed} served, {report['failed']} failed "
                        f"{report['errors']}, {report['bytes']} bytes")
        return rows

    def row(self, server, level, client="tcpfile-bench"):
        return self.rows.get((server, client, level))

    def table_keys(self):
        """(server, client) pairs in the order the tables list them."""
        keys = []
        for server in self.models:
            for client in CLIENTS:
                if any(self.row(server, level, client) for level in self.levels):
                    keys.append((server, client))
        return keys

    def idle_fetches(self, server):
        """Per run: the fetch time in ms, or None when it gave up."""
        times = []
        for entry in self.idle:
            if entry["server"] != server:
                continue
            report = entry["report"]
            if report["completed"] == 1:
                times.append(report["latency_us"]["max"] / 1000)
                continue
            times.append(None)
            if set(report["errors"]) - {"timeout"}:
                self.problems.append(f"{server}: the fetch behind idle connections failed: "
                                     f"{report['errors']}")
        return times


# --- Targets ------------------------------------------------------------------

def verdict(met):
    return {True: "met", False: "**missed**", None: "n/a"}[met]


def shortfall(measured, bound, above_is_good):
    """By how much a measured value misses its bound, in percent of the bound."""
    if above_is_good:
        return f"{(bound - measured) / bound:.0%} short"
    return f"{(measured - bound) / bound:.0%} over"


def targets(res):
    meta = res.meta
    rows = []
    evented = res.present(EVENTED)
    absent = "n/a: no tcpfile-server-evented in this build"

    def add(name, measured, met, note=""):
        rows.append((name, measured, met, note))

    for level in (64, 256):
        name = (f"Small requests, {level} clients at once: evented (2 workers) serves at least "
                f"1.2 × the requests/s of nginx (2 workers), both driven by tcpfile-bench")
        ours, theirs = res.row(EVENTED, level), res.row(NGINX_PEER, level)
        if not evented:
            add(name, absent, None)
        elif not ours or not theirs:
            add(name, f"n/a: no run at {level} clients", None)
        else:
            factor = median(ours["rps"]) / median(theirs["rps"])
            met = factor >= 1.2
            add(name, f"{fmt_rate(median(ours['rps']))} vs {fmt_rate(median(theirs['rps']))} "
                      f"requests/s ({ratio(factor)})", met,
                "" if met else shortfall(factor, 1.2, True))

    name = "Small requests, 256 clients at once: evented's maximum latency under 50 ms"
    ours = res.row(EVENTED, 256)
    if not evented:
        add(name, absent, None)
    elif not ours:
        add(name, "n/a: no run at 256 clients", None)
    else:
        typical, worst = median(ours["max"]), max(ours["max"])
        met = typical < 50
        note = "" if met else shortfall(typical, 50, False)
        if met and worst >= 50:
            note = f"not in every run: worst {fmt_ms(worst)} ms"
        add(name, f"{fmt_ms(typical)} ms (median of {runs(len(ours['max']))}; worst "
                  f"{fmt_ms(worst)} ms)", met, note)

    name = (f"With {meta['idle']:,} idle connections open against evented, a fetch of a "
            f"{mib(meta['tiny_size'])} file completes within 50 ms")
    if not evented:
        add(name, absent, None)
    else:
        times = res.fetches[EVENTED]
        finished = [time for time in times if time is not None]
        gave_up = len(times) - len(finished)
        if gave_up:
            add(name, f"gave up after {res.idle[0]['patience_s']} s in {gave_up} of "
                      f"{len(times)} runs", False)
        else:
            typical = median(finished)
            met = max(finished) < 50
            add(name, f"{fmt_ms(typical)} ms (median of {runs(len(times))}; worst "
                      f"{fmt_ms(max(finished))} ms)", met,
                "" if met else shortfall(max(finished), 50, False))

    name = (f"{meta['held']:,} connections held open at once cost the whole evented server "
            f"under 64 MiB resident")
    held = [entry for entry in res.held if entry["server"] == EVENTED]
    if not evented:
        add(name, absent, None)
    elif not held:
        add(name, "n/a: the descriptor limit did not allow the connections", None)
    else:
        entry = held[0]
        total = entry["rss_kib"] / 1024
        complete = entry["established"] == entry["asked"] and entry["accepted"] == entry["asked"]
        met = total < 64 and complete
        note = "" if total < 64 else shortfall(total, 64, False)
        if not complete:
            note = (f"only {entry['established']:,} established and {entry['accepted']:,} "
                    f"accepted of {entry['asked']:,}")
        add(name, f"{total:.1f} MiB in {entry['processes']} processes (proportional "
                  f"{entry['pss_kib'] / 1024:.1f} MiB; {entry['rss_kib_before'] / 1024:.1f} MiB "
                  f"before)", met, note)

    name = (f"Bulk: a page-cached file of {mib(meta['big_size'])} from evented takes at most "
            "1.1 × the time of `cat`")
    if not evented:
        add(name, absent, None)
    else:
        factor = median(res.bulk[f"client-{EVENTED}"]) / median(res.bulk["cat"])
        met = factor <= 1.1
        add(name, f"{ratio(factor)} `cat`", met, "" if met else shortfall(factor, 1.1, False))

    add(*lab_models_target(res))
    return rows


def lab_models_target(res):
    """Whether this tree's lab models serve as many requests/s as the baseline's,
    within the spread of the runs."""
    name = ("The lab models' requests/s (iterative, parallel, preforked) do not fall by more "
            "than the run-to-run spread")
    compared = []
    for model in LAB_MODELS:
        for level in res.levels:
            now, before = res.row(model, level), res.row(f"{model}@base", level)
            if not now or not before:
                continue
            spread = max(max(now["rps"]) - min(now["rps"]), max(before["rps"]) - min(before["rps"]))
            fall = median(before["rps"]) - median(now["rps"])
            compared.append((fall - spread, model, level, median(now["rps"]),
                             median(before["rps"]), spread))
    if not compared:
        return (name, "n/a: run with --baseline REV to measure a revision's servers in the "
                      "same session", None, "")
    if res.meta["runs"] < 3:
        return (name, f"n/a: {res.meta['runs']} run(s) give no spread; at least 3 are needed",
                None, "")
    excess, model, level, now, before, spread = max(compared)
    met = all(item[0] <= 0 for item in compared)
    measured = (f"{len(compared)} cases against {res.meta['baseline']}; the furthest fall, "
                f"{res.labels[model]} at {level} clients: {fmt_rate(now)} vs {fmt_rate(before)} "
                f"requests/s ({now / before - 1:+.1%}), spread {fmt_rate(spread)}")
    note = "" if met else f"fell {fmt_rate(excess)} requests/s beyond the spread"
    return (name, measured, met, note)


# --- Chart --------------------------------------------------------------------

COLOURS = {
    "iterative": "#7f7f7f", "parallel-64": "#d62728", "preforked-2": "#1f77b4",
    "preforked-8": "#17becf", "evented-2": "#9467bd", "nginx-2": "#2ca02c", "nginx-8": "#8cc97a",
}


def style(res, server, client):
    base = server.split("@")[0]
    colour = COLOURS.get(base, "#444444")
    if client == "wrk":
        return dict(color=colour, linestyle=(0, (2, 2)), marker="x")
    if res.groups[server] == "baseline":
        return dict(color=colour, linestyle=(0, (6, 2)), marker="o", alpha=0.5)
    return dict(color=colour, linestyle="-", marker="o")


def chart(res, path):
    import matplotlib

    matplotlib.use("svg")
    # The backend is chosen before pyplot is imported.
    import matplotlib.pyplot as plt
    from matplotlib import ticker

    meta = res.meta
    plt.rcParams.update({
        # Text stays text, and the file is the same for the same figures.
        "svg.fonttype": "none",
        "svg.hashsalt": "tcpfile-bench",
        "font.size": 9,
    })
    figure, (rates, latencies) = plt.subplots(1, 2, figsize=(10, 4.6))
    for server, client in res.table_keys():
        levels = [level for level in res.levels if res.row(server, level, client)]
        label = res.labels[server] + (" (wrk)" if client == "wrk" else "")
        look = style(res, server, client)
        rates.plot(levels, [median(res.row(server, level, client)["rps"]) for level in levels],
                   label=label, linewidth=1.6, markersize=4, **look)
        latencies.plot(levels, [median(res.row(server, level, client)["max"]) for level in levels],
                       linewidth=1.6, markersize=4, **look)
    for axes in (rates, latencies):
        axes.set_xscale("log", base=2)
        axes.set_xticks(res.levels, [str(level) for level in res.levels])
        axes.minorticks_off()
        axes.set_xlabel("requests in flight (log scale)")
        axes.grid(True, color="#e5e5e5")
        axes.set_axisbelow(True)
    rates.set_ylim(bottom=0)
    rates.yaxis.set_major_formatter(ticker.StrMethodFormatter("{x:,.0f}"))
    rates.set_title("requests per second")
    latencies.set_yscale("log")
    latencies.yaxis.set_major_formatter(ticker.StrMethodFormatter("{x:g}"))
    latencies.set_title("maximum latency, ms (log scale)")
    figure.suptitle(
        f"{mib(meta['small_size'])} file, a new connection per request: median of "
        f"{meta['runs']} run(s) of {meta['requests']:,} requests; {meta['cores']} cores, "
        f"{meta['date']}\nclient tcpfile-bench (nginx in HTTP/1.0) unless marked wrk",
        fontsize=10)
    figure.legend(loc="lower center", ncol=4, frameon=False)
    rows_of_legend = -(-len(res.table_keys()) // 4)
    figure.tight_layout(rect=(0, 0.06 * rows_of_legend, 1, 1))
    # The format follows the file name; an SVG carries no date, so that the
    # same figures make the same file.
    figure.savefig(path, metadata={"Date": None} if path.endswith(".svg") else None)
    plt.close(figure)


# --- BENCHMARKS.md -------------------------------------------------------------

def kept_notes(path):
    if not os.path.exists(path):
        return ""
    with open(path) as text:
        content = text.read()
    if NOTES_START in content and NOTES_END in content:
        start = content.index(NOTES_START) + len(NOTES_START)
        return content[start:content.index(NOTES_END)].strip("\n")
    return ""


def markdown(res, target_rows, notes, chart_name):
    meta = res.meta
    md = []
    title = "Benchmarks (smoke run: small sizes, not figures to quote)" if meta["smoke"] else "Benchmarks"
    md += [f"# {title}", "",
           "Written by `ci/bench.sh`, which builds the release binaries, makes the fixtures, runs "
           "every case below in one session on one machine over loopback, and rewrites this file "
           f"and [the chart]({chart_name}) with `ci/bench_report.py`. Run it to get the figures "
           "for your own machine. Figures from different machines, or from different sessions on "
           "one machine, do not compare; the ratios within one run do.", "",
           "## Machine and session", "",
           f"- Date: {meta['date']}; the run took {meta['seconds'] / 60:.1f} minutes, build included",
           f"- CPU: {meta['cpu']}, {meta['cores']} cores; memory {meta['memory']}",
           f"- Kernel: {meta['kernel']}; {meta['os']}; fixtures and copies on {meta['filesystem']} "
           f"({meta['workdir']})",
           f"- Load average when the run started: {meta['load']}; when it ended: {meta['load_after']}",
           f"- tcpfile {meta['commit']}, built with {meta['rustc']} (release profile)"
           + (f"; baseline servers from {meta['baseline']}" if meta["baseline"] else ""),
           f"- Others: nginx {meta['nginx']} (Debian's nginx-light), {meta['curl']}, {meta['wrk']}; "
           f"chart by matplotlib {meta['matplotlib'] or '(not installed: no chart)'}",
           f"- Every figure is the median of {meta['runs']} run(s).",
           f"- Run as `{meta['invocation']}`", ""]

    md += ["## Targets", "",
           "A target that could not be measured in this run reads n/a, with the reason. A missed "
           "target says by how much; the notes below say what a profile showed.", "",
           "| target | measured | |", "|---|---|---|"]
    for name, measured, met, note in target_rows:
        md.append(f"| {name} | {measured} | {verdict(met)}{': ' + note if note else ''} |")
    md += [""]

    md += bulk_section(res)
    md += small_section(res, chart_name)
    md += idle_section(res)
    md += held_section(res)
    md += footprint_section(res)

    md += ["## Commands", "",
           "As run (ports picked at start; `$WORK` is the run's temporary folder):", "", "```"]
    md += res.commands
    md += ["```", "",
           "nginx ran from its own configuration in `$WORK` (`worker_processes N; sendfile on; "
           "access_log off; listen 127.0.0.1:PORT backlog=4096; daemon off`). wrk's script makes "
           "each thread stop after its share of the requests and checks each response's status "
           "and body size. The idle and held-open connections come from `ci/bench_hold.py`, "
           "which connects and sends nothing.", ""]

    md += ["## Notes", "", NOTES_START]
    if notes:
        md += [notes]
    md += [NOTES_END, ""]
    return "\n".join(md)


def bulk_section(res):
    meta = res.meta
    cat = median(res.bulk["cat"])
    labels = {"cat": "`cat SRC > DST` (the copy limit)", "nginx-curl": "curl from nginx (sendfile on)"}
    for server in res.models:
        labels[f"client-{server}"] = f"tcpfile-client, from {res.labels[server]}"
    md = [f"## Bulk: one {mib(meta['big_size'])} file", "",
          "The file is in the page cache. Each round runs every command once, in turn"
          f"{' (a first round warms up and is not counted)' if not meta['smoke'] else ''}; a time "
          "is wall-clock from start to exit. Every copy is then compared byte for byte with the "
          "source and removed, outside the time. `cat` (coreutils 9) copies with "
          "`copy_file_range`, one copy inside the kernel: the floor for any way of making a copy.",
          "", "| how | median | fastest – slowest | time ÷ `cat` |", "|---|---:|---:|---:|"]
    for name, times in res.bulk.items():
        md.append(f"| {labels.get(name, name)} | {median(times):.3f} s | {min(times):.3f} – "
                  f"{max(times):.3f} s | {median(times) / cat:.2f} |")
    return md + [""]


def small_section(res, chart_name):
    meta = res.meta
    md = [f"## Many small requests: {meta['requests']:,} requests of a {mib(meta['small_size'])} file",
          "",
          "A new TCP connection for every request, as the protocol has it. The client column says "
          "which load generator produced each row. tcpfile-bench drives every server, nginx with "
          "an HTTP/1.0 GET per connection, and times a request from `connect` to the server's "
          "close; wrk drives nginx a second time, with `Connection: close`, and times from its "
          "first write, after the handshake. Both check every response (status and size). "
          "Compare servers within one client's rows.", "",
          f"![requests per second and maximum latency against concurrency]({chart_name})", ""]
    header = "| server | client | " + " | ".join(f"c = {level}" for level in res.levels) + " |"
    rule = "|---|---|" + "---:|" * len(res.levels)

    def table(title, cell):
        lines = [f"**{title}**", "", header, rule]
        for server, client in res.table_keys():
            cells = [cell(res.row(server, level, client)) if res.row(server, level, client) else ""
                     for level in res.levels]
            lines.append(f"| {res.labels[server]} | {client} | " + " | ".join(cells) + " |")
        return lines + [""]

    md += table("Requests per second", lambda row: fmt_rate(median(row["rps"])))
    md += table("p99 latency, ms", lambda row: fmt_ms(median(row["p99"])))
    md += table("Max latency, ms (median of the runs / worst run)",
                lambda row: f"{fmt_ms(median(row['max']))} / {fmt_ms(max(row['max']))}")
    md += table("Failed requests and listen-queue drops (whole machine), all runs together",
                lambda row: f"{row['failed']} / {row['drops']}")
    cpu = [value for row in res.rows.values() for value in row["cpu"]]
    if cpu:
        md += [f"tcpfile-bench ran one event loop and used {median(cpu):.0f} µs of CPU per request "
               f"(median over all cases; {min(cpu):.0f} – {max(cpu):.0f}), system time of the "
               "loopback handshake included.", ""]
    return md


def idle_section(res):
    meta = res.meta
    if not res.idle:
        return []
    patience = res.idle[0]["patience_s"]
    md = [f"## A fetch behind {meta['idle']:,} idle connections", "",
          f"`ci/bench_hold.py` opens {meta['idle']:,} connections that send nothing, then "
          f"tcpfile-bench fetches a {mib(meta['tiny_size'])} file (time from `connect` to the "
          f"server's close), giving up after {patience} s; the servers run with `--timeout 60`, "
          "so a process held by an idle connection stays held. One fresh server per model, "
          f"{meta['runs']} run(s).", "",
          "| server | idle connections established | fetch: median | worst | gave up |",
          "|---|---:|---:|---:|---:|"]
    for server in res.models:
        entries = [entry for entry in res.idle if entry["server"] == server]
        if not entries:
            continue
        times = res.fetches[server]
        finished = [time for time in times if time is not None]
        established = min(entry["established"] for entry in entries)
        gave_up = len(times) - len(finished)
        typical = f"{fmt_ms(median(finished))} ms" if finished else f"> {patience} s"
        worst = f"> {patience} s" if gave_up else f"{fmt_ms(max(finished))} ms"
        md.append(f"| {res.labels[server]} | {established:,} | {typical} | {worst} | "
                  f"{gave_up} of {len(times)} |")
    return md + [""]


def held_section(res):
    meta = res.meta
    md = [f"## {meta['held']:,} connections held open", ""]
    if not meta["held_possible"]:
        return md + ["Not measured: the descriptor limit (`ulimit -n`) did not allow the "
                     "connections.", ""]
    md += ["`ci/bench_hold.py` opens the connections at once and waits until they are established "
           "(at most 15 s, and 4.5 s without progress: a server that does not accept leaves the "
           "rest in SYN retries); the server then takes what it will from its accept queue. "
           "Memory is summed over all of the server's processes: resident (VmRSS, which counts "
           "shared pages once per process) and proportional (PSS, shared pages divided among "
           "those that share them). The kernel's socket buffers are not in either.", "",
           "| server | established | accepted by the server | processes | resident before | "
           "resident with them | proportional with them |",
           "|---|---:|---:|---:|---:|---:|---:|"]
    for entry in res.held:
        md.append(f"| {res.labels[entry['server']]} | {entry['established']:,} of "
                  f"{entry['asked']:,} | {entry['accepted']:,} | {entry['processes']} | "
                  f"{entry['rss_kib_before'] / 1024:.1f} MiB | {entry['rss_kib'] / 1024:.1f} MiB | "
                  f"{entry['pss_kib'] / 1024:.1f} MiB |")
    return md + [""]


def footprint_section(res):
    md = ["## Footprint", "",
          "Resident memory (Rss) counts the pages a process shares with its parent and with the "
          "C library; private memory (Private_Clean + Private_Dirty in smaps_rollup) is what the "
          "process alone holds. A whole server is all of its processes, summed.", "",
          "| what | processes | resident | private |", "|---|---:|---:|---:|"]
    for what, processes, rss, _pss, private in res.footprint:
        md.append(f"| {what} | {processes} | {int(rss) / 1024:.2f} MiB | "
                  f"{int(private) / 1024:.2f} MiB |")
    md += ["", "| file | size |", "|---|---:|"]
    for kind, what, size in res.sizes:
        shown = f"{int(size) / 1024 / 1024:.2f} MiB" if size.isdigit() else size
        md.append(f"| {kind} {what} | {shown} |")
    return md + [""]


def main():
    results, markdown_path, chart_path = sys.argv[1:4]
    res = Results(results)
    target_rows = targets(res)
    try:
        chart(res, chart_path)
    except ImportError as missing:
        if not res.meta["smoke"]:
            print(f"cannot draw the chart: {missing}", file=sys.stderr)
            return 2
        print(f"no chart: {missing}")
    chart_name = os.path.relpath(chart_path, os.path.dirname(os.path.abspath(markdown_path)))
    text = markdown(res, target_rows, kept_notes(markdown_path), chart_name)
    with open(markdown_path, "w") as output:
        output.write(text)

    print("targets:")
    for name, measured, met, note in target_rows:
        print(f"  {verdict(met).strip('*'):7} {name}: {measured}{'; ' + note if note else ''}")
    if res.problems:
        print("requests that failed their checks:", file=sys.stderr)
        for problem in res.problems:
            print("  " + problem, file=sys.stderr)
        with open(os.path.join(results, "problems.txt"), "w") as listing:
            listing.write("\n".join(res.problems) + "\n")
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main())
