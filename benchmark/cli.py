"""The ``bench`` command.

Bad input (a missing or malformed suite, an unknown name, a device that is not there, a
results directory that cannot be written) is reported in one clear message with exit
code 2, never a traceback. ``bench compare`` exits 1 when something regressed.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import signal
import sys
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

from rich import box
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

if TYPE_CHECKING:
    from benchmark import catalogue

# Nothing methodbench runs may download from a model or data hub; the workers inherit this.
for _var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
    os.environ.setdefault(_var, "1")

EXIT_USAGE = 2
EXIT_REGRESSION = 1
# `bench run --observe NAME` loads this module as a plugin: the observers shipped with
# methodbench (plugins/observers/) are opt-in, never discovered.
OBSERVER_MODULE = "plugins.observers.{}_observer"

console = Console(soft_wrap=True)
err_console = Console(stderr=True, soft_wrap=True)


class UsageError(Exception):
    """Bad input from the user: printed without a traceback, exit code 2."""


# --------------------------------------------------------------------------- commands


def cmd_plugins(args: argparse.Namespace) -> int:
    """Every registration (kind, name, plugin, paper) and every plugin with its errors; with
    NAME, one registration: its plugin, paper, docstring and typed hyperparameters."""
    from benchmark import catalogue

    registry = _registry(args, strict=False)
    if args.name is not None or args.kind is not None:
        if args.name is None:
            raise UsageError("--kind picks among registrations of one NAME: bench plugins NAME")
        entry = catalogue.find(registry, args.name, args.kind)
        if args.json:
            print(json.dumps(catalogue.detail_json(entry), indent=2))
        else:
            _print_entry(registry, entry)
        return 0
    if args.json:
        print(json.dumps(catalogue.listing_json(registry), indent=2))
        return 0
    listing = catalogue.entries(registry)
    for category, title in (
        ("method", "methods"),
        ("workload", "workloads"),
        ("attack", "attacks"),
    ):
        rows = [e for e in listing if e.category == category]
        if not rows:
            continue
        if category == "workload":
            _print_workloads(catalogue.workloads(rows))
            continue
        table = Table(title=f"{title} ({len(rows)})", title_justify="left", box=box.SIMPLE_HEAD)
        # Kinds, names and plugins are identifiers: never cut; papers fold.
        for col, values in (
            ("kind", [e.kind for e in rows]),
            ("name", [e.name for e in rows]),
            ("plugin", [e.plugin for e in rows]),
        ):
            widest = min(max(len(v) for v in values), 24)
            table.add_column(col, min_width=widest, overflow="fold")
        table.add_column("paper", min_width=min(16, console.width // 5), overflow="fold")
        for e in rows:
            table.add_row(Text(e.kind), Text(e.name), Text(e.plugin), Text(e.paper or "-"))
        console.print(table, soft_wrap=False)
    table = Table(title="plugins", title_justify="left", box=box.SIMPLE_HEAD)
    widest = max((len(p.name) for p in registry.plugins.values()), default=6)
    table.add_column("plugin", min_width=min(widest, 32), overflow="fold")
    table.add_column("source", no_wrap=True)
    table.add_column("distribution", overflow="fold")
    table.add_column("n", justify="right", no_wrap=True)
    table.add_column("status", no_wrap=True)
    for p in registry.plugins.values():
        dist = f"{p.distribution or '?'} {p.version or ''}".strip()
        status = Text("ok", style="green") if p.ok else Text("errors", style="red")
        table.add_row(Text(p.name), Text(p.source), Text(dist), str(len(p.registered)), status)
    console.print(table, soft_wrap=False)
    # Errors are long (an exception and where it was raised): full width, one per line.
    for p in registry.plugins.values():
        for error in p.errors:
            line = Text.assemble((p.name, "red"), f": {error}")
            console.print(line, soft_wrap=False, highlight=False)
    console.print(
        "n: registrations. bench plugins NAME: one in full; --json: for tools.",
        markup=False,
        soft_wrap=False,
    )
    broken = [p for p in registry.plugins.values() if not p.ok]
    if broken:
        console.print(
            f"[yellow]{len(broken)} plugin(s) reported errors and were skipped "
            "(in part or whole); the rest are usable.[/]",
            soft_wrap=False,
        )
    return 0


def _print_workloads(rows: Sequence[catalogue.Workload]) -> None:
    """The workloads, one row per name (its kinds joined, wrapped between kinds where the
    row is short of room) with its description on its own lines beneath, indented and
    wrapped at the console's width: a description is prose, too long for a column that
    shares 80 characters with three identifiers."""
    import textwrap

    width = console.width
    name_w = max(len("name"), *(len(w.name) for w in rows))
    plugin_w = max(len("plugin"), *(len(w.plugin) for w in rows))
    longest_kind = max(len(k) for w in rows for k in w.kinds)
    room = width - 2 - name_w - 3 - 3 - plugin_w  # indent, two gaps
    joined = max(len("kinds"), *(len(", ".join(w.kinds)) for w in rows))
    kinds_w = max(min(joined, room), longest_kind)

    def line(name: str, kinds: str, plugin: str, style: str = "") -> None:
        text = f"  {name:<{name_w}}   {kinds:<{kinds_w}}   {plugin}".rstrip()
        console.print(Text(text, style=style), soft_wrap=False, overflow="fold")

    console.print(Text(f"workloads ({len(rows)})"), soft_wrap=False)
    console.print(soft_wrap=False)
    line("name", "kinds", "plugin", style="bold")
    console.print(Text(" " + "─" * (min(width, 2 + name_w + kinds_w + plugin_w + 7) - 2)))
    for w in rows:
        kinds = textwrap.wrap(", ".join(w.kinds), kinds_w, break_long_words=False) or ["-"]
        for i, k in enumerate(kinds):
            line(w.name if i == 0 else "", k, w.plugin if i == 0 else "")
        for text in textwrap.wrap(w.description or "-", max(width - 6, 20)):
            console.print(Text(f"      {text}", style="dim"), soft_wrap=False, overflow="fold")
    console.print(soft_wrap=False)


def _print_entry(registry, entry) -> None:  # type: ignore[no-untyped-def]
    """``bench plugins NAME``: what one registration is, where it comes from, what it
    takes. Every string is the plugin's text, printed literally, never as rich markup."""
    from benchmark import catalogue

    owner = registry.owner_of(entry.kind, entry.name)
    origin = entry.plugin
    if owner is not None:
        dist = " ".join(x for x in (owner.distribution, owner.version) if x)
        origin += f" ({owner.source}{', ' + dist if dist else ''})"
    facts = Table.grid(padding=(0, 2))
    facts.add_column(style="bold", no_wrap=True)
    facts.add_column(overflow="fold")
    for label, value in (
        ("kind", entry.what),
        ("plugin", origin),
        ("paper", entry.paper or "-"),
        ("description", entry.description or "-"),
        ("factory", entry.factory),
    ):
        facts.add_row(label, Text(value))
    console.print(Text(entry.qualified, style="bold"), soft_wrap=False)
    console.print(facts, soft_wrap=False)
    doc, source = catalogue.factory_doc(entry.spec)
    if doc:
        console.print(soft_wrap=False)
        console.print(Text(doc), soft_wrap=False)
        console.print(Text(f"(from the {source} docstring)", style="dim"), soft_wrap=False)
    hps, note = catalogue.hyperparameters(entry.spec)
    what = "options" if entry.category == "workload" else "hyperparameters"
    console.print(soft_wrap=False)
    if not hps:
        console.print(f"{what}: none", markup=False, soft_wrap=False)
        return
    table = Table(title=what, title_justify="left", box=box.SIMPLE_HEAD)
    table.add_column("name", no_wrap=True)
    table.add_column("type", overflow="fold")
    table.add_column("default", overflow="fold")
    table.add_column("doc", overflow="fold")
    for h in hps:
        default = "required" if h.required else repr(h.default)
        table.add_row(Text(h.name), Text(h.shown_type), Text(default), Text(h.doc or ""))
    console.print(table, soft_wrap=False)
    if note:
        console.print(Text(note, style="dim"), soft_wrap=False)


