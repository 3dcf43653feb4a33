"""`suanli finetune`: fine-tuning runs with LLaMA-Factory.

A run is described by a YAML (or JSON) file, the same spec the console's form and the API
take; `estimate` says before anything runs whether it fits one device. `--follow` shows the
run's steps with its loss, learning rate, tokens/s and the time left until it ends: a live bar
on a terminal, a line each time it changes elsewhere (a pipe, a CI log), or JSON Lines under
--json. Its exit status is the run's: 0 when it succeeded, 130 when cancelled, else 1.
"""

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, Progress, TextColumn
from rich.text import Text

from suanli.cli.commands import App
from suanli.cli.jobs import Follow, Tail, history, load_spec, state_text
from suanli.cli.output import (
    JsonOption,
    error_console,
    fail,
    fields,
    label,
    print_json,
    print_json_line,
    report,
    say,
    stream_log,
    t,
    table,
)
from suanli.cli.session import connect
from suanli.client.finetunes import ENDED, Finetunes
from suanli.core.durations import format_duration
from suanli.core.quantities import format_bytes
from suanli.schemas.finetune import (
    CompareOut,
    EstimateOut,
    FinetuneDetailOut,
    FinetuneOut,
    MetricPoint,
    MetricsOut,
)

app = App(
    help="Fine-tuning runs with LLaMA-Factory (create, estimate, list, show, logs, metrics, "
    "stop, resume, compare, datasets, options).",
    no_args_is_help=True,
)
RunId = Annotated[int, typer.Argument(help="The run's id.")]
SpecFile = Annotated[
    Path,
    typer.Option(
        "--file",
        "-f",
        help="A run spec in YAML (or JSON).",
        exists=True,
        dir_okay=False,
        readable=True,
    ),
]
FollowRun = Annotated[
    bool,
    typer.Option(
        "--follow", help="Show its steps, loss and time left until it ends; exit with its status."
    ),
]
POLL_SECONDS = 1.0
# How long --follow waits, after a run succeeded, for its result to be registered.
REGISTER_SECONDS = 60.0
# A run or a comparison job in one of these states has not ended.
ACTIVE = frozenset({"pending", "admitted", "starting", "running"})
LIST_COLUMNS = (
    "id", "name", "project", "user", "state", "method", "model", "progress", "loss",
    "submitted", "output", "why",
)  # fmt: skip
PARTS = ("weights", "gradients", "optimizer", "activations", "overhead")


@app.command()
def create(
    file: SpecFile,
    project: Annotated[
        str | None, typer.Option("--project", "-p", help="Overrides the file's.")
    ] = None,
    follow: FollowRun = False,
    json: JsonOption = False,
) -> None:
    """Start a run from a spec file: suanli finetune create -f run.yaml --follow

    With --json and --follow: JSON Lines, {"finetune": …} as created, {"point": …} per
    logged step, {"finetune": …} as it ended."""
    spec = load_spec(file, "cli.finetune.bad_file")
    if project:
        spec["project"] = project
    with connect() as client:
        runs = client.finetunes
        run = runs.create(spec)
        if json and follow:
            print_json_line({"finetune": run.model_dump(mode="json")})
        elif json:
            print_json(run)
        else:
            say("cli.finetune.created", id=run.id, name=run.name, state=label("state", run.state))
            if run.pending:
                say("cli.job_pending", reason=run.pending.message)
        if not follow:
            return
        run = _follow(runs, run.id, json)
    status = _exit_status(run)
    if status:
        raise typer.Exit(status)


def _follow(runs: Finetunes, run_id: int, json: bool) -> FinetuneDetailOut:
    """Follow a run until it ends; say how it ended and where its model is."""
    if json:
        run = runs.follow(run_id, _json_lines, interval=POLL_SECONDS)
        if run.state == "succeeded":
            run = _registered(runs, run)
        print_json_line({"finetune": run.model_dump(mode="json")})
        return run
    with _display(run_id) as show:
        run = runs.follow(run_id, show, interval=POLL_SECONDS)
    if run.state != "succeeded":
        how = run.exit.message if run.exit else label("state", run.state)
        fail(t("cli.finetune.ended", id=run.id, state=label("state", run.state), how=how))
        return run
    run = _registered(runs, run)
    if run.output:
        say("cli.finetune.succeeded", id=run.id, ref=run.output.ref)
    else:
        say("cli.finetune.registering", id=run.id)
    return run


