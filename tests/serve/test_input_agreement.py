"""The web app and the command line refuse the same values in the same words (both call
ganfuse.inputs): the message after the field's or option's name is identical."""

from __future__ import annotations

import math

import pytest

from ganfuse.cli import main
from ganfuse.inputs import InputError
from ganfuse.run_folders import gan_run_info
from ganfuse.serve.generate import GenerateService
from ganfuse.serve.limits import Limits


@pytest.fixture(scope="module")
def service(cond_run):
    return GenerateService([gan_run_info(cond_run)], Limits())


def web_refusal(call) -> str:
    with pytest.raises(InputError) as info:
        call()
    return str(info.value)


def cli_refusal(argv, capsys) -> str:
    assert main([str(a) for a in argv]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("ganfuse: error: ") and "\n" not in err
    return err.removeprefix("ganfuse: error: ")


@pytest.mark.parametrize(
    "field,option,web_value,cli_value",
    [
        ("Seed", "--seed", -1, "-1"),
        ("Seed", "--seed", 2**32, str(2**32)),
        ("Seed", "--seed", 99999999999999999999999, "99999999999999999999999"),
        ("Truncation", "--truncation", -1, "-1"),
        ("Truncation", "--truncation", math.nan, "nan"),
        ("Truncation", "--truncation", math.inf, "inf"),
    ],
)
def test_same_bad_values_same_message(service, cond_run, tmp_path, capsys, field, option, web_value, cli_value):
    seed, truncation = (web_value, 0.0) if field == "Seed" else (0, web_value)
    on_generate = web_refusal(lambda: service.generate("tiny-cond", 2, seed, truncation, "random"))
    on_interpolate = web_refusal(lambda: service.interpolate("tiny-cond", 4, seed, truncation, "random"))
    on_cli = cli_refusal(["sample", cond_run, "--num", "2", "--out", tmp_path / "o", option, cli_value], capsys)
    assert on_generate == on_interpolate and on_generate.startswith(f"{field} must be ")
    assert on_generate.removeprefix(field) == on_cli.removeprefix(option)
    assert not (tmp_path / "o").exists()


def test_the_web_fields_defaults(service):
    """An empty seed is 0 and a truncation of 0 is off (the slider's left end), as before."""
    assert len(service.generate("tiny-cond", 1, None, 0, "random")) == 1
    assert len(service.generate("tiny-cond", 1, 2**32 - 1, 0.5, "random")) == 1
