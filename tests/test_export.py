"""Model cards say how a checkpoint was trained, including a run resumed with another step budget."""
from __future__ import annotations

import json
from dataclasses import asdict

from train.core.config import PRESETS
from train.stages.export import schedule_history


def write_runs(folder, *starts):
    folder.joinpath("runs.jsonl").write_text("".join(json.dumps(s) + "\n" for s in starts))


def test_one_uninterrupted_schedule_needs_no_history(tmp_path):
    assert schedule_history(tmp_path, 700) == ""
    schedule = asdict(PRESETS["full"].student.rescaled(700))
    write_runs(tmp_path, {"from_step": 0, "schedule": schedule}, {"from_step": 300, "schedule": schedule})  # a resume
    assert schedule_history(tmp_path, 700) == ""


def test_a_resume_with_a_new_budget_is_described(tmp_path):
    first, second = asdict(PRESETS["full"].student.rescaled(700)), asdict(PRESETS["full"].student.rescaled(1700))
    write_runs(tmp_path, {"from_step": 0, "schedule": first}, {"from_step": 700, "schedule": second})
    text = schedule_history(tmp_path, 1700)
    assert "steps 1-700 under a 700-step schedule (warm-up 70" in text
    assert "steps 701-1700 under a 1700-step schedule (warm-up 170, peak lr 0.001" in text
    write_runs(tmp_path, {"from_step": 700, "schedule": second})  # the first stretch predates runs.jsonl
    assert schedule_history(tmp_path, 1200).startswith(" Training history: steps 1-700 ran under an earlier schedule")


def test_card_limitations_state_the_classes_and_the_cross_source_score(tmp_path):
    """The card's Limitations: how many classes the model knows and, once `train realworld` scored it, how often it
    names every sound on recordings from unheard sources."""
    import json
    from dataclasses import replace

    from train.core.config import PRESETS
    from train.stages.export import limitations

    config = replace(PRESETS["full"], run_dir=tmp_path)
    assert "121 classes" in limitations(config, "teacher") and "never heard" not in limitations(config, "teacher")
    (tmp_path / "results").mkdir()
    scores = {"all": {"n": 191, "names_all": 0.204}, "single": {"names_all": 0.333}, "mix": {"names_all": 0.025}}
    (tmp_path / "results" / "realworld_teacher.json").write_text(json.dumps(scores))
    text = limitations(config, "teacher")
    assert "191 clips) it names every sound in 20.4% of clips: 33.3% of single sounds, 2.5% of two-sound" in text
