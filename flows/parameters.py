"""The parameters of the flows, as pydantic models composed of the stages' configs (the Prefect
UI renders them as one form), and what a flow returns.

Light on purpose: pydantic and the stages' config modules only, no Prefect, no TensorFlow, so
the command line and the Python API check a whole configuration in well under a second before
anything heavy is imported or a server started.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from stethoscope.flows.execution import ExecutionConfig
from stethoscope.flows.roots import FormPath
from stethoscope.model.config import ModelConfig
from stethoscope.schemas.layout import RunPaths
from stethoscope.tasks.analyze.config import AnalyzeConfig
from stethoscope.tasks.audits.activations.config import ActivationsConfig
from stethoscope.tasks.audits.gradients.config import GradientsConfig
from stethoscope.tasks.audits.synthetic.config import SyntheticConfig
from stethoscope.tasks.gate.config import GateConfig
from stethoscope.tasks.labels.config import LabelsConfig
from stethoscope.tasks.sequences.config import SequencesConfig
from stethoscope.tasks.train.config import TrainConfig
from stethoscope.tasks.validate.config import ValidateConfig
from stethoscope.tasks.variants.config import VariantsConfig


class AuditParameters(BaseModel):
    """Everything a run needs; each stage's section has its own defaults."""

    model_config = ConfigDict(extra="forbid")

    data_dir: FormPath = Field(description="cohort directory: sensor_logs/, users.parquet, labels.parquet")
    runs_dir: FormPath = Field("runs", description="where run directories are created")
    run_id: str | None = Field(None, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$",
                               description="name of the run directory; default: time + random suffix")
    validation: ValidateConfig = Field(default_factory=ValidateConfig)
    labels: LabelsConfig = Field(default_factory=LabelsConfig)
    sequences: SequencesConfig = Field(default_factory=SequencesConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    activations: ActivationsConfig = Field(default_factory=ActivationsConfig)
    gradients: GradientsConfig = Field(default_factory=GradientsConfig)
    analyze: AnalyzeConfig = Field(default_factory=AnalyzeConfig)
    synthetic: SyntheticConfig = Field(default_factory=SyntheticConfig)
    execution: ExecutionConfig = Field(default_factory=ExecutionConfig)
    gate: GateConfig = Field(default_factory=GateConfig)
    baseline: FormPath | None = Field(
        None, description="run directory to compare with (default: the blessed run, else the "
        "last run of this flow in runs_dir that did not fail)")

    @model_validator(mode="after")
    def _one_sequence_length(self) -> AuditParameters:
        lengths = {"labels.num_bins": self.labels.num_bins,
                   "sequences.num_steps": self.sequences.num_steps,
                   "model.num_steps": self.model.num_steps}
        if len(set(lengths.values())) > 1:
            raise ValueError(f"the sequence length T must agree: {lengths}; set all three alike")
        return self

    def run_paths(self) -> RunPaths:
        """The run directory. Without a run_id it is named after the Prefect flow run, so that
        retrying a flow run writes to (and resumes in) the same directory."""
        from prefect.runtime import flow_run

        run_id = self.run_id
        if run_id is None:
            suffix = (flow_run.id or uuid.uuid4().hex)[:8]
            run_id = f"{datetime.now(UTC):%Y%m%d-%H%M%S}-{suffix}"
            if flow_run.id and flow_run.scheduled_start_time:
                run_id = f"{flow_run.scheduled_start_time:%Y%m%d-%H%M%S}-{suffix}"
        return RunPaths(Path(self.runs_dir) / run_id)


class RunOutcome(BaseModel):
    """What the flow returns: where to look, and the verdict."""

    run_id: str
    status: str
    summary: Path
    report: Path


class AuditModelParameters(BaseModel):
    """What the audit-model flow needs: the model, a cohort to sample from, the stages' configs."""

    model_config = ConfigDict(extra="forbid")

    model_file: FormPath = Field(description="a .keras file saved by Keras 3 (loaded in safe mode)")
    data_dir: FormPath = Field(description="cohort directory to draw the audit sample from")
    runs_dir: FormPath = Field("runs", description="where run directories are created")
    run_id: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$", description="run directory name")
    validation: ValidateConfig = Field(default_factory=ValidateConfig)
    labels: LabelsConfig = Field(default_factory=LabelsConfig)
    sequences: SequencesConfig = Field(default_factory=SequencesConfig)
    activations: ActivationsConfig = Field(default_factory=ActivationsConfig)
    gradients: GradientsConfig = Field(default_factory=GradientsConfig)
    execution: ExecutionConfig = Field(default_factory=ExecutionConfig)
    gate: GateConfig = Field(default_factory=GateConfig)
    baseline: FormPath | None = Field(
        None, description="run directory to compare with (default: the blessed run, else the "
        "last run of this flow in runs_dir that did not fail)")


VARIANT_SECTIONS = ("model", "train", "synthetic", "activations", "gradients", "analyze")
_RUN_KEYS = ("data_dir", "runs_dir", "run_id", "baseline")


class Variant(BaseModel):
    """One architecture to compare: a name and the config sections it overrides."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$", max_length=60,
                      description="variant name (its run directory's name)")
    overrides: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="sections it changes: " + ", ".join(VARIANT_SECTIONS))


class CompareParameters(BaseModel):
    """The compare-architectures flow: one cohort, its data stages once, several variants."""

    model_config = ConfigDict(extra="forbid")

    data_dir: FormPath = Field(description="cohort directory")
    out_dir: FormPath = Field(description="comparison directory: data/, one run directory per "
                              "variant, comparison.json and comparison.html")
    base: dict[str, Any] = Field(default_factory=dict, description="config sections every "
                                 "variant starts from (as in a run's --config)")
    variants: list[Variant] = Field(min_length=2, description="the variants, each trained with "
                                    "the same data, budget and seed")
    seeds: int = Field(1, ge=1, le=10, description="runs per variant (train and synthetic seeds "
                       "0..seeds-1 added to the configured ones)")
    comparison: VariantsConfig = Field(default_factory=VariantsConfig)
    execution: ExecutionConfig = Field(default_factory=ExecutionConfig)

    @model_validator(mode="after")
    def _valid_variants(self) -> CompareParameters:
        names = [v.name for v in self.variants]
        if len(set(names)) < len(names) or "data" in names:
            raise ValueError(f"variant names must be unique and not 'data': {names}")
        if set(self.base) & set(_RUN_KEYS):
            raise ValueError(f"base may not set {sorted(set(self.base) & set(_RUN_KEYS))}: the "
                             "comparison sets them")
        for variant in self.variants:
            data = sorted(set(variant.overrides) - set(VARIANT_SECTIONS))
            if data:
                raise ValueError(f"variant {variant.name} overrides {data}: a variant may change "
                                 f"only {', '.join(VARIANT_SECTIONS)} (the data stages run once)")
        self.runs()  # every variant's whole configuration must be valid
        return self

    def runs(self) -> list[tuple[Variant, int, AuditParameters]]:
        """(variant, seed, its run's parameters) for every variant and seed."""
        out = []
        for variant in self.variants:
            for k in range(self.seeds):
                config = {section: dict(values) if isinstance(values, dict) else values
                          for section, values in self.base.items()}
                for section, values in variant.overrides.items():
                    config[section] = {**config.get(section, {}), **values}
                if k:
                    for section in ("train", "synthetic"):
                        seed = config.get(section, {}).get("seed", 0)
                        config[section] = {**config.get(section, {}), "seed": seed + k}
                run_id = variant.name if self.seeds == 1 else f"{variant.name}-seed{k}"
                params = AuditParameters.model_validate(
                    {**config, "data_dir": str(self.data_dir), "runs_dir": str(self.out_dir),
                     "run_id": run_id, "gate": {"enabled": False}})
                out.append((variant, k, params))
        return out
