"""Import: a dataset of your own (NPZ, CSV, or a zip of images) to train on, a run trained
elsewhere (config.json and a safetensors checkpoint), or a model saved by pythae, diffusers
or openai/vdvae, to explore. All are checked in full by the engine (engine/store/uploads.py,
engine/importing.py, engine/adapters) before anything is saved; a refused file changes
nothing, and no uploaded file runs code (weights are read as data only)."""

from __future__ import annotations

import tempfile
from pathlib import Path

import streamlit as st

from app.runs import runs_root
from app.training_jobs import start_training, training_panel
from app.widgets import explain, plain
from engine.adapters import adapt
from engine.adapters.vdvae import PRESETS as VDVAE_PRESETS
from engine.data import list_datasets
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


# what each adapter reads: (label, file name it is saved under, accepted suffixes)
ADAPTER_FILES = {
    "pythae": [("model_config.json", "model_config.json", ["json"]), ("model.pt", "model.pt", ["pt"])],
    "diffusers": [
        ("config.json", "config.json", ["json"]),
        ("weights", "diffusion_pytorch_model.safetensors", ["safetensors"]),
    ],
    "vdvae": [("model-ema.th (or model.th)", "model-ema.th", ["th"])],
}


def adapter_form() -> None:
    """The files of a model saved by pythae, diffusers or vdvae, converted by engine.adapters."""
    c1, c2, c3 = st.columns(3)
    kind = c1.selectbox("Saved by", list(ADAPTER_FILES), key="adapt-kind")
    datasets = list_datasets() + [f"file:{p}" for p in saved_datasets(runs_root())]
    data = c2.selectbox("Explore it on", datasets, key="adapt-data", help="a dataset of the model's input shape")
    options = {}
    if kind == "vdvae":
        options["hps"] = c3.selectbox("Hyperparameters (vdvae's hps)", list(VDVAE_PRESETS), key="adapt-hps")
    files = {}
    columns = st.columns(len(ADAPTER_FILES[kind]))
    for column, (label, saved_as, types) in zip(columns, ADAPTER_FILES[kind]):
        files[saved_as] = column.file_uploader(label, type=types, key=f"adapt-{kind}-{saved_as}")
    name = st.text_input("Run name (optional)", key="adapt-name", help="letters, digits, '.', '_' and '-'")
    if not st.button("Check and convert", type="primary", disabled=None in files.values(), key="adapt-go"):
        return
    try:
        with tempfile.TemporaryDirectory() as folder:
            for saved_as, upload in files.items():
                (Path(folder) / saved_as).write_bytes(upload.getvalue())
            run = adapt(kind, folder, runs_root(), {"name": data, "options": {}}, name.strip(), **options)
    except AtlasError as err:
        st.error(f"Not converted: {plain(str(err))}")
        return
    st.success(f"Converted into run {plain(run.id)} ({plain(run.status.reason)}): pick it in the sidebar.")


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

st.subheader("A model saved by pythae, diffusers or openai/vdvae")
adapter_form()
explain(
    "pythae: the folder `model.save()` wrote, for its VAE-type models on their default networks (a custom "
    "encoder or decoder is pickled, and is refused). diffusers: an `AutoencoderKL`'s config.json and "
    "safetensors weights. vdvae: a checkpoint of openai/vdvae and the hyperparameters it was trained with. "
    "Larger folders (vdvae's ImageNet models) go through the command line: "
    "`latent-atlas adapt KIND FOLDER --data NAME`."
)
