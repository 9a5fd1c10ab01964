"""Fit rules (arbstr.routing.fit): context, images, tools; unknown metadata fits."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from arbstr.config import ModelInfo
from arbstr.routing.fit import Needs, misfit


def test_unknown_metadata_fits() -> None:
    needs = Needs(10**6, 10**5, images=3, tools=2)
    assert misfit("m", None, needs) is None
    assert misfit("m", ModelInfo(), needs) is None


def test_context_counts_prompt_and_requested_output() -> None:
    info = ModelInfo(context_length=8192)
    assert misfit("m", info, Needs(8000, 192)) is None
    why = misfit("m", info, Needs(8000, 193))
    assert why is not None and why.code == "context_length_exceeded"
    assert "'m'" in why.message and "8192" in why.message and "8193" in why.message


def test_images_need_an_image_modality() -> None:
    text_only = ModelInfo(input_modalities=("text",))
    why = misfit("m", text_only, Needs(10, images=1))
    assert why is not None and why.code == "unsupported_input" and "'m'" in why.message
    assert misfit("m", text_only, Needs(10)) is None
    assert misfit("m", ModelInfo(input_modalities=("text", "image")), Needs(10, images=2)) is None


def test_tools_rule_out_only_a_model_known_without_them() -> None:
    assert misfit("m", ModelInfo(tools=None), Needs(10, tools=1)) is None
    assert misfit("m", ModelInfo(tools=True), Needs(10, tools=1)) is None
    why = misfit("m", ModelInfo(tools=False), Needs(10, tools=1))
    assert why is not None and why.code == "unsupported_input"
    assert misfit("m", ModelInfo(tools=False), Needs(10)) is None


@given(st.integers(1, 10**6), st.integers(0, 10**6), st.integers(1, 10**6))
def test_context_rule_is_exactly_the_sum(prompt: int, out: int, limit: int) -> None:
    why = misfit("m", ModelInfo(context_length=limit), Needs(prompt, out))
    assert (why is None) == (prompt + out <= limit)
