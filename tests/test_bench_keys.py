"""`python -m bench.keys` at tiny sizes: it builds the stores through the product's key store,
probes them (finding the keys it held back) and ends with its RESULT line. Never asserts on
time."""

from __future__ import annotations

from bench_runs import bench_result


def test_bench_keys_ends_with_a_result_for_every_size(tmp_path):
    result = bench_result("bench.keys", ["--keys", "20000,40000", "--runs", "2",
                                         "--window", "1000"], tmp_path)
    assert [c["keys"] for c in result["configs"]] == [20000, 40000]
    for c in result["configs"]:
        assert c["probe_ms"] > 0 and c["put_ms"] > 0 and c["bytes_per_key"] > 0
    assert result["configs"][0]["ratio"] == {"probe_ms": 1.0, "put_ms": 1.0}
    assert not list(tmp_path.iterdir())  # the scratch folders are removed
