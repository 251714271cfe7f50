"""Labeling API under load, and export throughput (issue 3, item 10).

    .venv/bin/python -m bench.labeling_load [--labelers 50] [--duration 30]

1. 50 simulated labelers (one HTTP session and API token each; threads spread over
   `--client-processes` processes, 5 labelers to a GIL by default, since the 50 people
   this stands for use 50 browsers) loop
   `GET tasks/next/` + `POST tasks/{id}/rankings/` against the app served by gunicorn on
   PostgreSQL; we report p50/p95/p99 latency of each request and of the pair, errors, and
   then check the database: no task over-leased, no accepted submission lost. Each load
   runs twice, side by side: tasks outside any round, and the same tasks inside a round at
   the labeling stage (the path a real round takes: every submission counts in the round's
   progress and auto-advance is armed, so the last one moves the round on). Throughput is
   also given per CPU-second of the server (gunicorn and the bench database's PostgreSQL
   backends), which a busy shared machine disturbs less than the wall clock.
2. Export: 100,000 comparisons streamed through `comparison_rows` + `jsonl_stream`
   (in-process) and through the HTTP endpoint; rows/s, and peak Python memory at 10k and
   100k rows to show it stays flat in the row count.

Needs PostgreSQL (BENCH_DATABASE_URL, default postgres://postgres@127.0.0.1:5432/rlhf_bench;
the database is created if missing and its bench project replaced on every run).
"""

import argparse
import json
import os
import random
import secrets
import socket
import subprocess
import sys
import threading
import time
import tracemalloc
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench" / "out"
DEFAULT_DB = "postgres://postgres@127.0.0.1:5432/rlhf_bench"


def _ensure_database(url: str) -> None:
    from urllib.parse import urlparse

    import psycopg

    parsed = urlparse(url)
    name = parsed.path.lstrip("/")
    admin = parsed._replace(path="/postgres").geturl()
    with psycopg.connect(admin, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone()
        if not exists:
            conn.execute(f'CREATE DATABASE "{name}"')


def _setup_django(url: str) -> None:
    os.environ["DATABASE_URL"] = url
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.local")
    os.environ["DJANGO_DEBUG"] = "false"
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)


def _seed(
    *, labelers: int, tasks: int, k: int, overlap: int, in_round: bool = False
) -> tuple[str, list[str]]:
    """The bench project with its labelers and open tasks; with `in_round`, the tasks
    belong to a round at the labeling stage (as the generate stage leaves them)."""
    from django.contrib.auth import get_user_model
    from rest_framework.authtoken.models import Token

    from labeling.models import Membership, Project, Prompt, RankingTask, Response
    from training.models import Round

    Project.objects.filter(slug="bench").delete()
    project = Project.objects.create(slug="bench", name="Bench", k=k, overlap=overlap)
    round_ = None
    if in_round:
        round_ = Round.objects.create(
            project=project,
            number=1,
            stage=Round.Stage.LABELING,
            num_prompts=tasks,
            progress_total=tasks * overlap,
        )
    user_model = get_user_model()
    keys = []
    for i in range(labelers):
        user, _ = user_model.objects.get_or_create(username=f"bench-labeler-{i}")
        Membership.objects.create(project=project, user=user, role="labeler")
        Token.objects.filter(user=user).delete()
        keys.append(Token.objects.create(user=user).key)
    prompts = Prompt.objects.bulk_create(
        Prompt(project=project, text=f"Prompt {i}: explain idea {i}.", content_hash=f"{i:064x}")
        for i in range(tasks)
    )
    task_rows = RankingTask.objects.bulk_create(
        RankingTask(project=project, prompt=p, overlap=overlap, round=round_, source="policy")
        for p in prompts
    )
    Response.objects.bulk_create(
        Response(task=t, position=j, text=f"Answer {j} to task {t.pk}. " * 20, policy_name="bench")
        for t in task_rows
        for j in range(k)
    )
    _analyze()
    return project.slug, keys


