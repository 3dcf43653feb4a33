"""The console's templates on their own, for what a test server cannot show: a node as a
cluster engine (Slurm) reports it."""

from types import SimpleNamespace

import pytest

from suanli.web.render import engine_tone, templates

BADGE = '{% import "macros.html" as ui with context %}{{ ui.engine_state(node) }}'


def node(state: str, reason: str = "", available: bool = True) -> SimpleNamespace:
    return SimpleNamespace(engine_state=state, engine_reason=reason, available=available)


@pytest.mark.parametrize(
    ("state", "available", "tone"),
    [
        ("idle", True, "ok"),
        ("mixed", True, "ok"),
        ("allocated", True, "ok"),
        ("mixed+drain", False, "wait"),
        ("idle+draining", False, "wait"),
        ("down+not_responding", False, "bad"),
        ("idle+not_responding", False, "bad"),
        ("idle+maintenance", False, "bad"),
    ],
)
def test_engine_states_have_the_tones_of_what_they_mean(
    state: str, available: bool, tone: str
) -> None:
    assert engine_tone(state, available) == tone


def test_a_down_node_shows_its_state_and_reason_and_a_local_one_nothing() -> None:
    template = templates.env.from_string(BADGE)
    shown = template.render(
        node=node("down+not_responding", "Not responding <slurmd>", available=False),
        t=lambda key, **params: key,
    )
    assert 'class="badge tone-bad"' in shown and ">down+not_responding</span>" in shown
    assert "Not responding &lt;slurmd&gt;" in shown  # escaped, as every value
    assert template.render(node=node(""), t=lambda key, **params: key).strip() == ""
