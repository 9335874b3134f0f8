r"""The problems of the CDAT recipe matrix (:mod:`cdat_core.lab.recipes`), small and float32.

Four full-batch classification problems, all at PyTorch's default initialisation (every
``Linear``/``Conv2d`` weight and bias :math:`\sim U(\pm 1/\sqrt{\text{fan-in}})`, embeddings
:math:`N(0, 1)`, layer norms 1 and 0), the one a new user gets from PyTorch or equinox:

- ``tanh_mlp_sq``: a tanh MLP with squared loss on the one-hot digits labels;
- ``relu_mlp_ce``: a ReLU MLP with softmax cross-entropy on digits;
- ``cnn_ce``: a ReLU CNN (two 3x3 convolutions, 2x2 average pooling, a dense head) with
  cross-entropy on the 8x8 digits images;
- ``char_transformer_ce``: a pre-norm causal character Transformer (the paper's NanoLM at CPU
  scale) with next-character cross-entropy on :func:`char_corpus`, text generated in code.

Digits are scikit-learn's bundled set (pixels / 16); nothing is downloaded. The data is fixed
and the seed draws the initial weights only. :data:`SIZES` holds the ``"test"`` sizes (the
CI test, seconds on two CPU cores) and the ``"bench"`` sizes (the benchmark matrix).
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from cdat_core.lab.problems import _conv3x3

__all__ = ["PROBLEM_NAMES", "SIZES", "RecipeProblem", "char_corpus", "recipe_problem"]

PyTree = Any
PROBLEM_NAMES = ("tanh_mlp_sq", "relu_mlp_ce", "cnn_ce", "char_transformer_ce")


class RecipeProblem(NamedTuple):
    """A float32 problem of the matrix: ``loss(params, inputs, targets)`` and its data.

    Attributes:
      name: one of :data:`PROBLEM_NAMES`.
      init: ``seed -> params`` (PyTorch default initialisation, float32).
      predict: ``(params, inputs) -> logits``; the last axis indexes the classes.
      loss: ``(params, inputs, targets) -> scalar``.
      inputs: the full batch (digits pixels / 16, or character ids).
      targets: integer labels (or next characters), int32.
      num_steps: full-batch steps of a run.
      description: the problem in words.
    """

    name: str
    init: Callable[[int], PyTree]
    predict: Callable[[PyTree, jax.Array], jax.Array]
    loss: Callable[[PyTree, jax.Array, jax.Array], jax.Array]
    inputs: jax.Array
    targets: jax.Array
    num_steps: int
    description: str


def _torch_dense(rng: np.random.Generator, shape: tuple[int, ...]) -> dict[str, jax.Array]:
    """PyTorch's default ``Linear`` / ``Conv2d`` init: W, b ~ U(±1/√fan_in), float32."""
    bound = 1.0 / math.sqrt(math.prod(shape[:-1]))
    w, b = rng.uniform(-bound, bound, shape), rng.uniform(-bound, bound, shape[-1:])
    return {"w": jnp.asarray(w, jnp.float32), "b": jnp.asarray(b, jnp.float32)}


def _cross_entropy(logits: jax.Array, targets: jax.Array) -> jax.Array:
    logp = jax.nn.log_softmax(logits, axis=-1)
    return -jnp.mean(jnp.take_along_axis(logp, targets[..., None], axis=-1))


def _squared(outputs: jax.Array, targets: jax.Array) -> jax.Array:
    onehot = jax.nn.one_hot(targets, outputs.shape[-1], dtype=outputs.dtype)
    return 0.5 * jnp.mean(jnp.sum((outputs - onehot) ** 2, axis=-1))


def _affine(layer: dict[str, jax.Array], x: jax.Array) -> jax.Array:
    """``x @ w + b`` with the bias broadcast explicitly (rank promotion may raise)."""
    return x @ layer["w"] + _lead(layer["b"], x.ndim)


def _lead(v: jax.Array, ndim: int) -> jax.Array:
    return jnp.expand_dims(v, tuple(range(ndim - v.ndim)))


def _mlp_predict(activation: Callable[[jax.Array], jax.Array], params: PyTree, x: jax.Array):
    for layer in params[:-1]:
        x = activation(_affine(layer, x))
    return _affine(params[-1], x)


