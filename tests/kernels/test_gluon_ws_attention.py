"""kernels/gluon_ws_attention.py: the Gluon copies loop, warp-specialised (a producer warp, two
consumer warpgroups taking turns at the tensor cores).

As for the plain Gluon kernel: on CPU these compile it for sm_90 and read the compiled code;
its numbers are checked only on a Hopper GPU, with the plain kernel's checks
(tests/kernels/test_gluon_attention.py). Its barrier protocol runs on CPU too, against a model
of Hopper's mbarriers (the end of this file). Kept in a file of its own so that the GPU script can
leave these out when the kernel hung in its sweep (a wrong barrier phase hangs), and still run
the plain kernel's.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from sama_rt.kernels.gluon_ws_attention import (
    GLUON_WS_CONFIGS,
    GLUON_WS_FP8_CONFIGS,
    GluonWsConfig,
    launch_gluon_ws_attention,
    parse_gluon_ws_config,
)

from .test_anchor_attention import _inputs
from .test_gluon_attention import (
    FP8_CASES,
    REFERENCE_CASES,
    check_fp8_matches_the_triton_fp8_loop,
    check_lazy_rescaling_follows_maxima_that_keep_growing,
    check_matches_the_reference,
    on_hopper,
)

ROOT = Path(__file__).resolve().parents[2]

_COMPILE = """
import json, re, sys
sys.path.insert(0, "benchmarks")
from kernel_sass import mma_loops, sass_stats, sass_text
from sama_rt.kernels.gluon_ws_attention import GLUON_WS_CONFIGS, GLUON_WS_FP8_CONFIGS, compile_gluon_ws_attention
for fp8, configs in ((False, GLUON_WS_CONFIGS), (True, GLUON_WS_FP8_CONFIGS)):
    for config in configs:
        compiled = compile_gluon_ws_attention(config, fp8=fp8)
        ptx = compiled.asm["ptx"]
        print(json.dumps({"config": config, "fp8": fp8, "shared": compiled.metadata.shared,
                          "waits": re.findall(r"wgmma.wait_group.sync.aligned\\s+(\\d+)", ptx),
                          "loops": mma_loops(sass_text(compiled.asm["cubin"])),
                          **sass_stats(compiled.asm["cubin"])}))
"""


def test_compiles_for_hopper_as_three_partitions():
    """Compiled for sm_90 (no GPU needed; in a fresh process, since nothing compiles under
    TRITON_INTERPRET=1), every config, native and FP8: warpgroup MMAs (HGMMA / QGMMA) within
    Hopper's 227 KiB of shared memory; registers moved between the partitions (setmaxnreg: 240
    for the consumers, 24 for the producer's warpgroup); two consumer loops (one a partition),
    each waiting for its q.k alone (wait 1: the softmax overlaps the p.v) and for the p.v
    (wait 0), plus the first tile's and the last p.v's waits; no register spills on a loop's
    common path in the native eager form (the masked tail tile may reload what the compiler
    spilled), one or two values a tile in the others. The " lazy" configs keep the accumulators' rescale off
    that path."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    done = subprocess.run([sys.executable, "-c", _COMPILE], capture_output=True, text=True, env=env, timeout=900,
                          cwd=ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    assert [r["config"] for r in rows] == list(GLUON_WS_CONFIGS) + list(GLUON_WS_FP8_CONFIGS)
    for r in rows:
        assert r["tensor_core"].startswith("QGMMA" if r["fp8"] else "HGMMA"), r
        assert r["shared"] <= 227 * 1024, r
        assert {240, 24} <= set(r["setmaxnreg"]), r
        assert sorted(r["waits"]) == ["0"] * 6 + ["1"] * 2, r
        assert len(r["loops"]) == 2, r
        lazy = r["config"].endswith(" lazy")
        for loop in r["loops"]:
            # None in the native eager form; the lazy form (its test for a moved maximum) and
            # the FP8 form (its scales; Triton 3.9, none with 3.6) reload one or two a tile.
            assert loop["hot_path"]["STL"] + loop["hot_path"]["LDL"] <= (2 if lazy or r["fp8"] else 0), r
            # the accumulators' rescale (64 or more FMULs a tile) off the common path only where lazy
            assert (loop["hot_path"]["FMUL"] < 32) == lazy, r


