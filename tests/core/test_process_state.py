"""Library calls leave process-wide state alone: logging verbosity, progress bars, the matplotlib backend;
the CLI's -v shows the traceback of an error that is not transferlab's own."""
from __future__ import annotations

import matplotlib


def test_loading_a_hf_model_restores_transformers_logging(tiny_bert_dir):
    from transformers.utils import logging as hf_logging

    from transferlab.models import create_model

    hf_logging.set_verbosity_info()
    hf_logging.enable_progress_bar()
    try:
        create_model(str(tiny_bert_dir), 2)
        assert hf_logging.get_verbosity() == hf_logging.INFO
        assert hf_logging.is_progress_bar_enabled()
    finally:
        hf_logging.set_verbosity_warning()


def test_plots_leave_the_matplotlib_backend_alone(tmp_path):
    from transferlab.diagnostics.bn import BNLayerShift, BNShiftResult, plot_bn_shift

    before = matplotlib.get_backend()
    matplotlib.use("svg")  # what a notebook would have chosen (any non-Agg backend)
    try:
        layer = BNLayerShift(name="bn1", index=0, group="stem", channels=8, skl=0.5)
        plot_bn_shift([BNShiftResult(source="m", data="d", split="val", examples=4, mean_skl=0.5, layers=[layer])],
                      tmp_path / "bn.png")
        assert (tmp_path / "bn.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert matplotlib.get_backend() == "svg"
    finally:
        matplotlib.use(before)


def test_verbose_shows_the_traceback_of_a_foreign_error(capsys, monkeypatch):
    from transferlab.cli import core, main

    def boom(args):
        raise ValueError("something deep went wrong")

    monkeypatch.setattr(core, "cmd_strategies", boom)
    for argv, traceback_shown in ((["strategies"], False), (["-v", "strategies"], True)):
        try:
            main(argv)
        except SystemExit as exc:
            assert exc.code == 2
        err = capsys.readouterr().err
        assert ("Traceback" in err) == traceback_shown
        assert err.strip().splitlines()[-1] == "transferlab: error: ValueError: something deep went wrong"
