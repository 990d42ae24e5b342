"""The committed checkpoints: they load, fit the size budget, and caption a held-out example sensibly."""
from pathlib import Path

import pytest

import eacap
from eacap.compare import compare

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "checkpoints"
pytestmark = pytest.mark.skipif(not (SHIPPED / "teacher" / "config.json").is_file(),
                                reason="no trained checkpoints committed yet (python -m train all --preset full)")


@pytest.fixture(scope="module")
def models():
    return eacap.load_model(SHIPPED / "teacher"), eacap.load_model(SHIPPED / "student")


def test_sizes_and_roles(models):
    teacher, student = models
    assert (teacher.role, student.role) == ("teacher", "student")
    assert student.num_parameters() * 5 <= teacher.num_parameters()
    for role in ("teacher", "student"):
        size = sum(p.stat().st_size for p in (SHIPPED / role).iterdir())
        assert size <= 60e6, f"{role} checkpoint is {size / 1e6:.1f} MB"
        assert "## Test-split results" in (SHIPPED / role / "README.md").read_text()


def test_captions_a_held_out_example(models):
    """examples/ are recordings and mixes from held-out packages: both models must produce a real sentence about
    one (the first by name, whatever examples/make_examples.py's rule picked)."""
    teacher, student = models
    examples = sorted((ROOT / "examples").glob("*.flac"))
    assert examples, "no example clips: python examples/make_examples.py"
    result = compare(examples[0], teacher, student)
    for run in (result.teacher, result.student):
        words = run.caption.split()
        assert 4 <= len(words) <= 30 and len(set(words)) > len(words) / 2, run.caption
    assert -1.0 <= result.clip_cosine <= 1.0
