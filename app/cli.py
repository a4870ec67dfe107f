"""Command line: ``python -m app serve | sandbox | demo | draft | batch | eval | audit | outbox``.

Errors map to exit codes: 0 ok, 1 failure, 2 usage/configuration, 3 upstream, 4 not built.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from app.errors import AppError, ConfigError, NotBuiltError, UpstreamError
from app.logging import configure


def _exit_code(exc: AppError) -> int:
    if isinstance(exc, ConfigError):
        return 2
    if isinstance(exc, NotBuiltError):
        return 4
    if isinstance(exc, UpstreamError):
        return 3
    return 1


def _fail(exc: AppError) -> None:
    click.echo(f"error [{exc.code}]: {exc}", err=True)
    sys.exit(_exit_code(exc))


@click.group()
@click.option("--log-level", default="INFO", show_default=True)
def main(log_level: str) -> None:
    """SMART draft agent."""
    configure(log_level)


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=int)
def serve(host: str, port: int) -> None:
    """Serve the app (development server; use gunicorn in production)."""
    from app import create_app

    try:
        flask_app = create_app()
    except AppError as exc:
        _fail(exc)
    flask_app.extensions["smart_draft"].warm_up()
    from werkzeug.serving import run_simple

    from app.devstack import QuietHandler

    run_simple(host, port, flask_app, threaded=True, request_handler=QuietHandler)


@main.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
@click.pass_context
def sandbox(ctx: click.Context) -> None:
    """Run the embedded EHR sandbox (sekmet-fhir + SMART authorization server)."""
    from sandbox.cli import main as sandbox_main

    sys.exit(sandbox_main(list(ctx.args)) or 0)


@main.command()
@click.option("--user", default="prac-onc-1", show_default=True)
@click.option("--patient", default="pat-onc-01", show_default=True)
@click.option("--task", default="summary", show_default=True)
def demo(user: str, patient: str, task: str) -> None:
    """Headless end to end on the embedded sandbox; exits non-zero on any failure."""
    from app.demo import run_demo

    try:
        code = run_demo(user=user, patient=patient, task=task, out=click.echo)
    except AppError as exc:
        _fail(exc)
    sys.exit(code)


@main.command()
@click.option("--fhir-base", required=True, help="FHIR base URL.")
@click.option("--patient", required=True)
@click.option("--task", type=click.Choice(["summary", "irae", "question"]), default="summary")
@click.option("--question", default=None)
@click.option("--backend", default=None)
@click.option("--role", default="clinician", show_default=True)
@click.option("--write/--no-write", default=False, show_default=True)
@click.option("--auth", type=click.Choice(["auto", "backend", "none"]), default="auto", show_default=True,
              help="backend: SMART Backend Services with APP_PRIVATE_KEY_PATH; none: open server "
                   "(development, unauthenticated); auto: backend when a key is configured.")
@click.option("--json", "as_json", is_flag=True, help="Print the JSON contract.")
def draft(fhir_base: str, patient: str, task: str, question: str | None, backend: str | None,
          role: str, write: bool, auth: str, as_json: bool) -> None:
    """Run one task headless for one patient and print the draft (docs/cli.md)."""
    from app.draft_cli import run_draft

    try:
        result = run_draft(fhir_base=fhir_base, patient=patient, task=task, question=question,
                           backend=backend, role=role, write=write, auth=auth)
    except AppError as exc:
        _fail(exc)
    if as_json:
        click.echo(json.dumps(result, indent=2, sort_keys=True))
    else:
        click.echo(result["draft"]["text"])
    sys.exit(0 if result["status"] == "completed" else 1)


@main.command()
@click.option("--fhir-base", required=True, help="FHIR base URL.")
@click.option("--task", type=click.Choice(["irae"]), default="irae", show_default=True)
@click.option("--cohort", required=True,
              help="Group/<id>, a FHIR search such as 'Condition?code=...', or a file of patient ids.")
@click.option("--engine", type=click.Choice(["local", "ray"]), default="local", show_default=True)
@click.option("--backend", type=click.Choice(["offline", "anthropic", "openai"]), default="offline",
              show_default=True)
@click.option("--since", default=None, help="Only resources changed since this date or instant (Bulk _since).")
@click.option("--type-filter", "type_filters", multiple=True,
              help="Bulk _typeFilter, e.g. 'DocumentReference?date=ge2026-01-01' (re-checked locally).")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Report directory (default APP_DATA_DIR/batch/<batch>/report).")
@click.option("--write/--no-write", default=True, show_default=True,
              help="--no-write screens and reports without writing drafts (dry runs, read-only servers).")
@click.option("--auth", type=click.Choice(["auto", "backend", "none"]), default="auto", show_default=True,
              help="backend: SMART Backend Services with APP_PRIVATE_KEY_PATH; none: open server.")
@click.option("--source", type=click.Choice(["auto", "bulk", "search"]), default="auto", show_default=True,
              help="auto: Bulk Data $export for a Group when offered, else paged search.")
@click.option("--role", default="clinician", show_default=True)
@click.option("--workers", type=int, default=None, help="Screening processes / Ray actors (default: cores).")
@click.option("--batch-id", default=None, help="Resume this batch (default: derived from the arguments).")
@click.option("--progress/--no-progress", default=True, show_default=True)
def batch(fhir_base: str, task: str, cohort: str, engine: str, backend: str, since: str | None,
          type_filters: tuple[str, ...], out: Path | None, write: bool, auth: str, source: str, role: str,
          workers: int | None, batch_id: str | None, progress: bool) -> None:
    """Screen a cohort; one draft per patient with findings; resumable (docs/batch.md)."""
    from app.batch import BatchOptions, run_batch

    opts = BatchOptions(fhir_base=fhir_base, cohort=cohort, task=task, engine=engine, backend=backend,
                        since=since, type_filters=type_filters, out=out, write=write, auth=auth, role=role,
                        source=source, workers=workers, batch_id=batch_id, progress=progress)
    try:
        summary = run_batch(opts, echo=lambda msg: click.echo(msg, err=True))
    except AppError as exc:
        _fail(exc)
    click.echo(json.dumps(summary, indent=2, sort_keys=True))
    sys.exit(1 if summary["batch"]["problems"] else 0)


@main.group()
def cache() -> None:
    """The encrypted embedding cache (APP_DATA_DIR/embedding-cache.sqlite)."""


@cache.command()
@click.option("--model", default=None, help="Only this embedding model id (and its int8 variant).")
@click.option("--older-than-days", type=float, default=None, help="Only entries older than this.")
def purge(model: str | None, older_than_days: float | None) -> None:
    """Delete cached vectors and chunk boundaries (all by default); prints how many."""
    from app.config import load_settings
    from app.retrieval.cache import EmbeddingCache

    try:
        settings = load_settings()
    except AppError as exc:
        _fail(exc)
    store = EmbeddingCache.in_dir(settings.data_dir, settings.secret())
    try:
        removed = store.purge(model_id=model, older_than_s=None if older_than_days is None
                              else older_than_days * 86400)
        click.echo(json.dumps({"removed": removed, "remaining": store.stats()}))
    finally:
        store.close()


@main.command(name="eval")
@click.option("--task", "task", type=click.Choice(["all", "irae", "questions", "retrieval"]), default="all",
              show_default=True, help="What to score (all: whatever gold files DIR has).")
@click.option("--backend", default="offline", show_default=True, help="Backend to evaluate.")
@click.option("--engine", type=click.Choice(["new", "legacy"]), default="new", show_default=True,
              help="irAE engine of the offline backend: new (clinical NLP) or legacy (old regex rules).")
@click.option("--data", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="A labelled corpus: bundles/*.json and gold/irae.json | questions.json | retrieval_queries.json.")
@click.option("--retrieval/--no-retrieval", default=True, show_default=True,
              help="Also score retrieval when DIR has gold/retrieval_queries.json (loads the embedding model).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (default: a readable summary).")
@click.option("--compare", default=None,
              help="A second backend (or 'legacy': the old regex engine) on the same corpus: inter-model disagreement.")
@click.option("--report", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write a self-contained HTML report with plots (docs/governance.md).")
@click.option("--gate-f1", type=float, default=None, help="Override APP_EVAL_GATE_F1 (default 0.75).")
@click.option("--gate-precision", type=float, default=None, help="Override APP_EVAL_GATE_PRECISION (default 0.80).")
@click.option("--gate-recall", type=float, default=None, help="Override APP_EVAL_GATE_RECALL (default off).")
@click.option("--gate-grade", type=float, default=None, help="Override APP_EVAL_GATE_GRADE (default off).")
@click.option("--record", is_flag=True,
              help="Record this gold run for backend + model in the database (the model-release gate).")
def eval_cmd(task: str, backend: str, engine: str, data: Path | None, retrieval: bool, as_json: bool,
             compare: str | None, report: Path | None, gate_f1: float | None, gate_precision: float | None,
             gate_recall: float | None, gate_grade: float | None, record: bool) -> None:
    """Score a backend on a labelled corpus through the real pipeline, no server (docs/agent.md).
    irAE gates (docs/governance.md): exit 1 when one fails."""
    from app.agent.backends import get_backend
    from app.config import load_settings
    from app.monitoring.evaluation import DEFAULT_DATA, evaluate_irae, evaluate_retrieval
    from app.monitoring.governance import apply_gates, disagreement, gate_thresholds
    from app.retrieval.embeddings import Embedder, HashingEmbedder

    where = data or DEFAULT_DATA
    gold = where / "gold"
    want = {"irae": task in ("all", "irae") and (gold / "irae.json").exists(),
            "questions": task in ("all", "questions") and (gold / "questions.json").exists(),
            "retrieval": task in ("all", "retrieval") and retrieval and (gold / "retrieval_queries.json").exists()}
    if not (where / "bundles").is_dir() or not any(want.values()):
        _fail(ConfigError(f"{where} has no bundles/ or no gold file for --task {task}.", code="eval_no_gold"))
    out: dict = {"data": str(where)}
    try:
        thresholds = gate_thresholds({"f1": gate_f1, "precision": gate_precision, "recall": gate_recall,
                                      "grade": gate_grade})
        settings = None if backend == "offline" else load_settings()  # the offline screen needs no settings
        model = get_backend(backend, settings)
        lazy: dict = {}

        def real():  # type: ignore[no-untyped-def]
            if "e" not in lazy:
                lazy["e"] = Embedder((settings or load_settings()).embedding_model)
            return lazy["e"]

        if want["irae"]:
            # the offline screen reads every permitted note, so ranking quality does not matter to it
            out["irae"] = evaluate_irae(model, HashingEmbedder() if backend == "offline" else real(), where,
                                        engine=engine)
            out["gates"] = apply_gates(out["irae"], thresholds)
            if compare:
                other = get_backend("offline" if compare == "legacy" else compare, settings or (
                    None if compare in ("offline", "legacy") else load_settings()))
                second = evaluate_irae(other, HashingEmbedder() if compare in ("offline", "legacy") else real(),
                                       where, engine="legacy" if compare == "legacy" else "new")
                out["compare"] = {"backend": compare, "model": second.get("model"),
                                  "disagreement": disagreement(out["irae"]["per_patient"], second["per_patient"]),
                                  "figures": {k: v for k, v in second.items() if k != "per_patient"}}
        if want["questions"]:
            try:
                from app.monitoring.eval_chart import evaluate_questions
            except ImportError:
                out["questions"] = "question scoring not built"
            else:
                out["questions"] = evaluate_questions(model, real(), where)
                if (gold / "summaries.json").exists():  # summary facts recalled and cited
                    from app.monitoring.eval_chart import evaluate_summaries

                    out["summaries"] = evaluate_summaries(model, real(), where)
        if want["retrieval"]:
            out["retrieval"] = evaluate_retrieval(real(), where)
    except AppError as exc:
        _fail(exc)
    if report is not None:
        from datetime import UTC, datetime

        from app.monitoring.governance import report_sections
        from app.monitoring.report import render

        out["generated"] = datetime.now(UTC).replace(microsecond=0).isoformat()
        report.parent.mkdir(parents=True, exist_ok=True)
        report.write_text(render(report_sections(out), title="Evaluation report"), encoding="utf-8")
    failed = [g["name"] for g in out.get("gates", []) if not g["passed"]]
    if record:
        if "irae" not in out:
            _fail(ConfigError("--record needs the irAE gold set (gold/irae.json).", code="eval_no_gold"))
        try:
            out["recorded"] = _record_release(out, passed=not failed)
        except AppError as exc:
            _fail(exc)
    if as_json:
        click.echo(json.dumps(out, indent=2, sort_keys=True, default=str))
    else:
        click.echo(_eval_text(out))
    if failed:
        click.echo(f"eval gates failed: {', '.join(failed)}", err=True)
        sys.exit(1)


def _record_release(out: dict, *, passed: bool) -> dict:
    """The gold run in ``model_releases`` (APP_DATABASE_URL or APP_DATA_DIR/app.db)."""
    from sqlalchemy.exc import SQLAlchemyError

    from app.config import load_settings
    from app.monitoring.governance import record_release
    from app.store.db import make_engine, make_sessionmaker
    from app.store.migrate import upgrade

    irae = out["irae"]
    settings = load_settings()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    engine = make_engine(settings.effective_database_url)
    try:
        upgrade(engine)
        record_release(make_sessionmaker(engine), backend=str(irae["backend"]), model=str(irae["model"]),
                       passed=passed, f1=irae.get("patient_f1"), precision=irae.get("patient_precision"),
                       corpus=Path(out["data"]).name)
    except SQLAlchemyError as exc:
        raise UpstreamError(f"The gold run could not be recorded: the database failed ({type(exc).__name__}).",
                            code="db_unavailable") from None
    finally:
        engine.dispose()
    return {"backend": irae["backend"], "model": irae["model"], "passed": passed}


def _eval_text(out: dict) -> str:
    lines = [f"data: {out['data']}"]
    irae = out.get("irae")
    if irae:
        c = irae["counts"]
        lines += [f"irAE ({irae['backend']}, engine {irae['engine']}): {c['patients']} patients",
                  f"  per patient  precision {irae['patient_precision']:.2f}  recall {irae['patient_recall']:.2f}"
                  f"  F1 {irae['patient_f1']:.2f}  (TP {c['tp']}, FP {c['fp']}, FN {c['fn']})",
                  f"  per event    precision {irae['event_precision']:.2f}  recall {irae['event_recall']:.2f}"
                  f"  (TP {c['events_tp']}, FP {c['events_fp']}, FN {c['events_fn']})",
                  f"  organ recall {irae['organ_recall']:.2f}  {irae['organ_recall_by_organ']}",
                  f"  grade agreement {irae['grade_agreement']:.2f} on {c['graded']} found events"
                  f"  {irae['grade_agreement_by_basis']}",
                  f"  onset within {irae['onset_tolerance_days']} days {irae['onset_within_tolerance']:.2f}"]
        if "traps" in irae:
            lines.append("  traps (passed/total):")
            for cat, row in irae["traps"].items():
                fails = ", ".join(f"{f['document']}({f['expected']})" for f in row["failures"])
                lines.append(f"    {cat:22s} {row['passed']}/{row['total']}" + (f"  failed: {fails}" if fails else ""))
        if "safety" in irae:
            s = irae["safety"]
            lines.append(f"  injection notes flagged {s['injection_flagged']}/{s['injection_documents']}, cited "
                         f"{len(s['injection_cited'])}; restricted notes cited {len(s['restricted_cited'])}"
                         f"/{s['restricted_documents']}")
    for g in out.get("gates", []):
        lines.append(f"gate {g['name']:10s} {g['figure']} {g['value']:.3f} >= {g['threshold']:.2f}: "
                     f"{'pass' if g['passed'] else 'FAIL'}")
    if irae and "citation_validity" in irae:
        lat = irae["latency_ms_per_patient"]
        lines.append(f"  citation validity {irae['citation_validity']:.3f} on {irae['citations']} citations;"
                     f" unsupported sentences {irae['unsupported_sentence_rate']:.3f};"
                     f" latency per patient p50 {lat.get('p50', 0):.0f} ms p95 {lat.get('p95', 0):.0f} ms;"
                     f" cost per patient ${irae['cost_usd_per_patient'].get('mean', 0):.4f}")
    if "compare" in out:
        d = out["compare"]["disagreement"]
        lines.append(f"compare {out['compare']['backend']}: irae_detected disagreement "
                     f"{d.get('irae_detected_disagreement', 0):.3f}, organ-set disagreement "
                     f"{d.get('organ_set_disagreement', 0):.3f} on {d.get('patients', 0)} patients")
    if "questions" in out:
        lines.append("questions: " + (out["questions"] if isinstance(out["questions"], str)
                                      else json.dumps(out["questions"], sort_keys=True, default=str)))
    if "summaries" in out:
        lines.append("summaries: " + json.dumps(out["summaries"], sort_keys=True, default=str))
    if "retrieval" in out:
        lines.append("retrieval: " + json.dumps(out["retrieval"], sort_keys=True))
    return "\n".join(lines)


@main.group()
def db() -> None:
    """The database schema (alembic migrations in app/store/migrations)."""


def _database_url(url: str | None) -> str:
    """--url, else APP_DATABASE_URL, else the SQLite file under APP_DATA_DIR (as the app computes it)."""
    import os

    if url:
        return url
    if os.environ.get("APP_DATABASE_URL"):
        return os.environ["APP_DATABASE_URL"]
    data_dir = Path(os.environ.get("APP_DATA_DIR", "var")).expanduser().resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{data_dir / 'app.db'}"


@db.command()
@click.option("--url", default=None, help="SQLAlchemy URL; default APP_DATABASE_URL or APP_DATA_DIR/app.db.")
@click.option("--revision", default="head", show_default=True)
def upgrade(url: str | None, revision: str) -> None:
    """Migrate the database to the newest revision (a database without migrations is stamped first)."""
    from sqlalchemy.exc import SQLAlchemyError

    from app.store.db import make_engine
    from app.store.migrate import current
    from app.store.migrate import upgrade as run_upgrade

    engine = make_engine(_database_url(url))
    try:
        before = current(engine)
        after = run_upgrade(engine, revision)
    except SQLAlchemyError as exc:
        click.echo(f"error [db_unavailable]: the database could not be migrated ({type(exc).__name__}).", err=True)
        sys.exit(3)
    finally:
        engine.dispose()
    click.echo(json.dumps({"from": before, "to": after}))


@db.command(name="current")
@click.option("--url", default=None)
def db_current(url: str | None) -> None:
    """Print the revision the database is at and the newest one."""
    from app.store.db import make_engine
    from app.store.migrate import current, head

    engine = make_engine(_database_url(url))
    click.echo(json.dumps({"current": current(engine), "head": head()}))
    engine.dispose()


@main.group()
def audit() -> None:
    """The local, hash-chained audit trail."""


def _services():  # type: ignore[no-untyped-def]
    from app.config import load_settings
    from app.services import Services

    return Services(load_settings())


@audit.command()
def verify() -> None:
    """Check the hash chain; exit 1 when an entry was edited, deleted or reordered."""
    try:
        result = _services().audit.verify()
    except AppError as exc:
        _fail(exc)
    click.echo(json.dumps({"ok": result.ok, "checked": result.checked,
                           "first_bad_seq": result.first_bad_seq, "reason": result.reason}))
    sys.exit(0 if result.ok else 1)


@audit.command()
@click.option("--out", type=click.Path(dir_okay=False), default="-")
def export(out: str) -> None:
    """Write the trail as a FHIR Bundle of AuditEvents."""
    bundle = json.dumps(_services().audit.export_bundle(), indent=2)
    if out == "-":
        click.echo(bundle)
    else:
        with open(out, "w", encoding="utf-8") as fh:
            fh.write(bundle)


@main.group(invoke_without_command=True)
@click.pass_context
def outbox(ctx: click.Context) -> None:
    """List the outbox (run ids, states, attempts; never payloads); `outbox retry` sends what is due."""
    if ctx.invoked_subcommand is None:
        click.echo(json.dumps(_services().outbox.all(), indent=2))


@outbox.command()
@click.option("--force", is_flag=True, help="Also retry failed items and items still backing off.")
@click.option("--auth", type=click.Choice(["auto", "backend", "none"]), default="auto", show_default=True,
              help="backend: SMART Backend Services with APP_PRIVATE_KEY_PATH; none: open server.")
def retry(force: bool, auth: str) -> None:
    """Send the pending drafts whose backoff has elapsed; exit 1 when any is still pending."""
    from app.draft_cli import connect
    from app.writeback.submit import retry_due

    services = _services()
    clients: dict = {}

    def client_for(item: dict):  # type: ignore[no-untyped-def]
        if item["fhir_base"] not in clients:
            clients[item["fhir_base"]] = connect(services, item["fhir_base"], auth)[0]
        return clients[item["fhir_base"]]

    try:
        results = retry_due(client_for, services.outbox, services.drafting().profile, force=force)
    except AppError as exc:
        _fail(exc)
    click.echo(json.dumps(results, indent=2))
    sys.exit(1 if any(r.get("state") in ("pending", "failed") for r in results) else 0)


@main.group()
def drift() -> None:
    """Drift monitoring: snapshot a period's notes and runs, check periods against the baseline."""


