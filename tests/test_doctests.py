"""The examples in the docstrings of the pure modules run and give what they show."""

import doctest

import pytest

import bayesgen.convert
import bayesgen.fitting
import bayesgen.logdensity
import bayesgen.metrics


@pytest.mark.parametrize("module", [bayesgen.metrics, bayesgen.convert, bayesgen.logdensity, bayesgen.fitting],
                         ids=lambda m: m.__name__)
def test_docstring_examples(module):
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0