def _cnn_predict(params: PyTree, x: jax.Array) -> jax.Array:
    h = x.reshape(x.shape[0], 8, 8, 1)
    for layer in params["conv"]:
        h = jax.nn.relu(_conv3x3(h, layer["w"]) + _lead(layer["b"], 4))
        n, height, width, c = h.shape
        h = h.reshape(n, height // 2, 2, width // 2, 2, c).mean(axis=(2, 4))
    return _affine(params["head"], h.reshape(h.shape[0], -1))


def _layer_norm(p: dict[str, jax.Array], x: jax.Array) -> jax.Array:
    mean = jnp.mean(x, axis=-1, keepdims=True)
    var = jnp.mean((x - mean) ** 2, axis=-1, keepdims=True)
    return (x - mean) * jax.lax.rsqrt(var + 1e-5) * _lead(p["scale"], 3) + _lead(p["bias"], 3)


def _transformer_predict(heads: int, params: PyTree, tokens: jax.Array) -> jax.Array:
    n, t = tokens.shape
    h = params["embed"][tokens] + params["pos"][None, :t]
    dim = h.shape[-1]
    causal = jnp.tril(jnp.ones((t, t), bool))
    for p in params["blocks"]:
        x = _layer_norm(p["ln1"], h)
        qkv = _affine(p["qkv"], x).reshape(n, t, 3, heads, dim // heads)
        q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]
        logits = jnp.einsum("nthd,nshd->nhts", q, k) / math.sqrt(dim // heads)
        weights = jax.nn.softmax(jnp.where(causal[None, None], logits, -1e9), axis=-1)
        mixed = jnp.einsum("nhts,nshd->nthd", weights, v).reshape(n, t, dim)
        h = h + _affine(p["out"], mixed)
        h = h + _affine(p["down"], jax.nn.gelu(_affine(p["up"], _layer_norm(p["ln2"], h))))
    h = _layer_norm(params["ln"], h)
    return _affine(params["unembed"], h)


def char_corpus(num_chars: int, seed: int = 0) -> str:
    """English-like text from a small random grammar (deterministic; nothing downloaded).

    Sentences "subject verb object [adverb]." from fixed word lists: a character model can
    learn the words, their order and the punctuation, not which word comes next.

    Args:
      num_chars: length of the text returned.
      seed: NumPy seed of the word choices.

    Returns:
      The text, lower case, exactly ``num_chars`` characters.

    Example:
      >>> from cdat_core.lab import recipe_problems as rp
      >>> text = rp.char_corpus(200)
      >>> len(text), text == rp.char_corpus(200), len(set(text)) < 30
      (200, True, True)
    """
    rng = np.random.default_rng(seed)
    words = [
        "the cat,a dog,my old friend,the small bird,a child,the teacher".split(","),
        "sees,likes,finds,chases,hears,draws,carries".split(","),
        "the red ball,a box,the tall tree,some fish,the river,a green hat".split(","),
        ",, quickly, at night, again, with care, in the park".split(","),
    ]
    parts: list[str] = []
    size = 0
    while size < num_chars:
        sentence = " ".join(w[rng.integers(len(w))] for w in words[:3])
        sentence = sentence + words[3][rng.integers(len(words[3]))] + ". "
        parts.append(sentence)
        size += len(sentence)
    return "".join(parts)[:num_chars]


#: Problem sizes: "test" (the CI test: seconds) and "bench" (the benchmark matrix).
SIZES: dict[str, dict[str, dict[str, Any]]] = {
    "test": {
        "tanh_mlp_sq": {"hidden": (32, 32), "examples": 256, "steps": 150},
        "relu_mlp_ce": {"hidden": (32, 32), "examples": 256, "steps": 150},
        "cnn_ce": {"channels": (8, 16), "examples": 128, "steps": 150},
        "char_transformer_ce": {
            "dim": 32,
            "heads": 2,
            "layers": 1,
            "seqs": 16,
            "len": 32,
            "steps": 100,
        },
    },
    "bench": {
        "tanh_mlp_sq": {"hidden": (128, 128), "examples": 512, "steps": 200},
        "relu_mlp_ce": {"hidden": (128, 128), "examples": 512, "steps": 200},
        "cnn_ce": {"channels": (8, 16), "examples": 512, "steps": 200},
        "char_transformer_ce": {
            "dim": 32,
            "heads": 4,
            "layers": 2,
            "seqs": 32,
            "len": 32,
            "steps": 300,
        },
    },
}


def _digits(examples: int) -> tuple[jax.Array, jax.Array]:
    from sklearn.datasets import load_digits

    data = load_digits()
    x = jnp.asarray(np.asarray(data.data[:examples]) / 16.0, jnp.float32)
    return x, jnp.asarray(data.target[:examples], jnp.int32)


def _mlp_init(sizes: Sequence[int]) -> Callable[[int], PyTree]:
    def init(seed: int) -> PyTree:
        rng = np.random.default_rng(seed)
        return [_torch_dense(rng, (a, b)) for a, b in itertools.pairwise(sizes)]

    return init


def _cnn_init(channels: Sequence[int]) -> Callable[[int], PyTree]:
    def init(seed: int) -> PyTree:
        rng = np.random.default_rng(seed)
        c1, c2 = channels
        return {
            "conv": [_torch_dense(rng, (3, 3, 1, c1)), _torch_dense(rng, (3, 3, c1, c2))],
            "head": _torch_dense(rng, (4 * c2, 10)),
        }

    return init


def _transformer_init(vocab: int, dim: int, layers: int, length: int):
    def norm() -> dict[str, jax.Array]:
        return {"scale": jnp.ones((dim,), jnp.float32), "bias": jnp.zeros((dim,), jnp.float32)}

    def init(seed: int) -> PyTree:
        rng = np.random.default_rng(seed)
        blocks = [
            {
                "ln1": norm(),
                "qkv": _torch_dense(rng, (dim, 3 * dim)),
                "out": _torch_dense(rng, (dim, dim)),
                "ln2": norm(),
                "up": _torch_dense(rng, (dim, 4 * dim)),
                "down": _torch_dense(rng, (4 * dim, dim)),
            }
            for _ in range(layers)
        ]
        return {
            "embed": jnp.asarray(rng.standard_normal((vocab, dim)), jnp.float32),
            "pos": jnp.asarray(rng.standard_normal((length, dim)), jnp.float32),
            "blocks": blocks,
            "ln": norm(),
            "unembed": _torch_dense(rng, (dim, vocab)),
        }

    return init


@functools.cache
def recipe_problem(name: str, size: str = "test") -> RecipeProblem:
    """One problem of the matrix at a size of :data:`SIZES` (cached: the same object back).

    Args:
      name: one of :data:`PROBLEM_NAMES`.
      size: ``"test"`` (seconds on two CPU cores) or ``"bench"``.

    Returns:
      A :class:`RecipeProblem`.

    Example:
      >>> from cdat_core.lab import recipe_problems as rp
      >>> p = rp.recipe_problem("relu_mlp_ce")
      >>> w = p.init(0)
      >>> p.inputs.shape, p.loss(w, p.inputs, p.targets).dtype, float(abs(w[0]["b"]).max()) < 1/8
      ((256, 64), dtype('float32'), True)
    """
    if name not in PROBLEM_NAMES or size not in SIZES:
        raise ValueError(f"unknown problem {name!r} or size {size!r}: {PROBLEM_NAMES}, {SIZES}")
    cfg = SIZES[size][name]
    predict: Callable[[PyTree, jax.Array], jax.Array]
    out_loss: Callable[[jax.Array, jax.Array], jax.Array]
    if name == "char_transformer_ce":
        text = char_corpus(cfg["seqs"] * (cfg["len"] + 1))
        vocab = sorted(set(char_corpus(100_000)))
        ids = np.asarray([vocab.index(c) for c in text], np.int32).reshape(cfg["seqs"], -1)
        predict = functools.partial(_transformer_predict, cfg["heads"])
        init = _transformer_init(len(vocab), cfg["dim"], cfg["layers"], cfg["len"])
        inputs, targets = jnp.asarray(ids[:, :-1]), jnp.asarray(ids[:, 1:])
        what = (
            f"char Transformer ({cfg['layers']} blocks, width {cfg['dim']}, {cfg['heads']} "
            f"heads), {cfg['seqs']} x {cfg['len']} chars"
        )
        out_loss = _cross_entropy
    else:
        inputs, targets = _digits(cfg["examples"])
        if name == "cnn_ce":
            predict, init = _cnn_predict, _cnn_init(cfg["channels"])
            what = f"ReLU CNN (channels {cfg['channels']}) on {cfg['examples']} digits"
        else:
            act = jnp.tanh if name == "tanh_mlp_sq" else jax.nn.relu
            predict = functools.partial(_mlp_predict, act)
            init = _mlp_init((64, *cfg["hidden"], 10))
            widths = "-".join(map(str, (64, *cfg["hidden"], 10)))
            kind = "tanh" if name == "tanh_mlp_sq" else "ReLU"
            what = f"{kind} MLP {widths} on {cfg['examples']} digits"
        out_loss = _squared if name == "tanh_mlp_sq" else _cross_entropy
        what += ", squared loss" if name == "tanh_mlp_sq" else ", cross-entropy"

    def loss(params: PyTree, x: jax.Array, y: jax.Array) -> jax.Array:
        return out_loss(predict(params, x), y)

    return RecipeProblem(name, init, predict, loss, inputs, targets, cfg["steps"], what)
