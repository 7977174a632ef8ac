"""bench/inference.py: exports timed side by side, their sizes, the time split by stage."""

import re

import pytest

from tests.bench_module import load_bench


@pytest.fixture(scope="module")
def bench():
    return load_bench("inference")


def test_stage_of_names_functionals_pitch_network_and_front_end(bench):
    names = {"ser_exp5", "sae_conv", "blstm_1", "cast"}
    cases = {
        ("StatefulPartitionedCall/cond/then/_100/cond/pitch/irfft", "IRFFT"): "pitch",
        ("StatefulPartitionedCall/map/while/body/_7/functionals/RFFT", "RFFT"): "functionals",
        ("StatefulPartitionedCall/ser_exp5_attention_1/sae_conv_1/convolution", "Conv2D"): "network",
        ("StatefulPartitionedCall/StatefulPartitionedCall/sae_conv_1/concat", "ConcatV2"): "network",
        ("StatefulPartitionedCall/StatefulPartitionedCall/BlockLSTMV2_1", "BlockLSTMV2"): "network",
        ("StatefulPartitionedCall/blstm_1_1/forward/while/body/_3/MatMul", "MatMul"): "network",
        ("StatefulPartitionedCall/Cast_1", "Cast"): "front end",  # CamelCase: not the layer "cast"
        ("StatefulPartitionedCall/cond/then/_100/cond/rfft", "RFFT"): "front end",
    }
    for (op_name, op_type), stage in cases.items():
        assert bench.stage_of(op_name, op_type, names) == stage, op_name


def test_sweep_shares_overlaps_and_gives_short_pauses_to_the_next_op(bench):
    ms = 10 ** 9  # picoseconds
    intervals = [(0, 2 * ms, "front end"), (1 * ms, 3 * ms, "pitch"),  # 1 ms alone, 1 ms shared, 1 ms alone
                 (3 * ms + ms // 2, 5 * ms, "network"),  # after a 0.5 ms pause, which it takes
                 (20 * ms, 21 * ms, "network")]  # after a long pause (another call), which nobody takes
    shares = bench._sweep(intervals)
    total = 1.5 + 1.5 + 2.0 + 1.0
    assert shares == pytest.approx({"front end": 1.5 / total, "pitch": 1.5 / total, "functionals": 0.0,
                                    "network": 3.0 / total})


@pytest.mark.slow
def test_two_exports_side_by_side(bench, tiny_run, exported, capsys):
    first = exported(tiny_run("exp4"))
    second = exported(tiny_run("exp4", seed=1))
    assert bench.main(["--model", str(first), "--model", str(second), "--seconds", "1", "--batches", "1,2",
                       "--repeats", "2", "--min-time", "0"]) == 0
    out = capsys.readouterr().out
    for i, path in ((1, first), (2, second)):
        assert f"model {i}    {path}" in out
        assert re.search(rf"model {i} export \d+\.\d\d MB on disk .*saved_model\.pb", out)
    rows = [line for line in out.splitlines() if re.match(r"\s+1s\s+[12]\s+model [12]", line)]
    assert len(rows) == 4
    assert all(line.split()[7] == "1.00x" for line in rows if "model 2" in line)  # the reference
    splits = re.findall(r"model [12] split: front end (\d+) % .*, pitch (\d+) % .*, network (\d+) %", out)
    assert len(splits) == 4
    for front_end, pitch, network in splits:
        assert int(pitch) == 0 and int(front_end) > 0 and int(network) > 0
        assert abs(int(front_end) + int(pitch) + int(network) - 100) <= 1
    assert "target >=" not in out  # the targets are for a 10 s clip, not timed here
