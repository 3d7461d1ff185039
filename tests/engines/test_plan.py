"""Build plans and cache keys: pure, deterministic, and sensitive to every input that changes an engine."""
from dataclasses import replace

import pytest

from sama_rt.engines.config import BuildConfig, DimRange, Precision, QuantConfig
from sama_rt.engines.plan import make_build_plan, parse_manifest, submodel_precision

H100 = (9, 0)
TRT = "10.13.0.35"


def manifest(graph="g" * 64, weights="w" * 64, batch=(1, 2, 2), custom_ops=("sama_rt::AnchorAttention",)):
    return {
        "submodels": {
            "dit": {
                "onnx": "dit.onnx",
                "inputs": [
                    {"name": "latents", "dtype": "float32", "shape": ["batch", 16, "latent_frames", "latent_height", "latent_width"]},
                    {"name": "context", "dtype": "float32", "shape": ["batch", 512, 64]},
                ],
                "outputs": ["noise_pred", "semantic_pred"],
                "profiles": {
                    "batch": list(batch),
                    "latent_frames": [1, 13, 21],
                    "latent_height": {"min": 2, "opt": 60, "max": 60},
                    "latent_width": [2, 104, 104],
                },
                "graph_sha256": graph,
                "weights_sha256": weights,
                "custom_ops": list(custom_ops),
            },
            "text_encoder": {
                "onnx": "text_encoder.onnx",
                "inputs": [{"name": "ids", "dtype": "int64", "shape": ["batch", 512]}],
                "outputs": ["context"],
                "profiles": {"batch": [1, 1, 2]},
                "graph_sha256": "t" * 64,
                "weights_sha256": "u" * 64,
            },
        }
    }


def key(m=None, cfg=None, trt=TRT, cc=H100, fp="", name="dit"):
    plan = make_build_plan(m or manifest(), cfg or BuildConfig(), trt, cc, plugin_fingerprint=fp)
    return plan.engine(name).cache_key


def test_plan_is_deterministic_and_profile_resolved():
    a = make_build_plan(manifest(), BuildConfig(), TRT, H100)
    b = make_build_plan(manifest(), BuildConfig(), TRT, H100)
    assert a == b
    dit = a.engine("dit")
    assert dict((n, (lo, opt, hi)) for n, lo, opt, hi in dit.profile)["latents"] == (
        (1, 16, 1, 2, 2), (2, 16, 13, 60, 104), (2, 16, 21, 60, 104))
    assert dit.plugins == ("sama_rt::AnchorAttention",)
    assert dit.builder_flags == ("BF16", "STRIP_PLAN", "REFIT")
    assert not dit.strongly_typed


@pytest.mark.parametrize(
    "change",
    [
        dict(m=manifest(graph="h" * 64)),
        dict(cfg=BuildConfig(precision="fp16")),
        dict(cfg=BuildConfig(precision="fp8")),
        dict(cfg=BuildConfig(precision="int8")),
        dict(cfg=BuildConfig(dims={"latent_frames": DimRange(1, 21, 21)})),
        dict(m=manifest(batch=(1, 1, 2))),
        dict(cfg=BuildConfig(strongly_typed=True)),
        dict(cfg=BuildConfig(workspace_bytes=1 << 30)),
        dict(cfg=BuildConfig(builder_optimization_level=5)),
        dict(cfg=BuildConfig(weight_stripped=False)),
        dict(cfg=BuildConfig(register_plugins=False)),
        dict(trt="10.14.1.48"),
        dict(cc=(10, 0)),
        dict(fp="kernel-v2"),
        dict(m=manifest(custom_ops=())),
    ],
)
def test_every_plan_input_changes_the_key(change):
    assert key(**change) != key()


def test_quant_settings_change_the_key():
    base = BuildConfig(precision="fp8")
    for quant in (
        QuantConfig(Precision.FP8, amax_margin=1.1),
        QuantConfig(Precision.FP8, exclude=("blocks.0.*",)),
        QuantConfig(Precision.FP8, include=("blocks.*.ffn.0",)),
        QuantConfig(Precision.FP8, smoothquant_alpha=0.5),
    ):
        assert key(cfg=replace(base, quant=quant)) != key(cfg=base)


def test_weights_matter_only_when_the_engine_is_bound_to_them():
    other = manifest(weights="x" * 64)
    # Stripped 16-bit engines are refitted from any checkpoint: same key.
    assert key(m=other) == key()
    # Unstripped, or quantized (scales calibrated on these weights): the weights define the engine.
    full = BuildConfig(weight_stripped=False)
    assert key(m=other, cfg=full) != key(cfg=full)
    fp8 = BuildConfig(precision="fp8")
    assert key(m=other, cfg=fp8) != key(cfg=fp8)
    assert make_build_plan(manifest(), fp8, TRT, H100).engine("dit").weights_bound