def cmd_validate(args: argparse.Namespace) -> int:
    from benchmark.suite import check_names, expand, load_suite

    registry = _registry(args)
    for path in args.suites:
        suite = load_suite(path)
        check_names(suite, registry, path)
        # Validation must not depend on this machine: expand as for the CPU.
        specs = expand(suite, device="cpu", max_runs=_max_runs(args))
        kinds = sorted({s.kind for s in specs})
        console.print(
            f"[green]{escape(str(path))}[/]: suite {suite.name!r} is valid: {len(specs)} runs "
            f"({', '.join(kinds)})"
        )
        if suite.device == "cuda":
            console.print("  note: the suite asks for device 'cuda'")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from benchmark.api import ExecutorUnavailable, open_run

    if args.inline and args.executor != "local":
        raise UsageError("--inline runs in this process; it cannot be combined with --executor")
    registry = _registry(args)
    try:
        with open_run(
            args.suite,
            registry=registry,
            results=args.results,
            jobs=args.jobs,
            device=args.device,
            plugins=_plugins(args),
            rerun=args.rerun,
            executor="inline" if args.inline else args.executor,
            ray_address=args.ray_address,
            max_runs=_max_runs(args),
        ) as run:
            resumed = (
                f", {run.skipped} already finished (resume; --rerun to redo)" if run.skipped else ""
            )
            console.print(
                f"suite [bold]{run.suite.name}[/]: {len(run.specs)} runs on {run.device}"
                f"{resumed} -> {escape(str(run.results_dir))}"
            )
            for note in run.notes:
                console.print(note, style="yellow", markup=False)
            with _ProgressEvents(len(run.todo)) as events:
                records = run.execute(events)
            bad = [r for r in records if r.status != "ok"]
            console.print(
                f"{len(records)} runs finished, {len(bad)} not ok; records in {run.results_dir}",
                markup=False,
            )
            if not args.no_report:
                _write_and_print_reports(run.results_dir)
    except ExecutorUnavailable as exc:
        raise UsageError(str(exc)) from exc
    return 0


