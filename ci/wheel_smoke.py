"""Smoke test of an installed dlrmx wheel (ci/wheel.sh runs it in a fresh venv, outside the
checkout): the package comes from the venv, the native library loads under this torch, and the
main paths give torch's numbers: a lookup with its gradient, a fused optimizer step, the fused
interaction, a LAMB step, and a few training steps of `python -m dlrmx.train`."""

import os
import subprocess
import sys
import tempfile

import torch

import dlrmx
import dlrmx.nn as dn
from dlrmx.info import info
from dlrmx.models.interaction import dot_interaction, dot_interaction_reference
from dlrmx.optim import Lamb

site = os.path.dirname(os.path.dirname(dlrmx.__file__))
assert site.endswith("site-packages") and sys.prefix in dlrmx.__file__, dlrmx.__file__
print("\n".join(f"  {k:20s} {v}" for k, v in info().items()))
torch.manual_seed(0)

# nn.EmbeddingBag: forward and weight gradient equal torch's, with duplicates and an empty bag.
ref = torch.nn.EmbeddingBag(1000, 16, mode="sum")
bag = dn.EmbeddingBag(1000, 16, mode="sum")
bag.load_state_dict(ref.state_dict())
ids, offsets = torch.tensor([3, 3, 999, 0, 17]), torch.tensor([0, 2, 2])
grad = torch.randn(3, 16)
ref(ids, offsets).backward(grad)
out = bag(ids, offsets)
out.backward(grad)
torch.testing.assert_close(out, ref(ids, offsets))
torch.testing.assert_close(bag.weight.grad, ref.weight.grad)

# A fused SGD step equals torch's SGD on the same lookup.
ebc = dn.EmbeddingBagCollection([(1000, 16)] * 2, optimizer=dn.SGD(lr=0.1))
w0 = [w.detach().clone() for w in ebc.weights]
ids2, off2 = torch.tensor([1, 2, 2, 5]), torch.tensor([0, 1, 2, 3, 4])
g2 = torch.randn(2, 32)
ebc(ids2, offsets=off2).backward(g2)
for t, w in enumerate(ebc.weights):
    p = w0[t].clone().requires_grad_()
    bags = ids2[t * 2:(t + 1) * 2]
    torch.nn.functional.embedding_bag(bags, p, torch.tensor([0, 1]), mode="sum").backward(
        g2[:, t * 16:(t + 1) * 16])
    torch.testing.assert_close(w.detach(), w0[t] - 0.1 * p.grad)

# The fused interaction equals the reference DLRM's formulation.
dense, emb = torch.randn(5, 8), torch.randn(5, 3 * 8)
torch.testing.assert_close(dot_interaction(dense, emb), dot_interaction_reference(dense, emb))

# A LAMB step runs and changes the parameter.
p = torch.nn.Parameter(torch.randn(10))
before = p.detach().clone()
p.grad = torch.randn(10)
Lamb([p], lr=0.01).step()
assert not torch.equal(p.detach(), before)

# The trainer's command line, a few steps on the built-in synthetic data.
with tempfile.TemporaryDirectory() as run_dir:
    subprocess.run([sys.executable, "-m", "dlrmx.train", "--run-dir", run_dir, "--num-batches",
                    "20", "--mini-batch-size", "64", "--print-freq", "10", "--test-freq", "-1",
                    "--nepochs", "1"], check=True)
print("wheel smoke test passed")
