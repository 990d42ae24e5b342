"""Fast checks of the ablation plan: schedule rescaling, job splitting, the claims text (no training)."""
from __future__ import annotations

import dataclasses
import json

import pytest

from train.core.config import PRESETS
from train.core.runs import group_name, parse_group, row_name, shipped_student
from train.stages import ablation, report


def test_rescaled_schedule_keeps_its_shape():
    full = PRESETS["full"].student
    short = full.rescaled(250)
    assert (short.steps, short.warmup, short.eval_every) == (250, 25, 250)
    assert short.lr == full.lr and short.batch_size == full.batch_size
    assert full.rescaled(full.steps) == full
    with pytest.raises(ValueError, match="at least 1"):
        full.rescaled(0)


def test_every_table_row_is_planned_once_per_seed_and_jobs_balance_cost():
    runs = ablation.plan([0, 1])
    names = {f"{recipe.name}_seed{seed}" for recipe, seed in runs}
    assert len(names) == len(runs) == 2 * (len(report.ROWS) - 1)  # every row but the teacher, per seed
    assert {recipe.name for recipe, _ in runs} == {pattern for _, pattern in report.ROWS} - {"teacher"}
    parts = ablation.split_jobs(runs, 2)
    key = lambda run: (run[0].name, run[1])  # noqa: E731
    assert sorted(map(key, (run for part in parts for run in part))) == sorted(map(key, runs))
    cost = [sum(2 if recipe.audio_only else 1 for recipe, _ in part) for part in parts]
    assert abs(cost[0] - cost[1]) <= 1
    assert ablation.split_jobs(runs, 1) == [runs]


def result(name: str, cider: float, seed: int = 0, sbert: float = 0.4) -> dict:
    return {"model": f"ablation9/{name}_seed{seed}", "seed": seed, "metrics": {"cider_d": cider, "sbert_sim": sbert}}


def test_claims_name_the_verdict_from_the_numbers():
    groups = report._groups([result("seq_contrastive", 0.50), result("token", 0.40), result("seq", 0.495),
                             result("seq_contrastive_10pct", 0.30, 0), result("seq_contrastive_10pct", 0.36, 1),
                             result("seq_mse_10pct", 0.31, 0), result("seq_mse_10pct", 0.33, 1),
                             result("none", 0.45), result("seq_mse", 0.45)])
    teacher = {"model": "teacher", "metrics": {"cider_d": 0.60, "sbert_sim": 0.5}}
    text = "\n".join(report.claims(groups, teacher))
    # Single-seed rows count with the largest seed spread measured in the table (0.03 here): +0.05 is within 0.06.
    assert "Encoder-level KD (MSE) beats decoder-level (token) KD**: undecided" in text
    assert "Encoder-level KD beats decoder-level (token) KD**: holds" in text
    assert "Contrastive encoder KD adds to sequence-level KD**: undecided" in text  # +1%: within 2% for one seed
    assert "With 10% of the captions, contrastive beats MSE**: undecided" in text   # +0.01 within the seed spread
    assert "Audio-only data helps" not in text                                       # that row was not run
    assert "without KD by >= 10% CIDEr-D** (the teacher with its own, longer training): holds" in text
    assert "reaches 83% of the teacher's CIDEr-D and 80% of its SBERT-sim" in text
    only_baseline = "\n".join(report.claims(report._groups([result("none", 0.30)]), teacher))
    assert "without KD" in only_baseline and "close to the teacher" not in only_baseline  # no KD row: no such claim


def test_robustness_claim_compares_the_contrastive_gain_across_label_fractions():
    rows = [result("seq_contrastive", 0.30), result("seq_mse", 0.20), result("seq_contrastive_25pct", 0.25),
            result("seq_mse_25pct", 0.20), result("seq_contrastive_10pct", 0.22), result("seq_mse_10pct", 0.20)]
    line = report._robustness(report._groups(rows))
    assert "does not hold" in line and ("100% of the captions +50%, 25% of the captions +25%, "
                                        "10% of the captions +10%") in line
    rows[0] = result("seq_contrastive", 0.21)
    assert ": holds:" in report._robustness(report._groups(rows))
    assert report._robustness(report._groups(rows[:4])) is None  # a fraction missing: no verdict


