"""The federation spec: what every party of a federation agrees on before round 0.

The aggregator stores it, serves it to clients, and clients build the same initial model,
schedule and local training from it. It lives in ``platform`` (below ``api`` and ``clients``)
because both sides of the wire must read it identically.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, model_validator

from fedsparsify.errors import ConfigError
from fedsparsify.platform.model_size import MAX_BUILD_PARAMETERS, parameter_count
from fedsparsify.platform.names import MAX_NAME_LENGTH, normalize_name

__all__ = [
    "DisplayName",
    "EnrollmentSpec",
    "FederationSpec",
    "Method",
    "ModelSpec",
    "ScheduleSpec",
    "TrainingSpec",
    "parse_spec",
    "validation_lines",
]

Method = Literal["fedsparsify-global", "fedsparsify-local", "random", "fedavg"]


#: Longest round deadline a spec may ask for (one year): a deadline must stay a real date.
MAX_ROUND_TIMEOUT_S = 365 * 24 * 3600.0
#: A join code's default lifetime (7 days).
DEFAULT_JOIN_CODE_S = 7 * 24 * 3600.0


# -- bounds (issue 12): every number a spec holds is bounded, every name normalised ---------
#
# A spec arrives from an admin over HTTP and is then built by every site: nothing in it may make
# a party allocate, loop or overflow without limit. The aggregator adds its own, lower limit on
# the parameter count (``Settings.max_model_parameters``).

#: Largest product of the input shape's dimensions (a 1 mm T1 volume has 7.2M voxels).
MAX_INPUT_ELEMENTS = 1 << 26
#: Most axes of an input shape: (C, D, H, W).
MAX_INPUT_AXES = 4
MAX_WIDTH = 256
MAX_HIDDEN = 1 << 16
MAX_CLASSES = 1 << 16
MAX_CLIENTS = 100_000
MAX_SCHEDULE_ROUND = 100_000
MAX_LOCAL_EPOCHS = 1_000
MAX_BATCH_SIZE = 1 << 16
#: Seeds are unsigned 64-bit integers (what torch and NumPy take).
MAX_SEED = (1 << 64) - 1
#: Bound on the brain-age output offset and scale, in years.
MAX_AGE_YEARS = 10_000.0


def _name(value: object) -> object:
    return normalize_name(value) if isinstance(value, str) else value


#: A display name: NFC, trimmed, no control or invisible characters (``platform.names``).
DisplayName = Annotated[
    str, BeforeValidator(_name), Field(min_length=1, max_length=MAX_NAME_LENGTH)
]
InputDimension = Annotated[int, Field(ge=1, le=MAX_INPUT_ELEMENTS)]


def _check_model_size(spec: ModelSpec) -> None:
    elements = 1
    for dim in spec.input_shape:
        elements *= dim
    if elements > MAX_INPUT_ELEMENTS:
        raise ValueError(
            f"input_shape {list(spec.input_shape)} has {elements:,} elements, at most "
            f"{MAX_INPUT_ELEMENTS:,} are allowed"
        )
    try:
        count = parameter_count(spec)
    except ConfigError as exc:
        raise ValueError(str(exc)) from exc
    if count > MAX_BUILD_PARAMETERS:
        raise ValueError(
            f"the {spec.kind} model would have {count:,} trainable parameters, at most "
            f"{MAX_BUILD_PARAMETERS:,} are allowed"
        )


# -- end of bounds ---------------------------------------------------------------------------


class _Frozen(BaseModel):
    # Non-finite numbers would be stored, then served as ``null``: refuse them up front.
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)


class ScheduleSpec(_Frozen):
    """Pruning schedule: a pure function of the round index (see ``platform.schedules``).

    - ``none``: never prune (dense FedAvg).
    - ``progressive``: every ``frequency`` rounds from ``start_round`` on, remove ``fraction``
      of the weights still non-zero, until ``target`` sparsity.
    - ``cubic``: Zhu & Gupta, s_t = s_f + (s_i - s_f)(1 - (t - t0)/(T - t0))^3 with
      s_f = ``target``, t0 = ``start_round``, T = ``end_round``, evaluated every ``frequency``.
    - ``one-shot``: jump to ``target`` at ``start_round``.
    """

    kind: Literal["none", "progressive", "cubic", "one-shot"] = "progressive"
    target: float = Field(0.9, ge=0.0, lt=1.0, description="final sparsity (fraction pruned)")
    fraction: float = Field(0.2, gt=0.0, lt=1.0, description="progressive: share of the rest")
    frequency: int = Field(1, ge=1, le=MAX_SCHEDULE_ROUND, description="prune every n rounds")
    start_round: int = Field(
        1, ge=0, le=MAX_SCHEDULE_ROUND, description="round of the first prune event (cubic: t0)"
    )
    end_round: int | None = Field(
        None, ge=1, le=MAX_SCHEDULE_ROUND, description="cubic T (default: rounds - 1)"
    )


class ModelSpec(_Frozen):
    """Which network to build; every client builds it identically from the federation seed."""

    kind: Literal["mlp", "cnn", "brainage"] = "brainage"
    input_shape: tuple[InputDimension, ...] = Field(
        (48, 56, 48), min_length=1, max_length=MAX_INPUT_AXES
    )
    width: int = Field(8, ge=1, le=MAX_WIDTH, description="brainage: filters of the first block")
    hidden: int = Field(128, ge=1, le=MAX_HIDDEN, description="mlp: hidden units")
    num_classes: int = Field(10, ge=1, le=MAX_CLASSES, description="mlp/cnn: outputs")
    output_bias: float | None = Field(
        None,
        ge=-MAX_AGE_YEARS,
        le=MAX_AGE_YEARS,
        description="brainage: fixed age offset added to the output (default: mean age)",
    )
    age_scale: float = Field(
        50.0,
        gt=0.0,
        le=MAX_AGE_YEARS,
        description="brainage: fixed years per output unit (keeps weights small)",
    )

    @model_validator(mode="after")
    def _buildable(self) -> ModelSpec:
        _check_model_size(self)
        return self


class TrainingSpec(_Frozen):
    """Local training settings applied by every client."""

    local_epochs: int = Field(1, ge=1, le=MAX_LOCAL_EPOCHS)
    batch_size: int = Field(16, ge=1, le=MAX_BATCH_SIZE)
    lr: float = Field(0.01, gt=0.0)
    momentum: float = Field(0.9, ge=0.0, lt=1.0)
    weight_decay: float = Field(0.0, ge=0.0)
    optimizer: Literal["sgd", "adam"] = "sgd"
    proximal_mu: float = Field(0.0, ge=0.0, description="FedProx term; 0 disables it")


class EnrollmentSpec(_Frozen):
    """How sites may join: the join code's lifetime and uses, and whether late joiners may."""

    max_uses: int | None = Field(
        None,
        ge=1,
        le=100_000,
        description="registrations the join code allows (default: min_clients)",
    )
    expires_after_s: float = Field(
        DEFAULT_JOIN_CODE_S, gt=0.0, le=MAX_ROUND_TIMEOUT_S, description="join code lifetime"
    )
    late_joiners: bool = Field(
        False, description="keep registration open after round 0 opens (closed by default)"
    )


