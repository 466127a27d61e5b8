"""How ``tunelab data inspect`` shows data: samples with their loss mask, text histograms of lengths."""

from __future__ import annotations

from tunelab.data.tokenize import IGNORE, Encoded


def render_mask(e: Encoded, tok, width: int = 2000) -> str:
    """The sample's text with trained spans wrapped in [[ ]] (what the loss sees)."""
    out, trained_prev = [], False
    labels = {t + 1 for t, y in enumerate(e.targets) if y != IGNORE}  # positions whose token is a label
    for pos, tid in enumerate(e.input_ids):
        trained = pos in labels
        if trained != trained_prev:
            out.append("[[" if trained else "]]")
            trained_prev = trained
        out.append(tok.decode([tid]))
    if trained_prev:
        out.append("]]")
    text = "".join(out)
    return text if len(text) <= width else text[:width] + " ..."


def histogram(lengths: list[int], bins: int = 8, bar: int = 40) -> list[str]:
    """A text histogram of token lengths."""
    if not lengths:
        return ["  (empty)"]
    lo, hi = min(lengths), max(lengths)
    step = max(1, -(-(hi - lo + 1) // bins))
    counts = [0] * bins
    for n in lengths:
        counts[min(bins - 1, (n - lo) // step)] += 1
    top = max(counts)
    return [f"  {lo + i * step:5d}-{lo + (i + 1) * step - 1:<5d} {'#' * round(bar * c / top):{bar}s} {c}"
            for i, c in enumerate(counts) if c]