def test_config_names():
    assert parse_gluon_ws_config("64x128 s2 pingpong") == GluonWsConfig(64, 128, 2, pingpong=True)
    assert parse_gluon_ws_config("64x128 s3") == GluonWsConfig(64, 128, 3)
    assert parse_gluon_ws_config("64x128 s2 pingpong lazy") == GluonWsConfig(64, 128, 2, True, True)
    for config in GLUON_WS_CONFIGS:
        parse_gluon_ws_config(config)
    for config in GLUON_WS_FP8_CONFIGS:
        parse_gluon_ws_config(config, fp8=True)
    with pytest.raises(ValueError, match="not a warp-specialised Gluon config"):
        parse_gluon_ws_config("64x128 w4 s2")
    with pytest.raises(ValueError, match="multiple of 64"):
        parse_gluon_ws_config("32x128 s2")
    with pytest.raises(ValueError, match="at least 2 slots"):
        parse_gluon_ws_config("64x128 s1")
    with pytest.raises(ValueError, match="32, 64 or 128 keys"):
        parse_gluon_ws_config("64x16 s2", fp8=True)
    with pytest.raises(ValueError, match="rescales at every tile"):
        parse_gluon_ws_config("64x128 s2 lazy", fp8=True)


def test_16_bit_inputs_only():
    q, k, v, cos, sin = _inputs(1, 3, 5, 1, 1, 1, 128, torch.float32)
    with pytest.raises(ValueError, match="16-bit inputs"):
        launch_gluon_ws_attention(q, k, v, cos, sin, 1, 128**-0.5)


@on_hopper
@pytest.mark.parametrize("config", GLUON_WS_CONFIGS)
@pytest.mark.parametrize("frames,height,width,num_anchor,batch,heads,dtype", REFERENCE_CASES)
def test_matches_the_reference(config, frames, height, width, num_anchor, batch, heads, dtype):
    check_matches_the_reference(launch_gluon_ws_attention, config, frames, height, width, num_anchor, batch, heads,
                                dtype)


@on_hopper
@pytest.mark.parametrize("config", [c for c in GLUON_WS_CONFIGS if c.endswith(" lazy")])
def test_lazy_rescaling_follows_maxima_that_keep_growing(config):
    check_lazy_rescaling_follows_maxima_that_keep_growing(launch_gluon_ws_attention, config)


@on_hopper
@pytest.mark.parametrize("config", GLUON_WS_FP8_CONFIGS)
@pytest.mark.parametrize("frames,height,width,num_anchor,batch,heads,dtype", FP8_CASES)
def test_fp8_matches_the_triton_fp8_loop(config, frames, height, width, num_anchor, batch, heads, dtype):
    check_fp8_matches_the_triton_fp8_loop(launch_gluon_ws_attention, config, frames, height, width, num_anchor,
                                          batch, heads, dtype)


def test_reached_through_anchor_attention_only_where_it_can_run():
    """`anchor_attention(..., keys="copies", language="gluon-ws")` is the public way in, with
    the plain Gluon kernel's limits: a clear error off Hopper and for other variants; on
    Hopper, the same numbers as its launcher with the first config."""
    from sama_rt.kernels import anchor_attention

    q, k, v, cos, sin = _inputs(1, 3, 5, 1, 1, 1, 128, torch.float16)
    if not (torch.cuda.is_available() and torch.cuda.get_device_capability() >= (9, 0)):
        with pytest.raises(ValueError, match="runs only compiled, for a Hopper GPU"):
            anchor_attention(q, k, v, cos, sin, 1, keys="copies", language="gluon-ws")
    else:
        q, k, v, cos, sin = (t.cuda() for t in (q, k, v, cos, sin))
        torch.testing.assert_close(anchor_attention(q, k, v, cos, sin, 1, keys="copies", language="gluon-ws"),
                                   launch_gluon_ws_attention(q, k, v, cos, sin, 1, 128**-0.5), atol=0, rtol=0)
    with pytest.raises(ValueError, match=r"keys='copies' \(native or fp8\)"):
        anchor_attention(q, k, v, cos, sin, 1, keys="once", language="gluon-ws")


