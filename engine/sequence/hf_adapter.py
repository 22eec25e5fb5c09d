"""A causal language model from the `transformers` library as a sequential predictor, with
the prompt formats of seed000 §4.3:

    <instruction> <observed data> <sampled data>
    "Provided are independent, identically distributed tosses of a coin, which flips 1 with
     probability p where p is unknown: 1,0,0,1,0,0,1,"

The predictive of the next observation is the model's next-token distribution after the
prompt (which ends with a separator), restricted to the tokens of the observation values
("0" and "1") and renormalised. The state is the model's `past_key_values` cache: `start`
runs the model once over the prompts, `update` feeds the tokens of one value and one
separator through the cache.

The model is loaded only from a local directory the user names (`local_files_only=True`,
nothing is downloaded and there is no default path); `transformers` is imported only when
one is loaded, so the rest of the project works without it. Bernoulli data only: a
Gaussian value ("1.3") is several tokens in a language model's vocabulary, so its
predictive is not one next-token distribution.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from engine.errors import AtlasError
from engine.sequence.predictor import BernoulliPredictive

# seed000 §4.3: the instruction states the likelihood and that the data are i.i.d.
BERNOULLI_INSTRUCTION = (
    "Provided are independent, identically distributed tosses of a coin, which flips 1 with probability p "
    "where p is unknown:"
)
SEPARATORS = (",", ";")


@dataclass
class LMState:
    """The language model's cache after each prompt, and its logits for the values there."""

    past: Any  # the model's past_key_values (a transformers Cache), extended in place by `update`
    value_logits: torch.Tensor  # (batch, 2): next-token logits of "0" and "1"


class HFPredictor:
    """p_M(z_{t+1} | z_1..t) of a causal LM prompted with the data (Bernoulli, seed000 §4.3).

    Every prompt of a batch has the same number of tokens (one token per value, the same
    separator), so no padding is needed. `update` extends the cache in place (as
    `transformers` caches do): a state is used up by the update that follows it.
    """

    family = "bernoulli"

    def __init__(self, model, tokenizer, separator: str = ",", instruction: str = BERNOULLI_INSTRUCTION):
        if separator not in SEPARATORS:
            raise AtlasError(f"the separator must be one of {SEPARATORS} (seed000 §4.3), got {separator!r}")
        self.model, self.tokenizer = model.eval(), tokenizer
        self.prefix = self._ids(instruction + " ")
        self.separator = self._ids(separator)
        self.value_ids = torch.tensor([self._single_token(v) for v in ("0", "1")])  # (2,)
        # transformers 5 renamed the forward argument past_key_values to cache
        self.cache_arg = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"

    def _ids(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=False)

    def _single_token(self, text: str) -> int:
        ids = self._ids(text)
        if len(ids) != 1:
            raise AtlasError(
                f"the tokenizer splits the value {text!r} into {len(ids)} tokens; the adapter needs "
                "one token per observation value"
            )
        return ids[0]

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def prompt_ids(self, context: torch.Tensor) -> torch.Tensor:
        """context: (batch, n) of 0/1 -> token ids (batch, P + n (1 + S)): the instruction, then
        every value followed by the separator."""
        values = self.value_ids[context.long()].unsqueeze(-1)  # (batch, n, 1)
        sep = torch.tensor(self.separator).expand(*context.shape, -1)  # (batch, n, S)
        body = torch.cat([values, sep], -1).flatten(1)
        prefix = torch.tensor(self.prefix).expand(context.shape[0], -1)
        return torch.cat([prefix, body], 1)

    @torch.no_grad()
    def _run(self, ids: torch.Tensor, past=None) -> LMState:
        out = self.model(input_ids=ids.to(self.device), use_cache=True, **{self.cache_arg: past})
        logits = out.logits[:, -1].float()  # (batch, vocab)
        past = out["cache"] if "cache" in out else out.past_key_values
        return LMState(past, logits[:, self.value_ids.to(logits.device)].cpu())

    def start(self, context: torch.Tensor) -> LMState:
        return self._run(self.prompt_ids(context))

    def predictive(self, state: LMState) -> BernoulliPredictive:
        return BernoulliPredictive(torch.softmax(state.value_logits, -1)[:, 1])

    def update(self, state: LMState, z: torch.Tensor) -> LMState:
        """Feed the value z: (batch,) and a separator: 1 + S tokens through the cache."""
        return self._run(self.prompt_ids(z.unsqueeze(-1))[:, len(self.prefix) :], state.past)


def load_hf_predictor(
    path: str | Path, separator: str = ",", instruction: str = BERNOULLI_INSTRUCTION, device: str = "cpu"
) -> HFPredictor:
    """A causal LM and its tokenizer from the local directory `path` (as written by
    `save_pretrained`), as a Bernoulli `HFPredictor`. Never downloads."""
    path = Path(path).expanduser()
    if not path.is_dir():
        raise AtlasError(
            f"no model directory at {path}: give the local folder of a causal language model "
            "(config.json, weights and tokenizer files, as save_pretrained writes them)"
        )
    try:
        from transformers import AutoModelForCausalLM, AutoTokenizer
    except ImportError as err:
        raise AtlasError("the language-model adapter needs the transformers package: pip install transformers") from err
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        model = AutoModelForCausalLM.from_pretrained(path, local_files_only=True)
    except (OSError, ValueError) as err:
        raise AtlasError(f"cannot load a causal language model from {path}: {err}") from err
    return HFPredictor(model.to(device), tokenizer, separator=separator, instruction=instruction)