def _json_lines(run: FinetuneDetailOut, metrics: MetricsOut) -> None:
    for point in metrics.points:
        print_json_line({"point": point.model_dump(mode="json")})


def _registered(runs: Finetunes, run: FinetuneDetailOut) -> FinetuneDetailOut:
    """The run once its result is a model version (registered just after it succeeds), or
    as it is when that takes longer than REGISTER_SECONDS."""
    deadline = time.monotonic() + REGISTER_SECONDS
    while run.output is None and time.monotonic() < deadline:
        time.sleep(POLL_SECONDS / 2)
        run = runs.get(run.id)
    return run


def _exit_status(run: FinetuneOut) -> int:
    """A followed run's end as a shell's exit status (as `suanli run --follow`'s)."""
    if run.state == "succeeded":
        return 0
    return 130 if run.state == "cancelled" else 1


@contextmanager
def _display(run_id: int) -> Iterator[Callable[[FinetuneDetailOut, MetricsOut], None]]:
    """A live progress bar on a terminal; elsewhere a line on stderr each time the run's
    progress changes. Loss, learning rate and tokens/s are the newest logged (a look may bring
    no point, and LLaMA-Factory's last record, its summary, has none of them)."""
    newest = MetricPoint(step=0)

    def line(run: FinetuneDetailOut, metrics: MetricsOut) -> str:
        nonlocal newest
        for point in metrics.points:
            given = point.model_dump(include={"loss", "lr", "throughput"}, exclude_none=True)
            newest = newest.model_copy(update=given)
        if not metrics.total_steps or run.state in ACTIVE - {"running"}:
            reason = run.pending.message if run.pending else ""
            key = "cli.finetune.waiting_because" if reason else "cli.finetune.waiting"
            return t(key, id=run_id, state=label("state", run.state), reason=reason)
        return progress_line(metrics, newest)

    console = error_console()
    if console.is_terminal:
        columns = (TextColumn("{task.description}"), BarColumn(), TextColumn("{task.fields[line]}"))
        with Progress(*columns, console=console) as bar:
            task = bar.add_task(t("cli.finetune.run", id=run_id), total=None, line="")

            def update(run: FinetuneDetailOut, metrics: MetricsOut) -> None:
                total = metrics.total_steps or None
                bar.update(
                    task, total=total, completed=metrics.current_steps, line=line(run, metrics)
                )

            yield update
        return
    last = [""]

    def show(run: FinetuneDetailOut, metrics: MetricsOut) -> None:
        text = line(run, metrics)
        if text != last[0]:
            last[0] = text
            console.print(text)

    yield show


def progress_line(metrics: MetricsOut, point: MetricPoint) -> str:
    """step 12/54 (22%) · loss 1.2345 · lr 1.00e-04 · 530 tokens/s · 6s left"""
    return t(
        "cli.finetune.progress",
        step=metrics.current_steps,
        total=metrics.total_steps,
        percent=f"{metrics.percentage:.0f}",
        loss=_loss(point.loss),
        lr=_lr(point.lr),
        speed=_speed(point.throughput),
        left=format_duration(metrics.remaining_seconds),
    )


