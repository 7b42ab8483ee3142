"""Running a Pyro program once and reading its sites, with errors that name the site."""

from __future__ import annotations

import contextlib
import re
from typing import Any, Callable, Mapping

import pyro
import pyro.poutine as poutine
import torch
from pyro.poutine.messenger import Messenger
from pyro.poutine.subsample_messenger import _Subsample
from pyro.poutine.trace_struct import Trace
from torch.distributions import biject_to, constraints, transform_to
from torch.distributions.transforms import Transform

from bayesgen._transforms import bijection

__all__ = ["BATCH_PLATE", "LastSite", "ProgramError", "is_deterministic", "is_latent", "is_subsample", "on_device",
           "run_program", "site_log_prob", "support_bijection", "without_trace_table"]

BATCH_PLATE = "_bayesgen_batch"


class ProgramError(ValueError):
    """The program raised while bayesgen ran it; the message names the site it was at, and
    ``site`` holds that site's name (None where it raised before its first sample site)."""

    site: str | None = None


def is_deterministic(site: Mapping[str, Any]) -> bool:
    """Whether a trace site was made by ``pyro.deterministic``."""
    return bool(site["infer"].get("_deterministic"))


def is_latent(site: Mapping[str, Any]) -> bool:
    """Whether a trace site is a latent sample site (not observed, not deterministic, not a subsample)."""
    return (
        site["type"] == "sample"
        and not site["is_observed"]
        and not is_deterministic(site)
        and not is_subsample(site)
    )


def is_subsample(site: Mapping[str, Any]) -> bool:
    """Whether a trace site is the index site that ``pyro.plate`` records for subsampling."""
    return isinstance(site["fn"], _Subsample)


class LastSite(Messenger):
    """Remember the name of the last sample site the program reached."""

    def __init__(self) -> None:
        super().__init__()
        self.name: str | None = None

    def _pyro_sample(self, msg: Any) -> None:
        if not isinstance(msg["fn"], _Subsample):  # a plate's index site is not where a program fails
            self.name = msg["name"]


def site_log_prob(site: Mapping[str, Any]) -> torch.Tensor:
    """A sample site's log density per batch element, 0 where the program masks it out
    (``poutine.mask``, as Pyro's ELBOs and densities leave such terms out); unscaled."""
    log_p = site["fn"].log_prob(site["value"])
    mask = site["mask"]
    if mask is None or mask is True:
        return log_p
    if mask is False:
        return torch.zeros_like(log_p)
    return torch.where(mask, log_p, log_p.new_zeros(()))


def on_device(device: torch.device) -> contextlib.AbstractContextManager[Any]:
    """Make the tensors that a program creates (``torch.zeros(3)``, ``torch.tensor(1.0)``) land on
    ``device``, where its data are.

    Enter it around runs of a program only, not around the code that calls them: torch's device
    context is a Python function called before every torch operation in the block (a third of a
    sampler's time on a GPU when it enclosed the sampling loop). On the CPU it is a no-op.
    """
    return contextlib.nullcontext() if device.type == "cpu" else torch.device(device)


def run_program(model: Callable[..., Any], data: Mapping[str, Any]) -> Trace:
    """Trace the program once with Pyro's validation on.

    Raises
    ------
    ValueError
        If a site's shape disagrees with a plate's size and a data argument explains it: the
        message names the argument, the plate and both sizes (:func:`plate_mismatch`).
    ProgramError
        If the program raises otherwise; the message names the last site it reached, and
        data arguments that are 0-d or empty where the error suggests them.
    """
    last = LastSite()
    try:
        with pyro.validation_enabled(True), poutine.block():
            with last:
                return poutine.trace(model).get_trace(**data)
    except Exception as exc:
        mismatch = plate_mismatch(exc, data)
        if mismatch is not None:
            raise ValueError(mismatch) from exc
        where = f"at or after site '{last.name}'" if last.name else "before its first sample site"
        # the table of shapes Pyro appends to the error (every parameter and site, dozens of lines
        # for a network) stays in the chained original; the message keeps the error and the hint
        error = ProgramError(f"the program raised {type(exc).__name__} {where}: {without_trace_table(str(exc))}"
                             f"{_data_hint(exc, data)}")
        error.site = last.name
        raise error from exc


