"""The hand-written backward of the batched dot product equals autograd's on the plain formula."""

import torch

from recsys.models.batched_dot import batched_dot


def test_batched_dot_passes_gradcheck_on_both_paths() -> None:
    generator = torch.Generator().manual_seed(2)
    for candidates in (3, 300):  # broadcast product; bmm beyond 256 candidates
        query = torch.randn(4, 6, dtype=torch.float64, generator=generator, requires_grad=True)
        items = torch.randn(4, candidates, 6, dtype=torch.float64, generator=generator, requires_grad=True)
        torch.testing.assert_close(batched_dot(query, items), torch.einsum("bd,bcd->bc", query, items))
        assert torch.autograd.gradcheck(batched_dot, (query, items))
