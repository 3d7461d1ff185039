#!/usr/bin/env bash
# Everything only a GPU can show (H100/H200, torch with CUDA, Triton; no PyAV or TensorRT
# needed), in sections run in priority order. Results go to $RESULTS_DIR (or ./gpu-results),
# and into one archive at $OUT_ARCHIVE when that is set (the device returns 8 files at most).
#
#   bash scripts/gpu_checks.sh core    # ~9 min on one H100: kernel tests compiled for real,
#                                      # kernels vs SDPA at the real shapes, the 14B step at
#                                      # 49 frames with the Triton kernel (profiled), with
#                                      # every speed option together, and compiled at 81 frames
#   bash scripts/gpu_checks.sh extra   # ~14 min: the official step, the compiled step and
#                                      # FP8 linears + CUDA graphs at 49 frames, the
#                                      # low-memory mode, 81 frames with SDPA, a whole 14B
#                                      # edit's stages (umT5, VAE, denoise), FP8 linear error
#                                      # at 14B, the in-loop and FP8 kernels' steps
# (The H100 sessions of 2026-11-26 ran every section but fastest49, compile81 and copies49,
# docs/BENCHMARKS.md: core leads with what is new or not yet measured.)
#   bash scripts/gpu_checks.sh kernel  # ~9-10 min with filters: attention kernel configs
#                                      # alone (SWEEP_FILTER) next to the SDPA baselines, the
#                                      # compiled tests, the 14B step with SDPA (the baseline
#                                      # first), with the warp-specialised and the plain Gluon
#                                      # kernel and with the FP8 copies kernel (each if it
#                                      # passed the sweep), with the
#                                      # rotated-copies kernel, the rotated-copies variants
#                                      # (VARIANT_FILTER), the step with the Triton kernel
#                                      # (what does not fit DEADLINE_S is skipped). SWEEP_FILTER=
#                                      # '^sdpa: default|^gluon: (128x64 w8 s2|64x64 w4 s2)|^gluon ws|^fp8 copies: 128x128 w8 s2|^copies: 128x64 w4 s2|^gluon fp8'
#                                      # (21 candidates: the baseline first, the warp-
#                                      # specialised Gluon kernel's configs, native and FP8)
#                                      # SWEEP_SHAPES=49f
#                                      # VARIANT_FILTER='(128x32|64x64).* plain'
#                                      # VARIANT_SHAPES=n70,49f
#   bash scripts/gpu_checks.sh default # ~9 min: the Hopper default (auto: the warp-specialised
#                                      # Gluon kernel) where the H200 session of 2026-11-26 did
#                                      # not measure it: SWEEP_SHAPES=81f SWEEP_FILTER=
#                                      # '^sdpa: default|^gluon ws: 64x128 s2 pingpong$|^gluon ws fp8: 64x128 s2 pingpong'
#                                      # then the 14B step at 81 frames with SDPA and with auto,
#                                      # at 49 with the FP8 form, compiled, and with every
#                                      # speed option
#   bash scripts/gpu_checks.sh SECTION...   # any of the section names below
#
# A device call (the H100 of 2026-11-26 took 15 s to install, ~100 s for the tests, 85 s for
# the attention benchmark with 3 candidates a kernel variant and over 260 s with 6 (every
# autotuning run compiles and times each candidate at each shape), 165 s to sweep 12
# candidates alone, 45-200 s per 14B bench section (the low-memory one the longest), each
# loading the model anew):
#   RESULTS_DIR=/tmp/r OUT_ARCHIVE=$OUT/gpu-results.tgz DEADLINE_S=540 bash scripts/gpu_checks.sh core
# Each section has its own timeout; DEADLINE_S (default 570) stops starting new sections
# once that many seconds have passed, so one call fits a 600 s command limit. With 15
# minutes of device time, run `core`, then at once (the machine stays warm 30 s) `extra`
# with DEADLINE_S set to the time left minus a minute (it skips what does not fit, and says
# so). Then, here: `mkdir r && tar xzf gpu-results.tgz -C r && python scripts/gpu_report.py r`
# prints the Markdown for docs/BENCHMARKS.md.
# First, here: `bash scripts/gpu_wheels.sh`, and name .whl in each device call's `carry`.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${RESULTS_DIR:-gpu-results}
mkdir -p "$out"
export PYTHONUNBUFFERED=1
deadline=${DEADLINE_S:-570}
start=$SECONDS

