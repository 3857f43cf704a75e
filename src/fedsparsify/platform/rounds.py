"""The one implementation of a federated round, shared by the in-process runner and the client.

A site's round: :meth:`Site.begin_round` writes the previous round's aggregate into its model
and decides this round's mask (every site the same one); :meth:`Site.train` trains under it and
returns the kept coordinates in the round's :class:`ParameterLayout`; :func:`aggregate` is the
plaintext reference of what the aggregator (later: under encryption) does with the uploads.
Nothing here knows about HTTP or encryption: those wrap :meth:`Site.train`'s output.

Methods:

- ``fedsparsify-global``: each site prunes the (bitwise identical) aggregate by global
  magnitude to the schedule's target for the new round, so all sites reach one mask.
- ``fedsparsify-local``: each site prunes its own trained model to the round's target and votes
  with its local mask; the next round's mask keeps the coordinates enough sites kept (the
  spec's ``majority_rule``: by default at least floor(K / 2) of the K voters, as published).
- ``random``: the same random progressive pruning on every site (seed from the spec and round).
- ``fedavg``: the full mask always.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from fedsparsify.errors import ConfigError, MaskError, PlatformError
from fedsparsify.platform.data.sitedata import SiteData
from fedsparsify.platform.masks import (
    Mask,
    ParameterLayout,
    apply_mask,
    full_mask,
    pack_mask,
    prunable_shapes,
    sparsity,
    unpack_mask,
)
from fedsparsify.platform.models import build_model, model_input_shape
from fedsparsify.platform.pruning import (
    derive_seed,
    global_magnitude_mask,
    majority_mask,
    random_mask,
)
from fedsparsify.platform.round_rules import round_to_grid, round_weights
from fedsparsify.platform.schedules import target_sparsity
from fedsparsify.platform.spec import FederationSpec, Method
from fedsparsify.platform.spec_compat import matches_saved_digest, spec_digest
from fedsparsify.platform.training import evaluate, train_local

__all__ = [
    "GlobalUpdate",
    "LocalUpdate",
    "RoundPlan",
    "Site",
    "aggregate",
    "apply_global_update",
    "check_compatible",
    "next_mask",
    "rounded",
    "spec_digest",
    "validate_updates",
]

logger = logging.getLogger(__name__)
#: Version of :meth:`Site.state_dict`: 2 ties it to :func:`spec_digest`; 1 (release 0.1) to the
#: legacy digest, still read (see :mod:`fedsparsify.platform.spec_compat`).
_STATE_VERSION = 2
_READABLE_STATE_VERSIONS = (1, 2)


@dataclass(frozen=True)
class GlobalUpdate:
    """The aggregate of one round, in that round's upload layout.

    ``mean``: sample-weighted mean of the uploaded values. ``vote_fraction`` (FedSparsify-Local
    only): the fraction of contributors that kept each coordinate, and ``contributors`` how many
    sites voted (the majority rule works on the counts). ``mask_digest``: the digest
    of the layout the uploads were made in (empty when unknown); a site refuses an update made
    under another mask than its current plan's. A site that missed a round must still take in
    that round's aggregate (``begin_round``) before the next one.
    """

    mean: np.ndarray
    vote_fraction: np.ndarray | None = None
    mask_digest: str = ""
    contributors: int = 0


@dataclass(frozen=True)
class LocalUpdate:
    """One site's upload: float32 ``values`` in the round's layout, its sample count (the
    averaging weight), 0/1 ``votes`` (FedSparsify-Local only), training metrics, and the mask
    digest of the layout it was made in (empty when unknown)."""

    values: np.ndarray
    num_samples: int
    votes: np.ndarray | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    mask_digest: str = ""


@dataclass(frozen=True)
class RoundPlan:
    """What a site trains under in one round; ``layout`` is the round's upload layout."""

    round_index: int
    mask: Mask
    layout: ParameterLayout
    mask_digest: str
    n_values: int
    sparsity: float

    @classmethod
    def make(cls, round_index: int, model: nn.Module, mask: Mask) -> RoundPlan:
        """The plan of ``round_index`` for ``model`` under ``mask``."""
        layout = ParameterLayout(model, mask)
        return cls(
            round_index=round_index,
            mask=mask,
            layout=layout,
            mask_digest=layout.mask_digest,
            n_values=layout.n_values,
            sparsity=sparsity(mask),
        )


