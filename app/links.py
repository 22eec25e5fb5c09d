"""Links that open a view: the model, its checkpoint and the page's main choice in the
URL's query string, e.g. `/facet_clusters?run=facet-digits-mfcvae&step=4000&facet=1`.

A link sets the tab's choices (kept in st.session_state, see app/state.py) when the tab
first loads; from then on the choices are what the user picks and the URL follows them,
so that the address bar can be copied and sent at any moment. A run, checkpoint or value
that a link names but that does not exist is named in a warning and replaced by the
default; a link never raises.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import streamlit as st

from app.runs import RunChoice, checkpoint_steps, run_slug

RUN_KEY, STEP_KEY = "run_key", "checkpoint_step"  # the sidebar's model and checkpoint in st.session_state
RUN, STEP = "run", "step"  # their query parameters; the step is left out for the latest checkpoint
LATEST = "latest"


def open_linked_run(choices: list[RunChoice]) -> None:
    """On the tab's first load (no model chosen yet), choose the run and checkpoint the link
    names: by run id, by `demo/<id>` or `runs/<id>`, or by name (`digits-hvae`: the demo, or
    else the newest run of that name). Without a link, the first run at its latest checkpoint."""
    if RUN_KEY in st.session_state or not choices:
        return
    choice = linked_run(choices)
    st.session_state[RUN_KEY] = choice.key
    step = linked_step(choice)
    if step is not None:  # the latest is the picker's first option; set to None it would show nothing chosen
        st.session_state[STEP_KEY] = step


def linked_run(choices: list[RunChoice]) -> RunChoice:
    text = st.query_params.get(RUN)
    if text is None:
        return choices[0]
    for same in (lambda c: c.key == text, lambda c: c.info.id == text, lambda c: run_slug(c.info.id) == text):
        found = next((c for c in choices if same(c)), None)
        if found is not None:
            return found
    st.warning(
        f"The link asks for the model {quoted(text)}, which is not one of the models here; "
        f"showing {quoted(choices[0].label)} instead."
    )
    return choices[0]


def linked_step(choice: RunChoice) -> int | None:
    text = st.query_params.get(STEP)
    if text is None or text == LATEST:
        return None
    steps = checkpoint_steps(choice)
    if re.fullmatch(r"\d{1,12}", text) and int(text) in steps:
        return int(text)
    have = ", ".join(f"{s:,}" for s in sorted(steps)) or "none"
    st.warning(
        f"The link asks for checkpoint step {quoted(text)} of {quoted(choice.label)}, whose checkpoints are at "
        f"steps {have}; showing its latest instead."
    )
    return None


def show_run(choice: RunChoice, step: int | None, choices: list[RunChoice]) -> None:
    """Write the chosen run (its id, or its key where a demo and a run share the id) and
    checkpoint into the URL."""
    same_id = sum(c.info.id == choice.info.id for c in choices)
    write(RUN, choice.info.id if same_id == 1 else choice.key)
    if step is None:
        drop(STEP)
    else:
        write(STEP, step)


def open_run(key: str) -> None:
    """Choose run `key` at its latest checkpoint. A button's on_click: it runs before the
    rerun draws the sidebar's model picker, which then shows the run and writes the URL."""
    st.session_state[RUN_KEY] = key
    st.session_state.pop(STEP_KEY, None)  # the latest checkpoint: the picker's first option


def follow(param: str, key: str, options: Sequence, default) -> None:
    """Declare a page's main choice: the widget with session key `key`, offering `options`.
    When the widget is first drawn in this tab, the link's `param` sets it (or, if it is not
    one of the options, a warning and `default`); from then on the URL follows it. A value
    left from another model that is not among the options returns to `default`. Call this
    just before drawing the widget, which must not set a default value of its own."""
    if key not in st.session_state and param in st.query_params:
        text = st.query_params[param]
        value = option(text, options)
        if value is None:
            st.warning(
                f"The link asks for {param} {quoted(text)}, which is not one of {span(options)}; "
                f"showing {quoted(str(default))} instead."
            )
            value = default
        st.session_state[key] = value
    elif key in st.session_state and st.session_state[key] not in options:
        st.session_state[key] = default
    write(param, st.session_state.get(key, default))


def named(param: str) -> bool:
    """Whether the URL names `param` (e.g. the HMC page's test input, which also chooses
    the model's posterior over the toy densities)."""
    return param in st.query_params


def drop(param: str) -> None:
    """Take `param` out of the URL: a choice the page no longer shows."""
    if param in st.query_params:
        del st.query_params[param]


def write(param: str, value) -> None:
    if st.query_params.get(param) != str(value):
        st.query_params[param] = str(value)


def option(text: str, options: Sequence):
    """The option written as `text` in a URL, or None."""
    if isinstance(options, range):
        return int(text) if re.fullmatch(r"-?\d{1,12}", text) and int(text) in options else None
    return next((o for o in options if str(o) == text), None)


def span(options: Sequence) -> str:
    if isinstance(options, range):
        return f"{options.start}–{options.stop - 1}" if len(options) else "nothing"
    return ", ".join(quoted(str(o)) for o in options)


def quoted(text: str, limit: int = 80) -> str:
    """Text from a URL as inline code, so that it shows as typed (no links or formatting)."""
    text = text if len(text) <= limit else text[: limit - 1] + "…"
    return "`" + text.replace("`", "'") + "`"