class FederationSpec(_Frozen):
    """Everything a federation is created with.

    Trust settings: ``weighting`` (``samples`` or ``equal``) with no site's share above
    ``max_weight_share`` (see :mod:`fedsparsify.platform.round_rules`), an optional per-site
    sample cap checked at registration, ``pairwise_masks`` (on by default for encrypted presets:
    the aggregator then learns neither updates nor their sum; impossible for ``plaintext``), and
    ``max_attempts``: how often a round may restart with the sites that uploaded when some
    participant misses the deadline (each restart lets an aggregator that lies about who dropped
    compare two sums; 1 rules that out, and a dropout then fails the round).
    """

    name: DisplayName
    rounds: int = Field(10, ge=1, le=10_000)
    min_clients: int = Field(
        2, ge=1, le=MAX_CLIENTS, description="clients needed before round 0 can start"
    )
    quorum: int = Field(
        2, ge=1, le=MAX_CLIENTS, description="uploads needed to close a round at its deadline"
    )
    round_timeout_s: float = Field(600.0, gt=0.0, le=MAX_ROUND_TIMEOUT_S)
    auto_advance: bool = Field(True, description="start the next round when one closes")
    crypto_preset: Literal["lean", "peer-default", "plaintext"] = "lean"
    method: Method = "fedsparsify-global"
    schedule: ScheduleSpec = Field(default_factory=ScheduleSpec)
    model: ModelSpec = Field(default_factory=ModelSpec)
    training: TrainingSpec = Field(default_factory=TrainingSpec)
    seed: int = Field(0, ge=0, le=MAX_SEED, description="unsigned 64-bit")
    weighting: Literal["samples", "equal"] = "samples"
    max_weight_share: float = Field(0.5, gt=0.0, le=1.0, description="cap on any site's weight")
    max_samples_per_site: int | None = Field(
        None, ge=1, le=2**40, description="refuse registrations declaring more samples"
    )
    pairwise_masks: bool = Field(
        True, description="mask every upload pairwise (default: on for encrypted presets)"
    )
    max_attempts: int = Field(2, ge=1, le=10, description="attempts per round (dropouts)")
    enrollment: EnrollmentSpec = Field(default_factory=EnrollmentSpec)

    # -- FedSparsify-Local's majority rule (issue 16) ----------------------------------------
    majority_rule: Literal["floor-half", "half"] = Field(
        "floor-half",
        description=(
            "fedsparsify-local: a coordinate survives with at least floor(K/2) of K votes "
            "('floor-half', the published rule) or at least half of them ('half'); they "
            "differ for odd K"
        ),
    )

    @model_validator(mode="before")
    @classmethod
    def _default_masks(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("pairwise_masks") is None:
            encrypted = data.get("crypto_preset", "lean") != "plaintext"
            data = {**data, "pairwise_masks": encrypted}
        return data

    @model_validator(mode="after")
    def _consistent(self) -> FederationSpec:
        if self.quorum > self.min_clients:
            raise ValueError(f"quorum ({self.quorum}) exceeds min_clients ({self.min_clients})")
        if self.method == "fedavg" and self.schedule.kind != "none":
            raise ValueError("method 'fedavg' prunes nothing: use schedule kind 'none'")
        if self.method != "fedavg" and self.schedule.kind == "none":
            raise ValueError(f"method {self.method!r} needs a pruning schedule, not 'none'")
        if self.pairwise_masks and self.crypto_preset == "plaintext":
            raise ValueError("pairwise_masks need an encrypted preset; plaintext cannot carry them")
        return self

    @property
    def join_code_uses(self) -> int:
        """Registrations the join code allows."""
        return self.enrollment.max_uses or self.min_clients


def validation_lines(exc: ValidationError) -> list[str]:
    """One ``field: problem`` line per error of a pydantic validation."""
    lines = []
    for error in exc.errors(include_url=False):
        where = ".".join(str(part) for part in error.get("loc", ()))
        message = str(error.get("msg", "invalid")).removeprefix("Value error, ")
        lines.append(f"{where}: {message}" if where else message)
    return lines


def parse_spec(data: Any, *, source: str = "spec") -> FederationSpec:
    """Validate a spec; :class:`ConfigError` with one line per wrong field."""
    try:
        return FederationSpec.model_validate(data)
    except ValidationError as exc:
        detail = "\n".join(f"{source}: {line}" for line in validation_lines(exc))
        raise ConfigError(f"invalid federation spec\n{detail}") from exc