def test_rows_can_be_chosen_by_name():
    runs = ablation.plan([1], ["none", "seq_contrastive"])
    assert [(recipe.name, seed) for recipe, seed in runs] == [("none", 1), ("seq_contrastive", 1)]
    with pytest.raises(ValueError, match="unknown ablation row"):
        ablation.plan([0], ["seq_kd"])


def test_targets_section_states_each_target_met_or_not(tmp_path):
    """`train report` opens with the shipped models' targets: quality from the results, speed from the saved bench."""
    config = dataclasses.replace(PRESETS["full"], run_dir=tmp_path, student_shape="base", student_init=None)
    results = tmp_path / "results"
    (results / "ablation1600").mkdir(parents=True)
    teacher = {"model": "teacher", "parameters": 18_000_000, "metrics": {"cider_d": 0.90, "sbert_sim": 0.50}}
    student = {"model": shipped_student(config), "parameters": 3_000_000,
               "metrics": {"cider_d": 0.86, "sbert_sim": 0.46}}
    (results / "ablation1600" / "none_seed0.json").write_text(json.dumps(result("none", 0.80)))
    (results / "bench.json").write_text(json.dumps({
        "speedup": {"latency": 4.0, "throughput": 20.0}, "student_vs_reference": {"latency": 2.0, "throughput": 9.0},
        "in_turn_speedup": {"latency": 3.5, "throughput": 19.0}, "device": "cpu",
        "models": {"student": {"aten_ops_per_caption": {"total": 1118}}},
        "threads": 2, "repeats": 5, "beam_size": 3, "clip_seconds": 10.0, "torch": "2.13.0"}))
    text = "\n".join(report.targets_section(config, [teacher, student], teacher))
    assert "| teacher CIDEr-D >= 1.10x the no-KD student's (1600 steps) | 0.900 vs 0.800: 1.12x | met |" in text
    assert "| shipped student >= 95% of the teacher's CIDEr-D | 0.860 vs 0.900: 95.6% | met |" in text
    assert "| shipped student >= 95% of the teacher's SBERT-sim | 0.460 vs 0.500: 92.0% | **not met** |" in text
    throughput, latency = "20.0x (in turn: 19.0x)", "4.0x (in turn: 3.5x)"
    assert f"| student throughput (batch 32) >= 19x the teacher's | {throughput} | met |" in text
    aim = "the aim on two cores"
    assert f"| student throughput (batch 32) >= 25x the teacher's, {aim} | {throughput} | **not met** |" in text
    assert f"| student latency (batch 1) >= 8x lower | {latency} | **not met** |" in text
    assert f"| student latency (batch 1) >= 10x lower, {aim} | {latency} | **not met** |" in text
    assert "| student ATen operator calls per caption <= 1,300 | 1,118 | met |" in text
    assert "1/6.0 | met |" in text and "latency 2.0x, throughput 9.0x | met |" in text
    (results / "bench.json").unlink()
    assert "Speed: not measured yet" in "\n".join(report.targets_section(config, [teacher, student], teacher))


