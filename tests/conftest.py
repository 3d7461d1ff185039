"""Session-wide test setup."""
import os

import torch

# triton.jit decides when a kernel module is imported whether its kernels run compiled or in
# the CPU interpreter, so the interpreter must be switched on before ANY test module (kernels,
# models, export...) imports sama_rt.kernels. Without a GPU it is the only way to run them.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
