"""runtime.strategy=mirrored over two logical CPU devices (tf.distribute), in a subprocess
because logical devices must be configured before TensorFlow initialises."""

import json
import os
import subprocess
import sys
import textwrap

import pytest

from tests.test_training import TINY

SCRIPT = textwrap.dedent("""
    import json, sys
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

    from ser_keras.config import load_config
    from ser_keras.training.distribute import make_strategy
    from ser_keras.evaluation.fit import fit

    if __name__ == "__main__":
        run_dir, overrides = sys.argv[1], json.loads(sys.argv[2])
        strategy = make_strategy("mirrored")
        config = load_config("exp4", corpus="demo", overrides=overrides)
        results = fit(config, run_dir, progress=False)
        print("RESULT " + json.dumps({"replicas": strategy.num_replicas_in_sync,
                                      "devices": list(strategy.extended.worker_devices),
                                      "ua": results["pooled"]["ua"], "folds": len(results["folds"]),
                                      "fit_replicas": [f["replicas"] for f in results["folds"]]}))
""")


@pytest.mark.slow
def test_mirrored_strategy_on_two_logical_cpus(tmp_path):
    script = tmp_path / "mirrored_fit.py"
    script.write_text(SCRIPT)
    overrides = [*TINY, "runtime.strategy=mirrored", "runtime.fold=0", "train.epochs=1"]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    done = subprocess.run([sys.executable, str(script), str(tmp_path / "run"), json.dumps(overrides)],
                          capture_output=True, text=True, env=env, timeout=600, cwd=str(tmp_path))
    assert done.returncode == 0, done.stderr[-3000:]
    line = next(x for x in done.stdout.splitlines() if x.startswith("RESULT "))
    result = json.loads(line[len("RESULT "):])
    assert result["replicas"] == 2 and len(result["devices"]) == 2
    # What fit itself trained under (results.json, from the fold's result.json), not only what
    # this script built: a fit that ignored runtime.strategy would record 1.
    assert result["fit_replicas"] == [2]
    saved_fold = json.loads((tmp_path / "run" / "folds" / "speaker-spk_f1" / "result.json").read_text())
    assert saved_fold["replicas"] == 2
    assert result["folds"] == 1 and 0.0 <= result["ua"] <= 1.0
    saved = (tmp_path / "run" / "config.yaml").read_text()
    assert "strategy: mirrored" in saved
    assert (tmp_path / "run" / "folds" / "speaker-spk_f1" / "model.keras").is_file()


WORKER = textwrap.dedent("""
    import json, sys
    from ser_keras.config import load_config
    from ser_keras.evaluation.fit import fit

    if __name__ == "__main__":
        run_dir, overrides = sys.argv[1], json.loads(sys.argv[2])
        config = load_config("exp4", corpus="demo", overrides=overrides)
        results = fit(config, run_dir, progress=False)
        print("RESULT " + json.dumps({"ua": results["pooled"]["ua"]}))
""")


def _free_ports(n):
    import socket

    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("localhost", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


@pytest.mark.slow
def test_multi_worker_strategy_with_two_local_workers(tmp_path):
    """runtime.strategy=multi-worker: two processes on this machine, the cluster in TF_CONFIG;
    the chief writes the run directory, the other worker a scratch copy. Slow (two TensorFlow
    processes); opt in with -m slow."""
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    overrides = [*TINY, "runtime.strategy=multi-worker", "runtime.fold=0", "train.epochs=1"]
    cluster = {"worker": [f"localhost:{port}" for port in _free_ports(2)]}
    processes = []
    for index in range(2):
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2",
                   TF_CONFIG=json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}}))
        processes.append(subprocess.Popen([sys.executable, str(script), str(tmp_path / "run"), json.dumps(overrides)],
                                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                                          cwd=str(tmp_path)))
    outputs = [p.communicate(timeout=900) for p in processes]
    for p, (out, err) in zip(processes, outputs):
        assert p.returncode == 0, err[-3000:]
        assert "RESULT " in out
    assert (tmp_path / "run" / "results.json").is_file()
    assert (tmp_path / "run" / ".worker-1" / "results.json").is_file()
    assert "strategy: multi-worker" in (tmp_path / "run" / "config.yaml").read_text()
