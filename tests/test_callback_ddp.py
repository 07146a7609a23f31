"""LAMMonitor under 2-process DDP on CPU: no hang, and only rank zero explains and logs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

from conftest import finish_or_kill
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

# Two gloo processes start in a few seconds; a run still going after this has hung on a collective.
TIMEOUT_SECONDS = 120

SCRIPT = textwrap.dedent('''
    import json
    import sys
    from pathlib import Path

    import torch
    from lightning.pytorch import LightningModule, Trainer
    from torch import nn
    from torch.utils.data import DataLoader, TensorDataset

    from lam_captum.callbacks import LAMMonitor, Probe


    class TinySR(LightningModule):
        def __init__(self):
            super().__init__()
            torch.manual_seed(0)
            self.net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 12, 3, padding=1),
                                     nn.PixelShuffle(2))

        def forward(self, lr):
            return self.net(lr)

        def training_step(self, batch, batch_index):
            lr, hr = batch
            return nn.functional.l1_loss(self(lr), hr)

        def validation_step(self, batch, batch_index):
            lr, hr = batch
            self.log("val_loss", nn.functional.l1_loss(self(lr), hr), sync_dist=True)

        def configure_optimizers(self):
            return torch.optim.Adam(self.parameters(), lr=1e-2)


    if __name__ == "__main__":
        root = Path(sys.argv[1])
        lr = torch.rand(16, 3, 12, 12, generator=torch.Generator().manual_seed(1))
        loader = DataLoader(TensorDataset(lr, nn.functional.interpolate(lr, scale_factor=2)), batch_size=4)
        monitor = LAMMonitor(Probe(lr[0], (8, 8, 8), "centre"), n_steps=4, kernel_size=5, images=("map",))
        trainer = Trainer(strategy="ddp", accelerator="cpu", devices=2, limit_train_batches=2, limit_val_batches=1,
                          max_epochs=2, enable_progress_bar=False, enable_model_summary=False,
                          default_root_dir=root, callbacks=[monitor])
        trainer.fit(TinySR(), loader, loader)
        report = {"runs": len(monitor.history["centre"]), "log_dir": trainer.log_dir}
        (root / f"rank{trainer.global_rank}.json").write_text(json.dumps(report))
        # Lightning leaves its gloo group alive; torn down at exit it aborts the process now and then.
        torch.distributed.destroy_process_group()
''')


def run_script(script: Path, root: Path) -> subprocess.CompletedProcess:
    # Its own process group, so that a hang can be ended with both ranks (Lightning starts rank 1).
    environment = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    process = subprocess.Popen([sys.executable, str(script), str(root)], stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, env=environment, start_new_session=True)
    return finish_or_kill(process, TIMEOUT_SECONDS, "the DDP run")


def test_ddp_run_completes_and_logs_once_on_rank_zero(tmp_path: Path) -> None:
    script = tmp_path / "train_ddp.py"
    script.write_text(SCRIPT)
    finished = run_script(script, tmp_path)
    assert finished.returncode == 0, finished.stdout[-3000:]

    rank_zero = json.loads((tmp_path / "rank0.json").read_text())
    rank_one = json.loads((tmp_path / "rank1.json").read_text())
    assert (rank_zero["runs"], rank_one["runs"]) == (2, 0)
    event_files = list(tmp_path.rglob("events.out.tfevents.*"))
    assert len(event_files) == 1
    events = EventAccumulator(str(event_files[0].parent), size_guidance={"images": 0, "scalars": 0, "tensors": 0})
    events.Reload()
    for tag in ("lam/centre/di", "lam/centre/gini", "lam/centre/delta", "lam/seconds"):
        assert [event.step for event in events.Scalars(tag)] == [1, 3], tag
    assert [event.step for event in events.Images("lam/centre/map")] == [1, 3]
    # The layout's validation chart needs the names of metrics reduced across ranks (sync_dist): read on
    # every rank at the same point, written once by rank zero.
    (layout,) = events.Tensors("custom_scalars__config__")
    assert b"^val_loss$" in layout.tensor_proto.string_val[0]