def cmd_leaderboard(args: argparse.Namespace) -> int:
    from benchmark import store

    results_dir = Path(args.results)
    if not results_dir.is_dir():
        raise UsageError(f"{results_dir}: no such results directory")
    _load_kinds(args)
    paths = store.record_paths(results_dir)
    if not paths:
        raise UsageError(f"{results_dir}: no run records to report (nothing under runs/)")
    records = store.read_records(results_dir)[0]
    if not records:
        raise UsageError(f"{results_dir}: none of its {len(paths)} record files can be read")
    if args.out and Path(args.out).exists() and not Path(args.out).is_dir():
        raise UsageError(f"--out {args.out}: exists and is not a directory")
    from benchmark.kinds.registered import unregistered

    unknown = unregistered(r.spec.kind for r in records)
    if unknown and not args.out:
        # The directory's reports were written by a process that knew the kind: an
        # unranked rewrite in place would replace a ranking with less.
        raise UsageError(
            f"{results_dir}: records of kind(s) {', '.join(map(repr, unknown))} that no "
            "loaded plugin defines; load the plugin with --plugin MODULE, or write the "
            "unranked reports elsewhere with --out DIR"
        )
    _write_and_print_reports(results_dir, Path(args.out) if args.out else None)
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from benchmark.api import load_results

    frame = load_results(args.results, current=not args.all)
    out = Path(args.out or Path(args.results) / f"results.{args.format}")
    if args.format == "parquet":
        try:
            frame.to_parquet(out, index=False)
        except ImportError as exc:
            raise UsageError(
                f"--format parquet needs pyarrow (pip install pyarrow): {exc}"
            ) from None
    else:
        frame.to_csv(out, index=False)
    print(f"{len(frame)} runs, {len(frame.columns)} columns -> {out}")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from benchmark import store
    from benchmark.report.compare import parse_rule

    try:
        rules = [parse_rule(r) for r in args.fail_on]
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    if args.against is not None:
        return _compare_against(args, rules)
    if args.new is None:
        raise UsageError(
            "bench compare needs OLD and NEW results directories, or --against REV SUITE"
        )
    for d in (args.old, args.new):
        if not Path(d).is_dir():
            raise UsageError(f"{d}: no such results directory")
    _load_kinds(args)
    sides = {}
    for side, where in (("OLD", args.old), ("NEW", args.new)):
        records, unreadable = store.read_records(Path(where))
        if unreadable:
            # A truncated record is a lost configuration: comparing without it could pass.
            names = ", ".join(p.name for p, _ in unreadable[:3])
            raise UsageError(
                f"{side} {where}: {len(unreadable)} record file(s) cannot be read ({names}"
                f"{', ...' if len(unreadable) > 3 else ''}); fix or remove them"
            )
        if not records:
            # Nothing to compare is not "no regression": a CI job whose run produced no
            # records must fail loudly, not pass.
            raise UsageError(f"{side} {where}: no run records to compare")
        sides[side] = store.current_records(records)[0]
    old, new = sides["OLD"], sides["NEW"]
    return _report_comparison(args, old, new, rules)


