"""The memory-traffic counter: bytes per operator on known operators, and a tiny end-to-end report."""

import json

import pytest
import torch

from scripts.benchmark_traffic import TrafficCounter, main, tensor_bytes


def test_tensor_bytes_counts_elements_and_caps_broadcasts_at_the_storage():
    matrix = torch.zeros(4, 8)
    assert tensor_bytes(matrix) == 4 * 8 * 4
    assert tensor_bytes(matrix[:2]) == 2 * 8 * 4  # a slice: its own elements
    assert tensor_bytes(torch.zeros(8, dtype=torch.bfloat16).expand(100, 8)) == 8 * 2  # stored once
    assert tensor_bytes({"a": [matrix, 3], "b": (matrix.half(),)}) == 128 + 64


def test_counter_records_reads_and_writes_per_operator_and_module():
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU())
    hidden = torch.randn(10, 8)
    with torch.no_grad(), TrafficCounter(model) as counter:
        model(hidden)
        hidden + hidden
    calls, read, written = counter.by_operator["addmm"]
    assert calls == 1 and read == (16 + 10 * 8 + 16 * 8) * 4 and written == 10 * 16 * 4
    assert counter.by_operator["add"] == [1, 2 * 10 * 8 * 4, 10 * 8 * 4]
    assert counter.by_module["0"][1] == read + written
    assert counter.by_module["(outside the model)"][0] == 1
    assert "t" not in counter.by_operator  # views move nothing


@pytest.mark.parametrize("precision", ["fp32", "bf16-weights"])
def test_tiny_report(tmp_path, precision):
    output = tmp_path / "traffic.json"
    report = main(["--tiny", "--precision", precision, "--queries", "2", "--output", str(output)])
    assert json.loads(output.read_text()) == json.loads(json.dumps(report))
    assert report["settings"]["queries_per_forward"] == 2 and report["bytes_per_forward"] > 0
    moved = sum(entry["read_bytes"] + entry["written_bytes"] for entry in report["by_operator"].values())
    assert moved == report["bytes_per_forward"]
    assert any(name.startswith("model.decoder.layers.0") for name in report["top_modules"])


def test_rejects_bad_arguments(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["--tiny", "--queries", "0", "--output", str(tmp_path / "out.json")])
    with pytest.raises(SystemExit):
        main(["--tiny", "--top-modules", "-3", "--output", str(tmp_path / "out.json")])
    assert "--top-modules must be >= 0" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # a smoke run would replace a committed traffic_*.json
        main(["--tiny"])
    assert "--tiny is a smoke run: pass --output" in capsys.readouterr().err


def test_gathers_and_row_copies_count_the_rows_they_move():
    from scripts.benchmark_traffic import operator_bytes

    table, rows = torch.zeros(100, 8), torch.tensor([3, 7])
    with TrafficCounter(torch.nn.Identity()) as counter:
        picked = table[rows]
        table.index_copy_(0, rows, picked)
    row_bytes, index_bytes = 2 * 8 * 4, 2 * 8
    assert counter.by_operator["index"] == [1, row_bytes + index_bytes, row_bytes]
    assert counter.by_operator["index_copy_"] == [1, row_bytes + index_bytes, row_bytes]
    assert operator_bytes("add", (table, table), {}, table) == (2 * 3200, 3200)


def test_attention_bias_broadcast_over_heads_counts_once_per_head_in_the_upper_bound():
    query = torch.randn(2, 4, 6, 8)
    bias = torch.zeros(2, 1, 6, 6)
    with TrafficCounter(torch.nn.Identity()) as counter:
        torch.nn.functional.scaled_dot_product_attention(query, query, query, attn_mask=bias)
        torch.nn.functional.scaled_dot_product_attention(query, query, query)
    assert counter.bias_rereads == 3 * bias.numel() * 4


def test_an_output_folder_is_refused_before_counting(tmp_path, capsys):
    """It once failed with IsADirectoryError when the report was written, after the counted forward pass."""
    with pytest.raises(SystemExit):
        main(["--tiny", "--output", str(tmp_path)])
    assert f"`--output` {str(tmp_path)!r} is a folder; pass the path of the report file" in capsys.readouterr().err
