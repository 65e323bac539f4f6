"""Fixtures for the data-pipeline tests: tiny configs with private cache folders."""

import pytest

from detector.config import load_config


@pytest.fixture
def smoke_cfg(tmp_path):
    """configs/smoke.yaml with the synthetic cache in a temporary folder."""

    def make(*overrides):
        return load_config("smoke", [f"data.synthetic.cache_dir={tmp_path / 'synthetic'}",
                                     f"data.cache_dir={tmp_path / 'cache'}", *overrides])

    return make