def _compare_against(args: argparse.Namespace, rules: list) -> int:  # type: ignore[type-arg]
    """`bench compare --against REV SUITE`: both sides run now, interleaved, then judged."""
    import time

    from benchmark.ab import ABError, git_root, run_ab, worktree
    from benchmark.api import plan_suite

    if args.new is not None:
        raise UsageError("with --against, give one suite file: bench compare --against REV SUITE")
    registry = _registry(args)
    suite, specs = plan_suite(args.old, registry, max_runs=_max_runs(args))
    results = Path(args.results or tempfile.mkdtemp(prefix="methodbench-ab-results-"))
    started = time.perf_counter()
    try:
        with worktree(git_root(Path.cwd()), args.against) as (source, commit):
            console.print(
                f"A/B: {len(specs)} runs of suite {escape(suite.name)} at {commit[:10]} and in "
                f"the working tree, interleaved -> {escape(str(results))}"
            )
            with _ProgressEvents(2 * len(specs)) as events:
                old, new = run_ab(
                    specs, source, results, registry, plugins=_plugins(args), events=events
                )
    except ABError as exc:
        raise UsageError(str(exc)) from None
    console.print(f"A/B took {time.perf_counter() - started:.0f} s", markup=False)
    return _report_comparison(args, old, new, rules)


def _report_comparison(args: argparse.Namespace, old, new, rules) -> int:  # type: ignore[no-untyped-def]
    from benchmark.report.compare import compare, render_json, render_markdown, render_text

    in_new = {name for r in new for name in r.metrics}
    for rule in rules:
        if rule.metric not in in_new:
            raise UsageError(
                f"--fail-on {rule.text}: no record in NEW has a metric {rule.metric!r}"
                f"{_did_you_mean(rule.metric, in_new)}"
            )
    _warn_unregistered(r.spec.kind for r in [*old, *new])
    result = compare(old, new, rules, allow_missing=args.allow_missing)
    if result.unjudged_kinds:
        # A gate that skipped a kind's configurations would pass them unjudged.
        raise UsageError(
            f"configurations of {', '.join(repr(k) for k in result.unjudged_kinds)} were not "
            "judged: the kind is not registered, so it has no headline metric; load its "
            "plugin with --plugin MODULE, or name the metrics to judge with --fail-on"
        )
    if result.compared == 0:
        raise UsageError(
            "OLD and NEW share no configuration (kind, method, hyperparameters, workload, "
            "device): nothing was compared"
        )
    markdown = render_markdown(result)
    if args.markdown:
        Path(args.markdown).write_text(markdown)
    summary = os.environ.get("GITHUB_STEP_SUMMARY")
    if summary:
        with open(summary, "a") as fh:  # GitHub Actions shows it on the run's page
            fh.write(markdown)
    if args.json:
        print(render_json(result))
    elif console.is_terminal:
        _print_comparison(result)
    else:
        print(render_text(result))
    return EXIT_REGRESSION if result.failed else 0


def _print_comparison(result) -> None:  # type: ignore[no-untyped-def]
    from benchmark.report.compare import HEAD, rows_for_display, summary_line

    colours = {"regressed": "red", "status changed": "red", "lost": "red", "missing": "red"}
    table = Table(title=summary_line(result), show_lines=False)
    for col in HEAD:
        table.add_column(col, overflow="fold")
    for row in rows_for_display(result):
        table.add_row(Text(row[0], style=colours.get(row[0], "")), *(Text(c) for c in row[1:]))
    console.print(table)