#: Prior draws at which :func:`trace_prototype` tries a program before it gives up.
PROTOTYPE_TRIES = 20


def trace_prototype(model: Callable[..., Any], data: Mapping[str, Any]) -> Trace:
    """One trace of the program that tells its sites, shapes and parameters, as
    :func:`run_program` makes it, at a seeded draw from the prior, the caller's random state
    left as it was, so that it is the same trace in every process and for every seed.

    A program may fail at some prior draws and not at others (a covariance built from a
    correlation drawn from ``Uniform(-1.5, 1.5)``, a solver that does not converge there),
    which samplers treat as rejected points; so a run that fails after its first sample site is
    tried again at other draws, :data:`PROTOTYPE_TRIES` in all, before the first failure is
    raised. A failure before any sample site (a check of the data) is raised at once.
    """
    from bayesgen._seeding import rng_restored

    first: Exception | None = None
    with rng_restored():
        for attempt in range(PROTOTYPE_TRIES):
            pyro.set_rng_seed(attempt)
            try:
                return run_program(model, data)
            except ProgramError as exc:
                if exc.site is None:  # before any draw: the data or the arguments, whatever the draw
                    raise
                first = first or exc
    assert first is not None
    raise first


def without_trace_table(message: str) -> str:
    """An error's message without the table of every site's shapes that Pyro appends to errors raised
    inside a traced program (dozens of lines for a network; the chained original keeps it)."""
    cut = message.find("Trace Shapes:")
    return message[:cut].rstrip() if cut > 0 else message


#: Pyro's message for a site whose batch shape disagrees with an enclosing plate
#: (``pyro.poutine.broadcast_messenger``): plate name, site, dim, plate size, the site's size.
_PLATE_MISMATCH = re.compile(r"Shape mismatch inside plate\('([^']*)'\) at site (\S+) dim (-?\d+), (\d+) vs (\d+)")


def _quote(keys: list[str]) -> str:
    return " or ".join(f"data['{key}']" for key in keys)


def plate_mismatch(exc: BaseException, data: Mapping[str, Any]) -> str | None:
    """A message naming the data argument behind Pyro's plate shape mismatch, or None.

    Pyro reports only the site, the plate and the sizes ("Shape mismatch inside
    plate('data') at site y dim -1, 32 vs 30") with its trace table. The offending tensor
    is found by its shape: rule, a data tensor whose size along the plate's dim (counted
    from the right, as plates count) is the site's size, or failing that whose first dim
    is, and whose shape does not already fit the plate there. The plate's size is
    attributed to the integer arguments equal to it, else to the tensors whose first dim
    is that size. With no tensor of the site's size, None (the size came from inside the
    program, which Pyro's own message then describes).
    """
    match = _PLATE_MISMATCH.search(str(exc))
    if match is None:
        return None
    plate, site, dim, size, other = match.group(1), match.group(2), int(match.group(3)), int(match.group(4)), \
        int(match.group(5))
    tensors = {k: v for k, v in data.items() if isinstance(v, torch.Tensor)}

    def along(value: torch.Tensor) -> int | None:
        return value.shape[dim] if value.dim() >= -dim else None

    culprits = [k for k, v in tensors.items() if along(v) == other]
    if not culprits:
        culprits = [k for k, v in tensors.items() if v.dim() >= 1 and v.shape[0] == other and along(v) != size]
    if not culprits:
        return None
    sources = [k for k, v in data.items() if k not in culprits and not isinstance(v, bool)
               and isinstance(v, int) and v == size]
    if not sources:
        sources = [k for k, v in tensors.items() if k not in culprits and v.dim() >= 1 and v.shape[0] == size]
    by = f" (set by {_quote(sources)})" if sources else ""
    first = tensors[culprits[0]]
    if first.dim() == 1:
        has = f"{_quote(culprits)} has {other} rows"
    else:
        has = f"{_quote(culprits)} has shape {tuple(first.shape)}, size {other} along dim {dim},"
    return (f"{has} but plate '{plate}' has size {size}{by}, at site '{site}' (plate dim {dim}); the data "
            "arguments used inside a plate must have its size along its dim")


