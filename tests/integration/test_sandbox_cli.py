"""`python -m sandbox` runs standalone and announces its URLs as one JSON line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[2]


def test_python_m_sandbox_prints_its_urls_and_serves_them(tmp_path: Path) -> None:
    config = tmp_path / "sandbox.toml"
    config.write_text('exchanges = ["alpha"]\naccounts_per_exchange = 2\nalias_exchanges = []\n', encoding="utf-8")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "proto")])}
    process = subprocess.Popen(
        [sys.executable, "-m", "sandbox", "--seed", "5", "--config", str(config)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert process.stdout is not None
        urls = json.loads(process.stdout.readline())
        assert set(urls) >= {"exchanges", "custodians", "market_data", "control"}
        assert list(urls["exchanges"]) == ["alpha"]
        accounts = requests.get(urls["exchanges"]["alpha"] + "/api/v1/accounts", timeout=2).json()
        assert [a["account_id"] for a in accounts["accounts"]] == ["alpha-acc-1", "alpha-acc-2"]
    finally:
        process.terminate()
        assert process.wait(timeout=10) == 0
        if process.stdout is not None:
            process.stdout.close()