def cmd_history(args: argparse.Namespace) -> int:
    from benchmark import history, store

    folder = Path(args.history)
    if args.add:
        _load_kinds(args)
    for results in args.add:
        if not Path(results).is_dir():
            raise UsageError(f"--add {results}: no such results directory")
        _warn_unregistered(r.spec.kind for r in store.load_records(Path(results)))
        n = history.add(folder, Path(results))
        if n:
            console.print(
                f"added {escape(results)}: the history holds {n} points for its suite(s)",
                markup=True,
            )
        else:
            console.print(
                f"{escape(results)}: no points added (only records of a clean commit and a "
                "registered kind are tracked)",
                markup=True,
            )
    if not history.load(folder):
        raise UsageError(f"{folder}: no history yet (add results with --add RESULTS_DIR)")
    page = history.write_page(folder, Path(args.out) if args.out else None)
    for s in history.series(history.load(folder)):
        if s.steps:
            commits = ", ".join(s.points[i].commit[:10] for i in s.steps)
            console.print(
                Text(f"step: {s.suite} {s.config} {s.metric} at {commits}"), highlight=False
            )
    console.print(f"history page: {page}", markup=False)
    return 0


# --------------------------------------------------------------------------- helpers


def _registry(args: argparse.Namespace, *, strict: bool = True):  # type: ignore[no-untyped-def]
    """The registry; ``strict``: a module the user named with --plugin that failed to load
    is an error now, not an "unknown method" later (``bench plugins`` lists it instead)."""

    from benchmark.host import Registry

    with _stdout_to_stderr():
        registry = Registry(extra_plugins=_plugins(args))
    if strict:
        broken = [
            f"--plugin {p.name}: {'; '.join(p.errors)}"
            for p in registry.plugins.values()
            if p.source == "command-line" and not p.ok
        ]
        if broken:
            raise UsageError("; ".join(broken))
    return registry


def _load_kinds(args: argparse.Namespace) -> None:
    """Before records are read (leaderboard, compare, history): discover plugins as ``bench
    run`` does (built-ins, entry points under their allow and deny lists, --plugin), so a
    plugin kind's records are ranked, judged and tracked by its own definition. A plugin
    that fails is a warning here, not an error: every other kind's records still read."""
    registry = _registry(args, strict=False)
    for p in registry.plugins.values():
        if not p.ok:
            _warn(f"plugin {p.name} ({p.source}) skipped: {'; '.join(p.errors)}")


def _warn_unregistered(kinds: Iterable[str]) -> None:
    """One loud line per kind of the records that no plugin loaded here defines."""
    from benchmark.kinds.registered import unregistered, unregistered_note

    for kind in unregistered(kinds):
        _warn(unregistered_note(kind))


def _warn(message: str) -> None:
    """One line on stderr, printed literally (plugin errors hold brackets and paths)."""
    line = " ".join(message.splitlines())
    err_console.print(Text.assemble(("warning", "yellow"), f": {line}"), highlight=False)


@contextlib.contextmanager
def _stdout_to_stderr() -> Iterator[None]:
    """While plugins are imported, what they print goes to stderr, at the Python level and
    at the file-descriptor level (``os.write(1, ...)``, C extensions), so that output meant
    for a pipe (`bench plugins --json`) stays what it says it is."""
    sys.stdout.flush()
    try:
        saved = os.dup(1)
        os.dup2(2, 1)
    except OSError:
        saved = None  # no descriptor 1 to move: the Python-level redirect still applies
    try:
        with contextlib.redirect_stdout(sys.stderr):
            yield
    finally:
        sys.stderr.flush()
        if saved is not None:
            os.dup2(saved, 1)
            os.close(saved)


def _did_you_mean(name: str, known: set[str]) -> str:
    from benchmark.host import suggest

    return suggest(name, sorted(known))


def _max_runs(args: argparse.Namespace) -> int | None:
    from benchmark.suite import MAX_RUNS

    given = getattr(args, "max_runs", None)
    if given is None:
        return MAX_RUNS
    return None if given == 0 else given


