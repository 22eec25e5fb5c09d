"""Import: a dataset of your own (NPZ, CSV, or a zip of images) to train on, or a run
trained elsewhere (config.json and a safetensors checkpoint) to explore. Both are checked
in full by the engine (engine/store/uploads.py, engine/importing.py) before anything
is saved; a refused file changes nothing."""

from __future__ import annotations

import streamlit as st

from app.runs import runs_root
from app.training_jobs import start_training, training_panel
from app.widgets import explain, plain
from engine.errors import AtlasError
from engine.importing import import_run
from engine.limits import MAX_UPLOAD_MB
from engine.store.uploads import TRAIN_PRESETS, save_dataset, saved_datasets, suggest_name

SAVED_KEY = "import_saved"  # the dataset this session saved last
JOB_KEY = "import_job"  # the training job this session started on it

st.title("Import")
st.caption(f"Uploads of up to {MAX_UPLOAD_MB} MB are saved under the runs root {plain(str(runs_root()))}.")


def dataset_form() -> None:
    upload = st.file_uploader(
        "Dataset file",
        type=["npz", "csv", "zip"],
        key="import-data",
        help="NPZ: numpy.savez(path, x=examples, y=labels); CSV: a table with a header row; "
        "zip: PNG or JPEG images of one size, one folder per class",
    )
    if upload is None:
        return
    left, right = st.columns(2)
    name = left.text_input(
        "Save as",
        suggest_name(upload.name),
        key=f"import-name-{upload.file_id}",
        help="letters, digits, '.', '_' and '-'",
    )
    allow_missing = right.checkbox("A table's empty cells and NaN are missing values", key="import-missing")
    overwrite = right.checkbox("Replace a saved dataset of this name", key="import-overwrite")
    if not st.button("Check and save", type="primary", key="import-save"):
        return
    try:
        saved = save_dataset(
            runs_root(), name, upload.getvalue(), upload.name, overwrite=overwrite, allow_missing=allow_missing
        )
    except AtlasError as err:
        st.error(f"Not saved: {plain(str(err))}")
        return
    st.session_state[SAVED_KEY] = saved
    st.session_state[JOB_KEY] = None


def train_on_saved() -> None:
    saved = st.session_state.get(SAVED_KEY)
    if saved is None:
        return
    what = f"{saved.n:,} {'rows' if saved.kind == 'tabular' else 'images'} of shape {list(saved.shape)}"
    classes = f", {len(saved.classes)} classes" if saved.classes else ""
    missing = f", {saved.missing:,} missing values" if saved.missing else ""
    st.success(f"Saved {plain(saved.path.name)}: {what}{classes}{missing}. Train on it from a terminal:")
    st.code(saved.train_command(runs_root()), language="bash")
    left, right = st.columns(2)
    preset = left.selectbox(
        "Preset",
        TRAIN_PRESETS[saved.kind],
        key="import-preset",
        help="a recipe whose model takes its input shape from the data",
    )
    steps = right.number_input("Steps", 10, 1_000_000, 2000, step=100, key="import-steps")
    if st.button("Train on it", key="import-train"):
        try:
            st.session_state[JOB_KEY] = start_training(preset, {"train.steps": int(steps)}, dataset=saved.dataset)
        except AtlasError as err:
            st.error(f"Not started: {plain(str(err))}")
    training_panel(st.session_state.get(JOB_KEY), ["train/loss", "test/elbo"])


def run_form() -> None:
    left, right = st.columns(2)
    config = left.file_uploader("config.json", type=["json"], key="import-config")
    checkpoint = right.file_uploader("Checkpoint", type=["safetensors"], key="import-checkpoint")
    name = st.text_input("Run name (optional)", key="import-run-name", help="letters, digits, '.', '_' and '-'")
    if not st.button(
        "Check and import", type="primary", disabled=config is None or checkpoint is None, key="import-run"
    ):
        return
    try:
        run = import_run(runs_root(), config.getvalue(), checkpoint.getvalue(), name.strip())
    except AtlasError as err:
        st.error(f"Not imported: {plain(str(err))}")
        return
    st.success(f"Imported as run {plain(run.id)}: pick it in the sidebar's model list.")


st.subheader("A dataset")
dataset_form()
train_on_saved()
saved = saved_datasets(runs_root())
if saved:
    st.caption("Saved datasets: " + ", ".join(plain(p.name) for p in saved))
explain(
    "A dataset is checked before it is saved: its format must match its name, it must hold at "
    "least one example, images must share one size (at most 1024 pixels a side) with values in "
    "[0, 1] or 0..255, and no value may be NaN or infinite (a table's missing values are allowed "
    "when you say so). A zip of images is stored as an NPZ of 8-bit images, with the folder names "
    "as class labels. Nothing is saved over another dataset unless you ask.",
    title="What is checked?",
)

st.subheader("A run trained elsewhere")
run_form()
explain(
    "A run is its `config.json` and a `.safetensors` checkpoint, as `latent-atlas publish` writes "
    "them. The config must name a known model family with sizes that fit in memory and a dataset "
    "that ships with the app or was uploaded above; the checkpoint must be safetensors (a pickle "
    "can run code, so it is never opened), with exactly the tensors, shapes and dtypes of the "
    "model the config builds, and finite values. Only the weights are kept: an imported run can "
    "be explored but not resumed.",
    title="What is checked?",
)