def _analyze() -> None:
    """Fresh planner statistics (right after a bulk seed PostgreSQL would plan on empty
    ones), and the previous run's deleted rows vacuumed now: left to autovacuum, it would
    run during the next measurement and take CPU from it."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("VACUUM ANALYZE")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _start_gunicorn(url: str, port: int, workers: int | None) -> subprocess.Popen:
    """The app as deployed: gunicorn with the product's config/gunicorn.conf.py (sync
    workers, its count unless `workers` is given), the production settings, and its
    access log (to a file the bench throws away)."""
    env = {
        **os.environ,
        "DATABASE_URL": url,
        "DJANGO_SETTINGS_MODULE": "config.settings.production",
        "DJANGO_SECRET_KEY": secrets.token_urlsafe(64),
        "DJANGO_ALLOWED_HOSTS": "127.0.0.1,localhost",
        "DJANGO_SECURE_SSL_REDIRECT": "false",
        "DJANGO_LOG_LEVEL": "WARNING",
        "GUNICORN_ACCESS_LOG": os.devnull,
    }
    cmd = [
        str(ROOT / ".venv" / "bin" / "gunicorn"), "-c", str(ROOT / "config" / "gunicorn.conf.py"),
        "config.wsgi", "-b", f"127.0.0.1:{port}", "--log-level", "warning",
    ]  # fmt: skip
    if workers is not None:
        cmd += ["--workers", str(workers)]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env)
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return proc
        except OSError:
            time.sleep(0.3)
    proc.kill()
    raise SystemExit("gunicorn did not start")


def _configured_workers() -> int:
    """The worker count config/gunicorn.conf.py gives this machine."""
    import runpy

    return int(runpy.run_path(str(ROOT / "config" / "gunicorn.conf.py"))["workers"])


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


class Labeler(threading.Thread):
    """One labeler: next, rank, submit, then `think_ms` (jittered) before the next task."""

    def __init__(
        self, base: str, slug: str, key: str, until: float, seed: int, think_ms: float = 0.0
    ) -> None:
        super().__init__(daemon=True)
        self.think_s = think_ms / 1000
        import requests

        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Token {key}"
        self.base, self.slug, self.until = base, slug, until
        self.rng = random.Random(seed)
        self.next_ms: list[float] = []
        self.submit_ms: list[float] = []
        self.cycle_ms: list[float] = []
        self.errors: list[str] = []
        self.accepted: list[int] = []

    def run(self) -> None:
        import requests

        # People do not all press "next" in the same millisecond: start within one pause.
        time.sleep(self.think_s * self.rng.random())
        while time.time() < self.until:
            t0 = time.perf_counter()
            try:
                resp = self.session.get(f"{self.base}/api/v1/projects/{self.slug}/tasks/next/")
            except requests.RequestException as error:  # counted, never a dead labeler
                self.errors.append(f"next: {error.__class__.__name__}")
                continue
            t1 = time.perf_counter()
            self.next_ms.append((t1 - t0) * 1000)
            if resp.status_code == 204:
                return
            if resp.status_code != 200:
                self.errors.append(f"next {resp.status_code}")
                continue
            task = resp.json()
            ids = [r["id"] for r in task["responses"]]
            self.rng.shuffle(ids)
            order: list[list[int]] = [[ids[0]]]
            for rid in ids[1:]:  # about one tie in four
                if self.rng.random() < 0.25:
                    order[-1].append(rid)
                else:
                    order.append([rid])
            body: dict[str, Any] = {
                "order": order, "flags": {}, "time_spent_ms": self.rng.randint(2000, 60000)
            }  # fmt: skip
            t2 = time.perf_counter()
            try:
                sub = self.session.post(
                    f"{self.base}/api/v1/tasks/{task['id']}/rankings/", json=body
                )
            except requests.RequestException as error:
                self.errors.append(f"submit: {error.__class__.__name__}")
                continue
            t3 = time.perf_counter()
            self.submit_ms.append((t3 - t2) * 1000)
            self.cycle_ms.append((t1 - t0 + t3 - t2) * 1000)
            if sub.status_code == 201:
                self.accepted.append(task["id"])
            else:
                self.errors.append(f"submit {sub.status_code}: {sub.text[:100]}")
            if self.think_s:
                time.sleep(self.think_s * self.rng.uniform(0.5, 1.5))


def _client_process(
    base: str,
    slug: str,
    keys: list[tuple[int, str]],
    think_ms: float,
    ready: Any,
    go: Any,
    until: Any,
    results: Any,
) -> None:
    """One client process: its share of the labelers as threads, started together with
    the other processes' (`go`), results sent back on `results`."""
    threads = [Labeler(base, slug, key, 0.0, seed=i, think_ms=think_ms) for i, key in keys]
    ready.put(True)
    go.wait()
    for t in threads:
        t.until = until.value
        t.start()
    for t in threads:
        t.join()
    fields = ("next_ms", "submit_ms", "cycle_ms", "errors", "accepted")
    results.put([{name: getattr(t, name) for name in fields} for t in threads])


