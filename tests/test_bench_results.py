"""The benchmark record judges both kinds of target: a ratio to a same-run baseline, and a ceiling."""

from tests.benchmarks.results import Result


def test_ratio_targets_respect_the_direction_of_better():
    faster = Result(name="loop", value=1.0, baseline=1.05, unit="steps/s", target_ratio=0.95)
    assert faster.ratio == 1.0 / 1.05 and faster.met and faster.target == "≥ 0.95×"
    slower = Result(name="lat", value=2.0, baseline=1.0, unit="s", higher_is_better=False, target_ratio=0.95)
    assert slower.ratio == 0.5 and slower.met is False


def test_a_ceiling_is_met_at_or_below_it_and_recorded():
    ok = Result(name="overhead", value=8.7, baseline=None, unit="s", higher_is_better=False, target_max=10.0)
    assert ok.met and ok.target == "≤ 10 s" and ok.as_json()["met"] is True
    assert Result(name="overhead", value=10.5, baseline=None, unit="s", target_max=10.0).as_json()["met"] is False
    assert Result(name="plain", value=1.0, baseline=None, unit="s").met is None