def _plugins(args: argparse.Namespace) -> list[str]:
    """Modules named with --plugin before and after the subcommand, then the observers
    named with --observe, in order, once each."""
    both = [*getattr(args, "plugin_before_command", []), *getattr(args, "plugin", [])]
    both += [_observer_module(name) for name in getattr(args, "observe", [])]
    return list(dict.fromkeys(both))


def _observer_module(name: str) -> str:
    """The module ``--observe NAME`` loads; an unknown name is a usage error that lists the
    observers shipped (found on disk, none imported)."""
    import pkgutil

    from benchmark.host import suggest

    package = importlib.util.find_spec(OBSERVER_MODULE.rpartition(".")[0])
    places = list(package.submodule_search_locations or []) if package else []
    suffix = OBSERVER_MODULE.rpartition(".")[2].replace("{}", "")
    shipped = sorted(
        m.name.removesuffix(suffix) for m in pkgutil.iter_modules(places) if m.name.endswith(suffix)
    )
    if name not in shipped:
        raise UsageError(
            f"--observe {name}: no such observer{suggest(name, shipped)}; "
            f"shipped: {', '.join(shipped) or 'none'} (any other: --plugin MODULE)"
        )
    return OBSERVER_MODULE.format(name)


def _write_and_print_reports(results_dir: Path, out_dir: Path | None = None) -> None:
    """Write every report; print a summary that fits the terminal (the Markdown, with every
    column and note, is in the file)."""
    from benchmark.report.render import load_report
    from benchmark.report.summary import print_summary

    report = load_report(results_dir)
    _warn_unregistered(r.spec.kind for r in report.records)
    paths = report.write(out_dir or results_dir)
    # An unranked table (its kind unknown) is left out of the summary; the warning above
    # says what is missing.
    print_summary(console, report.tables, str(paths["markdown"]))
    console.print("reports: " + ", ".join(str(p) for p in paths.values()), markup=False)


class _ProgressEvents:
    """A rich progress bar over runs, a live line per running run, a line per finished one."""

    def __init__(self, total: int) -> None:
        self.bar = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
            transient=False,
        )
        self.overall = self.bar.add_task("runs", total=total)
        self.lines: dict[str, int] = {}

    def __enter__(self) -> _ProgressEvents:
        self.bar.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.bar.stop()

    def started(self, spec) -> None:  # type: ignore[no-untyped-def]
        self.lines[spec.id] = self.bar.add_task(f"  {escape(spec.label)}: starting", total=None)

    def progress(self, spec, message: str) -> None:  # type: ignore[no-untyped-def]
        task = self.lines.get(spec.id)
        if task is not None:
            self.bar.update(task, description=f"  {escape(spec.label)}: {escape(message)}")

    def warn(self, spec, message: str) -> None:  # type: ignore[no-untyped-def]
        line = Text.assemble(("    warning", "yellow"), f" {spec.label}: {message}")
        self.bar.console.print(line)

    def finished(self, record) -> None:  # type: ignore[no-untyped-def]
        from benchmark.kinds import KIND_INFO

        task = self.lines.pop(record.spec.id, None)
        if task is not None:
            self.bar.remove_task(task)
        self.bar.advance(self.overall)
        colour = {"ok": "green", "skipped": "dim"}.get(record.status, "red")
        primary = KIND_INFO[record.spec.kind].primary if record.spec.kind in KIND_INFO else None
        figure = ""
        if record.status == "ok" and primary and primary in record.metrics:
            m = record.metrics[primary]
            figure = f" {primary}={m.value:.4g}" if m.value is not None else f" {primary}=n/a"
        why = f" ({record.reason})" if record.reason else ""
        took = f" [{record.duration_s:.1f} s]" if record.duration_s is not None else ""
        # Labels, reasons and figures carry user and plugin text ("[lr=0.003]", a
        # bracketed path in an exception): printed literally, never as rich markup.
        line = Text.assemble(
            (f"{record.status:>8}", colour), f" {record.spec.label}{figure}{took}{why}"
        )
        self.bar.console.print(line)


# --------------------------------------------------------------------------- parser


class _Parser(argparse.ArgumentParser):
    """argparse, with a usage mistake reported in one line (exit 2), like every other bad
    input, instead of the usage block followed by the error."""

    def error(self, message: str) -> NoReturn:
        sys.stderr.write(f"error: {self.prog}: {message} (see: {self.prog} --help)\n")
        raise SystemExit(EXIT_USAGE)


