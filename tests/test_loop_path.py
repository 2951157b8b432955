"""The loop's result says which path ran its steps: the CUDA graph, or eager and why (a failed capture used to
fall back silently). The CUDA path is emulated on CPU, as in test_loop_books."""

import importlib

import torch

from explorer.optvis import Execution, Schedule, make_param, optimise

loop = importlib.import_module("explorer.optvis.optimise")  # the module (the package exports the function)


def _mean(image, transformed):
    return image.mean(dim=(1, 2, 3))


def _run(graph, steps=8):
    param = make_param("pixel", 1, 8, generator=torch.Generator().manual_seed(0))
    return optimise(param, _mean, Schedule(steps=steps, lr=0.1), execution=Execution(graph=graph))


def _emulate_cuda(monkeypatch, captures: bool):
    class EmulatedGraph(loop._CudaGraph):
        def warm_up(self):
            self.step.zero_grad()
            self.step.run()

        def capture(self):
            if not captures:
                self.failure = "RuntimeError: operation not permitted when stream is capturing"
                return False
            self.graph = "captured"
            return True

        def replay(self):
            self.step.zero_grad()
            self.step.run()

    monkeypatch.setattr(loop, "_CudaGraph", EmulatedGraph)
    monkeypatch.setattr(loop, "_wants_graph", lambda graph, device, transforms: bool(graph))
    monkeypatch.setattr(loop, "_graph_optimizer", lambda params, lr, wd, betas: torch.optim.Adam(
        params, lr=lr, betas=betas, foreach=False))


def test_eager_on_cpu_says_why():
    assert _run(False).path == "eager: not requested"
    assert _run("off").path == "eager: not requested"
    assert _run(True).path == "eager: CPU"
    assert _run("auto").path == "eager: CPU"


def test_a_captured_graph_is_reported(monkeypatch):
    _emulate_cuda(monkeypatch, captures=True)
    assert _run(True).path == "graph"
    assert _run(True, steps=2).path == "eager: too few steps to capture"


def test_a_failed_capture_is_reported_and_changes_nothing_else(monkeypatch):
    eager = _run(False)
    _emulate_cuda(monkeypatch, captures=False)
    failed = _run(True)
    assert failed.path == "eager: capture failed: RuntimeError: operation not permitted when stream is capturing"
    assert failed.steps_done == eager.steps_done and failed.stopped is None
