"""Where and how the network runs: the device, mixed precision, the memory format,
``torch.compile``, and the processes of a ``torchrun`` job.

* Device: CUDA when present (and not ``--no_cuda``), else Apple's MPS, else the CPU.
* ``--amp``: CUDA: bfloat16 where the GPU supports it, else float16 with a gradient
  scaler; CPU: bfloat16 where the processor has native bfloat16 (AVX512-BF16 or AMX),
  else a one-line note and float32.
* Memory format: contiguous or channels-last, whichever runs faster on this machine,
  timed on the first real batches (as ``cudnn.benchmark`` does), unless forced.
* ``torchrun``: one process per device; rank 0 writes, the others wait where it must.
"""

import logging
import os
import platform
import subprocess
import time
from dataclasses import dataclass
from typing import Callable, Optional

import torch
import torch.nn as nn

log = logging.getLogger("ANIMAL-SPOT")
MEMORY_FORMATS = {"contiguous": torch.contiguous_format, "channels_last": torch.channels_last}


# ------------------------------------------------------------------------- devices
def choose_device(cuda: bool = True, local_rank: int = 0) -> torch.device:
    if cuda and torch.cuda.is_available():
        torch.backends.cudnn.benchmark = True      # fixed input shapes: let cuDNN pick its fastest kernels
        return torch.device("cuda", local_rank % torch.cuda.device_count())
    if cuda and getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def cpu_has_native_bf16() -> bool:
    """AVX512-BF16 or AMX (x86), or FEAT_BF16 (Apple silicon)."""
    system = platform.system()
    if system == "Linux":
        try:
            with open("/proc/cpuinfo") as handle:
                for line in handle:
                    if line.startswith("flags"):
                        flags = set(line.split(":", 1)[1].split())
                        return bool(flags & {"avx512_bf16", "amx_bf16"})
        except OSError:
            return False
    if system == "Darwin":
        try:
            out = subprocess.run(["sysctl", "-n", "hw.optional.arm.FEAT_BF16"], capture_output=True,
                                 text=True, timeout=5).stdout.strip()
            return out == "1"
        except (OSError, subprocess.SubprocessError):
            return False
    return False


@dataclass(frozen=True)
class Precision:
    """``dtype`` None = float32; ``scaler`` = float16 gradients need a GradScaler."""

    dtype: Optional[torch.dtype] = None
    scaler: bool = False

    @property
    def name(self) -> str:
        return {None: "float32", torch.bfloat16: "bfloat16", torch.float16: "float16"}[self.dtype]

    def autocast(self, device: torch.device):
        return torch.autocast(device.type, dtype=self.dtype, enabled=self.dtype is not None)

    @classmethod
    def from_name(cls, name: str) -> "Precision":
        return {"float32": cls(), "bfloat16": cls(torch.bfloat16), "float16": cls(torch.float16, True)}[name]


def choose_precision(device: torch.device, amp: bool, quiet: bool = False) -> Precision:
    if not amp:
        return Precision()
    if device.type == "cuda":
        return Precision(torch.bfloat16) if torch.cuda.is_bf16_supported() else Precision(torch.float16, True)
    if device.type == "cpu":
        if cpu_has_native_bf16():
            return Precision(torch.bfloat16)
        if not quiet:
            log.info("--amp: this processor has no native bfloat16 (AVX512-BF16 or AMX); running float32")
        return Precision()
    if device.type == "mps":
        return Precision(torch.float16)
    return Precision()


