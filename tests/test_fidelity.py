"""benchmarks/fidelity.py (a), small and fast: seglab's ViT and the notebook-style model, given the same initial
weights and the same batches with dropout off, train to the same losses step by step."""

import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.fidelity import copy_notebook_weights, make_pair, step_by_step  # noqa: E402

TINY = dict(embed_size=32, num_blocks=2, num_heads=4, patch_size=8)


def test_copied_weights_give_the_same_logits():
    naive, ours = make_pair(32, seed=3, dropout=0.0, **TINY)
    x = torch.rand(2, 3, 32, 32)
    naive.eval()
    ours.eval()
    with torch.no_grad():
        assert torch.allclose(naive(x), ours(x), atol=1e-5, rtol=1e-5)
    assert copy_notebook_weights  # the mapping every test here relies on


@pytest.mark.parametrize("double", [False, True])
def test_losses_equal_step_by_step(double):
    rows = step_by_step(steps=6, batch=4, image_size=32, seed=0, double=double, **TINY)
    assert len(rows) == 6 and rows[-1]["notebook"] < rows[0]["notebook"]  # it trains
    worst = max(r["rel_diff"] for r in rows)
    assert worst < (1e-4 if not double else 1e-10), rows
