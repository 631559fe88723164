"""What a node offers: GPUs detected from ``CUDA_VISIBLE_DEVICES`` or ``nvidia-smi -L`` (a
stand-in script on PATH here: this machine has no GPU), overridden by declared ones, and its
automatic labels."""

from __future__ import annotations

import os
import platform
import socket
import sys
from pathlib import Path

import pytest

from actorgrid._node.shares import NodeShares, detect_gpus


def test_cuda_visible_devices_names_the_gpus() -> None:
    assert detect_gpus({"CUDA_VISIBLE_DEVICES": "2,3"}) == ["2", "3"]
    assert detect_gpus({"CUDA_VISIBLE_DEVICES": ""}) == []
    assert detect_gpus({"CUDA_VISIBLE_DEVICES": "-1"}) == []


def test_nvidia_smi_lists_the_gpus_when_nothing_is_set(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    smi = tmp_path / "nvidia-smi"
    smi.write_text(
        "#!/bin/sh\necho 'GPU 0: NVIDIA H100 (UUID: GPU-a)'\necho 'GPU 1: NVIDIA H100 (UUID: GPU-b)'\n"
    )
    smi.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert detect_gpus() == ["0", "1"]
    shares = NodeShares(4, 1.0)
    assert shares.total["GPU"] == 2 and shares.gpu_ids == ["0", "1"]
    # Declared GPUs override what is detected: fewer of the detected ones, or more ids.
    assert NodeShares(4, 1.0, {"GPU": 1}).gpu_ids == ["0"]
    assert NodeShares(4, 1.0, {"GPU": 3}).gpu_ids == ["0", "1", "2"]


def test_no_gpu_without_either(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no nvidia-smi there
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    shares = NodeShares(2, 1.0, {"camera": 1})
    assert "GPU" not in shares.total and shares.total["camera"] == 1


def test_automatic_labels_and_user_labels_winning(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")
    labels = NodeShares(2, 1.5, labels={"zone": "a", "hostname": "mine"}).labels
    assert labels["zone"] == "a" and labels["hostname"] == "mine"
    assert labels["platform"] == sys.platform
    assert labels["python_version"] == platform.python_version()
    assert labels["num_cpus"] == "3" and labels["num_gpus"] == "1"
    assert int(labels["memory_gb"]) >= 0
    assert NodeShares(1, 1.0).labels["hostname"] == socket.gethostname()