def machine_description() -> str:
    """The processor (and GPU) a run used, in words (model card, benchmarks)."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as handle:
            names = [line.split(":", 1)[1].strip() for line in handle if line.startswith("model name")]
        if names:
            cpu = names[0]
    except OSError:
        pass
    text = f"{cpu}, {os.cpu_count()} logical CPUs, torch {torch.__version__}"
    if torch.cuda.is_available():
        text += f", {torch.cuda.get_device_name(0)}"
    return text


# ------------------------------------------------------------------- memory format
def in_layout(x: torch.Tensor, memory_format: torch.memory_format) -> torch.Tensor:
    """``x`` in ``memory_format`` where it has one (a batch of images); a waveform batch
    stays as it is (a raw-audio network's convolutions follow its weights' layout)."""
    return x.contiguous(memory_format=memory_format) if x.dim() == 4 else x.contiguous()


def choose_memory_format(model: nn.Module, example: torch.Tensor, precision: Precision, device: torch.device,
                         forced: str = "auto", training: bool = False, rounds: int = 2) -> str:
    """``contiguous`` or ``channels_last``: the forced one, or the faster of the two on
    ``example`` (a real batch: the faster format depends on the batch size) -- forward,
    plus backward when ``training`` -- each format warmed up once, then timed alternately
    ``rounds`` times (best of each), and logged. The model is left in the chosen format."""
    if forced != "auto":
        model.to(memory_format=MEMORY_FORMATS[forced])
        return forced
    was_training = model.training
    model.train(training)
    sample = example.to(device)
    times = {name: float("inf") for name in MEMORY_FORMATS}

    def run(name):
        fmt = MEMORY_FORMATS[name]
        model.to(memory_format=fmt)
        x = in_layout(sample, fmt)
        start = time.perf_counter()
        with precision.autocast(device), torch.set_grad_enabled(training):
            out = model(x)
            if training:
                out.float().sum().backward()
        if device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - start
    try:
        for name in MEMORY_FORMATS:
            run(name)                                     # kernel choice, allocation
        for _ in range(rounds):
            for name in MEMORY_FORMATS:
                times[name] = min(times[name], run(name))
    finally:
        if training:
            model.zero_grad(set_to_none=True)
        model.train(was_training)
    choice = min(times, key=times.get)
    model.to(memory_format=MEMORY_FORMATS[choice])
    log_choice(choice, times, sample.shape[0], precision)
    return choice


@dataclass
class Forward:
    """One forward pass, as training, calibration and prediction all run it: the inputs
    moved to the device in the memory format, the network under autocast in the run's
    precision, float32 logits out. ``fallback``: a batch whose reduced-precision logits
    are not finite runs again in float32 (training guards its loss instead)."""

    device: torch.device = torch.device("cpu")
    precision: Precision = Precision()
    memory_format: torch.memory_format = torch.contiguous_format

    def inputs(self, x: torch.Tensor) -> torch.Tensor:
        return in_layout(x.to(self.device, non_blocking=True), self.memory_format)

    def __call__(self, network: nn.Module, x: torch.Tensor, fallback: bool = False) -> torch.Tensor:
        x = self.inputs(x)
        with self.precision.autocast(self.device):
            logits = network(x)
        if fallback and self.precision.dtype is not None and not bool(torch.isfinite(logits).all()):
            logits = self.float32(network, x)
        return logits.float()

    def float32(self, network: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """The same inputs without autocast."""
        return network(self.inputs(x)).float()


def log_choice(choice: str, times: dict, items: int, precision: Precision) -> None:
    log.info(f"Memory format: {choice} ({', '.join(f'{k} {v * 1000:.1f} ms' for k, v in times.items())} "
             f"per batch of {items}, {precision.name})")


def maybe_compile(model: nn.Module, enabled: bool) -> nn.Module:
    """``torch.compile(model)`` when asked and possible; the plain model otherwise (the
    first call's failure is caught by ``CompileFallback``)."""
    if not enabled:
        return model
    try:
        return CompileFallback(model, torch.compile(model))
    except Exception as error:   # platforms without a compiler
        log.warning(f"--compile: torch.compile is not available here ({error}); running uncompiled")
        return model


class CompileFallback(nn.Module):
    """Runs the compiled model; if compiling fails on the first call, says so once and
    runs the plain model from then on."""

    def __init__(self, plain: nn.Module, compiled: Callable):
        super().__init__()
        self.plain = plain
        self.compiled = compiled
        self.failed = False

    def forward(self, x):
        if not self.failed:
            try:
                return self.compiled(x)
            except Exception as error:
                self.failed = True
                log.warning(f"--compile: compiling failed ({error.__class__.__name__}: "
                            f"{str(error).splitlines()[0] if str(error) else ''}); running uncompiled")
        return self.plain(x)


# --------------------------------------------------------------------- processes
@dataclass(frozen=True)
class Processes:
    """The processes of a run: one unless started by ``torchrun``."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world > 1

    def barrier(self) -> None:
        if self.distributed:
            torch.distributed.barrier()

    def sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """Sum over processes (in place); a single process returns it unchanged."""
        if self.distributed:
            torch.distributed.all_reduce(tensor, op=torch.distributed.ReduceOp.SUM)
        return tensor

    def gather(self, value) -> list:
        """Every process's ``value`` (picklable), in rank order."""
        if not self.distributed:
            return [value]
        values = [None] * self.world
        torch.distributed.all_gather_object(values, value)
        return values

    def broadcast_object(self, value):
        if not self.distributed:
            return value
        box = [value]
        torch.distributed.broadcast_object_list(box, src=0)
        return box[0]


def start_processes(use_cuda: bool) -> Processes:
    """Join the ``torchrun`` job described by the environment (NCCL on CUDA, else gloo)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Processes()
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if not torch.distributed.is_initialized():
        cuda = use_cuda and torch.cuda.is_available()
        if cuda:
            torch.cuda.set_device(local_rank % torch.cuda.device_count())
        torch.distributed.init_process_group("nccl" if cuda else "gloo")
    return Processes(rank, world, local_rank)


def stop_processes(processes: Processes) -> None:
    if processes.distributed and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