# --------------------------------------------------------------------------------------------
# The barrier protocol, checked on CPU against a model of Hopper's mbarriers
# --------------------------------------------------------------------------------------------
# Gluon has no interpreter, and a wrong barrier phase hangs a GPU rather than fail a test. So
# the kernel's synchronisation (_produce and _consume, transcribed step for step below: keep
# the two in step) runs here as three coroutines under many random schedules, with the TMA
# loads and the warpgroup MMAs as asynchronous events that complete at random later moments.
# Each MMA reads its ring slot when it is issued and again when it completes: a slot refilled
# while an MMA still reads it, a wait that never ends, or consumers issuing out of turn fail.


class _Barrier:
    """An mbarrier: `count` arrivals (plus any expected TMA bytes) complete a phase;
    `wait(parity)` passes once the phase of that parity has completed, which for a fresh
    barrier is true of parity 1 (the phase "before" the first)."""

    def __init__(self, count):
        self.count, self.pending, self.tx, self.completed = count, count, 0, 0

    def arrive(self, tx=0):
        self.pending -= 1
        self.tx += tx
        self._maybe_complete()

    def land(self, tx):
        self.tx -= tx
        self._maybe_complete()

    def _maybe_complete(self):
        assert self.pending >= 0 and self.tx >= 0, "an arrival or a load too many for this phase"
        if self.pending == 0 and self.tx == 0:
            self.completed, self.pending = self.completed + 1, self.count

    def passed(self, parity):
        return (self.completed & 1) != parity