def _loss(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def _lr(value: float | None) -> str:
    return "-" if value is None else f"{value:.2e}"


def _speed(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"


@app.command()
def estimate(file: SpecFile, json: JsonOption = False) -> None:
    """How much memory a spec needs per device, and whether it fits one device asked for:
    the parts (weights, gradients, optimiser states, activations, overhead) and, when it
    does not fit, what would. Nothing is created."""
    spec = load_spec(file, "cli.finetune.bad_file")
    with connect() as client:
        found = client.finetunes.estimate(spec)
    if json:
        print_json(found)
        return
    _show_estimate(found)


def _show_estimate(found: EstimateOut) -> None:
    fields(
        [
            ("per_device", format_bytes(found.per_device_bytes)),
            ("available", format_bytes(found.available_bytes)),
            ("fits", found.fits),
            ("parameters", f"{found.parameters:,}"),
            ("trainable", f"{found.trainable_parameters:,}"),
        ]
    )
    print()
    names = [n for n in PARTS if n in found.parts] + sorted(set(found.parts) - set(PARTS))
    table(
        ["part", "size"],
        [
            (label("finetune.part", n), format_bytes(found.parts[n]))
            for n in names
            if n in found.parts
        ],
    )
    if found.warning:
        error_console().print(Text(found.warning, style="bold yellow"))
    if found.suggestion:
        error_console().print(found.suggestion)


@app.command("list")
def list_runs(
    project: Annotated[str | None, typer.Option("--project", "-p")] = None,
    state: Annotated[str | None, typer.Option(help="A state, or active / finished.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=1000)] = 100,
    json: JsonOption = False,
) -> None:
    """List runs, newest first: where each stands, its loss, and its model once registered."""
    with connect() as client:
        found = client.finetunes.list(project, state, limit=limit)
    if json:
        print_json(found)
        return
    table(
        LIST_COLUMNS,
        [
            (
                r.id,
                r.name,
                r.project,
                r.user,
                state_text(r.state),
                _method(r),
                r.model,
                _progress(r),
                _loss(r.progress.loss if r.progress else None),
                r.submitted_at,
                r.output.ref if r.output else None,
                _why(r),
            )
            for r in found
        ],
    )


def _method(run: FinetuneOut) -> str:
    return f"{run.stage} {run.method}"


def _progress(run: FinetuneOut) -> str | None:
    now = run.progress
    if now is None or not now.total_steps:
        return None
    return f"{now.current_steps}/{now.total_steps} ({now.percentage:.0f}%)"


def _left(run: FinetuneOut) -> str | None:
    """The time left while it runs (an ended run has none)."""
    if run.progress is None or run.state not in ACTIVE:
        return None
    return format_duration(run.progress.remaining_seconds)


def _gpus(run: FinetuneOut) -> str | None:
    """GPUs per node, times the nodes when there are several."""
    if not run.gpus:
        return None
    return f"{run.gpus} x {run.nodes}" if run.nodes > 1 else str(run.gpus)


def _why(run: FinetuneOut) -> str:
    """Why it waits or how it ended (a success says nothing: its model is in `output`)."""
    if run.pending:
        return run.pending.message
    if run.exit and run.state != "succeeded":
        return run.exit.message
    return ""


@app.command()
def show(
    run_id: RunId,
    yaml: Annotated[
        bool, typer.Option("--yaml", help="Also the LLaMA-Factory YAML Suanli wrote for it.")
    ] = False,
    json: JsonOption = False,
) -> None:
    """Show a run: progress, how it ended, its model, final metrics and history."""
    with connect() as client:
        run = client.finetunes.get(run_id)
    if json:
        print_json(run)
        return
    now = run.progress
    fields(
        [
            ("id", run.id),
            ("name", run.name),
            ("project", run.project),
            ("user", run.user),
            ("state", label("state", run.state)),
            ("method", _method(run)),
            ("model", run.model),
            ("datasets", ", ".join(run.datasets)),
            ("gpus", _gpus(run)),
            ("submitted", run.submitted_at),
            ("started", run.started_at),
            ("finished", run.finished_at),
            ("attempts", run.attempts),
            ("progress", _progress(run)),
            ("loss", _loss(now.loss) if now else None),
            ("remaining", _left(run)),
            ("why", _why(run) or None),
            ("output", run.output.ref if run.output else None),
            ("services", ", ".join(run.services) or None),
        ]
    )
    if run.final_metrics:
        print()
        table(["metric", "value"], [(k, f"{v:g}") for k, v in sorted(run.final_metrics.items())])
    print()
    history(run.history)
    if yaml:
        print()
        say("cli.finetune.yaml")
        print(run.yaml, end="" if run.yaml.endswith("\n") else "\n")


@app.command()
def logs(
    run_id: RunId,
    follow: Follow = False,
    tail: Tail = None,
    json: JsonOption = False,
) -> None:
    """Print the trainer's output; --follow streams it until the run ends."""
    with connect() as client:
        runs = client.finetunes
        if follow:
            stream_log(runs.follow_log(run_id, tail=tail), json)
        else:
            stream_log([runs.log(run_id, tail=tail).text], json)


@app.command()
def metrics(
    run_id: RunId,
    after: Annotated[int, typer.Option(min=0, help="Only the steps after this one.")] = 0,
    json: JsonOption = False,
) -> None:
    """The logged points: step, epoch, loss, evaluation loss, learning rate, tokens/s."""
    with connect() as client:
        found = client.finetunes.metrics(run_id, after=after)
    if json:
        print_json(found)
        return
    table(
        ["step", "epoch", "loss", "eval_loss", "lr", "throughput", "tokens"],
        [
            (
                p.step,
                None if p.epoch is None else f"{p.epoch:.2f}",
                None if p.loss is None else _loss(p.loss),
                None if p.eval_loss is None else _loss(p.eval_loss),
                None if p.lr is None else _lr(p.lr),
                None if p.throughput is None else _speed(p.throughput),
                p.tokens,
            )
            for p in found.points
        ],
    )
    say(
        "cli.finetune.where",
        step=found.current_steps,
        total=found.total_steps,
        percent=f"{found.percentage:.0f}",
        elapsed=format_duration(found.elapsed_seconds),
        left=format_duration(found.remaining_seconds),
    )


@app.command()
def stop(run_id: RunId, json: JsonOption = False) -> None:
    """Stop a run; its checkpoints stay, and 'resume' continues from the last one."""
    with connect() as client:
        run = client.finetunes.stop(run_id)
    key = "cli.finetune.stopped" if run.state in ENDED else "cli.finetune.stopping"
    report(json, key, run.model_dump(mode="json"), id=run.id, state=label("state", run.state))


@app.command()
def resume(run_id: RunId, follow: FollowRun = False, json: JsonOption = False) -> None:
    """Queue a stopped or failed run again: it continues from its last checkpoint."""
    with connect() as client:
        runs = client.finetunes
        run = runs.resume(run_id)
        data = run.model_dump(mode="json")
        if json and follow:
            print_json_line({"finetune": data})
        else:
            report(json, "cli.finetune.resumed", data, id=run.id, state=label("state", run.state))
        if not follow:
            return
        run = _follow(runs, run.id, json)
    status = _exit_status(run)
    if status:
        raise typer.Exit(status)


@app.command()
def compare(
    run_id: RunId,
    prompt: Annotated[
        list[str] | None,
        typer.Option("--prompt", "-p", help="A prompt for both models (repeat; up to 20)."),
    ] = None,
    wait: Annotated[
        bool, typer.Option("--wait", help="Wait for the answers and show them.")
    ] = False,
    json: JsonOption = False,
) -> None:
    """Answer the same prompts with the base and the tuned model, side by side (a job in the
    run's project). Without prompts: the latest comparison."""
    with connect() as client:
        runs = client.finetunes
        found = runs.compare(run_id, list(prompt)) if prompt else runs.comparison(run_id)
        if prompt and not wait and not json:
            say("cli.finetune.compare_started", id=run_id, job=found.job)
        if wait:
            found = _wait_compare(runs, run_id, found, json)
    if json:
        print_json(found)
        return
    if prompt and not wait:
        return
    _show_comparison(run_id, found)
    if found.state in ("failed", "cancelled"):
        raise typer.Exit(1)


def _wait_compare(runs: Finetunes, run_id: int, found: CompareOut, json: bool) -> CompareOut:
    """Poll the comparison until its job has ended."""
    shown = ""
    while found.state in ACTIVE:
        if not json:
            state = label("state", found.state)
            text = t("cli.finetune.comparing", id=run_id, job=found.job, state=state)
            if text != shown:
                shown = text
                error_console().print(text)
        time.sleep(POLL_SECONDS)
        found = runs.comparison(run_id)
    return found


def _show_comparison(run_id: int, found: CompareOut) -> None:
    if found.state == "none":
        say("cli.finetune.compare_none", id=run_id)
        return
    if not found.answers:
        say("cli.finetune.compare_state", id=run_id, state=label("state", found.state))
        if found.detail:
            error_console().print(found.detail)
        return
    table(["prompt", "base", "tuned"], [(a.prompt, a.base, a.tuned) for a in found.answers])


@app.command()
def datasets(json: JsonOption = False) -> None:
    """The datasets Suanli ships, to name in a spec's builtin_datasets."""
    with connect() as client:
        found = client.finetunes.datasets()
    if json:
        print_json(found)
        return
    table(
        ["name", "stage", "formatting", "rows", "licence", "description"],
        [(d.name, d.stage, d.formatting, d.rows, d.licence, d.description) for d in found],
    )


@app.command()
def options(json: JsonOption = False) -> None:
    """What a spec may choose: templates, stages, methods, schedulers, precisions, trainers."""
    with connect() as client:
        found = client.finetunes.options()
    if json:
        print_json(found)
        return
    fields(
        [
            ("stages", ", ".join(found.stages)),
            ("methods", ", ".join(found.methods)),
            ("schedulers", ", ".join(found.schedulers)),
            ("compute_types", ", ".join(found.compute_types)),
            ("trainers", ", ".join(found.trainers) or None),
            ("templates", ", ".join(found.templates)),
        ]
    )