# The image's Python is `python3`; the sections (and their subprocesses) say `python`.
if ! command -v python > /dev/null; then
  mkdir -p /tmp/pybin && ln -sf "$(command -v python3)" /tmp/pybin/python && export PATH=/tmp/pybin:$PATH
fi
# Requirements the image lacks (PyAV, ftfy), as wheels from scripts/gpu_wheels.sh carried in .whl/.
if compgen -G ".whl/*.whl" > /dev/null; then
  python -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
# The package itself, offline: a plain `pip install -e .` there falls back to `setup.py
# develop`, whose nested pip wants the network (seen 2026-11-26). If even this fails, import
# from the tree with the sub-packages that setup.py maps (kernels/, export/, engines/) linked in.
if ! python -m pip install -q --no-deps --no-build-isolation --no-index --use-pep517 -e . > "$out/install.log" 2>&1; then
  echo "editable install failed (see install.log); importing from the tree" | tee -a "$out/summary.txt"
  for p in kernels export engines; do ln -sfn "../$p" "sama_rt/$p"; done
  export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
fi

# The image has pytest-xdist: tests in 8 processes, so kernel compiles run side by side.
xdist=$(python -c "import xdist" 2>/dev/null && echo "-n 8")

# Every Hopper candidate of the anchor-attention kernel alone, each in its own process with a
# time limit (one that fails or hangs costs only its entry; an autotuning run would lose them
# all), then any "KEYS: CONFIG" entries in $SWEEP_EXTRA (one a line); SWEEP_FILTER (a grep
# pattern, e.g. '^once') picks among them. JSON lines on stdout. Once a candidate runs out of
# time (a hang, e.g. a barrier never completing), the rest of its kind ("gluon:", ...) are
# skipped with rc 125: each would cost the whole limit too.
sweep_candidates() {
  local hung=" "
  { python benchmarks/attention.py --list-candidates; printf '%s\n' "${SWEEP_EXTRA:-}"; } \
    | grep -E -- "${SWEEP_FILTER:-.}" | while IFS= read -r c; do
    [[ -z "$c" ]] && continue
    kind=${c%%:*}
    if [[ "$hung" == *" $kind "* ]]; then printf '{"candidate": "%s", "rc": 125}\n' "$c"; continue; fi
    timeout -k 10 "${SWEEP_LIMIT_S:-60}" python benchmarks/attention.py --candidate "$c" --shapes "${SWEEP_SHAPES:-49f,81f}"
    rc=$?
    (( rc == 124 || rc == 137 )) && hung+="$kind "
    (( rc == 0 )) || printf '{"candidate": "%s", "rc": %d}\n' "$c" "$rc"
  done
}
export -f sweep_candidates

# The rotated-copies kernel's variants (benchmarks/rotated_copies.py: tile configs, warp-
# specialised or not), each alone, the same way; VARIANT_FILTER picks among them.
copies_variants() {
  python benchmarks/rotated_copies.py --list | grep -E -- "${VARIANT_FILTER:-.}" | while IFS= read -r c; do
    timeout -k 10 "${SWEEP_LIMIT_S:-60}" python benchmarks/rotated_copies.py --variant "$c" --shapes "${VARIANT_SHAPES:-n70,n96,49f}"
    rc=$?
    (( rc == 0 )) || printf '{"candidate": "%s", "rc": %d}\n' "$c" "$rc"
  done
}
export -f copies_variants

