"""ONNX export of the SAMA submodels (installed as `sama_rt.export`; `sama-rt export`).

    spec.py       one ModelSpec per graph: names, named dynamic dims, profiles, samples
    wrappers.py   export-friendly forwards (host-side sinusoid/RoPE, explicit VAE cache)
    anchor_op.py  the sama_rt::AnchorAttention node and its reference ONNX function
    graph.py      trace on meta, name dims, stream weights into external data
    dit.py, text.py, vae.py   one exporter per submodel (vae.py also drives the chunk loop)
    lint.py       TensorRT-compatibility lint
    manifest.py   manifest.json (versions, specs, profiles, weight hashes, lint)
    command.py    the CLI subcommand: add_arguments(parser), run(args) -> int

Heavy dependencies (onnx, onnxscript) are imported by the submodules, not here.
"""