def _run_labelers(
    base: str,
    slug: str,
    keys: list[str],
    think_ms: float,
    duration: float,
    processes: int,
    server: subprocess.Popen,
    database: str,
) -> tuple[list[dict[str, list]], float, float]:
    """Run the labelers for `duration` seconds over `processes` client processes; return
    their results, the elapsed wall time and the server's CPU-seconds meanwhile."""
    import multiprocessing

    context = multiprocessing.get_context("spawn")  # no Django state or DB socket inherited
    ready, results, go = context.Queue(), context.Queue(), context.Event()
    until = context.Value("d", 0.0)
    shares = [list(enumerate(keys))[i::processes] for i in range(processes)]
    clients = [
        context.Process(
            target=_client_process,
            args=(base, slug, share, think_ms, ready, go, until, results),
            daemon=True,
        )
        for share in shares
        if share
    ]
    for client in clients:
        client.start()
    for _ in clients:
        ready.get(timeout=120)
    cpu_before = _cpu_seconds(server, database)
    started = time.perf_counter()
    until.value = time.time() + duration
    go.set()
    labelers = [row for _ in clients for row in results.get(timeout=duration + 300)]
    elapsed = time.perf_counter() - started
    cpu_after = _cpu_seconds(server, database)
    for client in clients:
        client.join(timeout=30)
    cpu_s = sum(max(0.0, s - cpu_before.get(pid, 0.0)) for pid, s in cpu_after.items())
    return labelers, elapsed, cpu_s


def _cpu_seconds(server: subprocess.Popen, database: str) -> dict[int, float]:
    """CPU seconds (user + system) so far of gunicorn's processes and of the PostgreSQL
    backends connected to `database`, by pid."""
    import psutil
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
            [database],
        )
        backends = [row[0] for row in cursor.fetchall()]
    seconds: dict[int, float] = {}
    try:
        master = psutil.Process(server.pid)
        processes = [master, *master.children(recursive=True)]
    except psutil.NoSuchProcess:
        processes = []
    for pid in backends:
        try:
            processes.append(psutil.Process(pid))
        except psutil.NoSuchProcess:
            continue
    for process in processes:
        try:
            times = process.cpu_times()
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        seconds[process.pid] = times.user + times.system
    return seconds


def load_test(args: argparse.Namespace, think_ms: float, *, in_round: bool = False) -> dict:
    from urllib.parse import urlparse

    from django.db.models import Count, Q

    from labeling.models import Ranking, RankingTask
    from training.models import Round

    slug, keys = _seed(labelers=args.labelers, tasks=args.tasks, k=4, overlap=3, in_round=in_round)
    port = _free_port()
    server = _start_gunicorn(args.database_url, port, args.workers)
    database = urlparse(args.database_url).path.lstrip("/")
    try:
        base = f"http://127.0.0.1:{port}"
        warm = Labeler(base, slug, keys[0], time.time() + 2, seed=0)  # warm connections
        warm.run()
        labelers, elapsed, cpu_s = _run_labelers(
            base, slug, keys, think_ms, args.duration, args.client_processes, server, database
        )
    finally:
        server.terminate()
        server.wait(timeout=30)

    accepted = warm.accepted + [tid for t in labelers for tid in t["accepted"]]
    tasks = RankingTask.objects.filter(project__slug=slug).annotate(
        leased=Count("assignments", filter=~Q(assignments__status="skipped"), distinct=True),
        ranked=Count("rankings", distinct=True),
    )
    over_leased = sum(1 for t in tasks if t.ranked > t.overlap or t.leased > t.overlap)
    stored = Ranking.objects.filter(task__project__slug=slug).count()
    cycles = [c for t in labelers for c in t["cycle_ms"]]
    nexts = [c for t in labelers for c in t["next_ms"]]
    submits = [c for t in labelers for c in t["submit_ms"]]
    errors = [e for t in labelers for e in t["errors"]]
    report = {
        "in_round": in_round,
        "labelers": args.labelers,
        "think_ms": think_ms,
        "client_processes": args.client_processes,
        "gunicorn_workers": args.workers or _configured_workers(),
        "duration_s": round(elapsed, 1),
        "submissions": len(cycles),
        "submissions_per_s": round(len(cycles) / elapsed, 1),
        "server_cpu_s": round(cpu_s, 1),
        "submissions_per_server_cpu_s": round(len(cycles) / cpu_s, 1) if cpu_s else None,
        "cycle_ms": {"p50": _percentile(cycles, 0.5), "p95": _percentile(cycles, 0.95),
                     "p99": _percentile(cycles, 0.99)},
        "next_ms": {"p50": _percentile(nexts, 0.5), "p95": _percentile(nexts, 0.95)},
        "submit_ms": {"p50": _percentile(submits, 0.5), "p95": _percentile(submits, 0.95)},
        "errors": len(errors),
        "error_samples": errors[:5],
        "over_leased_tasks": over_leased,
        "accepted_submissions": len(accepted),
        "stored_rankings": stored,
        "lost_submissions": len(accepted) - stored,
    }  # fmt: skip
    if in_round:
        round_ = Round.objects.get(project__slug=slug)
        # Every stored ranking counted once in the round's progress (no lost update).
        report["round"] = {
            "stage": round_.stage,
            "progress_done": round_.progress_done,
            "uncounted_rankings": stored - round_.progress_done,
        }
    return report


