"""Drop-in layers built on the fused ops, and `convert` to swap them into existing models.

BatchNormLeakyReLU2d  nn.BatchNorm2d + nn.LeakyReLU (negative_slope=0: ReLU), same state dict
Conv2d                nn.Conv2d + activation="identity|relu|leaky_relu|tanh|sigmoid"
ConvTranspose2d       nn.ConvTranspose2d + activation="identity|relu|leaky_relu|tanh|sigmoid"
ConvTransposeBNAct2d  nn.ConvTranspose2d -> nn.BatchNorm2d -> ReLU/LeakyReLU, BN folded in eval
Reparameterize        (mu, logvar) -> (z, per-sample KL)
convert(model)        rewrites a model's stock layers into the fused ones
SyncBatchNormLeakyReLU2d, convert_sync(model, process_group=None)
                      batch statistics shared across processes (torch.distributed);
                      nn.SyncBatchNorm.convert_sync_batchnorm does not see the fused batch
                      norms, which warn (UnsyncedBatchNormWarning) when they train
                      unsynchronised in several processes

TorchScript (torch.jit.script/trace) is refused with one message; use torch.export.
"""

from fastgen.nn.batch_norm_leaky_relu import BatchNormLeakyReLU2d, UnsyncedBatchNormWarning
from fastgen.nn.conv2d import Conv2d
from fastgen.nn.conv_transpose2d import ConvTranspose2d
from fastgen.nn.conv_transpose_bn_act import ConvTransposeBNAct2d
from fastgen.nn.convert import convert
from fastgen.nn.reparameterize import Reparameterize
from fastgen.nn.sync_batch_norm_leaky_relu import SyncBatchNormLeakyReLU2d, convert_sync

__all__ = [
    "BatchNormLeakyReLU2d",
    "Conv2d",
    "ConvTranspose2d",
    "ConvTransposeBNAct2d",
    "Reparameterize",
    "SyncBatchNormLeakyReLU2d",
    "UnsyncedBatchNormWarning",
    "convert",
    "convert_sync",
]