def validate_updates(updates: Sequence[LocalUpdate]) -> None:
    """Raise :class:`PlatformError` (or :class:`MaskError`) unless the updates can be averaged."""
    if not updates:
        raise PlatformError("no updates to aggregate")
    n = updates[0].values.shape
    if len(n) != 1:
        raise PlatformError(f"update values must be 1-D, got shape {n}")
    with_votes = [u.votes is not None for u in updates]
    if any(with_votes) and not all(with_votes):
        raise PlatformError("some updates carry votes and others do not")
    digests = {u.mask_digest for u in updates if u.mask_digest}
    if len(digests) > 1:
        raise MaskError(f"updates were made under {len(digests)} different masks")
    for i, u in enumerate(updates):
        if u.values.shape != n:
            raise PlatformError(f"update {i} has {u.values.shape[0]} values, expected {n[0]}")
        if u.num_samples <= 0:
            raise PlatformError(f"update {i} has num_samples {u.num_samples}; must be positive")
        if not np.isfinite(u.values).all():
            raise PlatformError(f"update {i} holds non-finite values")
        if u.votes is not None and u.votes.shape != n:
            raise PlatformError(f"update {i} has {u.votes.shape} votes, expected {n}")


def aggregate(
    updates: Sequence[LocalUpdate],
    *,
    weighting: str = "samples",
    max_weight_share: float = 1.0,
) -> GlobalUpdate:
    """Plaintext reference aggregation: weighted mean of values (weights by the federation's
    rule, :func:`~fedsparsify.platform.round_rules.round_weights`; by default plain sample
    counts); plain mean of votes."""
    validate_updates(updates)
    weights = round_weights(
        {str(i): u.num_samples for i, u in enumerate(updates)},
        weighting=weighting,
        max_weight_share=max_weight_share,
    )
    acc = np.zeros(updates[0].values.shape, dtype=np.float64)
    for i, u in enumerate(updates):
        acc += weights[str(i)] * u.values.astype(np.float64)
    mean = acc.astype(np.float32)
    votes: np.ndarray | None = None
    if updates[0].votes is not None:
        count = np.zeros(updates[0].values.shape, dtype=np.float64)
        for u in updates:
            assert u.votes is not None
            count += u.votes
        votes = (count / len(updates)).astype(np.float32)
    return GlobalUpdate(
        mean=mean,
        vote_fraction=votes,
        mask_digest=updates[0].mask_digest,
        contributors=len(updates),
    )


def rounded(update: GlobalUpdate) -> GlobalUpdate:
    """``update`` with its averages on the result grid, as every site uses it (see
    :mod:`fedsparsify.platform.round_rules`)."""
    votes = update.vote_fraction
    return GlobalUpdate(
        mean=round_to_grid(update.mean),
        vote_fraction=None if votes is None else round_to_grid(votes),
        mask_digest=update.mask_digest,
        contributors=update.contributors,
    )


def apply_global_update(
    model: nn.Module,
    plan: RoundPlan,
    update: GlobalUpdate,
    method: Method,
    *,
    majority_rule: str = "floor-half",
) -> Mask:
    """Write ``update`` (made in ``plan``'s layout) into ``model``; return the resulting mask.

    FedSparsify-Local also applies the majority of the votes (``majority_rule``, see
    :func:`~fedsparsify.platform.pruning.majority_threshold`), so the model becomes the pruned
    global model; other methods keep ``plan.mask``.
    """
    if update.mask_digest and update.mask_digest != plan.mask_digest:
        raise MaskError(
            f"the update was made under mask {update.mask_digest[:12]}, this site's round "
            f"{plan.round_index} plan is {plan.mask_digest[:12]}"
        )
    plan.layout.scatter(update.mean, model.state_dict())
    if method != "fedsparsify-local":
        return plan.mask
    if update.vote_fraction is None:
        raise PlatformError("fedsparsify-local needs the vote fractions of the previous round")
    if update.contributors < 1:
        raise PlatformError("fedsparsify-local needs the number of sites that voted")
    mask = majority_mask(
        update.vote_fraction,
        plan.layout,
        plan.mask,
        contributors=update.contributors,
        rule=majority_rule,
    )
    apply_mask(model.state_dict(), mask)
    return mask