def submit_cpu_cost(args: argparse.Namespace) -> dict:
    """CPU-seconds of one lease + submit, without and inside a round, in this process.

    One labeler calls the services (`task_lease_next`, `ranking_submit`; the round's
    bookkeeping runs on commit, as in a request) in a loop; we count this process's CPU
    time and that of its PostgreSQL backend. One thread and no HTTP, so other load on the
    machine disturbs the figure far less than the wall-clock runs above. The modes
    alternate in blocks and the median block is reported.
    """
    from statistics import median

    import psutil
    from django.contrib.auth import get_user_model
    from django.db import connection

    from labeling.models import Project
    from labeling.services.leasing import task_lease_next
    from labeling.services.rankings import ranking_submit

    per_cycle: dict[bool, list[float]] = {False: [], True: []}
    for _ in range(args.cpu_blocks):
        for in_round in (False, True):
            slug, _keys = _seed(
                labelers=1, tasks=args.cpu_cycles, k=4, overlap=3, in_round=in_round
            )
            project = Project.objects.get(slug=slug)
            labeler = get_user_model().objects.get(username="bench-labeler-0")
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_backend_pid()")
                backend = psutil.Process(cursor.fetchone()[0])
            started = time.process_time() + sum(backend.cpu_times()[:2])
            for _ in range(args.cpu_cycles):
                assignment = task_lease_next(project=project, labeler=labeler)
                assert assignment is not None
                ids = list(assignment.task.responses.values_list("id", flat=True))
                ranking_submit(
                    task=assignment.task,
                    labeler=labeler,
                    order=[[i] for i in ids],
                    flags={},
                    time_spent_ms=1000,
                )
            spent = time.process_time() + sum(backend.cpu_times()[:2]) - started
            per_cycle[in_round].append(spent / args.cpu_cycles * 1000)
    outside, inside = median(per_cycle[False]), median(per_cycle[True])
    return {
        "cycles_per_block": args.cpu_cycles,
        "blocks": args.cpu_blocks,
        "cpu_ms_per_cycle": {"no_round": round(outside, 2), "in_round": round(inside, 2)},
        "blocks_cpu_ms": {
            "no_round": [round(v, 2) for v in per_cycle[False]],
            "in_round": [round(v, 2) for v in per_cycle[True]],
        },
        "in_round_over_no_round": round(inside / outside, 3),
    }