# name: timeout seconds, then the command (stdout -> $out/name.out, stderr -> $out/name.err)
bench14="python -m sama_rt bench --config sama-14b --resolution 480x832 --steps 2 --warmup 1 --json"
declare -A TIMEOUT CMD
TIMEOUT[setup]=60;    CMD[setup]="python -c 'import av, ftfy' || echo 'MISSING av/ftfy: run scripts/gpu_wheels.sh and carry .whl'; nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv; python -m sama_rt info --json"
# SAMA_RT_AUTOTUNE=0: one config per shape in the tests (the attention section autotunes and
# checks the chosen config at the real shapes).
# Without a Gluon kernel's tests when it (native or FP8) hung in the sweep (they would hang
# the section): the plain one's, the warp-specialised one's, each on its own, and their
# backends' GPU checks in tests/models (SAMA_RT_HUNG_BACKENDS).
TIMEOUT[tests]=270;   CMD[tests]="gluon=; hung=; grep -qE '\"gluon( fp8)?: .*\", \"rc\": 12[45]' $out/sweep.out 2>/dev/null && gluon='--ignore=tests/kernels/test_gluon_attention.py' && hung=triton-gluon; grep -qE '\"gluon ws( fp8)?: .*\", \"rc\": 12[45]' $out/sweep.out 2>/dev/null && gluon=\"\$gluon --ignore=tests/kernels/test_gluon_ws_attention.py\" && hung=\"\$hung,triton-gluon-ws,triton-gluon-ws-fp8\"; SAMA_RT_HUNG_BACKENDS=\$hung SAMA_RT_AUTOTUNE=0 python -m pytest -v -rfE -p no:cacheprovider $xdist \$gluon tests/kernels tests/models/test_attention.py tests/acceleration tests/parallel/test_attention.py"
TIMEOUT[attention]=360; CMD[attention]="python benchmarks/attention.py --json"
TIMEOUT[sweep]=420;   CMD[sweep]="sweep_candidates"
TIMEOUT[variants]=420; CMD[variants]="copies_variants"
# With the tensor-memory-accelerator candidates left out of autotuning if the sweep saw one fail.
TIMEOUT[step49]=180;  CMD[step49]="grep -qE ' tma\", \"rc\"' $out/sweep.out 2>/dev/null && export SAMA_RT_ATTENTION_TMA=0; $bench14 --frames 49 --attention triton --profile"
TIMEOUT[reference49]=240; CMD[reference49]="$bench14 --frames 49 --attention sdpa --compare-reference --profile"
TIMEOUT[step81]=200;  CMD[step81]="$bench14 --frames 81"
TIMEOUT[stages49]=300; CMD[stages49]="$bench14 --frames 49 --stages"
TIMEOUT[fp8graphs49]=150; CMD[fp8graphs49]="$bench14 --frames 49 --fp8-linear --cuda-graphs"
TIMEOUT[fp8attn49]=150; CMD[fp8attn49]="$bench14 --frames 49 --attention triton-fp8"
# Not when the sweep saw a rotated-copies config fail or hang (its time is better spent elsewhere).
TIMEOUT[copies49]=180; CMD[copies49]="if grep -qE '\"copies: .*\", \"rc\"' $out/sweep.out 2>/dev/null; then echo 'a copies config failed in the sweep: not run' >&2; exit 3; fi; $bench14 --frames 49 --attention triton-copies --profile"
TIMEOUT[sdpa49]=150;  CMD[sdpa49]="$bench14 --frames 49 --attention sdpa"
TIMEOUT[sdpa81]=200;  CMD[sdpa81]="$bench14 --frames 81 --attention sdpa"
# Not when a Gluon config failed, hung or was skipped in the sweep (or the sweep did not run them).
TIMEOUT[gluon49]=180; CMD[gluon49]="if ! grep -q '\"gluon: ' $out/sweep.out 2>/dev/null || grep -qE '\"gluon: .*\", \"rc\"' $out/sweep.out; then echo 'the Gluon kernel did not pass the sweep: not run' >&2; exit 3; fi; $bench14 --frames 49 --attention triton-gluon --profile"
# The same for the warp-specialised Gluon kernel.
TIMEOUT[gluonws49]=180; CMD[gluonws49]="if ! grep -q '\"gluon ws: ' $out/sweep.out 2>/dev/null || grep -qE '\"gluon ws: .*\", \"rc\"' $out/sweep.out; then echo 'the warp-specialised Gluon kernel did not pass the sweep: not run' >&2; exit 3; fi; $bench14 --frames 49 --attention triton-gluon-ws --profile"
# The same for its FP8 form.
TIMEOUT[gluonwsfp849]=180; CMD[gluonwsfp849]="if ! grep -q '\"gluon ws fp8: ' $out/sweep.out 2>/dev/null || grep -qE '\"gluon ws fp8: .*\", \"rc\"' $out/sweep.out; then echo 'the warp-specialised FP8 Gluon kernel did not pass the sweep: not run' >&2; exit 3; fi; $bench14 --frames 49 --attention triton-gluon-ws-fp8 --profile"
# Not when an FP8 copies config failed, hung or was skipped in the sweep (or the sweep did not run them).
TIMEOUT[fp8copies49]=180; CMD[fp8copies49]="if ! grep -q '\"fp8 copies: ' $out/sweep.out 2>/dev/null || grep -qE '\"fp8 copies: .*\", \"rc\"' $out/sweep.out; then echo 'the FP8 copies kernel did not pass the sweep: not run' >&2; exit 3; fi; $bench14 --frames 49 --attention triton-fp8-copies --profile"
TIMEOUT[inloop49]=180; CMD[inloop49]="$bench14 --frames 49 --attention triton-in-loop --profile"
TIMEOUT[fp8error]=200; CMD[fp8error]="python benchmarks/fp8_linear.py --configs sama-14b --device cuda --no-fp32 --steps 2 --json"
TIMEOUT[offload49]=240; CMD[offload49]="$bench14 --frames 49 --offload blocks"
TIMEOUT[compile49]=300; CMD[compile49]="$bench14 --frames 49 --compile"
TIMEOUT[compile81]=300; CMD[compile81]="$bench14 --frames 81 --compile"
TIMEOUT[fastest49]=300; CMD[fastest49]="$bench14 --frames 49 --fp8-linear --compile --cuda-graphs --profile"