def test_an_ablation_of_another_shape_has_its_own_folder_and_the_same_rows(tmp_path):
    """`--shape slim`: every row is that architecture, in `ablation<N>_slim/`; the report reads its rows by recipe."""
    runs = ablation.plan([0], ["none", "seq_contrastive"], shape="slim")
    assert [(recipe.name, recipe.shape) for recipe, _ in runs] == [("none_slim", "slim"),
                                                                   ("seq_contrastive_slim", "slim")]
    assert group_name(500) == "ablation500" and group_name(500, "slim") == "ablation500_slim"
    assert parse_group("ablation500_slim") == (500, "slim") and parse_group("ablation250") == (250, "base")
    assert parse_group("ablation500_huge") is None and parse_group("archive") is None
    assert row_name("ablation500_slim/none_slim_seed1", "slim") == "none"

    config = dataclasses.replace(PRESETS["full"], run_dir=tmp_path, student_shape="slim")
    folder = tmp_path / "results" / "ablation500_slim"
    folder.mkdir(parents=True)

    def scored(group: str, name: str, cider: float) -> None:
        row = {**result(name, cider), "model": f"{group}/{name}_seed0", "parameters": 2_000_000,
               "latency_seconds": 0.03, "event_f1": {"f1": 0.2}}
        row["metrics"].update(bleu_4=0.3, meteor=0.2, rouge_l=0.4)
        (tmp_path / "results" / group / f"{name}_seed0.json").write_text(json.dumps(row))

    for name, cider in (("none_slim", 0.5), ("seq_contrastive_slim", 0.7)):
        scored("ablation500_slim", name, cider)
    row = folder / "seq_contrastive_slim_seed0.json"  # run with a part of the audio-only pool: the command says so
    row.write_text(json.dumps({**json.loads(row.read_text()), "audio_only_scenes": 2000}))
    (tmp_path / "results" / "ablation250").mkdir()  # a base-shape ablation: not the shipped architecture's target
    scored("ablation250", "none", 0.1)
    teacher = {"model": "teacher", "parameters": 18_000_000, "latency_seconds": 0.3, "event_f1": {"f1": 0.3},
               "metrics": {"cider_d": 0.9, "sbert_sim": 0.5, "bleu_4": 0.3, "meteor": 0.2, "rouge_l": 0.5}}
    targets = "\n".join(report.targets_section(config, [teacher], teacher))
    assert "| teacher CIDEr-D >= 1.10x the no-KD student's (500 steps) | 0.900 vs 0.500: 1.80x | met |" in targets
    assert "(250 steps" not in targets
    # no ablation of the shipped shape yet: the other shapes' no-KD rows stand in, named by their shape
    lite = dataclasses.replace(config, student_shape="lite")
    targets = "\n".join(report.targets_section(lite, [teacher], teacher))
    assert ("| teacher CIDEr-D >= 1.10x the no-KD student's (250 steps, shape base) | "
            "0.900 vs 0.100: 9.00x | met |") in targets
    assert "(500 steps, shape slim) | 0.900 vs 0.500: 1.80x | met |" in targets
    text = "\n".join(report.ablation_sections(config, teacher))
    assert "## Ablation: every student row at 500 steps, student shape `slim`" in text
    assert ("`python -m train ablation --preset full --steps 500 --shape slim "
            "--audio-only-scenes 2000 --seeds 0`") in text
    assert "| student, supervised only | 0.300 |" in text and "| + seq-KD + enc-KD contrastive |" in text
    assert "**Contrastive encoder KD adds to sequence-level KD**" not in text  # no seq-KD row in this one
    assert text.index("at 250 steps") < text.index("at 500 steps, student shape")  # base first, then by shape
    assert "`python -m train ablation --preset full --steps 250 --shape base --seeds 0`" in text


def test_an_ablation_whose_rows_were_decoded_differently_says_so():
    pair = {"no_repeat_ngram_size": 2, "no_repeat_sounds": False}
    both = {"no_repeat_ngram_size": 2, "no_repeat_sounds": True}
    alike = [{"model": "ablation5/none_seed0", "options": both, "kd_targets_decoding": None},
             {"model": "ablation5/seq_seed0", "options": both, "kd_targets_decoding": pair}]
    assert report.decoding_note(alike)[-1] == ("Decoding rules of the scored captions: n-gram 2 + sounds; "
                                               "of the teacher's seq-KD targets: n-gram 2.")
    mixed = alike + [{"model": "ablation5/seq_mse_seed0"}]  # a file from before the options were recorded
    note = report.decoding_note(mixed)[-1]
    assert "n-gram 2 + sounds, not recorded" in note and "not all made alike" in note
