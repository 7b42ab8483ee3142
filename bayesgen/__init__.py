"""bayesgen: fit Pyro programs with interchangeable inference engines and compare them in ArviZ."""

from bayesgen import inference
from bayesgen.applications import anomaly_scores, augment
from bayesgen.compare import compare, loo_compare, plot_compare
from bayesgen.diagnostics import check
from bayesgen.discrete import discrete_marginals, infer_discrete
from bayesgen.evaluate import evaluate
from bayesgen.fitting import fit
from bayesgen.io import load
from bayesgen.logdensity import LogDensity
from bayesgen.prior import sample_prior
from bayesgen.registry import get_model, list_engines, list_models
from bayesgen.result import Fit
from bayesgen.sbc import SBCResult, sbc
from bayesgen.spec import ModelSpec

__all__ = [
    "Fit", "LogDensity", "ModelSpec", "SBCResult", "anomaly_scores", "augment", "check", "compare", "discrete_marginals",
    "evaluate", "fit", "get_model", "inference", "infer_discrete", "list_engines", "list_models", "load", "loo_compare", "plot_compare",
    "sample_prior", "sbc",
]
__version__ = "0.1.0"