def next_mask(spec: FederationSpec, model: nn.Module, mask: Mask, round_index: int) -> Mask:
    """The mask round ``round_index`` trains under, from the global model and the last mask."""
    method = spec.method
    if method in ("fedavg", "fedsparsify-local"):
        return mask
    target = target_sparsity(spec.schedule, round_index, spec.rounds)
    if method == "fedsparsify-global":
        return global_magnitude_mask(model.state_dict(), mask, target)
    if method == "random":
        return random_mask(mask, target, seed=derive_seed(spec.seed, "random-mask", round_index))
    raise ConfigError(f"unknown method {method!r}")


def check_compatible(spec: FederationSpec, data: SiteData) -> None:
    """Raise :class:`ConfigError` when the site's data cannot feed the spec's model."""
    kind = spec.model.kind
    expected_task = "regression" if kind == "brainage" else "classification"
    if data.task != expected_task:
        raise ConfigError(f"model {kind!r} needs {expected_task} data, site has {data.task}")
    want = model_input_shape(spec.model)
    have = data.input_shape
    same = have == want if kind == "brainage" else int(np.prod(have)) == int(np.prod(want))
    if not same:
        raise ConfigError(f"site {data.name!r} inputs have shape {have}, model expects {want}")


def _clone_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


class Site:
    """One site's side of every round: model, mask, local data.

    The initial model comes from ``spec.seed``, identical on every site; the mask starts full.
    ``device`` places the model (e.g. ``"cuda"``); masks, layouts and uploads stay on the CPU.
    """

    def __init__(
        self,
        spec: FederationSpec,
        data: SiteData,
        *,
        name: str | None = None,
        device: str | torch.device | None = None,
    ) -> None:
        check_compatible(spec, data)
        self.spec = spec
        self.data = data
        self.name = name if name is not None else data.name
        self._model = build_model(spec.model, seed=spec.seed)
        if device is not None:
            self._model.to(device)
        self._mask = full_mask(self._model)
        self._global = _clone_state(self._model)
        self._plan: RoundPlan | None = None
        self._finished = False

    @property
    def model(self) -> nn.Module:
        """The site's model: the global model after :meth:`begin_round`, trained after
        :meth:`train`."""
        return self._model

    @property
    def mask(self) -> Mask:
        """The current mask."""
        return self._mask

    @property
    def plan(self) -> RoundPlan | None:
        """The plan of the round begun last, if any."""
        return self._plan

    def begin_round(self, round_index: int, previous: GlobalUpdate | None) -> RoundPlan:
        """Take in the previous round's aggregate and decide this round's mask.

        ``previous`` is ``None`` in round 0, or when no aggregate came out of the last round
        (the site then restarts from the last global model it had).
        """
        if round_index < 0:
            raise ConfigError(f"round index must be >= 0, got {round_index}")
        if self._plan is not None and round_index <= self._plan.round_index:
            raise PlatformError(
                f"site {self.name!r} already began round {self._plan.round_index}; "
                f"cannot begin round {round_index}"
            )
        if self._plan is None and round_index > 0:
            raise PlatformError(
                f"site {self.name!r} cannot join at round {round_index} without the previous "
                "round's plan (restore its state first)"
            )
        if self._finished:
            raise PlatformError(f"site {self.name!r} has finished; it begins no more rounds")
        self._model.load_state_dict(self._global)
        if previous is not None:
            if self._plan is None:
                raise PlatformError("round 0 has no previous aggregate to take in")
            self._mask = apply_global_update(
                self._model,
                self._plan,
                previous,
                self.spec.method,
                majority_rule=self.spec.majority_rule,
            )
        mask = next_mask(self.spec, self._model, self._mask, round_index)
        apply_mask(self._model.state_dict(), mask)
        self._mask = mask
        self._global = _clone_state(self._model)
        self._plan = RoundPlan.make(round_index, self._model, mask)
        logger.debug(
            "site %s round %d: sparsity %.4f, %d values, mask %s",
            self.name,
            round_index,
            self._plan.sparsity,
            self._plan.n_values,
            self._plan.mask_digest[:12],
        )
        return self._plan

    def finish(self, final: GlobalUpdate) -> Mask:
        """Take in the last round's aggregate: the model becomes the final global model.

        Returns its mask (for FedSparsify-Local the majority of the last votes, so it may be
        sparser than the last plan's). No round can begin afterwards.
        """
        plan = self._require_plan()
        if self._finished:
            raise PlatformError(f"site {self.name!r} has already finished")
        self._model.load_state_dict(self._global)
        self._mask = apply_global_update(
            self._model, plan, final, self.spec.method, majority_rule=self.spec.majority_rule
        )
        self._global = _clone_state(self._model)
        self._finished = True
        return self._mask

    @property
    def finished(self) -> bool:
        """Whether :meth:`finish` took in the final aggregate."""
        return self._finished

    def _require_plan(self) -> RoundPlan:
        if self._plan is None:
            raise PlatformError(f"site {self.name!r} has not begun a round")
        return self._plan

    def train(self) -> LocalUpdate:
        """Train the round's global model locally under the plan's mask; return the upload.

        Calling it again in the same round retrains from the same start (same result).
        """
        plan = self._require_plan()
        if self._finished:
            raise PlatformError(f"site {self.name!r} has finished; there is no round to train")
        spec = self.spec
        self._model.load_state_dict(self._global)
        metrics = train_local(
            self._model,
            plan.mask,
            self.data,
            spec.training,
            seed=derive_seed(spec.seed, "train", self.name, plan.round_index),
            global_state=self._global if spec.training.proximal_mu > 0 else None,
        )
        state = self._model.state_dict()
        votes: np.ndarray | None = None
        if spec.method == "fedsparsify-local":
            target = target_sparsity(spec.schedule, plan.round_index, spec.rounds)
            local = global_magnitude_mask(state, plan.mask, target)
            apply_mask(state, local)
            votes = plan.layout.indicator(local)
            metrics["local_sparsity"] = sparsity(local)
        return LocalUpdate(
            values=plan.layout.flatten(state),
            num_samples=self.data.num_samples,
            votes=votes,
            metrics=metrics,
            mask_digest=plan.mask_digest,
        )

    def evaluate(
        self, x: torch.Tensor | None = None, y: torch.Tensor | None = None
    ) -> dict[str, float]:
        """Evaluate the current model on ``(x, y)``, by default the site's validation set."""
        if (x is None) != (y is None):
            raise ConfigError("pass both x and y, or neither")
        if x is None or y is None:
            x, y = self.data.x_val, self.data.y_val
        return evaluate(self._model, x, y, self.data.task)

    def state_dict(self) -> dict[str, Any]:
        """What a restarted client needs: the round's global model, its mask and round index."""
        return {
            "version": _STATE_VERSION,
            "spec_digest": spec_digest(self.spec),
            "name": self.name,
            "round_index": -1 if self._plan is None else self._plan.round_index,
            "finished": self._finished,
            "mask": pack_mask(self._mask),
            "model": {k: v.detach().cpu().clone() for k, v in self._global.items()},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Resume from :meth:`state_dict`'s output (same spec required)."""
        if state.get("version") not in _READABLE_STATE_VERSIONS:
            raise PlatformError(
                f"unsupported site state version {state.get('version')!r} (this release reads "
                f"{', '.join(map(str, _READABLE_STATE_VERSIONS))})"
            )
        if not matches_saved_digest(self.spec, state.get("spec_digest")):
            raise ConfigError("site state was saved under another federation spec")
        mask = unpack_mask(state["mask"], prunable_shapes(self._model))
        try:
            self._model.load_state_dict(state["model"])
        except RuntimeError as exc:
            raise PlatformError(f"site state does not fit the model: {exc}") from exc
        apply_mask(self._model.state_dict(), mask)
        self._mask = mask
        self._global = _clone_state(self._model)
        round_index = int(state["round_index"])
        finished = bool(state.get("finished", False))
        if finished and round_index < 0:
            raise PlatformError("site state says finished but holds no round")
        # after finish() the saved mask is the final one: the rebuilt plan then only informs
        self._plan = None if round_index < 0 else RoundPlan.make(round_index, self._model, mask)
        self._finished = finished