declare -A GROUP
GROUP[core]="setup tests attention step49 fastest49 compile81"
GROUP[kernel]="setup sweep tests sdpa49 gluonws49 gluon49 fp8copies49 copies49 variants step49"
# What "auto" runs on Hopper (the warp-specialised Gluon kernel) where it was not yet measured:
# alone and in the step at 81 frames next to SDPA, compiled, and with every speed option.
GROUP[default]="setup sweep sdpa81 step81 gluonwsfp849 compile49 fastest49"
GROUP[extra]="setup reference49 compile49 fp8graphs49 offload49 step81 stages49 fp8error inloop49 fp8attn49"

sections=()
for arg in "${@:-core}"; do
  if [[ -n "${GROUP[$arg]:-}" ]]; then sections+=(${GROUP[$arg]}); else sections+=("$arg"); fi
done
for name in "${sections[@]}"; do
  if [[ -z "${CMD[$name]:-}" ]]; then echo "unknown section: $name" >&2; exit 2; fi
  elapsed=$((SECONDS - start))
  if (( elapsed + 30 > deadline )); then
    echo "== $name: skipped (${elapsed}s used of ${deadline}s)" | tee -a "$out/summary.txt"
    continue
  fi
  budget=$(( TIMEOUT[$name] < deadline - elapsed ? TIMEOUT[$name] : deadline - elapsed ))
  t0=$SECONDS
  timeout "$budget" bash -c "${CMD[$name]}" > "$out/$name.out" 2> "$out/$name.err"
  rc=$?
  echo "== $name: rc=$rc in $((SECONDS - t0))s (limit ${budget}s)" | tee -a "$out/summary.txt"
  tail -n 4 "$out/$name.out" "$out/$name.err" 2>/dev/null | cut -c1-400
done
ls -la "$out"
# The device returns at most 8 files: hand the whole folder back as one archive.
if [[ -n "${OUT_ARCHIVE:-}" ]]; then tar czf "$OUT_ARCHIVE" -C "$out" . && echo "archived to $OUT_ARCHIVE"; fi