def _data_hint(exc: BaseException, data: Mapping[str, Any]) -> str:
    """Data arguments that the error of a failed run probably came from, as a sentence (or '').

    Rule: an error about 0-d tensors (``len() of a 0-d tensor``) names the 0-d tensors of
    ``data``; an error about a size of zero names the empty ones; an improper prior's refusal to
    be sampled gets the masked proper prior that Pyro's documentation suggests instead.
    """
    text = str(exc)
    tensors = {k: v for k, v in data.items() if isinstance(v, torch.Tensor)}
    if "0-d" in text:
        scalars = [k for k, v in tensors.items() if v.dim() == 0]
        if scalars:
            verb = "is" if len(scalars) == 1 else "are"
            return f". {_quote(scalars)} {verb} 0-d (a single number); pass a 1-d array if it holds observations"
    if "zero" in text or "empty" in text:
        empty = [k for k, v in tensors.items() if v.numel() == 0]
        if empty:
            verb = "is" if len(empty) == 1 else "are"
            return f". {_quote(empty)} {verb} empty; pass at least one observation"
    if "ImproperUniform does not support sampling" in text:
        return (". A program is run once with its latents drawn from their priors, and an improper prior "
                "cannot be drawn from: write a flat prior as a proper one left out of the density, "
                "dist.Normal(0.0, 1.0).mask(False) on the real line or dist.HalfNormal(1.0).mask(False) "
                "on the positive reals")
    return ""


def _register_mixture_support() -> None:
    """Let ``biject_to``/``transform_to`` map ``MixtureSameFamily`` supports (torch >= 2.5 wraps the
    components' support in ``MixtureSameFamilyConstraint``, which torch's registries do not know):
    the mixture's support is its components', so their bijection serves. Registered only where
    torch has none of its own, so that a future torch's choice wins."""
    wrapper = getattr(constraints, "MixtureSameFamilyConstraint", None)
    if wrapper is None:
        return
    for registry in (biject_to, transform_to):
        try:
            registry(wrapper(constraints.real))
        except NotImplementedError:
            registry.register(wrapper)(lambda constraint, registry=registry: registry(constraint.base_constraint))


_register_mixture_support()


def support_bijection(site: Mapping[str, Any]) -> Transform:
    """``biject_to(site["fn"].support)``: the map from unbounded values to a latent site's support.

    Raises
    ------
    ValueError
        Where torch has no bijection onto the support (a ``Wishart``'s positive-definite
        matrices, a ``dependent`` support): the message names the site, its distribution
        and its support, and the fixes.
    """
    fn = site["fn"]
    try:
        return bijection(fn.support)
    except NotImplementedError as exc:
        raise ValueError(
            f"latent site '{site['name']}' has distribution {type(fn).__name__} with support {fn.support}, "
            "which torch.distributions.biject_to cannot map to unbounded values, so the engines built on the "
            "log density (nuts, hmc, mle, map, laplace, svi's Gaussian guides) cannot move it. Fix: write the "
            "site through a supported parameterisation (e.g. a covariance as an LKJCholesky correlation factor "
            "and HalfNormal scales instead of a Wishart; a bounded value as a Uniform/Beta of fixed bounds, "
            "transformed), or fit with engine='svi' and a guide for it"
        ) from exc