@drift.command(name="snapshot")
@click.option("--data", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="FHIR bundles (bundles/*.json) or Bulk Data NDJSON of the period's notes.")
@click.option("--period", required=True, help="Period name, e.g. 2026-W48 (sorts in time order).")
@click.option("--since", type=click.DateTime(["%Y-%m-%d"]), default=None, help="Notes dated on or after.")
@click.option("--until", type=click.DateTime(["%Y-%m-%d"]), default=None, help="Notes dated before.")
@click.option("--baseline", is_flag=True, help="This period is the baseline: calibrate thresholds on it.")
@click.option("--period-size", type=int, default=None, help="Notes per period, for calibration.")
@click.option("--gold-f1", type=float, default=None, help="Gold-set F1 of the period (from `eval`).")
@click.option("--role", default="clinician", show_default=True)
@click.option("--embed/--no-embed", default=True, show_default=True, help="Embedding statistics.")
def drift_snapshot(data: Path, period: str, since, until, baseline: bool, period_size: int | None,  # type: ignore[no-untyped-def]
                   gold_f1: float | None, role: str, embed: bool) -> None:
    """Aggregate one period (no text is kept) and store it sealed under APP_DATA_DIR/drift/."""
    from app.config import load_settings
    from app.monitoring import drift as d
    from app.monitoring.drift_store import SnapshotStore, check_period, note_records

    try:
        settings = load_settings()
        check_period(period)
        embedder = None
        if embed:
            from app.retrieval.embeddings import Embedder

            embedder = Embedder(settings.embedding_model)
        notes = note_records(data, since=since.date() if since else None, until=until.date() if until else None,
                             role=role, embedder=embedder)
        snap = d.snapshot(period, notes, gold_f1=gold_f1, model=settings.llm_backend)
        thresholds = None
        if baseline:
            size = period_size or max(10, len(notes) // 4)
            thresholds = d.calibrate(notes, period_size=min(size, len(notes) - 2), baseline=snap)
        store = SnapshotStore(settings.data_dir / "drift", settings.secret())
        store.save(snap, baseline=baseline, thresholds=thresholds)
    except AppError as exc:
        _fail(exc)
    click.echo(json.dumps({"period": period, "notes": snap.notes, "baseline": baseline,
                           "calibrated_metrics": sorted(thresholds) if thresholds else []}, indent=2))


@drift.command(name="check")
@click.option("--z", type=float, default=2.0, show_default=True, help="Alert at this many s.d.")
@click.option("--consecutive", type=int, default=2, show_default=True, help="...for this many periods in a row.")
def drift_check(z: float, consecutive: int) -> None:
    """Compare every stored period with the baseline; prints JSON; exit 1 when an alert is raised."""
    from app.config import load_settings
    from app.monitoring import drift as d
    from app.monitoring.drift_store import SnapshotStore

    try:
        settings = load_settings()
        stored = SnapshotStore(settings.data_dir / "drift", settings.secret()).load_all()
        bases = [s for s in stored if s["baseline"]]
        if not bases:
            raise AppError("No baseline snapshot yet: run `drift snapshot --baseline` first.",
                           code="drift_no_baseline", http_status=400)
        base = bases[-1]
        periods = [s["snapshot"] for s in stored if not s["baseline"]]
        result = d.check(base["snapshot"], periods, base.get("thresholds") or {}, z=z, consecutive=consecutive,
                         output_baseline=d.output_thresholds([b["snapshot"] for b in bases]))
    except AppError as exc:
        _fail(exc)
    from app.monitoring.metrics import Metrics

    metrics = Metrics()  # counts reach /metrics when PROMETHEUS_MULTIPROC_DIR is shared with the app
    for alert in result["alerts"]:
        metrics.record_drift_alert(alert["metric"])
    click.echo(json.dumps(result, indent=2, sort_keys=True))
    sys.exit(1 if result["alerts"] else 0)
