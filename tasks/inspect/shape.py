"""What an existing model expects, read before its audits: T and C of its time-series input,
what every input is fed, and the per-step output of the gradient audit. Everything that would
stop the audits is raised here, before the run writes anything (exit status 2)."""

from __future__ import annotations

from pathlib import Path

from stethoscope.schemas.errors import DataContractError, Problem
from stethoscope.schemas.sequence_store import CHANNELS, OPTIONAL_CHANNELS
from stethoscope.tasks.inspect.config import ModelInput, ModelShape
from stethoscope.tasks.shared.audited_model import (
    check_audit_model,
    describe_feeds,
    input_feeds,
    load_audit_model,
    per_step_output,
    sequence_index,
)


def inspect_model(
    model_path: Path,
    num_steps: int = 4096,
    time_of_day: bool = False,
    output_layer: str | None = None,
    task_index: int = 0,
) -> ModelShape:
    """Load in safe mode and check the audit contract against the cohort's channels (3, or 5
    with `time_of_day`) and the gradient audit's `output_layer` / `task_index`. T is the
    model's own; `num_steps` only for a model that takes sequences of any length."""
    num_channels = len(CHANNELS) + (len(OPTIONAL_CHANNELS) if time_of_day else 0)
    model = load_audit_model(model_path, output_layer=None, num_channels=None)
    graph = check_audit_model(model, output_layer, num_channels, source=str(model_path))
    output = per_step_output(graph, output_layer, str(model_path))
    if output is not None and task_index >= output.output.shape[-1]:
        raise DataContractError(f"audits: no unit {task_index} in {output.name!r}", [Problem(
            rule="output_index", file=str(model_path), message=f"gradients.task_index "
            f"(--output-index) is {task_index}; {output.name!r} has {output.output.shape[-1]} "
            f"unit(s) {tuple(output.output.shape)}.",
            fix=f"Use 0..{output.output.shape[-1] - 1}.")])
    _, steps, channels = model.inputs[sequence_index(model)].shape
    feeds = input_feeds(model)
    return ModelShape(
        num_steps=int(steps or num_steps), num_channels=int(channels),
        layers=[call.name for call in graph.calls],
        inputs=[ModelInput(name=f.name, shape=list(f.shape), fed=f.source) for f in feeds],
        output_layer=output.name if output is not None else None,
        inputs_note=describe_feeds(feeds, int(steps or num_steps)))
