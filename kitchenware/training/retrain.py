"""`make retrain` / `python -m kitchenware.training.retrain`: retrain the served model from
the corrections users sent, compare it with the current model, promote it only if better.

Exit codes: 0 the candidate passes the promotion rule (and was promoted with --promote),
1 the rule refused it (it stays in its run folder), 2 nothing or too little to retrain
from (an empty store, too few corrections for a holdout) or a bad option.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from kitchenware.training.retrain_report import format_checks, format_table
from kitchenware.training.retraining import (
    RetrainInputError,
    RetrainOptions,
    RetrainResult,
    retrain,
)

EXIT_REFUSED, EXIT_USAGE = 1, 2


def build_parser() -> argparse.ArgumentParser:
    from kitchenware.serving.settings import get_settings

    settings = get_settings()
    defaults = RetrainOptions(model_tag=settings.model_tag)
    parser = argparse.ArgumentParser(
        prog="python -m kitchenware.training.retrain",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    add = parser.add_argument
    add(
        "--model",
        dest="model_tag",
        default=settings.model_tag,
        help="model to improve (store tag); default: the served one, KITCHENWARE_MODEL_TAG",
    )
    add(
        "--url",
        dest="feedback_url",
        default=settings.feedback_url,
        help="feedback store URL; default: KITCHENWARE_FEEDBACK_URL, as the service resolves it "
        "(empty: the SQLite file under the BentoML home)",
    )
    add(
        "--images-dir",
        dest="feedback_images_dir",
        default=settings.feedback_images_dir or None,
        help="the store's photos (KITCHENWARE_FEEDBACK_IMAGES_DIR)",
    )
    add("--data", type=Path, help="base dataset to replay (Kaggle layout or one folder per class)")
    add("--photos", type=Path, help="labelled real photos (default: the published model's 9)")
    add("--run-dir", type=Path, help="run folder; default runs/<timestamp>-retrain")
    add("--cache-dir", type=Path, default=defaults.cache_dir, help="backbone feature cache")
    add("--holdout-fraction", type=float, default=defaults.holdout_fraction)
    add(
        "--min-holdout",
        type=int,
        default=defaults.min_holdout,
        help="fewest held-out photos a comparison needs",
    )
    add(
        "--base-margin",
        type=float,
        default=defaults.base_margin,
        help="how much lower the candidate's base-test accuracy may be",
    )
    add(
        "--max-traffic",
        type=int,
        default=defaults.max_traffic,
        help="recent traffic photos used for distillation and the changed-answer count",
    )
    add("--epochs", type=int, default=defaults.epochs)
    add("--patience", type=int, default=defaults.patience, help="early stopping patience")
    add("--learning-rate", type=float, default=defaults.learning_rate)
    add(
        "--label-smoothing",
        type=float,
        default=defaults.label_smoothing,
        help="mix training targets with the uniform distribution (0 = off); keeps the head "
        "from turning so sharp that its int8 artifact flips answers",
    )
    add("--batch-size", type=int, default=defaults.batch_size)
    add("--seed", type=int, default=defaults.seed, help="seed of the holdout split and training")
    add(
        "--promote",
        action="store_true",
        help="import a passing candidate as a new version of the served model",
    )
    add(
        "--stage",
        action="store_true",
        help="import a passing candidate as <name>-candidate:<version>, to run it in shadow "
        "(KITCHENWARE_SHADOW_MODEL_TAG) before --promote",
    )
    add(
        "--shadow-model",
        default=settings.shadow_model_tag,
        help="a candidate that ran in shadow: its record on live traffic goes into the report "
        "and the rule; default: KITCHENWARE_SHADOW_MODEL_TAG",
    )
    add(
        "--monitoring-dir",
        type=Path,
        default=defaults.monitoring_dir,
        help="the service's monitoring folder (BentoML's monitoring log_path), where the "
        "prediction log keeps the shadow records",
    )
    parser.set_defaults(prediction_log=settings.prediction_log)
    return parser


def summary(result: RetrainResult) -> str:
    comparison = result.comparison
    verdict = "passes" if comparison.passed else "is REFUSED by"
    lines = [
        "",
        format_table(comparison.rows()),
        "",
        f"Promotion rule: the candidate {verdict} the rule",
        format_checks(comparison.checks),
        "Time: " + ", ".join(f"{k} {v:.1f} s" for k, v in result.timings.items()),
        f"Report: {result.report} (+ confusion PNGs); candidate: {result.run_dir / 'candidate'}",
    ]
    if result.promoted_tag:
        tag = result.promoted_tag
        lines += [
            f"Promoted: {tag} (a new version of {result.parent_tag.split(':')[0]}, parent "
            f"{result.parent_tag}). Next:",
            f"  make serve MODEL={tag}",
            f"  (or: KITCHENWARE_MODEL_TAG={tag} bentoml serve service:Kitchenware)",
            f"  make bento MODEL={tag}      (then make container, or bentoml containerize)",
            f"  roll back: make serve MODEL={result.parent_tag}",
        ]
    elif result.staged_tag:
        tag = result.staged_tag
        lines += [
            f"Staged: {tag}. Run it in shadow beside {result.parent_tag}, then retrain with "
            "--promote (the report then says how it did on live traffic):",
            f"  KITCHENWARE_SHADOW_MODEL_TAG={tag} make serve MODEL={result.parent_tag}",
        ]
    elif comparison.passed:
        lines.append(
            "Not promoted: add --promote to import it into the model store "
            "(or --stage to run it in shadow first)."
        )
    else:
        lines.append(f"Not promoted: {result.parent_tag} stays the served model.")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        result = retrain(RetrainOptions(**vars(args)))
    except RetrainInputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    print(summary(result))
    return 0 if result.comparison.passed else EXIT_REFUSED


if __name__ == "__main__":
    sys.exit(main())
