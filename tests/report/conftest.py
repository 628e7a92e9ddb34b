from __future__ import annotations

import pytest

from tests.report.runs import benchmark_folder, conditional_gan_run


@pytest.fixture(scope="session")
def cond_run(tmp_path_factory):
    return conditional_gan_run(tmp_path_factory.getbasetemp())


@pytest.fixture(scope="session")
def bench_dir(tmp_path_factory):
    return benchmark_folder(tmp_path_factory.getbasetemp())
