"""Value codecs: normalized continuous values <-> token ids, and discrete states <-> token ids.

- `bin`: a uniform bin per value over [-1, 1] (OpenVLA); error at most half a bin width.
- `fast`: the FAST recipe (pi0-FAST): orthonormal DCT along time per dimension, round(coef * scale),
  flatten low frequencies first, one character per integer, then a byte-fallback BPE trained with
  sentencepiece. Trailing zero coefficients (the smooth high frequencies) are trimmed before BPE: fewer
  tokens and shorter strings, and <sep>/<eos> says where the coefficients end.
- states: a binary value is one of two shared tokens, a categorical value the shared token of its class.

Every decoder reports which items are malformed instead of returning zeros (openpi#299, #782, #833).
"""

from __future__ import annotations

import io

import numpy as np
import sentencepiece as spm
from scipy.fft import dct, idct

from unified_action.tokenization.vocabulary import BIN_BASE, BINARY_BASE, CATEGORY_BASE, NUM_BINS

# ---------------------------------------------------------------- bins


def bin_encode(z: np.ndarray) -> np.ndarray:
    """z in [-1, 1] (already clipped) -> bin token ids."""
    idx = np.floor((z + 1.0) * (NUM_BINS / 2.0)).astype(np.int64)
    return BIN_BASE + np.clip(idx, 0, NUM_BINS - 1)


def bin_decode(tokens: np.ndarray) -> np.ndarray:
    """Bin token ids -> bin centres in [-1, 1]; ids outside the bin section must be rejected by the caller."""
    return -1.0 + (tokens - BIN_BASE + 0.5) * (2.0 / NUM_BINS)


def is_bin(tokens: np.ndarray) -> np.ndarray:
    return (tokens >= BIN_BASE) & (tokens < BIN_BASE + NUM_BINS)


# ---------------------------------------------------------------- binary and categorical states


def state_encode(values: np.ndarray, num_classes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """values [..., D] of binary (num_classes 2, threshold 0.5) or categorical dims -> (tokens, clipped mask)."""
    binary = num_classes == 2
    idx = np.where(binary, values >= 0.5, np.rint(values)).astype(np.int64)
    clipped = np.where(binary, (values != 0) & (values != 1), (idx < 0) | (idx >= num_classes))
    idx = np.clip(idx, 0, num_classes - 1)
    return np.where(binary, BINARY_BASE + idx, CATEGORY_BASE + idx), clipped


def state_decode(tokens: np.ndarray, num_classes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """-> (values, ok mask): a token must be a state token of its own dimension's kind and class range."""
    binary = num_classes == 2
    base = np.where(binary, BINARY_BASE, CATEGORY_BASE)
    idx = tokens - base
    ok = (idx >= 0) & (idx < num_classes)
    return idx.astype(np.float64), ok


# ---------------------------------------------------------------- FAST: DCT + BPE

CHAR_BASE = 0x4E00  # CJK ideographs: 20,992 plain code points, no surrogates (openpi#333), no whitespace
MAX_COEF = 10_000  # |quantized coefficient| above this is clipped and counted


def dct_quantize(z: np.ndarray, scale: float) -> tuple[np.ndarray, np.ndarray]:
    """z [B, T, D] in [-1, 1] -> (int coefficients [B, T*D] low frequency first, clipped count [B])."""
    q = np.rint(dct(z, axis=1, norm="ortho") * scale).astype(np.int64).reshape(len(z), -1)
    if np.abs(q).max(initial=0) <= MAX_COEF:  # the usual case: in-range values never reach the limit
        return q, np.zeros(len(z), dtype=np.int64)
    clipped = (np.abs(q) > MAX_COEF).sum(1)
    return np.clip(q, -MAX_COEF, MAX_COEF), clipped


def dct_dequantize(q: np.ndarray, scale: float, horizon: int, dims: int) -> np.ndarray:
    return idct(q.reshape(len(q), horizon, dims) / scale, axis=1, norm="ortho")


def coefficients_to_strings(q: np.ndarray) -> list[str]:
    """One string per row, trailing zero coefficients trimmed; one character per coefficient."""
    n = q.shape[1]
    nonzero = q != 0
    lengths = np.where(nonzero.any(1), n - np.argmax(nonzero[:, ::-1], axis=1), 0)
    text = (q + (CHAR_BASE + MAX_COEF)).astype("<u4").tobytes().decode("utf-32-le")
    return [text[i * n: i * n + k] for i, k in enumerate(lengths.tolist())]


def strings_to_coefficients(strings: list[str], n: int) -> tuple[np.ndarray, np.ndarray]:
    """-> (coefficients [B, n] zero-padded, ok [B]); a string that is too long or holds a foreign char is not ok."""
    q = np.zeros((len(strings), n), dtype=np.int64)
    ok = np.ones(len(strings), dtype=bool)
    lengths = np.fromiter((len(s) for s in strings), dtype=np.int64, count=len(strings))
    codes = np.frombuffer("".join(strings).encode("utf-32-le", "surrogatepass"), dtype="<u4").astype(np.int64)
    values = codes - (CHAR_BASE + MAX_COEF)
    foreign = np.abs(values) > MAX_COEF
    owner = np.repeat(np.arange(len(strings)), lengths)
    ok[owner[foreign]] = False
    ok &= lengths <= n
    keep = ok[owner]
    col = np.arange(len(codes)) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    q[owner[keep], col[keep]] = values[keep]
    return q, ok


def train_bpe(strings: list[str], vocab_size: int) -> bytes:
    """A byte-fallback BPE over coefficient strings; flags from ../shared/STACK.md make the round trip exact."""
    model = io.BytesIO()
    corpus = [s for s in strings if s] or [chr(CHAR_BASE + MAX_COEF)]
    spm.SentencePieceTrainer.Train(
        sentence_iterator=iter(corpus), model_writer=model, model_type="bpe", vocab_size=vocab_size,
        hard_vocab_limit=False,  # small data yields fewer pieces instead of an error
        character_coverage=1.0, byte_fallback=True, normalization_rule_name="identity",
        add_dummy_prefix=False, split_by_whitespace=False, remove_extra_whitespaces=False,
        max_sentence_length=1 << 24,  # in bytes; longer sentences would be dropped silently
        max_sentencepiece_length=64, num_threads=2, minloglevel=2,
    )
    return model.getvalue()


class Bpe:
    """A trained sentencepiece model placed at `start` in the shared id space."""

    def __init__(self, model: bytes, start: int):
        self.sp = spm.SentencePieceProcessor(model_proto=model)
        self.start = start
        self.size = self.sp.get_piece_size()
        # Control and unknown pieces never come out of encode: seeing one in a sequence means it is malformed.
        self.usable = np.array([not (self.sp.is_control(i) or self.sp.is_unknown(i)) for i in range(self.size)])

    def encode(self, strings: list[str]) -> list[list[int]]:
        """Piece ids local to the block (add `start` for global ids)."""
        return self.sp.encode(strings, num_threads=2)

    def owns(self, tokens: np.ndarray) -> np.ndarray:
        local = tokens - self.start
        inside = (local >= 0) & (local < self.size)
        return inside & self.usable[np.where(inside, local, 0)]

    def decode(self, rows: list[list[int]]) -> list[str]:
        """Local piece ids -> strings."""
        return self.sp.decode(rows)