def _run_protocol(num_tiles, stages, pingpong, consumer1_rows_valid, rng):
    k_ready, v_ready = [_Barrier(1) for _ in range(stages)], [_Barrier(1) for _ in range(stages)]
    k_empty, v_empty = [_Barrier(2) for _ in range(stages)], [_Barrier(2) for _ in range(stages)]
    q_bars, turns = [_Barrier(1), _Barrier(1)], [_Barrier(1), _Barrier(1)]
    slots = {"q": [None, None], "k": [None] * stages, "v": [None] * stages}  # which tile each slot holds
    loads, mmas = [], {0: [], 1: []}  # in flight: (barrier, operand, slot, tile); (operand, slot, tile)
    issued = []  # (consumer, tile) in the order the MMAs were issued

    def wait(barrier, parity):
        while not barrier.passed(parity):
            yield

    def load(barrier, operand, slot, tile):
        barrier.arrive(tx=1)  # mbarrier.expect: an arrival that also expects the TMA's bytes
        loads.append((barrier, operand, slot, tile))

    def mma(consumer, operand, slot, tile):
        assert slots[operand][slot] == tile, f"consumer {consumer} issued on {operand}{tile}: slot holds the wrong tile"
        assert operand == "v" or slots["q"][consumer] == 0 or not (consumer == 0 or consumer1_rows_valid)
        mmas[consumer].append((operand, slot, tile))

    def wait_mmas(consumer, in_flight):
        while len(mmas[consumer]) > in_flight:
            yield

    def take_turn(consumer, tile):
        if pingpong:
            yield from wait(turns[consumer], (tile & 1) ^ (1 - consumer))

    def pass_turn(consumer):
        if pingpong:
            turns[1 - consumer].arrive()

    def produce():  # _produce
        for consumer in (0, 1):
            if consumer == 0 or consumer1_rows_valid:
                load(q_bars[consumer], "q", consumer, 0)
        for tile in range(num_tiles):
            slot, phase = tile % stages, (tile // stages) & 1
            yield from wait(k_empty[slot], phase ^ 1)
            load(k_ready[slot], "k", slot, tile)
            yield from wait(v_empty[slot], phase ^ 1)
            load(v_ready[slot], "v", slot, tile)

    def consume(consumer):  # _consume
        if consumer == 0 or consumer1_rows_valid:
            yield from wait(q_bars[consumer], 0)
        yield from wait(k_ready[0], 0)
        yield from take_turn(consumer, 0)
        mma(consumer, "k", 0, 0)
        issued.append((consumer, 0))
        pass_turn(consumer)
        yield from wait_mmas(consumer, 0)
        k_empty[0].arrive()
        for tile in range(1, num_tiles):
            slot, prev = tile % stages, (tile - 1) % stages
            yield from wait(k_ready[slot], (tile // stages) & 1)
            yield from take_turn(consumer, tile)
            mma(consumer, "k", slot, tile)
            yield from wait(v_ready[prev], ((tile - 1) // stages) & 1)
            mma(consumer, "v", prev, tile - 1)
            issued.append((consumer, tile))
            pass_turn(consumer)
            yield from wait_mmas(consumer, 1)
            k_empty[slot].arrive()
            yield from wait_mmas(consumer, 0)
            v_empty[prev].arrive()
        last = (num_tiles - 1) % stages
        yield from wait(v_ready[last], ((num_tiles - 1) // stages) & 1)
        mma(consumer, "v", last, num_tiles - 1)
        yield from wait_mmas(consumer, 0)

    running = {"producer": produce(), 0: consume(0), 1: consume(1)}
    for _ in range(100_000):
        events = [("step", name) for name in running] + [("load", i) for i in range(len(loads))]
        events += [("mma", c) for c in (0, 1) if mmas[c]]
        if not running and not loads:
            break
        kind, which = events[rng.randrange(len(events))]
        if kind == "step":
            try:
                next(running[which])
            except StopIteration:
                del running[which]
        elif kind == "load":  # a TMA load lands: the slot now holds its tile
            barrier, operand, slot, tile = loads.pop(which)
            slots[operand][slot] = tile
            barrier.land(1)
        else:  # the oldest MMA of a consumer completes, having read its slot throughout
            operand, slot, tile = mmas[which].pop(0)
            assert slots[operand][slot] == tile, f"{operand}{tile}'s slot was refilled while consumer {which} read it"
    else:
        raise AssertionError(f"deadlock: {sorted(map(str, running))} still waiting")
    if pingpong:
        assert issued == [(c, t) for t in range(num_tiles) for c in (0, 1)], issued
    return issued


@pytest.mark.parametrize("stages", [2, 3])
@pytest.mark.parametrize("pingpong", [False, True])
def test_barrier_protocol_under_random_schedules(stages, pingpong):
    """Every tile count from 1 (no loop iteration) to 7, a second consumer with rows and
    without (a head's last program): no deadlock, no slot refilled under a reading MMA,
    each consumer's tiles issued in order, and with pingpong the consumers alternating."""
    import random

    rng = random.Random(stages * 2 + pingpong)
    for num_tiles in range(1, 8):
        for consumer1_rows_valid in (True, False):
            for _ in range(150):
                issued = _run_protocol(num_tiles, stages, pingpong, consumer1_rows_valid, rng)
                for consumer in (0, 1):
                    assert [t for c, t in issued if c == consumer] == list(range(num_tiles))


def test_barrier_protocol_model_catches_a_wrong_phase(monkeypatch):
    """The model is not vacuous: a producer that waits for an "empty" slot on the wrong phase
    (the fresh barrier's first phase instead of the one before it) never starts, and that is
    reported as a deadlock."""
    import random

    right = _Barrier.passed

    def wrong_for_empty_slots(barrier, parity):  # the "empty" barriers are the ones of count 2
        return right(barrier, parity ^ 1 if barrier.count == 2 else parity)

    monkeypatch.setattr(_Barrier, "passed", wrong_for_empty_slots)
    with pytest.raises(AssertionError, match="deadlock"):
        _run_protocol(3, 2, True, True, random.Random(0))