def _seed_comparisons(rows: int) -> str:
    from labeling.models import Comparison, Project, Prompt, Ranking, RankingTask, Response

    Project.objects.filter(slug="bench-export").delete()
    project = Project.objects.create(slug="bench-export", name="Bench export", k=4)
    n_tasks = -(-rows // 6)
    prompts = Prompt.objects.bulk_create(
        Prompt(project=project, text=f"Export prompt {i}", content_hash=f"e{i:063x}")
        for i in range(n_tasks)
    )
    tasks = RankingTask.objects.bulk_create(
        RankingTask(project=project, prompt=p, status="closed", source="preferences")
        for p in prompts
    )
    responses = Response.objects.bulk_create(
        (
            Response(task=t, position=j, text=f"Exported answer {j} " * 15)
            for t in tasks
            for j in range(4)
        ),
        batch_size=5000,
    )
    by_task = [responses[i : i + 4] for i in range(0, len(responses), 4)]
    rankings = Ranking.objects.bulk_create(
        (
            Ranking(task=t, tie_groups=[[r.pk] for r in rs], source="imported")
            for t, rs in zip(tasks, by_task, strict=True)
        ),
        batch_size=5000,
    )
    pairs = [(0, 1), (0, 2), (0, 3), (1, 2), (1, 3), (2, 3)]

    def comparisons():
        made = 0
        for ranking, task, rs in zip(rankings, tasks, by_task, strict=True):
            for w, lo in pairs:
                if made == rows:
                    return
                made += 1
                yield Comparison(
                    project=project,
                    ranking=ranking,
                    task=task,
                    prompt_id=task.prompt_id,
                    chosen=rs[w],
                    rejected=rs[lo],
                    margin=lo - w,
                )

    Comparison.objects.bulk_create(comparisons(), batch_size=5000)
    _analyze()
    return project.slug


def export_bench(args: argparse.Namespace) -> dict:
    from labeling.exports import comparison_rows, jsonl_stream
    from labeling.models import Comparison, Project
    from labeling.selectors import comparisons_for_project

    slug = _seed_comparisons(args.export_rows)

    project = Project.objects.get(slug=slug)
    result: dict = {"rows": Comparison.objects.filter(project=project).count()}
    for limit in (args.export_rows // 10, args.export_rows):
        qs = comparisons_for_project(project=project)
        ids = list(qs.values_list("id", flat=True)[:limit])
        qs = comparisons_for_project(project=project).filter(id__lte=ids[-1])
        started = time.perf_counter()
        size = sum(len(chunk) for chunk in jsonl_stream(comparison_rows(qs)))
        elapsed = time.perf_counter() - started
        # Memory in a second pass: tracemalloc slows Python down, so it is not timed.
        tracemalloc.start()
        for _ in jsonl_stream(comparison_rows(qs)):
            pass
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        result[f"in_process_{limit}"] = {
            "rows_per_s": round(limit / elapsed), "mb": round(size / 2**20, 1),
            "peak_python_mb": round(peak / 2**20, 1),
        }  # fmt: skip
    # Through the HTTP endpoint (gunicorn, streamed).
    from django.contrib.auth import get_user_model
    from rest_framework.authtoken.models import Token

    from labeling.models import Membership

    user, _ = get_user_model().objects.get_or_create(username="bench-exporter")
    Membership.objects.get_or_create(project=project, user=user, defaults={"role": "admin"})
    key = Token.objects.get_or_create(user=user)[0].key
    port = _free_port()
    server = _start_gunicorn(args.database_url, port, 1)
    try:
        import requests

        started = time.perf_counter()
        with requests.get(
            f"http://127.0.0.1:{port}/api/v1/projects/{slug}/comparisons/?format=jsonl",
            headers={"Authorization": f"Token {key}"},
            stream=True,
            timeout=600,
        ) as resp:
            resp.raise_for_status()
            lines = sum(chunk.count(b"\n") for chunk in resp.iter_content(1 << 16))
        elapsed = time.perf_counter() - started
        result["http"] = {"rows": lines, "rows_per_s": round(lines / elapsed)}
    finally:
        server.terminate()
        server.wait(timeout=30)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database-url", default=os.environ.get("BENCH_DATABASE_URL", DEFAULT_DB))
    parser.add_argument("--labelers", type=int, default=50)
    parser.add_argument("--duration", type=float, default=30.0)
    parser.add_argument(
        "--think-ms",
        type=float,
        nargs="+",
        default=[0.0, 3000.0],
        help="pause between a labeler's tasks; 0 saturates the server (a person takes 30 s+)",
    )
    parser.add_argument("--tasks", type=int, default=3000)
    parser.add_argument(
        "--client-processes",
        type=int,
        default=10,
        help="processes the labelers' threads are spread over (1: all in one, whose GIL "
        "then delays their requests)",
    )
    parser.add_argument(
        "--workers", type=int, default=None, help="gunicorn workers (default: its config's)"
    )
    parser.add_argument("--export-rows", type=int, default=100_000)
    parser.add_argument(
        "--repeat", type=int, default=1, help="alternate the no-round and in-round runs N times"
    )
    parser.add_argument("--cpu-cycles", type=int, default=200, help="cycles per CPU block")
    parser.add_argument("--cpu-blocks", type=int, default=5, help="CPU blocks per mode")
    parser.add_argument("--skip-load", action="store_true")
    parser.add_argument("--skip-cpu", action="store_true")
    parser.add_argument("--skip-export", action="store_true")
    args = parser.parse_args()
    _ensure_database(args.database_url)
    _setup_django(args.database_url)
    report: dict = {"date": time.strftime("%Y-%m-%d"), "cpus": os.cpu_count()}
    if not args.skip_load:
        # No round and in a round alternate, so a change in the machine's load between
        # runs falls on both.
        report["load"] = [
            load_test(args, think, in_round=in_round)
            for think in args.think_ms
            for _ in range(args.repeat)
            for in_round in (False, True)
        ]
        print(json.dumps(report["load"], indent=2), flush=True)
    if not args.skip_cpu:
        report["submit_cpu"] = submit_cpu_cost(args)
        print(json.dumps(report["submit_cpu"], indent=2), flush=True)
    if not args.skip_export:
        report["export"] = export_bench(args)
        print(json.dumps(report["export"], indent=2), flush=True)
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "labeling_load.json").write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
