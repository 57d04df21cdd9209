"""Issue 24 item 2: the torch backend's CPU threads are chosen by measurement under load (1 unless asked), and
only for the landmark call: torch's process-wide count is restored, so training in the same process keeps its own."""
import numpy as np
import torch

from facealign.inference.backends import TORCH_DEFAULT_THREADS, TorchBackend


class Spy(torch.nn.Module):
    """Records torch's thread count while it runs; returns zero coordinates."""

    def __init__(self):
        super().__init__()
        self.seen = []
        self.w = torch.nn.Parameter(torch.zeros(1))

    def forward(self, x):
        self.seen.append(torch.get_num_threads())
        return {"coords": torch.zeros(x.shape[0], 68, 2) + self.w}


def test_the_call_runs_on_the_chosen_threads_and_restores_the_process_count():
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(3)
        batch = np.zeros((1, 3, 8, 8), np.float32)
        default, two = TorchBackend(Spy()), TorchBackend(Spy(), threads=2)
        assert default(batch).shape == (1, 68, 2)
        two(batch)
        assert default.model.seen == [TORCH_DEFAULT_THREADS] == [1]
        assert two.model.seen == [2]
        assert torch.get_num_threads() == 3  # the caller's setting survives both calls
    finally:
        torch.set_num_threads(before)
