"""Feature-level fusion comparison: trained BEV models with sensors removed at test time.

Each :class:`FeatureVariant` is one trained model (``concat`` / ``attention`` fuser, a
weights folder) run with a subset of its modalities (the others dropped through
:attr:`~mm_perception.fusion.feature_level.detector.BevDetectorConfig.drop_modalities`):
all three, each pair, each single one (:data:`MODALITY_SUBSETS`, in table order).

:class:`FeatureTableRun` is fed by the evaluation runner once per frame with ground truth:
the frame's :class:`~mm_perception.fusion.feature_level.processor.RawFrame` (made once per
set) goes through every variant's detector, and the detections are scored at the end with
the same :func:`~mm_perception.eval.detection_metrics.evaluate_detections` and
:class:`DetectionEvalConfig` as the pipeline's lists. :func:`table_rows` turns the result
(and the pipeline lists of the same run) into the report's rows.

Detectors are made by a factory (default: :class:`BevDetector` from the variant's config), so
the table logic runs on fakes in tests without a trained model.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, cast

from mm_perception.core.errors import ConfigError
from mm_perception.core.types import DetectedObject, ObjectClass
from mm_perception.eval.detection_metrics import (
    DetectionEvalConfig,
    DetectionMetrics,
    evaluate_detections,
)
from mm_perception.sim.ground_truth import GroundTruthObject

if TYPE_CHECKING:
    from mm_perception.fusion.feature_level.detector import BevDetectorConfig
    from mm_perception.fusion.feature_level.processor import RawFrame

#: modality names (same order as ``feature_level.config.MODALITIES``; repeated here so that
#: this module does not import the feature-level package)
MODALITIES: tuple[str, ...] = ("camera", "lidar", "radar")
#: modality subsets of the table, in row order: the full model, then one, then two removed
MODALITY_SUBSETS: tuple[tuple[str, ...], ...] = (
    ("camera", "lidar", "radar"), ("camera", "lidar"), ("lidar", "radar"), ("camera", "radar"),
    ("camera",), ("lidar",), ("radar",))
#: backends the evaluation can run the BEV models on (TensorRT: use ``build-engine``)
EVAL_BACKENDS: tuple[str, ...] = ("onnxruntime", "torch")
#: the distance threshold (m) of the per-class AP columns
AP_THRESHOLD_M = 2.0


@dataclass(frozen=True)
class FeatureVariant:
    """One row of the feature-level table: a trained model run with some modalities.

    Attributes:
        model: the trained model's name (``concat``, ``attention``, ...), shown in the table.
        weights: its weights folder (None: the committed default weights).
        modalities: the modalities it is given (a non-empty subset of :data:`MODALITIES`,
            kept in that order); the others are dropped at test time.
        backend: runtime backend, one of :data:`EVAL_BACKENDS`.
    """

    model: str
    weights: str | None = None
    modalities: tuple[str, ...] = MODALITIES
    backend: str = "onnxruntime"

    def __post_init__(self) -> None:
        if not isinstance(self.model, str) or not self.model:
            raise ConfigError(f"FeatureVariant.model must be a non-empty name, got "
                              f"{self.model!r}")
        if self.weights is not None and not isinstance(self.weights, str):
            raise ConfigError(f"FeatureVariant.weights must be a folder path or None, got "
                              f"{self.weights!r}")
        mods = (tuple(self.modalities) if isinstance(self.modalities, tuple | list)
                else ())
        if not mods or any(m not in MODALITIES for m in mods) or len(set(mods)) != len(mods):
            raise ConfigError(f"FeatureVariant.modalities must be distinct names from "
                              f"{list(MODALITIES)}, got {self.modalities!r}")
        object.__setattr__(self, "modalities", tuple(m for m in MODALITIES if m in mods))
        if self.backend not in EVAL_BACKENDS:
            raise ConfigError(f"FeatureVariant.backend must be one of {list(EVAL_BACKENDS)}, "
                              f"got {self.backend!r}")

    @property
    def name(self) -> str:
        """``model: camera+lidar+radar`` (the table's row label)."""
        return f"{self.model}: {'+'.join(self.modalities)}"

    @property
    def drop_modalities(self) -> tuple[str, ...]:
        """The modalities removed at test time."""
        return tuple(m for m in MODALITIES if m not in self.modalities)

    def detector_config(self) -> BevDetectorConfig:
        """The :class:`BevDetectorConfig` of this variant."""
        from mm_perception.fusion.feature_level.detector import BevDetectorConfig
        from mm_perception.runtime import RuntimeConfig

        # validated against EVAL_BACKENDS above, a subset of the runtime's backend names
        runtime = RuntimeConfig(backend=cast(Any, self.backend))
        return BevDetectorConfig(weights=self.weights, runtime=runtime,
                                 drop_modalities=self.drop_modalities)


def model_variants(models: Sequence[tuple[str, str | None]],
                   backend: str = "onnxruntime",
                   model_modalities: Mapping[str, Sequence[str]] | None = None,
                   ) -> tuple[FeatureVariant, ...]:
    """Every model with every subset of :data:`MODALITY_SUBSETS`, grouped by model in the
    given order.

    Args:
        models: ``(name, weights folder or None for the default)`` per trained model.
        backend: runtime backend of all of them.
        model_modalities: model name -> the modalities it was trained with; its rows are the
            subsets of those only (a LiDAR-only model gets one row). Models not named get
            every subset.
    """
    known = model_modalities or {}
    return tuple(FeatureVariant(model=name, weights=weights, modalities=subset,
                                backend=backend)
                 for name, weights in models for subset in MODALITY_SUBSETS
                 if name not in known or set(subset) <= set(known[name]))


class FrameDetector(Protocol):
    """What the table needs of a detector (:class:`BevDetector` is one)."""

    def detect_frame(self, raw: RawFrame, stamp_ns: int) -> list[DetectedObject]:
        """Objects of one frame, ``base_link`` at ``stamp_ns``."""
        ...


#: makes the detector of a variant
DetectorFactory = Callable[[FeatureVariant], FrameDetector]


def bev_detector_factory(variant: FeatureVariant) -> FrameDetector:
    """The default factory: a :class:`BevDetector` from :meth:`FeatureVariant.detector_config`.

    Raises:
        FileNotFoundError: a file of the weights folder is missing (named).
    """
    from mm_perception.fusion.feature_level.detector import BevDetector

    return BevDetector(variant.detector_config())


class FeatureTableRun:
    """Runs every variant on the frames of an evaluation and scores them.

    Args:
        variants: the rows, in table order (names must be distinct).
        factory: makes each variant's detector (default :func:`bev_detector_factory`); all
            are made here, so missing weights fail before the first frame.

    Raises:
        ConfigError: two variants with the same name.
    """

    def __init__(self, variants: Sequence[FeatureVariant],
                 factory: DetectorFactory | None = None) -> None:
        names = [v.name for v in variants]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ConfigError(f"feature variants: duplicate rows {dup}")
        make = bev_detector_factory if factory is None else factory
        self.variants = tuple(variants)
        self._detectors = [make(v) for v in self.variants]
        self._frames: list[list[tuple[list[DetectedObject], tuple[GroundTruthObject, ...]]]] = [
            [] for _ in self.variants]

    def add(self, raw: RawFrame, stamp_ns: int, truth: Sequence[GroundTruthObject],
            known: Mapping[FeatureVariant, list[DetectedObject]] | None = None) -> None:
        """Run every variant on one frame and keep its detections with ``truth``.

        Args:
            raw: the frame's sensor data (``base_link`` at ``stamp_ns``).
            stamp_ns: the set stamp, ns.
            truth: ground truth of the same stamp.
            known: detections already made for a variant (the pipeline's ``feature`` list is
                the default model with all modalities): used instead of running it again.
        """
        gt = tuple(truth)
        for variant, detector, frames in zip(self.variants, self._detectors, self._frames,
                                             strict=True):
            objs = (known[variant] if known is not None and variant in known
                    else detector.detect_frame(raw, stamp_ns))
            frames.append((objs, gt))

    @property
    def num_frames(self) -> int:
        return len(self._frames[0]) if self._frames else 0

    def metrics(self, config: DetectionEvalConfig | None = None,
                ) -> dict[FeatureVariant, DetectionMetrics]:
        """Variant -> detection metrics over all frames added (table order)."""
        return {v: evaluate_detections(f, config)
                for v, f in zip(self.variants, self._frames, strict=True)}

    def close(self) -> None:
        """Release the detectors' runtime sessions (those that have a ``close``)."""
        for det in self._detectors:
            close = getattr(det, "close", None)
            if callable(close):
                close()


@dataclass(frozen=True, eq=False)
class FeatureTableRow:
    """One row of the table.

    Attributes:
        name: the row label (a variant's :attr:`FeatureVariant.name`, or a pipeline list).
        kind: ``variant`` (a BEV model run) or ``list`` (a pipeline list of the same run,
            for comparison).
        model: the trained model's name (variants) or the list name.
        modalities: the modalities the row used (variants; ``()`` for lists).
        metrics: its detection metrics.
    """

    name: str
    kind: str
    model: str
    modalities: tuple[str, ...]
    metrics: DetectionMetrics

    def ap_2m(self, cls: ObjectClass) -> float:
        """AP of ``cls`` at 2 m (NaN when the class has no ground truth)."""
        return float(self.metrics.ap.get(cls, {}).get(AP_THRESHOLD_M, math.nan))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready headline numbers (NaN -> None)."""
        m = self.metrics
        e = m.mean_tp_errors
        return {
            "name": self.name, "kind": self.kind, "model": self.model,
            "modalities": list(self.modalities), "frames": m.num_frames,
            "mean_ap": _none(m.mean_ap), "car_ap_2m": _none(self.ap_2m(ObjectClass.CAR)),
            "ap_2m": {c.value: _none(self.ap_2m(c)) for c in m.config.classes},
            "mean_ate_m": _none(e.translation), "mean_ase": _none(e.scale),
            "mean_aoe_rad": _none(e.orientation), "mean_ave_mps": _none(e.velocity),
        }


def _none(value: float) -> float | None:
    return None if math.isnan(value) else float(value)


def table_rows(variant_metrics: Mapping[FeatureVariant, DetectionMetrics],
               list_metrics: Mapping[str, DetectionMetrics] | None = None,
               ) -> tuple[FeatureTableRow, ...]:
    """The table: variants in their order, then the pipeline lists of the same run (in the
    order given), for comparison."""
    rows = [FeatureTableRow(v.name, "variant", v.model, v.modalities, m)
            for v, m in variant_metrics.items()]
    rows += [FeatureTableRow(n, "list", n, (), m) for n, m in (list_metrics or {}).items()]
    return tuple(rows)


#: columns of the printed / Markdown table: header -> value of a row dict
TABLE_COLUMNS: tuple[tuple[str, Callable[[Mapping[str, Any]], float | int | None]], ...] = (
    ("mAP", lambda r: r["mean_ap"]),
    ("car AP@2m", lambda r: r["car_ap_2m"]),
    ("pedestrian AP@2m", lambda r: r["ap_2m"].get(ObjectClass.PEDESTRIAN.value)),
    ("cyclist AP@2m", lambda r: r["ap_2m"].get(ObjectClass.CYCLIST.value)),
    ("mATE m", lambda r: r["mean_ate_m"]),
    ("mAVE m/s", lambda r: r["mean_ave_mps"]),
    ("frames", lambda r: r["frames"]),
)


def format_cell(value: float | int | None) -> str:
    """A table cell: ``-`` for undefined, integers as they are, floats with 3 decimals."""
    if value is None:
        return "-"
    if isinstance(value, int):
        return str(value)
    return f"{value:.3f}"


def text_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """Plain aligned text table of row dicts (:meth:`FeatureTableRow.to_dict`)."""
    header = ["row"] + [h for h, _ in TABLE_COLUMNS]
    # the pipeline's lists are marked: "lidar" alone could read as a LiDAR-only BEV model
    body = [[str(r["name"]) if r.get("kind") != "list" else f"{r['name']} (list)"]
            + [format_cell(fn(r)) for _, fn in TABLE_COLUMNS] for r in rows]
    widths = [max(len(line[k]) for line in [header, *body]) for k in range(len(header))]
    lines = ["  ".join(c.ljust(w) if k == 0 else c.rjust(w)
                       for k, (c, w) in enumerate(zip(line, widths, strict=True)))
             for line in [header, *body]]
    return "\n".join(lines)


__all__ = ["AP_THRESHOLD_M", "EVAL_BACKENDS", "MODALITIES", "MODALITY_SUBSETS",
           "TABLE_COLUMNS", "DetectorFactory", "FeatureTableRow", "FeatureTableRun",
           "FeatureVariant", "FrameDetector", "bev_detector_factory", "format_cell",
           "model_variants", "table_rows", "text_table"]
