"""Evaluation: model vs classical baselines on simulated ISMRMRD files through ``mrdserve evaluate``."""

from __future__ import annotations

import argparse
import csv

import numpy as np
from PIL import Image

from mrdserve.models.data.simulate import simulate_to_file
from mrdserve.models.training.cli import add_evaluate_arguments, add_train_arguments, run_evaluate, run_train
from mrdserve.models.training.evaluate import format_table, image_metrics, metrics_table
from tests.training.test_loop import tiny_config


def _parse(add, argv):
    return add(argparse.ArgumentParser()).parse_args(argv)


def test_train_then_evaluate_writes_table_csv_and_figures(tmp_path, capsys):
    import yaml

    config_path = tmp_path / "tiny.yaml"
    config_path.write_text(yaml.safe_dump(tiny_config(tmp_path / "unused", steps=2)))
    run = tmp_path / "run"
    assert run_train(_parse(add_train_arguments, [str(config_path), "--output-dir", str(run), "--steps", "2"])) == 0
    data = tmp_path / "data"
    data.mkdir()
    simulate_to_file(data / "radial.h5", trajectory="radial", coils=4, acceleration=4, matrix=32, slices=2)
    out = tmp_path / "eval"
    code = run_evaluate(_parse(add_evaluate_arguments, [str(run / "latest.pt"), str(data), "-o", str(out),
                                                        "--figures", "2"]))
    assert code == 0
    printed = capsys.readouterr().out
    assert "model" in printed and "zero-filled" in printed and "cg-sense" in printed
    rows = list(csv.DictReader((out / "metrics.csv").open()))
    assert {row["method"] for row in rows} == {"model", "zero-filled", "cg-sense", "l1-wavelet"}
    assert all(np.isfinite(float(row["psnr"])) for row in rows)
    figures = sorted((out / "figures").glob("*.png"))
    assert len(figures) == 2
    width, height = Image.open(figures[0]).size
    assert (width, height) == (5 * 32, 2 * 32)  # truth + model + 3 baselines; images over error maps


def test_config_errors_return_2(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\ntask: cartesian2d-multicoil\nloop: {steps: many}\n")
    assert run_train(_parse(add_train_arguments, [str(bad)])) == 2
    assert "loop.steps: expected int, got str 'many'" in capsys.readouterr().err
    assert run_evaluate(_parse(add_evaluate_arguments, [str(tmp_path / "no.pt"), str(tmp_path), "-o",
                                                        str(tmp_path / "o")])) == 2


def test_metrics_and_table():
    truth = np.ones((1, 16, 16))
    truth[0, 4:12, 4:12] = 2.0
    perfect = image_metrics(truth, truth)
    assert perfect["nmse"] == 0 and perfect["ssim"] == 1.0 and perfect["psnr"] == float("inf")
    metrics = {"model": {"psnr": 30.0, "ssim": 0.9, "nmse": 0.01, "n_volumes": 1},
               "baselines": {"cg-sense": {"psnr": 25.0, "ssim": 0.8, "nmse": 0.03, "n_volumes": 1}}}
    rows = metrics_table(metrics)
    assert [row["method"] for row in rows] == ["model", "cg-sense"]
    assert "30.00" in format_table(rows) and "0.8000" in format_table(rows)
