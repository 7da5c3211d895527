"""The data check on planted bad files: what stops training, what is dropped, what is info."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from kitchenware.training.data import DataError, discover_dataset
from kitchenware.training.datacheck import FileProblem, check_dataset, require_clean

ImageWriter = Callable[..., Path]


@pytest.fixture
def planted(tmp_path: Path, write_image: ImageWriter) -> Path:
    """Folder layout: cup and plate with one of each kind of problem."""
    root = tmp_path / "data"
    for i in range(4):
        write_image(root / "cup" / f"good{i}.jpg", seed=i)
        write_image(root / "plate" / f"good{i}.jpg", seed=100 + i)
    whole = write_image(root / "cup" / "to_truncate.jpg", size=(200, 160), seed=7).read_bytes()
    (root / "cup" / "truncated.jpg").write_bytes(whole[: len(whole) // 2])
    (root / "cup" / "to_truncate.jpg").unlink()
    (root / "cup" / "text.jpg").write_text("this is a text file, not a photo\n")
    (root / "cup" / "empty.jpg").write_bytes(b"")
    write_image(root / "cup" / "tiny.png", size=(8, 8), fmt="PNG")
    (root / "cup" / "good0_copy.jpg").write_bytes((root / "cup" / "good0.jpg").read_bytes())
    (root / "plate" / "conflict.jpg").write_bytes((root / "cup" / "good1.jpg").read_bytes())
    write_image(root / "plate" / "cmyk.jpg", mode="CMYK", seed=200)
    write_image(root / "plate" / "rgba.png", mode="RGBA", fmt="PNG", seed=201)
    write_image(root / "plate" / "gray.png", mode="L", fmt="PNG", seed=202)
    return root


def _by_name(problems: list[FileProblem]) -> dict[str, tuple[str, str]]:
    return {f"{p.path.parent.name}/{p.path.name}": (p.severity, p.reason) for p in problems}


def test_each_planted_problem_is_found_with_the_right_severity(planted: Path) -> None:
    report = check_dataset(discover_dataset(planted), min_side=32, progress=False)
    found = _by_name(report.problems)

    assert found == {
        "cup/truncated.jpg": ("bad", "corrupt"),
        "cup/text.jpg": ("bad", "not an image"),
        "cup/empty.jpg": ("bad", "not an image"),
        "cup/tiny.png": ("bad", "tiny"),
        "cup/good1.jpg": ("bad", "conflicting duplicate"),
        "plate/conflict.jpg": ("bad", "conflicting duplicate"),
        "cup/good0_copy.jpg": ("dropped", "duplicate"),
        "plate/cmyk.jpg": ("info", "non-RGB mode"),
        "plate/rgba.png": ("info", "non-RGB mode"),
        "plate/gray.png": ("info", "non-RGB mode"),
    }
    bad_names = {p.name for p in report.bad_paths}
    assert "good0_copy.jpg" in bad_names and "good0.jpg" not in bad_names
    assert not {"cmyk.jpg", "rgba.png", "gray.png"} & bad_names
    groups = sorted(sorted(p.name for p in group) for group in report.duplicate_groups)
    assert groups == [["conflict.jpg", "good1.jpg"], ["good0.jpg", "good0_copy.jpg"]]
    assert report.class_counts == {"cup": 9, "plate": 8}
    assert report.imbalance_ratio == pytest.approx(9 / 8)
    assert report.mode_counts["CMYK"] == 1 and report.mode_counts["RGBA"] == 1


def test_require_clean_lists_bad_files_and_suggests_skip_bad(planted: Path) -> None:
    report = check_dataset(discover_dataset(planted), progress=False)
    with pytest.raises(DataError) as caught:
        require_clean(report, skip_bad=False)
    message = str(caught.value)
    assert message.startswith("6 unusable image file(s)")
    assert "cup/truncated.jpg (corrupt)" in message and "cup/text.jpg (not an image)" in message
    assert "--skip-bad" in message

    dropped = require_clean(report, skip_bad=True)
    assert {p.name for p in dropped} == {
        "truncated.jpg",
        "text.jpg",
        "empty.jpg",
        "tiny.png",
        "good1.jpg",
        "conflict.jpg",
        "good0_copy.jpg",
    }


def test_table_and_dict_summarise_counts_and_problems(planted: Path) -> None:
    report = check_dataset(discover_dataset(planted), progress=False)
    table = report.format_table()
    assert "cup" in table and "plate" in table and "Imbalance ratio" in table
    assert "conflicting duplicate" in table and "cup/truncated.jpg" in table
    as_json = json.loads(json.dumps(report.to_dict()))
    assert as_json["problem_counts"] == {"bad": 6, "dropped": 1, "info": 3}
    assert as_json["class_counts"] == {"cup": 9, "plate": 8}


def test_clean_generated_set_passes(demo_dataset_dir: Path) -> None:
    report = check_dataset(discover_dataset(demo_dataset_dir), progress=False)
    assert report.problems == []
    assert require_clean(report, skip_bad=False) == set()
    assert report.format_counts == {"JPEG": 48}
    assert "Problems: none" in report.format_table()
    assert 64 <= report.size_summary["width_min"] <= report.size_summary["width_max"] <= 128