def build_parser() -> argparse.ArgumentParser:
    common = _Parser(add_help=False)
    common.add_argument(
        "--plugin",
        action="append",
        default=[],
        metavar="MODULE",
        help="also load this module as a plugin (repeatable)",
    )
    parser = _Parser(
        prog="bench",
        description="methodbench: benchmark methods that make networks cheaper "
        "or safer to train and run.",
    )
    # Before the subcommand (`bench --plugin m run ...`) the option lands in its own
    # destination: a subcommand's parser writes its (empty) default over the parent's
    # value, which silently dropped the module. Both lists are joined in _plugins().
    parser.add_argument(
        "--plugin",
        dest="plugin_before_command",
        action="append",
        default=[],
        metavar="MODULE",
        help="also load this module as a plugin (repeatable)",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser(
        "plugins",
        parents=[common],
        help="list every method, workload and attack, and the plugins; NAME: one in full",
    )
    p.add_argument(
        "name",
        nargs="?",
        metavar="NAME",
        help="a method, workload or attack (KIND/NAME where the name alone is ambiguous)",
    )
    p.add_argument("--kind", metavar="KIND", help="with NAME: the kind (or method, workload)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_plugins)

    p = sub.add_parser("validate", parents=[common], help="check suite files without running")
    p.add_argument("suites", nargs="+", metavar="SUITE")
    _add_max_runs(p)
    p.set_defaults(func=cmd_validate)

    p = sub.add_parser("run", parents=[common], help="run a suite, then write its leaderboard")
    p.add_argument("suite", metavar="SUITE")
    p.add_argument("--results", metavar="DIR", help="results directory (default results/<suite>)")
    p.add_argument(
        "--jobs",
        type=_jobs,
        default=None,
        metavar="N|auto",
        help="runs in parallel, each pinned to its own cores (default: the suite's jobs, or "
        "1); auto: one per core on a CPU, one on a GPU",
    )
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], help="override the suite's device")
    p.add_argument("--rerun", action="store_true", help="redo runs that already have a record")
    p.add_argument(
        "--inline",
        action="store_true",
        help="run in this process (debugging; no timeouts or process isolation)",
    )
    p.add_argument(
        "--executor",
        choices=["local", "ray"],
        default="local",
        help="local: a process per run on this machine (default); ray: a Ray task per run",
    )
    p.add_argument(
        "--ray-address",
        metavar="ADDR",
        help="Ray cluster to join (e.g. ray://head:10001); default: a local Ray instance",
    )
    p.add_argument("--no-report", action="store_true", help="skip writing the leaderboard")
    p.add_argument(
        "--observe",
        action="append",
        default=[],
        metavar="NAME",
        help="log every run to an observer shipped with methodbench (repeatable): mlflow "
        "(needs methodbench[mlflow]; MLFLOW_TRACKING_URI, default ./mlruns)",
    )
    _add_max_runs(p)
    p.set_defaults(func=cmd_run)

    p = sub.add_parser(
        "leaderboard",
        parents=[common],
        help="write LEADERBOARD.md, leaderboard.csv and report.html",
    )
    p.add_argument("results", metavar="RESULTS_DIR")
    p.add_argument("--out", metavar="DIR", help="where to write (default: RESULTS_DIR)")
    p.set_defaults(func=cmd_leaderboard)

    p = sub.add_parser(
        "export",
        parents=[common],
        help="one row per run (every metric with unit, n and interval; hyperparameters and "
        "options as columns) to CSV or Parquet",
    )
    p.add_argument("results", metavar="RESULTS_DIR")
    p.add_argument("--format", choices=["csv", "parquet"], default="csv")
    p.add_argument("--out", metavar="FILE", help="default: RESULTS_DIR/results.<format>")
    p.add_argument(
        "--all", action="store_true", help="every record, not only the leaderboards' current ones"
    )
    p.set_defaults(func=cmd_export)

    p = sub.add_parser(
        "compare",
        parents=[common],
        help="noise-aware verdicts between two results directories; exit 1 on a failing one",
    )
    p.add_argument("old", metavar="OLD", help="results directory (or, with --against, a suite)")
    p.add_argument("new", metavar="NEW", nargs="?", help="results directory")
    p.add_argument(
        "--against",
        metavar="REV",
        help="run the suite OLD for git revision REV and for the working tree, interleaved "
        "run by run on this machine, then judge (the honest way to gate timings)",
    )
    p.add_argument("--results", metavar="DIR", help="with --against: where both sides' records go")
    p.add_argument(
        "--fail-on",
        action="append",
        default=[],
        metavar="METRIC:+N%",
        help="judge METRIC: the sign is the bad direction, N the smallest change that counts "
        "(relative with %%), e.g. 'eval_loss:+2%%' or 'auroc:-0.01' (repeatable; default: "
        "each kind's headline metric, any change beyond noise)",
    )
    p.add_argument(
        "--allow-missing",
        action="store_true",
        help="a configuration in OLD but not in NEW does not fail the comparison",
    )
    p.add_argument("--markdown", metavar="FILE", help="also write the verdicts as Markdown")
    p.add_argument("--json", action="store_true", help="print the verdicts as JSON")
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser(
        "history",
        parents=[common],
        help="results over commits: add a results directory, write trend plots with steps",
    )
    p.add_argument("history", metavar="HISTORY_DIR")
    p.add_argument(
        "--add",
        action="append",
        default=[],
        metavar="RESULTS_DIR",
        help="append these results (one point per commit, machine, configuration, metric)",
    )
    p.add_argument("--out", metavar="FILE", help="where to write the page (default index.html)")
    p.set_defaults(func=cmd_history)
    return parser