def test_timing_cache_path_does_not_change_the_key():
    assert key(cfg=BuildConfig(timing_cache="/tmp/a.cache")) == key(cfg=BuildConfig(timing_cache="/tmp/b.cache"))


def test_quantized_build_is_strongly_typed_and_only_the_dit_is_quantized():
    plan = make_build_plan(manifest(), BuildConfig(precision="int8"), TRT, H100)
    dit, text = plan.engine("dit"), plan.engine("text_encoder")
    assert dit.strongly_typed and dit.quant["smoothquant_alpha"] == 0.5 and "BF16" not in dit.builder_flags
    assert text.precision is Precision.BF16 and text.quant is None and not text.strongly_typed
    # umT5 overflows fp16: the text encoder stays bf16.
    assert submodel_precision("text_encoder", Precision.FP16) is Precision.BF16
    assert submodel_precision("vae_decoder", Precision.FP16) is Precision.FP16


def test_invalid_requests_are_rejected():
    with pytest.raises(ValueError, match="compute capability >= 8.9"):
        make_build_plan(manifest(), BuildConfig(precision="fp8"), TRT, (8, 0))
    with pytest.raises(ValueError, match="unknown dimensions"):
        make_build_plan(manifest(), BuildConfig(dims={"frames": DimRange(1, 1, 1)}), TRT, H100)
    with pytest.raises(ValueError, match="not in the export"):
        make_build_plan(manifest(), BuildConfig(submodels=("vae_decoder",)), TRT, H100)
    with pytest.raises(ValueError, match="strongly typed"):
        BuildConfig(precision="fp8", strongly_typed=False)
    with pytest.raises(ValueError, match="differs"):
        BuildConfig(precision="fp8", quant=QuantConfig.default("int8"))
    with pytest.raises(ValueError, match="min <= opt <= max"):
        DimRange(4, 2, 8)
    with pytest.raises(ValueError, match="valid: bf16, fp16, fp8, int8"):
        Precision.parse("fp4")
    with pytest.raises(ValueError, match="without a profile range"):
        m = manifest()
        del m["submodels"]["dit"]["profiles"]["latent_width"]
        make_build_plan(m, BuildConfig(), TRT, H100)


def test_build_config_round_trips_through_a_dict():
    cfg = BuildConfig(precision="int8", dims={"batch": DimRange(1, 2, 2)}, timing_cache="t.cache")
    assert BuildConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="unknown BuildConfig keys"):
        BuildConfig.from_dict({"precison": "fp8"})


def test_manifest_list_form_is_accepted():
    m = manifest()
    m["submodels"] = [dict(v, name=k) for k, v in m["submodels"].items()]
    assert set(parse_manifest(m)) == {"dit", "text_encoder"}


def test_profile_of_an_export_spec_matches_the_spec():
    """A manifest entry written from export.spec.ModelSpec gives the spec's own profile."""
    from sama_rt.export.spec import ShapeBuckets, dit_ranges, dit_spec
    from sama_rt.models import DiTConfig

    cfg = DiTConfig.preset("tiny")
    spec = dit_spec(cfg)
    ranges = dit_ranges(cfg, ShapeBuckets(frames=(49, 81), resolutions=((480, 832), (256, 448))))
    entry = dict(spec.to_dict(ranges), onnx="dit.onnx", graph_sha256="g" * 64)
    plan = make_build_plan({"submodels": {"dit": entry}, "weights_sha256": "w" * 64}, BuildConfig(), TRT, H100)
    dit = plan.engine("dit")
    want = spec.profile(ranges)
    assert {n: {"min": list(a), "opt": list(b), "max": list(c)} for n, a, b, c in dit.profile} == want
    assert dit.weights_sha256 == "w" * 64
    # Overriding an axis moves its multiples and products with it.
    cfg_override = BuildConfig(dims={"grid_frames": DimRange(13, 13, 13)})
    lat = dict((n, (a, b, c)) for n, a, b, c in make_build_plan(
        {"submodels": {"dit": entry}}, cfg_override, TRT, H100).engine("dit").profile)
    assert lat["latents"][0][2] == lat["latents"][2][2] == 13
    assert lat["rope_cos"][2][0] == 13 * max(r.max for r in [ranges["grid_height"]]) * ranges["grid_width"].max
