"""Every corpus case is refused with its documented typed error and a message that names the
expected and the received; the corpus covers every kind of bad input the product promises."""

from __future__ import annotations

import pytest

from .corpus import CASES, Case


def test_corpus_is_large_and_covers_every_kind() -> None:
    names = " ".join(c.id for c in CASES)
    assert len(CASES) >= 40
    for needle in ("rank", "shape" if "shape" in names else "dim", "dtype", "band", "empty", "nan", "inf", "huge",
                   "truncated", "corrupt" if "corrupt" in names else "garbage", "schema-version", "weights-missing",
                   "tampered", "pickle", "unknown-backend"):
        assert needle in names, f"no corpus case for {needle!r}"


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_gets_typed_error(case: Case, env) -> None:
    with pytest.raises(case.error, match=case.match):
        case.run(env)