def _jobs(text: str) -> int | str:
    return "auto" if text.strip().lower() == "auto" else _positive(text)


def _positive(text: str) -> int:
    value = _non_negative(text)
    if value == 0:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def _non_negative(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{value} is negative")
    return value


def _add_max_runs(p: argparse.ArgumentParser) -> None:
    from benchmark.suite import MAX_RUNS

    p.add_argument(
        "--max-runs",
        type=_non_negative,
        default=None,
        metavar="N",
        help=f"refuse a suite that expands to more runs (default {MAX_RUNS:,}; 0: no limit)",
    )


def main(argv: Sequence[str] | None = None) -> int:
    from benchmark.host import UnknownName
    from benchmark.store import StoreError
    from benchmark.suite import DeviceUnavailable, SuiteError

    args = build_parser().parse_args(argv)
    # SIGTERM (what `timeout`, CI cancellation and `kill` send) stops a suite the way
    # Ctrl-C does: workers killed, finished records kept, temporary files removed.
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        return int(args.func(args))
    except SuiteError as exc:
        for problem in exc.problems:
            _error(problem)
    except (UsageError, DeviceUnavailable, StoreError, UnknownName) as exc:
        _error(str(exc))
    except OSError as exc:
        # What the parent touches is the suite, the results directory and the reports: a
        # path that is a file where a folder belongs (or the reverse), no permission, a
        # full disk. Say which path and why; the worker's own errors become records.
        where = f"{exc.filename}: " if exc.filename else ""
        _error(f"{where}{exc.strerror or str(exc) or type(exc).__name__}")
    except (MemoryError, RecursionError) as exc:
        _error(
            f"{type(exc).__name__} while handling the input; it is too large or too deeply nested"
        )
    except _Terminated:
        err_console.print("terminated: finished runs are stored; run again to resume")
        return 128 + signal.SIGTERM
    except KeyboardInterrupt:
        err_console.print("interrupted: finished runs are stored; run again to resume")
        return 130
    finally:
        signal.signal(signal.SIGTERM, previous)
    return EXIT_USAGE


def _error(message: str) -> None:
    """One line on stderr, whatever the message holds (a path with a newline included)."""
    line = " ".join(message.splitlines())
    err_console.print(Text.assemble(("error", "red"), f": {line}"), highlight=False)


class _Terminated(KeyboardInterrupt):
    """SIGTERM, handled as Ctrl-C is; the exit status says which (143, not 130)."""


def _interrupt(signum: int, frame: object) -> None:
    raise _Terminated


if __name__ == "__main__":
    sys.exit(main())
